"""The CLS-LOC layout shared by the ILSVRC2015/2017 downloads and Kaggle's, as a Dataset.

Input: a container (folder, .tar.gz, .zip) holding ::

    <top>Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG       the classes are these folders
    <top>Data/CLS-LOC/val/ILSVRC2012_val_%08d.JPEG        flat (test/ is ignored)
    <top>Annotations/CLS-LOC/val/ILSVRC2012_val_%08d.xml  optional: Pascal-VOC, <object><name> = wnid

(``top`` = 'ILSVRC2015/', 'ILSVRC/' or ''), plus devkits of any year (``devkits``) and Kaggle's
LOC_synset_mapping.txt / LOC_val_solution.csv. Relpaths are Caffe's (train
'n01440764/n01440764_10026.JPEG', val 'ILSVRC2012_val_00000001.JPEG'), labels Caffe's (train
folders in ASCII order -> 0..N-1), so lists, keys and databases equal the ILSVRC2012 ones for the
same images. Every validation label source present (XML annotations, the CSV, each devkit's
ground truth mapped through its class table) is read; they must agree image by image, and the
first disagreement is an error naming both files.
"""
import re
from typing import Callable, Dict, List, Optional, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import clsloc as P
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import Dataset, Split, is_image_name
from imagenet_db.sources.boxes import split_boxes
from imagenet_db.sources.archives.containers import Container
from imagenet_db.sources.devkits import DevkitInfo, check_same_truth

VAL_NAME = re.compile(r"ILSVRC2012_val_([0-9]{8})\.JPEG\Z")  # ASCII digits (imagenet_db.text)
VAL_FORMAT = "ILSVRC2012_val_%08d.JPEG"
KAGGLE_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_VAL = "LOC_val_solution.csv"


class ClslocDataError(ImagenetDbError):
    """The CLS-LOC data is incomplete or its label sources disagree; the message names files."""


def keep_small(name: str, size: int) -> bool:
    """Members of a .tar.gz worth keeping from the index pass: validation XMLs and devkit files."""
    return size <= (64 << 20) and (("/Annotations/CLS-LOC/val/" in f"/{name}" and name.endswith(".xml"))
                                   or "/devkit/data/" in f"/{name}")


def _train(container: Container, data: str) -> Tuple[List[str], List[Tuple[str, int]]]:
    folders = [d.rsplit("/", 1)[1] for d in container.dirs(data + "train/")]
    synsets = L.caffe_synsets(w for w in folders if L.is_wnid(w))
    if not synsets:
        raise ClslocDataError(f"{container.where(data + 'train/')}: no synset folders named like "
                              f"n01440764")
    labels = L.label_map(synsets)
    train = []
    for wnid in synsets:
        names = [n.rsplit("/", 1)[1] for n in container.files(f"{data}train/{wnid}/")
                 if is_image_name(n)]
        if not names:
            raise ClslocDataError(f"{container.where(data + 'train/' + wnid)}: holds no images")
        train += [(f"{wnid}/{n}", labels[wnid]) for n in names]
    return synsets, train


def _check_classes(synsets: List[str], tables: List[Tuple[str, set]]) -> None:
    have = set(synsets)
    for where, wnids in tables:
        if wnids != have:
            extra, missing = sorted(wnids - have), sorted(have - wnids)
            what = (f"lists {extra[0]}, which has no train folder" if extra
                    else f"does not list {missing[0]}, which has a train folder")
            raise ClslocDataError(f"{where} {what} ({len(wnids)} classes, {len(have)} train "
                                  f"folders); wrong devkit or incomplete data?")


def _val_files(container: Container, data: str) -> Dict[int, str]:
    sorted_val = [d for d in container.dirs(data + "val/") if L.is_wnid(d.rsplit("/", 1)[1])]
    if sorted_val:
        raise ClslocDataError(f"{container.where(data + 'val/')} is sorted into synset folders "
                              f"(valprep.sh); use {container.where(data.rstrip('/'))} itself as "
                              f"SOURCE (read as an extracted train/ + val/<wnid>/ tree)")
    files = {}
    for name in container.files(data + "val/"):
        base = name.rsplit("/", 1)[1]
        m = VAL_NAME.match(base)
        if m:
            files[int(m.group(1))] = base
        elif is_image_name(base):
            raise ClslocDataError(f"{container.where(name)}: not named like ILSVRC2012_val_00000001.JPEG")
    return files


LabelSource = Tuple[str, Dict[int, Tuple[str, str]]]  # (where, {image number: (wnid, where)})


def _xml_source(container: Container, top: str) -> Optional[LabelSource]:
    folder = f"{top}Annotations/CLS-LOC/val/"
    got = {}
    for name in container.files(folder):
        m = VAL_NAME.match(name.rsplit("/", 1)[1][:-4] + ".JPEG") if name.endswith(".xml") else None
        if m:
            got[int(m.group(1))] = (P.parse_val_xml(container.read(name), container.where(name)),
                                    container.where(name))
    return (container.where(folder), got) if got else None


def _csv_source(raw: bytes, where: str) -> LabelSource:
    rows = P.parse_solution_csv(raw, where)
    return where, {int(image[-8:]): (wnid, f"{where} (row {image})") for image, wnid in rows.items()}


def _devkit_source(d: DevkitInfo) -> LabelSource:
    ids = d.id_to_wnid()
    return d.truth_where, {n: (ids[i], f"{d.truth_where}:{n}") for n, i in enumerate(d.truth, 1)}


def _reconcile(container: Container, data: str, files: Dict[int, str],
               sources: List[LabelSource], labels: Dict[str, int]) -> Dict[str, str]:
    """{val file name: wnid} with every source checked against every other."""
    val_dir = container.where(data + "val/")
    present = set(files)
    for where, got in sources:
        extra = sorted(set(got) - present)
        if extra:
            raise ClslocDataError(f"{got[extra[0]][1]} labels {VAL_FORMAT % extra[0]} but {val_dir} "
                                  f"has no such image ({len(extra)} such); incomplete download?")
    wnids = {}
    for n in sorted(files):
        first = None
        for where, got in sources:
            if n not in got:
                raise ClslocDataError(f"{where}: no label for {VAL_FORMAT % n} (it is in {val_dir})")
            wnid, at = got[n]
            if first is None:
                first = (wnid, at)
            elif wnid != first[0]:
                raise ClslocDataError(f"{VAL_FORMAT % n}: {first[1]} says {first[0]} but {at} says "
                                      f"{wnid}; the label sources disagree")
        if first[0] not in labels:
            raise ClslocDataError(f"{first[1]}: {first[0]} is not a class (no train folder)")
        wnids[files[n]] = first[0]
    return wnids


def open_clsloc(container: Container, top: str, devkits: List[DevkitInfo],
                kaggle: Dict[str, Tuple[bytes, str]],
                box_csv: Optional[Dict[str, Tuple[Callable[[], bytes], str]]] = None) -> Dataset:
    """The Dataset of a CLS-LOC container (see module docstring).

    kaggle: {'LOC_synset_mapping.txt' / 'LOC_val_solution.csv': (bytes, where)} when present.
    box_csv: {split: (read, where)} of Kaggle's LOC_*_solution.csv, the boxes besides the
    XMLs of ``<top>Annotations/CLS-LOC/<split>/`` (``_attach_boxes``).
    Raises ImagenetDbError subclasses naming the files for: no train folders; a devkit or
    mapping whose classes differ from the train folders; validation images but no label
    source; a label source that lacks an image, or labels an image the data does not hold
    (e.g. a member missing from a zip); two sources giving different wnids (first image).
    """
    data = f"{top}Data/CLS-LOC/"
    synsets, train = _train(container, data)
    labels = L.label_map(synsets)
    tables = [(d.where, {e.wnid for e in d.classes}) for d in devkits]
    mapping: Dict[str, str] = {}
    if KAGGLE_MAPPING in kaggle:
        raw, where = kaggle[KAGGLE_MAPPING]
        mapping = P.parse_synset_mapping(raw, where)
        tables.append((where, set(mapping)))
    _check_classes(synsets, tables)
    check_same_truth([d for d in devkits if d.truth is not None])

    notes: List[str] = []
    words = _class_words(devkits, mapping, notes)
    files = _val_files(container, data)
    sources = _val_sources(container, top, devkits, kaggle)  # read even without val images
    splits = {"train": Split("train", train, _loader(container, data + "train/"))}
    blacklist, blacklist_where = None, ""
    if files:
        splits["val"] = _val_split(container, top, files, sources, labels)
        for d in devkits:
            if d.blacklist is not None:
                blacklist = {files[n] for n in d.blacklist if n in files}
                blacklist_where = d.blacklist_where
                break
    if len(synsets) == 1000 and len(train) != 1_281_167:
        notes.append(f"{container.path} holds {len(train):,} train images; ILSVRC2012 has 1,281,167")
    _attach_boxes(container, top, splits, words, box_csv or {})
    return Dataset(synsets, splits, words, notes, blacklist, blacklist_where)


def _annotation_members(container: Container, folder: str):
    """() -> (where, read) of the .xml files in ``folder`` and its synset folders, or None
    when there are none (listed lazily: read only when a format asks for boxes)."""
    dirs = container.dirs(folder)
    if not dirs and not any(n.endswith(".xml") for n in container.files(folder)):
        return None

    def members():
        for prefix in [folder] + [d + "/" for d in dirs]:
            for name in container.files(prefix):
                if name.endswith(".xml"):
                    yield container.where(name), (lambda name=name: container.read(name))
    return members


def _attach_boxes(container: Container, top: str, splits: Dict[str, Split],
                  words: Dict[str, str], box_csv: Dict[str, tuple]) -> None:
    """Give each split its boxes (``sources.boxes.split_boxes``): the XMLs of
    ``<top>Annotations/CLS-LOC/<split>/`` and/or Kaggle's LOC CSV of the split."""
    for name, split in splits.items():
        folder = f"{top}Annotations/CLS-LOC/{name}/"
        xml, csv_file = _annotation_members(container, folder), box_csv.get(name)
        if xml is not None or csv_file is not None:
            split.boxes = split_boxes(xml, csv_file, words, (r for r, _ in split.entries),
                                      container.where(folder))


def _class_words(devkits: List[DevkitInfo], mapping: Dict[str, str],
                 notes: List[str]) -> Dict[str, str]:
    """{wnid: words} for synset_words.txt: a devkit's full words (meta_clsloc.mat), else
    Kaggle's LOC_synset_mapping.txt, else a devkit's short names from map_clsloc.txt (said in
    ``notes``), else none."""
    full = [d for d in devkits if d.full_words]
    if full:
        return full[0].words()
    if mapping:
        return mapping
    if devkits:
        words = devkits[0].words()
        notes.append(f"synset_words.txt has map_clsloc.txt's short names ('kit fox'), the only "
                     f"class names in {devkits[0].where}; the full words ('kit fox, Vulpes "
                     f"macrotis') are in a meta_clsloc.mat or LOC_synset_mapping.txt")
        return words
    return {}


def _val_sources(container: Container, top: str, devkits: List[DevkitInfo],
                 kaggle: Dict[str, Tuple[bytes, str]]) -> List[LabelSource]:
    """The validation label sources present: the XML annotations, Kaggle's
    LOC_val_solution.csv, each devkit's ground truth (in that order)."""
    sources: List[LabelSource] = []
    xml = _xml_source(container, top)
    if xml:
        sources.append(xml)
    if KAGGLE_VAL in kaggle:
        sources.append(_csv_source(*kaggle[KAGGLE_VAL]))
    return sources + [_devkit_source(d) for d in devkits if d.truth is not None]


def _val_split(container: Container, top: str, files: Dict[int, str],
               sources: List[LabelSource], labels: Dict[str, int]) -> Split:
    """The val split of the images ``files`` ({number: relpath}), labelled by ``sources``
    (which must agree: ``_reconcile``). Raises ClslocDataError when there is no source."""
    data = f"{top}Data/CLS-LOC/"
    if not sources:
        raise ClslocDataError(f"{container.where(data + 'val/')}: no validation labels: looked "
                              f"for {top}Annotations/CLS-LOC/val/*.xml, {KAGGLE_VAL} and a "
                              f"devkit's validation ground truth")
    wnids = _reconcile(container, data, files, sources, labels)
    return Split("val", [(files[n], labels[wnids[files[n]]]) for n in sorted(files)],
                 _loader(container, data + "val/"))


def _loader(container: Container, prefix: str) -> Callable[[str], Callable[[], bytes]]:
    return lambda relpath: container.loader(prefix + relpath)
