"""The mean image (``imagenet_mean.binaryproto``) and per-channel mean values.

As Caffe's ``tools/compute_image_mean.cpp``: the element-wise mean over all datums of their
(C, H, W) pixels, written as a BlobProto with num=1, channels, height, width and float data
(CHW order, BGR channels for colour images). Unlike Caffe, which sums in float32 (and drifts
over 1.28M images), the sum is kept as exact uint64 integers, so the mean is exact to float32
rounding and independent of the order in which images are added.
"""
import os
from typing import Optional, Tuple

import numpy as np

from imagenet_db.datum import datum_to_chw
from imagenet_db.errors import ImagenetDbError, ShapeMismatchError
from imagenet_db.protos import BlobProto, Datum
from imagenet_db.sinks import iterate_db


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
        if self.total is None:
            dtype = np.uint64 if pixels.dtype == np.uint8 else np.float64
            self.total = np.zeros(pixels.shape, dtype=dtype)
            self.first_key = key
        elif pixels.shape != self.total.shape:
            raise ShapeMismatchError(
                f"datum {key} has channels/height/width {tuple(pixels.shape)} but the first "
                f"datum {self.first_key} has {tuple(self.total.shape)}; the mean needs one size "
                f"(resize with --resize_height/--resize_width)")
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


def mean_to_blobproto(mean: np.ndarray) -> BlobProto:
    """A (C, H, W) float mean as Caffe's BlobProto: num=1, channels, height, width, float data."""
    channels, height, width = mean.shape
    blob = BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return blob


def write_mean(path: str, mean: np.ndarray) -> None:
    """Write a (C, H, W) mean to ``path``: a ``.npy`` file (float32 C x H x W) when the name ends
    in .npy, else a binary BlobProto (mean_file for Caffe's transform_param). Atomic."""
    tmp = f"{path}.tmp-{os.getpid()}"
    if path.endswith(".npy"):
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(mean, dtype=np.float32))
    else:
        with open(tmp, "wb") as f:
            f.write(mean_to_blobproto(mean).SerializeToString())
    os.replace(tmp, path)


def read_mean(path: str) -> np.ndarray:
    """Read a mean file (binaryproto BlobProto, or .npy) as a (C, H, W) float32 array.

    Accepts both the legacy num/channels/height/width and the ``shape`` form of BlobProto.
    Raises ImagenetDbError when the file is neither or its size disagrees with its shape.
    """
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    blob = BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except Exception as exc:
        raise ImagenetDbError(f"{path}: not a BlobProto mean file: {exc}") from None
    if blob.HasField("shape"):
        dims = tuple(int(d) for d in blob.shape.dim)
    else:
        dims = (blob.num, blob.channels, blob.height, blob.width)
    data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
    if int(np.prod(dims)) != data.size or data.size == 0:
        raise ImagenetDbError(f"{path}: BlobProto holds {data.size} values for shape {dims}")
    shape = dims[-3:] if len(dims) >= 3 else (1,) * (3 - len(dims)) + dims
    return data.reshape(shape)


def channel_means(mean: np.ndarray) -> np.ndarray:
    """Per-channel mean values (the ``mean_value`` entries of a transform_param), float64 (C,)."""
    return mean.astype(np.float64).reshape(mean.shape[0], -1).mean(axis=1)


def compute_db_mean(path: str, backend: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """Mean of all datums of an LMDB/LevelDB, as Caffe's compute_image_mean.

    Encoded datums are decoded (BGR). Returns ((C, H, W) float32 mean, datum count).
    Raises ShapeMismatchError naming the first datum whose size differs, DatabaseError for a
    database that cannot be opened or a datum that cannot be parsed.
    """
    acc = MeanAccumulator()
    datum = Datum()
    for key, value in iterate_db(path, backend):
        name = key.decode("utf-8", "replace")
        try:
            datum.ParseFromString(value)
        except Exception:
            raise ImagenetDbError(f"{path}: value of key {name} is not a Caffe Datum") from None
        acc.add(datum_to_chw(datum, name), name)
    return acc.mean(), acc.count
