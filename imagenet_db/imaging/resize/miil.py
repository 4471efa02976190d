"""MIIL: the resize of ImageNet-21K-P ("ImageNet-21K Pretraining for the Masses", Ridnik et
al., NeurIPS 2021; Alibaba-MIIL/ImageNet21K, ``dataset_preprocessing/resize.py`` and
``resize_short_edge.py``), selected by ``--miil_size N``.

An image whose *longer* side is under N pixels is kept as it is (MIIL copies the file; with
``--encoded`` the original bytes are stored). Every other image is
* squashed to N x N (``cv2.resize(im, (N, N))``, bilinear; their default, N = 224), or
* with ``--miil_short_edge``: scaled by N / shorter side, aspect kept
  (``cv2.resize(im, None, fx=s, fy=s, INTER_LINEAR)``, their variant, N = 256): the output is
  ``round(W * s)`` x ``round(H * s)`` (OpenCV's rounding, halves to even), which enlarges an
  image whose shorter side is under N while its longer side is not.
Sizes vary (small images are kept), so the mean of such a database is taken over a centre
crop (``--mean_crop``). ``--interpolation`` (default linear, as MIIL) applies.
"""
from typing import Optional, Tuple

import cv2
import numpy as np

from imagenet_db.imaging.resize.geometry import ModeParam, ResizeOptionError, interpolation_flag

FIXED_SIZE = False
PARAMS = (
    ModeParam("miil_size", 0, "ImageNet-21K-P (MIIL): squash to NxN (224), keeping images "
                              "whose longer side is under N unchanged"),
    ModeParam("miil_short_edge", False, "with --miil_size: MIIL's other variant, shorter side "
                                        "to N (256) keeping the aspect ratio, instead of the "
                                        "squash", selects=False),
)


def check(options) -> None:
    """ResizeOptionError when no --miil_size is given."""
    if not options.miil_size:
        raise ResizeOptionError("--resize_mode=miil needs --miil_size=N (224: ImageNet-21K-P)")


def active(options) -> bool:
    """True when ``options.miil_size`` > 0."""
    return options.miil_size > 0


def _scale(width: int, height: int, size: int) -> float:
    return float(size) / float(min(width, height))


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """The (width, height) of the resized image, or None when it is kept (longer side under
    miil_size, or no miil_size)."""
    size = options.miil_size
    if not active(options) or max(width, height) < size:
        return None
    if not options.miil_short_edge:
        return size, size
    scale = _scale(width, height, size)
    return max(1, int(np.rint(width * scale))), max(1, int(np.rint(height * scale)))


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Resize an (H, W[, C]) uint8 image as MIIL's scripts (module docstring); the image
    itself when kept. ``key`` is not used."""
    source = (image.shape[1], image.shape[0])
    size = output_size(source[0], source[1], options)
    if size is None:
        return image
    flag = interpolation_flag(options.interpolation, source, size)
    if options.miil_short_edge:
        scale = _scale(source[0], source[1], options.miil_size)
        out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=flag)
    else:
        out = cv2.resize(image, size, interpolation=flag)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, np.newaxis]
    return out
