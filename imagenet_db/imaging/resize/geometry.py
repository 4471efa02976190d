"""Helpers shared by the resize modes (not a mode itself): rounding, interpolation, padding.

Images are uint8 numpy arrays, (H, W) grayscale or (H, W, C) (BGR as OpenCV decodes); sizes
are in pixels, given as (width, height) as OpenCV does.
"""
import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from imagenet_db.errors import ImagenetDbError

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}
INTERPOLATION_NAMES = tuple(INTERPOLATIONS) + ("auto",)
NOISE_HIGH = 255  # DIGITS draws np.random.randint(0, 255): values 0..254, 255 never occurs


class ResizeOptionError(ImagenetDbError):
    """Resize settings that contradict each other or are out of range."""


@dataclass(frozen=True)
class ModeParam:
    """One setting a resize mode reads (a mode's ``PARAMS``): a ``TransformOptions`` field
    and the flag ``--<name>`` of every command that resizes.

    default: its value when not given (its type is the field's: int -> ``--name N``, in
    pixels, checked >= 0; bool -> ``--name/--no-name``). help: the --help line. metavar: of
    an int flag. selects: giving it picks the mode when --resize_mode is not given (e.g.
    --shorter_side N); else it only modifies the mode (e.g. --only_shrink).
    """
    name: str
    default: object
    help: str
    metavar: str = "N"
    selects: bool = True


def round_half_up(x: float) -> int:
    """Round x >= 0 to the nearest integer, halves up: Python 2's ``round`` (DIGITS) and C's
    ``round`` (cuda-convnet2). Python 3's ``round`` rounds halves to even (2.5 -> 2)."""
    return int(math.floor(x + 0.5))


def interpolation_flag(name: str, source: Tuple[int, int], target: Tuple[int, int]) -> int:
    """The cv2 flag for resizing ``source`` (width, height) to ``target`` (width, height).

    name: 'linear' (INTER_LINEAR, Caffe's cv::resize default), 'area', 'cubic', or 'auto' =
    cuda-convnet2's make-data rule on sizes: same size -> LINEAR, both sides shrink (or stay)
    -> AREA, both grow (or stay) -> CUBIC, one grows and one shrinks -> LINEAR.
    Raises ValueError for another name.
    """
    if name in INTERPOLATIONS:
        return INTERPOLATIONS[name]
    if name != "auto":
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATION_NAMES)}, "
                         f"got {name!r}")
    (sw, sh), (tw, th) = source, target
    if (tw, th) == (sw, sh):
        return cv2.INTER_LINEAR
    if tw <= sw and th <= sh:
        return cv2.INTER_AREA
    if tw >= sw and th >= sh:
        return cv2.INTER_CUBIC
    return cv2.INTER_LINEAR


def resize_to(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    """``cv2.resize`` to width x height with the named interpolation (see interpolation_flag).
    An (H, W, 1) image keeps its channel axis (cv2 drops it)."""
    flag = interpolation_flag(interpolation, (image.shape[1], image.shape[0]), (width, height))
    out = cv2.resize(image, (width, height), interpolation=flag)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, np.newaxis]
    return out


def noise_rng(seed: int, key: Union[str, bytes]) -> np.random.Generator:
    """The generator of one image's fill noise, a pure function of (seed, key): a build is
    reproducible and any image can be redone alone. key: the image's relpath (str: UTF-8);
    seed: the build's ``--seed``. SeedSequence([seed, first 16 bytes of SHA-256(key)]) ->
    numpy's default PCG64 generator."""
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    digest = hashlib.sha256(data).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]))


def pad_block(shape: Tuple[int, ...], fill_value: Sequence[int], seed: int,
              key: Union[str, bytes]) -> np.ndarray:
    """One padding strip of ``shape`` ((rows, cols) or (rows, cols, C)) uint8: DIGITS' uniform
    noise 0..254 from ``noise_rng(seed, key)`` when ``fill_value`` is empty, else that constant
    (one value for all channels, or one per channel in the image's channel order, BGR).
    Raises ValueError for a wrong number of values or a value outside 0..255."""
    if not len(fill_value):
        return noise_rng(seed, key).integers(0, NOISE_HIGH, size=shape, dtype=np.uint8)
    values = np.asarray(fill_value, dtype=np.int64).ravel()
    channels = shape[2] if len(shape) == 3 else 1
    if values.size not in (1, channels):
        raise ValueError(f"fill_value needs 1 or {channels} values, got {list(fill_value)}")
    if ((values < 0) | (values > 255)).any():
        raise ValueError(f"fill_value must be in 0..255, got {list(fill_value)}")
    block = np.empty(shape, dtype=np.uint8)
    block[...] = values.astype(np.uint8) if len(shape) == 3 else np.uint8(values[0])
    return block


def digits_ratios(image: np.ndarray, width: int, height: int) -> Tuple[float, float]:
    """DIGITS' (width_ratio, height_ratio) = (W / width, H / height)."""
    return image.shape[1] / float(width), image.shape[0] / float(height)


def digits_cut(image: np.ndarray, width: int, height: int, wider: bool) -> np.ndarray:
    """Cut the too-long side (columns when ``wider``, else rows) to the target from
    ``int(round((resized - target) / 2.0))`` (DIGITS, Python 2 rounding)."""
    if wider:
        start = round_half_up((image.shape[1] - width) / 2.0)
        return image[:, start:start + width]
    start = round_half_up((image.shape[0] - height) / 2.0)
    return image[start:start + height, :]


def digits_pad(image: np.ndarray, width: int, height: int, wider: bool,
               fill_value: Sequence[int], seed: int, key) -> np.ndarray:
    """Pad the short side (rows when ``wider``, else columns) to the target: (target - resized)
    / 2 on each side, one strip (see pad_block) drawn once and put on both sides, as DIGITS."""
    if wider:
        pad = (height - image.shape[0]) // 2
        if pad <= 0:
            return image
        block = pad_block((pad,) + image.shape[1:], fill_value, seed, key)
        return np.concatenate((block, image, block), axis=0)
    pad = (width - image.shape[1]) // 2
    if pad <= 0:
        return image
    block = pad_block((image.shape[0], pad) + image.shape[2:], fill_value, seed, key)
    return np.concatenate((block, image, block), axis=1)


def center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centre width x height window of an (H, W[, C]) image, as Caffe's DataTransformer in
    the TEST phase: offsets ``(H - height) // 2``, ``(W - width) // 2`` (a view, no copy).
    Raises ValueError when the image is smaller than the window."""
    h, w = image.shape[:2]
    if h < height or w < width:
        raise ValueError(f"image of {w}x{h} pixels is smaller than the {width}x{height} crop")
    top, left = (h - height) // 2, (w - width) // 2
    return image[top:top + height, left:left + width]


def fixed_active(options) -> bool:
    """True when both resize_width and resize_height are > 0 (the fixed-size modes' switch)."""
    return options.resize_width > 0 and options.resize_height > 0


def fixed_output_size(width: int, height: int, options) -> Optional[Tuple[int, int]]:
    """(resize_width, resize_height) for a fixed-size mode, or None when the image is left as
    it is (no target size, or already of the target size)."""
    if not fixed_active(options) or (width, height) == (options.resize_width,
                                                          options.resize_height):
        return None
    return options.resize_width, options.resize_height


def digits_resize(image: np.ndarray, options,
                  size_for: Callable[..., Tuple[int, int]]
                  ) -> Tuple[np.ndarray, Optional[bool]]:
    """The start shared by DIGITS' crop, fill and half_crop (``resize_image``).

    Returns (image, None) when the mode is done: the image unchanged (see fixed_output_size) or
    plainly resized (equal ratios ``W / width == H / height``). Else resizes to
    ``size_for(W, H, width, height, rw, rh, wider)`` = (cols, rows) and returns (resized,
    wider), ``wider`` being rw > rh (the image is relatively wider than the target), for the
    mode to cut or pad.
    """
    if fixed_output_size(image.shape[1], image.shape[0], options) is None:
        return image, None
    width, height = options.resize_width, options.resize_height
    rw, rh = digits_ratios(image, width, height)
    if rw == rh:
        return resize_to(image, width, height, options.interpolation), None
    wider = rw > rh
    cols, rows = size_for(image.shape[1], image.shape[0], width, height, rw, rh, wider)
    return resize_to(image, cols, rows, options.interpolation), wider


@dataclass(frozen=True)
class Placement:
    """Where a stored image lies in its source, for the boxes to follow the pixels.

    The source image is scaled to ``scaled`` (width, height) pixels; the stored image is the
    ``size`` (width, height) window of that with its top-left corner at (``left``, ``top``)
    (a positive offset cuts, a negative one is padding). A resize mode that keeps the whole
    image in the frame (squash, shorter side, min/max dim) has none: normalized boxes stay."""
    scaled: Tuple[int, int]
    left: int
    top: int
    size: Tuple[int, int]


def place_boxes(boxes: np.ndarray, placement: Optional[Placement]) -> Tuple[np.ndarray, int]:
    """Boxes of the source image -> boxes of the stored image, and how many were dropped.

    boxes: (N, 6) float32 [xmin, ymin, xmax, ymax, label, difficult], coordinates relative to
    the source (0..1 inside it). Under a ``placement`` each coordinate is scaled and shifted
    as the pixels were (x' = (x * scaled_w - left) / width); along an axis the window cuts,
    coordinates are clipped to [0, 1] and a box lying wholly outside the window is dropped
    (a box touching it only on its edge counts as outside). Returns (N', 6) float32 and N - N'.
    None: the boxes as they are (not clamped, as SSD's convert_annoset)."""
    if placement is None or not len(boxes):
        return boxes, 0
    out = boxes.astype(np.float32, copy=True)
    keep = np.ones(len(boxes), dtype=bool)
    for low, high, scaled, start, size in ((0, 2, placement.scaled[0], placement.left,
                                            placement.size[0]),
                                           (1, 3, placement.scaled[1], placement.top,
                                            placement.size[1])):
        for column in (low, high):
            out[:, column] = (boxes[:, column].astype(np.float64) * scaled - start) / size
        if start > 0 or start + size < scaled:  # the window cuts this axis
            lo = np.minimum(out[:, low], out[:, high])
            hi = np.maximum(out[:, low], out[:, high])
            keep &= (hi > 0) & (lo < 1) | ((lo == hi) & (lo >= 0) & (lo <= 1))
            out[:, [low, high]] = np.clip(out[:, [low, high]], 0.0, 1.0)
    return out[keep], int(len(boxes) - keep.sum())


def digits_placement(width: int, height: int, options, size_for: Callable[..., Tuple[int, int]],
                     cut: bool, pad: bool) -> Optional[Placement]:
    """The ``Placement`` of DIGITS' crop (``cut``), fill (``pad``) or half crop (both) for a
    width x height image: the same sizes and offsets as ``digits_resize``, ``digits_cut`` and
    ``digits_pad``; None when the image is kept or plainly resized (equal ratios)."""
    if fixed_output_size(width, height, options) is None:
        return None
    target_w, target_h = options.resize_width, options.resize_height
    rw, rh = width / float(target_w), height / float(target_h)
    if rw == rh:
        return None
    wider = rw > rh
    cols, rows = size_for(width, height, target_w, target_h, rw, rh, wider)
    left = top = 0
    if cut and wider:
        left = round_half_up((cols - target_w) / 2.0)
    elif cut:
        top = round_half_up((rows - target_h) / 2.0)
    if pad and wider:
        top = -max(0, (target_h - rows) // 2)
    elif pad:
        left = -max(0, (target_w - cols) // 2)
    return Placement((cols, rows), left, top, (target_w, target_h))
