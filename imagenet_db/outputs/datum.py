"""Caffe Datum <-> numpy image conversion, with Caffe 1.0's exact field layout.

A raw Datum (as Caffe's ``CVMatToDatum`` writes it) has ``channels``, ``height``, ``width``,
``data`` = uint8 pixels in planar C x H x W order with OpenCV's BGR channel order, ``label``
and ``encoded = false`` all explicitly set, so its wire bytes are
``08 C 10 H 18 W 22 <len> <pixels> 28 <label> 38 00``.
An encoded Datum (``ReadFileToDatum`` / ``cv::imencode``) holds the bytes of an image file
with ``encoded = true``; imagenet-db also fills in channels/height/width, which Caffe leaves out.
"""
from typing import Optional

import cv2
import numpy as np

from imagenet_db.crc import crc32
from imagenet_db.errors import DatabaseError
from imagenet_db.imaging.decode import chw_view, decode_flag_for
from imagenet_db.outputs.base import Encoded
from imagenet_db.outputs.wire import encoded_datum_bytes, raw_datum_buffer
from imagenet_db.protos import Datum


def caffe_key(index: int, relpath: str) -> bytes:
    """Database key as Caffe's convert_imageset writes it: ``format_int(index, 8) + "_" + relpath``,
    UTF-8 encoded. Zero-padding makes byte order equal list order (below 10^8 entries)."""
    return b"%08d_%s" % (index, relpath.encode("utf-8"))


def caffe_key_size(index: int, relpath: str) -> int:
    """len(caffe_key(index, relpath)) in bytes, without building the key (the size checks run
    before a build, once per record)."""
    return max(8, len(str(index))) + 1 + len(relpath.encode("utf-8"))


def key_index(key: bytes, where: str = "") -> int:
    """The record index of a Caffe key ``%08d_relpath``. Raises DatabaseError for other keys."""
    digits, sep, _ = bytes(key).partition(b"_")
    if not sep or not digits.isdigit():
        raise DatabaseError(f"{where}key {bytes(key)[:60]!r} is not of Caffe's form '%08d_relpath'")
    return int(digits)


def parse_datum(value: bytes, name: str, where: str) -> Datum:
    """Parse a stored value as a Datum; DatabaseError naming ``where`` and the key ``name``."""
    datum = Datum()
    try:
        datum.ParseFromString(value)
    except Exception:
        raise DatabaseError(f"{where}: value of key {name[:60]!r} is not a Caffe Datum") from None
    return datum


def encode_datum(record, image) -> Encoded:
    """The Datum of one transformed image (``imaging.transform.Image``) for ``record``.

    Raw (``image.encoded`` is None): channels/height/width, uint8 CHW BGR data, label,
    encoded=false, written straight to wire bytes by ``outputs.wire`` (one pixel copy); the
    returned pixels are a (C, H, W) view into those bytes. Encoded: the image file bytes with
    encoded=true and channels/height/width filled in, also written as wire bytes (the same
    bytes as ``encoded_datum(...).SerializeToString()``); pixels = ``image.pixels`` in CHW when
    given. The name is the record's Caffe key; the checksum is the CRC-32 of key + value
    (``entry_checksum``), computed here on the worker.
    """
    key = caffe_key(record.index, record.relpath)
    name = key.decode("utf-8", "replace")
    if image.encoded is None:
        value, pixels = raw_datum_buffer(image.pixels, record.label)
    else:
        value = encoded_datum_bytes(image.encoded, record.label, image.shape)
        pixels = chw_view(image.pixels) if image.pixels is not None else None
    return Encoded(value, pixels, image.shape, name, entry_checksum(key, value))


def entry_checksum(key: bytes, value) -> int:
    """CRC-32 (zlib's) of a database entry's key followed by its value: what the completion
    record's content checksum sums (``observers.checksum``) and ``verify`` recomputes."""
    return crc32(value, crc32(key))


def hwc_to_chw_bytes(image: np.ndarray) -> bytes:
    """Return the pixels of an OpenCV image as planar CHW bytes.

    image: uint8 array of shape (H, W) or (H, W, C), channel order as OpenCV gives it (BGR).
    Returns C*H*W bytes: all of channel 0 row by row, then channel 1, then channel 2.
    """
    if image.ndim == 2:
        return image.tobytes()
    return image.transpose(2, 0, 1).tobytes()


def image_to_datum(image: np.ndarray, label: int) -> Datum:
    """Build a raw Datum from a decoded image, as Caffe's ``CVMatToDatum`` + ``set_label`` do.

    image: uint8 (H, W) grayscale or (H, W, C) BGR array. label: int32 class label.
    Returns a Datum with channels/height/width, CHW uint8 data, label, encoded=false.
    Raises ValueError for a non-uint8 image.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"Datum pixels must be uint8, got {image.dtype}")
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    return Datum(channels=channels, height=height, width=width,
                 data=hwc_to_chw_bytes(image), label=label, encoded=False)


def encoded_datum(file_bytes: bytes, label: int, shape: Optional[tuple] = None) -> Datum:
    """Build an encoded Datum holding image file bytes (``ReadFileToDatum`` / ``imencode``).

    file_bytes: the bytes of a JPEG/PNG/... file. label: int32 class label.
    shape: optional (channels, height, width) of the decoded image; Caffe leaves these unset,
    imagenet-db fills them in so readers can know the size without decoding.
    """
    datum = Datum(data=file_bytes, label=label, encoded=True)
    if shape is not None:
        datum.channels, datum.height, datum.width = shape
    return datum


def datum_to_chw(datum: Datum, key: str = "?") -> np.ndarray:
    """Pixels of a Datum as a (C, H, W) array.

    Raw datums give uint8 from ``data`` (or float32 from ``float_data`` when data is empty);
    encoded datums are decoded with OpenCV (BGR). Raises DatabaseError naming ``key`` when
    the datum cannot be decoded or its data length disagrees with channels*height*width.
    """
    if datum.encoded:
        buf = np.frombuffer(datum.data, dtype=np.uint8)
        image = cv2.imdecode(buf, decode_flag_for(datum.channels)) if buf.size else None
        if image is None:
            raise DatabaseError(f"datum {key}: encoded image data cannot be decoded")
        if image.ndim == 2:
            return image[np.newaxis]
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    shape = (datum.channels, datum.height, datum.width)
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        pixels = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        pixels = np.asarray(datum.float_data, dtype=np.float32)
    if pixels.size != count:
        raise DatabaseError(f"datum {key}: {pixels.size} values but channels*height*width = "
                            f"{shape[0]}*{shape[1]}*{shape[2]} = {count}")
    return pixels.reshape(shape)


def datum_to_image(datum: Datum, key: str = "?") -> np.ndarray:
    """Pixels of a Datum as an OpenCV image: (H, W) for one channel, else (H, W, C) BGR."""
    chw = datum_to_chw(datum, key)
    if chw.shape[0] == 1:
        return chw[0]
    return np.ascontiguousarray(chw.transpose(1, 2, 0))
