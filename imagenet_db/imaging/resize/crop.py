"""Crop: scale keeping the aspect ratio until the image covers resize_width x resize_height,
then cut the centre of the side that is still too long (NVIDIA DIGITS' "crop").

Geometry of DIGITS' ``digits/utils/image.py`` ``resize_image``: with ``rw = W / width`` and
``rh = H / height``, an image relatively wider (rw > rh) gets height ``height`` and width
``round(W / rh)``, else width ``width`` and height ``round(H / rw)`` (Python 2 rounding, halves
up); the cut starts at ``round((resized - target) / 2.0)``. Equal ratios: a plain resize; an
image already of the target size is kept. DIGITS resizes with PIL's bilinear filter; we use
``cv2.resize`` (``--interpolation``, default bilinear), so sizes and offsets are DIGITS' and the
pixels OpenCV's.
"""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize.geometry import (digits_cut, digits_ratios, resize_to,
                                                 round_half_up)

FIXED_SIZE = True


def active(options) -> bool:
    """True when both resize_width and resize_height are > 0."""
    return options.resize_width > 0 and options.resize_height > 0


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(resize_width, resize_height), or None when the image is left as it is (no target size,
    or already of the target size)."""
    if not active(options) or (width, height) == (options.resize_width, options.resize_height):
        return None
    return options.resize_width, options.resize_height


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Crop an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above; the
    image itself when left unchanged. ``key`` is not used."""
    if output_size(image.shape[1], image.shape[0], options) is None:
        return image
    width, height = options.resize_width, options.resize_height
    rw, rh = digits_ratios(image, width, height)
    if rw == rh:
        return resize_to(image, width, height, options.interpolation)
    wider = rw > rh
    if wider:
        size = (max(1, round_half_up(image.shape[1] / rh)), height)
    else:
        size = (width, max(1, round_half_up(image.shape[0] / rw)))
    resized = resize_to(image, size[0], size[1], options.interpolation)
    return np.ascontiguousarray(digits_cut(resized, width, height, wider))
