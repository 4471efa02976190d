"""Executors: run the per-record transform on all cores and hand results back in list order.

``ordered_map(fn, items, workers)`` yields ``fn(item)`` for every item, in the items' order,
computing ahead on a pool of worker threads. Threads suffice because the heavy steps (file
reads, OpenCV decode/resize/encode) release the GIL, and results (the ~197 KB serialized
Datums) then reach the writer without being pickled or copied between processes. Order is
preserved, so the database bytes do not depend on the number of workers.

Items go to the workers in chunks (``chunk`` items per task, 8 for threads): one future, one
queue hand-off and one wake-up per chunk rather than per image. Memory stays bounded: at most
``window`` items are in flight (default 32 per worker, at most THREAD_WINDOW_MAX), enough for
the workers to run on while the writer is busy (the writer commits on its own thread,
``engine.writer``); and, when the caller says how big a result is (``size``), at most
IN_FLIGHT_BYTES (256 MiB) of work, a record counted as WORKING_FACTOR (4) times the average
result measured so far (its decoded and resized images while it is computed), whatever the
number of workers: threads are started only for tasks in flight, so ``--workers 1000`` runs
about 40 threads for 256x256 raw datums (never fewer than two chunks per core).

For a cluster, ``dask_executor(address)`` hands the same work to the workers of an existing Dask
(dask.distributed) cluster: chunks of 64 records per task (a task costs a few milliseconds of
scheduler and worker event-loop time, an image about one; on the 2-core development VM 64 beat
32 and 128), up to 256 records per cluster thread in flight, results fetched straight from the
workers (``direct_to_workers``) and consumed in list order, so the database is the same as a
local build. Results cross as pickle protocol 5 frames: a raw Datum travels once, as one buffer
(see ``outputs.base.Encoded``). The records' loaders and the transform are plain picklable
objects; the image files (or archives) must be readable at the same paths on every Dask worker
(a shared filesystem). A worker that dies mid-task has its chunks rerun elsewhere by the
scheduler; the transform is deterministic, so the database does not change.

A cluster can fail in ways local threads cannot; none of them may hang a build or end it with
a traceback. ``dask_executor`` gives up connecting after ``timeout`` seconds (also when the
address answers but is not a Dask scheduler, e.g. the dashboard's HTTP port, where
distributed's own handshake would wait forever). While results are awaited, no result for
``timeout`` seconds with the scheduler lost or no workers left (or any task cancelled by the
cluster) raises ``ClusterError``: the build commits what it has and says how to resume (here,
or on a working cluster). Waiting is done in short slices, so a ``stop`` request
(SIGINT/SIGTERM, see ``engine.graceful``) ends the map within about half a second whatever
the cluster does. Once a cluster has been used, distributed's (and asyncio's) log output
stays silenced in the process: its errors reach the user as ClusterError lines instead.
"""
import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from imagenet_db.errors import ImagenetDbError
from imagenet_db.engine.heap import keep_freed_heap

T = TypeVar("T")
R = TypeVar("R")
POLL_SECONDS = 0.5  # waits for a result are sliced so that a stop request is seen this fast
DEFAULT_DASK_TIMEOUT = 60.0  # seconds without any result before a cluster is given up


class ClusterError(ImagenetDbError):
    """The Dask cluster cannot be reached, lost its scheduler or workers, or cancelled work.
    ``resume_where``: where the build can be resumed (added to the resume hint)."""
    resume_where = " (on this machine without --dask_scheduler, or on a working cluster)"


class _Stopped(Exception):
    """Raised inside the map when ``stop()`` turned true while a result was awaited."""


def default_workers() -> int:
    """Number of cores this process may use (sched_getaffinity where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


THREAD_CHUNK = 8     # records per task on local threads
CLUSTER_CHUNK = 64   # records per task on a Dask cluster
CLUSTER_WINDOW_MAX = 2048  # records in flight on a cluster at most (~400 MB of 256x256 raw datums)
THREAD_WINDOW_MAX = 1024  # records in flight on local threads at most (~200 MB of such datums)
IN_FLIGHT_BYTES = 256 << 20  # work in flight at most, by the measured size of results (``size``)
WORKING_FACTOR = 4  # a record being computed holds a few times its result (decoded, resized)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: Optional[int] = None,
                window: Optional[int] = None, executor: Optional[Executor] = None,
                chunk: Optional[int] = None,
                stop: Optional[Callable[[], bool]] = None,
                size: Optional[Callable[[R], int]] = None) -> Iterator[R]:
    """Yield fn(item) for each item, in order, computed by ``workers`` threads.

    workers: thread count (None = all cores; 1 = run inline in the calling thread).
    window: most items computed ahead of the consumer (default 32 per worker thread up to
    THREAD_WINDOW_MAX, or 256 per cluster thread up to CLUSTER_WINDOW_MAX). chunk: items per
    task (default 8 on threads, 64 on a cluster). size: bytes a result holds; then the work
    in flight on threads is also kept under IN_FLIGHT_BYTES (see the module docstring).
    executor: an existing concurrent.futures Executor to submit to instead of a thread pool
    (e.g. ``dask_executor``'s or ``processes.process_executor``'s, whose ``chunk`` and
    ``window`` attributes, if any, are the defaults); then fn and the items must be
    picklable, and fn's ``pack`` attribute, if any, turns a task's list of results into one
    object to ship (e.g. ``outputs.packed.PackedResults.of``) whose ``unpack()`` yields them
    again.
    stop: checked at least every POLL_SECONDS while a result is awaited; when it returns True
    the map ends early (yields no more), so a consumer blocked on a stuck cluster sees a
    Ctrl-C at once.
    An exception raised by fn propagates to the consumer at that item's position; a failing
    cluster raises ClusterError (see the module docstring).
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if executor is not None:
        chunk = chunk or getattr(executor, "chunk", None) or CLUSTER_CHUNK
        threads = getattr(executor, "threads", 0) or 8
        window = window or getattr(executor, "window", None) or \
            min(256 * threads, CLUSTER_WINDOW_MAX)
        yield from _windowed(executor, _Chunk(fn, getattr(fn, "pack", None)), items, chunk,
                             window, stop)  # (its own cap)
        return
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imagenet-db") as pool:
        yield from _windowed(pool, _Chunk(fn), items, chunk or THREAD_CHUNK,
                             window or min(32 * workers, THREAD_WINDOW_MAX), stop, size,
                             floor=2 * min(workers, default_workers()))


class _Chunk:
    """fn over a list of items; an item's exception is returned in its place (picklable).
    pack: applied to the list of results (see ordered_map)."""

    __slots__ = ("fn", "pack")

    def __init__(self, fn, pack=None):
        self.fn, self.pack = fn, pack

    def __call__(self, items: list) -> list:
        keep_freed_heap()  # on a cluster worker too: reuse, not re-fault, large image buffers
        out = []
        for item in items:
            try:
                out.append(self.fn(item))
            except Exception as exc:  # noqa: BLE001 (raised again at the consumer)
                out.append(_Raised(exc))
        return out if self.pack is None else self.pack(out)


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception):
        self.exc = exc


def _wait(future, stop: Optional[Callable[[], bool]]):
    """The result of a concurrent.futures Future, waited for in slices (see ordered_map)."""
    while True:
        try:
            return future.result(timeout=POLL_SECONDS)
        except (TimeoutError, concurrent.futures.TimeoutError):
            if stop is not None and stop():
                raise _Stopped from None


def _windowed(pool: Executor, run: _Chunk, items, chunk: int, window: int, stop=None,
              size=None, floor: int = 1):
    """The ordered results of ``run`` over chunks of ``items``, at most ``window`` items in
    flight; with ``size``, also at most IN_FLIGHT_BYTES of work, each record counted as
    WORKING_FACTOR x the average result so far, but never fewer than ``floor`` chunks (two per
    core the workers can use: the cap never starves the cores)."""
    wait = getattr(pool, "wait", None) or _wait
    pending: deque = deque()
    most = max(1, window // chunk)
    ahead = most if size is None else min(most, 2)  # grows once a result's size is known
    seen = seen_bytes = 0
    iterator = iter(items)
    try:
        while True:
            part = list(itertools.islice(iterator, chunk))
            if part:
                pending.append(pool.submit(run, part))
            while pending and (len(pending) >= ahead or not part):
                results = wait(pending.popleft(), stop)
                unpack = getattr(results, "unpack", None)
                for result in (results if unpack is None else unpack()):
                    if isinstance(result, _Raised):
                        raise result.exc
                    if size is not None:
                        seen, seen_bytes = seen + 1, seen_bytes + max(1, size(result))
                    yield result
                if seen:
                    ahead = min(most, max(floor, IN_FLIGHT_BYTES * seen //
                                          (seen_bytes * chunk * WORKING_FACTOR)))
            if not part and not pending:
                return
    except _Stopped:
        return
    finally:
        drop = getattr(pool, "drop", None)
        if drop is not None:
            drop(pending)
        else:
            for future in pending:
                future.cancel()


class DaskExecutor:
    """Submits work to a Dask cluster (a ``distributed.Client``) and waits for results with a
    bound on the time without progress; see the module docstring.

    address: the scheduler's address (for messages). timeout: seconds without any result
    after which a lost scheduler, an empty cluster or a stuck one is reported (ClusterError).
    """

    def __init__(self, client, address: str, timeout: float):
        self.client, self.address, self.timeout = client, address, timeout
        self.last_progress = time.monotonic()
        try:  # the cluster's worker threads at the start (sizes the window of records)
            self.threads = sum(client.nthreads().values())
        except Exception as exc:  # noqa: BLE001 (any failure means the cluster is unusable)
            raise ClusterError(f"the Dask scheduler at {address} does not answer: "
                               f"{' '.join(str(exc).split()) or type(exc).__name__}") from None

    def submit(self, fn, *args, **kwargs):
        """A distributed Future of fn(*args, **kwargs) (never cached: ``pure=False``)."""
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def wait(self, future, stop: Optional[Callable[[], bool]] = None):
        """The future's result; raises ClusterError when the cluster fails (see the class)."""
        while True:
            try:
                result = future.result(timeout=POLL_SECONDS)
            except (TimeoutError, concurrent.futures.TimeoutError):
                if stop is not None and stop():
                    raise _Stopped from None
                idle = time.monotonic() - self.last_progress
                if idle > self.timeout:
                    raise ClusterError(self._diagnosis(idle)) from None
                continue
            except ImagenetDbError:
                raise  # the work's own error (e.g. an archive that changed)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # cancelled by a lost scheduler, connection closed...
                raise ClusterError(self._diagnosis(time.monotonic() - self.last_progress, exc)) \
                    from None
            self.last_progress = time.monotonic()
            return result

    def _diagnosis(self, idle: float, exc: Optional[BaseException] = None) -> str:
        where = f"the Dask scheduler at {self.address}"
        if self.client.status != "running":
            return f"lost {where} (no result for {idle:.0f} s)"
        try:
            workers = len(self.client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 (any failure here means the cluster is unusable)
            workers = None
        if exc is not None:
            text = " ".join(str(exc).split()) or type(exc).__name__
            return f"{where} gave up on a task ({type(exc).__name__}: {text[:200]})"
        if workers == 0:
            return f"{where} has had no workers for {idle:.0f} s"
        return f"no result from the {workers or '?'} workers of {where} for {idle:.0f} s"

    def drop(self, futures) -> None:
        """Forget pending futures (the cluster releases them; no blocking call to it)."""
        futures.clear()


_QUIET_LOGGERS = ("distributed", "tornado", "asyncio")


def _quiet_cluster_logs() -> None:
    """Silence distributed's (and tornado's, asyncio's) log output, tracebacks included, for
    the rest of the process: every logger under those names (distributed sets levels on its
    module loggers), and for good, because some of it comes late (asyncio's "Task exception
    was never retrieved" when a dead cluster's tasks are collected)."""
    names = set(_QUIET_LOGGERS) | {name for name in logging.root.manager.loggerDict
                                   if name.split(".")[0] in _QUIET_LOGGERS}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _connect(address: str, timeout: float):
    """A distributed Client connected to ``address`` within ``timeout`` seconds (connected in
    a helper thread: distributed's handshake has no timeout of its own)."""
    from distributed import Client

    box = {}

    def connect():
        try:
            box["client"] = Client(address, timeout=f"{timeout}s", set_as_default=False,
                                   direct_to_workers=True)
        except BaseException as exc:  # reported by the calling thread
            box["error"] = exc

    thread = threading.Thread(target=connect, name="imagenet-db-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if thread.is_alive():
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: no Dask answer "
                           f"within {timeout:g} s (is it the scheduler's address, e.g. "
                           f"tcp://host:8786, and not the dashboard's?)")
    if "error" in box:
        exc = box["error"]
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {text}")
    return box["client"]


@contextlib.contextmanager
def dask_executor(address: str, timeout: float = DEFAULT_DASK_TIMEOUT):
    """Context manager giving an executor (``DaskExecutor``) on the Dask cluster whose scheduler
    listens at ``address`` (e.g. 'tcp://10.0.0.5:8786'), closed on exit.

    timeout: seconds to connect, and seconds without any result after which a lost scheduler
    or an empty or stuck cluster ends the build (ClusterError, see the module docstring).
    Needs the optional 'distributed' package (pip install 'imagenet-db[cluster]'); raises
    ClusterError (an ImagenetDbError) when it is missing or the scheduler cannot be reached.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError("--dask_scheduler needs the 'distributed' package: "
                           "pip install 'imagenet-db[cluster]'") from None
    _quiet_cluster_logs()
    client = _connect(address, timeout)
    try:
        yield DaskExecutor(client, address, timeout)
    finally:
        try:
            client.close(timeout=min(timeout, 10.0))
        except Exception:  # noqa: BLE001 (a dead cluster cannot be closed cleanly)
            pass
