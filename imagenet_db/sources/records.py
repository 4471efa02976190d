"""Records as compact columns: a list of 14 million images without 14 million Python objects.

A build's list is held as columns (``ListColumns``): every relpath's UTF-8 bytes in one blob
with int64 offsets, labels as int32, and optionally the database order as an int64
permutation (``--shuffle``). About 40-60 bytes per record for ImageNet's paths, against
~600 for a ``Record`` object with its strings and loader. ``RecordColumns`` is the sequence
of ``Record``s the pipeline sees: indexing or iterating makes one ``Record`` at a time, its
loader derived from the source's ``loader(relpath)``; slicing (``records[done:]``) gives a
view, not a copy. ``entries()`` yields (index, relpath, label) without a ``Record``, for the
checks and fingerprints that walk the whole list.

``shuffle_permutation`` is the ``--shuffle`` order as an int64 array (BLAKE2b-64 ranks,
compared as big-endian unsigned integers, ties kept in list order: the same order as sorting
the digests' bytes), and ``first_repeat`` finds a relpath listed twice by sorting 64-bit
hashes, not by a set of strings.
"""
import hashlib
import os
from array import array
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np


class FileLoader:
    """Zero-argument callable that returns the bytes of one file (raises OSError if unreadable).

    Reads with os.open/fstat/os.read (one read of the whole file, no buffered file object):
    ~0.01 ms less per ImageNet JPEG than ``open(path, 'rb').read()`` (issue 14)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __call__(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size + 1)  # one byte more: a file that grew is read to its end
            if len(data) <= size and (len(data) == size or not data):
                return data
            parts = [data]
            while True:  # short read (a pipe, a FUSE file...) or a file that grew
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"FileLoader({self.path!r})"


@dataclass(frozen=True)
class Record:
    """One image to convert.

    index: position in the (shuffled) list, the number in the key. relpath: the list's path,
    '/'-separated, used in the key. label: int32 class label. load: returns the image file bytes.
    boxes: the image's annotation when the format asked for boxes (``Split.records``) and
    the image has one: a ``sources.boxes.RecordBoxes`` (pixel boxes and the annotation's
    size); None otherwise (no annotation file, or boxes not asked for).
    """
    index: int
    relpath: str
    label: int
    load: Callable[[], bytes]
    boxes: Optional[object] = None


Loader = Callable[[str], Callable[[], bytes]]
_HASH_CHUNK = 1 << 16  # ranks computed per numpy array when shuffling
_CHUNK = 1 << 16  # records whose offsets are turned into Python ints at a time


class ListColumns:
    """(relpath, label) pairs as columns, in list order.

    blob: the UTF-8 bytes of every relpath, concatenated (a bytearray); offsets: int64, len n + 1 (relpath i
    is blob[offsets[i]:offsets[i+1]]); labels: int32, len n. Build one with ``append`` and
    ``freeze`` (``from_entries`` does both)."""

    __slots__ = ("blob", "offsets", "labels")

    def __init__(self):
        self.blob = bytearray()
        self.offsets = array("q", [0])
        self.labels = array("i")

    @classmethod
    def from_entries(cls, entries) -> "ListColumns":
        """Columns of an iterable of (relpath, label) pairs."""
        columns = cls()
        for relpath, label in entries:
            columns.append(relpath, label)
        return columns.freeze()

    def append(self, relpath: str, label: int) -> None:
        """Add one pair (label: 0..2**31-1; raises OverflowError outside int32)."""
        self.blob += relpath.encode("utf-8")
        self.offsets.append(len(self.blob))
        self.labels.append(label)

    def freeze(self) -> "ListColumns":
        """Make offsets and labels numpy arrays (no copy of their memory); again: no-op."""
        if isinstance(self.offsets, np.ndarray):
            return self
        self.offsets = np.frombuffer(self.offsets, dtype=np.int64)
        self.labels = np.frombuffer(self.labels, dtype=np.int32)
        return self

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relpath(self, i: int) -> str:
        """The relpath of pair ``i`` (list order)."""
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode("utf-8")

    def names(self, first: int, last: int) -> Iterator[str]:
        """The relpaths of pairs first..last-1, in order (offsets read in chunks)."""
        blob, offsets = self.blob, self.offsets
        for start in range(first, last, _CHUNK):
            ends = offsets[start:min(last, start + _CHUNK) + 1].tolist()
            for a, b in zip(ends, ends[1:]):
                yield blob[a:b].decode("utf-8")

    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return len(self.blob) + len(self.offsets) * 8 + len(self.labels) * 4


class RecordColumns(Sequence):
    """A read-only sequence of ``Record``s over ``ListColumns``, made one at a time.

    columns: the list; loader: relpath -> zero-argument callable returning the file's bytes
    (e.g. a ``FolderLoader``); order: None (list order) or an int64 permutation, position ->
    pair (``shuffle_permutation``). boxes: None (no record carries boxes), or relpath ->
    the record's ``Record.boxes`` (e.g. ``sources.boxes.SplitBoxes.lookup``), called as each
    Record is made. Record i has index i (its key number); a slice keeps the indices of the
    full list (``records[5:][0].index == 5``)."""

    def __init__(self, columns: ListColumns, loader: Loader,
                 order: Optional[np.ndarray] = None, start: int = 0,
                 stop: Optional[int] = None, boxes: Optional[Callable[[str], object]] = None):
        self.columns, self.loader, self.order = columns, loader, order
        self.start, self.boxes = start, boxes
        self.stop = len(columns) if stop is None else stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _pair(self, index: int) -> int:
        return index if self.order is None else int(self.order[index])

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            return RecordColumns(self.columns, self.loader, self.order, self.start + start,
                                 self.start + max(start, stop), self.boxes)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        index = self.start + i
        pair = self._pair(index)
        return self._record(index, self.columns.relpath(pair), int(self.columns.labels[pair]))

    def _record(self, index: int, relpath: str, label: int) -> Record:
        return Record(index, relpath, label, self.loader(relpath),
                      None if self.boxes is None else self.boxes(relpath))

    def __iter__(self) -> Iterator[Record]:
        for index, relpath, label in self.entries():
            yield self._record(index, relpath, label)

    def entries(self) -> Iterator[Tuple[int, str, int]]:
        """(index, relpath, label) of each record in order, without making Records."""
        blob, offsets, labels = self.columns.blob, self.columns.offsets, self.columns.labels
        for first in range(self.start, self.stop, _CHUNK):
            last = min(first + _CHUNK, self.stop)
            pairs = np.arange(first, last) if self.order is None else self.order[first:last]
            starts, ends = offsets[pairs].tolist(), offsets[pairs + 1].tolist()
            for index, a, b, label in zip(range(first, last), starts, ends,
                                          labels[pairs].tolist()):
                yield index, blob[a:b].decode("utf-8"), label


class ChainedRecords(Sequence):
    """Sequences of ``Record``s (e.g. each split's ``RecordColumns``) one after the other, as
    one sequence numbered 0..n-1: part k's records come after the parts before it, their
    indices shifted by the records before them. parts: (records, shift) pairs, shift being
    added to each record's own index. A slice keeps the indices (a view of the parts)."""

    def __init__(self, parts: Sequence[Tuple[Sequence[Record], int]]):
        self.parts = [(part, shift) for part, shift in parts if len(part)]
        self.ends = np.cumsum([len(part) for part, _ in self.parts], dtype=np.int64)

    @classmethod
    def of(cls, sequences: Sequence[Sequence[Record]]) -> "ChainedRecords":
        """``sequences`` (each numbered from 0) chained: the second's record 0 has index
        len(first), and so on."""
        parts, before = [], 0
        for part in sequences:
            parts.append((part, before))
            before += len(part)
        return cls(parts)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _starts(self) -> list:
        return [0] + self.ends[:-1].tolist()

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            return ChainedRecords([(part[max(0, start - first):max(0, stop - first)], shift)
                                   for (part, shift), first in zip(self.parts, self._starts())])
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("record index out of range")
        k = int(np.searchsorted(self.ends, i, side="right"))
        part, shift = self.parts[k]
        record = part[i - self._starts()[k]]
        return replace(record, index=record.index + shift)

    def __iter__(self) -> Iterator[Record]:
        for part, shift in self.parts:
            for record in part:
                yield replace(record, index=record.index + shift)

    def entries(self) -> Iterator[Tuple[int, str, int]]:
        """(index, relpath, label) of each record in order, without making Records."""
        for part, shift in self.parts:
            for index, relpath, label in record_entries(part):
                yield index + shift, relpath, label


def record_entries(records: Sequence[Record]) -> Iterator[Tuple[int, str, int]]:
    """(index, relpath, label) of each record: from the columns when ``records`` has them."""
    entries = getattr(records, "entries", None)
    if entries is not None:
        return entries()
    return ((record.index, record.relpath, record.label) for record in records)


class FolderLoader:
    """relpath -> ``FileLoader`` of ``root/relpath`` (the loader of a list under a folder;
    picklable)."""

    __slots__ = ("root",)

    def __init__(self, root: str):
        self.root = root

    def __call__(self, relpath: str):
        return FileLoader(os.path.join(self.root, relpath))


def shuffle_permutation(n: int, seed: int) -> np.ndarray:
    """The ``--shuffle`` order of n records as an int64 array: position -> list index.

    Record i ranks by the BLAKE2b-64 digest of (seed as 8 little-endian signed bytes, i as 8
    little-endian bytes); positions follow the ranks' byte order (= big-endian unsigned
    order), ties in list order. 16 bytes per record while sorting."""
    seed_bytes = int(seed).to_bytes(8, "little", signed=True)
    ranks = np.empty(n, dtype=np.uint64)
    blake = hashlib.blake2b
    for first in range(0, n, _HASH_CHUNK):
        last = min(n, first + _HASH_CHUNK)
        digests = b"".join(blake(seed_bytes + i.to_bytes(8, "little"), digest_size=8).digest()
                           for i in range(first, last))
        ranks[first:last] = np.frombuffer(digests, dtype=">u8")
    return np.argsort(ranks, kind="stable")


def first_repeat(columns: ListColumns) -> Optional[Tuple[int, int]]:
    """(first, again): pair positions of the relpath listed a second time earliest (smallest
    ``again``); None when all differ. Sorts 64-bit hashes (16 bytes per pair while checking)
    and compares only the strings of equal hashes."""
    n = len(columns)
    hashes = np.fromiter((hash(name) for name in columns.names(0, n)), dtype=np.int64,
                         count=n)
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    del hashes
    same = np.flatnonzero(ranked[1:] == ranked[:-1]).tolist()
    best = None
    for run in _runs(same):
        seen = {}
        for position in order[run[0]:run[-1] + 2].tolist():  # ascending (stable sort)
            relpath = columns.relpath(position)
            if relpath in seen:
                if best is None or position < best[1]:
                    best = (seen[relpath], position)
                break
            seen[relpath] = position
    return best


def _runs(same: list) -> Iterator[list]:
    """Group ascending k's (ranked[k] == ranked[k + 1]) into runs of consecutive k's."""
    run: list = []
    for k in same:
        if run and k != run[-1] + 1:
            yield run
            run = []
        run.append(k)
    if run:
        yield run
