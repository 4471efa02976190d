"""One build per output: a second build, resume, extract or mean of an output that
another process is building is refused in one line naming that process, and the running build's
work is untouched; every LMDB put is checked.

Everything runs through the command line (``imagenet-db SUBCOMMAND``, tests/conftest.py: ``call``
in this process, ``run``/``start`` as a child process) on real files."""
import os
import subprocess
import sys

import pytest

from conftest import (build_record, call, convert_args, db_items, finish, hold_lock,
                      lmdb_entries, one_line_error, snapshot, start, wait_until,
                      write_small_archives)
from imagenet_db.testing.hold import HeldImage, hardlinked_copy



def test_second_build_of_a_db_is_refused_while_the_first_runs(data, tmp_path):
    db, partial = tmp_path / "db", tmp_path / "db.partial"
    flags = ["--resize_width=32", "--resize_height=32", "--txn_size=1", "--workers=1"]
    rc, err = call(*convert_args(data, tmp_path / "clean", *flags))
    assert rc == 0, err
    clean = db_items(tmp_path / "clean")
    assert len(clean) == 158

    images = hardlinked_copy(data / "images", tmp_path / "images")
    held = HeldImage(images / "img_0100.jpg")
    args = ["convert", images, data / "list.txt", db, *flags]
    first = start(*args)
    # everything before img_0100 (img_0050 is broken) is written; the build then waits for it
    wait_until(lambda: lmdb_entries(partial) >= 99, first)
    try:
        committed = db_items(partial)
        for extra in (["--resize_width=16", "--resize_height=16", "--overwrite"],  # what the
                      ["--resume"], ["--overwrite", "--resume"]):  # refusal used to suggest
            rc, err = call(*args, *extra)
            assert rc == 1, err
            line = one_line_error(err)
            assert f"being built by process {first.pid}" in line, line
        assert db_items(partial) == committed  # the running build's work is untouched
        assert not db.exists()
    finally:
        first.kill()  # SIGKILL: the kernel releases its lock
        first.wait()
        first.stderr.close()
    held.restore()
    rc, err = call(*args, "--resume")  # works once it is gone
    assert rc == 0, err
    assert db_items(db) == clean
    assert build_record(db) == build_record(tmp_path / "clean")  # incl. the content checksum


def test_second_create_imagenet_is_refused_and_the_first_finishes_intact(data, tmp_path):
    out = tmp_path / "out"
    args = ["create", data / "tree", out, "--resize=24x24", "--txn_size=1", "--workers=1"]
    rc, err = call(*args[:2], tmp_path / "clean", *args[3:])
    assert rc == 0, err
    clean = snapshot(tmp_path / "clean")

    # hold the 12th validation image (val is built after train; flat val/ is listed by val.txt,
    # so a FIFO there is read; the shuffled order is the clean val LMDB's key order)
    tree = hardlinked_copy(data / "tree", tmp_path / "tree")
    key = db_items(tmp_path / "clean" / "ilsvrc12_val_lmdb")[11][0].decode()
    held = HeldImage(tree / "val" / key.split("_", 1)[1])
    args[1] = tree
    first = start(*args)
    wait_until(lambda: lmdb_entries(out / "ilsvrc12_val_lmdb.partial") >= 11, first)
    try:
        for extra in (["--overwrite", "--resize=16x16"], ["--resume"]):
            rc, err = call(*args, *extra)
            assert rc == 1, err
            assert f"process {first.pid}" in one_line_error(err)
    finally:
        held.release()
    rc, err = finish(first, 120)
    assert rc == 0, err
    assert snapshot(out) == clean


def test_extract_and_compute_image_mean_respect_a_held_lock(data, tmp_path):
    arch = tmp_path / "arch"
    write_small_archives(arch)
    dest = tmp_path / "dest"
    dest.mkdir()
    fd = hold_lock(dest / ".imagenet_db.lock")
    try:
        rc, err = call("extract", arch, dest)
        assert rc == 1 and f"process {os.getpid()}" in one_line_error(err), err
        assert sorted(os.listdir(dest)) == [".imagenet_db.lock"]
    finally:
        os.close(fd)
    rc, err = call("extract", arch, dest)
    assert rc == 0, err

    rc, err = call(*convert_args(data, tmp_path / "db", "--resize_width=8", "--resize_height=8"))
    assert rc == 0, err
    mean = tmp_path / "mean.binaryproto"
    fd = hold_lock(f"{mean}.lock")
    try:
        rc, err = call("mean", tmp_path / "db", mean)
        assert rc == 1 and f"process {os.getpid()}" in one_line_error(err), err
        assert not mean.exists()
    finally:
        os.close(fd)
    rc, err = call("mean", tmp_path / "db", mean)
    assert rc == 0 and mean.exists(), err


def test_every_lmdb_put_is_checked(tmp_path):
    """Two writers on one LMDB (what the lock now prevents): a put that LMDB refuses (its key
    is not after the last committed one: MDB_KEYEXIST under MDB_APPEND) must fail loudly,
    never be dropped while the build counts it as written."""
    from imagenet_db.errors import DatabaseError

    from imagenet_db.outputs.lmdb import LmdbWriter as writer_class
    path = str(tmp_path / "shared")
    writer = writer_class(path)  # sees an empty database
    try:
        other = ("import lmdb, sys\n"  # another process appends keys 0..2 meanwhile
                 "env = lmdb.open(sys.argv[1])\n"
                 "with env.begin(write=True) as txn:\n"
                 "    for i in range(3):\n"
                 "        txn.put(b'%08d_x' % i, b'other', append=True)\n")
        subprocess.run([sys.executable, "-c", other, path], check=True)
        with pytest.raises(DatabaseError):
            writer.put(b"%08d_x" % 1, b"mine")  # not after the last key: LMDB refuses it
            writer.commit()
    finally:
        writer.abort()
    assert [v for _, v in db_items(path)] == [b"other"] * 3

