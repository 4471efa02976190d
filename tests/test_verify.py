"""`imagenet-db verify`: real databases made by imagenet-db and, like Caffe makes them, by hand."""
import json

import cv2
import lmdb
import numpy as np
import pytest

from imagenet_db.testing import photos as fixtures
from imagenet_db.cli import main
from imagenet_db.outputs.datum import image_to_datum
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.observers.mean import MeanObserver
from imagenet_db.pipeline import convert
from imagenet_db.protos import Datum
from imagenet_db.sources.base import Record
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.verify import verify_db


QUIET = BuildOptions(progress=False)


@pytest.fixture(scope="module")
def jpegs():
    rng = np.random.default_rng(11)
    return [fixtures.imagenet_like_jpeg(rng, size=(120, 90) if i % 4 else (90, 120))
            for i in range(12)]


def records_for(jpegs, labels=None):
    labels = labels or [i % 3 for i in range(len(jpegs))]
    return [Record(i, f"n0000000{label}/img_{i}.JPEG", label, (lambda data=data: data))
            for i, (data, label) in enumerate(zip(jpegs, labels))]


def caffe_lmdb(path, items):
    """An LMDB written the way Caffe's convert_imageset writes one (no imagenet-db files)."""
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in items:
            txn.put(key, value)
    env.close()
    return str(path)


def raw_datum(label=0, shape=(3, 8, 8)):
    c, h, w = shape
    image = np.full((h, w, c) if c > 1 else (h, w), 100, np.uint8)
    return image_to_datum(image, label).SerializeToString()


def run(capsys, *args):
    rc = main(["verify", *map(str, args), "--no-progress"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out + out.err


def test_databases_made_by_imagenet_db_pass(jpegs, tmp_path, capsys):
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("n00000000\nn00000001\nn00000002\n")
    convert(records_for(jpegs), str(tmp_path / "raw"), "lmdb",
            TransformOptions(resize_height=32, resize_width=32), QUIET, [MeanObserver()])
    rc, out = run(capsys, tmp_path / "raw", "--synsets", synsets)
    assert rc == 0 and out.rstrip().endswith("OK"), out
    assert "12 datums (0 encoded, 12 raw)" in out and "3x32x32 (12)" in out
    assert "labels: 3 distinct, 0..2" in out
    convert(records_for(jpegs), str(tmp_path / "enc"), "leveldb", TransformOptions(encoded=True),
            QUIET)
    rc, out = run(capsys, tmp_path / "enc", "--synsets", synsets)
    assert rc == 0 and "12 encoded" in out, out
    assert "note: datums have" in out  # original sizes kept, as the manifest says: a note
    rc, out = run(capsys, tmp_path / "enc", "--backend", "lmdb")
    assert rc == 1 and "is a leveldb database, not lmdb" in out


def test_caffe_made_database_is_checked_without_a_completion_record(tmp_path, capsys):
    path = caffe_lmdb(tmp_path / "caffe", [(b"%08d_n0/x%d.JPEG" % (i, i), raw_datum(i % 2))
                                           for i in range(5)])
    rc, out = run(capsys, path)
    assert rc == 0 and "no completion record" in out and "5 datums" in out, out
    rc, out = run(capsys, path, "--require_manifest")
    assert rc == 1 and "problem: no completion record" in out


@pytest.mark.parametrize("items, extra, message", [
    ([(b"hello", raw_datum())], [], "is not of Caffe's form"),
    ([(b"00000000_a", b"\xff" * 20)], [], "value is not a Caffe Datum"),
    ([(b"00000000_a", Datum(channels=3, height=4, width=4, data=b"x" * 10).SerializeToString())],
     [], "10 values but channels*height*width = 3*4*4 = 48"),
    ([(b"00000000_a", Datum(encoded=True, data=b"not a jpeg").SerializeToString())], [],
     "encoded image data cannot be decoded"),
    ([(b"00000000_a", raw_datum(label=5))], ["--synsets"], "label 5 is outside 0..2"),
    ([(b"00000000_a", raw_datum(label=-1))], [], "label -1 is outside >= 0"),
    ([(b"00000000_a", raw_datum()), (b"00000001_b", raw_datum(shape=(3, 9, 8)))], [],
     "2 different channels/height/width"),
    ([(b"00000001_a", raw_datum()), (b"00000001_b", raw_datum())], [],
     "record number 1 is not above the previous key's 1"),
    ([], [], "the database is empty"),
])
def test_each_problem_is_reported(tmp_path, capsys, items, extra, message):
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("n00000000\nn00000001\nn00000002\n")
    path = caffe_lmdb(tmp_path / "db", items)
    rc, out = run(capsys, path, *(extra and [extra[0], synsets]))
    assert rc == 1 and message in out and "FAILED" in out, out


def test_encoded_datum_whose_stored_size_lies(tmp_path, capsys, jpegs):
    image = cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR)
    lying = Datum(encoded=True, data=jpegs[0], channels=3, height=10, width=10, label=0)
    path = caffe_lmdb(tmp_path / "db", [(b"00000000_a", lying.SerializeToString())])
    rc, out = run(capsys, path)
    assert rc == 1 and f"decodes to {(3, *image.shape[:2])}" in out


def test_mixed_sizes_allowed_on_request(tmp_path, capsys):
    path = caffe_lmdb(tmp_path / "db", [(b"00000000_a", raw_datum()),
                                        (b"00000001_b", raw_datum(shape=(1, 9, 8)))])
    rc, out = run(capsys, path, "--allow_mixed_sizes")
    assert rc == 0 and "note: datums have 2 different" in out


def test_completion_record_must_match_contents(jpegs, tmp_path, capsys):
    db = tmp_path / "db"
    convert(records_for(jpegs), str(db), transform=TransformOptions(resize_height=8, resize_width=8),
            build=QUIET)
    env = lmdb.open(str(db))
    with env.begin(write=True) as txn:
        txn.delete(b"00000003_n00000000/img_3.JPEG")
    env.close()
    rc, out = run(capsys, db)
    assert rc == 1 and "completion record says 12 entries, the database holds 11" in out
    manifest = json.loads((db / "imagenet_db.json").read_text())
    manifest["backend"] = "leveldb"
    (db / "imagenet_db.json").write_text(json.dumps(manifest))
    rc, out = run(capsys, db)
    assert "completion record says backend leveldb, the files are lmdb" in out


def test_unfinished_build_fails(jpegs, tmp_path, capsys):
    bad = records_for(jpegs[:6] + [b"broken"] + jpegs[6:])
    with pytest.raises(Exception, match="strict"):
        convert(bad, str(tmp_path / "db"), build=BuildOptions(strict=True, progress=False))
    rc, out = run(capsys, f"{tmp_path / 'db'}.partial")
    assert rc == 1 and "unfinished imagenet-db build" in out and "--resume" in out
    assert not (tmp_path / "db").exists()


def test_not_a_database(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, out = run(capsys, tmp_path / "empty")
    assert rc == 1 and "not an output verify knows" in out and "LMDB or LevelDB" in out
    assert "cuda-convnet2" in out and out.count("\n") == 1  # one line saying what it accepts
    rc, out = run(capsys, tmp_path / "missing")
    assert rc == 1 and "no such file or directory" in out


def test_verify_api_counts_labels_and_shapes(jpegs, tmp_path):
    convert(records_for(jpegs, labels=[7] * 12), str(tmp_path / "db"),
            transform=TransformOptions(resize_height=16, resize_width=24), build=QUIET)
    report = verify_db(str(tmp_path / "db"), progress=False)
    assert report.ok and report.entries == 12
    assert report.shapes == {(3, 16, 24): 12} and report.labels == {7: 12}
