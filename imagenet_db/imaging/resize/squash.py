"""Squash: resize to exactly resize_width x resize_height, ignoring the aspect ratio.

Caffe's ``ReadImageToCVMat`` (src/caffe/util/io.cpp): when both sizes are > 0 it calls
``cv::resize(img, dst, cv::Size(width, height))`` with OpenCV's default bilinear
interpolation (``INTER_LINEAR``); otherwise the decoded image is kept. This is Caffe's and
``create_imagenet.sh``'s transform (256x256), and DIGITS' "squash". With the default
``interpolation='linear'`` the pixels are byte-identical to Caffe's.
"""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize.geometry import resize_to

FIXED_SIZE = True
KEEPS_WITH_ONE_SIZE = True  # Caffe: a size of 0 (either one) leaves the image as it is


def active(options) -> bool:
    """True when both resize_width and resize_height are > 0 (Caffe resizes only then)."""
    return options.resize_width > 0 and options.resize_height > 0


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(width, height) the image of ``width`` x ``height`` pixels becomes; None = unchanged
    (either of ``options.resize_width`` / ``resize_height`` is 0, as in Caffe). An image that
    already has the size is still resized (a copy), as Caffe does."""
    if active(options):
        return options.resize_width, options.resize_height
    return None


def apply(image: np.ndarray, options, key: str = "") -> np.ndarray:
    """Squash an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) with
    ``cv2.resize`` (bilinear unless ``options.interpolation`` says otherwise), as Caffe;
    the image itself when a size is 0. ``key`` is not used."""
    size = output_size(image.shape[1], image.shape[0], options)
    if size is None:
        return image
    return resize_to(image, size[0], size[1], options.interpolation)
