"""Resize modes: one module per mode, registered in ``RESIZE_MODES`` by its flag value.

A mode module has, all given the ``TransformOptions``:

``FIXED_SIZE``
    True when every image comes out at one size (resize_width x resize_height), False when
    sizes vary (shorter side, min/max dim): the mean of such a database needs a centre crop;
``active(options) -> bool``
    whether the options ask this mode to resize at all (e.g. squash needs both sizes > 0);
``output_size(width, height, options) -> (width, height) or None``
    the size an image of ``width`` x ``height`` pixels comes out at (None: left unchanged);
    used before decoding, e.g. by the fast JPEG decode to pick a libjpeg reduction;
``apply(image, options, key="") -> image``
    the resized (H, W) or (H, W, C) uint8 image (BGR, as decoded by OpenCV), or the very same
    ``image`` object when it is left unchanged (then ``--encoded`` may store the original file
    bytes). ``key`` is the image's relpath: modes that draw noise seed it with it;

and, when it has them (``declared`` gives the defaults):

``PARAMS``
    its own settings (``geometry.ModeParam``): each a ``TransformOptions`` field and a flag
    of every command that resizes (``cli.flags.resize_args``), checked >= 0 when an int,
    refused with another mode (default: none);
``check(options)``
    raise ``ResizeOptionError`` for settings of this mode that cannot work (default: none);
``DEFAULT_INTERPOLATION``
    when --interpolation is not given (default 'linear', Caffe's);
``NOISE``
    pads with noise seeded by --seed unless --fill_value is given (default False);
``placement(width, height, options) -> geometry.Placement or None``
    where the stored image lies in the (scaled) source, for the boxes to follow the pixels
    (``geometry.place_boxes``); modes that keep the whole frame (squash, shorter side,
    min/max dim) have none (default): normalized boxes do not move;
``KEEPS_WITH_ONE_SIZE``
    a fixed-size mode that, like Caffe's squash, keeps the image when only one of
    resize_width/resize_height is given (default False: that is an error).

The modes: ``squash`` (Caffe's convert_imageset), ``crop``, ``fill``, ``half_crop`` (NVIDIA
DIGITS), ``shorter_side`` (ResNet / Torch), ``min_max_dim`` (SSD-Caffe), ``convnet2``
(cuda-convnet2's make-data), ``miil`` (ImageNet-21K-P's resize.py). Shared helpers
(rounding, interpolation, padding) are in ``geometry``. To add a mode: write
``imaging/resize/<mode>.py`` with these members and add one line to ``RESIZE_MODES``; the
commands offer every registered name and every declared flag.
"""
from types import ModuleType
from typing import Dict, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.resize import (convnet2, crop, fill, half_crop, miil, min_max_dim,
                                        shorter_side, squash)
from imagenet_db.imaging.resize.geometry import INTERPOLATION_NAMES, ModeParam, ResizeOptionError

RESIZE_MODES: Dict[str, ModuleType] = {
    "squash": squash,              # Caffe's convert_imageset (bilinear to W x H)
    "crop": crop,                  # DIGITS: cover W x H keeping aspect, cut the centre
    "fill": fill,                  # DIGITS: fit inside W x H keeping aspect, pad with noise
    "half_crop": half_crop,        # DIGITS: half-way between crop and fill
    "shorter_side": shorter_side,  # ResNet / Torch: shorter side to N, aspect kept
    "min_max_dim": min_max_dim,    # SSD-Caffe: --min_dim / --max_dim, aspect kept
    "convnet2": convnet2,          # cuda-convnet2 make-data: shorter side to N, centre N x N
    "miil": miil,                  # ImageNet-21K-P: N x N (or shorter side N), small ones kept
}
DEFAULT_MODE = "squash"
FIXED_SIZE_MODES = tuple(name for name, mode in RESIZE_MODES.items() if mode.FIXED_SIZE)


DECLARED_DEFAULTS = {"PARAMS": (), "check": None, "DEFAULT_INTERPOLATION": "linear",
                     "NOISE": False, "KEEPS_WITH_ONE_SIZE": False, "placement": None}


def declared(mode: ModuleType, member: str):
    """``mode``'s ``member`` (one of ``DECLARED_DEFAULTS``), or its default when the module
    does not declare it."""
    return getattr(mode, member, DECLARED_DEFAULTS[member])


def mode_params() -> Tuple[Tuple[str, ModeParam], ...]:
    """Every registered mode's params, in registry order: ((mode name, ModeParam), ...)."""
    return tuple((name, param) for name, mode in RESIZE_MODES.items()
                 for param in declared(mode, "PARAMS"))


def selected_mode(options) -> str:
    """The mode the params ``options`` has (an object with an attribute per param, e.g.
    parsed flags) pick when no mode is named: the first registered mode with a selecting
    param set (--shorter_side: shorter_side; --min_dim/--max_dim: min_max_dim), else
    ``DEFAULT_MODE``."""
    for name, param in mode_params():
        if param.selects and getattr(options, param.name):
            return name
    return DEFAULT_MODE


def resize_mode(name: str) -> ModuleType:
    """The module of resize mode ``name``; raises ImagenetDbError for an unknown name."""
    try:
        return RESIZE_MODES[name]
    except KeyError:
        raise ImagenetDbError(f"unknown resize mode {name!r}; expected one of "
                              f"{', '.join(RESIZE_MODES)}") from None


def check_options(options) -> None:
    """Raise ResizeOptionError (one line, naming the flags) for resize settings that cannot
    work together: an unknown mode or interpolation, negative sizes, a fixed-size mode other
    than squash without both sizes, a mode's params
    (``PARAMS``) with another mode, a size flag the mode does not read, what the mode's own
    ``check`` refuses (e.g. a non-square convnet2 size, shorter_side without
    --shorter_side), a fill value outside 0..255 (or three values for grayscale)."""
    mode = resize_mode(options.resize_mode)
    if options.interpolation not in INTERPOLATION_NAMES:
        raise ResizeOptionError(f"--interpolation must be one of "
                                f"{', '.join(INTERPOLATION_NAMES)}, not {options.interpolation!r}")
    for flag in ("resize_width", "resize_height") + tuple(
            param.name for _, param in mode_params() if not isinstance(param.default, bool)):
        if getattr(options, flag) < 0:
            raise ResizeOptionError(f"--{flag} must be >= 0, not {getattr(options, flag)}")
    _check_foreign_params(options, selecting=True)
    sizes = options.resize_width > 0 or options.resize_height > 0
    if not mode.FIXED_SIZE and sizes:
        raise ResizeOptionError(f"--resize_mode={options.resize_mode} keeps the aspect ratio: "
                                f"drop --resize_width/--resize_height")
    if declared(mode, "check"):
        mode.check(options)
    _check_foreign_params(options, selecting=False)
    if mode.FIXED_SIZE and not mode.active(options) and \
            not declared(mode, "KEEPS_WITH_ONE_SIZE"):
        raise ResizeOptionError(f"--resize_mode={options.resize_mode} needs both "
                                f"--resize_width and --resize_height")
    _check_fill_value(options)


def _check_foreign_params(options, selecting: bool) -> None:
    """ResizeOptionError for a param of another mode than ``options.resize_mode`` that is
    set: its selecting params (``selecting``; '--min_dim/--max_dim go with
    --resize_mode=min_max_dim, not squash'), or its modifiers ('--only_shrink goes with
    --shorter_side')."""
    for name, mode in RESIZE_MODES.items():
        if name == options.resize_mode:
            continue
        params = declared(mode, "PARAMS")
        chosen = [p.name for p in params if p.selects]
        for param in params:
            if param.selects == selecting and getattr(options, param.name) != param.default:
                if selecting:
                    flags = "/".join(f"--{flag}" for flag in chosen)
                    verb = "goes" if len(chosen) == 1 else "go"
                    raise ResizeOptionError(f"{flags} {verb} with --resize_mode={name}, not "
                                            f"{options.resize_mode}")
                raise ResizeOptionError(f"--{param.name} goes with --{chosen[0]}")


def _check_fill_value(options) -> None:
    """ResizeOptionError for a --fill_value outside 0..255, of 2 values, or of 3 for --gray."""
    if any(not 0 <= v <= 255 for v in options.fill_value) or len(options.fill_value) not in (0, 1, 3):
        raise ResizeOptionError(f"--fill_value takes one value or three (B,G,R) in 0..255, "
                                f"not {','.join(str(v) for v in options.fill_value)}")
    if len(options.fill_value) == 3 and not options.is_color:
        raise ResizeOptionError("--fill_value with --gray takes one value, not three")
