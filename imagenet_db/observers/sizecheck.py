"""``--check_size``: every stored image must have the first one's channels/height/width.

As Caffe's convert_imageset ``--check_size`` (which CHECKs the data size against the first
datum's); here a mismatch is a ShapeMismatchError naming the image, raised before it is stored.
"""
from typing import Optional, Tuple

from imagenet_db.errors import ShapeMismatchError
from imagenet_db.observers.base import Observer


class SizeCheck(Observer):
    """Fails the build at the first image whose (C, H, W) differs from the first image's."""
    name = "check_size"

    def __init__(self):
        self.first_shape: Optional[Tuple[int, int, int]] = None

    def identity(self) -> dict:
        return {"check_size": True}

    def restore(self, build: str, output, done: int) -> int:
        if done:
            for _, _, pixels in output.stored(0):
                self.first_shape = tuple(pixels.shape)
                return 1
        return 0

    def add(self, record, encoded) -> None:
        if self.first_shape is None:
            self.first_shape = tuple(encoded.shape)
        elif tuple(encoded.shape) != self.first_shape:
            raise ShapeMismatchError(
                f"{record.relpath}: image size (channels, height, width) {tuple(encoded.shape)} "
                f"differs from the first image's {self.first_shape} (--check_size)")
