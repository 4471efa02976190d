"""``create_imagenet --format ssd``: SSD-Caffe's AnnotatedDatum LMDB, as its convert_annoset
writes it (weiliu89/caffe, branch ssd), plus ``labelmap.prototxt``.

One LMDB a split (``ilsvrc12_{train,val}_annotated_lmdb``), keys ``%08d_<relpath>``, values
serialized ``AnnotatedDatum``s (proto/caffe.proto) with SSD's rules (its
``ReadXMLToAnnotatedDatum`` and ``data/ILSVRC2016/create_list.py``):

* the datum is a Caffe Datum (raw, or ``--encoded``) with label -1, ``type`` = BBOX, both set
  explicitly; boxes (``imaging.boxes``) are divided by the XML's size, not clamped (unless a
  crop cut them), zero-size and difficult boxes kept, ``score``/``size`` unset;
* boxes are grouped by label, groups in order of first appearance, ``instance_id`` from 0
  within a group, ``difficult`` from the XML (the NormalizedBBox's label is left unset, as
  convert_annoset leaves it);
* train images without an annotation file are left out (counted, listed in
  ``ssd_unannotated_train.txt``) unless ``--keep_unannotated``, which stores them with no
  groups, as does an XML without object; val keeps every image (``--drop_val_blacklist``
  leaves out the devkit's blacklist). Train is shuffled with ``--seed``, val in order.
* ``labelmap.prototxt``: 0 = ``none_of_the_above`` (background), then the classes in
  ILSVRC2012_ID order (SSD's labelmap_ilsvrc_clsloc.prototxt: 1 = n02119789 kit fox), taken
  from the known 2012 table (``sources/ilsvrc2012_classes.tsv``) so every distribution gives
  the same map; ``--label_order caffe``: Caffe's ASCII order + 1. The choice is recorded in
  the build record. synsets.txt/train.txt/val.txt in OUTDIR use the same order, 0-based
  (labelmap label = synsets.txt line + 1).

Defaults are convert_annoset's: raw datums, no resize; the resize flags and ``--encoded`` work
and the boxes follow the resize. Labels of the boxes come from ``Record.boxes``.
"""
import os
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import lmdb
import numpy as np
from google.protobuf import text_format

from imagenet_db.crc import add_checksum
from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs.base import Encoded
from imagenet_db.outputs.datum import caffe_key, datum_to_chw, entry_checksum, key_index
from imagenet_db.outputs.lmdb import LmdbWriter
from imagenet_db.outputs.spec import FormatOption, FormatSpec, Stage
from imagenet_db.outputs.wire import encoded_datum_bytes, raw_datum_buffer, varint
from imagenet_db.protos import AnnotatedDatum, AnnotationGroup, LabelMap
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import Dataset, Split, relabel

FOLDER = "ilsvrc12_{split}_annotated_lmdb"
LABELMAP = "labelmap.prototxt"
UNANNOTATED = "ssd_unannotated_{split}.txt"
BACKGROUND = ("none_of_the_above", "background")
SSD_LABEL_ORDERS = ("ilsvrc", "caffe")
_BBOX_TYPE = b"\x10\x00"  # AnnotatedDatum.type = BBOX (0), set explicitly


def annotation_groups(boxes: Optional[np.ndarray]) -> List[AnnotationGroup]:
    """SSD's groups of (N, 6) boxes [xmin, ymin, xmax, ymax, label, difficult]: one group a
    label, in order of first appearance, instance_id from 0 within the group."""
    groups: Dict[int, AnnotationGroup] = {}
    for row in (boxes if boxes is not None else ()):
        label = int(row[4])
        group = groups.get(label)
        if group is None:
            group = groups[label] = AnnotationGroup(group_label=label)
        annotation = group.annotation.add(instance_id=len(group.annotation))
        bbox = annotation.bbox
        bbox.xmin, bbox.ymin, bbox.xmax, bbox.ymax = (float(v) for v in row[:4])
        bbox.difficult = bool(row[5])
    return list(groups.values())


def annotated_datum_bytes(image) -> bytes:
    """The wire bytes of the AnnotatedDatum of a transformed ``image`` (``Image.boxes``):
    exactly ``AnnotatedDatum(datum=<Datum, label -1>, type=BBOX, annotation_group=...)
    .SerializeToString()``, the Datum's bytes written once (``outputs.wire``)."""
    if image.encoded is None:
        datum, _ = raw_datum_buffer(image.pixels, -1)
    else:
        datum = encoded_datum_bytes(image.encoded, -1, image.shape)
    groups = [group.SerializeToString() for group in annotation_groups(image.boxes)]
    return b"".join([b"\x0a", varint(len(datum)), bytes(datum), _BBOX_TYPE]
                    + [b"\x1a" + varint(len(g)) + g for g in groups])


def split_annotated(value) -> Optional[Tuple[object, np.ndarray]]:
    """(the Datum's bytes, boxes) of a serialized AnnotatedDatum, or None for a value that is
    not one (a Datum: its first field is never a length-delimited field 1).

    value: bytes or memoryview (the Datum part is a slice of it, no copy). boxes: (N, 6)
    float32 [xmin, ymin, xmax, ymax, group_label, difficult] in stored order. Raises
    ImagenetDbError for a truncated value or annotations protobuf cannot parse."""
    if not len(value) or value[0] != 0x0A:
        return None
    length, shift, pos = 0, 0, 1
    while pos < len(value) and shift < 64:
        byte = value[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            break
    if pos + length > len(value):
        raise ImagenetDbError("an AnnotatedDatum whose datum runs past its end")
    rest = AnnotatedDatum()
    try:
        rest.ParseFromString(bytes(value[pos + length:]))
    except Exception:
        raise ImagenetDbError("an AnnotatedDatum whose annotations cannot be parsed") from None
    rows = [(a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax, g.group_label,
             float(a.bbox.difficult)) for g in rest.annotation_group for a in g.annotation]
    return value[pos:pos + length], np.asarray(rows, np.float32).reshape(len(rows), 6)


def parse_annotated(value: bytes, name: str, where: str) -> AnnotatedDatum:
    """Parse a stored value as an AnnotatedDatum; ImagenetDbError naming ``where`` and key."""
    message = AnnotatedDatum()
    try:
        message.ParseFromString(bytes(value))
    except Exception:
        raise ImagenetDbError(f"{where}: value of key {name[:60]!r} is not an AnnotatedDatum") \
            from None
    return message


def labelmap_text(synsets: List[str], words: Dict[str, str]) -> str:
    """labelmap.prototxt: 0 = none_of_the_above/background, then ``synsets`` (label order)
    as 1..N, name the wnid, display_name the first of its words (spaces as '_', SSD's
    labelmap_ilsvrc_clsloc style) or the wnid."""
    labelmap = LabelMap()
    labelmap.item.add(name=BACKGROUND[0], label=0, display_name=BACKGROUND[1])
    for label, wnid in enumerate(synsets, start=1):
        shown = words.get(wnid, wnid).split(",")[0].strip().replace(" ", "_") or wnid
        labelmap.item.add(name=wnid, label=label, display_name=shown)
    return text_format.MessageToString(labelmap)


def _annotated_split(split: Split, keep_unannotated: bool,
                     where: str) -> Tuple[Split, List[str]]:
    """(the split to store, relpaths of train images left out for want of an annotation)."""
    if split.boxes is None:
        raise ImagenetDbError(f"--format ssd: SOURCE has no boxes for {split.name} (looked for "
                              f"ILSVRC2012_bbox_*.tar.gz/.tgz beside the 2012 files, "
                              f"Annotations/CLS-LOC/{split.name}/, LOC_{split.name}"
                              f"_solution.csv){where}")
    table = split.boxes.table()
    if split.name != "train" or keep_unannotated:
        return split, []
    kept = [entry for entry in split.entries if entry[0] in table]
    missing = [relpath for relpath, _ in split.entries if relpath not in table]
    return replace(split, entries=kept), missing


def stages(found: Dataset, out: str, recipe, want_mean: bool) -> Tuple[Dataset, List[Stage]]:
    """One AnnotatedDatum LMDB a split (see the module docstring). ``found`` comes in Caffe's
    order; the label map's order is ``recipe.option('label_order')``."""
    order = recipe.option("label_order", "ilsvrc")
    labelled = relabel(found, L.devkit_synsets(found.synsets)) if order == "ilsvrc" else found
    box_labels = {wnid: label for label, wnid in enumerate(labelled.synsets, start=1)}
    keep = bool(recipe.option("keep_unannotated", False))
    files = {LABELMAP: labelmap_text(labelled.synsets, labelled.words)}
    notes, result = [], []
    for name, split in labelled.splits.items():
        stored, missing = _annotated_split(split, keep, "")
        if missing:
            files[UNANNOTATED.format(split=name)] = "".join(f"{m}\n" for m in missing)
            notes.append(f"--format ssd: left out {len(missing):,} {name} images without an "
                         f"annotation (listed in {UNANNOTATED.format(split=name)}; "
                         f"--keep_unannotated stores them without boxes)")
        notes += split.boxes.counts.notes(name)
        settings = {"split": name, "seed": recipe.seed, "synsets": len(found.synsets),
                    "shuffle": name == "train", "label_order": order,
                    "keep_unannotated": keep, "unannotated_left_out": len(missing)}
        result.append(Stage(name, os.path.join(out, FOLDER.format(split=name)), "ssd",
                            stored.records(name == "train", recipe.seed, box_labels), settings))
    return replace(labelled, notes=labelled.notes + notes,
                   extra_files={**labelled.extra_files, **files}), result


def default_transform(options=None) -> TransformOptions:
    """convert_annoset's default: raw datums, no resize."""
    return TransformOptions()


SSD = FormatSpec(
    name="ssd", summary="SSD-Caffe's AnnotatedDatum LMDB + labelmap.prototxt", folder=FOLDER,
    default_transform=default_transform, stages=stages, takes_encoded=True,
    options=(FormatOption("label_order", "ssd: labelmap order after 0 = background: 'ilsvrc' "
                                         "(ILSVRC2012_ID, SSD's labelmap_ilsvrc_clsloc) or "
                                         "'caffe' (ASCII wnid order)",
                          default="ilsvrc", choices=SSD_LABEL_ORDERS, metavar="ORDER",
                          only_for_owner=True),
             FormatOption("keep_unannotated", "ssd: store train images without an annotation "
                                              "file (no boxes) instead of leaving them out",
                          kind="bool", default=False, only_for_owner=True)))


class SsdWriter(LmdbWriter):
    """An AnnotatedDatum LMDB (see the module docstring): the LMDB writer with AnnotatedDatum
    values. Not a ``--backend`` (``datum_database`` False): built by ``--format ssd``."""
    name = "ssd"
    description = "SSD-Caffe AnnotatedDatum LMDB (convert_annoset)"
    verify_accepts = "AnnotatedDatum LMDB"
    datum_database = False
    stores_boxes = True
    format_spec = SSD

    @classmethod
    def encode(cls, record, image) -> Encoded:
        """The AnnotatedDatum of ``record`` under its Caffe key (CRC of key + value)."""
        key = caffe_key(record.index, record.relpath)
        value = annotated_datum_bytes(image)
        pixels = None
        if image.pixels is not None:
            pixels = image.pixels[np.newaxis] if image.pixels.ndim == 2 else \
                np.ascontiguousarray(image.pixels.transpose(2, 0, 1))
        stored = 0 if image.boxes is None else len(image.boxes)
        return Encoded(value, pixels, image.shape, key.decode("utf-8", "replace"),
                       entry_checksum(key, value), (stored, image.dropped_boxes))

    def stored_boxes(self, start: int = 0):
        """Committed records from index ``start`` on, as (index, boxes stored)."""
        for key, value in self.items(b"%08d_" % start):
            message = parse_annotated(value, key.decode("utf-8", "replace"), self.path)
            yield key_index(key), sum(len(g.annotation) for g in message.annotation_group)

    def stored(self, start: int = 0):
        """Committed datums from record index ``start`` on, as (index, key, CHW pixels)."""
        for key, value in self.items(b"%08d_" % start):
            name = key.decode("utf-8", "replace")
            datum = parse_annotated(value, name, self.path).datum
            yield key_index(key), name, datum_to_chw(datum, name)

    @classmethod
    def verify(cls, path: str, manifest: dict, report) -> None:
        """See ``verify_annotated``."""
        verify_annotated(path, manifest, report)

    @classmethod
    def detect(cls, path: str) -> bool:
        """Never claims a path by itself: the completion record names the format."""
        return False


def _check_annotated(key: bytes, value: bytes,
                     synsets: int) -> Tuple[Optional[tuple], int, List[str]]:
    """((channels, height, width) or None, boxes, problems) of one stored entry: an
    AnnotatedDatum with type BBOX, datum label -1, decodable pixels, group labels in
    1..synsets, instance_ids 0.. within each group, finite coordinates."""
    name = key.decode("utf-8", "replace")
    try:
        message = parse_annotated(value, name, "")
        shape = tuple(datum_to_chw(message.datum, name).shape)
    except ImagenetDbError as exc:
        return None, 0, [str(exc).lstrip(": ")]
    problems = []
    if not message.HasField("type") or message.datum.label != -1:
        problems.append(f"{name}: type BBOX and datum label -1 are not both set")
    boxes = 0
    for group in message.annotation_group:
        boxes += len(group.annotation)
        if not 1 <= group.group_label <= synsets:
            problems.append(f"{name}: group label {group.group_label} is outside 1..{synsets}")
        if [a.instance_id for a in group.annotation] != list(range(len(group.annotation))):
            problems.append(f"{name}: instance_ids of group {group.group_label} do not count "
                            f"from 0")
        if not all(np.isfinite([a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax]).all()
                   for a in group.annotation):
            problems.append(f"{name}: a box coordinate is not a finite number")
    return shape, boxes, problems


def _entries(path: str):
    """(key, value) of every entry of the LMDB at ``path``, read-only and lock-free."""
    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    finally:
        env.close()


def verify_annotated(path: str, manifest: dict, report) -> None:
    """``imagenet-db verify`` of an AnnotatedDatum LMDB: every entry (``_check_annotated``),
    keys ``%08d_relpath`` ascending, the content checksum and the box count against the
    completion record (``entries_crc32_sum``, ``boxes``). One problem line per finding."""
    total, boxes, last = 0, 0, -1
    for key, value in _entries(path):
        key, value = bytes(key), bytes(value)
        report.entries += 1
        total = add_checksum(total, entry_checksum(key, value))
        try:
            index = key_index(key, f"{path}: ")
        except ImagenetDbError as exc:
            report.problem(str(exc))
            index = last + 1
        if index <= last:
            report.problem(f"{path}: key {key[:60]!r} is not after record {last}")
        last = index
        shape, count, problems = _check_annotated(key, value, manifest.get("synsets", 1 << 30))
        boxes += count
        for problem in problems:
            report.problem(f"{path}: {problem}")
        if shape is not None:
            report.shapes[shape] += 1
    if manifest.get("entries_crc32_sum") not in (None, f"{total:016x}"):
        report.problem(f"{path}: the stored bytes differ from those written at build time "
                       f"(entries_crc32_sum of the completion record)")
    recorded = (manifest.get("boxes") or {}).get("boxes")
    if recorded is not None and recorded != boxes:
        report.problem(f"{path}: holds {boxes} boxes, the completion record says {recorded}")
    report.notes.append(f"{boxes:,} boxes")
