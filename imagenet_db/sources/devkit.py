"""The ILSVRC2012 development kit (ILSVRC2012_devkit_t12.tar.gz): synsets and val ground truth.

Read from the gzipped tar directly (nothing is extracted):

``data/meta.mat`` (MATLAB v5, read with ``scipy.io.loadmat``) holds the struct array
``synsets`` (1,860 entries in the real devkit) with fields ILSVRC2012_ID, WNID, words, gloss,
num_children, children, wordnet_height, num_train_images. The entries with
``num_children == 0`` are the classes (1,000 leaves, IDs 1..1000); the others are WordNet
ancestors and are ignored.

``data/ILSVRC2012_validation_ground_truth.txt`` holds one ILSVRC2012_ID per validation image,
line n for ``ILSVRC2012_val_%08d.JPEG`` % n (50,000 lines in the real devkit).

The devkit's ILSVRC2012_ID order (1 = n02119789 kit fox) is not Caffe's label order: Caffe
labels are positions in the ASCII-sorted wnid list (``imagenet_db.sources.labels``), so an ID is
only ever mapped to its wnid here. ``data/ILSVRC2012_validation_blacklist.txt`` is not used
(Caffe's val.txt keeps all 50,000 images).
"""
import io
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.base import archive_problem, read_to_end
from imagenet_db.sources.labels import is_wnid
from imagenet_db.sources.matlab import mat_int, mat_text
from imagenet_db.text import check_one_line, is_ascii_number, split_lines

META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
SYNSET_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
                 "wordnet_height", "num_train_images")


class DevkitError(ImagenetDbError):
    """The devkit is missing a file or holds malformed data; the message names the file."""




@dataclass(frozen=True)
class Synset:
    """One entry of meta.mat's ``synsets``. ilsvrc2012_id: int (1-based); wnid: 'n01440764';
    words: 'tench, Tinca tinca'; gloss: definition; num_children: 0 for a class (leaf);
    num_train_images: int as stated by the devkit."""
    ilsvrc2012_id: int
    wnid: str
    words: str
    gloss: str
    num_children: int
    num_train_images: int

    @property
    def is_class(self) -> bool:
        """True for a leaf (num_children == 0): one of the classes."""
        return self.num_children == 0


@dataclass
class Devkit:
    """What imagenet-db uses from the devkit.

    synsets: every meta.mat entry, in file order. classes: the leaves, in ILSVRC2012_ID order.
    val_ground_truth: ILSVRC2012_ID of validation image n at index n-1. path: the devkit file.
    """
    path: str
    synsets: List[Synset]
    val_ground_truth: List[int] = field(default_factory=list)

    @property
    def classes(self) -> List[Synset]:
        """The leaf synsets (the classes), sorted by ILSVRC2012_ID."""
        return sorted((s for s in self.synsets if s.is_class), key=lambda s: s.ilsvrc2012_id)

    def id_to_wnid(self) -> Dict[int, str]:
        """ILSVRC2012_ID -> wnid for the classes."""
        return {s.ilsvrc2012_id: s.wnid for s in self.classes}

    def words(self) -> Dict[str, str]:
        """wnid -> words ('tench, Tinca tinca') for the classes, for synset_words.txt."""
        return {s.wnid: s.words for s in self.classes}

    def val_wnids(self) -> List[str]:
        """wnid of validation image n at index n-1 (ground truth mapped through the IDs)."""
        mapping = self.id_to_wnid()
        return [mapping[i] for i in self.val_ground_truth]


def _synset(row, names, at: str) -> Synset:
    """One entry of meta.mat's ``synsets`` (``at`` names it in errors)."""
    wnid = mat_text(row["WNID"])
    if not is_wnid(wnid):
        raise DevkitError(f"{at}: WNID {wnid!r} is not a wnid like n01440764")
    number = {f: mat_int(row[f], f"{at}.{f}", DevkitError)
              for f in ("ILSVRC2012_ID", "num_children", "num_train_images") if f in names}
    return Synset(ilsvrc2012_id=number["ILSVRC2012_ID"], wnid=wnid,
                  words=check_one_line(mat_text(row["words"]), f"{at}.words", DevkitError),
                  gloss=mat_text(row["gloss"]) if "gloss" in names else "",
                  num_children=number["num_children"],
                  num_train_images=number.get("num_train_images", 0))


def parse_meta_mat(data: bytes, where: str) -> List[Synset]:
    """Parse meta.mat bytes into Synsets (file order).

    where: name used in errors (e.g. 'devkit.tar.gz:ILSVRC2012_devkit_t12/data/meta.mat').
    Raises DevkitError when the file is not a MATLAB file, has no ``synsets`` struct array,
    lacks a field, has a malformed wnid, or repeats an ILSVRC2012_ID or a class wnid.
    """
    try:
        import scipy.io  # imported here: it costs ~0.13 s at start-up of every command

        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, chars_as_strings=True)
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError for bad files
        raise DevkitError(f"{where}: not a readable MATLAB .mat file: {exc}") from None
    if "synsets" not in mat:
        raise DevkitError(f"{where}: has no 'synsets' variable (found: "
                          f"{', '.join(k for k in mat if not k.startswith('__')) or 'none'})")
    table = np.atleast_1d(mat["synsets"])
    names = table.dtype.names or ()
    missing = [f for f in ("ILSVRC2012_ID", "WNID", "words", "num_children") if f not in names]
    if missing:
        raise DevkitError(f"{where}: 'synsets' lacks field(s) {', '.join(missing)}")
    synsets, seen_ids, seen_wnids = [], {}, {}
    for n, row in enumerate(table.ravel(), start=1):
        at = f"{where}: synsets({n})"
        s = _synset(row, names, at)
        wnid = s.wnid
        if s.ilsvrc2012_id in seen_ids:
            raise DevkitError(f"{at}: ILSVRC2012_ID {s.ilsvrc2012_id} repeats synsets"
                              f"({seen_ids[s.ilsvrc2012_id]})")
        if s.is_class and wnid in seen_wnids:
            raise DevkitError(f"{at}: class {wnid} repeats synsets({seen_wnids[wnid]})")
        seen_ids[s.ilsvrc2012_id] = n
        if s.is_class:
            seen_wnids[wnid] = n
        synsets.append(s)
    if not seen_wnids:
        raise DevkitError(f"{where}: no synset has num_children == 0, so there are no classes")
    return synsets


def parse_ground_truth(text: str, where: str, class_ids) -> List[int]:
    """Parse the validation ground truth: one ILSVRC2012_ID per line (line n = val image n).

    class_ids: the valid IDs (the classes). Blank lines are allowed only at the end.
    Raises DevkitError naming ``where`` and the 1-based line for a non-integer or an ID that
    is not a class, or when the file has no lines.
    """
    lines = split_lines(text, crlf=True)
    while lines and not lines[-1].strip():
        lines.pop()
    ids = []
    for number, line in enumerate(lines, start=1):
        token = line.strip()
        if not is_ascii_number(token):
            raise DevkitError(f"{where}:{number}: expected an ILSVRC2012_ID, got {line!r}")
        value = int(token)
        if value not in class_ids:
            raise DevkitError(f"{where}:{number}: ILSVRC2012_ID {value} is not one of the "
                              f"{len(class_ids)} classes in meta.mat")
        ids.append(value)
    if not ids:
        raise DevkitError(f"{where}: the ground truth file is empty")
    return ids


def _find_member(tar: tarfile.TarFile, suffix: str, path: str) -> tarfile.TarInfo:
    matches = [m for m in tar.getmembers()
               if m.isfile() and (m.name == suffix or m.name.endswith("/" + suffix))]
    if not matches:
        raise DevkitError(f"{path}: no {suffix} in the devkit (expected "
                          f"ILSVRC2012_devkit_t12/{suffix})")
    if len(matches) > 1:
        raise DevkitError(f"{path}: {suffix} occurs {len(matches)} times "
                          f"({', '.join(m.name for m in matches)})")
    return matches[0]


def read_devkit(path: str) -> Devkit:
    """Read synsets and the validation ground truth from the devkit archive at ``path``
    (.tar.gz as distributed, or an uncompressed .tar), without extracting it.

    Raises DevkitError naming the file for a missing/unreadable archive, a missing member,
    malformed meta.mat or ground truth (see parse_meta_mat, parse_ground_truth).
    """
    try:
        with tarfile.open(path, mode="r:*") as tar:
            meta = _find_member(tar, META_MAT, path)
            truth = _find_member(tar, GROUND_TRUTH, path)
            meta_bytes = tar.extractfile(meta).read()
            truth_bytes = tar.extractfile(truth).read()
            read_to_end(tar)  # checks a .tar.gz's CRC-32 over all of it
    except (tarfile.TarError, EOFError, OSError) as exc:
        # gzip raises EOFError / BadGzipFile (an OSError) for truncated or non-gzip files
        raise DevkitError(f"{path}: cannot read the devkit archive: {archive_problem(path, exc)}") \
            from None
    synsets = parse_meta_mat(meta_bytes, f"{path}:{meta.name}")
    devkit = Devkit(path, synsets)
    try:
        text = truth_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise DevkitError(f"{path}:{truth.name}: not a text file") from None
    devkit.val_ground_truth = parse_ground_truth(text, f"{path}:{truth.name}",
                                                 set(devkit.id_to_wnid()))
    return devkit
