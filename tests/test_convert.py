"""convert_imageset end to end on real JPEGs, read back through plain lmdb/plyvel + protobuf."""
import shutil

import cv2
import numpy as np
import plyvel
import pytest

from conftest import parse_datum, read_lmdb, train_list
from imagenet_db.cli import compute_image_mean_main, convert_imageset_main
from imagenet_db.sources.listfile import write_list
from imagenet_db.outputs.meanfile import read_mean
from imagenet_db.sources.base import shuffle_order


@pytest.fixture
def listed(sample_copy, tmp_path):
    root = sample_copy / "train"
    entries = train_list(root)
    listfile = tmp_path / "train.txt"
    write_list(str(listfile), entries)
    return root, listfile, entries


def run_convert(*args):
    return convert_imageset_main([str(a) for a in args])


def caffe_pixels(path, height=0, width=0, color=True):
    """What Caffe's ReadImageToCVMat + CVMatToDatum store: imread, optional resize, CHW."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if height and width:
        image = cv2.resize(image, (width, height))
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def test_keys_labels_and_chw_bgr_pixels_match_caffe(listed, tmp_path):
    root, listfile, entries = listed
    db = tmp_path / "db"
    assert run_convert("--resize_height=64", "--resize_width=48", f"{root}/", listfile, db) == 0
    rows = read_lmdb(db)
    assert [k for k, _ in rows] == [b"%08d_%s" % (i, p.encode()) for i, (p, _) in enumerate(entries)]
    for (key, value), (relpath, label) in zip(rows, entries):
        datum = parse_datum(value)
        assert (datum.channels, datum.height, datum.width, datum.label) == (3, 64, 48, label)
        assert not datum.encoded
        expected = caffe_pixels(root / relpath, 64, 48)
        assert datum.data == expected.tobytes()


def test_no_resize_keeps_original_size_and_gray_gives_one_channel(listed, tmp_path):
    root, listfile, entries = listed
    run_convert("-gray", str(root), listfile, tmp_path / "g")
    relpath, _ = entries[3]
    datum = parse_datum(read_lmdb(tmp_path / "g")[3][1])
    expected = caffe_pixels(root / relpath, color=False)
    assert (datum.channels, datum.height, datum.width) == expected.shape
    assert datum.data == expected.tobytes()


def test_shuffle_is_deterministic_per_seed_and_keys_follow_shuffled_order(listed, tmp_path):
    root, listfile, entries = listed
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_convert("--shuffle", f"--seed={seed}", "--resize_height=8", "--resize_width=8",
                    root, listfile, tmp_path / name)
    a, b, c = (read_lmdb(tmp_path / n) for n in "abc")
    assert a == b
    assert [k for k, _ in a] != [k for k, _ in c]
    order = shuffle_order(len(entries), 1)
    expected_keys = [b"%08d_%s" % (i, entries[j][0].encode()) for i, j in enumerate(order)]
    assert [k for k, _ in a] == expected_keys
    assert [parse_datum(v).label for _, v in a] == [entries[j][1] for j in order]
    assert sorted(k.split(b"_", 1)[1] for k, _ in a) == sorted(p.encode() for p, _ in entries)


def test_one_worker_and_two_workers_write_identical_databases(listed, tmp_path):
    root, listfile, _ = listed
    for workers in (1, 2):
        run_convert("--shuffle", "--resize_height=32", "--resize_width=32", f"--workers={workers}",
                    root, listfile, tmp_path / f"w{workers}")
    assert read_lmdb(tmp_path / "w1") == read_lmdb(tmp_path / "w2")
    # the files themselves too (LMDB opened with meminit: no uninitialised bytes on disk)
    assert (tmp_path / "w1" / "data.mdb").read_bytes() == (tmp_path / "w2" / "data.mdb").read_bytes()


def test_encoded_passes_original_bytes_through_and_reencodes_when_resized(listed, tmp_path):
    root, listfile, entries = listed
    run_convert("--encoded", root, listfile, tmp_path / "enc")
    run_convert("--encoded", "--encode_type=png", "--resize_height=20", "--resize_width=30",
                root, listfile, tmp_path / "png")
    for (_, value), (relpath, label) in zip(read_lmdb(tmp_path / "enc"), entries):
        datum = parse_datum(value)
        assert datum.encoded and datum.label == label
        assert datum.data == (root / relpath).read_bytes()
        h, w = cv2.imread(str(root / relpath)).shape[:2]
        assert (datum.channels, datum.height, datum.width) == (3, h, w)
    datum = parse_datum(read_lmdb(tmp_path / "png")[0][1])
    assert datum.encoded and datum.data.startswith(b"\x89PNG")
    decoded = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), caffe_pixels(root / entries[0][0], 20, 30))


def test_leveldb_backend_is_readable_with_plyvel(listed, tmp_path):
    root, listfile, entries = listed
    run_convert("--backend", "leveldb", "--resize_height=16", "--resize_width=16", root, listfile,
                tmp_path / "ldb")
    db = plyvel.DB(str(tmp_path / "ldb"))
    try:
        rows = list(db.iterator())
    finally:
        db.close()
    assert len(rows) == len(entries)
    assert [parse_datum(v).label for _, v in rows] == [label for _, label in entries]
    assert parse_datum(rows[5][1]).data == caffe_pixels(root / entries[5][0], 16, 16).tobytes()


def test_list_paths_with_spaces_and_unreadable_images_are_skipped(listed, tmp_path):
    root, _, entries = listed
    spaced = root / "n01440764" / "my photo 1.JPEG"
    shutil.copyfile(root / entries[0][0], spaced)
    (root / "broken.JPEG").write_bytes(b"not a jpeg")
    listfile = tmp_path / "spaces.txt"
    listfile.write_text(f"n01440764/my photo 1.JPEG 4\nbroken.JPEG 1\nmissing.JPEG 2\n{entries[1][0]} 0\n")
    assert run_convert(root, listfile, tmp_path / "s") == 0
    rows = read_lmdb(tmp_path / "s")
    # Caffe numbers keys by list line, so skipped lines leave gaps in the numbering
    assert [k for k, _ in rows] == [b"00000000_n01440764/my photo 1.JPEG", b"00000003_" + entries[1][0].encode()]
    assert parse_datum(rows[0][1]).label == 4
    report = (tmp_path / "s.skipped.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in report] == ["broken.JPEG", "missing.JPEG"]


def test_existing_database_is_refused_unless_overwrite(listed, tmp_path, capsys):
    root, listfile, _ = listed
    db = tmp_path / "db"
    assert run_convert("--resize_height=8", "--resize_width=8", root, listfile, db) == 0
    before = read_lmdb(db)
    assert run_convert(root, listfile, db) == 1
    assert "already exists" in capsys.readouterr().err
    assert read_lmdb(db) == before
    assert run_convert("--overwrite", "--resize_height=9", "--resize_width=9", root, listfile, db) == 0
    assert parse_datum(read_lmdb(db)[0][1]).height == 9
    assert not any(p.name.startswith("db.") and p.is_dir() for p in tmp_path.iterdir())


def test_check_size_fails_on_differing_sizes(listed, tmp_path, capsys):
    root, listfile, _ = listed
    assert run_convert("--check_size", root, listfile, tmp_path / "cs") == 1
    assert "differs from the first image" in capsys.readouterr().err
    assert not (tmp_path / "cs").exists()


def test_compute_image_mean_equals_numpy_float64_mean(listed, tmp_path, capsys):
    root, listfile, entries = listed
    run_convert("--resize_height=24", "--resize_width=32", root, listfile, tmp_path / "db")
    out = tmp_path / "mean.binaryproto"
    assert compute_image_mean_main([str(tmp_path / "db"), str(out)]) == 0
    stack = np.stack([caffe_pixels(root / p, 24, 32).astype(np.float64) for p, _ in entries])
    expected = stack.mean(axis=0)
    mean = read_mean(str(out))
    assert mean.shape == (3, 24, 32) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-4)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[0].startswith("mean_value channel [0]: ")
    assert float(printed[2].split(": ")[1]) == pytest.approx(expected[2].mean(), abs=1e-3)
    assert compute_image_mean_main([str(tmp_path / "db"), str(tmp_path / "m.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), mean)


def test_mean_of_mixed_sizes_names_the_offending_key(listed, tmp_path, capsys):
    root, listfile, entries = listed
    run_convert(root, listfile, tmp_path / "mixed")
    sizes = [cv2.imread(str(root / p)).shape for p, _ in entries]
    first_diff = next(i for i, s in enumerate(sizes) if s != sizes[0])
    assert compute_image_mean_main([str(tmp_path / "mixed")]) == 1
    err = capsys.readouterr().err
    assert f"{first_diff:08d}_{entries[first_diff][0]}" in err and "Traceback" not in err


def test_gflags_spellings_are_accepted(listed, tmp_path):
    root, listfile, _ = listed
    assert run_convert("-resize_height", "8", "--resize_width=8", "--shuffle=true", "--nogray",
                       "-backend=leveldb", root, listfile, tmp_path / "gf") == 0
    assert run_convert("--shuffle=false", "-resize_height=8", "-resize_width=8", root, listfile,
                       tmp_path / "gf2") == 0
    db = plyvel.DB(str(tmp_path / "gf"))
    try:
        assert parse_datum(next(db.iterator())[1]).height == 8
    finally:
        db.close()
    assert read_lmdb(tmp_path / "gf2")[0][0].startswith(b"00000000_n01440764/")
