"""The mean image (``imagenet_mean.binaryproto``) and per-channel mean values.

As Caffe's ``tools/compute_image_mean.cpp``: the element-wise mean over all datums of their
(C, H, W) pixels, written as a BlobProto with num=1, channels, height, width and float data
(CHW order, BGR channels for colour images). Unlike Caffe, which sums in float32 (and drifts
over 1.28M images), the sum is kept as exact uint64 integers, so the mean is exact to float32
rounding and independent of the order in which images are added.

``compute_db_mean`` reads raw datums without copying or parsing them: LMDB values are viewed
in place in the memory map (``buffers=True``), the pixel bytes are found by
``imagenet_db.outputs.wire.locate_raw_pixels``, and images are added in uint16 partial sums of at most
257 images (257 x 255 = 65535, so no partial sum can overflow) that are folded into the uint64
total. On LMDB the datums are shared out between threads (numpy releases the GIL while it
adds). Encoded or float datums take the protobuf path (decoded with OpenCV).
"""
import io
import os
import threading
import time
from typing import Optional, Tuple

import lmdb
import numpy as np

from imagenet_db.engine.executor import default_workers
from imagenet_db.engine.files import write_file_atomic
from imagenet_db.errors import DamagedDatabaseError, ImagenetDbError, ShapeMismatchError
from imagenet_db.observers.base import Observer
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS, check_image_bytes
from imagenet_db.readers import READERS
from imagenet_db.readers.datumreader import DatumDB
from imagenet_db.outputs.wire import encoded_data, locate_raw_pixels

MEAN_NAME = "imagenet_db.mean.npy"  # the finished mean, inside the database directory
MEAN_CHECKPOINT_NAME = "imagenet_db.mean_sum.npz"  # the running sum, inside DB.partial
MEAN_CHECKPOINT_SECONDS = 30.0


def center_crop_chw(pixels: np.ndarray, crop: Optional[int], key: str = "?") -> np.ndarray:
    """The centre crop x crop window of (C, H, W) ``pixels`` at Caffe's TEST-phase offsets
    ``((H - crop) // 2, (W - crop) // 2)`` (a view); ``pixels`` itself when crop is None/0.
    Raises ShapeMismatchError naming ``key`` when the image is smaller than the crop."""
    if not crop:
        return pixels
    _, h, w = pixels.shape
    if h < crop or w < crop:
        raise ShapeMismatchError(f"datum {key} is {w}x{h} pixels, smaller than the {crop}x{crop} "
                                 f"centre crop of the mean (--crop_size/--mean_crop)")
    top, left = (h - crop) // 2, (w - crop) // 2
    return pixels[:, top:top + crop, left:left + crop]


def size_mismatch(key: str, shape: tuple, first_key: str, first_shape: tuple) -> ShapeMismatchError:
    """The error for datum ``key`` of (C, H, W) ``shape`` in a mean of ``first_shape`` images."""
    return ShapeMismatchError(
        f"datum {key} has channels/height/width {tuple(shape)} but the first datum {first_key} "
        f"has {tuple(first_shape)}; the mean needs one size (resize with "
        f"--resize_height/--resize_width)")


class MeanAccumulator:
    """Running exact sum of equally sized (C, H, W) images.

    add(pixels, key): pixels is a (C, H, W) uint8 array (float arrays are summed in float64).
    Raises ShapeMismatchError naming ``key`` when its shape differs from the first image's.
    """

    def __init__(self):
        self.total: Optional[np.ndarray] = None
        self.count = 0
        self.first_key: Optional[str] = None

    def add(self, pixels: np.ndarray, key: str = "?") -> None:
        """Add one (C, H, W) image (uint8 or float) under ``key``; raises ShapeMismatchError
        naming it when its shape differs from the first image's."""
        if self.total is None:
            dtype = np.uint64 if pixels.dtype == np.uint8 else np.float64
            self.total = np.zeros(pixels.shape, dtype=dtype)
            self.first_key = key
        elif pixels.shape != self.total.shape:
            raise size_mismatch(key, pixels.shape, self.first_key, self.total.shape)
        np.add(self.total, pixels, out=self.total, casting="unsafe")
        self.count += 1

    def merge(self, other: "MeanAccumulator") -> None:
        """Add another accumulator's sum (same shape) into this one."""
        if other.total is None:
            return
        if self.total is None:
            self.total, self.count, self.first_key = other.total.copy(), other.count, other.first_key
            return
        if other.total.shape != self.total.shape:
            raise ShapeMismatchError(f"datum {other.first_key} has shape {other.total.shape}, "
                                     f"datum {self.first_key} has {self.total.shape}")
        self.total += other.total
        self.count += other.count

    def mean(self) -> np.ndarray:
        """The mean image, (C, H, W) float32. Raises ImagenetDbError if nothing was added."""
        if not self.count:
            raise ImagenetDbError("no images to average: the mean of an empty database is undefined")
        return (self.total.astype(np.float64) / self.count).astype(np.float32)


class MeanObserver(Observer):
    """The mean of the stored images, accumulated while a database is written.

    Equal to ``compute_db_mean`` on the finished database (exact integer sums). Kept across
    interruptions: right after a commit, at most every ``MEAN_CHECKPOINT_SECONDS``, the exact
    sum is saved in ``DB.partial/imagenet_db.mean_sum.npz`` with the index of the last record
    in it; a resumed build loads it and reads the datums committed after it back from the
    database. The finished mean is kept as ``DB/imagenet_db.mean.npy``. Results: ``mean``
    ((C, H, W) float32, BGR) and ``mean_count``.
    """
    name = "mean"
    needs_pixels = True

    def __init__(self, crop: Optional[int] = None):
        self.crop = crop or None  # centre crop x crop window of every image (variable sizes)
        self.acc = MeanAccumulator()
        self.mean: Optional[np.ndarray] = None
        self.count = 0
        self._last_checkpoint = time.monotonic()

    def identity(self) -> dict:
        return {"compute_mean": True, **({"mean_crop": self.crop} if self.crop else {})}

    def restore(self, build: str, output, done: int) -> int:
        """Load the checkpoint and add the committed datums after it (records < ``done``)."""
        self.acc, upto = _load_checkpoint(build, done - 1)
        reread = 0
        if done and upto + 1 < done:
            for index, name, pixels in output.stored(upto + 1):
                if index >= done:
                    break
                self.acc.add(center_crop_chw(pixels, self.crop, name), name)
                reread += 1
        return reread

    def add(self, record, encoded) -> None:
        self.acc.add(center_crop_chw(encoded.pixels, self.crop, encoded.name), encoded.name)

    def committed(self, build: str, last_index: int) -> None:
        if time.monotonic() - self._last_checkpoint >= MEAN_CHECKPOINT_SECONDS:
            _save_checkpoint(build, self.acc, last_index)
            self._last_checkpoint = time.monotonic()

    def finish(self, build: str) -> dict:
        """Write ``imagenet_db.mean.npy`` into the build; the manifest's mean fields."""
        _remove(os.path.join(build, MEAN_CHECKPOINT_NAME))
        if not self.acc.count:
            return {}
        self.mean, self.count = self.acc.mean(), self.acc.count
        buf = io.BytesIO()
        np.save(buf, self.mean)
        write_file_atomic(os.path.join(build, MEAN_NAME), buf.getvalue())
        return {"mean_count": self.count, "mean_file": MEAN_NAME}

    def finished(self, db_path: str, manifest: dict) -> None:
        """Take the mean of an already finished database from its ``imagenet_db.mean.npy``."""
        path = os.path.join(db_path, MEAN_NAME)
        if os.path.isfile(path):
            self.mean = np.load(path, allow_pickle=False)
            self.count = int(manifest.get("mean_count", manifest.get("entries", 0)))

    def results(self) -> dict:
        return {"mean": self.mean, "mean_count": self.count} if self.mean is not None else {}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _save_checkpoint(build: str, acc: MeanAccumulator, last_index: int) -> None:
    """Checkpoint the exact pixel sum of all records up to ``last_index`` (all committed)."""
    if acc.total is None:
        return
    path = os.path.join(build, MEAN_CHECKPOINT_NAME)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    with open(tmp, "wb") as f:
        np.savez(f, total=acc.total, count=np.int64(acc.count), last_index=np.int64(last_index),
                 first_key=np.array(acc.first_key or ""))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(build: str, upto_index: int) -> Tuple[MeanAccumulator, int]:
    """The checkpointed accumulator and its last index; a fresh one and -1 when there is no
    usable checkpoint (none, unreadable, or beyond ``upto_index``)."""
    acc = MeanAccumulator()
    try:
        with np.load(os.path.join(build, MEAN_CHECKPOINT_NAME), allow_pickle=False) as z:
            last_index = int(z["last_index"])
            if last_index <= upto_index:
                acc.total, acc.count = z["total"].copy(), int(z["count"])
                acc.first_key = str(z["first_key"]) or None
                return acc, last_index
    except (OSError, ValueError, KeyError):
        pass
    return MeanAccumulator(), -1


SUMS_MEMORY = 1 << 30  # bytes of per-thread sums compute_db_mean holds at most


class _SumWorker:
    """Exact sum of a share of a database's datums (see compute_db_mean).

    shape: the (C, H, W) every datum must have (the first datum's). Pixels from raw datums are
    staged in a uint16 partial sum; decoded/float pixels go through a MeanAccumulator.
    ``mismatch`` holds (position, key, shape) of the first datum of another size.
    """
    PARTIAL_LIMIT = 257  # 257 * 255 = 65535, the most uint8 images a uint16 sum holds exactly

    def __init__(self, shape: tuple, db, crop: Optional[int] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.shape, self.db, self.path, self.crop = shape, db, db.path, crop
        self.max_pixels = max_pixels
        self.size = shape[0] * shape[1] * shape[2]
        self.total = np.zeros(self.size, dtype=np.uint64)
        self.partial = np.zeros(self.size, dtype=np.uint16)
        self.staged = self.count = 0
        self.other = MeanAccumulator()
        self.mismatch: Optional[tuple] = None
        self.error: Optional[BaseException] = None

    def add(self, position: int, key, value) -> bool:
        """Add one serialized datum; False when it has another shape (then stop)."""
        found = locate_raw_pixels(value)
        if found is not None and not self.crop and found[0] == self.shape and found[2] == self.size:
            self._stage(np.frombuffer(value, dtype=np.uint8, count=self.size, offset=found[1]))
            return True
        name = bytes(key).decode("utf-8", "replace")
        if found is not None and self.crop:
            (c, h, w), count = found[0], found[2]
            if c == self.shape[0] and count == c * h * w:
                pixels = np.frombuffer(value, dtype=np.uint8, count=count, offset=found[1])
                self._stage(center_crop_chw(pixels.reshape(c, h, w), self.crop, name).ravel())
                return True
        pixels, _ = decode_checked(self.db, key, value, self.max_pixels)  # (C, H, W), BGR
        pixels = center_crop_chw(pixels, self.crop, name)
        if pixels.shape != self.shape:
            self.mismatch = (position, name, tuple(pixels.shape))
            return False
        if pixels.dtype == np.uint8:
            self._stage(pixels.ravel())
        else:
            self.other.add(pixels, name)
        return True

    def _stage(self, pixels: np.ndarray) -> None:
        np.add(self.partial, pixels, out=self.partial, casting="unsafe")
        self.staged += 1
        if self.staged == self.PARTIAL_LIMIT:
            self.fold()

    def fold(self) -> None:
        """Move the uint16 partial sum into the uint64 total."""
        np.add(self.total, self.partial, out=self.total, casting="unsafe")
        self.count += self.staged
        self.partial[:] = 0
        self.staged = 0


class OversizedDatumError(ImagenetDbError):
    """An encoded datum whose header declares more pixels than --max_pixels (not decoded)."""


def decode_checked(db, key, value, max_pixels: int = DEFAULT_MAX_PIXELS):
    """``db.decode(key, value)`` after, for an encoded datum, the header checks of a build
    (``imaging.headers.check_image_bytes``: e.g. a declared width*height over ``max_pixels``,
    0 = no cap): OversizedDatumError naming the database and the datum instead of a decode."""
    data = encoded_data(value)
    problem = check_image_bytes(data, max_pixels) if data is not None else None
    if problem:
        name = bytes(key[:60]).decode("utf-8", "replace")
        raise OversizedDatumError(f"{db.path}: datum {name!r}: {problem}; not decoded")
    return db.decode(bytes(key), value)


def _first_datum_shape(db, max_pixels: int) -> Optional[Tuple[str, tuple]]:
    """(key, (C, H, W)) of the database's first datum, None for an empty database."""
    for key, value in db.items():
        pixels, _ = decode_checked(db, key, value, max_pixels)
        return key.decode("utf-8", "replace"), tuple(pixels.shape)
    return None


def _share(worker: _SumWorker, share: int, shares: int) -> None:
    """Add every ``shares``-th datum, from position ``share`` on, walking one cursor."""
    try:
        for position, (key, value) in enumerate(worker.db.items(buffers=True)):
            if position % shares == share and not worker.add(position, key, value):
                return
        worker.fold()
    except BaseException as exc:  # reported by the calling thread
        worker.error = exc


def compute_db_mean(path: str, backend: Optional[str] = None,
                    workers: Optional[int] = None, crop: Optional[int] = None,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, int]:
    """Mean of all datums of an LMDB/LevelDB, as Caffe's compute_image_mean.

    crop: average the centre crop x crop window of every datum instead of the whole image
    (Caffe's TEST-phase crop offsets), so databases whose images differ in size (shorter-side
    builds) have a mean: (C, crop, crop). Caffe's Data layer only accepts a mean_file of the
    datums' full size, so for such databases use its per-channel values (mean_value).

    Sums exactly in integers (uint16 partial sums folded into uint64; see the module docstring).
    Encoded datums are decoded (BGR). The database is read with ``DatumDB`` (read-only,
    lock-free, files unchanged). workers: threads for LMDB, each walking the keys and adding
    every workers-th datum (None = all cores; LevelDB is read by one thread). Returns
    ((C, H, W) float32 mean, datum count).
    max_pixels: an encoded datum whose header declares more pixels (width*height) is an
    OversizedDatumError naming it, checked before it is decoded (as builds check files; 0 = no
    cap). Raises ShapeMismatchError naming the first datum (in key order) whose size differs from the
    first datum's (with crop: whose channels differ, or that is smaller than the crop),
    ImagenetDbError for an empty database or a value that is not a Datum,
    DatabaseError for a database that cannot be opened, DamagedDatabaseError for a damaged one.
    """
    try:
        return _compute_db_mean(path, backend, workers, crop, max_pixels)
    except lmdb.Error as exc:  # a page that cannot be read: one line, not a traceback
        raise DamagedDatabaseError(f"{path}: damaged LMDB: {exc}") from None


def _compute_db_mean(path: str, backend: Optional[str], workers: Optional[int],
                     crop: Optional[int], max_pixels: int) -> Tuple[np.ndarray, int]:
    with DatumDB(path, backend, layout="CHW") as db:
        first = _first_datum_shape(db, max_pixels)
        if first is None:
            raise ImagenetDbError("no images to average: the mean of an empty database is "
                                  "undefined")
        first_key, shape = first
        if crop:
            shape = (shape[0], crop, crop)
        shares = max(1, default_workers() if workers is None else int(workers))
        # each share holds a uint64 sum and a uint16 stage of the datum's size: at most
        # SUMS_MEMORY of them (huge datums are summed by fewer threads, not in more memory)
        shares = min(shares, max(1, SUMS_MEMORY // (10 * int(np.prod(shape)))))
        if not READERS[db.backend].PARALLEL_READS:
            shares = 1
        sums = [_SumWorker(shape, db, crop, max_pixels) for _ in range(shares)]
        if shares == 1:
            _share(sums[0], 0, 1)
        else:
            threads = [threading.Thread(target=_share, args=(sums[i], i, shares),
                                        name=f"imagenet-db-mean-{i}") for i in range(shares)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for worker in sums:
            if worker.error is not None:
                raise worker.error
    mismatches = [w.mismatch for w in sums if w.mismatch is not None]
    if mismatches:
        _, key, other = min(mismatches)
        raise size_mismatch(key, other, first_key, shape)
    count = sum(w.count + w.other.count for w in sums)
    integers = sums[0].total
    for worker in sums[1:]:  # in place: no temporary of the datum's size per share
        integers += worker.total
    total = integers.reshape(shape).astype(np.float64)
    integers = None
    for worker in sums:
        worker.total = None  # freed before the division
        if worker.other.count:
            total += worker.other.total
    total /= count
    return total.astype(np.float32), count
