"""Kill and resume: SIGKILL at random points, Ctrl-C/SIGTERM, a file-size limit or a full disk
stop a build with its good records committed and --resume finishes it to the uninterrupted
build's bytes (mean included); a failed --overwrite leaves the old database; --resume refuses
other settings; readers see only committed data during a build.

Builds run as real subprocesses (the installed CLI code from this source tree) on small real
JPEGs made by imagenet_db.testing.photos, with real LMDB/LevelDB; kills are real SIGKILLs.
"""
from dataclasses import replace
import os
import shutil
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from conftest import (BAD, REPO, call, child_env, convert_args, lmdb_entries, start,
                      wait_until)
from conftest import snapshot as shared_snapshot
from imagenet_db.testing.hold import HeldImage, hardlinked_copy
from imagenet_db.cli import convert_imageset_main
from imagenet_db.errors import SkippedImageError
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.observers import mean as mean_observer
from imagenet_db.observers.mean import MeanObserver
from imagenet_db.pipeline import convert
from imagenet_db.protos import Datum
from imagenet_db.readers import iterate_db
from imagenet_db.sources.listfile import list_records
from imagenet_db.imaging.transform import TransformOptions


# The child prints READY once its imports are done, so kill delays measure build time only.
# MEAN_CHECKPOINT_SECONDS (and the content checksum's) come from the environment so both
# ways of restoring the mean and the checksum (checkpoint + tail, or reading every datum
# back) are exercised.
CHILD = (
    "import os, sys\n"
    "from imagenet_db.observers import mean\n"
    "mean.MEAN_CHECKPOINT_SECONDS = float(os.environ.get('CKPT_SECONDS', '30'))\n"
    "from imagenet_db.observers import checksum\n"
    "checksum.CHECKPOINT_SECONDS = float(os.environ.get('CKPT_SECONDS', '30'))\n"
    "from imagenet_db import cli, pipeline  # all the build's imports, before READY\n"
    "from imagenet_db.recipes import imagenet  # noqa\n"
    "sys.stderr.write('READY\\n'); sys.stderr.flush()\n"
    "sys.exit(getattr(cli, sys.argv[1])(sys.argv[2:]))\n"
)


def child_cmd(entry, *args):
    return [sys.executable, "-c", CHILD, entry, *map(str, args)]


def run_child(entry, *args, preexec_fn=None, **env):
    proc = subprocess.run(child_cmd(entry, *args), env=child_env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec_fn)
    return proc.returncode, proc.stderr


def start_child(entry, *args, **env):
    proc = subprocess.Popen(child_cmd(entry, *args), env=child_env(**env), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    assert line == b"READY\n", line
    return proc


def wait_for_entries(path, count):
    """True once the LMDB being built at ``path`` has ``count`` committed entries."""
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return False
    env = lmdb.open(str(path), readonly=True)
    try:
        return env.stat()["entries"] >= count
    finally:
        env.close()


def db_items(path, backend=None):
    return list(iterate_db(str(path), backend))


MANIFEST_FIELDS = ("entries", "skipped", "records", "list_sha256", "entries_sha256",
                   "entries_crc32_sum")


def snapshot(outdir):
    """Everything a build produced, for comparison: DB items, reports, aux and mean files."""
    return shared_snapshot(outdir, items=db_items, fields=MANIFEST_FIELDS)


def kill_state(outdir):
    """Where a killed create_imagenet stood: the stage and committed datums."""
    names = set(os.listdir(outdir)) if os.path.isdir(outdir) else set()
    for split in ("train", "val"):
        partial = os.path.join(outdir, f"ilsvrc12_{split}_lmdb.partial")
        if os.path.isdir(partial):
            if os.path.exists(os.path.join(partial, "data.mdb")):
                env = lmdb.open(partial, readonly=True, lock=False)
                count = env.stat()["entries"]
                env.close()
            else:
                count = 0
            return f"{split} DB ({count} committed)"
        if f"ilsvrc12_{split}_lmdb" not in names:
            if split == "train":
                return "aux files"
            return "mean files" if "imagenet_mean.npy" not in names else "before val DB"
    return "after both DBs (checking finished stages)"


def kill_and_resume(entry, args, make_state, rng, max_kills, delays, **env):
    """SIGKILL runs of ``args`` + --resume at random moments until one finishes by itself.
    Returns the list of states at the kills."""
    states = []
    for _ in range(max_kills):
        proc = start_child(entry, *args, "--resume", **env)
        try:
            proc.wait(timeout=rng.uniform(*delays))
            assert proc.returncode == 0, proc.stderr.read().decode()
            return states
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            proc.stderr.close()
            states.append(make_state())
    rc, err = run_child(entry, *args, "--resume", **env)
    assert rc == 0, err
    return states


def test_create_imagenet_survives_sigkill_at_random_points(tree, tmp_path):
    args = [tree, tmp_path / "clean", "--resize", "48x48", "--txn_size", "1", "--workers", "1"]
    rc, err = run_child("create_imagenet_main", *args)
    assert rc == 0, err
    clean = snapshot(tmp_path / "clean")
    assert len(clean["ilsvrc12_train_lmdb"]) == 240 - len(BAD)
    assert clean["ilsvrc12_train_lmdb.skipped.tsv"].count(b"\n") == len(BAD)

    out = tmp_path / "killed"
    args[1] = out
    states = kill_and_resume("create_imagenet_main", args, lambda: kill_state(out),
                             random.Random(2012), max_kills=16, delays=(0.01, 0.12),
                             CKPT_SECONDS=0)
    print(f"\ncreate_imagenet: {len(states)} SIGKILLs at: " + "; ".join(states))
    assert len(states) >= 4
    assert any("train DB (" in s and not s.startswith("train DB (0") for s in states)
    assert snapshot(out) == clean  # every key, value, report, aux and mean file

    # the mean stage on its own: with the mean files and the mean kept in the train DB gone,
    # --resume recomputes it from the database, to the same bytes
    for name in ("imagenet_mean.binaryproto", "imagenet_mean.npy",
                 "ilsvrc12_train_lmdb/imagenet_db.mean.npy"):
        (out / name).unlink()
    rc, err = run_child("create_imagenet_main", *args, "--resume")
    assert rc == 0 and "computing the mean of" in err, err
    for name in ("imagenet_mean.binaryproto", "imagenet_mean.npy"):
        assert (out / name).read_bytes() == clean[name]


def test_convert_imageset_leveldb_survives_sigkill(tree, tmp_path):
    common = ["--shuffle", "--resize_width=40", "--resize_height=30", "--backend=leveldb",
              "--txn_size=1", "--workers=1"]
    rc, err = run_child("convert_imageset_main", tree / "images", tree / "list.txt",
                        tmp_path / "clean_db", *common)
    assert rc == 0, err
    clean = db_items(tmp_path / "clean_db")
    assert len(clean) == 158

    db = tmp_path / "db"

    def state():
        partial = str(db) + ".partial"
        if not os.path.isdir(partial):
            return "finished" if db.exists() else "not started"
        try:
            return f"{sum(1 for _ in iterate_db(partial, 'leveldb'))} committed"
        except Exception:
            return "no LevelDB yet"

    states = kill_and_resume("convert_imageset_main",
                             [tree / "images", tree / "list.txt", db, *common], state,
                             random.Random(7), max_kills=10, delays=(0.01, 0.08))
    print(f"\nconvert_imageset (LevelDB): {len(states)} SIGKILLs at: " + "; ".join(states))
    assert len(states) >= 3
    assert db_items(db) == clean
    assert (tmp_path / "clean_db.skipped.tsv").read_bytes() == Path(f"{db}.skipped.tsv").read_bytes()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_commits_and_says_how_to_resume(tree, tmp_path, signum, code):
    db = tmp_path / "db"
    images = hardlinked_copy(tree / "images", tmp_path / "images")
    held = HeldImage(images / "img_0100.jpg")  # the build waits there, however fast it is
    args = [images, tree / "list.txt", db, "--resize_width=32", "--resize_height=32",
            "--txn_size=1", "--workers=1"]
    partial = Path(f"{db}.partial")
    proc = start_child("convert_imageset_main", *args)
    while not wait_for_entries(partial, 99):  # img_0000..0099 but the skipped img_0050
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.005)
    proc.send_signal(signum)  # Ctrl-C in the middle, after img_0050's skip
    held.release()  # its reader thread must end for the process to exit; the handler has run
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == code, err
    assert "Traceback" not in err and "--resume" in err and "interrupted" in err
    assert not db.exists()  # an unfinished DB never sits at the final name
    assert not (partial / "imagenet_db.json").exists()
    committed = db_items(partial)
    held.restore()
    assert 0 < len(committed) < 158
    rc, err = run_child("convert_imageset_main", *args)
    assert rc == 1 and "--resume" in err  # without --resume the partial build is not touched
    assert db_items(partial) == committed
    rc, err = run_child("convert_imageset_main", *args, "--resume", "--strict")
    assert rc == 1 and "img_0050.jpg" in err and "skipped earlier" in err
    assert db_items(partial) == committed
    rc, err = run_child("convert_imageset_main", *args, "--resume")
    assert rc == 0, err
    assert f"resumed after {len(committed) + 1} images" in err  # + the skipped img_0050
    rc, err = run_child("convert_imageset_main", *args[:2], tmp_path / "clean", *args[3:])
    assert db_items(db) == db_items(tmp_path / "clean")
    assert db_items(db)[:len(committed)] == committed


def _fsize_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_file_size_limit_gives_clear_error_and_resume_finishes(tree, tmp_path, backend):
    args = [tree / "images", tree / "list.txt", tmp_path / "db", f"--backend={backend}",
            "--resize_width=64", "--resize_height=64", "--txn_size=4"]
    rc, err = run_child("convert_imageset_main", *args[:2], tmp_path / "clean", *args[3:])
    assert rc == 0, err
    clean = db_items(tmp_path / "clean")
    # 158 raw datums of 12 KB = 1.9 MB: a 600 KB file-size limit stops the build midway
    rc, err = run_child("convert_imageset_main", *args, preexec_fn=_fsize_limit(600_000))
    assert rc == 1, err
    # LevelDB passes EFBIG on; LMDB turns the short write into EIO, imagenet-db adds a hint
    reason = "File too large" if backend == "leveldb" else "file-size limit"
    assert "Traceback" not in err and reason in err and "--resume" in err, err
    partial = db_items(f"{tmp_path / 'db'}.partial", backend)  # opens: consistent
    assert 0 < len(partial) < len(clean) and partial == clean[:len(partial)]
    assert not (tmp_path / "db").exists()
    rc, err = run_child("convert_imageset_main", *args, "--resume")
    assert rc == 0, err
    assert db_items(tmp_path / "db") == clean


@pytest.fixture
def small_fs(tmp_path):
    """A 700 KB tmpfs (a real full disk); skipped where mounting is not allowed."""
    mnt = tmp_path / "small_fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_disk_full_gives_clear_error_and_resume_finishes_after_freeing_space(
        tree, tmp_path, small_fs, backend):
    args = [tree / "images", tree / "list.txt", small_fs / "db", f"--backend={backend}",
            "--resize_width=64", "--resize_height=64", "--txn_size=4"]
    rc, err = run_child("convert_imageset_main", *args[:2], tmp_path / "clean", *args[3:])
    clean = db_items(tmp_path / "clean")
    rc, err = run_child("convert_imageset_main", *args)
    assert rc == 1 and "Traceback" not in err and "--resume" in err, err
    assert ("No space left on device" if backend == "leveldb" else "disk full") in err, err
    # free space (LevelDB needs some even to open: recovery writes the log into a table)
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    partial = db_items(f"{small_fs / 'db'}.partial", backend)
    assert len(partial) < len(clean) and partial == clean[:len(partial)]
    rc, err = run_child("convert_imageset_main", *args, "--resume")
    assert rc == 0, err
    assert db_items(small_fs / "db") == clean


def test_failed_overwrite_leaves_old_db_intact(tree, tmp_path):
    db = tmp_path / "db"
    old_args = [tree / "images", tree / "list.txt", db, "--resize_width=16", "--resize_height=16"]
    assert run_child("convert_imageset_main", *old_args)[0] == 0
    old = db_items(db)
    old_manifest = (db / "imagenet_db.json").read_bytes()
    old_report = Path(f"{db}.skipped.tsv").read_bytes()
    new_args = [tree / "images", tree / "list.txt", db, "--resize_width=64",
                "--resize_height=64", "--overwrite", "--txn_size=4"]
    rc, err = run_child("convert_imageset_main", *new_args, preexec_fn=_fsize_limit(600_000))
    assert rc == 1 and "LMDB commit failed" in err
    assert db_items(db) == old and (db / "imagenet_db.json").read_bytes() == old_manifest
    assert Path(f"{db}.skipped.tsv").read_bytes() == old_report
    rc, err = run_child("convert_imageset_main", *new_args, "--resume")
    assert rc == 0, err
    new = db_items(db)
    assert len(new) == len(old) and new != old
    assert Datum.FromString(new[0][1]).height == 64
    assert not Path(f"{db}.partial").exists() and not Path(f"{db}.replaced").exists()


def test_resume_refuses_other_settings_list_or_foreign_db(tree, tmp_path, capsys):
    db = tmp_path / "db"
    base = [str(tree / "images"), str(tree / "list.txt"), str(db)]
    assert convert_imageset_main(base + ["--resize_width=8", "--resize_height=8"]) == 0
    capsys.readouterr()
    # a finished build with the same settings is accepted by --resume and left alone
    assert convert_imageset_main(base + ["--resize_width=8", "--resize_height=8", "--resume"]) == 0
    assert "nothing left to do" in capsys.readouterr().err
    assert convert_imageset_main(base + ["--resize_width=9", "--resize_height=8", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "options.resize_width: 8 there, 9 now" in err and "refused" in err
    changed = tmp_path / "changed.txt"
    changed.write_text((tree / "list.txt").read_text().replace("img_0003.jpg 3", "img_0003.jpg 4"))
    assert convert_imageset_main([base[0], str(changed), base[2], "--resize_width=8",
                                  "--resize_height=8", "--resume"]) == 1
    assert "the list (its keys or labels) has changed" in capsys.readouterr().err
    # a database made by someone else (no completion record) is not taken as finished
    foreign = tmp_path / "caffe_db"
    env = lmdb.open(str(foreign))
    with env.begin(write=True) as txn:
        txn.put(b"00000000_img_0000.jpg", Datum(channels=1, height=1, width=1, data=b"\0").SerializeToString())
    env.close()
    assert convert_imageset_main([base[0], base[1], str(foreign), "--resume"]) == 1
    assert "no completion record" in capsys.readouterr().err


def test_reader_sees_only_committed_data_during_a_build(tree, tmp_path):
    rc, err = run_child("convert_imageset_main", tree / "images", tree / "list.txt",
                        tmp_path / "clean", "--resize_width=32", "--resize_height=32")
    clean = dict(db_items(tmp_path / "clean"))
    partial = f"{tmp_path / 'db'}.partial"
    images = hardlinked_copy(tree / "images", tmp_path / "images")
    held = HeldImage(images / "img_0100.jpg")  # released once a reader has seen the build midway
    proc = start_child("convert_imageset_main", images, tree / "list.txt",
                       tmp_path / "db", "--resize_width=32", "--resize_height=32",
                       "--txn_size=3", "--workers=1")
    seen = []
    while proc.poll() is None:
        if seen and seen[-1] >= 99:  # all before img_0100 (img_0050 is skipped) was seen
            held.release()
        if os.path.exists(os.path.join(partial, "data.mdb")):
            try:
                items = db_items(partial, "lmdb")
            except Exception:
                break  # the build finished and moved the directory meanwhile
            seen.append(len(items))
            assert all(clean[k] == v for k, v in items)  # never a torn or foreign datum
            assert [k for k, _ in items] == sorted(clean)[:len(items)]  # a prefix: no gaps
        time.sleep(0.01)
    assert proc.wait() == 0
    assert any(0 < n < len(clean) for n in seen), seen


def test_mean_is_exact_after_resume_from_checkpoint_or_readback(tree, tmp_path, monkeypatch):
    """Stop a build at a skipped image with strict=True, then resume without it: the mean
    must equal an uninterrupted build's, whether it is restored from a checkpoint + tail or
    by reading every committed datum back."""
    from imagenet_db.sources.listfile import read_list

    records = list_records(str(tree / "images"), read_list(str(tree / "list.txt")))
    opts = TransformOptions(resize_height=20, resize_width=20)
    build = BuildOptions(workers=1, progress=False, txn_size=7)
    clean = convert(records, str(tmp_path / "clean"), transform=opts, observers=[MeanObserver()],
                    build=BuildOptions(workers=1, progress=False))
    for seconds in (0.0, 1e9):
        monkeypatch.setattr(mean_observer, "MEAN_CHECKPOINT_SECONDS", seconds)
        db = str(tmp_path / f"db{seconds:g}")
        with pytest.raises(SkippedImageError, match="img_0050.jpg"):
            convert(records, db, transform=opts, observers=[MeanObserver()],
                    build=replace(build, strict=True))
        has_checkpoint = os.path.exists(os.path.join(db + ".partial", "imagenet_db.mean_sum.npz"))
        assert has_checkpoint == (seconds == 0.0)
        with pytest.raises(SkippedImageError, match="img_0050.jpg"):  # still broken
            convert(records, db, transform=opts, observers=[MeanObserver()],
                    build=replace(build, resume=True, strict=True))
        resumed = convert(records, db, transform=opts, observers=[MeanObserver()],
                          build=replace(build, resume=True))
        assert resumed.resumed_at == 50  # img_0000..img_0049 were committed
        assert resumed.mean_count == clean.mean_count == 158
        assert np.array_equal(resumed.mean, clean.mean)
        assert resumed.skipped == clean.skipped
        assert db_items(db) == db_items(tmp_path / "clean")


def test_resume_after_a_kill_between_record_and_publish_leaves_no_build_record(data, tmp_path):
    flags = ["--resize_width=16", "--resize_height=16", "--txn_size=1", "--workers=1"]
    # a real build record: from a build of the same command killed midway
    killed = start(*convert_args(data, tmp_path / "db", *flags))
    wait_until(lambda: lmdb_entries(tmp_path / "db.partial") >= 3, killed)
    killed.kill()
    killed.wait()
    killed.stderr.close()
    record = (tmp_path / "db.partial" / "imagenet_db.build.json").read_bytes()
    shutil.rmtree(tmp_path / "db.partial")
    rc, err = call(*convert_args(data, tmp_path / "db", *flags))
    assert rc == 0, err
    # the state of a build killed right after its completion record was written
    os.rename(tmp_path / "db", tmp_path / "db.partial")
    (tmp_path / "db.partial" / "imagenet_db.build.json").write_bytes(record)
    rc, err = call(*convert_args(data, tmp_path / "db", *flags, "--resume"))
    assert rc == 0, err
    assert not (tmp_path / "db" / "imagenet_db.build.json").exists()
    rc, err = call("verify", tmp_path / "db")
    assert rc == 0, err

