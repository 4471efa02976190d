"""Fields of the devkits' MATLAB structs (meta.mat, meta_clsloc.mat) as ``scipy.io.loadmat``
gives them: every value is a numpy array, a scalar being a 1-element one."""
import math
from typing import Type

import numpy as np

from imagenet_db.errors import ImagenetDbError


def mat_text(value) -> str:
    """A char field as text: '' when empty, its one item, else its characters joined."""
    array = np.asarray(value)
    if array.size == 0:
        return ""
    return str(array.item() if array.size == 1 else "".join(map(str, array.ravel())))


def mat_int(value, where: str, error: Type[ImagenetDbError]) -> int:
    """A numeric field holding one integer. Raises ``error`` naming ``where`` (file and field)
    for an array of another size, a text, a complex number, a fraction, NaN or Inf."""
    array = np.asarray(value)
    if array.size != 1:
        raise error(f"{where}: expected one number, got an array of shape {array.shape}")
    number = array.item()
    if not isinstance(number, (int, float)) or not math.isfinite(number) \
            or number != int(number):  # text, complex, NaN, Inf, a fraction
        raise error(f"{where}: expected an integer, got {number!r}")
    return int(number)
