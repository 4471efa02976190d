"""``DatumDB``: the datums of any Caffe LMDB or LevelDB, by position, as numpy images.

Public as ``imagenet_db.reader.DatumDB``. Works on databases made by imagenet-db or by Caffe
(``convert_imageset``), raw or encoded, colour or gray, without Caffe or torch.

How it reads:

* Positions: the keys in byte order (= Caffe's list order for ``%08d_relpath`` keys) are listed
  once, on first positional use (``len``, ``db[i]``, ``key``, pickling), and kept compactly:
  all keys in one bytes object plus an ``array('q')`` of offsets, ~60 MB for ImageNet's
  1,281,167 keys (listed in ~1.5 s when cached). Iterating (``for image, label in db``,
  ``items``, ``labels``) walks a cursor and needs no list.
* Opening: read-only and lock-free (nothing is written next to the database: see
  ``readers.lmdbreader`` and ``readers.leveldbreader``), lazily in each process, shared by
  every reader and thread of that process. A ``DatumDB`` pickles to its path, options and key
  list, so PyTorch ``DataLoader`` workers (fork or spawn) open their own.
* Decoding: the Datum's fields are read from its wire bytes (``outputs.wire.datum_fields``, no
  protobuf parse, no copy) and the pixels are copied once out of the memory map: ``cv2.merge``
  of the B, G, R planes for HWC (numpy's transpose copy is ~40x slower), one copy for CHW.
  Encoded datums are decoded with ``cv2.imdecode`` (IMREAD_COLOR when channels = 3,
  IMREAD_GRAYSCALE when 1, else IMREAD_ANYCOLOR as Caffe's ``DecodeDatumNative``).
"""
import os
import threading
import weakref
from array import array
from collections.abc import Sequence
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.decode import decode_flag_for
from imagenet_db.readers import READERS, check_database
from imagenet_db.outputs.datum import datum_to_chw, parse_datum
from imagenet_db.outputs.ssd import split_annotated
from imagenet_db.outputs.wire import datum_fields
from imagenet_db.protos import Datum

CHANNEL_ORDERS = ("BGR", "RGB")
LAYOUTS = ("HWC", "CHW")
_INSTANCES: "weakref.WeakSet[DatumDB]" = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    """A lock that another thread held at fork() would stay locked forever in the child."""
    for db in list(_INSTANCES):
        db._lock, db._index_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_new_locks_after_fork)


def _name(key) -> str:
    """A key (bytes or memoryview) as text for messages, at most 60 characters."""
    return bytes(key[:60]).decode("utf-8", "replace")


def _release(pid: int, reader) -> None:
    if os.getpid() == pid:  # finalizers are copied into forked children: not theirs to run
        reader.close()


class KeyList(Sequence):
    """The keys of a DatumDB in position order, as bytes (a read-only sequence)."""

    def __init__(self, db: "DatumDB"):
        self._db = db

    def __len__(self) -> int:
        return len(self._db)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._db.key(i) for i in range(*index.indices(len(self)))]
        return self._db.key(index)


class DatumDB:
    """The datums of a Caffe LMDB or LevelDB by position: ``db[i]`` -> ``(image, label)``.

    path: the database directory (LMDB: holds data.mdb; LevelDB: holds CURRENT). backend:
    'lmdb', 'leveldb' or None to detect. channel_order: 'BGR' (default, as stored: Caffe and
    OpenCV order) or 'RGB'. layout: 'HWC' (default) or 'CHW' (Caffe's blob order).

    An AnnotatedDatum LMDB (``create_imagenet --format ssd``) gives ``(image, boxes)``
    instead, boxes an (N, 6) float32 array [xmin, ymin, xmax, ymax, label, difficult] relative
    to the image (labels() then gives the datums' -1).
    ``db[i]`` (also negative i) and iteration give ``(image, label)``: image a uint8 numpy array
    of shape (H, W, C) (or (C, H, W)), C = 3 for colour and 1 for gray, a fresh copy the
    caller owns; float datums (``float_data``) give float32; label the Datum's int label.
    Positions are key order. ``len(db)``, ``db.keys`` (sequence of bytes), ``db.key(i)``,
    ``db.datum(i)`` (the parsed protobuf Datum), ``db.labels()`` (int64 array of every label
    in position order, read without decoding), ``db.items()`` (raw key/value pairs).

    Safe to share between threads, and to pickle into worker processes (PyTorch DataLoader,
    multiprocessing: fork or spawn); each process opens the database read-only and lock-free
    on first use. The database must be finished (not being written); its files are never
    changed. Raises DatabaseError for a path that is not an LMDB/LevelDB (naming it), a
    database that cannot be opened, or a value that is not a Datum (naming its key);
    IndexError for a position outside -len..len-1; ValueError for unknown options.
    """

    def __init__(self, path: str, backend: Optional[str] = None, channel_order: str = "BGR",
                 layout: str = "HWC"):
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, "
                             f"not {channel_order!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        self.path = os.fspath(path)
        self.backend = check_database(self.path, backend)
        self.channel_order, self.layout = channel_order, layout
        self._blob: Optional[bytes] = None
        self._offsets: Optional[array] = None
        self._snapshot: Optional[str] = None
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()        # opening the reader
        self._index_lock = threading.Lock()  # listing the keys
        self._reader = None
        self._reader_pid: Optional[int] = None
        self._finalizer = None
        _INSTANCES.add(self)

    # ---------------------------------------------------------------- opening
    def _open(self):
        """This process's reader lease, opened on first use."""
        reader, pid = self._reader, os.getpid()
        if reader is not None and self._reader_pid == pid:
            return reader
        with self._lock:
            if self._reader is None or self._reader_pid != pid:
                reader = READERS[self.backend].open_reader(self.path, self._snapshot)
                self._snapshot = getattr(reader, "snapshot", None)  # LevelDB's, for workers
                self._reader, self._reader_pid = reader, pid
                self._finalizer = weakref.finalize(self, _release, pid, reader)
            return self._reader

    def close(self) -> None:
        """Close this process's handle (reopened on next use). Also ``with DatumDB(...)``."""
        with self._lock:
            if self._finalizer is not None and self._reader_pid == os.getpid():
                self._finalizer()
            self._reader = self._reader_pid = self._finalizer = None

    def __enter__(self) -> "DatumDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        self._index()  # workers get the key list instead of each listing the keys again
        state = self.__dict__.copy()
        for name in ("_lock", "_index_lock", "_reader", "_reader_pid", "_finalizer"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    def __repr__(self) -> str:
        size = f"{len(self._offsets) - 1} datums" if self._offsets is not None else "not indexed"
        return (f"DatumDB({self.path!r}, backend={self.backend!r}, channel_order="
                f"{self.channel_order!r}, layout={self.layout!r}) [{size}]")

    # ---------------------------------------------------------------- positions
    def _index(self) -> Tuple[bytes, array]:
        if self._offsets is None:
            with self._index_lock:
                if self._offsets is None:
                    list_keys = READERS[self.backend].list_keys
                    if list_keys is not None and self._reader is None:
                        keys = list_keys(self.path)  # not opened yet: no readahead
                    else:
                        keys = self._open().keys()
                    self._set_index(keys)
        return self._blob, self._offsets

    def _set_index(self, keys: List[bytes]) -> None:
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self._blob = b"".join(keys)
        self._offsets = array("q", offsets.tobytes())

    def __len__(self) -> int:
        return len(self._index()[1]) - 1

    def _position(self, index) -> int:
        try:
            i = index.__index__()
        except AttributeError:
            raise TypeError(f"DatumDB positions are integers, not {type(index).__name__}") \
                from None
        count = len(self)
        if i < 0:
            i += count
        if not 0 <= i < count:
            raise IndexError(f"datum position {index} is out of range: {self.path} holds "
                             f"{count} datums")
        return i

    def key(self, index: int) -> bytes:
        """The key of the datum at position ``index`` (IndexError when out of range)."""
        blob, offsets = self._index()
        i = self._position(index)
        return blob[offsets[i]:offsets[i + 1]]

    @property
    def keys(self) -> KeyList:
        """All keys in position order (a sequence of bytes; no list is built)."""
        return KeyList(self)

    def value(self, index: int) -> Tuple[bytes, object]:
        """(key, stored bytes) of the datum at ``index``; LMDB gives a memoryview into the map,
        valid until this thread's next read (copy what you keep)."""
        key = self.key(index)
        value = self._open().get(key)
        if value is None:
            raise DatabaseError(f"{self.path}: key {key[:60]!r} is gone: the database changed "
                                f"after it was opened")
        return key, value

    def datum(self, index: int) -> Datum:
        """The Datum protobuf at position ``index`` (of an AnnotatedDatum: its datum)."""
        key, value = self.value(index)
        annotated = self.annotated(key, value)
        if annotated is not None:
            value = annotated[0]
        return parse_datum(bytes(value), _name(key), self.path)

    def __getitem__(self, index) -> Tuple[np.ndarray, int]:
        key, value = self.value(index)
        return self.decode(key, value)

    # ---------------------------------------------------------------- sequential reads
    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        """(image, label) of every datum in key order, from one cursor (no key list needed)."""
        for key, value in self._open().items(buffers=True):
            yield self.decode(key, value)

    def items(self, buffers: bool = False) -> Iterator[Tuple[bytes, object]]:
        """Every (key, serialized Datum) in key order. buffers=True (LMDB): keys and values are
        memoryviews into the map valid until the next pair, no copy; else bytes."""
        return self._open().items(buffers=buffers)

    def labels(self) -> np.ndarray:
        """The label of every datum in position order, as an int64 array (read from the wire
        bytes around the pixels; nothing is decoded)."""
        out = []
        for key, value in self.items(buffers=True):
            annotated = self.annotated(key, value)
            if annotated is not None:
                value = annotated[0]
            fields = datum_fields(value)
            if fields is None:
                fields = parse_datum(bytes(value), _name(key), self.path)
            out.append(fields.label)
        return np.asarray(out, dtype=np.int64)

    # ---------------------------------------------------------------- decoding
    def annotated(self, key, value):
        """(its Datum's bytes, (N, 6) float32 boxes) when ``value`` is an AnnotatedDatum, else
        None (``outputs.ssd.split_annotated``); DatabaseError naming the key for a damaged one."""
        try:
            return split_annotated(value)
        except ImagenetDbError as exc:
            raise DatabaseError(f"{self.path}: value of key {_name(key)!r}: {exc}") from None

    def decode(self, key, value) -> Tuple[np.ndarray, object]:
        """(image, label) of one serialized Datum (``key``, bytes or memoryview, names it in
        errors), in this reader's channel order and layout. For an AnnotatedDatum (SSD's,
        ``--format ssd``): (image, boxes), boxes an (N, 6) float32 array [xmin, ymin, xmax,
        ymax, label, difficult], coordinates relative to the image (``outputs.ssd``)."""
        annotated = self.annotated(key, value)
        if annotated is not None:
            return self.decode(key, annotated[0])[0], annotated[1]
        fields = datum_fields(value)
        if fields is None:  # float_data, or bytes the fast reader leaves to protobuf
            datum = parse_datum(bytes(value), _name(key), self.path)
            chw = datum_to_chw(datum, _name(key))
            return self._arrange(list(chw)), datum.label
        if fields.encoded:
            return self._decode_encoded(key, value, fields), fields.label
        c, h, w = fields.channels, fields.height, fields.width
        if fields.data_length != c * h * w or min(c, h, w) <= 0:
            raise DatabaseError(f"{self.path}: datum {_name(key)!r} holds {fields.data_length} "
                                f"bytes but channels*height*width = {c}*{h}*{w}")
        chw = np.frombuffer(value, dtype=np.uint8, count=fields.data_length,
                            offset=fields.data_offset).reshape(c, h, w)
        return self._arrange(list(chw)), fields.label

    def _arrange(self, planes: List[np.ndarray], swap: Optional[bool] = None) -> np.ndarray:
        """One copy of the planes (B, G, R[, ...]) in the wanted layout; B and R swapped for
        RGB (``swap`` overrides: planes already in RGB order)."""
        if swap is None:
            swap = self.channel_order == "RGB"
        if swap and len(planes) >= 3:
            planes[0], planes[2] = planes[2], planes[0]
        if self.layout == "CHW":
            return np.stack(planes)
        if len(planes) == 1:
            return np.array(planes[0])[:, :, np.newaxis]
        return cv2.merge(planes)

    def _decode_encoded(self, key: bytes, value, fields) -> np.ndarray:
        buf = np.frombuffer(value, dtype=np.uint8, count=fields.data_length,
                            offset=fields.data_offset)
        flag = decode_flag_for(fields.channels)
        rgb = self.channel_order == "RGB"
        if rgb and flag == cv2.IMREAD_COLOR and hasattr(cv2, "IMREAD_COLOR_RGB"):
            flag, rgb = cv2.IMREAD_COLOR_RGB, False  # OpenCV >= 4.10 decodes straight to RGB
        image = cv2.imdecode(buf, flag) if buf.size else None
        if image is None:
            raise DatabaseError(f"{self.path}: datum {_name(key)!r}: encoded image data cannot "
                                f"be decoded")
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        if not rgb and self.layout == "HWC":
            return image
        planes = cv2.split(image) if image.shape[2] > 1 else [image[:, :, 0]]
        return self._arrange(list(planes), swap=rgb)
