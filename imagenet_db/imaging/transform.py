"""The per-image transform: image file bytes -> an ``Image`` (pixels and/or encoded bytes).

Follows Caffe 1.0's ``ReadImageToDatum`` (src/caffe/util/io.cpp) up to the point where a
Datum would be filled (that last step belongs to the output format, ``outputs.datum``):
1. decode with OpenCV: 3-channel BGR (``IMREAD_COLOR``) or, with ``is_color=False``,
   ``IMREAD_GRAYSCALE``; an undecodable file is a skip (``ImageSkipped``), as in Caffe;
2. resize with the resize mode (``imaging.resize``; default squash = Caffe's ``cv::resize``
   to resize_width x resize_height, bilinear, when both are > 0);
3. encoded: keep the original file bytes when the decoded image needs no change (no resize,
   colour as asked) and the file extension matches the encoding (jpg == jpeg), else
   ``cv2.imencode('.' + encoding)``.
Deviation (documented): with ``is_color=False`` and ``encoded``, a colour file is re-encoded
as grayscale (Caffe stores the colour file unchanged).
Files kept as they are are not decoded when nothing needs their pixels (no mean): for a JPEG
the size and channels come from its headers (``imaging.headers.decoded_shape``, EXIF
orientation included) and the resize mode says from that size alone that it leaves the image
unchanged (``output_size`` is None); ~0.2 ms instead of ~1.2 ms per ImageNet photo. Other
formats, and JPEGs whose headers leave any doubt, are decoded as before. Deviation
(documented): such a JPEG is stored without libjpeg having read its image data; its structure
was checked (``check_image_bytes``: markers, truncation), so only a file with intact markers
but damaged entropy-coded data, which libjpeg would decode to a partly grey image anyway, is
stored where a decode would have given a garbled image too.
``fast_decode`` (opt-in, not Caffe-identical) lets libjpeg downscale large JPEGs while
decoding: see ``imaging.fastdecode``.
"""
import os
from dataclasses import dataclass, field, make_dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.decode import decode_flag_for, decode_image, is_gray_file, jpeg_ends_early
from imagenet_db.imaging.boxes import stored_boxes
from imagenet_db.imaging.fastdecode import decode_reduced
from imagenet_db.imaging.headers import decoded_shape
from imagenet_db.imaging.resize import DEFAULT_MODE, check_options, mode_params, resize_mode

# Options added after the build record's first version -> their defaults (left out of the
# record while at the default, so records of earlier builds still match); every resize
# mode's params (``imaging.resize``, declared in the mode's module) are such options.
LATER_OPTIONS = {"resize_mode": DEFAULT_MODE,
                 **{param.name: param.default for _, param in mode_params()},
                 "interpolation": "linear", "encode_quality": 0, "fill_value": (), "seed": 0}


class ImageOptionError(ImagenetDbError):
    """Transform settings out of range."""


class ImageSkipped(Exception):
    """An image that cannot be stored (undecodable, cannot be encoded); the text says why."""


class _TransformBehaviour:
    """The methods of ``TransformOptions`` (its fields are made from the resize registry)."""

    def __post_init__(self):
        object.__setattr__(self, "fill_value", tuple(int(v) for v in self.fill_value))
        if not 0 <= self.encode_quality <= 100:
            raise ImageOptionError(f"--encode_quality must be in 1..100 (0 = OpenCV's default "
                                   f"95), not {self.encode_quality}")
        check_options(self)

    @property
    def resizing(self) -> bool:
        """True when the resize mode is asked to resize (squash: both sizes > 0, as Caffe)."""
        return resize_mode(self.resize_mode).active(self)

    @property
    def fixed_size(self) -> bool:
        """True when every stored image has one size (a resizing fixed-size mode): then the
        mean can be taken over whole images."""
        mode = resize_mode(self.resize_mode)
        return mode.FIXED_SIZE and mode.active(self)

    def record(self) -> dict:
        """The options as stored in a build record (compared on --resume). Options added
        after the record's first version are left out while at their default, so records of
        earlier builds still match."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in self.__dict__.items()
                if name not in LATER_OPTIONS or value != LATER_OPTIONS[name]}


# (name, type, default) of the fields: the base ones, each resize mode's params, the rest
_FIELDS = ([("resize_height", int, 0), ("resize_width", int, 0), ("is_color", bool, True),
            ("encoded", bool, False), ("encode_type", str, ""), ("fast_decode", bool, False),
            ("resize_mode", str, DEFAULT_MODE)]
           + [(param.name, type(param.default), param.default) for _, param in mode_params()]
           + [("interpolation", str, "linear"), ("encode_quality", int, 0),
              ("fill_value", Tuple[int, ...], ()), ("seed", int, 0)])
TransformOptions = make_dataclass(
    "TransformOptions", [(name, kind, field(default=default)) for name, kind, default in _FIELDS],
    bases=(_TransformBehaviour,), frozen=True)
TransformOptions.__module__ = __name__
TransformOptions.__doc__ = """How to turn image file bytes into the stored image (the flags of convert_imageset).

    resize_height, resize_width: output size in pixels; 0 keeps the decoded size (both must be
    > 0 to resize). is_color: False decodes to 1-channel grayscale (``--gray``).
    encoded: store encoded image bytes instead of raw pixels. encode_type: 'jpg', 'png', ...;
    empty means "guess from each file's extension" as convert_imageset does.
    fast_decode: when resizing a JPEG to at most half its size on both sides, decode it at
    1/2, 1/4 or 1/8 scale in libjpeg first (faster, pixels differ slightly from Caffe's).
    resize_mode: a name in ``imaging.resize.RESIZE_MODES`` (default squash, Caffe's); crop,
    fill, half_crop (DIGITS) and convnet2 use resize_width x resize_height.
    Then one field per param of a resize mode (its module's ``PARAMS``, in registry order):
    shorter_side, only_shrink for resize_mode 'shorter_side': the shorter side in pixels;
    only_shrink keeps images whose shorter side is already <= it (ImageMagick's "256^>").
    min_dim, max_dim: for resize_mode 'min_max_dim' (SSD-Caffe), pixels, 0 = no bound.
    interpolation: 'linear' (Caffe's bilinear), 'area', 'cubic' or 'auto' (cuda-convnet2's
    rule: AREA when shrinking, CUBIC when enlarging).
    encode_quality: JPEG quality 1..100 for re-encoded images; 0 = OpenCV's default (95, as
    Caffe).
    fill_value: padding of fill/half_crop: () = DIGITS' noise 0..254, else one value or
    (B, G, R) in 0..255. seed: seeds that noise (with each image's relpath).
    Raises ResizeOptionError (an ImagenetDbError) for settings that do not go together.
    """


@dataclass
class Image:
    """One transformed image.

    pixels: (H, W) or (H, W, C) uint8, BGR: the stored pixels (raw output), or for encoded
    output the pixels a reader decodes from ``encoded`` (only when asked for, else None).
    encoded: the image file bytes to store (``options.encoded``), else None.
    shape: (channels, height, width) of the stored image.
    boxes: when the record has an annotation, its boxes on the stored image: (N, 6) float32
    [xmin, ymin, xmax, ymax, label, difficult], coordinates relative to the stored image
    (``imaging.boxes.stored_boxes``); else None. dropped_boxes: boxes left out because the
    resize cut them off.
    """
    pixels: Optional[np.ndarray]
    encoded: Optional[bytes]
    shape: Tuple[int, int, int]
    boxes: Optional[np.ndarray] = None
    dropped_boxes: int = 0


def _extension(relpath: str) -> str:
    return os.path.splitext(relpath)[1][1:].lower()


def matches_encoding(relpath: str, encoding: str) -> bool:
    """True when the file's extension names ``encoding`` (case-insensitive, jpg == jpeg),
    as Caffe's ``matchExt``."""
    ext, enc = _extension(relpath), encoding.lower()
    normal = {"jpg": "jpeg"}
    return normal.get(ext, ext) == normal.get(enc, enc)


def _decode(data: bytes, relpath: str,
            options: TransformOptions) -> Tuple[np.ndarray, bool, Tuple[int, int]]:
    """(decoded and resized image, whether it differs from the file's full-size decode, the
    (width, height) the resize mode was given)."""
    mode = resize_mode(options.resize_mode)
    image = None
    if options.fast_decode and options.resizing:
        image = decode_reduced(data, options.is_color,
                               lambda width, height: mode.output_size(width, height, options))
    reduced = image is not None
    if image is None:
        image = decode_image(data, options.is_color)
    if image is None:
        raise ImageSkipped("cannot decode image data" if data else "empty file (0 bytes)")
    if data[:2] == b"\xff\xd8" and jpeg_ends_early(data, image, options.is_color):
        raise ImageSkipped("truncated JPEG: the image data ends before the last block (libjpeg's "
                           "'premature end of data segment'; the rest would be flat grey)")
    out = mode.apply(image, options, relpath)
    return out, reduced or out is not image, (image.shape[1], image.shape[0])


def _encode_params(encoding: str, options: TransformOptions) -> list:
    if options.encode_quality and encoding.lower() in ("jpg", "jpeg"):
        return [cv2.IMWRITE_JPEG_QUALITY, options.encode_quality]
    return []


def _shape_without_decode(data: bytes, relpath: str,
                          options: TransformOptions) -> Optional[Tuple[int, int, int]]:
    """The stored shape of a file that will be stored as it is, when its headers tell it
    without a decode (see the module docstring); else None."""
    encoding = options.encode_type or _extension(relpath)
    if not encoding or not matches_encoding(relpath, encoding):
        return None
    shape = decoded_shape(data, options.is_color)
    if shape is None:
        return None
    if resize_mode(options.resize_mode).output_size(shape[2], shape[1], options) is not None:
        return None  # resized: re-encoded from pixels
    return shape


def transform_image(data: bytes, relpath: str, options: TransformOptions,
                    want_pixels: bool = False, boxes=None) -> Image:
    """Decode, resize and (``options.encoded``) encode one image file, as Caffe's
    ReadImageToDatum.

    data: the file bytes. relpath: the list path (its extension picks the encoding when
    ``options.encode_type`` is empty). want_pixels: for encoded output, also give the pixels
    a reader decodes from the stored bytes (for the mean); raw output always has its pixels.
    boxes: the record's annotation (``Record.boxes``) or None; ``Image.boxes`` then holds
    them on the stored image (``imaging.boxes.stored_boxes``).
    Raises ImageSkipped for an undecodable image or a failed encode.
    """
    if options.encoded and not want_pixels:
        stored_as_is = _shape_without_decode(data, relpath, options)
        if stored_as_is is not None:
            return Image(None, data, stored_as_is,
                         *stored_boxes(boxes, stored_as_is[2], stored_as_is[1], options))
    image, changed, source = _decode(data, relpath, options)
    return _finish(data, relpath, options, want_pixels, image, changed,
                   stored_boxes(boxes, source[0], source[1], options))


def _finish(data: bytes, relpath: str, options: TransformOptions, want_pixels: bool,
            image: np.ndarray, changed: bool, placed: tuple) -> Image:
    """The stored Image of the decoded, resized ``image`` (encoded when asked), with the
    boxes ``placed`` ((boxes, dropped) of ``stored_boxes``)."""
    height, width = image.shape[:2]
    shape = (1 if image.ndim == 2 else image.shape[2], height, width)
    if not options.encoded:
        return Image(image, None, shape, *placed)
    encoding = options.encode_type or _extension(relpath)
    passthrough = (not changed and encoding and matches_encoding(relpath, encoding)
                   and (options.is_color or is_gray_file(data)))
    if passthrough:
        return Image(image if want_pixels else None, data, shape, *placed)
    ok, buf = cv2.imencode("." + (encoding or "jpg"), image,
                           _encode_params(encoding or "jpg", options))
    if not ok:
        raise ImageSkipped(f"cannot encode image as {encoding!r}")
    pixels = None
    if want_pixels:  # the mean must be of what a reader decodes, not of the pre-encode pixels
        pixels = cv2.imdecode(buf, decode_flag_for(shape[0]))
    return Image(pixels, buf.tobytes(), shape, *placed)
