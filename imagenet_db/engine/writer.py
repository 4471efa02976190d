"""The writing thread: observers and output.add in list order, commits off the workers' path.

The pipeline's calling thread hands each encoded record to ``WriterThread.add`` and goes
straight back to collecting results; a thread of its own runs, in list order, what the loop
used to run inline: every observer's ``add`` (the mean, --check_size), ``output.add`` (which
commits every ``txn_size`` records), and after each commit the observers' ``committed``
(checkpoints). So an LMDB commit's fsync (~0.05 s for a 32 MiB transaction of ~160 raw
256x256 datums on the development VM's disk) no longer holds up the hand-off, and the workers
keep decoding.

The output sees exactly the calls it saw before, in the same order, with the same commit
boundaries: its files are byte-identical to a build without the thread (checked for LMDB's
data.mdb in tests/test_performance_paths.py). Every LMDB write transaction is begun, filled,
committed or aborted on this one thread (LMDB ties a write transaction to its thread).

Memory: at most ``max_bytes`` (64 MiB) of values wait in the queue; ``add`` blocks beyond
that. Durability: a commit is durable when it returns, as before; a crash loses what was not
committed yet, i.e. the transaction being filled or committed plus the queue behind it (both
bounded as above); ``--resume`` redoes them from the last committed record.

Stopping (Ctrl-C): ``stop()`` drops what is queued and ends the batch being written after the
current record; ``close()`` then commits what reached the output (``written`` records, the
last being ``last_index``), so a stop takes one commit, not the whole queue.

Errors: an exception on the thread (disk full, a size mismatch under --check_size) stops the
writing at that record; the next ``add`` or ``close`` raises it on the calling thread, and the
output stays open for the caller to ``close`` (commit what came before) or ``abort``.
"""
import threading
from collections import deque
from typing import Sequence

MAX_QUEUED_BYTES = 64 << 20
_RELEASE_STEP = 8 << 20  # the thread gives back queue room in steps of this many bytes


class WriterThread:
    """Runs observers + ``output.add`` for encoded records on a thread of its own.

    output: an ``outputs.base.Output``; observers: ``observers.base.Observer``s (their ``add``
    runs before the record is stored, ``committed(build_dir, last_index)`` after each commit).
    """

    def __init__(self, output, observers: Sequence = (), build_dir: str = "",
                 max_bytes: int = MAX_QUEUED_BYTES):
        self.output, self.observers, self.build_dir = output, list(observers), build_dir
        self.max_bytes = max_bytes
        self._queue: deque = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._error = None          # an exception on the thread, not yet raised to the caller
        self._command = None        # 'close' or 'abort': the thread's last act
        self._command_error = None  # what output.close()/abort() raised
        self._busy = self._idle = self._waiting = self._stopping = False
        self.written = 0          # records that reached output.add
        self.last_index = None    # the index of the last of them
        self._thread = threading.Thread(target=self._run, name="imagenet-db-writer", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- calling thread
    def add(self, record, encoded) -> None:
        """Queue one encoded record (blocks while ``max_bytes`` are queued); raises the
        thread's error, if one happened."""
        size = len(encoded.value)
        with self._cond:
            while (self._queued_bytes and self._queued_bytes + size > self.max_bytes
                   and self._error is None):
                self._waiting = True
                self._cond.wait()
            self._raise_pending()
            self._queue.append((record, encoded))
            self._queued_bytes += size
            if self._idle:
                self._cond.notify_all()

    def close(self, interrupted=None) -> None:
        """Write everything queued, then close the output (commit + flush to disk).
        interrupted: a callable checked while waiting; once it returns True, ``stop()``.
        If the thread failed (now or earlier) and that error was not raised yet, raise it
        instead and leave the output open; a second ``close`` then commits what was added
        before the failing record, as the loop without a thread did."""
        with self._cond:
            while (self._queue or self._busy) and self._error is None:
                if interrupted is not None and not self._stopping and interrupted():
                    self._stop_locked()
                    continue
                self._waiting = True
                self._cond.wait(0.05 if interrupted is not None else None)
            self._raise_pending()
        self._finish("close")

    def stop(self) -> None:
        """Drop what is queued; the thread stops after the record it is storing."""
        with self._cond:
            self._stop_locked()

    def _stop_locked(self) -> None:
        self._stopping = True
        self._queue.clear()
        self._queued_bytes = 0
        self._cond.notify_all()

    def abort(self) -> None:
        """Drop what is queued and abort the output (what was committed stays)."""
        with self._cond:
            self._queue.clear()
            self._queued_bytes = 0
            self._error = None
        self._finish("abort")

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _finish(self, command: str) -> None:
        with self._cond:
            if self._command is None:
                self._command = command
            self._cond.notify_all()
        self._thread.join()
        error, self._command_error = self._command_error, None
        if error is not None:
            raise error

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._command is None:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if self._command is not None and not self._queue:
                    break
                batch, self._queue = self._queue, deque()
                self._busy = True
            self._write(batch)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        try:
            if self._command == "close":
                self.output.close()
            else:
                self.output.abort()
        except BaseException as exc:  # noqa: BLE001 (raised on the calling thread)
            self._command_error = exc

    def _write(self, batch: deque) -> None:
        output, observers, done = self.output, self.observers, 0
        try:
            for record, encoded in batch:
                if self._stopping:
                    break
                for observer in observers:  # before the put: a size mismatch stops before it
                    observer.add(record, encoded)
                output.add(record, encoded)
                self.written += 1
                self.last_index = record.index
                if output.pending == 0:
                    for observer in observers:
                        observer.committed(self.build_dir, record.index)
                done += len(encoded.value)
                if done >= _RELEASE_STEP:
                    self._release(done)
                    done = 0
            self._release(done)
        except BaseException as exc:  # noqa: BLE001 (raised on the calling thread)
            with self._cond:
                self._error = exc
                self._queue.clear()
                self._queued_bytes = 0
                self._cond.notify_all()

    def _release(self, size: int) -> None:
        with self._cond:
            self._queued_bytes -= size
            if self._waiting:
                self._waiting = False
                self._cond.notify_all()
