"""cuda-convnet2's make-data resize with ``CROP_TO_SQUARE=False``: shorter side to N
(= ``resize_height``), aspect kept, no crop (see ``imaging.resize.cuda_convnet2``)."""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize import cuda_convnet2


def output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """The resized (width, height); None when resize_height is 0."""
    return cuda_convnet2.output_size(width, height, options)


def apply(image: np.ndarray, options) -> np.ndarray:
    """Shorter side to resize_height with make-data's rounding and interpolation."""
    if options.resize_height <= 0:
        return image
    return cuda_convnet2.resize(image, options.resize_height, crop=False)
