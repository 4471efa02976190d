"""cuda-convnet2's make-data resize: shorter side to N, then the centre N x N square.

From ``make-data/pyext/src/pyext.cpp`` (``DecoderThread::makeJPEG``), N = ``resize_height``
(make-data's ``OUTPUT_IMAGE_SIZE`` = 256):

- scale = N / min(height, width); the new size is ``round(scale * height)`` x
  ``round(scale * width)`` with C's ``round`` (halves away from zero, not Python's round);
- interpolation ``INTER_LINEAR`` when scale == 1, ``INTER_CUBIC`` when enlarging,
  ``INTER_AREA`` when shrinking;
- ``CROP_TO_SQUARE=True`` (mode ``cuda_convnet2``): the N x N square at
  ((new_width - N) // 2, (new_height - N) // 2); mode ``cuda_convnet2_uncropped``
  (``CROP_TO_SQUARE=False``) keeps the whole resized image (shorter side N).

The JPEG encoding at quality 95 that follows in make-data is the output format's
(``outputs.cuda_convnet2``).
"""
import math
from typing import Optional, Tuple

import cv2
import numpy as np


def round_half_away(x: float) -> int:
    """C's ``round()`` for x >= 0: 2.5 -> 3 (Python's round gives 2)."""
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)


def scaled_size(width: int, height: int, size: int) -> Tuple[int, int, float]:
    """(new_width, new_height, scale) of make-data's resize of a width x height image."""
    scale = size / min(width, height)
    return round_half_away(scale * width), round_half_away(scale * height), scale


def interpolation(scale: float) -> int:
    """make-data's choice: INTER_LINEAR at scale 1, INTER_CUBIC enlarging, INTER_AREA shrinking."""
    return cv2.INTER_LINEAR if scale == 1 else cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """The resized (width, height) before the crop (what a decoder needs to produce; None
    when resize_height is 0)."""
    if options.resize_height <= 0:
        return None
    new_width, new_height, _ = scaled_size(width, height, options.resize_height)
    return new_width, new_height


def resize(image: np.ndarray, size: int, crop: bool = True) -> np.ndarray:
    """make-data's resize of an (H, W[, C]) uint8 image to shorter side ``size`` and, when
    ``crop``, its centre size x size square."""
    height, width = image.shape[:2]
    new_width, new_height, scale = scaled_size(width, height, size)
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation(scale))
    if not crop:
        return resized
    y, x = (new_height - size) // 2, (new_width - size) // 2
    return resized[y:y + size, x:x + size]


def apply(image: np.ndarray, options) -> np.ndarray:
    """Shorter side to resize_height, then the centre square (unchanged when it is 0)."""
    if options.resize_height <= 0:
        return image
    return resize(image, options.resize_height, crop=True)
