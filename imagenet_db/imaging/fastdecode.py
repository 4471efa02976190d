"""Opt-in fast decode (``--fast_decode``): let libjpeg downscale large JPEGs while decoding.

libjpeg can decode a JPEG directly at 1/2, 1/4 or 1/8 of its size by using fewer DCT
coefficients per 8x8 block, which skips most of the inverse-DCT and colour-conversion work.
OpenCV exposes this as ``cv2.IMREAD_REDUCED_{COLOR,GRAYSCALE}_{2,4,8}``. When the resize
mode's output size is at most half the JPEG's size on both sides, the image is decoded at the
largest such reduction that still leaves at least the output size, and then resized by the
same resize mode as the exact path.

The result is close to, but not byte-identical with, Caffe's decode-then-resize: the DCT
downscale is a box-like filter rather than bilinear sampling of the full image. The default
path (no ``--fast_decode``) is unchanged and stays byte-identical to Caffe. Files that are not
JPEGs, JPEGs too small to reduce, and JPEGs whose EXIF orientation turns them on their side
so that the reduced image would be smaller than the output, take the exact path.
"""
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

from imagenet_db.imaging.headers import jpeg_size

_REDUCED_FLAGS = {
    True: {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8},
    False: {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
            8: cv2.IMREAD_REDUCED_GRAYSCALE_8},
}


def reduction_for(source: Tuple[int, int], target: Tuple[int, int]) -> int:
    """Largest libjpeg reduction (8, 4 or 2) with target <= source / reduction on both sides,
    or 1 when the target is more than half the source on either side.
    source, target: (width, height) in pixels."""
    for factor in (8, 4, 2):
        if target[0] * factor <= source[0] and target[1] * factor <= source[1]:
            return factor
    return 1


def decode_reduced(data: bytes, is_color: bool,
                   target_for: Callable[[int, int], Optional[Tuple[int, int]]]
                   ) -> Optional[np.ndarray]:
    """Decode a JPEG at a libjpeg reduction that leaves at least the target pixels per side.

    data: file bytes. is_color: 3-channel BGR (True) or 1-channel grayscale. target_for:
    maps the JPEG's (width, height) to the (width, height) the caller resizes to afterwards
    (None: no resize, so no reduction). Returns the reduced (H', W'[, 3]) uint8 image, or
    None when no reduction applies (not a JPEG, too small, or the decoded image came out smaller
    than ``target``, e.g. after an EXIF rotation): the caller then decodes at full size.
    """
    size = jpeg_size(data)
    target = target_for(*size) if size is not None else None
    if target is None:
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
