"""create_imagenet --format webdataset / tfrecord (issue 22): shards read back with the real
readers (the webdataset library, TensorFlow's tf.data when installed, tarfile), DALI index
offsets against the real members, deterministic rebuilds, PNG/CMYK conversion, resize, verify
on damaged shards, resume after a real kill, and a real Dask cluster."""
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagenet_db.cli import create_imagenet_main
from imagenet_db.outputs.example_proto import parse_example
from imagenet_db.readers.shardreaders import read_tfrecord_shard, read_wds_shard
from imagenet_db.sources.base import shuffled
from imagenet_db.testing.photos import odd_images
from imagenet_db.verify import verify_output

ARGS = ["--progress=false", "--workers=2"]


def build(source, out, fmt, *extra):
    assert create_imagenet_main([str(source), str(out), "--format", fmt, *ARGS, *extra]) == 0
    return Path(out) / fmt


def entries(root, split):
    """[(relpath, label)] of OUTDIR/<split>.txt (Caffe labels)."""
    lines = (Path(root) / f"{split}.txt").read_text().splitlines()
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in lines]


def tree_files(folder):
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def stem(relpath):
    return os.path.splitext(relpath.rsplit("/", 1)[-1])[0]


# ------------------------------------------------------------------ webdataset
def test_webdataset_read_by_the_webdataset_library(sample_copy, tmp_path):
    import webdataset as wds

    out = build(sample_copy, tmp_path / "o", "webdataset", "--shard_size", "7", "--seed", "5")
    train = entries(tmp_path / "o", "train")
    order = shuffled(train, 5)
    urls = [str(out / f"imagenet-train-{i:06d}.tar") for i in range(6)]
    assert sorted(p.name for p in out.glob("*.tar")) == \
        [f"imagenet-train-{i:06d}.tar" for i in range(6)] + \
        [f"imagenet-val-{i:06d}.tar" for i in range(2)]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert [s["__key__"] for s in samples] == [stem(rel) for rel, _ in order]
    synsets = (tmp_path / "o" / "synsets.txt").read_text().split()
    for sample, (relpath, label) in zip(samples, order):
        assert sample["cls"] == label
        assert sample["json"] == {"wnid": synsets[label], "label": label, "relpath": relpath,
                                  "width": sample["jpg"].shape[1],
                                  "height": sample["jpg"].shape[0]}
    raw = list(wds.WebDataset(urls, shardshuffle=False))  # no resize: the original bytes
    for sample, (relpath, _) in zip(raw, order):
        assert sample["jpg"] == (sample_copy / "train" / relpath).read_bytes()
    val = [s["__key__"] for s in wds.WebDataset(
        [str(out / "imagenet-val-000000.tar"), str(out / "imagenet-val-000001.tar")],
        shardshuffle=False)]
    assert val == [stem(rel) for rel, _ in entries(tmp_path / "o", "val")]  # file order
    info = json.loads((out / "_info.json").read_text())
    assert info["splits"]["train"]["shard_lengths"] == [7, 7, 7, 7, 7, 5]
    assert info["splits"]["train"]["num_samples"] == 40
    assert info["splits"]["val"]["filenames"] == ["imagenet-val-000000.tar",
                                                  "imagenet-val-000001.tar"]


def test_webdataset_tar_members_and_dali_index(sample_copy, tmp_path):
    out = build(sample_copy, tmp_path / "o", "webdataset", "--shard_size", "9")
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and
                       m.mode == 0o644 and m.isfile() for m in members)
            names = [m.name for m in members]
            keys = list(dict.fromkeys(n.split(".")[0] for n in names))
            assert names == [f"{k}.{e}" for k in keys for e in ("cls", "jpg", "json")]
            lines = tar_path.with_suffix(".idx").read_text().splitlines()
            assert lines[0] == f"v1.2 {len(keys)}"
            data = tar_path.read_bytes()
            by_name = {m.name: m for m in members}
            for key, line in zip(keys, lines[1:]):
                fields = line.split()
                assert len(fields) == 12
                for ext, offset, size, name in zip(*[iter(fields)] * 4):
                    member = by_name[name]
                    assert (name, ext) == (f"{key}.{ext}", ext)
                    assert int(offset) == member.offset_data and int(offset) % 512 == 0
                    assert int(size) == member.size
                    assert data[int(offset):int(offset) + int(size)] == \
                        tar.extractfile(member).read()


def test_rebuild_and_worker_count_give_identical_shards(sample_copy, tmp_path):
    for fmt in ("webdataset", "tfrecord"):
        a = build(sample_copy, tmp_path / f"a{fmt}", fmt, "--shard_size", "6")
        assert create_imagenet_main([str(sample_copy), str(tmp_path / f"b{fmt}"), "--format", fmt,
                                     "--progress=false", "--workers=1", "--shard_size", "6"]) == 0
        assert tree_files(a) == tree_files(tmp_path / f"b{fmt}" / fmt)


def test_shard_bytes_closes_shards_first(sample_copy, tmp_path):
    out = build(sample_copy, tmp_path / "o", "webdataset", "--shard_bytes", "300000")
    info = json.loads((out / "_info.json").read_text())
    lengths = info["splits"]["train"]["shard_lengths"]
    assert sum(lengths) == 40 and len(lengths) >= 6
    for name in info["splits"]["train"]["filenames"]:
        with tarfile.open(out / name) as tar:  # no resize: stored bytes = source bytes
            jpgs = [m.size for m in tar.getmembers() if m.name.endswith(".jpg")]
        assert sum(jpgs) <= 300000 or len(jpgs) == 1
    assert any(length < 1000 for length in lengths)  # closed by bytes, not by count


def odd_tree(root):
    """A train/<wnid>/ tree holding a PNG named .JPEG, a CMYK JPEG, a grayscale JPEG and an
    undecodable file, plus two normal photos."""
    odd = odd_images()
    photos = sorted((Path(__file__).parent.parent / "examples" / "sample_imagenet" / "train"
                     / "n01440764").glob("*.JPEG"))
    files = {"n01440764/n01440764_1.JPEG": odd["png_named_jpeg"],
             "n01440764/n01440764_2.JPEG": odd["cmyk"],
             "n01440764/n01440764_3.JPEG": odd["grayscale"],
             "n01751748/n01751748_4.JPEG": odd["text"],
             "n01751748/n01751748_5.JPEG": photos[0].read_bytes(),
             "n01751748/n01751748_6.JPEG": photos[1].read_bytes()}
    for relpath, data in files.items():
        path = Path(root) / "train" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_png_and_cmyk_become_rgb_jpeg_gray_and_jpegs_keep_their_bytes(tmp_path):
    import webdataset as wds
    from PIL import Image

    files = odd_tree(tmp_path / "src")
    out = build(tmp_path / "src", tmp_path / "o", "webdataset")
    samples = {s["__key__"]: s for s in wds.WebDataset([str(out / "imagenet-train-000000.tar")],
                                                       shardshuffle=False)}
    assert set(samples) == {"n01440764_1", "n01440764_2", "n01440764_3", "n01751748_5",
                            "n01751748_6"}
    for key in ("n01440764_1", "n01440764_2"):
        image = Image.open(io.BytesIO(samples[key]["jpg"]))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (320, 240))
    for key in ("n01440764_3", "n01751748_5", "n01751748_6"):
        relpath = f"{key.split('_')[0]}/{key}.JPEG"
        assert samples[key]["jpg"] == files[relpath]
    skipped = (tmp_path / "o" / "webdataset.skipped.tsv").read_text()
    assert skipped.startswith("n01751748/n01751748_4.JPEG\t")
    manifest = json.loads((out / "imagenet_db.json").read_text())
    assert (manifest["entries"], manifest["skipped"], manifest["records"]) == (5, 1, 6)
    assert verify_output(str(out)).ok


def test_resize_reencodes_at_the_asked_size(sample_copy, tmp_path):
    import webdataset as wds

    out = build(sample_copy, tmp_path / "o", "webdataset", "--resize", "64x48",
                "--encode_quality", "80")
    for sample in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")),
                                 shardshuffle=False).decode("rgb8"):
        assert sample["jpg"].shape == (48, 64, 3)
        assert (sample["json"]["width"], sample["json"]["height"]) == (64, 48)


def test_boxes_of_a_sample_reach_both_formats():
    """A EncodedSample's boxes: the .json keeps them as they are (float32 exactly, label and
    difficult as integers); TFRecord applies TF's rules (clamp, swap, drop no-area boxes)."""
    from imagenet_db.outputs.shards import EncodedSample
    from imagenet_db.outputs.tfrecord import TfRecordOutput, example_features
    from imagenet_db.outputs.webdataset import sample_json
    from imagenet_db.sources.base import Record

    boxes = np.array([[0.1, 0.2, 0.5, 0.6, 3, 0],      # kept
                      [0.9, 0.8, 0.7, 1.3, 3, 1],      # reversed x, ymax past 1: swap, clamp
                      [0.4, 0.4, 0.4, 0.9, 3, 0],      # zero width: dropped by TF
                      [-0.5, 0.1, -0.1, 0.3, 3, 0]], np.float32)  # left of the image: dropped
    record = Record(0, "n01440764/n01440764_7.JPEG", 3, None)
    options = {"synsets": ["n0", "n1", "n2", "n01440764"], "words": {}, "label_base": 1}
    sample = EncodedSample(b"\xff\xd8jpeg", None, (3, 30, 40), "n01440764_7", None, (4, 0), boxes)
    meta = json.loads(sample_json(record, sample, options))
    assert [row[4:] for row in meta["boxes"]] == [[3, 0], [3, 1], [3, 0], [3, 0]]
    assert np.array_equal(np.float32([row[:4] for row in meta["boxes"]]), boxes[:, :4])
    assert meta["boxes"][0][:4] == [0.1, 0.2, 0.5, 0.6]  # the float32's shortest decimal
    rows = TfRecordOutput.format_boxes(boxes)
    features = example_features(record, EncodedSample(b"", None, (3, 30, 40), "k", None,
                                                    (2, 0), rows), options)
    assert np.allclose(features["image/object/bbox/xmin"], [0.1, 0.7])
    assert np.allclose(features["image/object/bbox/xmax"], [0.5, 0.9])
    assert np.allclose(features["image/object/bbox/ymin"], [0.2, 0.8])
    assert np.allclose(features["image/object/bbox/ymax"], [0.6, 1.0])
    assert features["image/object/bbox/label"] == [3, 3]  # labels already in TF's order
    none = EncodedSample(b"", None, (3, 30, 40), "k")
    assert "image/object/bbox/xmin" not in example_features(record, none, options)
    assert "boxes" not in json.loads(sample_json(record, none, options))


# ------------------------------------------------------------------ tfrecord
def _crc32c_table():
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ (0x82F63B78 if n & 1 else 0)
        table.append(n)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c_reference(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) from its definition, a byte at a
    time: independent of the library the writer uses."""
    crc, table = 0xFFFFFFFF, CRC32C_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def test_crc32c_reference_known_value():
    assert crc32c_reference(b"123456789") == 0xE3069283  # the CRC-32C check value


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_frames(path):
    """(offset, total length, data) of each TFRecord, CRCs checked with crc32c_reference."""
    data = Path(path).read_bytes()
    at, out = 0, []
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked(
            crc32c_reference(data[at:at + 8]))
        body = data[at + 12:at + 12 + length]
        assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked(
            crc32c_reference(body))
        out.append((at, 16 + length, body))
        at += 16 + length
    return out


def test_tfrecord_layout_framing_features_and_index(sample_copy, tmp_path):
    out = build(sample_copy, tmp_path / "o", "tfrecord", "--shard_size", "16", "--seed", "2")
    names = sorted(p.name for p in out.iterdir() if p.is_file() and "-of-" in p.name)
    assert names == ["train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003",
                     "validation-00000-of-00001"]
    synsets = (tmp_path / "o" / "synsets.txt").read_text().split()
    words = dict(line.split(" ", 1) for line in
                 (tmp_path / "o" / "synset_words.txt").read_text().splitlines())
    order = shuffled(entries(tmp_path / "o", "train"), 2)
    got = []
    for name in names[:3]:
        frames = read_frames(out / name)
        index = (out / "idx" / f"{name}.idx").read_text()
        assert index == "".join(f"{at} {size}\n" for at, size, _ in frames)
        got += [parse_example(body) for _, _, body in frames]
    assert len(got) == 40
    for features, (relpath, label) in zip(got, order):
        assert features["image/class/label"] == [label + 1]  # TF: 1-based, 0 = background
        assert features["image/class/synset"] == [synsets[label].encode()]
        assert features["image/class/text"] == [words[synsets[label]].encode()]
        assert features["image/filename"] == [relpath.rsplit("/", 1)[1].encode()]
        assert features["image/format"] == [b"JPEG"] and features["image/colorspace"] == [b"RGB"]
        assert features["image/channels"] == [3]
        assert features["image/encoded"] == [(sample_copy / "train" / relpath).read_bytes()]
        image = cv2.imdecode(np.frombuffer(features["image/encoded"][0], np.uint8), 1)
        assert features["image/height"] == [image.shape[0]]
        assert features["image/width"] == [image.shape[1]]
    manifest = json.loads((out / "imagenet_db.json").read_text())
    assert manifest["label_base"] == 1 and len(manifest["shards"]) == 4


def test_tfrecord_default_shard_counts_and_label_base_0(sample_copy, tmp_path):
    out = build(sample_copy, tmp_path / "o", "tfrecord", "--label_base", "0")
    # fewer images than TF's 1024 / 128 shards: one record per shard
    assert len(list(out.glob("train-*-of-00040"))) == 40
    assert len(list(out.glob("validation-*-of-00010"))) == 10
    labels = sorted(parse_example(body)["image/class/label"][0]
                    for path in out.glob("train-*") for _, _, body in read_frames(path))
    assert labels == sorted(label for _, label in entries(tmp_path / "o", "train"))
    assert json.loads((out / "imagenet_db.json").read_text())["label_base"] == 0
    assert verify_output(str(out)).ok


def test_tfrecord_read_by_tensorflow(sample_copy, tmp_path):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install "
                                                  "'imagenet-db[test-tf]')")
    out = build(sample_copy, tmp_path / "o", "tfrecord", "--shard_size", "16", "--resize",
                "40x30")
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/class/synset": tf.io.FixedLenFeature([], tf.string),
            "image/class/text": tf.io.FixedLenFeature([], tf.string),
            "image/format": tf.io.FixedLenFeature([], tf.string),
            "image/colorspace": tf.io.FixedLenFeature([], tf.string),
            "image/channels": tf.io.FixedLenFeature([], tf.int64),
            "image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/height": tf.io.FixedLenFeature([], tf.int64),
            "image/width": tf.io.FixedLenFeature([], tf.int64),
            "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32)}
    files = sorted(str(p) for p in out.glob("train-*"))
    truth = dict(entries(tmp_path / "o", "train"))
    seen = 0
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(serialized, spec)
        name = example["image/filename"].numpy().decode()
        wnid = name.split("_")[0]
        assert int(example["image/class/label"]) == truth[f"{wnid}/{name}"] + 1
        assert tuple(tf.io.decode_jpeg(example["image/encoded"]).shape) == (30, 40, 3)
        assert (int(example["image/height"]), int(example["image/width"])) == (30, 40)
        seen += 1
    assert seen == 40


# ------------------------------------------------------------------ verify
def test_verify_names_damaged_shards_and_indexes(sample_copy, tmp_path):
    for fmt in ("webdataset", "tfrecord"):
        out = build(sample_copy, tmp_path / fmt, fmt, "--shard_size", "10")
        assert verify_output(str(out)).ok
        shard = sorted(p for p in out.iterdir() if p.is_file() and
                       p.name.startswith(("imagenet-train", "train-")) and
                       not p.name.endswith(".idx"))[1]
        data = bytearray(shard.read_bytes())
        data[700] ^= 0x01
        shard.write_bytes(bytes(data))
        report = verify_output(str(out))
        assert any(line.startswith(f"{shard}: SHA-256 differs") for line in report.problems)
        assert any(line.startswith(f"{shard}: ") and ("padding" in line or "CRC-32C" in line)
                   for line in report.problems)
        data[700] ^= 0x01
        shard.write_bytes(bytes(data[:len(data) // 2]))
        assert any(line.startswith(f"{shard}: ") and "truncated" in line
                   for line in verify_output(str(out)).problems)
        shard.write_bytes(bytes(data))
        assert verify_output(str(out)).ok
        index = next(p for p in out.rglob("*.idx"))
        text = index.read_text()
        index.write_text(text.replace("1", "2", 1))
        assert [line for line in verify_output(str(out)).problems] == \
            [f"{index}: does not match the offsets and sizes in {index.stem}"
             + (".tar" if fmt == "webdataset" else "")]
        index.write_text(text)
        extra = out / (shard.name.replace("1", "9"))
        shutil.copyfile(shard, extra)
        assert verify_output(str(out)).problems == \
            [f"{extra}: not a shard of the completion record"]


# ------------------------------------------------------------------ resume
def _wait_for(condition, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_resume_after_kill_gives_identical_shards(sample_copy, tmp_path, fmt):
    """The build is held on a val image that is a FIFO (its read blocks until a writer opens
    it): the train shards are then all finished and logged. SIGKILL, put the real file back,
    --resume: the shards equal those of an uninterrupted build."""
    reference = build(sample_copy, tmp_path / "ref", fmt, "--shard_size", "8")
    held = sample_copy / "val" / "ILSVRC2012_val_00000004.JPEG"
    real = held.read_bytes()
    held.unlink()
    os.mkfifo(held)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "imagenet_db.cli", "create", str(sample_copy), str(out),
           "--format", fmt, "--shard_size", "8", "--progress=false", "--workers=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / f"{fmt}.partial" / "imagenet_db.shards.log"
    try:
        _wait_for(lambda: log.exists() and log.read_text().count("\n") == 5,
                  "the 5 train shards were not logged")
        assert proc.poll() is None  # held on the FIFO
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = out / f"{fmt}.partial"
        # the shard being written is a temporary; every shard at its final name is complete
        assert len([p for p in partial.iterdir() if ".tmp-" in p.name]) == 1
        reader = read_wds_shard if fmt == "webdataset" else read_tfrecord_shard
        finished = [p for p in partial.iterdir() if p.name.startswith(("imagenet-", "train-"))
                    and not p.name.endswith(".idx") and ".tmp-" not in p.name]
        assert len(finished) == 5
        assert sum(len(reader(str(p))[0]) for p in finished) == 40
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    held.unlink()
    held.write_bytes(real)
    assert not (out / fmt).exists()
    assert create_imagenet_main([str(sample_copy), str(out), "--format", fmt, "--shard_size",
                                 "8", "--resume", *ARGS]) == 0
    assert tree_files(out / fmt) == tree_files(reference)


# ------------------------------------------------------------------ dask
def test_dask_cluster_writes_identical_shards(sample_copy, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = build(sample_copy, tmp_path / "local", "webdataset", "--shard_size", "6")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        for fmt in ("webdataset", "tfrecord"):
            assert create_imagenet_main([str(sample_copy), str(tmp_path / "dask"), "--format",
                                         fmt, "--shard_size", "6", "--progress=false",
                                         f"--dask_scheduler={cluster.scheduler_address}"]) == 0
    assert tree_files(tmp_path / "dask" / "webdataset") == tree_files(local)
    assert verify_output(str(tmp_path / "dask" / "tfrecord")).ok


def test_a_key_with_a_dot_is_a_one_line_error(sample_copy, tmp_path, capsys):
    photo = next((sample_copy / "train" / "n01440764").glob("*.JPEG"))
    photo.rename(photo.with_name("n01440764_1.v2.JPEG"))
    assert create_imagenet_main([str(sample_copy), str(tmp_path / "o"), "--format",
                                 "webdataset", *ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "n01440764/n01440764_1.v2.JPEG" in err and "without a dot" in err
    assert not (tmp_path / "o" / "webdataset").exists()


@pytest.mark.parametrize("fmt, flag, owners", [
    ("caffe", ["--shard_size", "5"], "webdataset / tfrecord"),
    ("folder", ["--shard_bytes", "5"], "webdataset"),
    ("caffe", ["--shard_prefix", "x"], "webdataset"),
    ("webdataset", ["--label_base", "0"], "tfrecord"),
    ("tfrecord", ["--shard_prefix", "x"], "webdataset")])
def test_shard_flags_belong_to_the_shard_formats(sample_copy, tmp_path, capsys, fmt, flag,
                                                 owners):
    assert create_imagenet_main([str(sample_copy), str(tmp_path / "o"), "--format", fmt,
                                 *flag, *ARGS]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"{flag[0]} applies to --format {owners} only")
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_archives_and_tree_give_identical_shards(tmp_path, monkeypatch, fmt):
    """The ILSVRC2012 archive triple (read in place, with its CMYK, gray and PNG members) and
    the same images as an extracted tree: the same shards, index files and _info.json."""
    from imagenet_db.testing import archives as fixture_archives

    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE", str(tmp_path / "idx"))
    spec = fixture_archives.ArchiveSpec(["n01440764", "n01751748", "n02119789"],
                                        train_per_class=4, val_count=6, seed=3)
    fixture_archives.write_archives(tmp_path / "arch", spec, tree_root=tmp_path / "tree")
    from_archives = build(tmp_path / "arch", tmp_path / "a", fmt, "--shard_size", "5")
    from_tree = build(tmp_path / "tree", tmp_path / "t", fmt, "--shard_size", "5")
    shards = {name: data for name, data in tree_files(from_archives).items()
              if name != "imagenet_db.json"}
    assert len(shards) >= 6
    assert shards == {name: data for name, data in tree_files(from_tree).items()
                      if name != "imagenet_db.json"}
    assert verify_output(str(from_archives)).ok


@pytest.mark.parametrize("fmt", ["webdataset", "tfrecord"])
def test_show_draws_a_contact_sheet_of_shards(sample_copy, tmp_path, fmt):
    from imagenet_db.cli import main
    from imagenet_db.readers.sharddb import ShardDB

    out = build(sample_copy, tmp_path / "o", fmt, "--shard_size", "16", "--seed", "4")
    order = shuffled(entries(tmp_path / "o", "train"), 4) + entries(tmp_path / "o", "val")
    db = ShardDB(str(out))
    assert len(db) == 50
    assert [db.key(i).decode() for i in (0, 17, 49)] == [stem(order[i][0]) for i in (0, 17, 49)]
    assert db.labels().tolist() == [label for _, label in order]  # synsets.txt positions
    image, label = db[17]
    relpath = order[17][0]
    source = sample_copy / ("train" if "/" in relpath else "val") / relpath
    assert label == order[17][1]
    assert np.array_equal(image, cv2.imread(str(source), cv2.IMREAD_COLOR))
    sheet = tmp_path / "sheet.png"
    assert main(["show", str(out), "--out", str(sheet), "--count", "6", "--label", "2"]) == 0
    assert cv2.imread(str(sheet)).shape[2] == 3


def test_strict_stops_at_the_first_skipped_image(tmp_path, capsys):
    odd_tree(tmp_path / "src")
    assert create_imagenet_main([str(tmp_path / "src"), str(tmp_path / "o"), "--format",
                                 "tfrecord", "--strict", *ARGS]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: n01751748/n01751748_4.JPEG: ")
    assert not (tmp_path / "o" / "tfrecord").exists()


def test_sigint_stops_after_the_running_shards_then_resume(sample_copy, tmp_path):
    """SIGINT while a worker is held on a FIFO val image: once the FIFO is fed, the build
    exits 130 saying how to resume; --resume then gives the uninterrupted build's shards."""
    reference = build(sample_copy, tmp_path / "ref", "webdataset", "--shard_size", "8")
    held = sample_copy / "val" / "ILSVRC2012_val_00000004.JPEG"
    real = held.read_bytes()
    held.unlink()
    os.mkfifo(held)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_db.cli", "create", str(sample_copy),
                             str(out), "--format", "webdataset", "--shard_size", "8",
                             "--progress=false", "--workers=2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "webdataset.partial" / "imagenet_db.shards.log"
    try:
        _wait_for(lambda: log.exists() and log.read_text().count("\n") == 5,
                  "the 5 train shards were not logged")
        proc.send_signal(signal.SIGINT)
        with open(held, "wb") as fifo:  # releases the held worker
            fifo.write(real)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted: ") and "--resume" in err
    held.unlink()
    held.write_bytes(real)
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "webdataset",
                                 "--shard_size", "8", "--resume", *ARGS]) == 0
    assert tree_files(out / "webdataset") == tree_files(reference)


def tar_members(data: bytes) -> dict:
    """{member name: bytes, or the parsed JSON of a .json member} of a tar file's bytes."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return {n: json.loads(d) if n.endswith(".json") else d for n, d in members.items()}


def test_every_distribution_gives_the_same_shards(tmp_path, monkeypatch):
    """The 2012 archive triple (with its bbox archives), ILSVRC2015 CLS-LOC's .tar.gz and
    Kaggle's zip, all read in place, and the extracted tree: identical WebDataset shards (the
    byte plan included: each source sizes its members without reading them), boxes included;
    the tree has no annotation files, so its .json members have no boxes."""
    from imagenet_db.testing import clsloc
    from imagenet_db.testing.archives import ArchiveSpec
    from imagenet_db.testing.boxes import write_bbox_archives

    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE", str(tmp_path / "idx"))
    base = clsloc.write_base(tmp_path / "b", ArchiveSpec(["n01440764", "n01751748", "n02119789"],
                                                         train_per_class=4, val_count=8, seed=2))
    write_bbox_archives(base)
    clsloc.write_ilsvrc2015(tmp_path / "c", base)
    clsloc.write_kaggle(tmp_path / "k", base)
    sources = {"2012": Path(base["tree"]).parent / "ilsvrc2012", "tree": base["tree"],
               "2015": tmp_path / "c", "kaggle": tmp_path / "k"}
    built = {}
    for name, source in sources.items():
        out = build(source, tmp_path / f"o_{name}", "webdataset", "--shard_size", "9",
                    "--shard_bytes", "150000")
        built[name] = {n: d for n, d in tree_files(out).items() if n != "imagenet_db.json"}
    assert len(built["2012"]) > 8
    for name in ("2015", "kaggle"):  # the same boxes too (bbox archives, XMLs, XMLs + CSVs)
        assert built[name] == built["2012"], name
    # the extracted tree has no annotation files: the same shards but for the .json boxes
    assert sorted(built["tree"]) == sorted(built["2012"])
    with_boxes = 0
    for name, data in built["tree"].items():
        if name.endswith(".tar"):
            boxed = tar_members(built["2012"][name])
            unboxed = {n: {k: v for k, v in m.items() if k != "boxes"} if n.endswith(".json")
                       else m for n, m in boxed.items()}
            assert tar_members(data) == unboxed, name
            with_boxes += unboxed != boxed
        elif not name.endswith(".idx"):
            assert data == built["2012"][name], name
    assert with_boxes > 3
