"""Bounding-box fixtures: the same boxes for the 2012 bbox archives, CLS-LOC's XMLs and Kaggle's
LOC CSVs, so that every distribution must give the same annotated databases.

``annotations(base)`` gives, for every val image and every other train image (the 1st, 3rd...
in relpath order, as CLS-LOC's train_loc subset), the image's real size and its boxes, a pure
function of the relpath. The odd cases of the real files are placed on the first annotated
train images (``ODD``): float coordinates, an annotation without object, a dog box named by
its words, a box of an unknown name, a degenerate (zero-width) box, a reversed one, one
reaching outside the size; the first val image has a difficult box. ``voc_xml`` writes an
annotation as the CLS-LOC ones, ``csv_row`` Kaggle's row (wnids only, no difficult, rows
without boxes left out), ``write_bbox_archives`` ILSVRC2012's two bbox archives.
"""
from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import cv2
import numpy as np

MTIME = 1336000000
ODD = ("float", "no_object", "words", "unknown", "degenerate", "reversed", "outside")
BBOX_TRAIN = "ILSVRC2012_bbox_train_v2.tar.gz"
BBOX_VAL = "ILSVRC2012_bbox_val_v3.tgz"


def _size(data: bytes) -> tuple:
    """(height, width) of an image file as OpenCV decodes it (colour)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]


def _plain_boxes(relpath: str, wnid: str, width: int, height: int) -> list:
    rng = np.random.default_rng(zlib.crc32(relpath.encode()))
    boxes = []
    for _ in range(1 + int(rng.integers(0, 2))):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1 = int(rng.integers(x0 + 4, width + 1))
        y1 = int(rng.integers(y0 + 4, height + 1))
        boxes.append((x0, y0, x1, y1, wnid, 0))
    return boxes


def _odd(kind: str, boxes: list, wnid: str, words: str, width: int, height: int) -> list:
    """``boxes`` with the odd case ``kind`` put in."""
    x0, y0, x1, y1, _, _ = boxes[0]
    if kind == "float":
        return [(x0 + 0.5, float(y0), x1 - 0.25, float(y1), wnid, 0)] + boxes[1:]
    if kind == "no_object":
        return []
    if kind == "words":
        return [(x0, y0, x1, y1, words.split(",")[0].strip().replace(" ", "_"), 0)] + boxes[1:]
    if kind == "unknown":
        return boxes + [(1, 1, 5, 5, "Not_a_synset", 0)]
    if kind == "degenerate":
        return [(x0, y0, x0, y1, wnid, 0)] + boxes[1:]
    if kind == "reversed":
        return [(x1, y0, x0, y1, wnid, 0)] + boxes[1:]
    return [(x0 - 3, y0, width + 7, y1, wnid, 0)] + boxes[1:]  # outside


def annotations(base: dict) -> dict:
    """{(split, relpath): (width, height, [(xmin, ymin, xmax, ymax, name, difficult)])} for
    the images of ``base`` (``testing.clsloc.write_base``) that carry boxes (see module doc);
    relpath as Caffe's ('n01440764/n01440764_10026.JPEG', 'ILSVRC2012_val_00000001.JPEG')."""
    words = {w: t for _, w, t in base["classes"]}
    tree = Path(base["tree"])
    out = {}
    annotated = [("train", rel, w) for i, (rel, w) in enumerate(base["train"]) if i % 2 == 0]
    annotated += [("val", name, w) for name, w in base["val"]]
    for n, (split, rel, wnid) in enumerate(annotated):
        height, width = _size((tree / split / rel).read_bytes())
        boxes = _plain_boxes(rel, wnid, width, height)
        if split == "train" and n < len(ODD):
            boxes = _odd(ODD[n], boxes, wnid, words[wnid], width, height)
        if split == "val" and rel == base["val"][0][0]:
            boxes = [boxes[0][:5] + (1,)] + boxes[1:]
        out[(split, rel)] = (width, height, boxes)
    return out


def _number(value) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def voc_xml(folder: str, stem: str, entry: tuple, name: str | None = None) -> bytes:
    """A Pascal-VOC annotation as the CLS-LOC ones (folder, filename without extension, source
    ILSVRC_2012, size, one <object> per box); ``name`` replaces every object's name."""
    width, height, boxes = entry
    objects = "".join(
        f"\t<object>\n\t\t<name>{name or b[4]}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>{b[5]}</difficult>\n\t\t<bndbox>\n"
        + "".join(f"\t\t\t<{k}>{_number(v)}</{k}>\n"
                  for k, v in zip(("xmin", "ymin", "xmax", "ymax"), b))
        + "\t\t</bndbox>\n\t</object>\n" for b in boxes)
    return (f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{stem}</filename>\n"
            f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n\t<size>\n"
            f"\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n"
            f"\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n").encode()


def csv_row(stem: str, entry: tuple, words: dict, name: str | None = None) -> str | None:
    """Kaggle's LOC_*_solution.csv row for an annotation (boxes of a name that is no class's
    words left out, word names given as the wnid, Kaggle's trailing space); None when no box."""
    by_word = {t.split(",")[0].strip().replace(" ", "_"): w for w, t in words.items()}
    groups = [f"{name or by_word.get(b[4], b[4])} {' '.join(_number(v) for v in b[:4])}"
              for b in entry[2] if b[4] in words or b[4] in by_word]
    return f"{stem},{' '.join(groups)} \n" if groups else None


def _targz(path: Path, members) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tar.addfile(info, io.BytesIO(data))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                mtime=MTIME) as f:
        f.write(buf.getvalue())


def write_bbox_archives(base: dict) -> dict:
    """ILSVRC2012_bbox_train_v2.tar.gz (``<wnid>/<stem>.xml``) and ILSVRC2012_bbox_val_v3.tgz
    (``val/<stem>.xml``) beside the 2012 triple of ``base``. Returns {split: path}."""
    folder = Path(base["paths"]["train"]).parent
    train, val = [], []
    for (split, rel), entry in sorted(annotations(base).items()):
        stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if split == "train":
            wnid = rel.split("/")[0]
            train.append((f"{wnid}/{stem}.xml", voc_xml(wnid, stem, entry)))
        else:
            val.append((f"val/{stem}.xml", voc_xml("val", stem, entry)))
    paths = {"train": folder / BBOX_TRAIN, "val": folder / BBOX_VAL}
    _targz(paths["train"], train)
    _targz(paths["val"], val)
    return {k: str(v) for k, v in paths.items()}
