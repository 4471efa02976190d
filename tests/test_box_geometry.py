"""Boxes follow the pixels: every resize mode on a real photo (examples/photos/chelsea.png,
451 x 300) with a green rectangle painted where the box is. The boxes the transform gives are
checked against a hand computation of each mode's geometry (sizes and offsets worked out
below from the modes' documented rules) and against where the green pixels really land."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagenet_db.imaging.resize.geometry import Placement, place_boxes
from imagenet_db.imaging.transform import TransformOptions, transform_image
from imagenet_db.sources.boxes import RecordBoxes

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "photos" / "chelsea.png"
W, H = 451, 300
BOX = (100, 60, 300, 240)  # painted green: columns 100..299, rows 60..239
GONE = (0, 10, 30, 50)  # left of every crop window (30/451*269 = 17.9 < 23 in half_crop)


def _painted() -> bytes:
    image = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (H, W)
    image[BOX[1]:BOX[3], BOX[0]:BOX[2]] = (0, 255, 0)
    return cv2.imencode(".png", image)[1].tobytes()


def _boxes(*boxes):
    return RecordBoxes(np.array([(*b, 7, 0) for b in boxes], dtype=np.float32), (W, H))


def _run(options, *boxes):
    return transform_image(_painted(), "n0/chelsea.png", options, boxes=_boxes(*boxes))


def _green_extent(pixels):
    b, g, r = (pixels[:, :, i].astype(int) for i in range(3))
    ys, xs = np.nonzero((g > 200) & (r < 80) & (b < 80))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# mode -> (options, stored (width, height), hand-computed [xmin, ymin, xmax, ymax] of BOX)
HAND = {
    # squash, shorter side, min/max dim: the whole frame is kept: normalized boxes stay
    "squash": (TransformOptions(resize_width=224, resize_height=224), (224, 224),
               [100 / 451, 60 / 300, 300 / 451, 240 / 300]),
    "shorter_side": (TransformOptions(resize_mode="shorter_side", shorter_side=256), (385, 256),
                     [100 / 451, 60 / 300, 300 / 451, 240 / 300]),
    "min_max_dim": (TransformOptions(resize_mode="min_max_dim", min_dim=600), (902, 600),
                    [100 / 451, 60 / 300, 300 / 451, 240 / 300]),
    # crop: rw = 451/224, rh = 300/224, wider: 451/rh = 336.7 -> 337 x 224, cut from
    # round((337 - 224) / 2) = round(56.5) = 57
    "crop": (TransformOptions(resize_mode="crop", resize_width=224, resize_height=224), (224, 224),
             [(100 / 451 * 337 - 57) / 224, 60 / 300, (300 / 451 * 337 - 57) / 224, 240 / 300]),
    # fill: 224 x round(300/rw = 149.002) = 149, +1 for even padding = 150, 37 rows each side
    "fill": (TransformOptions(resize_mode="fill", resize_width=224, resize_height=224,
                              fill_value=(0,)), (224, 224),
             [100 / 451, (60 / 300 * 150 + 37) / 224, 300 / 451, (240 / 300 * 150 + 37) / 224]),
    # half_crop: r = (rw + rh) / 2 = 1.6763: 451/r = 269.04 -> 269, 300/r = 178.96 -> 179,
    # +1 = 180 rows; cut round((269 - 224) / 2) = 23 columns, pad (224 - 180) // 2 = 22 rows
    "half_crop": (TransformOptions(resize_mode="half_crop", resize_width=224, resize_height=224,
                                   fill_value=(0,)), (224, 224),
                  [(100 / 451 * 269 - 23) / 224, (60 / 300 * 180 + 22) / 224,
                   (300 / 451 * 269 - 23) / 224, (240 / 300 * 180 + 22) / 224]),
    # convnet2: shorter side to 224: round(451 * 224/300 = 336.75) = 337 x 224, centre window
    # at (337 - 224) // 2 = 56
    "convnet2": (TransformOptions(resize_mode="convnet2", resize_width=224, resize_height=224),
                 (224, 224),
                 [(100 / 451 * 337 - 56) / 224, 60 / 300, (300 / 451 * 337 - 56) / 224, 240 / 300]),
}
CROPPING = ("crop", "half_crop", "convnet2")


@pytest.mark.parametrize("mode", list(HAND))
def test_boxes_follow_each_resize_mode(mode):
    options, size, want = HAND[mode]
    image = _run(options, BOX, GONE)
    assert (image.shape[2], image.shape[1]) == size
    kept = image.boxes if mode in CROPPING else image.boxes[:1]
    assert image.dropped_boxes == (1 if mode in CROPPING else 0)
    assert kept.dtype == np.float32 and kept.shape[1] == 6
    np.testing.assert_allclose(kept[0, :4], want, rtol=0, atol=1e-6)
    assert kept[0, 4] == 7 and kept[0, 5] == 0
    # and the green pixels are where the box says (bilinear edges: within 2 pixels)
    x0, y0, x1, y1 = _green_extent(image.pixels)
    np.testing.assert_allclose([x0, y0, x1, y1], np.array(want) * [*size, *size], atol=2)


def test_a_box_cut_by_the_crop_is_clipped_and_one_outside_dropped():
    options = HAND["crop"][0]
    image = _run(options, (50, 0, 120, 300), GONE)  # left edge at 50/451*337 = 37.4 < 57
    assert image.dropped_boxes == 1 and len(image.boxes) == 1
    np.testing.assert_allclose(image.boxes[0, :4], [0, 0, (120 / 451 * 337 - 57) / 224, 1],
                               atol=1e-6)


def test_uncropped_modes_do_not_clamp_outside_boxes():
    """SSD's rule: divided by the size, not clamped (no crop cuts them)."""
    image = _run(TransformOptions(), (-9, 10, 460, 310))
    np.testing.assert_allclose(image.boxes[0, :4], np.float32([-9, 10, 460, 310])
                               / np.float32([W, H, W, H]), rtol=0, atol=0)


def test_encoded_and_unresized_images_carry_their_boxes():
    image = transform_image(_painted(), "n0/chelsea.png", TransformOptions(encoded=True,
                                                                           encode_type="png"),
                            boxes=_boxes(BOX))
    assert image.pixels is None and image.encoded is not None
    np.testing.assert_allclose(image.boxes[0, :4], [100 / 451, 0.2, 300 / 451, 0.8], atol=1e-6)


def test_place_boxes_padding_and_reversed_boxes():
    boxes = np.array([[0.1, 0.0, 0.5, 1.0, 1, 1], [0.9, 0.2, 0.8, 0.4, 2, 0]], np.float32)
    out, dropped = place_boxes(boxes, Placement((100, 50), 0, -25, (100, 100)))
    assert dropped == 0
    np.testing.assert_allclose(out[:, :4], [[0.1, 0.25, 0.5, 0.75], [0.9, 0.35, 0.8, 0.45]],
                               atol=1e-6)
    assert out[0, 5] == 1 and out[1, 4] == 2
    assert place_boxes(boxes, None)[0] is boxes
