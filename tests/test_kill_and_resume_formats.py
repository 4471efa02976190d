"""create_imagenet --format cuda-convnet2 / theano-alexnet / folder survive real SIGKILLs.

Each build is a real child process running the CLI (started with ``start`` from
tests/conftest.py) on a tree of ImageNet-like JPEGs made from the real photos, two of them
broken (skipped and logged). The child is frozen (SIGSTOP) as soon as its first batch file is
in place (folder: the first logged batch of files), checked to be midway, and SIGKILLed. The
``--resume`` run is killed the same way a few batches further on, mid-write (a batch file's
temporary in place; folder: files written that the log does not hold yet); theano-alexnet's
also in its finish() (incomplete batches deleted, label files being written). A last
``--resume`` finishes. The finished OUTDIR must hold exactly what an uninterrupted build of the
same command holds, file by file by SHA-256 (batches, batches.meta, labels/, misc/, image
trees, completion records, skip logs, aux files) and folder by folder: no temporary, lock or
.partial left behind.
"""
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from imagenet_db.testing import photos
from conftest import WNIDS, files_under, pause, run, start


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """6 synsets x 10 train JPEGs (one truncated, one empty) + 12 flat val JPEGs and val.txt."""
    root = tmp_path_factory.mktemp("formats_kill")
    tree = photos.write_extracted_tree(root, WNIDS, train_per_class=10, val_per_class=2, seed=15)
    odd = photos.odd_images()
    for (relpath, _), name in zip(tree["train"][3::17], ("truncated", "zero_bytes")):
        (root / "train" / relpath).write_bytes(odd[name])
    return root


def files_being_built(outdir):
    """(folder name, file name) of every file in the outputs still being built (``*.partial``);
    safe while the build renames and deletes files."""
    for partial in Path(outdir).glob("*.partial"):
        for folder, _, names in os.walk(partial):
            yield from ((os.path.basename(folder), name) for name in names)


def batches_in_place(outdir):
    """Batch files at their final names in the outputs being built; folder: files logged as
    committed."""
    count = sum(1 for folder, name in files_being_built(outdir) if not name.startswith(".")
                and (folder.startswith("data_batch_") or name.endswith(".hkl")))
    for log in Path(outdir).glob("*.partial/imagenet_db.files.log"):
        try:
            count += log.read_bytes().count(b"\n")
        except OSError:
            pass
    return count


def writing_a_batch(outdir):
    """A batch file is being written: its temporary is in place (synced before it is renamed:
    a window polling finds, unlike an image file's)."""
    return any(".tmp-" in name and "imagenet_db." not in name
               for _, name in files_being_built(outdir))


def files_not_logged(outdir):
    """folder: image files are in place that the log does not hold yet (written again by a
    resumed build)."""
    images = sum(1 for folder, name in files_being_built(outdir)
                 if not folder.endswith(".partial") and not name.startswith("."))
    return images > batches_in_place(outdir)


def finishing(outdir):
    """theano-alexnet's finish() is under way: incomplete batches deleted, labels/ or misc/
    being written."""
    return any(".tmp-" in name and folder in ("labels", "misc")
               for folder, name in files_being_built(outdir))


# per format: the flags for small batches (several per split; folder: files per commit) and
# the moment of the second kill, mid-write
FORMATS = {
    "cuda-convnet2": (["--batch_images", "6"], writing_a_batch),   # sub-batches of 2 images
    "theano-alexnet": (["--batch_images", "8"], writing_a_batch),  # 8 per file + halves of 4
    "folder": (["--txn_size", "4"], files_not_logged),
}


def kill_midway(proc, outdir, ready):
    """SIGKILL ``proc`` at a moment when ``ready(outdir)`` holds: once that is seen, the child
    is frozen (SIGSTOP) and killed if it still holds, else it runs on. Checks that the build
    is midway (not published)."""
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the build ended first: " + proc.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out waiting"
        if ready(outdir):
            pause(proc)
            if ready(outdir):
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    assert list(Path(outdir).glob("*.partial"))
    proc.kill()
    proc.wait()
    proc.stderr.close()


def digests(outdir):
    """{relative path: SHA-256 of the file, or 'dir'} of everything under ``outdir``."""
    return {path: data if data == "dir" else hashlib.sha256(data).hexdigest()
            for path, data in files_under(outdir).items()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_build_killed_midway_resumes_to_the_same_bytes(source, tmp_path, fmt):
    flags, mid_write = FORMATS[fmt]
    args = ["--format", fmt, *flags, "--workers", "1", "--progress=false"]
    rc, err = run("create", source, tmp_path / "clean", *args)
    assert rc == 0, err
    clean = digests(tmp_path / "clean")
    skips = b"".join(p.read_bytes() for p in (tmp_path / "clean").glob("*.skipped.tsv"))
    assert skips.count(b"\n") == 2, skips  # the broken files

    out = tmp_path / "killed"
    kill_midway(start("create", source, out, *args), out, lambda d: batches_in_place(d) > 0)
    done = batches_in_place(out)
    rc, err = run("create", source, out, *args)
    assert rc == 1 and "--resume" in err, err  # the partial output is not replaced unasked
    kill_midway(start("create", source, out, *args, "--resume"), out,
                lambda d: batches_in_place(d) > done + 1 and mid_write(d))
    if fmt == "theano-alexnet":  # its finish() deletes files: killed there too
        kill_midway(start("create", source, out, *args, "--resume"), out, finishing)
    rc, err = run("create", source, out, *args, "--resume")
    assert rc == 0, err

    got = digests(out)
    assert sorted(set(got) - set(clean)) == []  # no temporary, lock or .partial left
    assert got == clean
