"""The output interface: what every output format implements (one class per format).

Records reach an output in list order (record.index ascending, with gaps where images were
skipped). Work is split in two so that all cores share it:

``encode(record, image) -> Encoded``   (class method, runs on the worker threads or a cluster)
    turn one transformed ``imaging.transform.Image`` into the bytes this format stores;
``add(record, encoded)``                (the one writing thread, in list order)
    store it; ``commit()`` makes everything added durable; ``close()`` commits and closes;
    ``abort()`` drops what is not committed and closes; ``finish()``, once every record is
    in, writes what only a finished output has (before the completion record).

Resuming goes by record index: ``resume_position(records)`` opens what an interrupted build
left and says which record comes next (it also checks that what is stored belongs to this
list); ``stored(start)`` reads committed records back (for the observers' catch-up).
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterator, Optional, Sequence, Set, Tuple

import numpy as np

if TYPE_CHECKING:
    from imagenet_db.outputs.spec import FormatSpec


@dataclass
class Encoded:
    """One record as the output stores it.

    value: the stored bytes (bytes-like: bytes, bytearray, memoryview or a 1-D uint8 ndarray).
    pixels: (C, H, W) uint8 pixels a reader gets back (for the observers; None when not asked
    for). shape: (channels, height, width). name: how the record is called in messages (e.g.
    its database key). checksum: CRC-32 of what is stored for the record (for a key-value
    output: key + value), computed on the worker; summed into the completion record by
    ``observers.checksum`` (None: the format keeps no content checksum). boxes: for a format
    that stores boxes, (boxes stored, boxes the resize dropped) for the record (counted by
    ``observers.boxcount``); None otherwise.
    Pickling (a Dask cluster sends results back this way) keeps ``pixels`` that are a view
    into an ndarray ``value`` (raw datums) as an offset, so the pixels cross once, not twice.
    """
    value: object
    pixels: Optional[np.ndarray]
    shape: Tuple[int, int, int]
    name: str
    checksum: Optional[int] = None
    boxes: Optional[Tuple[int, int]] = None

    def __reduce__(self):
        offset = _offset_in(self.value, self.pixels)
        if offset is None:
            return Encoded, (self.value, self.pixels, self.shape, self.name, self.checksum,
                             self.boxes)
        return _encoded_with_view, (self.value, offset, self.pixels.shape, self.shape, self.name,
                                    self.checksum, self.boxes)


def _offset_in(value, pixels) -> Optional[int]:
    """Byte offset of the C-contiguous uint8 ``pixels`` inside the 1-D uint8 ndarray ``value``,
    or None when they are not such a view."""
    if not isinstance(value, np.ndarray) or not isinstance(pixels, np.ndarray) or \
            value.dtype != np.uint8 or pixels.dtype != np.uint8 or value.ndim != 1 or \
            not value.flags.c_contiguous or not pixels.flags.c_contiguous:
        return None
    offset = pixels.ctypes.data - value.ctypes.data
    if offset < 0 or offset + pixels.size > value.size:
        return None
    return offset


def _encoded_with_view(value, offset, pixel_shape, shape, name, checksum=None,
                       boxes=None) -> "Encoded":
    size = int(np.prod(pixel_shape))
    return Encoded(value, value[offset:offset + size].reshape(pixel_shape), shape, name,
                   checksum, boxes)


class Output(ABC):
    """An output being written at ``path`` (a directory), committing every ``txn_size`` records.

    Class attributes: ``name`` (the registry name, e.g. 'lmdb'), ``description``,
    ``format_spec`` (the ``outputs.spec.FormatSpec`` of the ``create_imagenet --format`` that
    builds it: default transform, checks, stages, folder, label order, flags),
    ``datum_database`` (a Caffe Datum database: a ``--backend`` choice, checked by
    ``verify.verify_db``; else by ``verify``) and ``verify_accepts`` (what ``imagenet-db
    verify`` looks for, in its one-line message), ``read_in_child`` (a damaged output can
    kill its reader, e.g. SIGBUS through a memory map: verify reads it in a child process).
    Raises DatabaseError for any failed write
    (disk full...); what was committed stays.
    """
    name: ClassVar[str]
    description: ClassVar[str]
    format_spec: ClassVar["FormatSpec"]
    datum_database: ClassVar[bool] = False
    verify_accepts: ClassVar[str] = ""
    read_in_child: ClassVar[bool] = False
    stores_boxes: ClassVar[bool] = False  # Encoded.boxes set; stored_boxes() (observers.boxcount)

    @classmethod
    @abstractmethod
    def encode(cls, record, image) -> Encoded:
        """Bytes to store for ``record`` (a sources.Record) and its transformed ``image``."""

    @classmethod
    def record_problem(cls, relpath: str, index: int = 0) -> Optional[str]:
        """Why this format cannot store the record ``relpath`` at list position ``index`` (e.g.
        a key over LMDB's size limit), or None. Checked for every record before a build
        starts, so that such a record fails it at once, not hours in."""
        return None

    @classmethod
    def encode_file(cls, record, data: bytes, options):
        """The stored value straight from the file bytes, without decoding, when the format
        can store them as they are under ``options`` (e.g. a folder copy): an Encoded, or a
        str saying why the file is skipped; None (the default) to decode and transform."""
        return None

    @classmethod
    @abstractmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds an output of this format."""

    @classmethod
    def verify(cls, path: str, manifest: dict, report) -> None:
        """Check the finished output at ``path`` against its completion record ``manifest``
        (``imagenet-db verify``), adding one line per problem, naming the file, to ``report``
        (a ``verify.VerifyReport``: problem(), entries, labels, shapes, notes). The Caffe
        Datum databases are checked by ``verify.verify_db`` instead."""
        raise NotImplementedError(f"{cls.__name__} has no verify")

    @classmethod
    def made_files(cls, path: str, manifest: dict) -> Optional[Set[str]]:
        """What ``--overwrite`` may delete in the finished output ``path`` besides this tool's
        ``imagenet_db.*`` records: the paths (relative to ``path``, '/'-separated) of every
        file this format wrote there (and, ending in '/', folders it makes even when they stay
        empty), as its completion record ``manifest`` and the log kept with it say. None (the default): the format's files are known by their names (the
        Datum databases). Raises DatabaseError when the list cannot be read."""
        return None

    @property
    @abstractmethod
    def pending(self) -> int:
        """Records added since the last commit."""

    @abstractmethod
    def add(self, record, encoded: Encoded) -> None:
        """Store one record (after every record of lower index)."""

    @abstractmethod
    def commit(self) -> None:
        """Make every added record durable."""

    @abstractmethod
    def close(self) -> None:
        """Commit and close."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what is not committed and close."""

    @abstractmethod
    def resume_position(self, records: Sequence) -> int:
        """Index of the first record not stored yet (0 for a new output). Raises DatabaseError
        when the stored records are not a prefix of ``records``."""

    @abstractmethod
    def entries(self) -> int:
        """Number of committed records."""

    def finish(self) -> dict:
        """After the last record is committed and the output closed, before the completion
        record: write what only a finished output has (e.g. cuda-convnet2's batches.meta).
        Returns facts for the completion record. Must be safe to run twice (a crash may
        interrupt it). The Datum databases have nothing to add."""
        return {}

    @abstractmethod
    def stored(self, start: int = 0) -> Iterator[Tuple[int, str, np.ndarray]]:
        """Committed records with index >= ``start``, in order: (index, name, (C, H, W) pixels)."""

    def stored_boxes(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """For formats that store boxes (``stores_boxes``): committed records with index >=
        ``start``, in order, as (index, number of boxes stored)."""
        raise NotImplementedError(f"{type(self).__name__} stores no boxes")

    def checksums(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """Committed records with index >= ``start``, in order: (index, Encoded.checksum of
        what is stored). For formats that keep a content checksum (see Encoded)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no content checksum")
