"""The skipped images of a build as compact columns (``SkipList``), not one tuple each.

A list of a million missing files skips a million images: as (relpath, reason) tuples that
is ~250 bytes each. ``SkipList`` keeps the relpaths' UTF-8 bytes in one blob with int64
offsets, the record indices as int64 and each reason once (an int32 code per skip): ~60
bytes per skip for ImageNet's paths. It reads like the list of (relpath, reason) tuples it
replaces (``ConvertSummary.skipped``): len, indexing, iteration, truthiness and equality with
a list of tuples.
"""
from array import array
from collections.abc import Sequence
from typing import Dict, Iterator, List, Tuple


class SkipList(Sequence):
    """Skipped images in record order: (relpath, reason) items, each with its record index."""

    def __init__(self, items=()):
        self._blob = bytearray()
        self._offsets = array("q", [0])
        self._indices = array("q")
        self._codes = array("i")
        self._reasons: List[str] = []
        self._code_of: Dict[str, int] = {}
        for index, relpath, reason in items:
            self.add(index, relpath, reason)

    def add(self, index: int, relpath: str, reason: str) -> None:
        """Add the skip of record ``index`` (indices must ascend, as the build goes)."""
        code = self._code_of.get(reason)
        if code is None:
            code = self._code_of[reason] = len(self._reasons)
            self._reasons.append(reason)
        self._blob += relpath.encode("utf-8")
        self._offsets.append(len(self._blob))
        self._indices.append(index)
        self._codes.append(code)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("skip index out of range")
        relpath = self._blob[self._offsets[i]:self._offsets[i + 1]].decode("utf-8")
        return relpath, self._reasons[self._codes[i]]

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"SkipList({len(self)} skipped)"

    def index_of(self, i: int) -> int:
        """The record index of skip ``i``."""
        return self._indices[i]

    def indices(self) -> array:
        """The record indices of the skips, ascending (int64 array)."""
        return self._indices

    def keep_upto(self, last_index: int) -> None:
        """Drop the skips of records after ``last_index`` (what a stopped build did not
        commit)."""
        keep = len(self)
        while keep and self._indices[keep - 1] > last_index:
            keep -= 1
        del self._indices[keep:]
        del self._codes[keep:]
        del self._offsets[keep + 1:]
        del self._blob[self._offsets[keep]:]
