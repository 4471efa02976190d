"""Bounding boxes of the ImageNet distributions: PASCAL VOC XMLs and Kaggle's LOC_*_solution.csv.

Where they are (each read in place, like the images; see the distributions' modules):
ILSVRC2012's ``ILSVRC2012_bbox_train_v2.tar.gz`` (``nXXXXXXXX/nXXXXXXXX_N.xml``) and
``ILSVRC2012_bbox_val_v3.tgz`` (``val/ILSVRC2012_val_XXXXXXXX.xml``) beside the three 2012 files;
CLS-LOC's ``Annotations/CLS-LOC/{train/<wnid>,val}/*.xml``; Kaggle's ``LOC_train_solution.csv``
and ``LOC_val_solution.csv`` (rows ``ImageId,PredictionString``, groups of ``wnid xmin ymin
xmax ymax`` in pixels). When XMLs and a CSV are both present they must give the same boxes
(the run stops naming the image and both files); the XML's boxes are used (they carry ``size``
and ``difficult``).

A PASCAL VOC annotation: ``annotation/size/{width,height}``, then one ``object`` per box with
``name`` (the wnid), ``difficult`` and ``bndbox/{xmin,ymin,xmax,ymax}``. XML is parsed with
defusedxml: entity declarations (billion laughs) and external references are refused with a
one-line error naming the file. Numbers are ASCII decimals, floats allowed (``12.0`` is 12).
Odd annotations are kept as written and counted (``BoxCounts``): no ``object``, a degenerate
(zero-size) box, a reversed one (max < min), one outside ``size``. A box whose name is not a
wnid (some dog boxes say ``Scottish_deerhound``) is mapped to the one synset whose words hold
that name (underscores as spaces, any case); when no synset or several do, the box is dropped,
counted and named in the notes.

Boxes reach the records as ``ImageBoxes`` (pixel coordinates, the XML size or None); a split's
are read once, when a format first asks for them (``SplitBoxes.table``).
"""
import csv
import io
import math
import re
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from imagenet_db.errors import ImagenetDbError

WNID = re.compile(r"^n\d{8}$")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
MAX_XML_BYTES = 1 << 20  # an annotation larger than this is refused (real ones are < 10 KB)
KAGGLE_TRAIN = "LOC_train_solution.csv"
KAGGLE_VAL = "LOC_val_solution.csv"
CSV_HEADER = ["ImageId", "PredictionString"]

# (xmin, ymin, xmax, ymax, wnid, difficult): one box in pixels as the file gives it
Box = Tuple[float, float, float, float, str, bool]


class BoxError(ImagenetDbError):
    """A malformed or refused annotation; the message names the file (and line or member)."""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (it holds an array)
class RecordBoxes:
    """The boxes a record carries to the workers (``Record.boxes``).

    pixels: (N, 6) float32 [xmin, ymin, xmax, ymax, label, difficult], coordinates in pixels
    as the annotation gives them, label in the format's label order, difficult 0 or 1.
    size: (width, height) to divide by (the XML's ``size``), or None: the decoded image's.
    ``imaging.boxes.place_boxes`` turns them into the stored image's normalized boxes."""
    pixels: np.ndarray
    size: Optional[Tuple[int, int]]


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image as its annotation gives them.

    boxes: ``Box`` tuples (xmin, ymin, xmax, ymax in pixels, float; wnid; difficult), in file
    order. size: (width, height) in pixels from the XML's ``size``, or None (a CSV, or an XML
    without a usable size: the image's own size is used). where: the file (and row) they came
    from, for messages."""
    boxes: Tuple[Box, ...]
    size: Optional[Tuple[int, int]]
    where: str

    def array(self, labels: Mapping[str, int]) -> np.ndarray:
        """(N, 6) float32 [xmin, ymin, xmax, ymax, label, difficult] in pixels, the label
        being ``labels[wnid]``; boxes of a wnid not in ``labels`` are left out."""
        rows = [(b[0], b[1], b[2], b[3], labels[b[4]], float(b[5]))
                for b in self.boxes if b[4] in labels]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), 6)

    def for_record(self, labels: Mapping[str, int]) -> RecordBoxes:
        """``RecordBoxes`` of ``array(labels)`` and the size."""
        return RecordBoxes(self.array(labels), self.size)


@dataclass
class BoxCounts:
    """What reading a split's annotations met: files read, boxes kept, and the odd cases
    (each a count plus up to ``EXAMPLES`` named examples)."""
    files: int = 0
    boxes: int = 0
    odd: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    EXAMPLES = 3
    WHAT = {"no_object": "annotations without an object (stored without boxes)",
            "renamed": "boxes named by words, mapped to their synset",
            "unknown_name": "boxes whose name is no synset's (left out)",
            "degenerate": "zero-size boxes (kept, as SSD does)",
            "reversed": "reversed boxes, max < min (kept as written)",
            "outside": "boxes reaching outside the image size (kept, not clamped)"}

    def count(self, kind: str, example: str) -> None:
        """Count one ``kind`` (a key of ``WHAT``), naming ``example``."""
        self.odd[kind] = self.odd.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.EXAMPLES:
            shown.append(example)

    def notes(self, split: str) -> List[str]:
        """One line for the files and boxes, one per odd kind met, with examples."""
        lines = [f"{split} boxes: {self.boxes:,} boxes from {self.files:,} annotations"]
        for kind, what in self.WHAT.items():
            if self.odd.get(kind):
                lines.append(f"{split} boxes: {self.odd[kind]:,} {what}, e.g. "
                             f"{'; '.join(self.examples[kind])}")
        return lines


class NameResolver:
    """wnid of a box's ``name``: a wnid as it is; else the one synset whose words (comma-
    separated, e.g. 'Scottish deerhound, deerhound') hold the name with underscores as spaces,
    ignoring case; None when no synset or several do (not certain)."""

    def __init__(self, words: Mapping[str, str]):
        self.by_word: Dict[str, set] = {}
        for wnid, text in words.items():
            for word in text.split(","):
                self.by_word.setdefault(word.strip().lower(), set()).add(wnid)

    def __call__(self, name: str) -> Optional[str]:
        if WNID.match(name):
            return name
        found = self.by_word.get(name.replace("_", " ").strip().lower(), set())
        return next(iter(found)) if len(found) == 1 else None


def _number(text: Optional[str], where: str, what: str) -> float:
    token = (text or "").strip()
    if not token.isascii() or not NUMBER.match(token):
        raise BoxError(f"{where}: {what} {token!r} is not a number")
    value = float(token)
    if not math.isfinite(value):  # '1e999': no box or size can be stored from it
        raise BoxError(f"{where}: {what} {token!r} is not a finite number")
    return value


def _root(data: bytes, where: str):
    if len(data) > MAX_XML_BYTES:
        raise BoxError(f"{where}: {len(data):,} bytes, too large for an annotation")
    try:
        return fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BoxError(f"{where}: refused: the XML declares entities or external references "
                       f"({type(exc).__name__})") from None
    except (ParseError, ValueError) as exc:
        raise BoxError(f"{where}: not a readable XML annotation: {exc}") from None


def _size(root, where: str) -> Optional[Tuple[int, int]]:
    size = root.find("size")
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        return None
    width = _number(size.findtext("width"), where, "size/width")
    height = _number(size.findtext("height"), where, "size/height")
    return (int(width), int(height)) if width >= 1 and height >= 1 else None


def check_box(box: Box, size: Optional[Tuple[int, int]], where: str, counts: BoxCounts) -> None:
    """Count what is odd about ``box`` (degenerate, reversed, outside ``size``)."""
    xmin, ymin, xmax, ymax = box[:4]
    if xmax < xmin or ymax < ymin:
        counts.count("reversed", where)
    elif xmax == xmin or ymax == ymin:
        counts.count("degenerate", where)
    if size is not None and (min(xmin, ymin, xmax, ymax) < 0 or max(xmin, xmax) > size[0]
                             or max(ymin, ymax) > size[1]):
        counts.count("outside", where)


def parse_voc_xml(data: bytes, where: str, resolve: Callable[[str], Optional[str]],
                  counts: BoxCounts) -> ImageBoxes:
    """The boxes of one PASCAL VOC annotation (see the module docstring); ``resolve`` maps an
    object's name to a wnid (``NameResolver``). Odd cases go to ``counts``. Raises BoxError
    naming ``where`` for XML that is malformed, declares entities, or has a coordinate or size
    that is not a number."""
    root = _root(data, where)
    size = _size(root, where)
    boxes = []
    objects = list(root.iter("object"))
    if not objects:
        counts.count("no_object", where)
    for obj in objects:
        name = (obj.findtext("name") or "").strip()
        wnid = resolve(name)
        if wnid is None:
            counts.count("unknown_name", f"{where}: {name!r}")
            continue
        if wnid != name:
            counts.count("renamed", f"{where}: {name} -> {wnid}")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BoxError(f"{where}: an object ({name}) has no bndbox")
        coords = [_number(bndbox.findtext(k), where, f"bndbox/{k}")
                  for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = _number(obj.findtext("difficult") or "0", where, "difficult") != 0
        box = (*coords, wnid, difficult)
        check_box(box, size, where, counts)
        boxes.append(box)
    counts.files += 1
    counts.boxes += len(boxes)
    return ImageBoxes(tuple(boxes), size, where)


def parse_loc_csv(data: bytes, where: str) -> Dict[str, Tuple[Box, ...]]:
    """Kaggle's LOC_train_solution.csv / LOC_val_solution.csv: {ImageId: boxes} (difficult
    False: the CSV does not say). Raises BoxError naming where:line for a wrong header, a
    PredictionString that is not 'wnid xmin ymin xmax ymax' repeated, or an image listed twice."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BoxError(f"{where}: not ASCII text (byte {exc.start})") from None
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    if next(rows, None) != CSV_HEADER:
        raise BoxError(f"{where}:1: the header is not 'ImageId,PredictionString'")
    result: Dict[str, Tuple[Box, ...]] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        tokens = row[1].split() if len(row) == 2 else []
        if not tokens or len(tokens) % 5 or not all(WNID.match(t) for t in tokens[0::5]):
            raise BoxError(f"{where}:{line}: not 'ImageId,wnid xmin ymin xmax ymax ...'")
        if row[0] in result:
            raise BoxError(f"{where}:{line}: {row[0]} is listed twice")
        result[row[0]] = tuple(
            (*(_number(t, f"{where}:{line}", "coordinate") for t in tokens[i + 1:i + 5]),
             tokens[i], False) for i in range(0, len(tokens), 5))
    return result


def same_boxes(first: Iterable[Box], second: Iterable[Box]) -> bool:
    """True when two box lists name the same wnids and coordinates in some order (difficult
    is not compared: a CSV does not carry it)."""
    key = lambda b: (b[4], b[0], b[1], b[2], b[3])  # noqa: E731
    return sorted(map(key, first)) == sorted(map(key, second))


def check_csv_agrees(xml: Mapping[str, ImageBoxes], csv_boxes: Mapping[str, Tuple[Box, ...]],
                     csv_where: str, relpath_of: Callable[[str], str]) -> None:
    """Raise BoxError naming the image and both files for the first image (in name order)
    whose XML and CSV boxes differ; ``relpath_of`` maps a CSV ImageId to the relpath."""
    for image_id in sorted(csv_boxes):
        relpath = relpath_of(image_id)
        found = xml.get(relpath)
        if found is not None and not same_boxes(found.boxes, csv_boxes[image_id]):
            raise BoxError(f"{relpath}: {found.where} and {csv_where} give different boxes; the "
                           f"annotations disagree")


def relpath_for_stem(stem: str) -> str:
    """The Caffe relpath of an annotated image from its file stem: 'n01440764_10026' ->
    'n01440764/n01440764_10026.JPEG', 'ILSVRC2012_val_00000001' -> itself + '.JPEG'."""
    wnid = stem.split("_", 1)[0]
    return f"{wnid}/{stem}.JPEG" if WNID.match(wnid) else f"{stem}.JPEG"


def stem_of(name: str) -> Optional[str]:
    """The stem of an annotation member name ('.../n01440764_10026.xml' -> 'n01440764_10026'),
    or None for a name that is not an .xml of ImageNet's forms (ASCII)."""
    base = name.rsplit("/", 1)[-1]
    if not base.endswith(".xml") or not base.isascii():
        return None
    stem = base[:-4]
    ok = re.match(r"^(n\d{8}_\d+|ILSVRC2012_val_\d{8})$", stem)
    return stem if ok else None


def read_xml_members(members: Iterable[Tuple[str, Callable[[], bytes]]],
                     resolve: Callable[[str], Optional[str]], counts: BoxCounts,
                     wanted: Optional[set] = None) -> Dict[str, ImageBoxes]:
    """{relpath: ImageBoxes} of annotation members given as (where, read) pairs; ``wanted``:
    the relpaths of the split (others are skipped)."""
    table: Dict[str, ImageBoxes] = {}
    for where, read in members:
        stem = stem_of(where)
        if stem is None:
            continue
        relpath = relpath_for_stem(stem)
        if wanted is not None and relpath not in wanted:
            continue
        table[relpath] = parse_voc_xml(read(), where, resolve, counts)
    return table


def tar_xml_members(path: str) -> Iterable[Tuple[str, Callable[[], bytes]]]:
    """(where, read) of every .xml in a (gzipped) tar, read in one pass in archive order
    (ILSVRC2012's bbox archives: 544,546 and 50,000 small files). Raises BoxError naming the
    archive when it cannot be read."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xml"):
                    if member.size > MAX_XML_BYTES:
                        raise BoxError(f"{path}:{member.name}: {member.size:,} bytes, too large "
                                       f"for an annotation")
                    data = tar.extractfile(member).read()
                    yield f"{path}:{member.name}", (lambda data=data: data)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BoxError(f"{path}: cannot read the annotation archive: "
                       f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


class SplitBoxes:
    """The boxes of one split, read once when first asked for (building a Caffe database does
    not read them). ``read(counts)`` returns {relpath: ImageBoxes}; ``where`` names the
    files for messages."""

    def __init__(self, read: Callable[[BoxCounts], Dict[str, ImageBoxes]], where: str):
        self.read, self.where = read, where
        self._table: Optional[Dict[str, ImageBoxes]] = None
        self.counts = BoxCounts()

    def table(self) -> Dict[str, ImageBoxes]:
        """{relpath: ImageBoxes} of the split's annotated images (read on the first call)."""
        if self._table is None:
            self._table = self.read(self.counts)
        return self._table

    def lookup(self, labels: Mapping[str, int]) -> Callable[[str], Optional[RecordBoxes]]:
        """relpath -> its ``RecordBoxes`` with ``labels`` (wnid -> box label), or None for an
        image without an annotation (``sources.records.RecordColumns``'s ``boxes``)."""
        table = self.table()

        def boxes_of(relpath: str) -> Optional[RecordBoxes]:
            found = table.get(relpath)
            return None if found is None else found.for_record(labels)
        return boxes_of


def _add_csv(table: Dict[str, ImageBoxes], csv_file, wanted: set, counts: BoxCounts) -> None:
    """Check a LOC CSV against the XML boxes in ``table`` and add the images only it has."""
    load, csv_where = csv_file
    rows = parse_loc_csv(load(), csv_where)
    check_csv_agrees(table, rows, csv_where, relpath_for_stem)
    for image_id in sorted(rows):
        relpath = relpath_for_stem(image_id)
        if relpath in wanted and relpath not in table:
            where = f"{csv_where}:{image_id}"
            for box in rows[image_id]:
                check_box(box, None, where, counts)
            table[relpath] = ImageBoxes(rows[image_id], None, where)
            counts.files += 1
            counts.boxes += len(rows[image_id])


def split_boxes(xml_members: Optional[Callable[[], Iterable]], csv_file, words: Mapping[str, str],
                relpaths: Iterable[str], where: str) -> SplitBoxes:
    """The ``SplitBoxes`` of a split from its XMLs and/or a LOC CSV.

    xml_members: () -> (where, read) pairs of the split's annotation files (or None).
    csv_file: (read, where) of LOC_*_solution.csv (or None). words: wnid -> words, for box
    names that are not wnids (``NameResolver``). relpaths: the split's images (annotations of
    other images are ignored). When both are given, the XML boxes are used and the CSV must
    agree (BoxError naming the image and both files); images only the CSV has take its boxes."""
    wanted = set(relpaths)

    def read(counts: BoxCounts) -> Dict[str, ImageBoxes]:
        table = {}
        if xml_members is not None:
            table = read_xml_members(xml_members(), NameResolver(words), counts, wanted)
        if csv_file is not None:
            _add_csv(table, csv_file, wanted, counts)
        return table

    return SplitBoxes(read, where)


def boxes_csv_text(splits: Mapping[str, object]) -> Tuple[str, int]:
    """``boxes.csv`` in the layout of TensorFlow's ``process_bounding_boxes.py`` (models/
    research/inception): one line per box, ``filename,xmin,ymin,xmax,ymax``, the image's
    file name and coordinates relative to the annotation's size with min/max swapped when
    reversed and clamped to [0, 1], as ``%.4f``; images of every split that has boxes
    (``Split.boxes``), in relpath order. Returns (text, boxes left out because their
    annotation has no size: a LOC CSV row without an XML). Raises BoxError when no split has
    boxes."""
    tables = [split.boxes.table() for split in splits.values() if split.boxes is not None]
    if not tables:
        raise BoxError("--boxes_csv: SOURCE has no boxes (looked for ILSVRC2012_bbox_*.tar.gz/"
                       ".tgz beside the 2012 files, Annotations/CLS-LOC/, LOC_*_solution.csv)")
    lines, unsized = [], 0
    for table in tables:
        for relpath in sorted(table):
            found = table[relpath]
            if found.size is None:
                unsized += len(found.boxes)
                continue
            width, height = found.size
            name = relpath.rsplit("/", 1)[-1]
            for xmin, ymin, xmax, ymax, _, _ in found.boxes:
                xs = sorted(min(max(v / width, 0.0), 1.0) for v in (xmin, xmax))
                ys = sorted(min(max(v / height, 0.0), 1.0) for v in (ymin, ymax))
                lines.append(f"{name},{xs[0]:.4f},{ys[0]:.4f},{xs[1]:.4f},{ys[1]:.4f}\n")
    return "".join(lines), unsized
