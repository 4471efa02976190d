"""Sources: the ImageNet distributions (and Caffe list files) records come from.

Every distribution is a module with ``NAME``, ``LOOKS_FOR`` (what it is recognised by, for
messages), ``detect(path) -> bool`` (cheap; may raise when a file set is incomplete),
``open_dataset(path) -> base.Dataset`` and optionally ``verify(path, progress, log)`` (the
published checksums). ``DISTRIBUTIONS`` lists them in detection order; the first one that
detects a SOURCE reads it. Labels are always Caffe's (``labels``: wnids in ASCII order).

To add a distribution: write ``sources/<name>.py`` with those functions and add it to
``DISTRIBUTIONS`` (before more general layouts such as the plain tree); ``create_imagenet``,
``imagenet-db labels`` and ``--verify`` then accept it. The tar index (``tarindex``), devkit
parsing (``devkit``) and checksums (``checksums``) are helpers for such modules; the Caffe
list file of ``convert_imageset`` is ``listfile``.
"""
import os
from types import ModuleType
from typing import Callable, List

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import ilsvrc2012, ilsvrc2015, kaggle, tree
from imagenet_db.sources.base import Dataset, drop_val_blacklist

DISTRIBUTIONS: List[ModuleType] = [
    kaggle,      # imagenet-object-localization-challenge.zip, or LOC_*.csv/txt + ILSVRC/
    ilsvrc2015,  # ILSVRC2015_CLS-LOC.tar.gz (+ devkits), or extracted ILSVRC2015/Data/CLS-LOC/
    ilsvrc2012,  # ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar + a devkit (2012/2014/2015)
    tree,        # an extracted train/<wnid>/, val/ tree
]


def detect(source: str) -> ModuleType:
    """The distribution module that reads ``source``. Raises ImagenetDbError naming the
    folder and listing what was looked for (every distribution's LOOKS_FOR) when none matches."""
    if not os.path.isdir(source):
        raise ImagenetDbError(f"{source}: no such directory")
    for distribution in DISTRIBUTIONS:
        if distribution.detect(source):
            return distribution
    raise ImagenetDbError(f"{source}: no ImageNet found; looked for "
                          + "; or ".join(d.LOOKS_FOR for d in DISTRIBUTIONS))


def open_dataset(source: str) -> Dataset:
    """Find ImageNet under ``source`` (see ``detect``) and read its lists and labels."""
    return detect(source).open_dataset(source)


def load_dataset(source: str, drop_blacklist: bool = False,
                 log: Callable[[str], None] = print) -> Dataset:
    """``open_dataset``, then (``drop_blacklist``) without the devkit's blacklisted val images
    (``base.drop_val_blacklist``), its notes logged as 'note: ...' lines."""
    dataset = open_dataset(source)
    if drop_blacklist:
        dataset = drop_val_blacklist(dataset)
    for note in dataset.notes:
        log(f"note: {note}")
    return dataset
