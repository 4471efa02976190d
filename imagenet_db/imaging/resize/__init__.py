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
    bytes). ``key`` is the image's relpath: modes that draw noise seed it with it.

The modes: ``squash`` (Caffe's convert_imageset), ``crop``, ``fill``, ``half_crop`` (NVIDIA
DIGITS), ``shorter_side`` (ResNet / Torch), ``min_max_dim`` (SSD-Caffe), ``convnet2``
(cuda-convnet2's make-data). Shared helpers (rounding, interpolation, padding) are in
``geometry``. To add a mode: write ``imaging/resize/<mode>.py`` with these members and add one
line to ``RESIZE_MODES``; the commands offer every registered name.
"""
from types import ModuleType
from typing import Dict

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.resize import (convnet2, crop, fill, half_crop, min_max_dim,
                                        shorter_side, squash)
from imagenet_db.imaging.resize.geometry import INTERPOLATION_NAMES

RESIZE_MODES: Dict[str, ModuleType] = {
    "squash": squash,              # Caffe's convert_imageset (bilinear to W x H)
    "crop": crop,                  # DIGITS: cover W x H keeping aspect, cut the centre
    "fill": fill,                  # DIGITS: fit inside W x H keeping aspect, pad with noise
    "half_crop": half_crop,        # DIGITS: half-way between crop and fill
    "shorter_side": shorter_side,  # ResNet / Torch: shorter side to N, aspect kept
    "min_max_dim": min_max_dim,    # SSD-Caffe: --min_dim / --max_dim, aspect kept
    "convnet2": convnet2,          # cuda-convnet2 make-data: shorter side to N, centre N x N
}
DEFAULT_MODE = "squash"
FIXED_SIZE_MODES = tuple(name for name, mode in RESIZE_MODES.items() if mode.FIXED_SIZE)


class ResizeOptionError(ImagenetDbError):
    """Resize settings that contradict each other or are out of range."""


def resize_mode(name: str) -> ModuleType:
    """The module of resize mode ``name``; raises ImagenetDbError for an unknown name."""
    try:
        return RESIZE_MODES[name]
    except KeyError:
        raise ImagenetDbError(f"unknown resize mode {name!r}; expected one of "
                              f"{', '.join(RESIZE_MODES)}") from None


def check_options(options) -> None:
    """Raise ResizeOptionError (one line, naming the flags) for resize settings that cannot
    work together: an unknown mode or interpolation, negative sizes, --shorter_side or
    --min_dim/--max_dim with another mode, a size flag the mode does not read, a non-square
    convnet2 size, crop/fill/half_crop/convnet2 without both sizes, --only_shrink without --shorter_side, a fill value outside 0..255 (or three
    values for grayscale)."""
    mode = resize_mode(options.resize_mode)
    if options.interpolation not in INTERPOLATION_NAMES:
        raise ResizeOptionError(f"--interpolation must be one of "
                                f"{', '.join(INTERPOLATION_NAMES)}, not {options.interpolation!r}")
    for flag in ("resize_width", "resize_height", "shorter_side", "min_dim", "max_dim"):
        if getattr(options, flag) < 0:
            raise ResizeOptionError(f"--{flag} must be >= 0, not {getattr(options, flag)}")
    sizes = options.resize_width > 0 or options.resize_height > 0
    if options.shorter_side and mode is not shorter_side:
        raise ResizeOptionError(f"--shorter_side goes with --resize_mode=shorter_side, not "
                                f"{options.resize_mode}")
    if (options.min_dim or options.max_dim) and mode is not min_max_dim:
        raise ResizeOptionError(f"--min_dim/--max_dim go with --resize_mode=min_max_dim, not "
                                f"{options.resize_mode}")
    if mode in (shorter_side, min_max_dim) and sizes:
        raise ResizeOptionError(f"--resize_mode={options.resize_mode} keeps the aspect ratio: "
                                f"drop --resize_width/--resize_height")
    if mode is shorter_side and not options.shorter_side:
        raise ResizeOptionError("--resize_mode=shorter_side needs --shorter_side=N")
    if mode is min_max_dim and not (options.min_dim or options.max_dim):
        raise ResizeOptionError("--resize_mode=min_max_dim needs --min_dim and/or --max_dim")
    if options.only_shrink and mode is not shorter_side:
        raise ResizeOptionError("--only_shrink goes with --shorter_side")
    if mode is convnet2 and options.resize_width != options.resize_height:
        raise ResizeOptionError(f"--resize_mode=convnet2 makes square images: "
                                f"--resize_width ({options.resize_width}) must equal "
                                f"--resize_height ({options.resize_height})")
    # squash without sizes keeps the images (Caffe's convert_imageset); the other fixed-size
    # modes would silently do nothing: no size is the same error as one size
    if mode not in (shorter_side, min_max_dim, squash) and not mode.active(options):
        raise ResizeOptionError(f"--resize_mode={options.resize_mode} needs both "
                                f"--resize_width and --resize_height")
    if any(not 0 <= v <= 255 for v in options.fill_value) or len(options.fill_value) not in (0, 1, 3):
        raise ResizeOptionError(f"--fill_value takes one value or three (B,G,R) in 0..255, "
                                f"not {','.join(str(v) for v in options.fill_value)}")
    if len(options.fill_value) == 3 and not options.is_color:
        raise ResizeOptionError("--fill_value with --gray takes one value, not three")
