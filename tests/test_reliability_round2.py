"""Reliability, round 2 (issue 13): one build per output, --overwrite never deletes what is not
ours, a failing cluster and a changing archive end cleanly, verify catches corruption,
decompression bombs in every format, one-line errors for hostile input.

Everything runs through the command line (``imagenet-db SUBCOMMAND`` via
``imagenet_db.cli.main``) on real files: JPEGs made from the real photos, real tars, real
LMDB/LevelDB, a real Dask scheduler and workers on 127.0.0.1, real SIGKILL/SIGSTOP/SIGTERM.
Commands that need a process of their own (locks held by another build, kills, signals,
peak memory) run as child processes (``run``/``start``); the others in this process
(``call``), which is faster.
"""
import contextlib
import fcntl
import gzip
import http.server
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import plyvel
import pytest

# ---------------------------------------------------------------- project imports (one place)
from imagenet_db import cli
from imagenet_db.protos import Datum
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.testing import photos
from imagenet_db.testing.hold import HeldImage, hardlinked_copy

REPO = Path(__file__).resolve().parent.parent
WNIDS = ["n01440764", "n01443537", "n01751748", "n02119789", "n02123045", "n02124075"]

# The child prints READY once its imports are done (so timings measure the command only) and,
# with REPORT_MAXRSS set, its peak resident set size (KiB) when the command ends.
CHILD = (
    "import importlib, os, resource, sys\n"
    "from imagenet_db import cli\n"
    "for name in ('imagenet_db.pipeline', 'imagenet_db.verify', 'imagenet_db.recipes.imagenet',\n"
    "             'imagenet_db.recipes.extract', 'imagenet_db.observers.mean'):\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except ImportError:\n"
    "        pass\n"
    "sys.stderr.write('READY\\n'); sys.stderr.flush()\n"
    "try:\n"
    "    code = cli.main(sys.argv[1:])\n"
    "finally:\n"
    "    if os.environ.get('REPORT_MAXRSS'):\n"
    "        sys.stderr.write('MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), **{k: str(v) for k, v in extra.items()})
    env.pop("PYTHONWARNINGS", None)
    return env


def run(*args, timeout=120, cwd=None, preexec_fn=None, **env):
    """Run ``imagenet-db ARGS`` in a child process; (exit code, stderr without READY)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], env=child_env(**env),
                          cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)
    return proc.returncode, proc.stderr.replace("READY\n", "", 1)


def call(*args, cwd=None, **env):
    """Run ``imagenet-db ARGS`` in this process; (exit code, its output: stderr and stdout)."""
    saved_env = {name: os.environ.get(name) for name in env}
    saved_cwd = os.getcwd()
    err = io.StringIO()
    os.environ.update({name: str(value) for name, value in env.items()})
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            try:
                code = cli.main([str(arg) for arg in args])
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code
    finally:
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, err.getvalue()


def start(*args, **env):
    """Start ``imagenet-db ARGS``; returns the Popen once the child's imports are done."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], env=child_env(**env),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    assert line == b"READY\n", line + proc.stderr.read()
    return proc


def finish(proc, timeout):
    """Wait for a started child; (exit code, stderr)."""
    try:
        err = proc.communicate(timeout=timeout)[1].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the command did not end within {timeout} s")
    return proc.returncode, err


def one_line_error(err):
    """The command's error: exactly one line starting 'error:' and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def lmdb_entries(path):
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0
    env = lmdb.open(str(path), readonly=True, lock=True)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def wait_until(predicate, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def pause(proc):
    """SIGSTOP ``proc`` and wait until every one of its threads is stopped (the signal is
    delivered asynchronously: a commit in flight could otherwise land after this returns)."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                states.append(Path(task, "stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.002)
    raise AssertionError(f"process {proc.pid} did not stop")


def db_items(path):
    """[(key, value)] of an LMDB or LevelDB directory, read with plain lmdb/plyvel."""
    path = str(path)
    if os.path.exists(os.path.join(path, "data.mdb")):
        env = lmdb.open(path, readonly=True, lock=True)
        try:
            with env.begin() as txn:
                return list(txn.cursor())
        finally:
            env.close()
    db = plyvel.DB(path, create_if_missing=False)
    try:
        return list(db.iterator())
    finally:
        db.close()


def files_under(root):
    """{relative path: bytes (or 'dir')} of everything under root."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def snapshot(outdir):
    """A create_imagenet output folder: DB items (+ record counts), aux and mean files."""
    out = {}
    for entry in sorted(os.listdir(outdir)):
        path = os.path.join(outdir, entry)
        if entry.endswith(("_lmdb", "_leveldb")):
            out[entry] = db_items(path)
            manifest = json.loads(Path(path, "imagenet_db.json").read_text())
            out[entry + " record"] = {k: manifest[k] for k in (
                "entries", "skipped", "entries_sha256", "entries_crc32_sum")}
        elif entry == "report.html":  # holds paths and times (tests/test_pictures.py)
            out[entry] = "present"
        elif os.path.isfile(path):
            out[entry] = Path(path).read_bytes()
        else:
            out[entry] = "unexpected directory"
    return out


small_jpeg = photos.small_jpeg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """images/ (160 small JPEGs, two broken) + list.txt; tree/ (6 synsets x 20 train JPEGs,
    flat val/ of 24 + val.txt); a private tar-index cache folder."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(13)
    photos.write_list_folder(root / "images", root / "list.txt", rng)
    tree = root / "tree"
    for wnid in WNIDS:
        (tree / "train" / wnid).mkdir(parents=True)
        for i in range(20):
            (tree / "train" / wnid / f"{wnid}_{i + 1}.JPEG").write_bytes(small_jpeg(rng))
    photos.write_small_val(tree, 24, WNIDS, rng)
    return root


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path_factory, monkeypatch):
    """Tar indexes are cached per user; keep this suite's cache out of ~/.cache."""
    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE",
                       str(tmp_path_factory.getbasetemp() / "round2-index-cache"))


def convert_args(data, db, *extra):
    return ["convert", data / "images", data / "list.txt", db, *extra]


def hold_lock(path):
    """Hold an flock on ``path`` as another imagenet-db process would (PID written in it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# ================================================================ 1. one build per output
def test_1_second_build_of_a_db_is_refused_while_the_first_runs(data, tmp_path):
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
    assert record(db) == record(tmp_path / "clean")  # incl. the content checksum


def record(db, fields=("entries", "skipped", "entries_sha256", "entries_crc32_sum")):
    manifest = json.loads(Path(db, "imagenet_db.json").read_text())
    return {name: manifest[name] for name in fields}


def test_1_second_create_imagenet_is_refused_and_the_first_finishes_intact(data, tmp_path):
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


def test_1_extract_and_compute_image_mean_respect_a_held_lock(data, tmp_path):
    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))
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


def test_1_every_lmdb_put_is_checked(tmp_path):
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


# ================================================================ 2. --overwrite: only ours
def test_2_overwrite_never_replaces_what_this_tool_did_not_make(data, tmp_path):
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


def test_2_create_imagenet_overwrite_keeps_a_foreign_folder_at_a_db_name(data, tmp_path):
    out = tmp_path / "out"
    (out / "ilsvrc12_val_lmdb").mkdir(parents=True)
    (out / "ilsvrc12_val_lmdb" / "photo.jpg").write_bytes(b"not ours")
    before = files_under(out)
    rc, err = call("create", data / "tree", out, "--resize=16x16", "--overwrite")
    assert rc == 1 and "photo.jpg" in one_line_error(err), err
    assert files_under(out) == before  # refused before any work


# ================================================================ 3. a failing Dask cluster
distributed = pytest.importorskip("distributed")


class DaskCluster:
    """A real Dask scheduler and workers, each its own process on 127.0.0.1 (no nanny, so a
    killed worker stays dead)."""

    def __init__(self, folder):
        self.folder, self.workers = Path(folder), []
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)],
            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not info.exists() or not info.read_text().strip().endswith("}"):
            assert self.scheduler.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        self.address = json.loads(info.read_text())["address"]

    def add_worker(self):
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--no-nanny",
             "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(worker)
        return worker

    def close(self):
        for proc in self.workers + [self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make():
        made.append(DaskCluster(tmp_path / f"cluster{len(made)}"))
        made[-1].add_worker()
        return made[-1]
    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """160 small (160x120) JPEGs + list: a cluster build of them can be stopped midway."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(3)
    (root / "imgs").mkdir()
    for i in range(160):  # small: a 64-image task ends well within --dask_timeout on a busy machine
        (root / "imgs" / f"i{i:04d}.jpg").write_bytes(small_jpeg(rng, (160, 120)))
    (root / "list.txt").write_text("".join(f"i{i:04d}.jpg {i % 9}\n" for i in range(160)))
    flags = ["--resize_width=24", "--resize_height=24", "--txn_size=1"]
    rc, err = call("convert", root / "imgs", root / "list.txt", root / "clean", *flags)
    assert rc == 0, err
    return root, flags, db_items(root / "clean")


def _stop_midway(proc, partial, entries=10):
    wait_until(lambda: lmdb_entries(partial) >= entries, proc)
    pause(proc)


def held_images(many, tmp_path, index=100):
    """A private copy of ``many``'s images with image ``index`` held (a FIFO): a build from
    it writes the 64-record cluster task before it and then waits, however fast the machine
    (testing.hold). Returns (images folder, HeldImage)."""
    root = many[0]
    imgs = hardlinked_copy(root / "imgs", tmp_path / "imgs")
    return imgs, HeldImage(imgs / f"i{index:04d}.jpg")


def _wait_held(proc, partial):
    """The build has committed everything before the held image (one cluster task)."""
    wait_until(lambda: lmdb_entries(partial) >= 64, proc)


def test_3_lost_scheduler_ends_the_build_and_resume_on_a_new_cluster_finishes(many, tmp_path,
                                                                           cluster):
    root, flags, clean = many
    db, partial = tmp_path / "db", tmp_path / "db.partial"
    imgs, held = held_images(many, tmp_path)
    first = cluster()
    proc = start("convert", imgs, root / "list.txt", db, *flags,
                 f"--dask_scheduler={first.address}", "--dask_timeout=10")
    _wait_held(proc, partial)
    first.scheduler.kill()
    first.scheduler.wait()
    began = time.monotonic()
    rc, err = finish(proc, 60)
    assert rc == 1 and time.monotonic() - began < 40, err
    line = one_line_error(err)
    assert "scheduler" in line and "--resume" in line, line
    committed = db_items(partial)
    assert 0 < len(committed) < len(clean) and committed == clean[:len(committed)]
    held.restore()
    second = cluster()
    rc, err = run("convert", imgs, root / "list.txt", db, *flags, "--resume",
                  f"--dask_scheduler={second.address}")
    assert rc == 0, err
    assert db_items(db) == clean


def test_3_no_workers_left_ends_the_build_and_local_resume_finishes(many, tmp_path, cluster):
    root, flags, clean = many
    db, partial = tmp_path / "db", tmp_path / "db.partial"
    imgs, held = held_images(many, tmp_path)
    c = cluster()
    proc = start("convert", imgs, root / "list.txt", db, *flags,
                 f"--dask_scheduler={c.address}", "--dask_timeout=10")
    _wait_held(proc, partial)
    for worker in c.workers:
        worker.kill()
        worker.wait()
    began = time.monotonic()
    rc, err = finish(proc, 60)
    assert rc == 1 and time.monotonic() - began < 40, err
    line = one_line_error(err)
    assert "worker" in line and "--resume" in line, line
    held.restore()
    rc, err = call("convert", imgs, root / "list.txt", db, *flags, "--resume")
    assert rc == 0, err
    assert db_items(db) == clean


def test_3_a_scheduler_address_that_is_not_dask_fails_within_the_timeout(many, tmp_path):
    root, flags, _ = many

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)  # a dashboard-like port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        began = time.monotonic()
        proc = start("convert", root / "imgs", root / "list.txt", tmp_path / "db", *flags,
                     f"--dask_scheduler=tcp://127.0.0.1:{server.server_address[1]}",
                     "--dask_timeout=2")
        rc, err = finish(proc, 40)
        assert rc == 1 and time.monotonic() - began < 20, err
        assert "Dask scheduler" in one_line_error(err)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "db.partial").exists() or not db_items(tmp_path / "db.partial")


def test_3_sigterm_is_honoured_while_waiting_for_a_stuck_cluster(many, tmp_path, cluster):
    root, flags, clean = many
    db, partial = tmp_path / "db", tmp_path / "db.partial"
    imgs, held = held_images(many, tmp_path)
    c = cluster()
    proc = start("convert", imgs, root / "list.txt", db, *flags,
                 f"--dask_scheduler={c.address}", "--dask_timeout=120")
    _wait_held(proc, partial)  # the worker's task hangs on the held image: the build waits
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc, 15)  # within seconds, not after --dask_timeout
    assert rc == 143, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err, err
    held.restore()
    rc, err = call("convert", imgs, root / "list.txt", db, *flags, "--resume")
    assert rc == 0, err
    assert db_items(db) == clean


# ================================================================ 4. a source changing mid-build
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


@pytest.mark.parametrize("change", ["truncate", "same_size_rewrite"])
def test_4_an_archive_changing_during_the_build_is_an_error_not_skips(arch, tmp_path, change):
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


# ================================================================ 5. verify catches corruption
VERIFY_MANY = (  # verify many databases in one child process: {path: [exit code, output]}
    "import contextlib, io, json, sys, traceback\n"
    "from imagenet_db import cli\n"
    "out = {}\n"
    "for path in sys.argv[1:]:\n"
    "    buf = io.StringIO()\n"
    "    try:\n"
    "        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
    "            code = cli.main(['verify', path])\n"
    "    except BaseException:\n"
    "        code = 'traceback'\n"
    "        buf.write(traceback.format_exc())\n"
    "    out[path] = [code, buf.getvalue()]\n"
    "print(json.dumps(out))\n"
)


def verify_many(paths):
    proc = subprocess.run([sys.executable, "-c", VERIFY_MANY, *map(str, paths)],
                          env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


READ_LMDB = (  # the SHA-256 of an LMDB's entries as a plain lmdb reader sees them
    "import hashlib, lmdb, sys\n"
    "env = lmdb.open(sys.argv[1], readonly=True, lock=False)\n"
    "digest = hashlib.sha256()\n"
    "with env.begin() as txn:\n"
    "    for key, value in txn.cursor():\n"
    "        digest.update(b'%d:%s%d:%s' % (len(key), key, len(value), value))\n"
    "print(digest.hexdigest())\n"
)


def read_all(path):
    """What a reader gets from an LMDB: a digest of its entries, an error, or a crash (a
    damaged LMDB can kill its reader with SIGBUS, so this runs in its own process)."""
    proc = subprocess.run([sys.executable, "-c", READ_LMDB, str(path)], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode < 0:
        return f"reader killed by signal {-proc.returncode}"
    return proc.stdout.strip() if proc.returncode == 0 else "unreadable"


LMDB_PAGE = 4096


def lmdb_tree_pages(data):
    """Page numbers of an LMDB's branch and leaf pages (mp_flags at byte 10 of each page)."""
    return [pg for pg in range(2, len(data) // LMDB_PAGE)
            if int.from_bytes(data[pg * LMDB_PAGE + 10:pg * LMDB_PAGE + 12], "little") & 3]


def test_5_verify_fails_on_every_lmdb_corruption_a_reader_would_see(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=32", "--resize_height=32"))
    assert rc == 0, err
    reference = read_all(db)
    original = (db / "data.mdb").read_bytes()
    rng = random.Random(13)
    offsets = [rng.randrange(2 * LMDB_PAGE, len(original) - 8) for _ in range(10)]
    offsets += [rng.choice(lmdb_tree_pages(original)) * LMDB_PAGE + rng.randrange(16, LMDB_PAGE - 8)
                for _ in range(6)]
    copies = {}
    for n, offset in enumerate(offsets):
        copy = tmp_path / f"c{n}"
        shutil.copytree(db, copy)
        damaged = bytearray(original)
        damaged[offset:offset + 8] = bytes(rng.randrange(256) for _ in range(8))
        (copy / "data.mdb").write_bytes(bytes(damaged))
        copies[str(copy)] = read_all(copy) != reference
    # a changed digit in a key's path: still a well-formed, well-ordered key
    key_copy = tmp_path / "key"
    shutil.copytree(db, key_copy)
    assert original.count(b"00000003_img_0003.jpg") == 1
    (key_copy / "data.mdb").write_bytes(original.replace(b"00000003_img_0003.jpg",
                                                         b"00000003_img_0008.jpg"))
    copies[str(key_copy)] = True
    results = verify_many([db, *copies])
    assert results[str(db)][0] == 0, results[str(db)][1]
    changed = [path for path, differs in copies.items() if differs]
    assert len(changed) >= 10
    for path in copies:
        code, text = results[path]
        assert code != "traceback" and "Traceback" not in text, text
        if path in changed:
            assert code == 1 and "FAILED" in text, (path, text)


def _flip(path, count=64):
    damaged = bytearray(Path(path).read_bytes())
    middle = len(damaged) // 2
    for i in range(middle, middle + count):
        damaged[i] ^= 0xFF
    Path(path).write_bytes(bytes(damaged))


def test_5_verify_checks_leveldb_checksums_and_never_loses_data(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--backend=leveldb", "--resize_width=32",
                                "--resize_height=32"))
    assert rc == 0, err
    # a damaged log (the batches written last): verify must say so, and not "recover" the
    # database by dropping the damaged batches (LevelDB's default open does exactly that)
    logged = tmp_path / "logged"
    shutil.copytree(db, logged)
    (log,) = logged.glob("*.log")
    _flip(log)
    damaged_log = log.read_bytes()
    code, text = call("verify", logged)
    assert code == 1 and "Traceback" not in text, text
    assert log.exists() and log.read_bytes() == damaged_log  # the evidence is kept
    # a damaged table block: LevelDB's block checksum catches it
    plyvel.DB(str(db)).close()  # as a writer (or Caffe) opens it: the log moves into a table
    code, text = call("verify", db)
    assert code == 0, text
    (table,) = db.glob("*.ldb")
    _flip(table)
    code, text = call("verify", db)
    assert code == 1 and "checksum" in text and "Traceback" not in text, text


def test_5_damaged_lmdb_meta_page_is_a_one_line_error(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=16", "--resize_height=16"))
    assert rc == 0, err
    damaged = bytearray((db / "data.mdb").read_bytes())
    root_at = 16 + 4 + 4 + 8 + 8 + 48 + 40  # MDB_meta: main DB's md_root (after FREE_DBI)
    for meta in (0, 1):
        damaged[meta * LMDB_PAGE + root_at:meta * LMDB_PAGE + root_at + 8] = \
            (999_999).to_bytes(8, "little")
    (db / "data.mdb").write_bytes(bytes(damaged))
    rc, err = call("verify", db)
    assert rc == 1 and "Traceback" not in err, err
    rc, err = call("mean", db)
    assert rc == 1 and str(db) in one_line_error(err), err


# ================================================================ 6. bombs in every format
def gif_bomb(width=30000, height=30000):
    """A 35-byte GIF whose screen and one frame declare width x height pixels."""
    screen = width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x80\x00\x00"
    colours = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + bytes(4) + screen[:4] + b"\x00"
    return b"GIF89a" + screen + colours + frame + b"\x02\x02\x4c\x01\x00" + b"\x3b"


def skip_reasons(db):
    return dict(line.split("\t", 1) for line in Path(f"{db}.skipped.tsv").read_text().splitlines())


def test_6_a_gif_header_bomb_is_skipped_before_decoding(data, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    bomb = gif_bomb()
    assert len(bomb) == 35
    (folder / "bomb.JPEG").write_bytes(bomb)  # named like an ImageNet file
    for i in range(4):
        shutil.copy(data / "images" / f"img_{i:04d}.jpg", folder / f"ok_{i}.jpg")
    (tmp_path / "list.txt").write_text("bomb.JPEG 0\n" + "".join(f"ok_{i}.jpg 1\n"
                                                                for i in range(4)))

    def address_space_cap():  # protects the machine should a decoder try anyway
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    db = tmp_path / "db"
    rc, err = run("convert", folder, tmp_path / "list.txt", db, "--max_pixels=1000000",
                  "--workers=2", preexec_fn=address_space_cap, REPORT_MAXRSS=1)
    assert rc == 0, err
    assert "30000x30000" in skip_reasons(db)["bomb.JPEG"]
    peak_mib = int(err.rsplit("MAXRSS ", 1)[1].split()[0]) // 1024
    assert peak_mib < 600, f"peak RSS {peak_mib} MiB for a 35-byte file"
    assert len(db_items(db)) == 4


def format_samples():
    """{name: bytes}: the same photo as every format this OpenCV can write and read, at
    1300x1000 (1.3 megapixels) and 120x90."""
    photo = cv2.imread(str(photos.PHOTOS_DIR / "astronaut.png"))
    variants = {"bmp": (".bmp", []), "png": (".png", []), "jpeg": (".jpg", []),
                "webp_lossy": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                "webp_lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                "tiff": (".tiff", []), "ppm": (".ppm", []), "pgm": (".pgm", []),
                "pam": (".pam", []), "pfm": (".pfm", []), "sunraster": (".sr", []),
                "jpeg2000": (".jp2", []), "hdr": (".hdr", []), "gif": (".gif", []),
                "avif": (".avif", [])}
    out = {}
    for name, (ext, params) in variants.items():
        for tag, size in (("big", (1300, 1000)), ("small", (120, 90))):
            image = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
            if name == "pgm":
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if name in ("pfm", "hdr"):
                image = image.astype(np.float32) / 255
            try:
                ok, buf = cv2.imencode(ext, image, params)
            except cv2.error:
                ok = False
            if ok and cv2.imdecode(buf, cv2.IMREAD_COLOR) is not None:
                out[f"{tag}_{name}"] = buf.tobytes()
    return out


def test_6_max_pixels_covers_every_format_opencv_decodes(tmp_path):
    samples = format_samples()
    formats = {name.split("_", 1)[1] for name in samples}
    assert {"bmp", "png", "webp_lossy", "tiff", "ppm", "gif", "jpeg2000", "hdr"} <= formats
    folder = tmp_path / "img"
    folder.mkdir()
    for name, data in samples.items():
        (folder / f"{name}.JPEG").write_bytes(data)
    (tmp_path / "list.txt").write_text("".join(f"{name}.JPEG 3\n" for name in sorted(samples)))
    db = tmp_path / "db"
    rc, err = call("convert", folder, tmp_path / "list.txt", db, "--max_pixels=1000000")
    assert rc == 0, err
    reasons = skip_reasons(db)
    for name in samples:
        if name.startswith("big_"):
            assert "1300x1000" in reasons.get(f"{name}.JPEG", ""), (name, reasons.get(f"{name}.JPEG"))
    stored = {k.split(b"_", 1)[1].decode(): Datum.FromString(v) for k, v in db_items(db)}
    assert set(stored) == {f"{name}.JPEG" for name in samples if name.startswith("small_")}
    for datum in stored.values():
        assert (datum.height, datum.width, datum.channels) == (90, 120, 3)


# ================================================================ 7. one-line errors
def test_7_nul_byte_in_a_list_path_is_an_error_naming_the_line(data, tmp_path):
    listfile = tmp_path / "list.txt"
    listfile.write_bytes(b"img_0001.jpg 1\nimg\x00_0002.jpg 2\n")
    rc, err = call(*["convert", data / "images", listfile, tmp_path / "db"])
    assert rc == 1, err
    assert f"{listfile}:2:" in one_line_error(err)
    assert not (tmp_path / "db.partial").exists() and not (tmp_path / "db").exists()


def test_7_non_utf8_file_name_in_a_tree_is_a_one_line_error(data, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(data / "tree", tree)
    bad = os.path.join(os.fsencode(tree / "train" / WNIDS[1]), b"caf\xe9.JPEG")
    shutil.copy(data / "images" / "img_0000.jpg", bad)
    for command in ("labels", "create"):
        rc, err = call(command, tree, tmp_path / command)
        assert rc == 1, err
        line = one_line_error(err)
        assert WNIDS[1] in line and "UTF-8" in line, line


def test_7_a_damaged_tar_index_cache_is_ignored_and_rebuilt(tmp_path):
    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))
    cache = tmp_path / "cache"
    rc, err = call("labels", arch, tmp_path / "first", IMAGENET_DB_TAR_INDEX_CACHE=cache)
    assert rc == 0, err
    cached = sorted(cache.glob("*"))
    assert len(cached) == 2
    for path in cached:
        _flip(path, count=16)
    for attempt in ("second", "third"):
        rc, err = call("labels", arch, tmp_path / attempt, IMAGENET_DB_TAR_INDEX_CACHE=cache)
        assert rc == 0 and "Traceback" not in err, err
        assert files_under(tmp_path / attempt) == files_under(tmp_path / "first")
    for path in sorted(cache.glob("*")):
        gzip.decompress(path.read_bytes())  # rebuilt whole


@pytest.mark.parametrize("flag", ["--seed=18446744073709551616", "--seed=9223372036854775808",
                                  "--max_pixels=-1"])
def test_7_out_of_range_numbers_are_usage_errors(data, tmp_path, flag):
    rc, err = call(*convert_args(data, tmp_path / "db", "--shuffle", flag))
    assert rc == 2 and "Traceback" not in err, err
    assert flag.split("=")[0] in err.splitlines()[-1], err
    assert not (tmp_path / "db.partial").exists()


# ================================================================ 8. smaller ones
def test_8_a_key_over_lmdbs_limit_is_refused_before_the_first_image(data, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(data / "images", root)
    deep = Path(*[f"{'d' * 100}{i}" for i in range(5)])  # a 500-character relative path
    (root / deep).mkdir(parents=True)
    shutil.copy(root / "img_0001.jpg", root / deep / "photo.jpg")
    listfile = tmp_path / "list.txt"
    listfile.write_text(f"img_0000.jpg 0\nimg_0001.jpg 1\n{deep}/photo.jpg 2\n")
    rc, err = call("convert", root, listfile, tmp_path / "db")
    assert rc == 1, err
    line = one_line_error(err)
    assert f"{listfile}:3:" in line and "511" in line, line
    assert not (tmp_path / "db.partial").exists()  # before any work
    rc, err = call("convert", root, listfile, tmp_path / "level", "--backend=leveldb")
    assert rc == 0, err  # LevelDB has no key limit


@pytest.mark.parametrize("label", ["1_000", "+7", "\u0663", "0x1f"])
def test_8_labels_are_ascii_digits_only(data, tmp_path, label):
    listfile = tmp_path / "list.txt"
    listfile.write_text(f"img_0000.jpg 0\nimg_0001.jpg {label}\n", encoding="utf-8")
    rc, err = call(*["convert", data / "images", listfile, tmp_path / "db"])
    assert rc == 1, err
    assert f"{listfile}:2:" in one_line_error(err)


def _half_jpeg_with_eoi(jpeg):
    sos = jpeg.find(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")
    return jpeg[:(start + len(jpeg)) // 2] + b"\xff\xd9"


def test_8_half_a_jpeg_with_an_end_marker_is_skipped_and_grey_photos_are_kept(tmp_path):
    photo = cv2.resize(cv2.imread(str(photos.PHOTOS_DIR / "coffee.png")), (320, 240))
    whole = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    grey_bottom = photo.copy()
    grey_bottom[160:] = 128  # a real image may end in flat mid-grey: it must be kept
    folder = tmp_path / "img"
    folder.mkdir()
    files = {"half.jpg": _half_jpeg_with_eoi(whole), "whole.jpg": whole,
             "grey_bottom.jpg": cv2.imencode(".jpg", grey_bottom,
                                             [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()}
    assert cv2.imdecode(np.frombuffer(files["half.jpg"], np.uint8), cv2.IMREAD_COLOR) is not None
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (tmp_path / "list.txt").write_text("half.jpg 0\nwhole.jpg 1\ngrey_bottom.jpg 2\n")
    rc, err = call("convert", folder, tmp_path / "list.txt", tmp_path / "db")
    assert rc == 0, err
    assert "truncated" in skip_reasons(tmp_path / "db").get("half.jpg", ""), err
    assert len(db_items(tmp_path / "db")) == 2


def _retar(path, transform):
    """Rewrite a tar, passing each (TarInfo, bytes) through ``transform``."""
    with tarfile.open(path) as tar:
        members = [(info, tar.extractfile(info).read() if info.isfile() else None)
                   for info in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info, data = transform(info, data)
            tar.addfile(info, None if data is None else __import__("io").BytesIO(data))


def test_8_sparse_tar_members_are_refused(tmp_path):
    arch = tmp_path / "arch"
    spec = ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=12, image_size=(256, 192))
    fixture_archives.write_archives(arch, spec)  # the sparse member is not last
    val_tar = arch / "ILSVRC2012_img_val.tar"
    files = tmp_path / "val_files"
    with tarfile.open(val_tar) as tar:
        tar.extractall(files, filter="data")
        names = tar.getnames()
    first = files / names[0]
    jpeg = first.read_bytes()
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + bytes(65533)  # 64 KB of zeros
    padded = jpeg[:2] + comment + jpeg[2:]
    with open(first, "wb") as f:  # written with a hole, so GNU tar stores it sparse
        f.write(padded[:6])
        f.seek(len(padded) - len(jpeg) + 2 - 8)
        f.write(padded[len(padded) - len(jpeg) + 2 - 8:])
    assert first.read_bytes() == padded
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(files), "-cf", str(val_tar),
                    *names], check=True)
    with tarfile.open(val_tar) as tar:
        assert tar.getmember(names[0]).issparse()
    for command in ("extract", "labels"):  # refused (not read as if contiguous), naming it
        rc, err = call(command, arch, tmp_path / command)
        assert rc == 1, err
        line = one_line_error(err).replace(str(tmp_path), "DIR")
        assert names[0] in line and "sparse" in line, line


def test_8_extract_never_certifies_an_empty_or_changed_file(tmp_path):
    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))
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


def test_8_odd_member_names_in_archives(tmp_path):
    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))
    train_tar = arch / "ILSVRC2012_img_train.tar"
    original = train_tar.read_bytes()

    def add_member(name):
        def transform(info, data):
            if info.name == f"{WNIDS[0]}.tar":
                inner = tmp_path / "inner.tar"
                inner.write_bytes(data)
                with tarfile.open(inner, "a", format=tarfile.GNU_FORMAT) as tar:
                    extra = tarfile.TarInfo(name)
                    extra.size = 5
                    tar.addfile(extra, __import__("io").BytesIO(b"hello"))
                data = inner.read_bytes()
                info.size = len(data)
            return info, data
        train_tar.write_bytes(original)
        _retar(train_tar, transform)

    # a non-image member: extracted, and the count check passes (every run)
    add_member("README.txt")
    for _ in range(2):
        rc, err = call("extract", arch, tmp_path / "dest")
        assert rc == 0, err
    # a member name with a newline cannot go into train.txt: refused, naming it
    add_member(f"{WNIDS[0]}_99\n.JPEG")
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 1, err
    line = one_line_error(err)
    assert "ILSVRC2012_img_train.tar" in line and "\\n" in line, line
    assert not (tmp_path / "aux" / "train.txt").exists()


def test_8_an_empty_synset_folder_is_refused_unless_allowed(data, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(data / "tree", tree)
    (tree / "train" / "n01443000").mkdir()  # sorts second: would shift labels 1..5
    rc, err = call("labels", tree, tmp_path / "aux")
    assert rc == 1 and "n01443000" in one_line_error(err), err
    assert not (tmp_path / "aux").exists() or not os.listdir(tmp_path / "aux")
    rc, err = call("labels", tree, tmp_path / "aux", "--allow_empty_classes")
    assert rc == 0, err
    assert (tmp_path / "aux" / "synsets.txt").read_text().split()[1] == "n01443000"


def test_8_mean_onto_its_own_database_leaves_nothing_behind(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=16", "--resize_height=16"))
    assert rc == 0, err
    before = files_under(tmp_path)
    rc, err = call("mean", db, db)
    assert rc == 1 and str(db) in one_line_error(err), err
    assert files_under(tmp_path) == before


def test_8_resume_after_a_kill_between_record_and_publish_leaves_no_build_record(data, tmp_path):
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


def test_8_an_empty_devkit_is_a_one_line_error(tmp_path):
    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))
    (arch / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "ILSVRC2012_devkit_t12.tar.gz" in one_line_error(err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_8_a_signal_outside_the_build_loop_ends_the_command_in_one_line(data, tmp_path, signum):
    listener = socket.socket()  # a "scheduler" that accepts but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(30)
    try:
        proc = start(*convert_args(data, tmp_path / "db", "--dask_timeout=60",
                                   f"--dask_scheduler=tcp://127.0.0.1:{listener.getsockname()[1]}"))
        connection, _ = listener.accept()  # the command is now connecting, before any build
        proc.send_signal(signum)
        rc, err = finish(proc, 20)
        connection.close()
    finally:
        listener.close()
    assert rc == 128 + signum, err
    lines = err.splitlines()
    assert "Traceback" not in err and all(line.strip() for line in lines), err
    assert lines[-1] == "interrupted", err


def test_8_a_subset_archive_notes_its_counts_once(tmp_path):
    arch = tmp_path / "arch"
    wnids = [wnid for _, wnid, _ in fixture_archives.ilsvrc2012_classes()[:100]]
    info = fixture_archives.write_archives(arch, ArchiveSpec(wnids, train_per_class=1, val_count=4,
                                                             image_size=(16, 12),
                                                             odd_members=False))
    assert len(info["classes"]) == 100
    devkit = arch / "ILSVRC2012_devkit_t12.tar.gz"  # meta.mat as the real devkit's: 1300 each
    meta = fixture_archives.meta_mat_bytes(info["classes"],
                                           {wnid: 1300 for _, wnid, _ in info["classes"]})
    with tarfile.open(devkit) as tar:
        members = [(i, tar.extractfile(i).read() if i.isfile() else None)
                   for i in tar.getmembers()]
    with tarfile.open(devkit, "w:gz") as tar:
        for i, content in members:
            if i.name.endswith("meta.mat"):
                content, i.size = meta, len(meta)
            tar.addfile(i, None if content is None else __import__("io").BytesIO(content))
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert 1 <= len(notes) <= 3, f"{len(notes)} note lines: {notes[:3]}"
