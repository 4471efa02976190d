#!/usr/bin/env python3
"""Draw one photo through every resize mode, side by side: the README's picture.

Each panel is the output of the project's registered resize mode (imagenet_db.imaging.resize)
with the flags written under it, all drawn at one common scale so their sizes compare, with
the output width x height.

    python3 tools/resize_modes_figure.py                      # -> docs/resize_modes.jpg
    python3 tools/resize_modes_figure.py PHOTO OUT.jpg
"""
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imagenet_db.imaging.resize import resize_mode  # noqa: E402
from imagenet_db.imaging.transform import TransformOptions  # noqa: E402

DEFAULT_PHOTO = REPO / "examples" / "photos" / "chelsea.png"   # 451x300, landscape
DEFAULT_OUT = REPO / "docs" / "resize_modes.jpg"
SCALE = 0.6          # every panel is drawn at this scale
GAP = 12
LABEL_WIDTH = 150
TEXT_LINE = 14

# (label lines, TransformOptions fields): one panel per mode, as a 256x256 build would use them
PANELS = [
    (["squash", "(Caffe, default)"], dict(resize_width=256, resize_height=256)),
    (["crop", "(DIGITS)"], dict(resize_mode="crop", resize_width=256, resize_height=256)),
    (["fill", "(DIGITS, noise)"], dict(resize_mode="fill", resize_width=256, resize_height=256)),
    (["half_crop", "(DIGITS)"], dict(resize_mode="half_crop", resize_width=256,
                                     resize_height=256)),
    (["shorter_side 256", "(ResNet, Torch)"], dict(shorter_side=256, resize_mode="shorter_side")),
    (["min_dim 300 max_dim 400", "(SSD-Caffe)"], dict(resize_mode="min_max_dim", min_dim=300,
                                                      max_dim=400)),
    (["convnet2 256", "(cuda-convnet2)"], dict(resize_mode="convnet2", resize_width=256,
                                               resize_height=256, interpolation="auto")),
]


def panels(image: np.ndarray):
    """[(label lines, image)]: the original, then each mode's output (BGR uint8)."""
    out = [(["original"], image)]
    for label, fields in PANELS:
        options = TransformOptions(**fields)
        out.append((label, resize_mode(options.resize_mode).apply(image, options, "figure")))
    return out


def figure(image: np.ndarray) -> np.ndarray:
    """The panels in a row at one scale, bottom-aligned, labelled, on white: (H, W, 3) uint8."""
    items = panels(image)
    shown = [cv2.resize(p, (max(1, round(p.shape[1] * SCALE)), max(1, round(p.shape[0] * SCALE))),
                        interpolation=cv2.INTER_AREA) for _, p in items]
    cells = [max(s.shape[1], LABEL_WIDTH) for s in shown]
    tallest = max(s.shape[0] for s in shown)
    lines = max(len(label) for label, _ in items) + 1
    canvas = np.full((tallest + 2 * GAP + lines * TEXT_LINE + 4, sum(cells) + GAP * (len(cells) + 1),
                      3), 255, np.uint8)
    x = GAP
    for (label, panel), small, cell in zip(items, shown, cells):
        y = GAP + tallest - small.shape[0]
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        text = label + ["%dx%d" % (panel.shape[1], panel.shape[0])]
        for j, line in enumerate(text):
            cv2.putText(canvas, line, (x, GAP + tallest + TEXT_LINE * (j + 1)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        x += cell + GAP
    return canvas


def main(argv):
    photo = Path(argv[1]) if len(argv) > 1 else DEFAULT_PHOTO
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"error: cannot read {photo} as an image")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), figure(image), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        sys.exit(f"error: cannot write {out}")
    print(out)


if __name__ == "__main__":
    main(sys.argv)
