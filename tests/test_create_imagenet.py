"""create_imagenet on the bundled sample and on generated trees: aux files, databases, mean."""
import os

import numpy as np

from conftest import parse_datum, read_lmdb
from imagenet_db.testing import photos as fixtures
from imagenet_db.cli import create_imagenet_main
from imagenet_db.sources.listfile import read_list
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.outputs.meanfile import read_mean


def test_sample_builds_caffe_aux_files_dbs_and_mean(sample_copy, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--resize", "32x24"]) == 0
    synsets = (out / "synsets.txt").read_text().split()
    wnids = sorted(os.listdir(sample_copy / "train"))
    assert synsets == wnids  # ASCII order: label = position
    words = (out / "synset_words.txt").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in words] == synsets
    assert words[0] == "n01440764 tench, Tinca tinca"
    train = read_list(str(out / "train.txt"))
    assert train == sorted(train)
    assert all(label == synsets.index(p.split("/")[0]) for p, label in train)
    val_truth = dict(line.split() for line in (sample_copy / "val.txt").read_text().splitlines())
    val = read_list(str(out / "val.txt"))
    assert [p for p, _ in val] == sorted(val_truth)
    assert all(label == synsets.index(val_truth[p]) for p, label in val)

    rows = read_lmdb(out / "ilsvrc12_train_lmdb")
    assert len(rows) == len(train)
    labels = dict(train)
    for key, value in rows:
        relpath = key.decode().split("_", 1)[1]
        datum = parse_datum(value)
        assert datum.label == labels[relpath]
        assert (datum.channels, datum.height, datum.width) == (3, 24, 32)
    assert [k for k, _ in rows] != sorted(b"%08d_%s" % (i, p.encode()) for i, (p, _) in enumerate(train))

    val_rows = read_lmdb(out / "ilsvrc12_val_lmdb")
    assert sorted(k.decode().split("_", 1)[1] for k, _ in val_rows) == sorted(val_truth)

    mean_bp = read_mean(str(out / "imagenet_mean.binaryproto"))
    db_mean, count = compute_db_mean(str(out / "ilsvrc12_train_lmdb"))
    assert count == len(train)
    np.testing.assert_array_equal(mean_bp, db_mean)  # on-the-fly mean == mean of finished DB
    np.testing.assert_array_equal(np.load(out / "imagenet_mean.npy"), mean_bp)


def test_folder_val_layout_leveldb_and_same_db_for_same_seed(tmp_path):
    src = tmp_path / "src"
    fixtures.write_extracted_tree(src, ["n02119789", "n01751748", "n01440764"], 3, 2, seed=5,
                                  val_layout="folders")
    for name in ("a", "b"):
        assert create_imagenet_main([str(src), str(tmp_path / name), "--resize=16x16",
                                     "--backend=leveldb", "--workers=2"]) == 0
    assert (tmp_path / "a" / "synsets.txt").read_text().split() == ["n01440764", "n01751748", "n02119789"]
    val = read_list(str(tmp_path / "a" / "val.txt"))
    assert len(val) == 6 and all(p.startswith(("n01440764/", "n01751748/", "n02119789/")) for p, _ in val)
    assert all(label == ["n01440764", "n01751748", "n02119789"].index(p.split("/")[0]) for p, label in val)
    import plyvel
    dbs = []
    for name in ("a", "b"):
        db = plyvel.DB(str(tmp_path / name / "ilsvrc12_train_leveldb"))
        dbs.append(list(db.iterator()))
        db.close()
    assert dbs[0] == dbs[1] and len(dbs[0]) == 9


def test_encoded_build_mean_matches_mean_of_decoded_db(tmp_path):
    src = tmp_path / "src"
    fixtures.write_extracted_tree(src, ["n01440764", "n01443537"], 3, 1, seed=9)
    out = tmp_path / "out"
    assert create_imagenet_main([str(src), str(out), "--resize=20x10", "--encoded"]) == 0
    rows = read_lmdb(out / "ilsvrc12_train_lmdb")
    assert all(parse_datum(v).encoded for _, v in rows)
    db_mean, _ = compute_db_mean(str(out / "ilsvrc12_train_lmdb"))
    np.testing.assert_array_equal(read_mean(str(out / "imagenet_mean.binaryproto")), db_mean)


def test_bad_sources_give_clear_errors(tmp_path, capsys):
    assert create_imagenet_main([str(tmp_path / "nope"), str(tmp_path / "o")]) == 1
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "flat" / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir()
    assert create_imagenet_main([str(tmp_path / "flat"), str(tmp_path / "o")]) == 1
    assert "no val.txt" in capsys.readouterr().err
    (tmp_path / "flat" / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG n09999999\n")
    assert create_imagenet_main([str(tmp_path / "flat"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "val.txt:1" in err and "n09999999" in err
