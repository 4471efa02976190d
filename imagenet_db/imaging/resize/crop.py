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
from typing import Optional

import numpy as np

from imagenet_db.imaging.resize.geometry import (Placement, digits_cut, digits_placement,
                                                 digits_resize, fixed_active, fixed_output_size,
                                                 round_half_up)

FIXED_SIZE = True
active = fixed_active
output_size = fixed_output_size


def _size(cols: int, rows: int, width: int, height: int, rw: float, rh: float, wider: bool):
    """Cover the target: the relatively shorter side gets the target size."""
    if wider:
        return max(1, round_half_up(cols / rh)), height
    return width, max(1, round_half_up(rows / rw))


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Crop an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above; the
    image itself when left unchanged. ``key`` is not used."""
    resized, wider = digits_resize(image, options, _size)
    if wider is None:
        return resized
    return np.ascontiguousarray(digits_cut(resized, options.resize_width, options.resize_height,
                                           wider))


def placement(width: int, height: int, options) -> Optional[Placement]:
    """Where the stored image lies in a width x height source (for its boxes): the sizes and
    offsets of ``apply``; None when the image is kept or plainly resized."""
    return digits_placement(width, height, options, _size, cut=True, pad=False)
