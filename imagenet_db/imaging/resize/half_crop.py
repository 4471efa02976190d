"""Half crop: scale by the mean of the two ratios, cut the long dimension and pad the short one
(NVIDIA DIGITS' "half crop").

Geometry of DIGITS' ``resize_image``: ``r = (W / width + H / height) / 2``; resized =
``round(W / r)`` x ``round(H / r)`` (halves up); the short dimension grows by one pixel when its
padding would be odd. The long side is then cut from ``round((resized - target) / 2.0)`` (as
``crop``) and the short side padded on both sides (as ``fill``: noise 0..254 seeded by
``--seed`` and the relpath, or ``--fill_value``). Equal ratios: a plain resize; an image already
of the target size is kept. Pixels are OpenCV's (see ``crop``).
"""
from typing import Optional

import numpy as np

from imagenet_db.imaging.resize.geometry import (Placement, digits_cut, digits_pad,
                                                 digits_placement, digits_resize, fixed_active,
                                                 fixed_output_size, round_half_up)

FIXED_SIZE = True
NOISE = True  # pads with noise seeded by --seed (and the relpath) unless --fill_value is given
active = fixed_active
output_size = fixed_output_size


def _size(cols: int, rows: int, width: int, height: int, rw: float, rh: float, wider: bool):
    """Scale by the mean ratio; the short dimension grows by one pixel when its padding is odd."""
    ratio = (rw + rh) / 2.0
    new_cols = max(1, round_half_up(cols / ratio))
    new_rows = max(1, round_half_up(rows / ratio))
    if wider:
        return new_cols, new_rows + (height - new_rows) % 2
    return new_cols + (width - new_cols) % 2, new_rows


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Half-crop an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above;
    ``key`` (the relpath) seeds the noise with ``options.seed``. The image itself when left
    unchanged."""
    resized, wider = digits_resize(image, options, _size)
    if wider is None:
        return resized
    width, height = options.resize_width, options.resize_height
    cut = digits_cut(resized, width, height, wider)
    return np.ascontiguousarray(digits_pad(cut, width, height, wider, options.fill_value,
                                           options.seed, key))


def placement(width: int, height: int, options) -> Optional[Placement]:
    """Where the stored image lies in a width x height source (for its boxes): the sizes and
    offsets of ``apply``; None when the image is kept or plainly resized."""
    return digits_placement(width, height, options, _size, cut=True, pad=True)
