"""The raw ILSVRC2012 archives as a SOURCE: labels, lists and image bytes without extraction.

SOURCE is a directory holding the three files ImageNet distributes:

    ILSVRC2012_img_train.tar      1,000 per-synset tars n01440764.tar, each holding
                                  n01440764_10026.JPEG, ... (1,281,167 images)
    ILSVRC2012_img_val.tar        flat ILSVRC2012_val_00000001.JPEG .. _00050000.JPEG
    ILSVRC2012_devkit_t12.tar.gz  data/meta.mat (synsets) and the validation ground truth
                                  (or, instead or as well, the ILSVRC2014_devkit.tgz or
                                  ILSVRC2015_devkit.tar.gz: same IDs; see ``devkits``)

``index_archives`` reads only tar headers and the devkit: the classes are the devkit's leaf
synsets, Caffe labels are their positions in ASCII wnid order, each validation image gets the
wnid of its ground-truth ILSVRC2012_ID. Relpaths are Caffe's (``n01440764/n01440764_10026.JPEG``
for train, ``ILSVRC2012_val_00000001.JPEG`` for val), so lists, keys and databases equal those
built from the same images extracted (train/<wnid>/..., flat val/ + val.txt).
Images are then read by ``os.pread`` at their indexed offsets (a ``containers.TarContainer``).
Boxes (optional): ``ILSVRC2012_bbox_train_v2.tar.gz`` and ``ILSVRC2012_bbox_val_v3.tgz`` beside
them, read in one streaming pass each when a format asks for boxes (``sources.boxes``).
"""
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import Dataset, Split, check_list_name
from imagenet_db.sources.boxes import split_boxes, tar_xml_members
from imagenet_db.sources.checksums import verify_files
from imagenet_db.sources import devkits as D
from imagenet_db.sources.devkit import Devkit, Synset, read_devkit
from imagenet_db.sources.archives.containers import TarContainer
from imagenet_db.sources.archives.tarindex import Member, index_nested, index_tar

NAME = "ilsvrc2012"

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TGZ = "ILSVRC2012_devkit_t12.tar.gz"
ARCHIVE_NAMES = (TRAIN_TAR, VAL_TAR, DEVKIT_TGZ)
# the localization boxes, optional, beside the three files (PASCAL VOC XMLs: sources.boxes)
BBOX_ARCHIVES = {"train": "ILSVRC2012_bbox_train_v2.tar.gz", "val": "ILSVRC2012_bbox_val_v3.tgz"}
# --verify: the MD5s listed on the ILSVRC2012 download page (also checked by torchvision's
# ImageNet dataset); the 2014/2015 devkits have no published value (logged, not compared)
PUBLISHED_MD5: Dict[str, str] = {
    TRAIN_TAR: "1d675b47d978889d74fa0da5fadfb00e",
    VAL_TAR: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT_TGZ: "fa75699e90414af021442c21a62c3abf",
}
VERIFIES = f"the ILSVRC2012 archives ({TRAIN_TAR}, ...)"  # what --verify checks, for messages
LOOKS_FOR = (f"the ILSVRC2012 archives: {TRAIN_TAR}, {VAL_TAR} and a devkit ({DEVKIT_TGZ}, "
             f"ILSVRC2014_devkit.tgz or ILSVRC2015_devkit.tar.gz)")
VAL_NAME = re.compile(r"ILSVRC2012_val_([0-9]{8})\.JPEG\Z")  # ASCII digits (imagenet_db.text)
VAL_FORMAT = "ILSVRC2012_val_%08d.JPEG"
# Published sizes of ILSVRC2012 (for information in messages; fixtures are smaller).
ILSVRC2012_TRAIN_IMAGES = 1_281_167
ILSVRC2012_VAL_IMAGES = 50_000


class ArchiveError(ImagenetDbError):
    """The archive set is incomplete or inconsistent; the message names the file."""


@dataclass(frozen=True)
class ArchivePaths:
    """Paths of the ILSVRC2012 files in a SOURCE directory: the two image tars, the devkit
    used for the classes (the 2012 one when present) and every devkit found (2012/2014/2015,
    archives or extracted; they are cross-checked)."""
    train: str
    val: str
    devkit: str
    devkits: tuple = ()

    def all(self) -> List[str]:
        """[train, val, devkit(s)] paths."""
        return [self.train, self.val] + list(self.devkits or (self.devkit,))


def find_archives(source: str) -> Optional[ArchivePaths]:
    """The archive paths when ``source`` holds any of the three ILSVRC2012 files, else None.

    Raises ArchiveError naming what is missing when only some of them are there (or one of
    them is not a regular file).
    """
    if not os.path.isdir(source):
        return None
    paths = [os.path.join(source, name) for name in ARCHIVE_NAMES]
    present = [os.path.lexists(p) for p in paths]
    if not any(present):
        return None
    kits = D.find_devkits(source)
    for path in paths[:2]:
        if not os.path.lexists(path):
            raise ArchiveError(f"{source}: missing {os.path.basename(path)} (an ILSVRC2012 "
                               f"archive SOURCE needs {TRAIN_TAR}, {VAL_TAR} and a devkit)")
        if not os.path.isfile(path):
            raise ArchiveError(f"{path}: not a regular file")
    if os.path.lexists(paths[2]) and not os.path.isfile(paths[2]):
        raise ArchiveError(f"{paths[2]}: not a regular file")
    if not kits:
        raise ArchiveError(f"{source}: missing {DEVKIT_TGZ} (or ILSVRC2014_devkit.tgz / "
                           f"ILSVRC2015_devkit.tar.gz): the validation labels are in a devkit")
    primary = paths[2] if os.path.isfile(paths[2]) else kits[0]
    return ArchivePaths(paths[0], paths[1], primary, tuple(kits))


@dataclass
class ArchiveIndex:
    """Everything known about an archive SOURCE after reading headers and the devkit.

    synsets: class wnids in Caffe label order. words: wnid -> 'tench, Tinca tinca'.
    train: Caffe relpath -> Member (offset into paths.train), sorted by relpath.
    val: file name -> Member (offset into paths.val), sorted by name (= image number).
    val_wnids: file name -> ground-truth wnid. notes: non-fatal observations for the log.
    blacklist: val file names a devkit blacklists (None when no devkit has the file).
    """
    paths: ArchivePaths
    devkit: Devkit
    synsets: List[str]
    words: Dict[str, str]
    train: Dict[str, Member]
    val: Dict[str, Member]
    val_wnids: Dict[str, str]
    notes: List[str]
    blacklist: Optional[set] = None
    blacklist_where: str = ""

    def labels(self) -> Dict[str, int]:
        """wnid -> Caffe label (position in ASCII order)."""
        return L.label_map(self.synsets)

    def train_entries(self) -> List[tuple]:
        """[(relpath, Caffe label)] sorted by relpath (Caffe's train.txt)."""
        labels = self.labels()
        return [(rel, labels[rel.split("/", 1)[0]]) for rel in self.train]

    def val_entries(self) -> List[tuple]:
        """[(file name, Caffe label)] in image-number order (Caffe's val.txt)."""
        labels = self.labels()
        return [(name, labels[self.val_wnids[name]]) for name in self.val]


def _plain_name(name: str, where: str) -> str:
    clean = name[2:] if name.startswith("./") else name
    if not clean or "/" in clean or clean in (".", ".."):
        raise ArchiveError(f"{where}: member {name!r} is not a plain file name")
    check_list_name(clean, f"{where}: member")
    return clean


def _index_train(path: str, classes: List[str], notes: List[str],
                 stated: Dict[str, int]) -> Dict[str, Member]:
    nested = index_nested(path)
    by_wnid: Dict[str, List[Member]] = {}
    for outer_name, members in nested.items():
        name = _plain_name(outer_name, path)
        wnid, ext = os.path.splitext(name)
        if ext != ".tar" or not L.is_wnid(wnid):
            raise ArchiveError(f"{path}: member {outer_name!r} is not a per-synset tar like "
                               f"n01440764.tar")
        if wnid in by_wnid:
            raise ArchiveError(f"{path}: {name} occurs twice")
        by_wnid[wnid] = members
    unknown = sorted(set(by_wnid) - set(classes))
    if unknown:
        raise ArchiveError(f"{path}: holds {unknown[0]}.tar but {unknown[0]} is not a class of "
                           f"the devkit ({len(unknown)} such synset tar(s)); wrong devkit?")
    missing = [w for w in classes if w not in by_wnid]
    if missing:
        raise ArchiveError(f"{path}: no {missing[0]}.tar for class {missing[0]} of the devkit "
                           f"({len(missing)} of {len(classes)} classes missing); incomplete "
                           f"or wrong archive?")
    train: Dict[str, Member] = {}
    differ = []
    for wnid in classes:
        where = f"{path}: member {wnid}.tar"
        files = {}
        for m in by_wnid[wnid]:
            name = _plain_name(m.name, where)
            if name in files:
                raise ArchiveError(f"{where}: {name} occurs twice")
            files[name] = m
        if not files:
            raise ArchiveError(f"{where}: holds no images")
        if stated.get(wnid) and stated[wnid] != len(files):
            differ.append((wnid, len(files), stated[wnid]))
        for name in sorted(files):
            train[f"{wnid}/{name}"] = files[name]
    if differ:  # one note, however many classes (a subset archive differs in all of them)
        wnid, held, said = differ[0]
        notes.append(f"{len(differ)} of {len(classes)} class tars hold another number of images "
                     f"than meta.mat's num_train_images (e.g. {wnid}.tar holds {held}, meta.mat "
                     f"says {said})")
    return train


def _index_val(path: str, devkit: Devkit) -> Dict[str, Member]:
    truth = len(devkit.val_ground_truth)
    val: Dict[str, int] = {}
    members: Dict[str, Member] = {}
    for m in index_tar(path):
        name = _plain_name(m.name, path)
        match = VAL_NAME.match(name)
        if not match:
            raise ArchiveError(f"{path}: member {m.name!r} is not named like "
                               f"ILSVRC2012_val_00000001.JPEG")
        number = int(match.group(1))
        if not 1 <= number <= truth:
            raise ArchiveError(f"{path}: holds {name}, but the ground truth in {devkit.path} "
                               f"covers only images 1..{truth}; wrong devkit?")
        if name in members:
            raise ArchiveError(f"{path}: {name} occurs twice")
        members[name], val[name] = m, number
    if len(members) != truth:
        have = set(val.values())
        first = next(n for n in range(1, truth + 1) if n not in have)
        raise ArchiveError(f"{path}: holds {len(members)} images but the ground truth in "
                           f"{devkit.path} lists {truth}; missing e.g. {VAL_FORMAT % first}")
    return {name: members[name] for name in sorted(members)}


def index_archives(source_or_paths) -> ArchiveIndex:
    """Read the devkit and the tar headers of an archive SOURCE (see module docstring).

    source_or_paths: the SOURCE directory or an ArchivePaths. Reads no image data: for the
    real archives this is the devkit plus ~1.3M tar headers.
    Raises ArchiveError / TarIndexError / DevkitError naming the file for a missing file, a
    file that is not a tar, a truncated tar, a train tar whose synset tars differ from the
    devkit's classes, and a val tar the devkit's ground truth does not cover exactly.
    """
    paths = source_or_paths
    if not isinstance(paths, ArchivePaths):
        paths = find_archives(source_or_paths)
        if paths is None:
            raise ArchiveError(f"{source_or_paths}: no ILSVRC2012 archives "
                               f"({', '.join(ARCHIVE_NAMES)})")
    devkit, infos, words, notes = _read_devkits(paths)
    classes = devkit.classes
    synsets = L.caffe_synsets(s.wnid for s in classes)
    train = _index_train(paths.train, synsets, notes,
                         {s.wnid: s.num_train_images for s in classes})
    val = _index_val(paths.val, devkit)
    if len(synsets) == 1000 and (len(train), len(val)) != (ILSVRC2012_TRAIN_IMAGES,
                                                           ILSVRC2012_VAL_IMAGES):
        notes.append(f"the archives hold {len(train):,} train and {len(val):,} val images; "
                     f"ILSVRC2012 has {ILSVRC2012_TRAIN_IMAGES:,} and {ILSVRC2012_VAL_IMAGES:,}")
    truth = devkit.val_wnids()
    val_wnids = {name: truth[int(VAL_NAME.match(name).group(1)) - 1] for name in val}
    index = ArchiveIndex(paths, devkit, synsets, words, train, val, val_wnids, notes)
    for info in infos:
        if info.blacklist is not None:
            index.blacklist = {VAL_FORMAT % n for n in info.blacklist if VAL_FORMAT % n in val}
            index.blacklist_where = info.blacklist_where
            break
    return index


def _read_devkits(paths: ArchivePaths):
    """(primary Devkit, [DevkitInfo of every devkit], words, notes). The 2012 devkit is read
    by ``devkit.read_devkit`` (its stated train counts give notes); 2014/2015 devkits by
    ``devkits``; all must agree on the classes and the ground truth."""
    notes: List[str] = []
    legacy = read_devkit(paths.devkit) if os.path.basename(paths.devkit) == DEVKIT_TGZ else None
    infos = [D.read_devkit(p) for p in (paths.devkits or (paths.devkit,))]
    if legacy is not None:
        devkit = legacy
    else:
        info = infos[0]
        if info.truth is None:
            raise ArchiveError(f"{info.where}: no validation ground truth in the devkit "
                               f"(data/ILSVRC20xx_clsloc_validation_ground_truth.txt)")
        devkit = Devkit(info.where, [Synset(e.ident, e.wnid, e.words, "", 0, 0) for e in info.classes],
                        list(info.truth))
    wnids = {s.wnid for s in devkit.classes}
    for info in infos:
        if {e.wnid for e in info.classes} != wnids:
            raise ArchiveError(f"{info.where}: its classes differ from those of {devkit.path}; "
                               f"devkits of different datasets?")
    D.check_same_truth([i for i in infos if i.truth is not None])
    if os.path.basename(paths.devkit) == DEVKIT_TGZ:
        words = devkit.words()
    else:
        best = D.best_words(infos)
        words = best.words()
        if not best.full_words:
            notes.append(f"synset_words.txt has map_clsloc.txt's short names ('kit fox'), the "
                         f"only class names in {best.where}")
    return devkit, infos, words, notes


def detect(source: str) -> bool:
    """True when ``source`` holds any of the three files (ArchiveError when only some)."""
    return find_archives(source) is not None


def open_dataset(source: str) -> Dataset:
    """ImageNet read in place from the archives in ``source``: relpaths, labels and words as
    Caffe's aux files; loaders read each image by its offset in the tar. Raises
    ImagenetDbError subclasses naming the bad file (see index_archives)."""
    index = index_archives(source)
    train, val = TarContainer(index.paths.train, index.train), TarContainer(index.paths.val,
                                                                           index.val)
    splits = {"train": Split("train", index.train_entries(), train.loader),
              "val": Split("val", index.val_entries(), val.loader)}
    for name, split in splits.items():
        split.boxes = _bbox_archive(source, name, index.words, split)
    return Dataset(index.synsets, splits, index.words, index.notes, index.blacklist,
                   index.blacklist_where)


def _bbox_archive(source: str, split: str, words: Dict[str, str], found: Split):
    """The ``boxes.SplitBoxes`` of ILSVRC2012's bbox archive of ``split`` beside the three
    files (``BBOX_ARCHIVES``), read in place in one pass when a format asks; None without it."""
    path = os.path.join(source, BBOX_ARCHIVES[split])
    if not os.path.isfile(path):
        return None
    return split_boxes(lambda: tar_xml_members(path), None, words,
                       (relpath for relpath, _ in found.entries), path)


def verify_archives(paths: ArchivePaths, expected: Optional[Dict[str, str]] = None,
                    progress: Optional[bool] = None, log: Callable[[str], None] = print) -> None:
    """Check the MD5 of each archive against ``expected`` (file name -> hex MD5; default:
    PUBLISHED_MD5). Every file is checked; raises ChecksumError naming each mismatching
    file with the expected and actual digests (``checksums.verify_files``)."""
    verify_files(paths.all(), PUBLISHED_MD5 if expected is None else expected, "ILSVRC2012",
                 progress, log)


def verify(source: str, progress: Optional[bool] = None,
           log: Callable[[str], None] = print) -> None:
    """``--verify``: the archives' MD5 against the published values (``PUBLISHED_MD5``);
    progress: tqdm bars in bytes (None = only on a terminal). Raises ChecksumError on a
    mismatch, ArchiveError when the archive set is incomplete."""
    verify_archives(find_archives(source), progress=progress, log=log)
