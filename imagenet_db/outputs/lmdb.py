"""Database sinks and readers: LMDB and LevelDB as Caffe 1.0 creates and reads them.

Writers take (key, value) pairs in key order and commit every ``batch_size`` puts (1,000 as
in convert_imageset) or ``batch_bytes`` bytes, whichever comes first.

LMDB: a directory with data.mdb/lock.mdb (Caffe's layout, not MDB_NOSUBDIR). Keys arrive in
ascending byte order, so puts use MDB_APPEND (dense pages, ~2.5x faster). The LMDB map size
grows by itself: before a put that could overflow the map, the open transaction is committed
and the map doubled, so the user never sees MDB_MAP_FULL; transaction boundaries do not change
the stored bytes. No ``writemap`` (it would make data.mdb as large as the map size).
Every commit is durable (fsync of the data pages; the meta page is written without its own
fsync, MDB_NOMETASYNC): after an OS crash or power loss the database is intact and at most the
last transaction is lost, which ``--resume`` redoes. ``sync_commits=False`` (MDB_NOSYNC)
drops the per-commit fsync: ~2x the rate of the writer alone, no measurable difference end to
end here (decoding is the limit), but a power loss could then damage ``DB.partial``.
glibc's malloc is tuned so that
transaction memory is reused rather than page-faulted anew each commit (imagenet_db.outputs.heap).

LevelDB: opened with Caffe's options (block_size 64 KiB, write_buffer_size 256 MiB,
max_open_files 100, snappy compression), written in WriteBatches with ``sync`` (each batch is
on disk when ``commit`` returns, like an LMDB commit).

Resuming: both writers open an existing database and continue after its last key
(``last_key``); ``items(start)`` and ``entries()`` read back what is committed. A write that
fails (disk full, file-size limit) raises DatabaseError; what was committed before stays intact.
"""
import os
from typing import Iterator, Optional, Tuple

import lmdb
import plyvel

from imagenet_db.errors import DatabaseError
from imagenet_db.outputs.heap import keep_freed_heap

BACKENDS = ("lmdb", "leveldb")
INITIAL_MAP_SIZE = 1 << 30  # 1 GiB; doubled as needed
LEVELDB_OPTIONS = dict(block_size=65536, write_buffer_size=268435456, max_open_files=100)


def _error_text(exc: Exception) -> str:
    """The message of an lmdb/plyvel error as text (plyvel gives bytes)."""
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


class LmdbWriter:
    """Append-only LMDB writer with automatic map-size growth.

    path: directory to create the environment in (created if missing); an existing
    environment is opened and appended to (``last_key`` is its last committed key).
    Keys must be put in strictly ascending byte order (raises DatabaseError otherwise).
    Values: bytes-like (bytes, bytearray, memoryview). sync_commits: fsync every commit
    (default; False: only once, in close()).
    """

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = 128 << 20,
                 map_size: int = INITIAL_MAP_SIZE, sync_commits: bool = True):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        keep_freed_heap()
        try:
            self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=True,
                                 max_dbs=0, lock=True, sync=sync_commits, metasync=False)
        except lmdb.Error as exc:
            raise DatabaseError(f"{path}: cannot create LMDB: {exc}") from None
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
        """Commit the open transaction (if any); data put so far is then durable.
        Raises DatabaseError (e.g. disk full); the transaction is then dropped."""
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
            try:
                self.env.sync(True)
            except lmdb.Error as exc:
                raise DatabaseError(f"{self.path}: LMDB sync to disk failed: {exc}") from None
        finally:
            self.env.close()

    def abort(self) -> None:
        """Drop the open transaction and close (what was committed stays)."""
        txn, self.txn = self.txn, None
        if txn is not None:
            try:
                txn.abort()
            except lmdb.Error:
                pass
        self.env.close()


class LevelDbWriter:
    """LevelDB writer with Caffe's options; puts are grouped in WriteBatches.

    path: database directory (created if missing; an existing database is appended to,
    ``last_key`` being its last key)."""

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = 128 << 20):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        try:
            self.db = plyvel.DB(path, create_if_missing=True, **LEVELDB_OPTIONS)
        except plyvel.Error as exc:
            raise DatabaseError(f"{path}: cannot create LevelDB: {_error_text(exc)}") from None
        self.batch = None
        self.pending_puts = self.pending_bytes = 0
        self.last_key: Optional[bytes] = next(self.db.iterator(reverse=True, include_value=False),
                                              None)

    def put(self, key: bytes, value: bytes) -> None:
        """Add one (key, value) to the pending WriteBatch; written every ``batch_size`` puts
        or ``batch_bytes``."""
        if self.batch is None:
            self.batch = self.db.write_batch(sync=True)
        self.batch.put(key, value)
        self.last_key = key
        self.pending_puts += 1
        self.pending_bytes += len(key) + len(value)
        if self.pending_puts >= self.batch_size or self.pending_bytes >= self.batch_bytes:
            self.commit()

    def commit(self) -> None:
        """Write the pending batch atomically and synced to disk (one LevelDB log record).
        Raises DatabaseError (e.g. disk full); the batch is then dropped."""
        if self.batch is not None:
            batch, self.batch = self.batch, None
            self.pending_puts = self.pending_bytes = 0
            try:
                batch.write()
            except plyvel.Error as exc:
                raise DatabaseError(f"{self.path}: LevelDB write failed: {_error_text(exc)}") \
                    from None

    def entries(self) -> int:
        """Number of written entries (counted by iterating the keys)."""
        return sum(1 for _ in self.db.iterator(include_value=False))

    def items(self, start: bytes = b"") -> Iterator[Tuple[bytes, bytes]]:
        """Written (key, value) pairs with key >= ``start``, in key order."""
        return self.db.iterator(start=start)

    def close(self) -> None:
        """Write the pending batch and close the database."""
        try:
            self.commit()
        finally:
            self.db.close()

    def abort(self) -> None:
        """Drop the pending batch and close (what was written before stays)."""
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
    if found is None or found != backend:
        what = f"a {found} database" if found else "neither an LMDB nor a LevelDB database"
        raise DatabaseError(f"{path}: is {what}" + (f", not {backend}" if backend else ""))
    if backend == "lmdb":
        env = open_lmdb_reader(path)
        try:
            with env.begin(buffers=False) as txn:
                yield from txn.cursor()
        finally:
            env.close()
    elif backend == "leveldb":
        try:
            db = plyvel.DB(path, create_if_missing=False)
        except plyvel.Error as exc:
            raise DatabaseError(f"{path}: cannot open as LevelDB: {_error_text(exc)}") from None
        try:
            yield from db.iterator()
        finally:
            db.close()
    else:
        raise DatabaseError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def open_lmdb_reader(path: str) -> "lmdb.Environment":
    """Open an LMDB read-only. With its lock file (when writable), so a reader may run while
    a writer appends and sees only committed transactions; without it for read-only media.
    Raises DatabaseError when ``path`` is not an LMDB."""
    try:
        return lmdb.open(path, readonly=True, lock=True, subdir=True, create=False)
    except (lmdb.Error, OSError) as first:
        try:
            return lmdb.open(path, readonly=True, lock=False, subdir=True, create=False)
        except lmdb.Error:
            raise DatabaseError(f"{path}: cannot open as LMDB: {first}") from None
