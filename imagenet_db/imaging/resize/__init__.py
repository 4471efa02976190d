"""Resize modes: one module per mode, registered in ``RESIZE_MODES`` by its flag value.

A mode module has two functions, both given the ``TransformOptions``:

``output_size(width, height, options) -> (width, height) or None``
    the size an image of ``width`` x ``height`` pixels comes out at (None: left unchanged);
    used before decoding, e.g. by the fast JPEG decode to pick a libjpeg reduction;
``apply(image, options) -> image``
    the resized (H, W) or (H, W, C) uint8 image (BGR, as decoded by OpenCV).

To add a mode: write ``imaging/resize/<mode>.py`` with these two functions and add one line
to ``RESIZE_MODES``; the commands offer every registered name.
"""
from types import ModuleType
from typing import Dict

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.resize import cuda_convnet2, cuda_convnet2_uncropped, squash

RESIZE_MODES: Dict[str, ModuleType] = {
    "squash": squash,  # Caffe's convert_imageset (bilinear to resize_width x resize_height)
    "cuda_convnet2": cuda_convnet2,  # make-data: shorter side N (round, AREA/CUBIC), centre crop
    "cuda_convnet2_uncropped": cuda_convnet2_uncropped,  # make-data, CROP_TO_SQUARE=False
}
DEFAULT_MODE = "squash"


def resize_mode(name: str) -> ModuleType:
    """The module of resize mode ``name``; raises ImagenetDbError for an unknown name."""
    try:
        return RESIZE_MODES[name]
    except KeyError:
        raise ImagenetDbError(f"unknown resize mode {name!r}; expected one of "
                              f"{', '.join(RESIZE_MODES)}") from None
