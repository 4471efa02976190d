"""A content checksum of everything an output stores, kept in its completion record.

``verify`` can then prove that a database still holds the bytes that were written: every
parse-able corruption of a value (a flipped pixel byte, a changed label) or a key is caught,
which the structure checks alone cannot see. The checksum is the sum, modulo 2^64, of the
CRC-32 of each stored entry (for Datum databases: key + value, ``outputs.datum
.entry_checksum``). The CRCs are computed on the workers (~58 us per raw 256x256 datum, a few
percent of the ~1.3 ms an image costs); the sum does not depend on the order of additions,
the keys carry the record numbers. Kept across interruptions like the mean: right after a
commit, at most every ``CHECKPOINT_SECONDS``, the sum and the last record index in it go to
``DB.partial/imagenet_db.checksum.json``; a resumed build loads it and reads back only the
entries committed after it. Completion record field: ``entries_crc32_sum`` (16 hex digits).

Outputs whose ``Encoded.checksum`` is None (formats without a content checksum) get none.
"""
import os
import time
from typing import Tuple

from imagenet_db.crc import CHECKSUM_FIELD as MANIFEST_FIELD, add_checksum
from imagenet_db.engine.files import read_json, write_json_atomic
from imagenet_db.errors import ImagenetDbError
from imagenet_db.observers.base import Observer

CHECKPOINT_NAME = "imagenet_db.checksum.json"
CHECKPOINT_SECONDS = 30.0


class ContentChecksum(Observer):
    """Sums ``Encoded.checksum`` of every record written (see the module docstring)."""
    name = "checksum"

    def __init__(self):
        self.total = 0
        self.available = True
        self._last_checkpoint = time.monotonic()

    def restore(self, build: str, output, done: int) -> int:
        """Load the checkpoint and add the entries committed after it (records < ``done``)."""
        self.total, upto = _load_checkpoint(build, done - 1)
        reread = 0
        if done and upto + 1 < done:
            try:
                for index, checksum in output.checksums(upto + 1):
                    if index >= done:
                        break
                    self.total = add_checksum(self.total, checksum)
                    reread += 1
            except NotImplementedError:
                self.available = False
        return reread

    def add(self, record, encoded) -> None:
        if encoded.checksum is None:
            self.available = False
        elif self.available:
            self.total = add_checksum(self.total, encoded.checksum)

    def committed(self, build: str, last_index: int) -> None:
        if self.available and time.monotonic() - self._last_checkpoint >= CHECKPOINT_SECONDS:
            write_json_atomic(os.path.join(build, CHECKPOINT_NAME),
                              {"last_index": last_index, "sum": f"{self.total:016x}"})
            self._last_checkpoint = time.monotonic()

    def finish(self, build: str) -> dict:
        """The completion record's checksum field (none when the format keeps none)."""
        try:
            os.remove(os.path.join(build, CHECKPOINT_NAME))
        except FileNotFoundError:
            pass
        return {MANIFEST_FIELD: f"{self.total:016x}"} if self.available else {}


def _load_checkpoint(build: str, upto_index: int) -> Tuple[int, int]:
    """(sum, last index) of the checkpoint; (0, -1) when there is none usable (missing,
    unreadable, or beyond ``upto_index``)."""
    try:
        state = read_json(os.path.join(build, CHECKPOINT_NAME)) or {}
        last_index, total = int(state["last_index"]), int(state["sum"], 16)
    except (ImagenetDbError, KeyError, TypeError, ValueError):
        return 0, -1
    if last_index > upto_index:
        return 0, -1
    return total, last_index
