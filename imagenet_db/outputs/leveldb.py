"""LevelDB output: Caffe Datums in a LevelDB, as Caffe 1.0 creates and reads it.

Opened with Caffe's options (block_size 64 KiB, write_buffer_size 256 MiB, max_open_files
100, snappy compression), written in WriteBatches of ``batch_size`` puts (or ``batch_bytes``)
with ``sync``: each batch is on disk when ``commit`` returns, like an LMDB commit. An existing
database is opened and appended to (``last_key`` is its last key). A write that fails (disk
full) raises DatabaseError; what was written before stays intact.
"""
import os
from typing import Iterator, Optional, Tuple

import plyvel

from imagenet_db.errors import DamagedDatabaseError, DatabaseError
from imagenet_db.outputs.datumdb import DatumWriter

LEVELDB_OPTIONS = dict(block_size=65536, write_buffer_size=268435456, max_open_files=100)


class LevelDbWriter(DatumWriter):
    """LevelDB writer with Caffe's options; puts are grouped in WriteBatches.

    path: database directory (created if missing; an existing database is appended to,
    ``last_key`` being its last key)."""

    name = "leveldb"
    description = "Caffe Datum LevelDB (Caffe's options)"
    verify_accepts = "LevelDB"

    def __init__(self, path: str, batch_size: int = 1000, batch_bytes: int = 128 << 20):
        self.path = path
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        try:
            self.db = plyvel.DB(path, create_if_missing=True, paranoid_checks=True,
                                **LEVELDB_OPTIONS)
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
        """Written (key, value) pairs with key >= ``start``, in key order (checksums verified;
        DatabaseError when a block is damaged)."""
        try:
            yield from self.db.iterator(start=start, verify_checksums=True)
        except plyvel.Error as exc:
            raise DamagedDatabaseError(f"{self.path}: damaged LevelDB: {_error_text(exc)}") \
                from None

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

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds a LevelDB CURRENT file."""
        return os.path.isfile(os.path.join(path, "CURRENT"))


def _error_text(exc: Exception) -> str:
    """The message of an lmdb/plyvel error as text (plyvel gives bytes)."""
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
