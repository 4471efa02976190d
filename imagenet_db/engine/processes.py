"""Local worker processes (``--processes``): the per-record Python work past the GIL.

Threads suffice while OpenCV's decode and resize dominate (they release the GIL). For tiny
images and for ``--encoded`` pass-through the per-record Python work (header checks, the Datum,
the CRC) is the limit, and it runs on one interpreter. ``process_executor(workers)`` gives
``ordered_map`` a pool of ``workers`` processes instead: chunks of ``PROCESS_CHUNK`` records
go out pickled (a ``Record`` is its relpath, label and loader: the path), each chunk's results
come back as one pickled buffer (``outputs.packed.PackedResults``: the values concatenated, not
one object per record), in list order, so the output is byte-identical to a threaded build.

The workers are forked when the executor is made (all of them at once, before the build
starts its writing thread or opens its database; so make the executor first, as the CLI
does): they start at once, with everything imported (a fork server that imports OpenCV
and numpy took 1-8 s on the loaded development VM, longer than a 20,000-image build's gain).
They ignore SIGINT (Ctrl-C reaches the whole process group; the build's own handler stops
it, ``engine.graceful``) and are shut down when the context ends. A worker that dies (killed, out of memory) ends the build with ``WorkerLost`` after
the records before it are committed; ``--resume`` continues.
"""
import concurrent.futures
import contextlib
import multiprocessing
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Optional

from imagenet_db.engine.executor import POLL_SECONDS, ClusterError, _Stopped, default_workers
from imagenet_db.engine.heap import keep_freed_heap

PROCESS_CHUNK = 32      # records per task (one pickled buffer each way)
PROCESS_WINDOW = 256    # records in flight per worker process


class WorkerLost(ClusterError):
    """A worker process of --processes died (killed, out of memory); the build commits what
    came before and says how to resume (as for a lost cluster)."""
    resume_where = ""


def _start_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_heap()


class ProcessExecutor:
    """An Executor for ``ordered_map`` on ``workers`` local processes, forked at once (see the
    module).
    ``threads``, ``chunk`` and ``window`` size the map; results come back packed when the
    mapped function says how (``RecordJob.pack``, see ``ordered_map``)."""

    def __init__(self, workers: int):
        self.threads = workers
        self.chunk = PROCESS_CHUNK
        self.window = PROCESS_WINDOW * workers
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_start_worker)
        self.pool.submit(int).result()  # starts every worker now, before the build's threads

    def submit(self, fn, *args):
        """A concurrent.futures Future of fn(*args) on a worker process."""
        try:
            return self.pool.submit(fn, *args)
        except BrokenProcessPool:
            raise WorkerLost(_LOST) from None

    def wait(self, future, stop: Optional[Callable[[], bool]] = None):
        """The future's result, waited for in slices (a ``stop`` request ends the map)."""
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                if stop is not None and stop():
                    raise _Stopped from None
            except BrokenProcessPool:
                raise WorkerLost(_LOST) from None

    def drop(self, futures) -> None:
        """Cancel the futures not started yet."""
        for future in futures:
            future.cancel()
        futures.clear()


_LOST = "a worker process of --processes died (killed, or out of memory?)"


@contextlib.contextmanager
def process_executor(workers: Optional[int] = None):
    """Context manager giving a ``ProcessExecutor`` of ``workers`` processes (None = all
    cores), shut down on exit (pending work cancelled)."""
    executor = ProcessExecutor(default_workers() if workers is None else max(1, int(workers)))
    try:
        yield executor
    finally:
        executor.pool.shutdown(wait=True, cancel_futures=True)
