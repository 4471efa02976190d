"""Commits made durable in the background: the writer fills the next transaction while the disk
flushes the last one (issue 23, target 2).

A database whose every commit waits for its fsync adds the writer's CPU and the disk's time:
on the development VM ~0.13-0.18 ms CPU + ~0.28 ms fsync per raw 256x256 datum. With
``BackgroundSync`` the output commits without syncing (LMDB's MDB_NOSYNC) and asks this
thread to flush (``request``); the next transaction's puts run meanwhile. At most one flush is
in flight: the commit after it waits for it (``wait_seconds`` counts that wait), so unsynced
data stays bounded by one transaction (32 MiB) and wall time ~ max(CPU, fsync) per datum.

Crash safety. A killed process (SIGKILL, OOM, a crash) loses nothing committed: the kernel
holds the unsynced pages and writes them out, so ``--resume`` continues after the last commit
exactly as before. A power loss or OS crash can leave the transactions after the last flush
half on disk, which no reader could notice. So while unsynced commits may exist, the build
directory holds ``imagenet_db.unsynced`` with the kernel's boot id (``UnsyncedMarker``),
removed after the final flush; a build that finds the marker of an earlier boot refuses to
resume (DatabaseError: rebuild with --overwrite). Where the boot id is unknown (not Linux)
outputs keep syncing every commit (``background_sync_available``).

Test hook: when the environment variable ``IMAGENET_DB_TEST_HOLD_SYNC`` names a FIFO, each
flush first reads that FIFO to its end, so a test can hold a build inside a background flush
(by not writing yet) and kill it there, without racing it.
"""
import os
import threading
import time
from typing import Callable, Optional

from imagenet_db.errors import DatabaseError

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
MARKER_NAME = "imagenet_db.unsynced"
HOLD_ENV = "IMAGENET_DB_TEST_HOLD_SYNC"


def boot_id() -> Optional[str]:
    """The running kernel's boot id (a UUID, new at every boot), or None where unknown."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def background_sync_available() -> bool:
    """True where a power loss can be told from a kill (the boot id is known)."""
    return boot_id() is not None


class UnsyncedMarker:
    """``DIR/imagenet_db.unsynced``: "this boot may have unsynced commits in DIR" (see module)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, MARKER_NAME)

    def check(self) -> None:
        """Raise DatabaseError when an earlier boot left unsynced commits in the directory."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                found = f.read().strip()
        except OSError:  # none (or no directory yet: the database reports that)
            return
        if found != boot_id():
            raise DatabaseError(f"{os.path.dirname(self.path)}: the machine restarted (power "
                                f"loss or OS crash) while this build had commits not yet on "
                                f"disk; its last transactions may be damaged: pass --overwrite "
                                f"to build it again")

    def set(self) -> None:
        """Write the marker (this boot's id) and make it durable before any unsynced commit."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{boot_id()}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Remove the marker (after the final flush)."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


class BackgroundSync:
    """A thread running ``sync()`` (e.g. ``lmdb.Environment.sync``) after each ``request``.

    sync: flushes everything committed so far to disk (raises on failure); after_sync: called
    on the thread after each successful flush (e.g. dropping written pages from the cache).
    ``durable`` is the token of the last request whose flush finished; ``wait_seconds`` the
    time callers waited for flushes; ``sync_seconds`` the time flushes took. A flush's error
    is raised (as it came) by the next ``request``, ``flush`` or ``close``.
    """

    def __init__(self, sync: Callable[[], None], after_sync: Callable[[], None] = lambda: None):
        self.sync, self.after_sync = sync, after_sync
        self.durable = None
        self.wait_seconds = self.sync_seconds = 0.0
        self._pending = None  # (token,) while a flush is asked for or running
        self._error: Optional[BaseException] = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="imagenet-db-sync", daemon=True)
        self._thread.start()

    def request(self, token) -> None:
        """After a commit: wait for the flush in flight (if any), then flush up to ``token``."""
        with self._cond:
            self._wait_idle()
            self._pending = (token,)
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every requested flush is done; raise a flush's error."""
        with self._cond:
            self._wait_idle()

    def close(self) -> None:
        """``flush``, then end the thread (also when the flush failed)."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()

    def _wait_idle(self) -> None:
        start = time.perf_counter()
        while self._pending is not None and self._error is None:
            self._cond.wait()
        self.wait_seconds += time.perf_counter() - start
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return
                token = self._pending[0]
            start = time.perf_counter()
            try:
                _hold_for_test()
                self.sync()
                self.after_sync()
            except BaseException as exc:  # noqa: BLE001 (raised on the calling thread)
                with self._cond:
                    self._error, self._pending = exc, None
                    self._cond.notify_all()
                continue
            with self._cond:
                self.sync_seconds += time.perf_counter() - start
                self.durable, self._pending = token, None
                self._cond.notify_all()


def _hold_for_test() -> None:
    """Read the FIFO named by IMAGENET_DB_TEST_HOLD_SYNC to its end (test hook, see module)."""
    fifo = os.environ.get(HOLD_ENV)
    if fifo:
        with open(fifo, "rb") as f:
            f.read()
