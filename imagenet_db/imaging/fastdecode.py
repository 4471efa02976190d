"""Opt-in fast decode (``--fast_decode``): let libjpeg downscale large JPEGs while decoding.

libjpeg can decode a JPEG directly at 1/2, 1/4 or 1/8 of its size by using fewer DCT
coefficients per 8x8 block, which skips most of the inverse-DCT and colour-conversion work.
OpenCV exposes this as ``cv2.IMREAD_REDUCED_{COLOR,GRAYSCALE}_{2,4,8}``. When the requested
output (resize_width x resize_height) is at most half the JPEG's size on both sides, the
image is decoded at the largest such reduction that still leaves at least the output size,
and then squashed to the output size with the same ``cv2.resize`` (bilinear) as the exact path.

The result is close to, but not byte-identical with, Caffe's decode-then-resize: the DCT
downscale is a box-like filter rather than bilinear sampling of the full image. The default
path (no ``--fast_decode``) is unchanged and stays byte-identical to Caffe. Files that are not
JPEGs, JPEGs too small to reduce, and JPEGs whose EXIF orientation turns them on their side
so that the reduced image would be smaller than the output, take the exact path.
"""
from typing import Optional, Tuple

import cv2
import numpy as np

# SOFn markers that carry the frame size (all but DHT=C4, JPG=C8, DAC=CC)
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}  # no length field
_REDUCED_FLAGS = {
    True: {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8},
    False: {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
            8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) in pixels from a JPEG's frame header (SOFn marker), as stored in the
    file (before any EXIF rotation); None when ``data`` is not a JPEG or the header is cut
    short. Reads only the marker segments before the frame header, not the image data."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = data[pos + 2] << 8 | data[pos + 3]
        if marker in _SOF_MARKERS:
            if pos + 9 > end or length < 7:
                return None
            height = data[pos + 5] << 8 | data[pos + 6]
            width = data[pos + 7] << 8 | data[pos + 8]
            return (width, height) if width and height else None
        if marker == 0xDA or length < 2:  # start of scan before any frame header: malformed
            return None
        pos += 2 + length
    return None


def reduction_for(source: Tuple[int, int], target: Tuple[int, int]) -> int:
    """Largest libjpeg reduction (8, 4 or 2) with target <= source / reduction on both sides,
    or 1 when the target is more than half the source on either side.
    source, target: (width, height) in pixels."""
    for factor in (8, 4, 2):
        if target[0] * factor <= source[0] and target[1] * factor <= source[1]:
            return factor
    return 1


def decode_reduced(data: bytes, is_color: bool, target: Tuple[int, int]) -> Optional[np.ndarray]:
    """Decode a JPEG at a libjpeg reduction that leaves at least ``target`` pixels per side.

    data: file bytes. is_color: 3-channel BGR (True) or 1-channel grayscale. target: (width,
    height) the caller resizes to afterwards. Returns the reduced (H', W'[, 3]) uint8 image, or
    None when no reduction applies (not a JPEG, too small, or the decoded image came out smaller
    than ``target``, e.g. after an EXIF rotation): the caller then decodes at full size.
    """
    size = jpeg_size(data)
    if size is None:
        return None
    factor = reduction_for(size, target)
    if factor == 1:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[is_color][factor])
    except cv2.error:
        return None
    if image is None or image.shape[1] < target[0] or image.shape[0] < target[1]:
        return None
    return image
