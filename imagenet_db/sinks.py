"""Database sinks and readers: LMDB and LevelDB as Caffe 1.0 creates and reads them.

Writers take (key, value) pairs in key order and commit every ``batch_size`` puts (1,000 as
in convert_imageset) or ``batch_bytes`` bytes, whichever comes first.

LMDB: a directory with data.mdb/lock.mdb (Caffe's layout, not MDB_NOSUBDIR). Keys arrive in
ascending byte order, so puts use MDB_APPEND (dense pages, ~2.5x faster). The LMDB map size
grows by itself: before a put that could overflow the map, the open transaction is committed
and the map doubled, so the user never sees MDB_MAP_FULL; transaction boundaries do not change
the stored bytes. No ``writemap`` (it would make data.mdb as large as the map size).
Commits are not fsync'ed one by one (MDB_NOSYNC): ``close()`` flushes the whole database to
disk once, before the pipeline publishes it. A killed or interrupted process keeps every
committed transaction (they are in the OS page cache); only an OS crash or power loss during
the build can lose or damage the unfinished ``DB.partial``. ``sync_commits=True`` fsyncs every
commit as Caffe does (measured here: about half the write rate). glibc's malloc is tuned so that
transaction memory is reused rather than page-faulted anew each commit (imagenet_db.heap).

LevelDB: opened with Caffe's options (block_size 64 KiB, write_buffer_size 256 MiB,
max_open_files 100, snappy compression), written in WriteBatches.
"""
import os
from typing import Iterator, Optional, Tuple

import lmdb
import plyvel

from imagenet_db.errors import DatabaseError
from imagenet_db.heap import keep_freed_heap

BACKENDS = ("lmdb", "leveldb")
INITIAL_MAP_SIZE = 1 << 30  # 1 GiB; doubled as needed
LEVELDB_OPTIONS = dict(block_size=65536, write_buffer_size=268435456, max_open_files=100)


class LmdbWriter:
    """Append-only LMDB writer with automatic map-size growth.

    path: directory to create the environment in (created if missing).
    Keys must be put in strictly ascending byte order (raises DatabaseError otherwise).
    Values: bytes-like (bytes, bytearray, memoryview). sync_commits: fsync every commit
    (default: once, in close()).
    """

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = 128 << 20,
                 map_size: int = INITIAL_MAP_SIZE, sync_commits: bool = False):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        keep_freed_heap()
        try:
            self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False,
                                 max_dbs=0, lock=True, sync=sync_commits)
        except lmdb.Error as exc:
            raise DatabaseError(f"{path}: cannot create LMDB: {exc}") from None
        self.page_size = self.env.stat()["psize"]
        self.txn = None
        self.pending_puts = 0
        self.pending_bytes = 0
        self.last_key: Optional[bytes] = None

    def _pages_for(self, key: bytes, value: bytes) -> int:
        # a value too large for a leaf lives on its own overflow pages (+1 for its page header,
        # +1 for a share of leaf/branch pages): a safe over-estimate
        return (len(key) + len(value) + 64) // self.page_size + 2

    def _used_bytes(self) -> int:
        return (self.env.info()["last_pgno"] + 1) * self.page_size

    def put(self, key: bytes, value: bytes) -> None:
        if self.last_key is not None and key <= self.last_key:
            raise DatabaseError(f"{self.path}: key {key!r} is not after {self.last_key!r}")
        need = self._pages_for(key, value) * self.page_size
        if self.txn is not None and self.pending_bytes + need > self.batch_bytes:
            self.commit()
        if self.txn is None:
            self._reserve(need)
            self.txn = self.env.begin(write=True)
        try:
            self.txn.put(key, value, append=True)
        except lmdb.Error as exc:
            raise DatabaseError(f"{self.path}: LMDB put failed: {exc}") from None
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
        """Commit the open transaction (if any); data put so far is then durable."""
        if self.txn is not None:
            try:
                self.txn.commit()
            except lmdb.Error as exc:
                raise DatabaseError(f"{self.path}: LMDB commit failed: {exc}") from None
            self.txn = None
            self.pending_puts = self.pending_bytes = 0

    def close(self) -> None:
        """Commit, flush the database to disk (fsync) and close the environment."""
        self.commit()
        try:
            self.env.sync(True)
        except lmdb.Error as exc:
            raise DatabaseError(f"{self.path}: LMDB sync to disk failed: {exc}") from None
        self.env.close()

    def abort(self) -> None:
        """Drop the open transaction and close (what was committed stays)."""
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        self.env.close()


class LevelDbWriter:
    """LevelDB writer with Caffe's options; puts are grouped in WriteBatches."""

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = 128 << 20):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        try:
            self.db = plyvel.DB(path, create_if_missing=True, **LEVELDB_OPTIONS)
        except plyvel.Error as exc:
            raise DatabaseError(f"{path}: cannot create LevelDB: {exc}") from None
        self.batch = None
        self.pending_puts = self.pending_bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        if self.batch is None:
            self.batch = self.db.write_batch()
        self.batch.put(key, value)
        self.pending_puts += 1
        self.pending_bytes += len(key) + len(value)
        if self.pending_puts >= self.batch_size or self.pending_bytes >= self.batch_bytes:
            self.commit()

    def commit(self) -> None:
        """Write the pending batch (LevelDB's log makes it durable across a crash)."""
        if self.batch is not None:
            self.batch.write()
            self.batch = None
            self.pending_puts = self.pending_bytes = 0

    def close(self) -> None:
        self.commit()
        self.db.close()

    def abort(self) -> None:
        self.batch = None
        self.db.close()


def open_writer(backend: str, path: str, **kwargs):
    """A writer for ``backend`` ('lmdb' or 'leveldb') creating the database at ``path``."""
    if backend == "lmdb":
        return LmdbWriter(path, **kwargs)
    if backend == "leveldb":
        return LevelDbWriter(path, **kwargs)
    raise DatabaseError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def detect_backend(path: str) -> Optional[str]:
    """'lmdb' if ``path`` holds data.mdb, 'leveldb' if it holds a CURRENT file, else None."""
    if os.path.isfile(os.path.join(path, "data.mdb")):
        return "lmdb"
    if os.path.isfile(os.path.join(path, "CURRENT")):
        return "leveldb"
    return None


def iterate_db(path: str, backend: Optional[str] = None) -> Iterator[Tuple[bytes, bytes]]:
    """Yield (key, value) pairs of an existing LMDB or LevelDB in key order, read-only.

    backend: 'lmdb', 'leveldb', or None to detect from the files. Raises DatabaseError when
    ``path`` is not a database of that backend.
    """
    found = detect_backend(path)
    if not os.path.isdir(path):
        raise DatabaseError(f"{path}: no such database directory")
    if backend is None:
        backend = found
    if backend is None or (found is not None and found != backend):
        what = f"a {found} database" if found else "neither an LMDB nor a LevelDB database"
        raise DatabaseError(f"{path}: is {what}" + (f", not {backend}" if backend else ""))
    if backend == "lmdb":
        try:
            env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        except lmdb.Error as exc:
            raise DatabaseError(f"{path}: cannot open as LMDB: {exc}") from None
        try:
            with env.begin(buffers=False) as txn:
                yield from txn.cursor()
        finally:
            env.close()
    elif backend == "leveldb":
        try:
            db = plyvel.DB(path, create_if_missing=False)
        except plyvel.Error as exc:
            raise DatabaseError(f"{path}: cannot open as LevelDB: {exc}") from None
        try:
            yield from db.iterator()
        finally:
            db.close()
    else:
        raise DatabaseError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def count_entries(path: str, backend: Optional[str] = None) -> int:
    """Number of entries in a database (LMDB: from its stats, LevelDB: by iterating)."""
    backend = backend or detect_backend(path)
    if backend == "lmdb":
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        try:
            return env.stat()["entries"]
        finally:
            env.close()
    return sum(1 for _ in iterate_db(path, backend))
