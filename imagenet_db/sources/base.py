"""What every source yields: a ``Dataset`` of synsets, words and ``Split``s of ``Record``s.

A ``Record`` is one line of a Caffe list: its position in the (shuffled) list (``index``)
becomes the number in Caffe's key ``%08d_<relpath>`` (formed by the output). The image bytes
are not read here: ``record.load()`` reads them when a worker needs them, so the list of
records stays small (no pixels are held for the list).
"""
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.records import (FileLoader, ListColumns, Record,  # noqa: F401
                                         RecordColumns, shuffle_permutation)
from imagenet_db.text import line_problem

DEFAULT_SEED = 0
# file name extensions of the images a folder tree may hold (case-insensitive; OpenCV decodes all)
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff",
                              ".webp"})


def is_image_name(name: str) -> bool:
    """True when ``name`` ends in one of IMAGE_EXTENSIONS (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def shuffle_order(n: int, seed: int = DEFAULT_SEED) -> List[int]:
    """A deterministic permutation of range(n) for ``--shuffle``.

    Position i goes where the BLAKE2b-64 digest of (seed, i) sorts: the same seed gives the
    same order on every machine, Python and numpy version, and with any number of workers.
    (Caffe's own shuffle uses an unseeded RNG, so no Caffe order can be reproduced anyway.)
    As a list; ``records.shuffle_permutation`` gives it as an int64 array (8 bytes a record).
    """
    return shuffle_permutation(n, seed).tolist()


def shuffled(entries: Sequence, seed: int = DEFAULT_SEED) -> list:
    """``entries`` reordered by ``shuffle_order(len(entries), seed)``."""
    return [entries[i] for i in shuffle_order(len(entries), seed)]


@dataclass
class Split:
    """One split (train or val): sorted [(relpath, label)] and how to load a relpath's bytes.
    boxes: the split's annotations when the distribution has them (a
    ``sources.boxes.SplitBoxes``, read only when a format asks), else None."""
    name: str
    entries: List[Tuple[str, int]]
    loader: Callable[[str], Callable[[], bytes]]
    boxes: Optional[object] = None

    def records(self, shuffle: bool, seed: int,
                box_labels: Optional[Dict[str, int]] = None) -> RecordColumns:
        """Records in database order (shuffled with ``seed`` when ``shuffle``), as columns
        (``sources.records``: one ``Record`` made per access). box_labels: wnid -> the label
        a box gets (its format's label order): each annotated record then carries its boxes
        (``Record.boxes``, from ``self.boxes``); None: no boxes."""
        order = shuffle_permutation(len(self.entries), seed) if shuffle else None
        boxes = self.boxes.lookup(box_labels) \
            if box_labels is not None and self.boxes is not None else None
        return RecordColumns(ListColumns.from_entries(self.entries), self.loader, order,
                             boxes=boxes)


@dataclass
class Dataset:
    """A located ImageNet: synsets in Caffe label order (label i = synsets[i]), optional words
    (wnid -> 'tench, Tinca tinca'), the splits by name, notes for the log, and the validation
    relpaths a devkit blacklists (``val_blacklist``, None when no devkit blacklist is known;
    ``blacklist_where`` names the file). dropped_classes: [(wnid, training images)] that
    ``--min_class_images`` left out (``selection``); None when no minimum was asked.
    extra_files: {name: text} a format adds to the aux files in OUTDIR (e.g. SSD's
    labelmap.prototxt)."""
    synsets: List[str]
    splits: Dict[str, Split]
    words: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    val_blacklist: Optional[Set[str]] = None
    blacklist_where: str = ""
    dropped_classes: Optional[List[Tuple[str, int]]] = None
    extra_files: Dict[str, str] = field(default_factory=dict)


def relabel(found: Dataset, synsets: List[str]) -> Dataset:
    """``found`` with labels = positions in ``synsets`` (another order of the same wnids)."""
    new = {wnid: label for label, wnid in enumerate(synsets)}
    splits = {name: Split(name, [(rel, new[found.synsets[label]]) for rel, label in s.entries],
                          s.loader, s.boxes) for name, s in found.splits.items()}
    return replace(found, synsets=synsets, splits=splits)


def drop_val_blacklist(dataset: Dataset) -> Dataset:
    """``dataset`` without the validation images its devkit blacklists (``--drop_val_blacklist``:
    the 1,762 images of the 2014/2015 CLS-LOC devkits' *_clsloc_validation_blacklist.txt, which
    ILSVRC's localization evaluation skips; the classification task keeps them). Adds a note.
    Raises ImagenetDbError when the SOURCE has no devkit blacklist (Kaggle's download and an
    extracted tree have none: put a devkit beside it)."""

    if dataset.val_blacklist is None:
        raise ImagenetDbError("--drop_val_blacklist: this SOURCE has no devkit with a validation "
                              "blacklist (ILSVRC2014_devkit.tgz, ILSVRC2015_devkit.tar.gz or "
                              "ILSVRC2012_devkit_t12.tar.gz beside the data)")
    val = dataset.splits.get("val")
    if val is None:
        return dataset
    kept = [e for e in val.entries if e[0] not in dataset.val_blacklist]
    splits = dict(dataset.splits)
    splits["val"] = Split(val.name, kept, val.loader, val.boxes)
    note = (f"--drop_val_blacklist: left out {len(val.entries) - len(kept)} validation images "
            f"listed in {dataset.blacklist_where}")
    return Dataset(dataset.synsets, splits, dataset.words, dataset.notes + [note],
                   dataset.val_blacklist, dataset.blacklist_where)


def archive_problem(path: str, exc: BaseException) -> str:
    """One line saying why a (gzipped) tar cannot be read: 'empty file (0 bytes)', or the
    library's message with its line breaks (tarfile lists every method it tried) folded."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return " ".join(str(exc).split()) or type(exc).__name__


def read_to_end(tar) -> None:
    """Read the rest of the (compressed) stream under the open ``tarfile.TarFile`` ``tar``: a
    .tar.gz's CRC-32 and length footer lies past the tar's end marker, where ``tarfile``
    stops, so only reading to the end lets ``gzip`` check them (every decompressed byte,
    skipped ones included, is in its CRC). Raises what the decompressor raises for a damaged
    stream (OSError such as gzip.BadGzipFile 'CRC check failed', EOFError)."""
    while tar.fileobj.read(1 << 20):
        pass


def check_list_name(relpath: str, where: str) -> None:
    """Raise ImagenetDbError (naming ``where`` and the name) when ``relpath`` cannot be a line
    of a Caffe list file or part of a key: not valid UTF-8 (a file name in another encoding),
    or holding a line break, a NUL byte or another control character (the one set of
    ``imagenet_db.text.line_problem``, refused for every value written one per line)."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        raise ImagenetDbError(f"{where}: the name {os.fsencode(relpath)!r} is not valid UTF-8, "
                              f"which Caffe's list files and keys need: rename it") from None
    problem = line_problem(relpath)
    if problem:
        raise ImagenetDbError(f"{where}: the name {relpath!r} holds {problem}, which a Caffe "
                              f"list file cannot hold: rename it")


def check_names(dataset: "Dataset", where: str) -> None:
    """check_list_name for every image of every split of ``dataset``."""
    for split in dataset.splits.values():
        for relpath, _ in split.entries:
            check_list_name(relpath, f"{where}: {split.name} image")
