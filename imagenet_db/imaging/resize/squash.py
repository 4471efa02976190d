"""Squash: resize to exactly resize_width x resize_height, ignoring the aspect ratio.

Caffe's ``ReadImageToCVMat`` (src/caffe/util/io.cpp): when both sizes are > 0 it calls
``cv::resize(img, dst, cv::Size(width, height))`` with OpenCV's default bilinear
interpolation (``INTER_LINEAR``); otherwise the decoded image is kept. This is Caffe's and
``create_imagenet.sh``'s transform (256x256), and DIGITS' "squash".
"""
from typing import Optional, Tuple

import cv2
import numpy as np


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(width, height) the image of ``width`` x ``height`` pixels becomes; None = unchanged
    (either of ``options.resize_width`` / ``resize_height`` is 0, as in Caffe)."""
    if options.resize_width > 0 and options.resize_height > 0:
        return options.resize_width, options.resize_height
    return None


def apply(image: np.ndarray, options) -> np.ndarray:
    """Squash an (H, W[, C]) uint8 image to (resize_height, resize_width[, C]) with
    ``cv2.resize`` (bilinear), as Caffe; unchanged when a size is 0."""
    size = output_size(image.shape[1], image.shape[0], options)
    return image if size is None else cv2.resize(image, size)
