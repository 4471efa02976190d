"""Shared fixtures and helpers: the bundled real-photo sample, small generated ImageNet-like
trees, running the commands in this process or a child, and reading back what they wrote."""
import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import plyvel
import pytest

from imagenet_db import cli
from imagenet_db.protos import Datum
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing import photos
from imagenet_db.testing.archives import ArchiveSpec

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample_imagenet"


@pytest.fixture
def sample_copy(tmp_path):
    """A private copy of the bundled sample ImageNet tree (train/<wnid>/, flat val/ + val.txt)."""
    dest = tmp_path / "imagenet"
    shutil.copytree(SAMPLE, dest)
    return dest


def read_lmdb(path):
    """[(key bytes, value bytes)] of an LMDB in key order, read with plain py-lmdb."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()


def parse_datum(value: bytes) -> Datum:
    datum = Datum()
    datum.ParseFromString(value)
    return datum


def train_list(root):
    """[(relpath, label)] for a train/<wnid>/ tree, wnids in ASCII order = labels."""
    wnids = sorted(os.listdir(root))
    return [(f"{w}/{f}", i) for i, w in enumerate(wnids) for f in sorted(os.listdir(Path(root) / w))]


# ---------------------------------------------------------------- running the commands
# Shared by the test files that drive ``imagenet-db SUBCOMMAND`` (``imagenet_db.cli.main``) on
# real files: in this process (``call``, faster) or as a child process (``run``/``start``:
# locks held by another build, kills, signals, peak memory). Import them with
# ``from conftest import call, one_line_error, ...``.
WNIDS = ["n01440764", "n01443537", "n01751748", "n02119789", "n02123045", "n02124075"]
BAD = ("truncated", "text", "zero_bytes", "corrupt_markers")  # odd_images() among tree's JPEGs
RECORD_FIELDS = ("entries", "skipped", "entries_sha256", "entries_crc32_sum")

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
    """os.environ for a child process running this source tree (PYTHONPATH=REPO), plus
    ``extra`` (values turned into strings), without PYTHONWARNINGS."""
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
    """The committed entries of the LMDB at ``path`` (0 before its data.mdb exists)."""
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0
    env = lmdb.open(str(path), readonly=True, lock=True)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def wait_until(predicate, proc, timeout=60):
    """Poll ``predicate`` until true; fails if ``proc`` ends first or after ``timeout`` s."""
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


def hold_lock(path):
    """Hold an flock on ``path`` as another imagenet-db process would (PID written in it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# ---------------------------------------------------------------- reading what was written
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


def build_record(db, fields=RECORD_FIELDS):
    """The ``fields`` of a finished database's completion record (imagenet_db.json)."""
    manifest = json.loads(Path(db, "imagenet_db.json").read_text())
    return {name: manifest[name] for name in fields}


def snapshot(outdir, items=db_items, fields=RECORD_FIELDS):
    """A create_imagenet output folder for comparison: each DB's items (read with ``items``)
    and the ``fields`` of its completion record; aux and mean files; report.html present."""
    out = {}
    for entry in sorted(os.listdir(outdir)):
        path = os.path.join(outdir, entry)
        if entry.endswith(("_lmdb", "_leveldb")):
            out[entry] = items(path)
            out[entry + " record"] = build_record(path, fields)
        elif entry == "report.html":  # holds paths and times (tests/test_pictures.py)
            out[entry] = "present"
        elif os.path.isfile(path):
            out[entry] = Path(path).read_bytes()
        else:
            out[entry] = "unexpected directory"
    return out


def skip_reasons(db):
    """{relpath: reason} from the skip log ``DB.skipped.tsv`` beside a database."""
    return dict(line.split("\t", 1) for line in Path(f"{db}.skipped.tsv").read_text().splitlines())


def flip(path, count=64):
    """Invert ``count`` bytes in the middle of the file at ``path`` (same size, other bytes)."""
    damaged = bytearray(Path(path).read_bytes())
    middle = len(damaged) // 2
    for i in range(middle, middle + count):
        damaged[i] ^= 0xFF
    Path(path).write_bytes(bytes(damaged))


# ---------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """images/ (160 small JPEGs, two broken) + list.txt; tree/ (6 synsets x 20 train JPEGs,
    flat val/ of 24 + val.txt)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(13)
    photos.write_list_folder(root / "images", root / "list.txt", rng)
    tree = root / "tree"
    for wnid in WNIDS:
        (tree / "train" / wnid).mkdir(parents=True)
        for i in range(20):
            (tree / "train" / wnid / f"{wnid}_{i + 1}.JPEG").write_bytes(photos.small_jpeg(rng))
    photos.write_small_val(tree, 24, WNIDS, rng)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """An extracted-ImageNet-like tree: 6 synsets x 40 small train JPEGs (4 of them broken)
    and 30 flat val JPEGs with val.txt; plus a flat 'images' folder with a Caffe list."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(4)
    odd = photos.odd_images()
    for c, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(40):
            (folder / f"{wnid}_{i + 1}.JPEG").write_bytes(photos.small_jpeg(rng))
    for k, name in enumerate(BAD):  # broken files spread over the classes
        (root / "train" / WNIDS[k] / f"{WNIDS[k]}_{7 * k + 3}.JPEG").write_bytes(odd[name])
    photos.write_small_val(root, 30, WNIDS, rng)
    photos.write_list_folder(root / "images", root / "list.txt", rng)
    return root


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path_factory, monkeypatch):
    """Tar indexes are cached per user; keep every test's cache out of ~/.cache."""
    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE",
                       str(tmp_path_factory.getbasetemp() / "private-index-cache"))


def write_small_archives(arch):
    """A small ILSVRC2012 archive triple in the folder ``arch``: the first 3 WNIDS, 2 train
    images each, 4 val images, 40x30 pixels (imagenet_db.testing.archives)."""
    fixture_archives.write_archives(arch, ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=4,
                                                      image_size=(40, 30)))


def convert_args(data, db, *extra):
    """``convert`` of the ``data`` fixture's images and list into ``db``."""
    return ["convert", data / "images", data / "list.txt", db, *extra]
