"""Mean files: Caffe's ``imagenet_mean.binaryproto`` (a BlobProto) and its ``.npy`` twin.

As Caffe's ``tools/compute_image_mean.cpp`` writes it: a BlobProto with num=1, channels,
height, width and float data in C x H x W order (BGR channels for colour images), the
``mean_file`` of a ``transform_param``. The ``.npy`` form is a float32 (C, H, W) array.
"""
import os

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.protos import BlobProto


def mean_to_blobproto(mean: np.ndarray) -> BlobProto:
    """A (C, H, W) float mean as Caffe's BlobProto: num=1, channels, height, width, float data."""
    channels, height, width = mean.shape
    blob = BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return blob


def mean_picture(mean: np.ndarray) -> np.ndarray:
    """A (C, H, W) float BGR (or 1-channel) mean as an ordinary picture: (H, W, 3) or (H, W)
    uint8, values rounded to the nearest integer and clipped to 0..255, BGR order for
    ``cv2.imwrite`` (which stores an RGB PNG)."""
    pixels = np.clip(np.rint(np.asarray(mean, dtype=np.float64)), 0, 255).astype(np.uint8)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def write_mean(path: str, mean: np.ndarray) -> None:
    """Write a (C, H, W) mean to ``path``: a ``.npy`` file (float32 C x H x W) when the name ends
    in .npy, a PNG picture (``mean_picture``: rounded, for looking at) when it ends in .png,
    else a binary BlobProto (mean_file for Caffe's transform_param). Atomic."""
    tmp = f"{path}.tmp-{os.getpid()}"
    if path.lower().endswith(".png"):
        import cv2

        ok, buf = cv2.imencode(".png", mean_picture(mean))
        if not ok:
            raise ImagenetDbError(f"{path}: cannot encode the mean as PNG")
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
    elif path.endswith(".npy"):
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
        return np.load(path, allow_pickle=False).astype(np.float32)
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
