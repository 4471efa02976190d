"""Shorter side: scale keeping the aspect ratio so the shorter side is ``--shorter_side`` pixels
(the ResNet / fb.resnet.torch / imagenet-multiGPU.torch preparation; stored ``--encoded`` so
the 224x224 training crops are taken from the larger image).

The shorter side becomes exactly N, the longer ``round(long * N / short)`` (halves up).
``--only_shrink``: images whose shorter side is already <= N are kept, as ImageMagick's
``convert -resize "256^>"`` that imagenet-multiGPU.torch's README suggests (with ``--encoded``
such files are stored byte for byte). Databases of this mode hold images of varying sizes:
their mean is taken over the centre ``--mean_crop``/``--crop_size`` window.
"""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize.geometry import (ModeParam, ResizeOptionError, resize_to,
                                                 round_half_up)

FIXED_SIZE = False
PARAMS = (
    ModeParam("shorter_side", 0, "resize so the shorter side is N pixels, keeping the aspect "
                                 "ratio (ResNet / Torch recipes; sizes then vary: use --encoded "
                                 "and a crop in training)"),
    ModeParam("only_shrink", False, "with --shorter_side: keep images whose shorter side is "
                                    "already <= N (ImageMagick's -resize \"N^>\")",
              selects=False),
)


def check(options) -> None:
    """ResizeOptionError when no --shorter_side is given."""
    if not options.shorter_side:
        raise ResizeOptionError("--resize_mode=shorter_side needs --shorter_side=N")


def active(options) -> bool:
    """True when ``options.shorter_side`` > 0."""
    return options.shorter_side > 0


def shorter_side_size(width: int, height: int, size: int, only_shrink: bool = False
                      ) -> Optional[Tuple[int, int]]:
    """(width, height) after scaling the shorter side of a width x height image to ``size``
    (the longer side rounded halves up, at least 1); None when the size does not change (the
    shorter side is already ``size``, or <= size with ``only_shrink``)."""
    short = min(width, height)
    if short == size or (only_shrink and short <= size):
        return None
    if width <= height:
        return size, max(1, round_half_up(height * size / width))
    return max(1, round_half_up(width * size / height)), size


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """The (width, height) of the resized image, or None when it keeps its size."""
    if not active(options):
        return None
    return shorter_side_size(width, height, options.shorter_side, options.only_shrink)


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Resize an (H, W[, C]) uint8 image so min(H, W) == shorter_side (see module doc); the
    image itself when it keeps its size. ``key`` is not used."""
    size = output_size(image.shape[1], image.shape[0], options)
    if size is None:
        return image
    return resize_to(image, size[0], size[1], options.interpolation)
