"""create_imagenet --format cuda-convnet2 / theano-alexnet / folder survive real SIGKILLs.

Each build is a real child process running the CLI (started as tests/test_reliability_round2.py
starts its builds) on a tree of ImageNet-like JPEGs made from the real photos, two of them
broken (skipped and logged). The child is frozen (SIGSTOP) as soon as its first batch file is
in place (folder: the first logged batch of files), checked to be midway, and SIGKILLed; the
``--resume`` run is killed the same way a little further on; a last ``--resume`` finishes. The
finished OUTDIR must hold exactly what an uninterrupted build of the same command holds, file
by file by SHA-256 (batches, batches.meta, labels/, misc/, image trees, completion records,
skip logs, aux files) and folder by folder: no temporary, lock or .partial left behind.
"""
import hashlib
import os
from pathlib import Path

import pytest

from imagenet_db.testing import photos
from test_reliability_round2 import WNIDS, pause, run, start, wait_until

# per format: the flags for small batches (several per split; folder: files per commit)
FORMATS = {
    "cuda-convnet2": ["--batch_images", "6"],   # sub-batch files of 2 images
    "theano-alexnet": ["--batch_images", "8"],  # 8-image files + halves of 4
    "folder": ["--txn_size", "4"],
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """6 synsets x 10 train JPEGs (one truncated, one empty) + 12 flat val JPEGs and val.txt."""
    root = tmp_path_factory.mktemp("formats_kill")
    tree = photos.write_extracted_tree(root, WNIDS, train_per_class=10, val_per_class=2, seed=15)
    odd = photos.odd_images()
    for (relpath, _), name in zip(tree["train"][3::17], ("truncated", "zero_bytes")):
        (root / "train" / relpath).write_bytes(odd[name])
    return root


def batches_in_place(outdir):
    """Batch files at their final names in the outputs still being built (``*.partial``); for
    folder, files logged as committed. Safe while the build renames and deletes files."""
    count = 0
    for partial in Path(outdir).glob("*.partial"):
        for folder, _, names in os.walk(partial):
            in_batch_folder = os.path.basename(folder).startswith("data_batch_")
            count += sum(1 for name in names if not name.startswith(".") and
                         (in_batch_folder or name.endswith(".hkl")))
        try:
            count += (partial / "imagenet_db.files.log").read_bytes().count(b"\n")
        except OSError:
            pass
    return count


def kill_midway(proc, outdir, more_than):
    """Freeze ``proc`` once more than ``more_than`` batches are in place, check that its build
    is midway, SIGKILL it. Returns the batches in place at the kill."""
    wait_until(lambda: batches_in_place(outdir) > more_than, proc)
    pause(proc)
    done = batches_in_place(outdir)
    assert done > more_than and list(Path(outdir).glob("*.partial")), done
    proc.kill()
    proc.wait()
    proc.stderr.close()
    return done


def digests(outdir):
    """{relative path: SHA-256 of the file, or 'folder'} of everything under ``outdir``."""
    out = {}
    for folder, dirs, names in os.walk(outdir):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), outdir)] = "folder"
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, outdir)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_build_killed_twice_resumes_to_the_same_bytes(source, tmp_path, fmt):
    args = ["--format", fmt, *FORMATS[fmt], "--workers", "1", "--progress=false"]
    rc, err = run("create", source, tmp_path / "clean", *args)
    assert rc == 0, err
    clean = digests(tmp_path / "clean")
    skips = b"".join(p.read_bytes() for p in (tmp_path / "clean").glob("*.skipped.tsv"))
    assert skips.count(b"\n") == 2, skips  # the broken files

    out = tmp_path / "killed"
    done = kill_midway(start("create", source, out, *args), out, 0)
    rc, err = run("create", source, out, *args)
    assert rc == 1 and "--resume" in err, err  # the partial output is not replaced unasked
    kill_midway(start("create", source, out, *args, "--resume"), out, done + 1)
    rc, err = run("create", source, out, *args, "--resume")
    assert rc == 0, err

    got = digests(out)
    assert sorted(set(got) - set(clean)) == []  # no temporary, lock or .partial left
    assert got == clean
