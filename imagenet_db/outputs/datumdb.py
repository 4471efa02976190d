"""What LMDB and LevelDB outputs share: Caffe Datum values under Caffe's keys, in key order.

Keys are ``%08d_<relpath>`` as Caffe's convert_imageset forms them (the number being the
record's index in the, possibly shuffled, list), so key order is list order and a resumed
build continues after the record named by the last key. Values are serialized Datums
(``outputs.datum``). A backend subclass supplies ``put``, ``commit``, ``close``, ``abort``,
``entries``, ``items(start_key)`` and ``last_key``.
"""
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from imagenet_db.errors import DatabaseError
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.caffe import CAFFE
from imagenet_db.outputs.datum import (caffe_key, caffe_key_size, datum_to_chw, encode_datum,
                                      entry_checksum, key_index, parse_datum)


class DatumWriter(Output):
    """Base of the Caffe Datum key-value outputs (LMDB, LevelDB). ``max_key_bytes``: the
    backend's key size limit (None: none). Built by ``create_imagenet --format caffe``
    (``outputs.caffe``)."""
    max_key_bytes: Optional[int] = None
    datum_database = True
    format_spec = CAFFE

    @classmethod
    def record_problem(cls, relpath: str, index: int = 0) -> Optional[str]:
        """A key (``%08d_relpath``, UTF-8) longer than the backend allows."""
        if cls.max_key_bytes is None:
            return None
        size = caffe_key_size(index, relpath)
        if size <= cls.max_key_bytes:
            return None
        return (f"the key of {relpath[:60]!r}... is {size} bytes, above the "
                f"{cls.max_key_bytes}-byte key limit of {cls.description.split(' (')[0]} "
                f"(shorten the path, or use --backend=leveldb)")

    @classmethod
    def encode(cls, record, image) -> Encoded:
        """A Datum for ``record`` (raw CHW BGR bytes, or the encoded file) under its Caffe key."""
        return encode_datum(record, image)

    @property
    def pending(self) -> int:
        return self.pending_puts

    def add(self, record, encoded: Encoded) -> None:
        """Put ``encoded.value`` under the record's Caffe key (``encoded.name``, made once by
        ``encode_datum`` on the worker)."""
        self.put(encoded.name.encode("utf-8"), encoded.value)

    def resume_position(self, records: Sequence) -> int:
        """1 + the index in the last key (0 when empty); the last key must be its record's."""
        if self.last_key is None:
            return 0
        index = key_index(self.last_key, f"{self.path}: ")
        if index >= len(records) or \
                caffe_key(index, records[index].relpath) != self.last_key:
            raise DatabaseError(f"{self.path}: its last key {self.last_key[:60]!r} is not in the "
                                f"list; the partial database belongs to another list")
        return index + 1

    def checksums(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """Committed entries from record index ``start`` on, as (index, CRC-32 of key + value)."""
        for key, value in self.items(b"%08d_" % start):
            yield key_index(key), entry_checksum(key, value)

    def stored(self, start: int = 0) -> Iterator[Tuple[int, str, np.ndarray]]:
        """Committed datums from record index ``start`` on, as (index, key, CHW pixels)."""
        for key, value in self.items(b"%08d_" % start):
            name = key.decode("utf-8", "replace")
            yield key_index(key), name, datum_to_chw(parse_datum(value, name, self.path), name)
