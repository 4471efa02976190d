"""--overwrite replaces only what this tool made (or a bare Caffe database): never a
user's folder or file, a folder holding a user's file, or the command's own input; a refused
overwrite deletes nothing and leaves nothing behind; create_imagenet never clobbers an aux or
mean file it did not make.

Everything runs through the command line (``imagenet-db SUBCOMMAND``, tests/conftest.py: ``call``
in this process, ``run``/``start`` as a child process) on real files."""
import os
import shutil

import lmdb

from conftest import call, convert_args, db_items, files_under, one_line_error
from imagenet_db.cli import create_imagenet_main
from imagenet_db.protos import Datum



def test_overwrite_never_replaces_what_this_tool_did_not_make(data, tmp_path):
    imgs = tmp_path / "imgs"
    shutil.copytree(data / "images", imgs)
    (imgs / "notes.txt").write_text("my notes\n")
    (tmp_path / "a_file").write_text("a user's file\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("\\section{}\n")
    ours = tmp_path / "ours"
    rc, err = call(*convert_args(data, ours, "--resize_width=8", "--resize_height=8"))
    assert rc == 0, err
    (ours / "README.txt").write_text("what this DB is\n")  # a user's file inside our DB
    before = files_under(tmp_path)
    listfile = data / "list.txt"
    for db, cwd, named in ((imgs, None, "imgs"), (".", imgs, "imgs"), (other, None, "thesis.tex"),
                           (tmp_path / "a_file", None, "a_file"), (tmp_path, None, ""),
                           (ours, None, "README.txt")):
        rc, err = call("convert", imgs, listfile, db, "--overwrite", "--resize_width=8",
                      "--resize_height=8", cwd=cwd)
        assert rc == 1, (db, err)
        line = one_line_error(err)
        assert named in line and "--overwrite" in line, line
        assert files_under(tmp_path) == before, db  # nothing deleted, nothing left behind

    # what this tool made, or a bare database (Caffe's), is replaced as before
    (ours / "README.txt").unlink()
    env = lmdb.open(str(tmp_path / "caffe_lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"00000000_x.jpg", Datum(channels=1, height=1, width=1, data=b"\0")
                .SerializeToString())
    env.close()
    for db in (ours, tmp_path / "caffe_lmdb"):
        rc, err = call("convert", imgs, listfile, db, "--overwrite", "--resize_width=8",
                      "--resize_height=8")
        assert rc == 0, err
        assert len(db_items(db)) == 158


def test_create_imagenet_overwrite_keeps_a_foreign_folder_at_a_db_name(data, tmp_path):
    out = tmp_path / "out"
    (out / "ilsvrc12_val_lmdb").mkdir(parents=True)
    (out / "ilsvrc12_val_lmdb" / "photo.jpg").write_bytes(b"not ours")
    before = files_under(out)
    rc, err = call("create", data / "tree", out, "--resize=16x16", "--overwrite")
    assert rc == 1 and "photo.jpg" in one_line_error(err), err
    assert files_under(out) == before  # refused before any work


def test_mean_onto_its_own_database_leaves_nothing_behind(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=16", "--resize_height=16"))
    assert rc == 0, err
    before = files_under(tmp_path)
    rc, err = call("mean", db, db)
    assert rc == 1 and str(db) in one_line_error(err), err
    assert files_under(tmp_path) == before


def test_create_imagenet_does_not_clobber_existing_outputs(tree, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.txt").write_text("my own list\n")
    args = [str(tree), str(out), "--resize", "24x24"]
    assert create_imagenet_main(args) == 1
    assert "train.txt exists with other contents" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["train.txt"]  # refused before doing any work
    (out / "train.txt").unlink()
    (out / "imagenet_mean.binaryproto").write_bytes(b"mine")
    assert create_imagenet_main(args) == 1
    assert "imagenet_mean.binaryproto already exists" in capsys.readouterr().err
    assert (out / "imagenet_mean.binaryproto").read_bytes() == b"mine"
    assert create_imagenet_main(args + ["--overwrite"]) == 0
    assert (out / "imagenet_mean.binaryproto").read_bytes() != b"mine"
