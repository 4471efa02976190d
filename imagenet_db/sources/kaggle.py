"""Kaggle's "ImageNet Object Localization Challenge" download as a SOURCE, zipped or extracted.

``kaggle competitions download -c imagenet-object-localization-challenge`` gives
``imagenet-object-localization-challenge.zip`` (~155-166 GB). Two generations exist:

* the zip holds ``ILSVRC/{Data,Annotations,ImageSets}/CLS-LOC/...`` and the LOC files
  directly: every image is read in place, one positioned read (+ inflate) per member;
* the zip holds ``imagenet_object_localization_patched2019.tar.gz`` and the LOC files: the
  .tar.gz is read in place inside the zip when it is stored uncompressed; a deflated one must be
  unzipped once (then the .tar.gz itself is read in place).

The LOC files: ``LOC_synset_mapping.txt`` ('n01440764 tench, Tinca tinca', ASCII wnid order: the
words for synset_words.txt), ``LOC_val_solution.csv`` ('ImageId,PredictionString', ImageId
without .JPEG, PredictionString 'wnid xmin ymin xmax ymax' repeated, rows in no order),
``LOC_train_solution.csv`` (the train boxes: read only for a format that stores boxes; train
labels are the folder names) and ``LOC_sample_submission.csv`` (not needed). SOURCE is the
folder holding the zip, or the folder holding the extracted LOC files with ``ILSVRC/`` (or the
.tar.gz) beside them. Validation labels come from the CSV and the XML annotations (and a
devkit's ground truth if one is put beside); they must agree.
"""
import os
import sys
from functools import partial
from typing import Dict, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import ilsvrc2015
from imagenet_db.sources.base import Dataset
from imagenet_db.sources.boxes import KAGGLE_TRAIN
from imagenet_db.sources.clsloc_layout import KAGGLE_MAPPING, KAGGLE_VAL, keep_small, open_clsloc
from imagenet_db.sources.archives.containers import (Container, FolderContainer, TarGzContainer,
                                            ZipContainer)
from imagenet_db.sources.archives.gzindex import index_targz
from imagenet_db.sources.archives.zipindex import ZipReader

NAME = "kaggle"
ZIP = "imagenet-object-localization-challenge.zip"
TARGZ = "imagenet_object_localization_patched2019.tar.gz"
LOOKS_FOR = (f"Kaggle's ImageNet Object Localization Challenge: {ZIP}, or its extracted "
             f"{KAGGLE_MAPPING} + {KAGGLE_VAL} with ILSVRC/ (or {TARGZ}) beside them")


def detect(source: str) -> bool:
    """True when ``source`` holds Kaggle's zip or the extracted LOC files."""
    return any(os.path.isfile(os.path.join(source, n)) for n in (ZIP, KAGGLE_MAPPING, KAGGLE_VAL))


def _log(text: str) -> None:
    print(text, file=sys.stderr)


def _loc_files(container: Container) -> Dict[str, Tuple[bytes, str]]:
    return {n: (container.read(n), container.where(n)) for n in (KAGGLE_MAPPING, KAGGLE_VAL)
            if container.has(n)}


def _box_csv(loc: Dict[str, Tuple[bytes, str]], containers) -> Dict[str, tuple]:
    """{split: (read, where)} of LOC_train_solution.csv / LOC_val_solution.csv, the boxes
    (``sources.boxes``): the train file (large) is read only when a format asks for boxes."""
    found = {}
    if KAGGLE_VAL in loc:
        data, where = loc[KAGGLE_VAL]
        found["val"] = (lambda: data, where)
    for container in containers:
        if container.has(KAGGLE_TRAIN) and "train" not in found:
            found["train"] = (partial(container.read, KAGGLE_TRAIN), container.where(KAGGLE_TRAIN))
    return found


def _images_in_zip(zipc: ZipContainer) -> Container:
    """The container holding ILSVRC/ inside the zip: the zip itself, or the .tar.gz stored in it."""
    if zipc.dirs("ILSVRC/Data/CLS-LOC/"):
        return zipc
    if zipc.has(TARGZ):
        member = zipc.member(TARGZ)
        if member.method != 0:
            raise ImagenetDbError(f"{zipc.where(TARGZ)} is compressed inside the zip, so it cannot "
                                  f"be read in place: unzip {ZIP} once and use the folder holding "
                                  f"{TARGZ} as SOURCE (the .tar.gz is then read in place)")
        start, length = ZipReader(zipc.path).data_range(member)
        window = (zipc.path, start, length)
        index = index_targz(zipc.where(TARGZ), keep=keep_small, log=_log, window=window)
        return TarGzContainer(zipc.where(TARGZ), index, window)
    raise ImagenetDbError(f"{zipc.path}: holds neither ILSVRC/Data/CLS-LOC/ nor {TARGZ}; not "
                          f"Kaggle's ImageNet download, or an incomplete one")


def open_dataset(source: str) -> Dataset:
    """The Dataset of Kaggle's download in ``source`` (see module docstring). Raises
    ImagenetDbError subclasses naming the files: a LOC file or the images missing, a
    malformed CSV row (file:line), XML and CSV labels that disagree, a CSV row for an image
    the data does not hold (e.g. a member missing from the zip)."""
    folder = FolderContainer(source)
    loc = _loc_files(folder)
    csv_places = [folder]
    if os.path.isdir(os.path.join(source, "ILSVRC", "Data", "CLS-LOC")):
        images: Container = folder
    elif os.path.isfile(os.path.join(source, TARGZ)):
        path = os.path.join(source, TARGZ)
        images = TarGzContainer(path, index_targz(path, keep=keep_small, log=_log))
    elif os.path.isfile(os.path.join(source, ZIP)):
        zipc = ZipContainer(os.path.join(source, ZIP))
        loc = {**_loc_files(zipc), **loc}
        csv_places.append(zipc)
        images = _images_in_zip(zipc)
    else:
        raise ImagenetDbError(f"{source}: has Kaggle's LOC files but no images: looked for "
                              f"ILSVRC/Data/CLS-LOC/, {TARGZ} and {ZIP}")
    missing = [n for n in (KAGGLE_MAPPING, KAGGLE_VAL) if n not in loc]
    if missing:
        raise ImagenetDbError(f"{source}: no {' or '.join(missing)} (in the folder or in {ZIP}); "
                              f"Kaggle's download has both")
    top = ilsvrc2015.top_of(images)
    devkits = ilsvrc2015.container_devkits(images, top) + ilsvrc2015.beside_devkits(source)
    return open_clsloc(images, top, devkits, loc, _box_csv(loc, csv_places))
