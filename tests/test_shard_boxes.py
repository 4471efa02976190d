"""The WebDataset and TFRecord shards carry the boxes (issues 21 and 22): from the 2012 files with
their bbox archives, the .json boxes read with the ``webdataset`` library equal the SSD
AnnotatedDatum LMDB's (read with lmdb + protobuf) without a resize and under the same crop,
and TensorFlow parses TF's clamped, swapped boxes (degenerate ones dropped) from the
TFRecords; a source without box files gives shards without boxes."""
import json
import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import read_lmdb
from imagenet_db.cli import create_imagenet_main
from imagenet_db.outputs.example_proto import parse_example
from imagenet_db.protos import AnnotatedDatum
from imagenet_db.testing import boxes as B
from imagenet_db.testing import clsloc as F
from imagenet_db.testing.archives import ArchiveSpec

WNIDS = ["n01440764", "n02092002", "n02119789", "n09193705"]  # Caffe's order: label = position
ARGS = ["--progress=false", "--workers=2"]
SHARDS = ("webdataset", "tfrecord")
CROP = ["--resize", "40x30", "--resize_mode", "crop"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("shardboxes")
    info = F.write_base(root, ArchiveSpec(wnids=WNIDS, train_per_class=4, val_count=6, seed=4))
    B.write_bbox_archives(info)
    return info


def build(source, out, fmt, *extra) -> Path:
    sizes = ["--shard_size", "5"] if fmt in SHARDS and "--shard_size" not in extra else []
    assert create_imagenet_main([str(source), str(out), "--format", fmt, *ARGS, *sizes,
                                 *extra]) == 0
    return Path(out)


def ssd_boxes(out) -> dict:
    """relpath -> (N, 6) float32 [xmin, ymin, xmax, ymax, Caffe label, difficult] of an SSD
    build with --label_order caffe (its labels are Caffe's + 1), rows sorted."""
    found = {}
    for split in ("train", "val"):
        for key, value in read_lmdb(Path(out) / f"ilsvrc12_{split}_annotated_lmdb"):
            message = AnnotatedDatum()
            message.ParseFromString(value)
            rows = [(a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, g.group_label - 1,
                     a.bbox.difficult) for g in message.annotation_group for a in g.annotation]
            found[bytes(key).decode().split("_", 1)[1]] = sorted_rows(rows)
    return found


def sorted_rows(rows) -> np.ndarray:
    return np.float32(sorted(tuple(map(float, row)) for row in rows)).reshape(-1, 6)


def wds_samples(out) -> list:
    """Every sample of OUTDIR/webdataset, read with the webdataset library (decoded)."""
    import webdataset as wds

    urls = sorted(str(p) for p in (Path(out) / "webdataset").glob("*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))


def wds_boxes(samples) -> dict:
    """relpath -> sorted (N, 6) float32 boxes of the samples whose .json has boxes."""
    return {s["json"]["relpath"]: sorted_rows(s["json"]["boxes"])
            for s in samples if "boxes" in s["json"]}


def tf_records(path):
    """The record bodies of a TFRecord file (framing only; TensorFlow checks the CRCs in
    test_tfrecord_boxes_read_by_tensorflow)."""
    data, at = Path(path).read_bytes(), 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        yield data[at + 12:at + 12 + length]
        at += 16 + length


def manifest(out, fmt) -> dict:
    return json.loads((Path(out) / fmt / "imagenet_db.json").read_text())


def ssd_manifest_boxes(out) -> dict:
    counts = [json.loads((Path(out) / f"ilsvrc12_{split}_annotated_lmdb" /
                          "imagenet_db.json").read_text())["boxes"] for split in ("train", "val")]
    return {name: sum(c[name] for c in counts) for name in ("boxes", "dropped_by_resize")}


@pytest.fixture(scope="module")
def plain(base, tmp_path_factory):
    """(webdataset build, SSD build) without a resize."""
    source = Path(base["tree"]).parent / "ilsvrc2012"
    wds_out = build(source, tmp_path_factory.mktemp("wds"), "webdataset")
    ssd_out = build(source, tmp_path_factory.mktemp("ssd"), "ssd", "--label_order", "caffe")
    return source, wds_out, ssd_out


def test_webdataset_json_boxes_equal_the_ssd_databases(base, plain):
    source, wds_out, ssd_out = plain
    samples = wds_samples(wds_out)
    assert len(samples) == len(base["train"]) + len(base["val"])  # unannotated ones kept
    got, want = wds_boxes(samples), ssd_boxes(ssd_out)
    assert sorted(got) == sorted(want)  # exactly the images with an annotation file
    for relpath, rows in want.items():
        np.testing.assert_array_equal(got[relpath], rows, err_msg=relpath)
    assert sum(len(rows) for rows in got.values()) > 15
    assert any(not len(rows) for rows in got.values())  # the XML without object: []
    assert any((rows[:, :4] > 1).any() or (rows[:, :4] < 0).any() for rows in got.values())
    assert any(rows[:, 5].any() for rows in got.values())  # the difficult box
    for sample in samples:  # no resize: the stored image is the file, at its own size
        assert sample["jpg"].shape[:2] == (sample["json"]["height"], sample["json"]["width"])
        for row in sample["json"].get("boxes", []):  # the fixture boxes the image's class
            assert row[4] == sample["cls"] and isinstance(row[4], int) and row[5] in (0, 1)
    counts = manifest(wds_out, "webdataset")["boxes"]
    assert counts == {"images": len(got), "with_boxes": sum(len(r) > 0 for r in got.values()),
                      "boxes": sum(len(r) for r in got.values()), "dropped_by_resize": 0,
                      "dropped_by_format": 0}


def test_crop_boxes_match_the_ssd_build_under_the_same_transform(base, plain, tmp_path):
    source, wds_plain, _ = plain
    wds_out = build(source, tmp_path / "wds", "webdataset", *CROP)
    ssd_out = build(source, tmp_path / "ssd", "ssd", "--label_order", "caffe", "--encoded",
                    *CROP)
    samples = wds_samples(wds_out)
    assert all(s["jpg"].shape[:2] == (30, 40) for s in samples)
    got, want = wds_boxes(samples), ssd_boxes(ssd_out)
    assert sorted(got) == sorted(want)
    for relpath, rows in want.items():
        np.testing.assert_array_equal(got[relpath], rows, err_msg=relpath)
    uncropped = wds_boxes(wds_samples(wds_plain))
    assert any(not np.array_equal(got[r], uncropped[r]) for r in got)  # the crop moved them
    counts = manifest(wds_out, "webdataset")["boxes"]
    assert {k: counts[k] for k in ("boxes", "dropped_by_resize")} == ssd_manifest_boxes(ssd_out)


def tf_expected(base, label_base: int) -> dict:
    """relpath -> [(xmin, xmax, ymin, ymax, label)] by TF's rules, from the fixture's own
    annotations: pixels / XML size in float32, clamped to [0, 1], min/max swapped, boxes
    with no area dropped, unknown names left out, words mapped to their wnid."""
    words = {t.split(",")[0].replace(" ", "_"): w for _, w, t in base["classes"]}
    out = {}
    for (_, rel), (width, height, boxes) in B.annotations(base).items():
        rows = []
        for x0, y0, x1, y1, name, _ in boxes:
            wnid = words.get(name, name)
            if wnid not in WNIDS:
                continue
            xs = sorted(np.clip(np.float32([x0, x1]) / np.float32(width), 0, 1).tolist())
            ys = sorted(np.clip(np.float32([y0, y1]) / np.float32(height), 0, 1).tolist())
            if xs[1] > xs[0] and ys[1] > ys[0]:
                rows.append((xs[0], xs[1], ys[0], ys[1], WNIDS.index(wnid) + label_base))
        out[rel] = rows
    return out


BBOX = ("xmin", "xmax", "ymin", "ymax")


def test_tfrecord_boxes_read_by_tensorflow(base, plain, tmp_path):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install "
                                                  "'imagenet-db[test-tf]')")
    out = build(plain[0], tmp_path / "o", "tfrecord") / "tfrecord"
    spec = {"image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            **{f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in BBOX},
            "image/object/bbox/label": tf.io.VarLenFeature(tf.int64)}
    expected = tf_expected(base, 1)
    relpath = {rel.rsplit("/", 1)[-1]: rel for rel, _ in base["train"] + base["val"]}
    files = sorted(str(p) for p in out.glob("*-of-*"))
    seen = {}
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(serialized, spec)
        rel = relpath[example["image/filename"].numpy().decode()]
        columns = [tf.sparse.to_dense(example[f"image/object/bbox/{k}"]).numpy().tolist()
                   for k in BBOX + ("label",)]
        seen[rel] = list(zip(*columns))
    assert len(seen) == len(relpath)
    for rel, rows in seen.items():
        assert rows == expected.get(rel, []), rel
    flat = [v for rows in seen.values() for row in rows for v in row[:4]]
    assert 1.0 in flat  # the box reaching past the right edge, clamped
    assert any(box[0] > box[2] for _, _, boxes in B.annotations(base).values()
               for box in boxes)  # a reversed box, swapped above
    counts = manifest(out.parent, "tfrecord")["boxes"]
    assert counts["boxes"] == sum(len(rows) for rows in seen.values())
    assert counts["dropped_by_format"] == 1  # the degenerate box
    # no annotation file: no bbox features at all; an XML without object: empty lists
    parsed = {}
    for path in files:
        for body in tf_records(path):
            features = parse_example(body)
            parsed[features["image/filename"][0].decode()] = features
    for name, rel in relpath.items():
        assert ("image/object/bbox/xmin" in parsed[name]) == (rel in expected), rel


def test_tfrecord_label_base_0_gives_boxes_caffe_labels(base, plain, tmp_path):
    out = build(plain[0], tmp_path / "o", "tfrecord", "--label_base", "0") / "tfrecord"
    expected = tf_expected(base, 0)
    by_name = {rel.rsplit("/", 1)[-1]: rows for rel, rows in expected.items()}
    seen = 0
    for path in sorted(out.glob("*-of-*")):
        for body in tf_records(path):
            features = parse_example(body)
            rows = by_name.get(features["image/filename"][0].decode())
            labels = features.get("image/object/bbox/label")
            assert labels == (None if rows is None else [row[4] for row in rows])
            seen += rows is not None and len(rows) > 0
    assert seen > 10


def test_a_source_without_box_files_gives_shards_without_boxes(base, tmp_path):
    for fmt in SHARDS:
        out = build(base["tree"], tmp_path / fmt, fmt)
        record = manifest(out, fmt)
        assert "boxes" not in record and "read_boxes" not in record
    assert not any("boxes" in s["json"] for s in wds_samples(tmp_path / "webdataset"))


def _fsize_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_an_interrupted_build_resumes_to_the_same_shards_and_box_counts(plain, tmp_path):
    """A file-size limit stops the build at a large shard (a real process, a real failed
    write); --resume rebuilds the rest: the same shards as the uninterrupted build, and the
    box counts of the shards the first run finished come back from the shard log."""
    source = plain[0]
    clean = build(source, tmp_path / "clean", "webdataset", "--shard_size", "2")
    shards = manifest(clean, "webdataset")["shards"]
    sizes = [shard["bytes"] for shard in shards]
    assert max(sizes[1:]) > sizes[0]  # the limit lets the first shard through, not all
    out = tmp_path / "out"
    code = ("import sys; from imagenet_db.cli import create_imagenet_main as main; "
            "sys.exit(main(sys.argv[1:]))")
    args = [sys.executable, "-c", code, str(source), str(out), "--format", "webdataset",
            "--progress=false", "--workers", "1", "--shard_size", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                           preexec_fn=_fsize_limit(sizes[0]))
    assert first.returncode == 1, first.stderr
    log = (out / "webdataset.partial" / "imagenet_db.shards.log").read_text().splitlines()
    assert 0 < len(log) < len(shards) and any("boxes" in json.loads(line) for line in log)
    second = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    for shard in shards:
        assert (out / "webdataset" / shard["name"]).read_bytes() == \
            (clean / "webdataset" / shard["name"]).read_bytes(), shard["name"]
    assert manifest(out, "webdataset")["boxes"] == manifest(clean, "webdataset")["boxes"]
