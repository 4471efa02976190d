"""Fields of the devkits' MATLAB structs (meta.mat, meta_clsloc.mat) as ``scipy.io.loadmat``
gives them: every value is a numpy array, a scalar being a 1-element one."""
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
    for an array of another size, a text, or a number with a fraction."""
    array = np.asarray(value)
    if array.size != 1:
        raise error(f"{where}: expected one number, got an array of shape {array.shape}")
    number = array.item()
    if isinstance(number, (bytes, str)) or float(number) != int(number):
        raise error(f"{where}: expected an integer, got {number!r}")
    return int(number)
