"""ILSVRC2015 (and ILSVRC2017) CLS-LOC as a SOURCE: the .tar.gz read in place, or extracted.

The "ILSVRC 2015 CLS-LOC dataset" download (what academic-torrents / PyImageSearch-style
guides use) and its devkit::

    ILSVRC2015_CLS-LOC.tar.gz   (~155 GB) ILSVRC2015/Data/CLS-LOC/{train/<wnid>/<wnid>_<n>.JPEG,
                                val/ILSVRC2012_val_%08d.JPEG, test/}, ILSVRC2015/Annotations/
                                CLS-LOC/{train,val}/*.xml, ILSVRC2015/ImageSets/CLS-LOC/*.txt
    ILSVRC2015_devkit.tar.gz    ILSVRC2015/devkit/data/{map_clsloc.txt, meta_clsloc.mat,
                                ILSVRC2015_clsloc_validation_ground_truth.txt, ..._blacklist.txt}

``ILSVRC2017_CLS-LOC.tar.gz`` (top folder ``ILSVRC/``) is read the same way. SOURCE is the
folder holding the .tar.gz (and optionally a devkit of any year: ILSVRC2015_devkit.tar.gz,
ILSVRC2014_devkit.tgz, ILSVRC2012_devkit_t12.tar.gz, archived or extracted), or the extracted
data: the folder holding ``ILSVRC2015/``, ``ILSVRC2015/`` itself, or its ``Data/CLS-LOC/``.

The .tar.gz is never extracted: one indexing pass (cached) then gzip random access per image
(``gzindex``). Validation labels come from the XML annotations and from every devkit's ground
truth present; they must agree (``clsloc_layout``). Without a devkit, synset_words.txt is not
written (the XMLs carry no words); a devkit's meta_clsloc.mat gives the full words.
"""
import os
from typing import List, Optional, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import devkits as D
from imagenet_db.sources.base import Dataset
from imagenet_db.sources.clsloc_layout import keep_small, open_clsloc
from imagenet_db.sources.archives.containers import Container, FolderContainer, TarGzContainer
from imagenet_db.sources.archives.gzindex import index_targz

NAME = "ilsvrc2015"
ARCHIVES = ("ILSVRC2015_CLS-LOC.tar.gz", "ILSVRC2017_CLS-LOC.tar.gz")
TOPS = ("ILSVRC2015/", "ILSVRC/")
LOOKS_FOR = ("ILSVRC2015 CLS-LOC: ILSVRC2015_CLS-LOC.tar.gz (or ILSVRC2017_CLS-LOC.tar.gz), or "
             "extracted ILSVRC2015/Data/CLS-LOC/{train,val}/ (SOURCE = the folder holding "
             "ILSVRC2015/, ILSVRC2015/ itself, or its Data/CLS-LOC/)")


def _is_data_cls_loc(source: str) -> bool:
    parts = os.path.normpath(os.path.abspath(source)).split(os.sep)
    return (parts[-2:] == ["Data", "CLS-LOC"] and os.path.isdir(os.path.join(source, "train"))
            and not any(len(n) == 9 and n.startswith("n") and os.path.isdir(os.path.join(source, "val", n))
                        for n in _listdir(os.path.join(source, "val"))[:2000]))


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def locate(source: str) -> Optional[Tuple[str, str, str]]:
    """(kind 'targz' or 'folder', path, top) of the CLS-LOC data in ``source``, or None."""
    for name in ARCHIVES:
        path = os.path.join(source, name)
        if os.path.isfile(path):
            return "targz", path, ""
    for top in TOPS:
        if os.path.isdir(os.path.join(source, top, "Data", "CLS-LOC", "train")):
            return "folder", source, top
    if os.path.isdir(os.path.join(source, "Data", "CLS-LOC", "train")):
        return "folder", source, ""
    if _is_data_cls_loc(source):
        return "folder", os.path.dirname(os.path.dirname(os.path.abspath(source))), ""
    return None


def detect(source: str) -> bool:
    """True when ``source`` holds the CLS-LOC .tar.gz or the extracted CLS-LOC folders."""
    return locate(source) is not None


def top_of(container: Container) -> str:
    """The top folder ('ILSVRC2015/', 'ILSVRC/' or '') under which Data/CLS-LOC/ lies."""
    for top in TOPS + ("",):
        if container.dirs(f"{top}Data/CLS-LOC/"):
            return top
    raise ImagenetDbError(f"{container.path}: no Data/CLS-LOC/ folder (looked under "
                          f"{', '.join(TOPS)} and at the top)")


def container_devkits(container: Container, top: str) -> List[D.DevkitInfo]:
    """A devkit inside the container (``<top>devkit/data/``), as a list of 0 or 1."""
    prefix = f"{top}devkit/data/"
    files = {n.rsplit("/", 1)[1]: n for n in container.files(prefix)
             if D.DATA_FILE.match(n.rsplit("/", 1)[1])}
    if not files:
        return []
    data = {base: container.read(name) for base, name in files.items()}
    return [D.read_devkit_files(data, lambda base: container.where(files[base]),
                                container.where(f"{top}devkit"))]


def beside_devkits(*folders: str) -> List[D.DevkitInfo]:
    """The devkits (archives or extracted) directly in any of ``folders``."""
    seen, found = set(), []
    for folder in folders:
        for path in D.find_devkits(folder):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(D.read_devkit(path))
    return found


def open_container(kind: str, path: str) -> Container:
    """The container of ``locate``'s result (a .tar.gz is indexed, or its cached index loaded)."""
    if kind == "folder":
        return FolderContainer(path)
    import sys

    index = index_targz(path, keep=keep_small, log=lambda text: print(text, file=sys.stderr))
    return TarGzContainer(path, index)


def open_dataset(source: str) -> Dataset:
    """The Dataset of the CLS-LOC data in ``source`` (see module docstring). Raises
    ImagenetDbError subclasses naming the files (clsloc_layout.open_clsloc, gzindex)."""
    found = locate(source)
    if found is None:
        raise ImagenetDbError(f"{source}: no {LOOKS_FOR}")
    kind, path, top = found
    container = open_container(kind, path)
    if kind == "targz":
        top = top_of(container)
    folders = [source] if kind == "targz" else [path, os.path.join(path, top) if top else path,
                                                 os.path.abspath(source)]
    devkits = container_devkits(container, top) + beside_devkits(*folders)
    return open_clsloc(container, top, devkits, {})
