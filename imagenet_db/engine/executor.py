"""Executors: run the per-record transform on all cores and hand results back in list order.

``ordered_map(fn, items, workers)`` yields ``fn(item)`` for every item, in the items' order,
computing ahead on a pool of worker threads. Threads suffice because the heavy steps (file
reads, OpenCV decode/resize/encode) release the GIL, and results (the ~197 KB serialized
Datums) then reach the writer without being pickled or copied between processes. Order is
preserved, so the database bytes do not depend on the number of workers.

Items go to the workers in chunks (``chunk`` items per task, 8 for threads): one future, one
queue hand-off and one wake-up per chunk rather than per image. Memory stays bounded: at most
``window`` items are in flight (default 32 per worker), enough for the workers to run on while
the writer is busy (the writer commits on its own thread, ``engine.writer``).

For a cluster, ``dask_executor(address)`` hands the same work to the workers of an existing
Dask (dask.distributed) cluster: chunks of 32 records per task (a scheduler round trip costs
about a millisecond, an image about one), results fetched straight from the workers
(``direct_to_workers``) and consumed in list order, so the database is the same as a local
build. Results cross as pickle protocol 5 frames: a raw Datum travels once, as one buffer (see
``outputs.base.Encoded``). The records' loaders and the transform are plain picklable
objects; the image files (or archives) must be readable at the same paths on every Dask
worker (a shared filesystem). A worker that dies mid-task has its chunks rerun elsewhere by
the scheduler; the transform is deterministic, so the database does not change.
"""
import contextlib
import itertools
import os
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, TypeVar

from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs.heap import keep_freed_heap

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Number of cores this process may use (sched_getaffinity where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


THREAD_CHUNK = 8     # records per task on local threads
CLUSTER_CHUNK = 32   # records per task on a Dask cluster
CLUSTER_WINDOW_MAX = 2048  # records in flight on a cluster at most (~400 MB of 256x256 raw datums)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: Optional[int] = None,
                window: Optional[int] = None, executor: Optional[Executor] = None,
                chunk: Optional[int] = None) -> Iterator[R]:
    """Yield fn(item) for each item, in order, computed by ``workers`` threads.

    workers: thread count (None = all cores; 1 = run inline in the calling thread).
    window: most items computed ahead of the consumer (default 32 per worker thread, or
    64 per cluster thread up to CLUSTER_WINDOW_MAX). chunk: items per task (default 8 on threads, 32 on a cluster).
    executor: an existing concurrent.futures Executor to submit to instead of a thread pool
    (e.g. ``dask_executor``'s); then fn and the items must be picklable.
    An exception raised by fn propagates to the consumer at that item's position.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    if executor is not None:
        chunk = chunk or CLUSTER_CHUNK
        threads = getattr(executor, "threads", 0) or 8
        window = window or min(64 * threads, CLUSTER_WINDOW_MAX)
        yield from _windowed(executor, _Chunk(fn), items, chunk, window)
        return
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imagenet-db") as pool:
        yield from _windowed(pool, _Chunk(fn), items, chunk or THREAD_CHUNK,
                             window or 32 * workers)


class _Chunk:
    """fn over a list of items; an item's exception is returned in its place (picklable)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, items: list) -> list:
        keep_freed_heap()  # on a cluster worker too: reuse, not re-fault, large image buffers
        out = []
        for item in items:
            try:
                out.append(self.fn(item))
            except Exception as exc:  # noqa: BLE001 (raised again at the consumer)
                out.append(_Raised(exc))
        return out


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception):
        self.exc = exc


def _windowed(pool: Executor, run: _Chunk, items, chunk: int, window: int):
    pending: deque = deque()
    ahead = max(1, window // chunk)
    iterator = iter(items)
    try:
        while True:
            part = list(itertools.islice(iterator, chunk))
            if part:
                pending.append(pool.submit(run, part))
            if pending and (len(pending) >= ahead or not part):
                for result in pending.popleft().result():
                    if isinstance(result, _Raised):
                        raise result.exc
                    yield result
            elif not part:
                return
    finally:
        for future in pending:
            future.cancel()


class _DaskExecutor:
    """submit() onto a Dask client; ``threads``: the cluster's worker threads at the start."""

    def __init__(self, client):
        self.client = client
        self.threads = sum(client.nthreads().values())

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)


@contextlib.contextmanager
def dask_executor(address: str, timeout: float = 30.0):
    """Context manager giving an executor (``submit(fn, *args)`` -> future, ``threads``) on the
    Dask cluster whose scheduler listens at ``address`` (e.g. 'tcp://10.0.0.5:8786'), closed
    on exit; ``timeout`` is the connection timeout in seconds. Pass it as ``executor`` to
    ``ordered_map`` / ``BuildOptions``.

    Needs the optional 'distributed' package (pip install 'imagenet-db[cluster]'); raises
    ImagenetDbError when it is missing or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImagenetDbError("--dask_scheduler needs the 'distributed' package: "
                              "pip install 'imagenet-db[cluster]'") from None
    try:
        client = Client(address, timeout=f"{timeout}s", direct_to_workers=True)
    except (OSError, TimeoutError) as exc:
        raise ImagenetDbError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        yield _DaskExecutor(client)
    finally:
        client.close()
