"""``create_imagenet --format ssd`` from the 2012 files with their bbox archives, CLS-LOC and
Kaggle's download: the same AnnotatedDatum LMDBs and labelmap.prototxt, SSD's rules, parsed
with caffe_pb2 compiled from proto/caffe.proto; the box sources' odd cases and errors."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from conftest import read_lmdb
from imagenet_db.cli import create_imagenet_main
from imagenet_db.pictures.report import write_report
from imagenet_db.pictures.sheet import SheetOptions, write_sheet
from imagenet_db.protos import AnnotatedDatum, LabelMap
from imagenet_db.reader import DatumDB
from imagenet_db.testing import boxes as B
from imagenet_db.testing import clsloc as F
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.verify import verify_output

# a dog named by its words in one annotation (Scottish_deerhound)
WNIDS = ["n01440764", "n02092002", "n02119789", "n09193705"]
ID_ORDER = ["n02119789", "n02092002", "n09193705", "n01440764"]  # IDs 1, 21, 361, 449 -> 1..4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssd")
    info = F.write_base(root, ArchiveSpec(wnids=WNIDS, train_per_class=4, val_count=6, seed=4))
    B.write_bbox_archives(info)
    F.write_ilsvrc2015(root / "clsloc", info, form="targz")
    F.write_kaggle(root / "kaggle", info, form="zip")
    info["sources"] = {"2012": root / "ilsvrc2012", "clsloc": root / "clsloc",
                       "kaggle": root / "kaggle"}
    return info


@pytest.fixture(scope="module")
def built(base, tmp_path_factory):
    out = {}
    for name, source in base["sources"].items():
        out[name] = tmp_path_factory.mktemp(f"out_{name}")
        assert create_imagenet_main([str(source), str(out[name]), "--format", "ssd"]) == 0
    return out


def _entries(path):
    return [(bytes(k), bytes(v)) for k, v in read_lmdb(path)]


def _parsed(path):
    out = []
    for key, value in _entries(path):
        message = AnnotatedDatum()
        message.ParseFromString(value)
        assert message.SerializeToString() == value  # protobuf's own bytes, field for field
        out.append((key.decode(), message))
    return out


def test_all_three_distributions_give_identical_databases(built):
    ref = built["2012"]
    for name in ("clsloc", "kaggle"):
        for split in ("train", "val"):
            folder = f"ilsvrc12_{split}_annotated_lmdb"
            assert _entries(built[name] / folder) == _entries(ref / folder), (name, split)
        for aux in ("labelmap.prototxt", "ssd_unannotated_train.txt", "train.txt", "val.txt"):
            assert (built[name] / aux).read_bytes() == (ref / aux).read_bytes(), (name, aux)


def test_labelmap_is_background_then_ilsvrc2012_id_order(built):
    labelmap = text_format.Parse((built["2012"] / "labelmap.prototxt").read_text(), LabelMap())
    items = [(i.name, i.label, i.display_name) for i in labelmap.item]
    assert items[0] == ("none_of_the_above", 0, "background")
    assert [(n, label) for n, label, _ in items[1:]] == [(w, i) for i, w in enumerate(ID_ORDER, 1)]
    assert items[1][2] == "kit_fox"
    synsets = (built["2012"] / "synsets.txt").read_text().split()
    assert synsets == ID_ORDER  # labelmap label = synsets.txt line + 1


def _expected(base, labels):
    """relpath -> [(label, [(xmin, ymin, xmax, ymax, difficult)])] by SSD's rules, from the
    fixture's own annotation table (pixels / XML size in float32, grouped by first appearance)."""
    words = {t.split(",")[0].replace(" ", "_"): w for _, w, t in base["classes"]}
    out = {}
    for (split, rel), (width, height, boxes) in B.annotations(base).items():
        groups = {}
        for x0, y0, x1, y1, name, difficult in boxes:
            wnid = words.get(name, name)
            if wnid not in labels:
                continue
            coords = np.float32([x0, y0, x1, y1]) / np.float32([width, height, width, height])
            groups.setdefault(labels[wnid], []).append((*coords.tolist(), bool(difficult)))
        out[rel] = list(groups.items())
    return out


def test_ssd_rules_hold_in_every_datum(base, built):
    labels = {w: i for i, w in enumerate(ID_ORDER, 1)}
    expected = _expected(base, labels)
    for split in ("train", "val"):
        for key, message in _parsed(built["2012"] / f"ilsvrc12_{split}_annotated_lmdb"):
            relpath = key.split("_", 1)[1]
            assert message.HasField("type") and message.type == AnnotatedDatum.BBOX
            assert message.datum.HasField("label") and message.datum.label == -1
            assert not message.datum.encoded and message.datum.channels == 3
            got = [(g.group_label, [(a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax,
                                     a.bbox.difficult) for a in g.annotation])
                   for g in message.annotation_group]
            assert got == expected[relpath], relpath
            for group in message.annotation_group:
                ids = [a.instance_id for a in group.annotation]
                assert ids == list(range(len(group.annotation)))
                assert not any(a.bbox.HasField(f) for a in group.annotation
                               for f in ("score", "size", "label"))
    keys = [k for k, _ in _parsed(built["2012"] / "ilsvrc12_val_annotated_lmdb")]
    assert keys == [f"{i:08d}_{name}" for i, (name, _) in enumerate(base["val"])]  # in order


def test_unannotated_train_images_are_left_out_and_listed(base, built):
    annotated = {rel for split, rel in B.annotations(base) if split == "train"}
    left_out = (built["2012"] / "ssd_unannotated_train.txt").read_text().split()
    assert sorted(left_out) == sorted(rel for rel, _ in base["train"] if rel not in annotated)
    keys = {k.split("_", 1)[1] for k, _ in _parsed(built["2012"] / "ilsvrc12_train_annotated_lmdb")}
    assert keys == annotated
    empty = [m for k, m in _parsed(built["2012"] / "ilsvrc12_train_annotated_lmdb")
             if not m.annotation_group]
    assert len(empty) == 1  # the annotation without object: stored with no groups


def test_keep_unannotated_caffe_order_encoded_and_resize(base, tmp_path, capsys):
    out = tmp_path / "out"
    assert create_imagenet_main([str(base["sources"]["kaggle"]), str(out), "--format", "ssd",
                                 "--keep_unannotated", "--label_order", "caffe", "--encoded",
                                 "--resize", "64x64", "--resize_mode", "crop"]) == 0
    err = capsys.readouterr()
    assert "1 boxes named by words, mapped to their synset" in err.out + err.err
    train = _parsed(out / "ilsvrc12_train_annotated_lmdb")
    counts = json.loads((out / "ilsvrc12_train_annotated_lmdb" / "imagenet_db.json").read_text())
    stored = sum(len(g.annotation) for _, m in train for g in m.annotation_group)
    assert counts["boxes"]["images"] == len(train) and counts["boxes"]["boxes"] == stored
    assert f"{stored} boxes; {counts['boxes']['dropped_by_resize']} dropped" in err.err
    assert len(train) == len(base["train"])
    assert all(m.datum.encoded and (m.datum.height, m.datum.width) == (64, 64) for _, m in train)
    labelmap = text_format.Parse((out / "labelmap.prototxt").read_text(), LabelMap())
    assert [i.name for i in labelmap.item[1:]] == sorted(WNIDS)
    for _, message in train:
        for group in message.annotation_group:
            assert all(0 <= v <= 1 for a in group.annotation
                       for v in (a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax))


def test_xml_and_csv_that_disagree_stop_the_run(base, tmp_path, capsys):
    source = tmp_path / "kaggle"
    F.write_kaggle(source, base, form="tree")
    csv = source / "LOC_val_solution.csv"
    lines = csv.read_text().splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith("ILSVRC2012_val_00000002,"))
    wnid, x0, rest = lines[row].split(",", 1)[1].split(" ", 2)
    lines[row] = f"ILSVRC2012_val_00000002,{wnid} {int(x0) + 1} {rest}"
    csv.write_text("".join(lines))
    assert create_imagenet_main([str(source), str(tmp_path / "out"), "--format", "ssd"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ILSVRC2012_val_00000002.JPEG" in err and "LOC_val_solution.csv" in err
    assert "ILSVRC2012_val_00000002.xml" in err and "disagree" in err


def test_a_source_without_boxes_is_refused(base, tmp_path, capsys):
    assert create_imagenet_main([base["tree"], str(tmp_path / "out"), "--format", "ssd"]) == 1
    assert "has no boxes for train" in capsys.readouterr().err


def test_caffe_format_does_not_read_the_boxes(base, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(base["sources"]["2012"], source)
    (source / B.BBOX_TRAIN).write_bytes(b"not a tar.gz")
    assert create_imagenet_main([str(source), str(tmp_path / "out"), "--resize", "16x16"]) == 0
    assert create_imagenet_main([str(source), str(tmp_path / "ssd"), "--format", "ssd"]) == 1


def test_reader_verify_and_show_understand_annotated_datums(base, built, tmp_path):
    path = built["2012"] / "ilsvrc12_val_annotated_lmdb"
    parsed = _parsed(path)
    with DatumDB(str(path)) as db:
        assert len(db) == len(parsed) and list(db.labels()) == [-1] * len(parsed)
        for (key, message), (image, boxes) in zip(parsed, db):
            assert image.shape == (message.datum.height, message.datum.width, 3)
            want = [(a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, g.group_label,
                     a.bbox.difficult) for g in message.annotation_group for a in g.annotation]
            assert boxes.dtype == np.float32 and boxes.shape == (len(want), 6)
            np.testing.assert_array_equal(boxes, np.float32(want).reshape(-1, 6))
    report = verify_output(str(path))
    assert report.ok and report.entries == len(parsed), report.describe()
    assert report.backend == "ssd"
    # a changed box coordinate is caught by the content checksum
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    env = lmdb.open(str(damaged), map_size=1 << 26)
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor()))
        message = AnnotatedDatum()
        message.ParseFromString(value)
        message.annotation_group[0].annotation[0].bbox.xmin += 0.125
        txn.put(key, message.SerializeToString())
    env.close()
    report = verify_output(str(damaged))
    assert not report.ok and any("entries_crc32_sum" in p for p in report.problems)
    sheet = write_sheet(str(path), SheetOptions(out=str(tmp_path / "s.png"), tile=96),
                        log=lambda _: None)
    picture = cv2.imread(sheet)
    green = (picture[:, :, 1] == 255) & (picture[:, :, 0] == 0) & (picture[:, :, 2] == 0)
    assert green.sum() > 100  # the boxes are drawn


def test_boxes_csv_for_other_formats_in_tensorflows_layout(base, tmp_path):
    out = tmp_path / "folder"
    assert create_imagenet_main([str(base["sources"]["2012"]), str(out), "--format", "folder",
                                 "--boxes_csv"]) == 0
    lines = (out / "boxes.csv").read_text().splitlines()
    words = {t.split(",")[0].replace(" ", "_") for _, _, t in base["classes"]}
    want = []
    for (_, rel), (width, height, boxes) in sorted(B.annotations(base).items(),
                                                   key=lambda item: item[0][1]):
        for x0, y0, x1, y1, name, _ in boxes:
            if name in WNIDS or name in words:  # the unknown name is left out
                xs = sorted(min(max(v / width, 0), 1) for v in (x0, x1))
                ys = sorted(min(max(v / height, 0), 1) for v in (y0, y1))
                want.append(f"{rel.split('/')[-1]},{xs[0]:.4f},{ys[0]:.4f},{xs[1]:.4f},{ys[1]:.4f}")
    assert sorted(lines) == sorted(want) and len(lines) > 10
    assert any(",1.0000," in line or line.endswith(",1.0000") for line in lines)  # clamped


def test_report_counts_images_and_boxes(built, tmp_path):
    page = write_report(str(built["2012"]), str(tmp_path / "r.html"), log=lambda _: None)
    text = Path(page).read_text()
    for split in ("train", "val"):
        parsed = _parsed(built["2012"] / f"ilsvrc12_{split}_annotated_lmdb")
        boxes = sum(len(g.annotation) for _, m in parsed for g in m.annotation_group)
        with_boxes = sum(bool(m.annotation_group) for _, m in parsed)
        assert f"{with_boxes:,} of {len(parsed):,}, {boxes:,}" in text


def _fsize_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_an_interrupted_ssd_build_resumes_to_the_same_database_and_counts(base, built, tmp_path):
    """A file-size limit stops the train LMDB midway (a real process, a real failed write);
    --resume finishes it: the same entries as an uninterrupted build, and the box counts of
    the completion record recounted from what the first run committed."""
    out = tmp_path / "out"
    code = ("import sys; from imagenet_db.cli import create_imagenet_main as main; "
            "sys.exit(main(sys.argv[1:]))")
    args = [sys.executable, "-c", code, str(base["sources"]["2012"]), str(out), "--format", "ssd",
            "--txn_size", "1", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                           preexec_fn=_fsize_limit(1_500_000))
    assert first.returncode == 1, first.stderr
    partial = out / "ilsvrc12_train_annotated_lmdb.partial"
    committed = len(_entries(partial))
    assert 0 < committed < 8
    second = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resumed after {committed} images" in second.stderr
    folder = "ilsvrc12_train_annotated_lmdb"
    assert _entries(out / folder) == _entries(built["2012"] / folder)
    counts = json.loads((out / folder / "imagenet_db.json").read_text())["boxes"]
    clean = json.loads((built["2012"] / folder / "imagenet_db.json").read_text())["boxes"]
    assert counts == {**clean, "dropped_counted_from": committed}
