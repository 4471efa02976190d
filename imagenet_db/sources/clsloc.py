"""Parsers for the class tables and validation labels of the ILSVRC2014/2015 CLS-LOC devkits
and Kaggle's ImageNet Object Localization Challenge 

Every parser takes the file's bytes or text plus ``where`` (the name used in errors, e.g.
``ILSVRC2015_devkit.tar.gz:ILSVRC2015/devkit/data/map_clsloc.txt``) and raises
ClslocError naming ``where`` and the 1-based line/row for malformed input.

IDs: the devkits number the 1,000 classes 1..1000 (ILSVRC2012_ID = ILSVRC2014_ID =
ILSVRC2015_CLSLOC_ID, 1 = n02119789 kit fox). They are only ever mapped to wnids here;
Caffe labels are positions in the ASCII-sorted wnid list (never the devkit ID).
Layouts and their sources: README "Other distributions as SOURCE".
"""
import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Set

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.matlab import mat_int, mat_text
from imagenet_db.text import WNID, check_one_line, is_ascii_number, split_lines

VAL_STEM = re.compile(r"ILSVRC2012_val_([0-9]{8})\Z")  # ASCII digits only (imagenet_db.text)


class ClslocError(ImagenetDbError):
    """Malformed devkit / Kaggle metadata; the message names the file and line."""


_int = partial(mat_int, error=ClslocError)  # a MATLAB integer field, errors as ClslocError


@dataclass(frozen=True)
class ClassEntry:
    """One class of a devkit table: ID (1-based), wnid, and its words or name."""
    ident: int
    wnid: str
    words: str


def _decode(data, where: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClslocError(f"{where}: not UTF-8 text (byte {exc.start})") from None


def _check_table(entries: List[ClassEntry], where: str) -> List[ClassEntry]:
    ids: Dict[int, str] = {}
    wnids: Dict[str, int] = {}
    for e in entries:
        if e.ident in ids:
            raise ClslocError(f"{where}: ID {e.ident} is given to both {ids[e.ident]} and {e.wnid}")
        if e.wnid in wnids:
            raise ClslocError(f"{where}: {e.wnid} has two IDs ({wnids[e.wnid]} and {e.ident})")
        ids[e.ident], wnids[e.wnid] = e.wnid, e.ident
    if not entries:
        raise ClslocError(f"{where}: no classes")
    return sorted(entries, key=lambda e: e.ident)


def parse_map_clsloc(data, where: str) -> List[ClassEntry]:
    """``map_clsloc.txt`` of the ILSVRC2015 devkit: ``n02119789 1 kit_fox`` per line (wnid, ID,
    short name with '_' for spaces). Returns the classes in ID order; words are the short
    names with '_' turned into spaces ('kit fox'; the devkit has no longer words here).
    Blank lines are skipped. Raises ClslocError naming where:line for a line that is not
    'wnid ID name', a repeated ID or wnid."""
    entries = []
    for number, line in enumerate(split_lines(_decode(data, where), crlf=True), start=1):
        if not line.strip():
            continue
        parts = check_one_line(line, f"{where}:{number}", ClslocError).split()
        if len(parts) != 3 or not WNID.match(parts[0]) or not is_ascii_number(parts[1]):
            raise ClslocError(f"{where}:{number}: expected 'n02119789 1 kit_fox', got {line!r}")
        entries.append(ClassEntry(int(parts[1]), parts[0], parts[2].replace("_", " ")))
    return _check_table(entries, where)


def _field(names, *candidates) -> Optional[str]:
    for c in candidates:
        if c in names:
            return c
    return None


def parse_meta_clsloc(data: bytes, where: str) -> List[ClassEntry]:
    """The ``synsets`` struct array of a devkit .mat file, any year:

    * 2012 ``meta.mat`` and 2014 ``meta_clsloc.mat``: 1,860 entries with ILSVRC2012_ID /
      ILSVRC2014_ID, WNID, words, gloss, num_children, ...; the classes are the entries with
      num_children == 0;
    * 2015 ``meta_clsloc.mat``: 1,000 entries with ILSVRC2015_CLSLOC_ID, WNID, name,
      description, num_train_images; every entry is a class.

    Returns the classes in ID order with their words ('kit fox, Vulpes macrotis').
    Raises ClslocError for a file scipy cannot read, no ``synsets``, no ID/WNID/words field,
    a malformed wnid, a repeated ID or wnid.
    """
    try:
        import scipy.io
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, chars_as_strings=True)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError
        raise ClslocError(f"{where}: not a readable MATLAB .mat file: {exc}") from None
    if "synsets" not in mat:
        raise ClslocError(f"{where}: has no 'synsets' variable")
    table = np.atleast_1d(mat["synsets"])
    names = table.dtype.names or ()
    id_field = next((n for n in names if re.fullmatch(r"ILSVRC20[0-9]{2}(_CLSLOC)?_ID", n)), None)
    words_field = _field(names, "words", "name")
    missing = [label for label, f in (("an ILSVRC20xx_ID", id_field), ("WNID", _field(names, "WNID")),
                                      ("words or name", words_field)) if f is None]
    if missing:
        raise ClslocError(f"{where}: 'synsets' lacks {', '.join(missing)} (fields: {', '.join(names)})")
    entries = []
    for n, row in enumerate(table.ravel(), start=1):
        at = f"{where}: synsets({n})"
        if "num_children" in names and _int(row["num_children"], f"{at}.num_children") != 0:
            continue  # an internal WordNet node, not a class
        wnid = mat_text(row["WNID"])
        if not WNID.match(wnid):
            raise ClslocError(f"{at}: WNID {wnid!r} is not a wnid like n01440764")
        words = check_one_line(mat_text(row[words_field]), f"{at}.{words_field}", ClslocError)
        entries.append(ClassEntry(_int(row[id_field], f"{at}.{id_field}"), wnid, words))
    return _check_table(entries, where)


def parse_synset_mapping(data, where: str) -> Dict[str, str]:
    """Kaggle's ``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca`` per line.
    Returns {wnid: words} in file order. Raises ClslocError naming where:line for a line
    without a wnid and words, or a repeated wnid."""
    words: Dict[str, str] = {}
    for number, line in enumerate(split_lines(_decode(data, where), crlf=True), start=1):
        if not line.strip():
            continue
        wnid, _, text = check_one_line(line, f"{where}:{number}", ClslocError).partition(" ")
        if not WNID.match(wnid) or not text.strip():
            raise ClslocError(f"{where}:{number}: expected 'n01440764 tench, Tinca tinca', got {line!r}")
        if wnid in words:
            raise ClslocError(f"{where}:{number}: {wnid} is listed twice")
        words[wnid] = text.strip()
    if not words:
        raise ClslocError(f"{where}: no classes")
    return words


def parse_solution_csv(data, where: str, image_pattern=VAL_STEM) -> Dict[str, str]:
    """Kaggle's ``LOC_val_solution.csv`` (or ``LOC_train_solution.csv`` with another pattern):
    header ``ImageId,PredictionString``; ImageId is the file name without ``.JPEG``
    (``ILSVRC2012_val_00008726``); PredictionString is ``wnid xmin ymin xmax ymax``
    repeated. Rows are in no particular order. Returns {ImageId: wnid}, the wnid being the
    first one of the row.

    Raises ClslocError naming where:line (1-based, counting the header) for a wrong header,
    a row without exactly two fields, an ImageId not matching ``image_pattern``, a
    PredictionString whose length is not a multiple of 5 or whose first token is not a
    wnid, boxes of one image naming different wnids, or an ImageId given twice.
    """
    text = _decode(data, where)
    reader = csv.reader(io.StringIO(text, newline=""))
    result: Dict[str, str] = {}
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["ImageId", "PredictionString"]:
        raise ClslocError(f"{where}:1: expected the header 'ImageId,PredictionString', got {header!r}")
    for row in reader:
        line = reader.line_num
        if not row or row == [""]:
            continue
        if len(row) != 2:
            raise ClslocError(f"{where}:{line}: expected 'ImageId,PredictionString', got {len(row)} "
                              f"field(s): {','.join(row)!r}")
        image, prediction = row[0].strip(), row[1].split()
        if not image_pattern.match(image):
            raise ClslocError(f"{where}:{line}: ImageId {image!r} is not like {image_pattern.pattern}")
        if not prediction or len(prediction) % 5 or not WNID.match(prediction[0]):
            raise ClslocError(f"{where}:{line}: PredictionString {row[1]!r} is not 'wnid xmin ymin "
                              f"xmax ymax' repeated")
        wnids = set(prediction[0::5])
        if len(wnids) != 1 or not all(WNID.match(w) for w in wnids):
            raise ClslocError(f"{where}:{line}: the boxes of {image} name different synsets "
                              f"({', '.join(sorted(wnids))})")
        if image in result:
            raise ClslocError(f"{where}:{line}: {image} is listed twice")
        result[image] = prediction[0]
    return result


def parse_val_xml(data: bytes, where: str) -> str:
    """One Pascal-VOC annotation of a validation image (``ILSVRC2012_val_00000001.xml``):
    returns the wnid of its objects (``<object><name>``). Raises ClslocError naming the file
    when it is not XML, has no object, or its objects name different synsets."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ClslocError(f"{where}: not a readable XML annotation: {exc}") from None
    names = [(o.findtext("name") or "").strip() for o in root.iter("object")]
    if not names:
        raise ClslocError(f"{where}: no <object> in the annotation")
    bad = [n for n in names if not WNID.match(n)]
    if bad:
        raise ClslocError(f"{where}: <object><name> {bad[0]!r} is not a wnid")
    if len(set(names)) != 1:
        raise ClslocError(f"{where}: the objects name different synsets ({', '.join(sorted(set(names)))})")
    return names[0]


def parse_number_list(data, where: str, what: str = "an image number") -> List[int]:
    """One positive integer per line (a devkit ground truth or blacklist). Blank lines only at
    the end. Raises ClslocError naming where:line otherwise."""
    lines = split_lines(_decode(data, where), crlf=True)
    while lines and not lines[-1].strip():
        lines.pop()
    values = []
    for number, line in enumerate(lines, start=1):
        token = line.strip()
        if not is_ascii_number(token) or int(token) < 1:
            raise ClslocError(f"{where}:{number}: expected {what}, got {line!r}")
        values.append(int(token))
    return values


def parse_blacklist(data, where: str, count: int) -> Set[int]:
    """A ``*_clsloc_validation_blacklist.txt``: validation image numbers (1..count), one per
    line. Raises ClslocError for a number outside 1..count or listed twice."""
    numbers = parse_number_list(data, where)
    seen: Set[int] = set()
    for line, n in enumerate(numbers, start=1):
        if n > count:
            raise ClslocError(f"{where}:{line}: image {n} is outside 1..{count}")
        if n in seen:
            raise ClslocError(f"{where}:{line}: image {n} is listed twice")
        seen.add(n)
    return seen
