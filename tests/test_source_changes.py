"""A source changing under a command: an archive truncated or rewritten during a build is
an error naming it (not skipped images), and --resume finishes once it is whole; extract never
certifies an extracted file that was emptied or changed afterwards.

Everything runs through the command line (``imagenet-db SUBCOMMAND``, tests/conftest.py: ``call``
in this process, ``run``/``start`` as a child process) on real files."""
import os
import shutil
import signal
import time

import pytest

from conftest import (WNIDS, call, files_under, finish, lmdb_entries, one_line_error,
                      pause, snapshot, start, wait_until, write_small_archives)
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec



@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """An ILSVRC2012 archive triple (4 classes x 120 train, 20 val, 64x48 images) and the
    outputs of an uninterrupted create_imagenet from it."""
    root = tmp_path_factory.mktemp("arch")
    fixture_archives.write_archives(root / "arch", ArchiveSpec(WNIDS[:4], train_per_class=120,
                                                               val_count=20, image_size=(64, 48),
                                                               seed=5))
    # 196 KB raw datums: the writer's queue (64 MB) holds ~330, so the reads of a build stopped
    # after 5 commits are far from done
    args = ["--resize=256x256", "--txn_size=1", "--workers=1", "--no-report"]
    rc, err = call("create", root / "arch", root / "clean", *args)
    assert rc == 0, err
    return root, args, snapshot(root / "clean")


def _stop_midway(proc, partial, entries=10):
    wait_until(lambda: lmdb_entries(partial) >= entries, proc)
    pause(proc)


@pytest.mark.parametrize("change", ["truncate", "same_size_rewrite"])
def test_an_archive_changing_during_the_build_is_an_error_not_skips(arch, tmp_path, change):
    root, args, clean = arch
    source = tmp_path / "arch"
    shutil.copytree(root / "arch", source)
    train_tar = source / "ILSVRC2012_img_train.tar"
    original = train_tar.read_bytes()
    out = tmp_path / "out"
    proc = start("create", source, out, *args)
    _stop_midway(proc, out / "ilsvrc12_train_lmdb.partial", entries=5)
    try:
        if change == "truncate":  # e.g. a copy or download still running into the file
            with open(train_tar, "r+b") as f:
                f.truncate(len(original) // 2)
        else:  # rewritten in place, same size (content may differ: the tool cannot know)
            train_tar.write_bytes(original)
            os.utime(train_tar, ns=(time.time_ns(), time.time_ns() + 10**9))
    finally:
        proc.send_signal(signal.SIGCONT)
    rc, err = finish(proc, 60)
    assert rc == 1, err
    line = one_line_error(err)
    assert str(train_tar) in line and "changed" in line, line
    assert "skipped" not in err
    assert not (out / "ilsvrc12_train_lmdb").exists()  # nothing published from it
    train_tar.write_bytes(original)  # the archive is whole again: --resume finishes the build
    rc, err = call("create", source, out, *args, "--resume")
    assert rc == 0, err
    assert snapshot(out) == clean


def test_extract_never_certifies_an_empty_or_changed_file(tmp_path):
    arch = tmp_path / "arch"
    write_small_archives(arch)
    dest = tmp_path / "dest"
    rc, err = call("extract", arch, dest)
    assert rc == 0, err
    extracted = files_under(dest)
    images = sorted(p for p in dest.rglob("*.JPEG"))
    images[0].write_bytes(b"")  # a file truncated to nothing after the extraction
    rc, err = call("extract", arch, dest)  # the count check alone would say "all present"
    assert rc == 1 and str(images[0]) in one_line_error(err), err
    rc, err = call("extract", arch, dest, "--overwrite")
    assert rc == 0, err
    assert files_under(dest) == extracted
    damaged = bytearray(images[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, other bytes
    images[1].write_bytes(bytes(damaged))
    rc, err = call("extract", arch, dest, "--check_contents")
    assert rc == 1 and str(images[1].parents[1]) in one_line_error(err), err
    rc, err = call("extract", arch, dest, "--overwrite")
    assert rc == 0, err
    assert files_under(dest) == extracted

