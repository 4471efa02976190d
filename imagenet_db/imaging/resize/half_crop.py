"""Half crop: scale by the mean of the two ratios, cut the long dimension and pad the short one
(NVIDIA DIGITS' "half crop").

Geometry of DIGITS' ``resize_image``: ``r = (W / width + H / height) / 2``; resized =
``round(W / r)`` x ``round(H / r)`` (halves up); the short dimension grows by one pixel when its
padding would be odd. The long side is then cut from ``round((resized - target) / 2.0)`` (as
``crop``) and the short side padded on both sides (as ``fill``: noise 0..254 seeded by
``--seed`` and the relpath, or ``--fill_value``). Equal ratios: a plain resize; an image already
of the target size is kept. Pixels are OpenCV's (see ``crop``).
"""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize.geometry import (digits_cut, digits_pad, digits_ratios,
                                                 resize_to, round_half_up)

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
    """Half-crop an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) as above;
    ``key`` (the relpath) seeds the noise with ``options.seed``. The image itself when left
    unchanged."""
    if output_size(image.shape[1], image.shape[0], options) is None:
        return image
    width, height = options.resize_width, options.resize_height
    rw, rh = digits_ratios(image, width, height)
    if rw == rh:
        return resize_to(image, width, height, options.interpolation)
    ratio = (rw + rh) / 2.0
    cols = max(1, round_half_up(image.shape[1] / ratio))
    rows = max(1, round_half_up(image.shape[0] / ratio))
    wider = rw > rh
    if wider:
        rows += (height - rows) % 2
    else:
        cols += (width - cols) % 2
    resized = resize_to(image, cols, rows, options.interpolation)
    cut = digits_cut(resized, width, height, wider)
    padded = digits_pad(cut, width, height, wider, options.fill_value, options.seed, key)
    return np.ascontiguousarray(padded)
