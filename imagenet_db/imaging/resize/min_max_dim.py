"""Min/max dim: SSD-Caffe's ``--min_dim/--max_dim`` (weiliu89/caffe, branch ssd, the flags of its
``convert_annoset``), keeping the aspect ratio.

As its ``ReadImageToCVMat``, in float32 like the C++: scale = 1; if min_dim > 0 and the shorter
side < min_dim, scale = min_dim / shorter (enlarge only); then if max_dim > 0 and
``int(scale * longer) > max_dim`` (truncated), scale = max_dim / longer. Scale 1 keeps the
image; otherwise ``cv::resize(src, dst, Size(0, 0), scale, scale)``: the output is
``round(W * scale)`` x ``round(H * scale)`` (OpenCV's rounding, halves to even) and bilinear
interpolation uses the scale itself, which ``cv2.resize(image, None, fx=scale, fy=scale)``
reproduces. Sizes vary: the mean is taken over a centre crop (``--mean_crop``).
"""
from typing import Optional, Tuple

import cv2
import numpy as np

from imagenet_db.imaging.resize.geometry import ModeParam, ResizeOptionError, interpolation_flag

FIXED_SIZE = False
PARAMS = (
    ModeParam("min_dim", 0, "SSD-Caffe: enlarge, keeping the aspect ratio, images whose shorter "
                            "side is below N"),
    ModeParam("max_dim", 0, "SSD-Caffe: shrink, keeping the aspect ratio, images whose longer "
                            "side would exceed N"),
)


def check(options) -> None:
    """ResizeOptionError when neither --min_dim nor --max_dim is given."""
    if not (options.min_dim or options.max_dim):
        raise ResizeOptionError("--resize_mode=min_max_dim needs --min_dim and/or --max_dim")


def active(options) -> bool:
    """True when min_dim or max_dim is > 0."""
    return options.min_dim > 0 or options.max_dim > 0


def scale_for(width: int, height: int, min_dim: int, max_dim: int) -> float:
    """SSD-Caffe's scale factor for a width x height image (float32 arithmetic, see above)."""
    short, longer = np.float32(min(width, height)), np.float32(max(width, height))
    scale = np.float32(1.0)
    if min_dim > 0 and min(width, height) < min_dim:
        scale = np.float32(min_dim) / short
    if max_dim > 0 and int(np.float32(scale * longer)) > max_dim:
        scale = np.float32(max_dim) / longer
    return float(scale)


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(width, height) after the resize, or None when the scale is 1 (image kept). A side that
    would round to 0 pixels is made 1 (SSD-Caffe would fail there)."""
    if not active(options):
        return None
    scale = scale_for(width, height, options.min_dim, options.max_dim)
    if scale == 1.0:
        return None
    return max(1, int(np.rint(width * scale))), max(1, int(np.rint(height * scale)))


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Resize an (H, W[, C]) uint8 image by SSD-Caffe's scale; the image itself at scale 1.
    ``key`` is not used."""
    size = output_size(image.shape[1], image.shape[0], options)
    if size is None:
        return image
    scale = scale_for(image.shape[1], image.shape[0], options.min_dim, options.max_dim)
    flag = interpolation_flag(options.interpolation, (image.shape[1], image.shape[0]), size)
    if size == (int(np.rint(image.shape[1] * scale)), int(np.rint(image.shape[0] * scale))):
        out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=flag)
    else:  # a side clamped to 1 pixel
        out = cv2.resize(image, size, interpolation=flag)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, np.newaxis]
    return out
