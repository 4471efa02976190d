"""A failing Dask cluster ends a build cleanly: a lost scheduler, no workers left, an address
that is not a Dask scheduler or cannot be reached, SIGTERM/SIGINT while waiting for a stuck or
silent scheduler; a killed worker's chunks are rescheduled. The good records are committed and
--resume (on a new cluster or locally) finishes with the uninterrupted build's database.

A real Dask scheduler and workers, each its own process on 127.0.0.1; builds run through the
command line (tests/conftest.py: ``call``, ``run``, ``start``) on real JPEGs."""
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (call, child_env, convert_args, db_items, finish, lmdb_entries,
                      one_line_error, read_lmdb, run, start, wait_until)
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.engine.executor import dask_executor
from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.testing.hold import HeldImage, hardlinked_copy
from imagenet_db.testing.photos import small_jpeg

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


def start_held_build(many, tmp_path, cluster, dask_timeout):
    """Start ``convert`` of ``many`` into tmp_path/db on a new cluster, image 100 held
    (held_images), and wait until the task before it is committed.
    Returns (images folder, HeldImage, DaskCluster, Popen)."""
    root, flags, _ = many
    imgs, held = held_images(many, tmp_path)
    c = cluster()
    proc = start("convert", imgs, root / "list.txt", tmp_path / "db", *flags,
                 f"--dask_scheduler={c.address}", f"--dask_timeout={dask_timeout}")
    _wait_held(proc, tmp_path / "db.partial")
    return imgs, held, c, proc


def test_lost_scheduler_ends_the_build_and_resume_on_a_new_cluster_finishes(many, tmp_path,
                                                                           cluster):
    root, flags, clean = many
    db, partial = tmp_path / "db", tmp_path / "db.partial"
    imgs, held, first, proc = start_held_build(many, tmp_path, cluster, 10)
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


def test_no_workers_left_ends_the_build_and_local_resume_finishes(many, tmp_path, cluster):
    root, flags, clean = many
    db = tmp_path / "db"
    imgs, held, c, proc = start_held_build(many, tmp_path, cluster, 10)
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


def test_a_scheduler_address_that_is_not_dask_fails_within_the_timeout(many, tmp_path):
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


def test_sigterm_is_honoured_while_waiting_for_a_stuck_cluster(many, tmp_path, cluster):
    root, flags, clean = many
    db = tmp_path / "db"
    # the worker's task hangs on the held image: the build waits
    imgs, held, _, proc = start_held_build(many, tmp_path, cluster, 120)
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc, 15)  # within seconds, not after --dask_timeout
    assert rc == 143, err
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err, err
    held.restore()
    rc, err = call("convert", imgs, root / "list.txt", db, *flags, "--resume")
    assert rc == 0, err
    assert db_items(db) == clean


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_the_build_loop_ends_the_command_in_one_line(data, tmp_path, signum):
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



def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(ImagenetDbError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with dask_executor("tcp://127.0.0.1:9", timeout=2):
            pass


def test_killed_worker_is_rescheduled_with_an_identical_database(tmp_path):
    """SIGKILL a Dask worker while it holds chunks of the build: the scheduler reruns them on
    the other worker (or the restarted one) and the database equals the local-threads one."""
    import os
    import signal
    import threading
    import time

    from conftest import SAMPLE, train_list
    from imagenet_db.pipeline import convert
    from imagenet_db.sources.listfile import list_records

    entries = train_list(SAMPLE / "train") * 16  # ~650 records: a build of a second or two
    records = list_records(str(SAMPLE / "train"), entries)
    transform = TransformOptions(resize_height=64, resize_width=64)
    convert(records, str(tmp_path / "local"), transform=transform,
            build=BuildOptions(progress=False, workers=2))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0")  # no fixed port
    try:
        killed = []

        def kill_a_busy_worker(client):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.01)

        with dask_executor(cluster.scheduler_address) as executor:
            killer = threading.Thread(target=kill_a_busy_worker, args=(executor.client,))
            killer.start()
            convert(records, str(tmp_path / "dask"), transform=transform,
                    build=BuildOptions(progress=False, executor=executor))
            killer.join()
    finally:
        cluster.close()
    assert killed, "no worker was busy to be killed"
    assert read_lmdb(tmp_path / "dask") == read_lmdb(tmp_path / "local")

