"""The whole ImageNet extracted one level, as a SOURCE: a folder of synset tars and/or synset
folders (``tar xf fall11_whole.tar``, a ``winter21_whole/`` folder, or per-synset downloads):

    SOURCE/n00004475.tar      a synset tar (nXXXXXXXX_N.JPEG inside), read in place, and/or
    SOURCE/n00005787/         a synset folder of images (MIIL's extracted layout)
    SOURCE/words.txt          optional: ImageNet's 'wnid<TAB>gloss' table

Recognised when SOURCE has no train/ folder (that is the extracted ILSVRC ``tree``) and holds
at least one ``nXXXXXXXX.tar`` file or ``nXXXXXXXX/`` folder. A synset given twice (as a tar
and as a folder) is an error naming both. Each synset tar's headers are indexed when the
SOURCE is opened (not cached: ~20 us a member, ~5 minutes for fall11's 14.2M) and its images
read by offset, the tar opened for each read (``ReopeningTarReader``: 21,841 open files would
pass the process's limit). Labels, relpaths, skips and words: ``wholeimagenet``.
"""
import os
from typing import Dict, List

from imagenet_db.sources import labels as L
from imagenet_db.sources.archives.containers import LoadersContainer
from imagenet_db.sources.archives.tarindex import (MemberLoader, ReopeningTarReader,
                                                   index_tar)
from imagenet_db.sources.base import Dataset, FileLoader
from imagenet_db.sources import wholeimagenet as W

NAME = "synset-tars"
LOOKS_FOR = ("the whole ImageNet extracted: nXXXXXXXX.tar files and/or nXXXXXXXX/ folders of "
             "images (no train/ folder)")


def _synsets(source: str) -> Dict[str, List[os.DirEntry]]:
    """{wnid: [its tar and/or folder entries]} of ``source``."""
    found: Dict[str, List[os.DirEntry]] = {}
    try:
        entries = list(os.scandir(source))
    except OSError:
        return {}
    for entry in entries:
        stem = entry.name[:-4] if entry.name.endswith(".tar") else entry.name
        if stem.isascii() and L.is_wnid(stem) and (entry.is_dir() if stem == entry.name
                                                   else entry.is_file()):
            found.setdefault(stem, []).append(entry)
    return found


def detect(source: str) -> bool:
    """True when ``source`` has no train/ folder and holds a synset tar or folder."""
    return not os.path.isdir(os.path.join(source, "train")) and bool(_synsets(source))


def _tar_files(path: str, skipped: W.Skipped) -> list:
    reader = None
    members = index_tar(path, cache=False) if os.path.getsize(path) else []
    files = []
    for m in members:
        reader = reader or ReopeningTarReader(path)
        files.append((m.name, m.size, MemberLoader(reader, m.offset, m.size)))
    return W.synset_files(files, path, skipped)


def _folder_files(path: str, skipped: W.Skipped) -> list:
    files = []
    for entry in os.scandir(path):
        if entry.is_file():
            files.append((entry.name, entry.stat().st_size, FileLoader(entry.path)))
        else:
            skipped.not_images.append(f"{entry.path} (not a regular file)")
    return W.synset_files(files, path, skipped)


def open_dataset(source: str) -> Dataset:
    """The synset tars and folders in ``source`` (see module docstring). Raises
    WholeImagenetError for a synset there twice or a member outside its synset, and
    TarIndexError naming a synset tar that is not a whole tar."""
    skipped = W.Skipped()
    groups = {}
    for wnid, entries in sorted(_synsets(source).items()):
        if len(entries) > 1:
            raise W.WholeImagenetError(f"{source}: synset {wnid} is there twice, as {wnid}.tar "
                                       f"and as the folder {wnid}/; keep one")
        entry = entries[0]
        read = _folder_files if entry.is_dir() else _tar_files
        groups[wnid] = read(entry.path, skipped)
    return W.whole_dataset(groups, lambda loaders: LoadersContainer(source, loaders), source,
                           skipped)
