"""Fill: scale keeping the aspect ratio until the image fits inside resize_width x
resize_height, then pad both sides of the short dimension (NVIDIA DIGITS' "fill").

Geometry of DIGITS' ``resize_image``: with ``rw = W / width``, ``rh = H / height``, an image
relatively wider (rw > rh) gets width ``width`` and height ``round(H / rw)`` (halves up), plus
one row when ``height - that`` is odd so the padding is even; else the mirror case on the
width. Each side gets (target - resized) / 2 rows (columns) of padding: DIGITS' uniform noise
0..254 (one strip drawn and used on both sides, as DIGITS does), drawn from a generator seeded
by ``--seed`` and the image's relpath so builds are reproducible, or the constant
``--fill_value`` (one value, or B,G,R, e.g. the mean). Equal ratios: a plain resize; an image
already of the target size is kept. Pixels are OpenCV's (see ``crop``).
"""
from typing import Optional

import numpy as np

from imagenet_db.imaging.resize.geometry import (Placement, digits_pad, digits_placement,
                                                 digits_resize, fixed_active, fixed_output_size,
                                                 round_half_up)

FIXED_SIZE = True
NOISE = True  # pads with noise seeded by --seed (and the relpath) unless --fill_value is given
active = fixed_active
output_size = fixed_output_size


def _size(cols: int, rows: int, width: int, height: int, rw: float, rh: float, wider: bool):
    """Fit inside the target; the short dimension grows by one pixel when its padding is odd."""
    if wider:
        fitted = max(1, round_half_up(rows / rw))
        return width, fitted + (height - fitted) % 2
    fitted = max(1, round_half_up(cols / rh))
    return fitted + (width - fitted) % 2, height


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Fit and pad an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above;
    ``key`` (the relpath) seeds the noise together with ``options.seed``. The image itself when
    left unchanged."""
    resized, wider = digits_resize(image, options, _size)
    if wider is None:
        return resized
    return digits_pad(resized, options.resize_width, options.resize_height, wider,
                      options.fill_value, options.seed, key)


def placement(width: int, height: int, options) -> Optional[Placement]:
    """Where the stored image lies in a width x height source (for its boxes): the sizes and
    offsets of ``apply``; None when the image is kept or plainly resized."""
    return digits_placement(width, height, options, _size, cut=False, pad=True)
