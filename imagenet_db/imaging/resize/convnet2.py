"""cuda-convnet2: the resize of its ``make-data/make-data.py`` (``pyext/src/pyext.cpp``).

The shorter side is scaled to N = resize_width (= resize_height): ``scale = N / min(H, W)``,
new sides ``round(scale * H)`` x ``round(scale * W)`` (C ``round``, halves away from zero);
interpolation by the scale (``--interpolation auto``, the default for this mode):
``INTER_AREA`` when shrinking, ``INTER_CUBIC`` when enlarging, ``INTER_LINEAR`` at scale 1;
then the centre N x N window at ``((new_w - N) // 2, (new_h - N) // 2)`` (integer division).
make-data then stores JPEGs of quality 95 (``--encoded --encode_quality 95``, OpenCV's default).
"""
from typing import Optional, Tuple

import cv2
import numpy as np

from imagenet_db.imaging.resize.geometry import (INTERPOLATIONS, Placement, ResizeOptionError,
                                                 round_half_up)

FIXED_SIZE = True
DEFAULT_INTERPOLATION = "auto"  # make-data's rule (AREA when shrinking, CUBIC when enlarging)


def check(options) -> None:
    """ResizeOptionError unless resize_width == resize_height (square images)."""
    if options.resize_width != options.resize_height:
        raise ResizeOptionError(f"--resize_mode=convnet2 makes square images: "
                                f"--resize_width ({options.resize_width}) must equal "
                                f"--resize_height ({options.resize_height})")


def active(options) -> bool:
    """True when resize_width and resize_height are > 0 (they must be equal)."""
    return options.resize_width > 0 and options.resize_height > 0


def interpolation_for(scale: float) -> int:
    """cuda-convnet2's choice: scale == 1 -> INTER_LINEAR, > 1 -> INTER_CUBIC, < 1 -> INTER_AREA."""
    if scale == 1:
        return cv2.INTER_LINEAR
    return cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(N, N); every image is resized and cropped (as make-data does)."""
    if not active(options):
        return None
    return options.resize_width, options.resize_height


def placement(width: int, height: int, options) -> Optional[Placement]:
    """Where the stored N x N image lies in a width x height source (for its boxes): the
    scaled size and centre offsets of ``apply``."""
    if not active(options):
        return None
    size = options.resize_width
    scale = size / float(min(height, width))
    new_h, new_w = round_half_up(scale * height), round_half_up(scale * width)
    return Placement((new_w, new_h), (new_w - size) // 2, (new_h - size) // 2, (size, size))


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Resize the shorter side of an (H, W[, C]) uint8 image to N and cut the centre N x N.
    ``key`` is not used."""
    if not active(options):
        return image
    size = options.resize_width
    h, w = image.shape[:2]
    scale = size / float(min(h, w))
    new_h, new_w = round_half_up(scale * h), round_half_up(scale * w)
    flag = (interpolation_for(scale) if options.interpolation == "auto"
            else INTERPOLATIONS[options.interpolation])
    out = cv2.resize(image, (new_w, new_h), interpolation=flag)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, np.newaxis]
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.ascontiguousarray(out[top:top + size, left:left + size])
