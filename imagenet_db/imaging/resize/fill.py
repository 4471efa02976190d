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
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize.geometry import (digits_pad, digits_ratios, resize_to,
                                                 round_half_up)

FIXED_SIZE = True


def active(options) -> bool:
    """True when both resize_width and resize_height are > 0."""
    return options.resize_width > 0 and options.resize_height > 0


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(resize_width, resize_height), or None when the image is left as it is."""
    if not active(options) or (width, height) == (options.resize_width, options.resize_height):
        return None
    return options.resize_width, options.resize_height


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Fit and pad an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above;
    ``key`` (the relpath) seeds the noise together with ``options.seed``. The image itself when
    left unchanged."""
    if output_size(image.shape[1], image.shape[0], options) is None:
        return image
    width, height = options.resize_width, options.resize_height
    rw, rh = digits_ratios(image, width, height)
    if rw == rh:
        return resize_to(image, width, height, options.interpolation)
    wider = rw > rh
    if wider:
        rows = max(1, round_half_up(image.shape[0] / rw))
        size = (width, rows + (height - rows) % 2)
    else:
        cols = max(1, round_half_up(image.shape[1] / rh))
        size = (cols + (width - cols) % 2, height)
    resized = resize_to(image, size[0], size[1], options.interpolation)
    return digits_pad(resized, width, height, wider, options.fill_value, options.seed, key)
