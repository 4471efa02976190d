"""LMDB output: Caffe Datums in an LMDB environment, as Caffe 1.0 creates and reads it.

A directory with data.mdb/lock.mdb (Caffe's layout, not MDB_NOSUBDIR). Keys arrive in
ascending byte order, so puts use MDB_APPEND (dense pages, ~2.5x faster). The LMDB map size
grows by itself: before a put that could overflow the map, the open transaction is committed
and the map doubled, so the user never sees MDB_MAP_FULL; transaction boundaries do not change
the stored bytes. No ``writemap`` (it would make data.mdb as large as the map size).
Puts are committed every ``batch_size`` puts (1,000 as in convert_imageset) or ``batch_bytes``
bytes (``TXN_BYTES``, 32 MiB: ~160 raw 256x256 datums), whichever comes first. Small
transactions measured faster end to end than 128 MiB ones (2,000 images, 4 interleaved runs
each: 1.80-2.21 s against 2.23-2.67 s): the transaction's pages are reused from the heap while
still in the CPU caches, and the last commit, which no decode overlaps, is short. Every commit
is made durable (fsync of data.mdb): by default in the background (``engine.durable``): the
commit itself does not sync (MDB_NOSYNC) and a thread flushes it while the next transaction
fills, at most one flush in flight, so the writer's CPU and the disk overlap instead of adding
(writer alone, development VM: 0.33-0.41 -> 0.15-0.25 ms per raw 256x256 datum). A killed
build loses nothing committed (the kernel writes the pages out); ``--resume`` redoes the rest
(a build also loses the records queued for the writing thread, at most 64 MiB: see
``engine.writer``). After a power loss or OS crash the unsynced transactions may be damaged:
the build directory's boot-id marker (``engine.durable.UnsyncedMarker``) makes a resume refuse
(rebuild with --overwrite). ``background_sync=False``: the fsync inside each commit, as before
(the meta page without its own fsync, MDB_NOMETASYNC: after a power loss at most the last
transaction is lost). ``sync_commits=False`` (MDB_NOSYNC, no flush until close) is for
benchmarks: a power loss could damage ``DB.partial``. After each durable commit the pages written are dropped from the page cache
(``LmdbWriter._drop_written_pages``). glibc's malloc is tuned so that transaction memory is
reused rather than page-faulted anew each commit (``engine.heap``). A write that fails (disk
full, file-size limit) raises DatabaseError; what was committed before stays intact.
"""
import os
from typing import Iterator, Optional, Tuple

import lmdb

from imagenet_db.engine.durable import BackgroundSync, UnsyncedMarker, background_sync_available
from imagenet_db.errors import DatabaseError
from imagenet_db.outputs.datumdb import DatumWriter
from imagenet_db.engine.heap import keep_freed_heap

INITIAL_MAP_SIZE = 1 << 30  # 1 GiB; doubled as needed
TXN_BYTES = 32 << 20  # bytes of values per transaction at most (see the module docstring)


class LmdbWriter(DatumWriter):
    """Append-only LMDB writer with automatic map-size growth.

    path: directory to create the environment in (created if missing); an existing
    environment is opened and appended to (``last_key`` is its last committed key).
    Keys must be put in strictly ascending byte order (raises DatabaseError otherwise).
    Values: bytes-like (bytes, bytearray, memoryview, 1-D uint8 ndarray). sync_commits: make
    every commit durable (default; False: only once, in close()). background_sync (None =
    where available, ``engine.durable``): commits do not wait for their fsync; a thread flushes
    each while the next transaction fills (at most one flush in flight). Raises DatabaseError
    when the directory holds unsynced commits of an earlier boot (power loss).
    """

    name = "lmdb"
    description = "Caffe Datum LMDB (Caffe's default backend)"
    verify_accepts = "LMDB"
    read_in_child = True  # a damaged data.mdb can SIGBUS its reader (verify.verify_db)
    max_key_bytes = 511  # MDB_MAXKEYSIZE of a default LMDB build (mdb_env_get_maxkeysize)

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = TXN_BYTES,
                 map_size: int = INITIAL_MAP_SIZE, sync_commits: bool = True,
                 background_sync: Optional[bool] = None):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        self.sync_commits = sync_commits
        if background_sync is None:
            background_sync = background_sync_available()
        self._data_fd: Optional[int] = None  # data.mdb, read-only: for posix_fadvise only
        self._marker = UnsyncedMarker(path)
        self._marker.check()
        keep_freed_heap()
        try:
            self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=True, max_dbs=0,
                                 lock=True, sync=sync_commits and not background_sync,
                                 metasync=False)
        except lmdb.Error as exc:
            raise DatabaseError(f"{path}: cannot create LMDB: {exc}") from None
        self._syncer: Optional[BackgroundSync] = None
        if sync_commits and background_sync:
            self._marker.set()
            self._syncer = BackgroundSync(self._sync_to_disk, self._drop_written_pages)
        self.page_size = self.env.stat()["psize"]
        self.txn = None
        self.pending_puts = 0
        self.pending_bytes = 0
        with self.env.begin() as txn:
            cursor = txn.cursor()
            self.last_key: Optional[bytes] = bytes(cursor.key()) if cursor.last() else None

    def _pages_for(self, key: bytes, value: bytes) -> int:
        # a value too large for a leaf lives on its own overflow pages (+1 for its page header,
        # +1 for a share of leaf/branch pages): a safe over-estimate
        return (len(key) + len(value) + 64) // self.page_size + 2

    def _used_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.page_size

    def put(self, key: bytes, value: bytes) -> None:
        """Add one (key, value); keys must ascend. Commits every ``batch_size`` puts or
        ``batch_bytes``; raises DatabaseError on a failed write (disk full) or an out-of-order
        key."""
        if self.last_key is not None and key <= self.last_key:
            raise DatabaseError(f"{self.path}: key {key!r} is not after {self.last_key!r}")
        need = self._pages_for(key, value) * self.page_size
        if self.txn is not None and self.pending_bytes + need > self.batch_bytes:
            self.commit()
        if self.txn is None:
            self._reserve(need)
            self.txn = self.env.begin(write=True)
        try:
            stored = self.txn.put(key, value, append=True)
        except lmdb.Error as exc:
            raise DatabaseError(f"{self.path}: LMDB put failed: {exc}") from None
        if not stored:  # MDB_KEYEXIST: the database holds this key or a later one
            raise DatabaseError(f"{self.path}: LMDB refused key {key[:60]!r}: the database "
                                f"already holds it or a later key (written by another "
                                f"process?)")
        self.last_key = key
        self.pending_puts += 1
        self.pending_bytes += need
        if self.pending_puts >= self.batch_size:
            self.commit()

    def _reserve(self, need: int) -> None:
        """Grow the map (no transaction open) so that a full batch after ``need`` fits."""
        map_size = self.env.info()["map_size"]
        want = self._used_bytes() + 2 * (self.batch_bytes + need)
        if want > map_size:
            while map_size < want:
                map_size *= 2
            self.env.set_mapsize(map_size)

    def commit(self) -> None:
        """Commit the open transaction (if any); data put so far is then durable (with
        background sync: once the flush this starts is done; it waits for the previous
        flush). Raises DatabaseError (e.g. disk full); the transaction is then dropped."""
        if self.txn is not None:
            txn, self.txn = self.txn, None
            self.pending_puts = self.pending_bytes = 0
            try:
                txn.commit()
            except lmdb.Error as exc:
                hint = ""
                if "Input/output error" in str(exc):  # LMDB reports a short write as EIO
                    hint = " (a short write: is the disk full or a file-size limit reached?)"
                raise DatabaseError(f"{self.path}: LMDB commit failed: {exc}{hint}") from None
            if self._syncer is not None:
                self._syncer.request(self.last_key)
            elif self.sync_commits:
                self._drop_written_pages()

    def _sync_to_disk(self) -> None:
        """fsync data.mdb (the background flush); DatabaseError when the disk refuses."""
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            raise DatabaseError(f"{self.path}: LMDB sync to disk failed: {exc}") from None

    @property
    def sync_wait_seconds(self) -> float:
        """Seconds the writing thread waited for fsyncs (background flushes; 0 without)."""
        return self._syncer.wait_seconds if self._syncer is not None else 0.0

    def _drop_written_pages(self) -> None:
        """Ask the kernel to drop data.mdb's pages from the page cache once they are on disk
        (``posix_fadvise(POSIX_FADV_DONTNEED)`` after the commit's fsync; pages LMDB has
        mapped, e.g. its branch pages, stay). A 150-250 GB build then does not push everything
        else out of the page cache, and the next commit's pages come from memory just freed
        rather than from reclaim: the writing thread's CPU fell from ~0.19 to ~0.13 ms per raw
        256x256 datum on the development VM. Best effort: skipped where unsupported."""
        if not hasattr(os, "posix_fadvise"):
            return
        try:
            if self._data_fd is None:
                self._data_fd = os.open(os.path.join(self.path, "data.mdb"), os.O_RDONLY)
            os.posix_fadvise(self._data_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    def _close_data_fd(self) -> None:
        if self._data_fd is not None:
            os.close(self._data_fd)
            self._data_fd = None

    def entries(self) -> int:
        """Number of committed entries."""
        return self.env.stat()["entries"]

    def items(self, start: bytes = b"") -> Iterator[Tuple[bytes, bytes]]:
        """Committed (key, value) pairs with key >= ``start``, in key order."""
        with self.env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            if cursor.set_range(start):
                yield from cursor

    def close(self) -> None:
        """Commit, flush the database to disk (fsync) and close the environment."""
        try:
            self.commit()
            self._stop_syncer()
            self._sync_to_disk()
            self._marker.clear()
        finally:
            self._stop_syncer()
            self._close_data_fd()
            self.env.close()

    def _stop_syncer(self) -> None:
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.close()

    def abort(self) -> None:
        """Drop the open transaction and close (what was committed stays)."""
        txn, self.txn = self.txn, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass
        try:  # what was committed stays, and reaches the disk before the marker goes
            self._stop_syncer()
            self._sync_to_disk()
            self._marker.clear()
        except DatabaseError:
            pass
        finally:
            self._close_data_fd()
            self.env.close()

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds data.mdb."""
        return os.path.isfile(os.path.join(path, "data.mdb"))
