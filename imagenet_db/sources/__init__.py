"""Sources: the ImageNet distributions (and Caffe list files) records come from.

Every distribution is a module with ``NAME``, ``LOOKS_FOR`` (what it is recognised by, for
messages), ``detect(path) -> bool`` (cheap; may raise when a file set is incomplete),
``open_dataset(path) -> base.Dataset`` (its splits read images through a container of
``archives.containers``: a folder, a tar, a .tar.gz or a .zip) and optionally
``verify(path, progress, log)`` with ``VERIFIES`` (its table of published MD5s, checked by
``checksums.verify_files``). ``DISTRIBUTIONS`` lists them in detection order; the first one
that detects a SOURCE reads it, and ``verify_source`` (``--verify``) calls its ``verify``.
Labels are always Caffe's (``labels``: wnids in ASCII order).

To add a distribution: write ``sources/<name>.py`` with those functions and add it to
``DISTRIBUTIONS`` (before more general layouts such as the plain tree); ``create_imagenet``,
``imagenet-db labels`` and ``--verify`` then accept it. Archive access (``archives/``: tar,
.tar.gz and .zip indexes, containers), devkit parsing (``devkit``, ``devkits``, ``clsloc``,
``matlab``) and ``checksums`` are helpers for such modules; the Caffe list file of
``convert_imageset`` is ``listfile``.
"""
import os
from types import ModuleType
from typing import Callable, List, Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import (fall11, ilsvrc2012, ilsvrc2015, kaggle, synset_tars, tree,
                                 winter21)
from imagenet_db.sources.base import Dataset, check_names, drop_val_blacklist
from imagenet_db.sources.selection import ClassSelection, select

DISTRIBUTIONS: List[ModuleType] = [
    kaggle,      # imagenet-object-localization-challenge.zip, or LOC_*.csv/txt + ILSVRC/
    ilsvrc2015,  # ILSVRC2015_CLS-LOC.tar.gz (+ devkits), or extracted ILSVRC2015/Data/CLS-LOC/
    ilsvrc2012,  # ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar + a devkit (2012/2014/2015)
    fall11,      # fall11_whole.tar: the whole ImageNet, a tar of 21,841 synset tars
    winter21,    # winter21_whole.tar.gz: the whole ImageNet of 2021, 19,167 synset tars
    synset_tars,  # n*.tar files and/or n*/ folders (whole ImageNet extracted), no train/
    tree,        # an extracted train/<wnid>/, val/ tree
]


def detect(source: str) -> ModuleType:
    """The distribution module that reads ``source``. Raises ImagenetDbError naming the
    folder and listing what was looked for (every distribution's LOOKS_FOR) when none matches."""
    if not os.path.isdir(source):
        raise ImagenetDbError(f"{source}: no such directory")
    distribution = _find(source)
    if distribution is not None:
        return distribution
    raise ImagenetDbError(f"{source}: no ImageNet found; looked for "
                          + "; or ".join(d.LOOKS_FOR for d in DISTRIBUTIONS))


def _find(source: str) -> Optional[ModuleType]:
    """The first distribution that detects ``source`` (a directory), else None."""
    return next((d for d in DISTRIBUTIONS if d.detect(source)), None)


def verify_source(source: str, progress: Optional[bool] = None,
                  log: Callable[[str], None] = print) -> None:
    """``--verify``: the ``verify`` of the distribution that reads ``source`` (its files' MD5
    against the published values, one log line per file; progress: tqdm bars in bytes, None
    = only on a terminal). Raises ImagenetDbError naming ``source`` when it holds no
    distribution with published checksums (an extracted tree has none), a
    ``checksums.ChecksumError`` naming each mismatching file."""
    distribution = _find(source) if os.path.isdir(source) else None
    check = getattr(distribution, "verify", None)
    if check is None:
        raise ImagenetDbError(f"{source}: --verify checks " + "; or ".join(
            d.VERIFIES for d in DISTRIBUTIONS if hasattr(d, "verify"))
            + ", and this folder holds none")
    check(source, progress=progress, log=log)


def open_dataset(source: str) -> Dataset:
    """Find ImageNet under ``source`` (see ``detect``) and read its lists and labels. Raises
    ImagenetDbError when an image's name cannot go into a Caffe list (``base.check_names``)."""
    dataset = detect(source).open_dataset(source)
    check_names(dataset, source)
    return dataset


def load_dataset(source: str, drop_blacklist: bool = False,
                 log: Callable[[str], None] = print,
                 allow_empty_classes: bool = False,
                 selection: ClassSelection = ClassSelection()) -> Dataset:
    """``open_dataset``, then (``drop_blacklist``) without the devkit's blacklisted val images
    (``base.drop_val_blacklist``), then the classes and val split of ``selection``
    (``--min_class_images``, ``--val_per_class``: ``selection.select``), its notes logged as
    'note: ...' lines.

    A synset without any training image (an empty train/<wnid>/ folder, say) still gets a
    label and shifts the labels of every synset after it; that is refused (ImagenetDbError
    naming it) unless ``allow_empty_classes``, when the label is kept on purpose (e.g. to keep
    the full set's numbering for a subset)."""
    dataset = open_dataset(source)
    train = dataset.splits.get("train")
    if train is not None and not allow_empty_classes:
        used = {label for _, label in train.entries}
        empty = [wnid for label, wnid in enumerate(dataset.synsets) if label not in used]
        if empty:
            raise ImagenetDbError(
                f"{source}: synset {empty[0]} has no training images ({len(empty)} such "
                f"synset(s)), but it would still get label {dataset.synsets.index(empty[0])} "
                f"and shift the labels after it; remove it (e.g. its empty train/{empty[0]}/ "
                f"folder) or pass --allow_empty_classes to keep it as a label")
    if drop_blacklist:
        dataset = drop_val_blacklist(dataset)
    dataset = select(dataset, selection, source)
    for note in dataset.notes:
        log(f"note: {note}")
    return dataset
