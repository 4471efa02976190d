"""A chunk's results as one buffer, for worker processes and Dask workers (issue 23).

A task of 32-64 records returns as many ``Encoded`` results (or skip reasons). Pickled one by
one that is a Python object, a few small strings and a bytes object per record, on both
sides. ``PackedResults.of(results)`` instead concatenates every stored value into one
buffer and keeps the rest as columns: value offsets, record names joined by NUL (no list name
holds one, ``sources.base.check_list_name``), shapes, checksums, and for raw datums where
the pixels start inside the value. ``unpack()`` gives back equal results in the same order:
ndarray values as 1-D uint8 views into the buffer, pixels as views into them, other
bytes-like values as bytes. Results of any other kind (a skip reason, a raised error, an Encoded
whose pixels are not inside its value) travel as they are, in a side list.
"""
from array import array
from typing import Iterator, List

import numpy as np

from imagenet_db.outputs.base import Encoded, _offset_in

_ARRAY, _BYTES, _REASON, _OTHER = b"A", b"B", b"S", b"O"  # value as ndarray / bytes


class PackedResults:
    """The results of one task; see the module docstring. ``len`` = number of results."""

    def __init__(self):
        self.kinds = bytearray()
        self.buffer = bytearray()
        self.ends = array("q")       # end of each packed value in ``buffer``
        self.pixel_at = array("q")   # offset of the pixels in the value, -1: no pixels
        self.shapes = array("i")     # (C, H, W) per packed value
        self.checksums = array("q")  # -1: None
        self.names: List[str] = []
        self.others: list = []       # reasons and unpackable results, in order

    @classmethod
    def of(cls, results) -> "PackedResults":
        """Pack a list of results (Encoded, str reasons, anything else)."""
        packed = cls()
        for result in results:
            packed._add(result)
        packed.names = "\0".join(packed.names)
        packed.buffer = bytes(packed.buffer)
        return packed

    def _add(self, result) -> None:
        if isinstance(result, Encoded) and not isinstance(result.value, str):
            at = -1 if result.pixels is None else _offset_in(result.value, result.pixels)
            if at is not None and (at < 0 or result.pixels.shape == tuple(result.shape)):
                self.kinds += _ARRAY if isinstance(result.value, np.ndarray) else _BYTES
                self.buffer += memoryview(result.value).cast("B")
                self.ends.append(len(self.buffer))
                self.pixel_at.append(at)
                self.shapes.extend(result.shape)
                self.checksums.append(-1 if result.checksum is None else result.checksum)
                self.names.append(result.name)
                return
        self.kinds += _REASON if isinstance(result, str) else _OTHER
        self.others.append(result)

    def __len__(self) -> int:
        return len(self.kinds)

    def unpack(self) -> Iterator[object]:
        """The results in their order (see the module docstring)."""
        data = np.frombuffer(self.buffer, dtype=np.uint8)
        names = self.names.split("\0") if len(self.ends) else []
        others = iter(self.others)
        start = packed = 0
        for kind in self.kinds:
            if kind not in (_ARRAY[0], _BYTES[0]):
                yield next(others)
                continue
            end = self.ends[packed]
            value = data[start:end] if kind == _ARRAY[0] else self.buffer[start:end]
            shape = tuple(self.shapes[3 * packed:3 * packed + 3])
            at, checksum = self.pixel_at[packed], self.checksums[packed]
            pixels = None if at < 0 else \
                value[at:at + shape[0] * shape[1] * shape[2]].reshape(shape)
            yield Encoded(value, pixels, shape, names[packed], None if checksum < 0 else checksum)
            start, packed = end, packed + 1
