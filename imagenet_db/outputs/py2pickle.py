"""Pickles in the form Python 2's cPickle (protocol 2) writes them, from Python 3.

cuda-convnet2's loader runs under Python 2 and hands each JPEG to C as a ``str``; a Python 3
``pickle.dumps(..., protocol=2)`` writes ``bytes`` as ``_codecs.encode(<text>, 'latin1')``, which
stores every byte >= 0x80 as two UTF-8 bytes (~1.5x the JPEG size, and slow). This module writes
the opcodes a Python 2 pickle of the same objects holds instead:

- ``bytes`` and ASCII ``str`` -> a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING, raw bytes);
  non-ASCII ``str`` -> ``unicode`` (BINUNICODE, UTF-8);
- ``int`` -> BININT1 / BININT2 / BININT, or LONG1 beyond 32 bits; ``float`` -> BINFLOAT;
  ``bool``/``None`` -> NEWTRUE/NEWFALSE/NONE;
- ``list``/``tuple``/``dict`` -> EMPTY_LIST + APPENDS, TUPLEn / MARK TUPLE, EMPTY_DICT + SETITEMS
  (in batches of 1000 items, as cPickle);
- ``numpy.ndarray`` (numeric dtypes) -> ``numpy.core.multiarray._reconstruct`` + BUILD with the
  array's raw bytes, the form numpy 1.x writes (numpy 2 names ``numpy._core``, which numpy 1.x
  cannot import).

No memo is written (objects are written as often as they occur). Python 3 reads the result with
``pickle.load(f, encoding='latin1')`` (byte strings come back as ``str`` holding the bytes as
code points 0..255: ``s.encode('latin1')``) or ``encoding='bytes'`` (they come back as ``bytes``).

Reading: ``load`` is the only way this tool reads such pickles (verify, resume): a restricted
unpickler that builds only what the format holds (None, bool, int, float, str, bytes, list,
tuple, dict, numpy arrays, dtypes and scalars, and ``_codecs.encode`` for the bytes a Python 3
``pickle.dumps(protocol=2)`` writes). Any other global a crafted file names (``os.system``,
``builtins.eval``, ``copyreg._reconstructor``...) is refused before it is imported or called.
"""
import io
import pickle
import struct
from typing import Any, List

import numpy as np

PROTO_2 = b"\x80\x02"
STOP = b"."
MARK = b"("
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"
EMPTY_DICT, EMPTY_LIST, SETITEMS, APPENDS = b"}", b"]", b"u", b"e"
TUPLE, TUPLE_N = b"t", {0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}
GLOBAL, REDUCE, BUILD = b"c", b"R", b"b"
BATCH = 1000  # cPickle's batch size for APPENDS / SETITEMS


def _text_or_bytes(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes((len(value),)) + value
    return b"T" + struct.pack("<I", len(value)) + value


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes((value,))
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -2 ** 31 <= value < 2 ** 31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes((len(data),)) + data  # LONG1 (a Python 2 long)


def _global(module: str, name: str) -> bytes:
    return GLOBAL + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n"


def _dtype(dtype: np.dtype, out: List[bytes]) -> None:
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise TypeError(f"py2pickle: arrays of dtype {dtype} are not supported")
    order = "|" if dtype.itemsize == 1 else ("<" if dtype.byteorder in "<=" else ">")
    out += [_global("numpy", "dtype"), _text_or_bytes(f"{dtype.kind}{dtype.itemsize}".encode()),
            _int(0), _int(1), TUPLE_N[3], REDUCE,
            MARK, _int(3), _text_or_bytes(order.encode()), NONE, NONE, NONE,
            _int(-1), _int(-1), _int(0), TUPLE, BUILD]


def _array(array: np.ndarray, out: List[bytes]) -> None:
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous and array.ndim > 1)
    data = np.asarray(array, order="F" if fortran else "C").tobytes(order="F" if fortran else "C")
    out += [_global("numpy.core.multiarray", "_reconstruct"), _global("numpy", "ndarray"),
            _int(0), TUPLE_N[1], _text_or_bytes(b"b"), TUPLE_N[3], REDUCE,
            MARK, _int(1)]
    _save(tuple(int(d) for d in array.shape), out)
    _dtype(array.dtype, out)
    out += [NEWTRUE if fortran else NEWFALSE, _text_or_bytes(data), TUPLE, BUILD]


def _save(obj: Any, out: List[bytes]) -> None:
    if obj is None:
        out.append(NONE)
    elif obj is True or obj is False:
        out.append(NEWTRUE if obj else NEWFALSE)
    elif isinstance(obj, (int, np.integer)):
        out.append(_int(int(obj)))
    elif isinstance(obj, (float, np.floating)):
        out.append(b"G" + struct.pack(">d", float(obj)))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        out.append(_text_or_bytes(bytes(obj)))
    elif isinstance(obj, str):
        if obj.isascii():
            out.append(_text_or_bytes(obj.encode("ascii")))
        else:
            data = obj.encode("utf-8")
            out.append(b"X" + struct.pack("<I", len(data)) + data)
    elif isinstance(obj, np.ndarray):
        _array(obj, out)
    elif isinstance(obj, tuple):
        if len(obj) <= 3:
            for item in obj:
                _save(item, out)
            out.append(TUPLE_N[len(obj)])
        else:
            out.append(MARK)
            for item in obj:
                _save(item, out)
            out.append(TUPLE)
    elif isinstance(obj, list):
        out.append(EMPTY_LIST)
        for start in range(0, len(obj), BATCH):
            out.append(MARK)
            for item in obj[start:start + BATCH]:
                _save(item, out)
            out.append(APPENDS)
    elif isinstance(obj, dict):
        out.append(EMPTY_DICT)
        items = list(obj.items())
        for start in range(0, len(items), BATCH):
            out.append(MARK)
            for key, value in items[start:start + BATCH]:
                _save(key, out)
                _save(value, out)
            out.append(SETITEMS)
    else:
        raise TypeError(f"py2pickle: cannot pickle {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """``obj`` as a protocol-2 pickle in Python 2's form (see the module docstring).
    Supports None, bool, int, float, bytes, str, list, tuple, dict and numeric numpy arrays;
    raises TypeError for anything else."""
    out = [PROTO_2]
    _save(obj, out)
    out.append(STOP)
    return b"".join(out)


# The globals a pickle of the format may name (module, name): numpy's array reconstruction as
# numpy 1.x and 2.x write it, and Python 3's protocol-2 form of bytes. Nothing else is looked up.
SAFE_GLOBALS = frozenset(
    [(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")])


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only returns the SAFE_GLOBALS."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: the pickle names a "
                                         f"global the format does not hold (never run)")
        return super().find_class(module, name)


def loads(data: bytes, encoding: str = "bytes") -> Any:
    """The object of a pickle of the format (module docstring), read with a restricted
    unpickler: only None, bool, int, float, str, bytes, list, tuple, dict and numpy arrays /
    dtypes / scalars are built. ``encoding``: how Python 2 ``str`` come back ('bytes' or
    'latin1', as ``pickle.load``). Raises pickle.UnpicklingError for any other global (the
    file is not run), EOFError/ValueError for a truncated or malformed pickle."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def load(path: str, encoding: str = "bytes") -> Any:
    """``loads`` of the file ``path`` (OSError when it cannot be read)."""
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, encoding=encoding).load()
