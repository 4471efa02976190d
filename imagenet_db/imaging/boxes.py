"""Boxes follow the image: a record's annotation -> the boxes of the stored image.

A record's boxes (``sources.boxes.RecordBoxes``: pixels as annotated, and the annotation's
``size``) are divided by that size (the decoded image's own size when the annotation has
none), as SSD-Caffe's ``ReadXMLToAnnotatedDatum`` does in float32, not clamped. Then the resize
mode's ``placement`` (``imaging.resize``) moves them as the pixels moved: squash and the
aspect-keeping modes (shorter side, min/max dim) leave normalized boxes as they are; crop,
fill, half crop and convnet2's centre crop cut and clip, or shift and scale under padding,
dropping boxes that fall outside (``geometry.place_boxes``).
"""
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.resize import declared, resize_mode
from imagenet_db.imaging.resize.geometry import place_boxes


def normalized_boxes(boxes, width: int, height: int) -> np.ndarray:
    """(N, 6) float32 [xmin, ymin, xmax, ymax, label, difficult] relative to the annotation's
    size (``boxes.size``; ``width`` x ``height``, the decoded image, when it has none):
    coordinates divided in float32 as SSD's C++ (``xmin / width``), not clamped."""
    size_w, size_h = boxes.size or (width, height)
    out = np.array(boxes.pixels, dtype=np.float32, copy=True).reshape(-1, 6)
    out[:, [0, 2]] = out[:, [0, 2]] / np.float32(size_w)
    out[:, [1, 3]] = out[:, [1, 3]] / np.float32(size_h)
    return out


def stored_boxes(boxes, width: int, height: int, options) -> Tuple[Optional[np.ndarray], int]:
    """The boxes of the image stored from a ``width`` x ``height`` decoded source under the
    transform ``options``: ((N', 6) float32 normalized to the stored image, boxes dropped
    because they fell outside it). (None, 0) when ``boxes`` is None (no annotation)."""
    if boxes is None:
        return None, 0
    normalized = normalized_boxes(boxes, width, height)
    placement = declared(resize_mode(options.resize_mode), "placement")
    return place_boxes(normalized, placement(width, height, options) if placement else None)
