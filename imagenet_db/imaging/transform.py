"""The per-image transform: image file bytes -> serialized Caffe Datum (+ pixels for the mean).

Follows Caffe 1.0's ``ReadImageToDatum`` (src/caffe/util/io.cpp) step by step:
1. decode with OpenCV: 3-channel BGR (``IMREAD_COLOR``) or, with ``is_color=False``,
   ``IMREAD_GRAYSCALE``; an undecodable file is a skip, not an error (Caffe logs and skips);
2. if both resize_height and resize_width are > 0, ``cv2.resize`` to (width, height) with
   OpenCV's default bilinear interpolation (``INTER_LINEAR``), i.e. a squash, no crop;
3. raw: pixels as uint8 CHW BGR bytes; encoded: the original file bytes when the decoded image
   needs no change (no resize, colour as asked) and the file extension matches the encoding
   (jpg == jpeg), else ``cv2.imencode('.' + encoding)``.
Deviation (documented): with ``is_color=False`` and ``encoded``, a colour file is re-encoded
as grayscale (Caffe stores the colour file unchanged).
Raw datums are serialized by ``imagenet_db.outputs.wire`` (same bytes as protobuf, one pixel copy that
runs outside the GIL). ``fast_decode`` (opt-in, not Caffe-identical) lets libjpeg downscale
large JPEGs while decoding: see ``imagenet_db.imaging.fastdecode``.
"""
import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from imagenet_db.outputs.datum import encoded_datum, decode_flag_for
from imagenet_db.imaging.fastdecode import decode_reduced
from imagenet_db.outputs.wire import raw_datum_buffer


@dataclass(frozen=True)
class TransformOptions:
    """How to turn an image into a Datum (the flags of Caffe's convert_imageset).

    resize_height, resize_width: output size in pixels; 0 keeps the decoded size (both must be
    > 0 to resize). is_color: False decodes to 1-channel grayscale (``--gray``).
    encoded: store encoded image bytes instead of raw pixels. encode_type: 'jpg', 'png', ...;
    empty means "guess from each file's extension" as convert_imageset does.
    want_pixels: also return the CHW uint8 pixels that the stored Datum decodes to (for the mean).
    fast_decode: when resizing a JPEG to at most half its size on both sides, decode it at
    1/2, 1/4 or 1/8 scale in libjpeg first (faster, pixels differ slightly from Caffe's).
    """
    resize_height: int = 0
    resize_width: int = 0
    is_color: bool = True
    encoded: bool = False
    encode_type: str = ""
    want_pixels: bool = False
    fast_decode: bool = False

    @property
    def resizing(self) -> bool:
        """True when both resize sizes are > 0 (Caffe resizes only then)."""
        return self.resize_height > 0 and self.resize_width > 0


@dataclass
class Transformed:
    """Result of transforming one record.

    value: serialized Datum bytes (bytes, or a bytearray for raw datums), or None when the
    image was skipped. error: why it was skipped (None on success). pixels: (C, H, W) uint8
    pixels for the mean when requested. shape: (channels, height, width) of the stored image.
    """
    value: Optional[bytes]
    error: Optional[str] = None
    pixels: Optional[np.ndarray] = None
    shape: Optional[tuple] = None


def _extension(relpath: str) -> str:
    return os.path.splitext(relpath)[1][1:].lower()


def matches_encoding(relpath: str, encoding: str) -> bool:
    """True when the file's extension names ``encoding`` (case-insensitive, jpg == jpeg),
    as Caffe's ``matchExt``."""
    ext, enc = _extension(relpath), encoding.lower()
    normal = {"jpg": "jpeg"}
    return normal.get(ext, ext) == normal.get(enc, enc)


def decode_image(data: bytes, is_color: bool) -> Optional[np.ndarray]:
    """Decode image file bytes with OpenCV; (H, W, 3) BGR or (H, W) uint8, None if undecodable.
    EXIF orientation is applied, as by Caffe's ``cv::imread``."""
    if not data:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        return cv2.imdecode(buf, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        return None


def _chw_view(image: np.ndarray) -> np.ndarray:
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def transform_image(data: bytes, relpath: str, label: int, options: TransformOptions) -> Transformed:
    """Turn one image file's bytes into a serialized Datum, as Caffe's ReadImageToDatum.

    data: the file bytes. relpath: the list path (its extension picks the encoding when
    ``options.encode_type`` is empty). label: int32 label stored in the Datum.
    Returns a Transformed; undecodable images give ``value=None`` and an ``error`` text.
    """
    image = None
    if options.fast_decode and options.resizing:
        image = decode_reduced(data, options.is_color, (options.resize_width, options.resize_height))
    if image is None:
        image = decode_image(data, options.is_color)
    if image is None:
        return Transformed(None, "cannot decode image data" if data else "empty file (0 bytes)")
    if options.resizing:
        image = cv2.resize(image, (options.resize_width, options.resize_height))
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    shape = (channels, height, width)

    if not options.encoded:
        value, pixels = raw_datum_buffer(image, label)
        return Transformed(value, pixels=pixels if options.want_pixels else None, shape=shape)

    encoding = options.encode_type or _extension(relpath)
    passthrough = (not options.resizing and encoding and matches_encoding(relpath, encoding)
                   and (options.is_color or _is_gray_file(data)))
    if passthrough:
        stored = data
        pixels = _chw_view(image) if options.want_pixels else None
    else:
        ok, buf = cv2.imencode("." + (encoding or "jpg"), image)
        if not ok:
            return Transformed(None, f"cannot encode image as {encoding!r}")
        stored = buf.tobytes()
        pixels = None
        if options.want_pixels:  # the mean must be of what a reader decodes, not of pre-encode pixels
            pixels = _chw_view(cv2.imdecode(buf, decode_flag_for(channels)))
    value = encoded_datum(stored, label, shape).SerializeToString()
    return Transformed(value, pixels=pixels, shape=shape)


def _is_gray_file(data: bytes) -> bool:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    return image is not None and image.ndim == 2
