"""The ILSVRC development kits of any year, as archives beside SOURCE or extracted, reduced to
what labels need: the class table (ID -> wnid, words), the validation ground truth (one ID per
image) and the validation blacklist.

| devkit | archive (top folder) | class table | ground truth / blacklist |
| --- | --- | --- | --- |
| 2012 | ILSVRC2012_devkit_t12.tar.gz (ILSVRC2012_devkit_t12/) | data/meta.mat (ILSVRC2012_ID, words; 1,860 synsets, classes have num_children 0) | data/ILSVRC2012_validation_{ground_truth,blacklist}.txt |
| 2014 | ILSVRC2014_devkit.tgz (ILSVRC2014_devkit/) | data/meta_clsloc.mat (ILSVRC2014_ID, words; 1,860 synsets) | data/ILSVRC2014_clsloc_validation_{ground_truth,blacklist}.txt |
| 2015 | ILSVRC2015_devkit.tar.gz (ILSVRC2015/devkit/) | data/meta_clsloc.mat (ILSVRC2015_CLSLOC_ID, name; 1,000 classes) and data/map_clsloc.txt ('n02119789 1 kit_fox') | data/ILSVRC2015_clsloc_validation_{ground_truth,blacklist}.txt |

The IDs are the same in every year (1 = n02119789 kit fox); they are only mapped to wnids.
The blacklist (1,762 images whose boxes were unsatisfactory) is used only with
``--drop_val_blacklist``: the classification task keeps all 50,000 images.
"""
import os
import re
import tarfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import clsloc as P
from imagenet_db.sources.base import archive_problem, read_to_end

DEVKIT_ARCHIVE = re.compile(r"ILSVRC20[0-9]{2}_devkit(_t12)?\.(tar\.gz|tgz|tar)\Z")
DEVKIT_FOLDERS = ("ILSVRC2012_devkit_t12", "ILSVRC2014_devkit", "ILSVRC2015/devkit", "ILSVRC/devkit",
                  "devkit")
DATA_FILE = re.compile(r"(ILSVRC20[0-9]{2}(_clsloc)?_validation_(ground_truth|blacklist)\.txt|"
                       r"meta\.mat|meta_clsloc\.mat|map_clsloc\.txt)\Z")
MAX_DATA_FILE = 64 << 20


class DevkitError(ImagenetDbError):
    """A devkit is unreadable or inconsistent; the message names the file."""


@dataclass
class DevkitInfo:
    """One devkit: ``where`` (for messages), ``classes`` in ID order, ``full_words`` (False when
    the only names are map_clsloc.txt's short ones), the ground truth (ID of image n at n-1)
    and the blacklisted image numbers (None when the file is absent)."""
    where: str
    classes: List[P.ClassEntry]
    full_words: bool
    truth: Optional[List[int]] = None
    truth_where: str = ""
    blacklist: Optional[Set[int]] = None
    blacklist_where: str = ""

    def id_to_wnid(self) -> Dict[int, str]:
        """ID -> wnid of the classes."""
        return {e.ident: e.wnid for e in self.classes}

    def words(self) -> Dict[str, str]:
        """wnid -> words (or short name, see ``full_words``)."""
        return {e.wnid: e.words for e in self.classes}


def read_devkit_files(files: Dict[str, bytes], where: Callable[[str], str], label: str) -> DevkitInfo:
    """A DevkitInfo from the devkit's data files {base name: bytes}; ``where(base)`` names a
    file in messages, ``label`` the devkit. Raises DevkitError when no class table is there,
    when two tables of the devkit disagree, or when a ground-truth ID is not a class;
    ClslocError for malformed files."""
    tables = []
    for base in ("meta_clsloc.mat", "meta.mat", "map_clsloc.txt"):
        if base in files:
            parse = P.parse_map_clsloc if base.endswith(".txt") else P.parse_meta_clsloc
            tables.append((base, parse(files[base], where(base))))
    if not tables:
        raise DevkitError(f"{label}: no class table (looked for data/meta.mat, data/meta_clsloc.mat, "
                          f"data/map_clsloc.txt)")
    base, classes = tables[0]
    ids = {e.ident: e.wnid for e in classes}
    for other_base, other in tables[1:]:
        other_ids = {e.ident: e.wnid for e in other}
        diff = sorted(i for i in set(ids) | set(other_ids) if ids.get(i) != other_ids.get(i))
        if diff:
            raise DevkitError(f"{label}: {base} and {other_base} disagree on ID {diff[0]} "
                              f"({ids.get(diff[0])} vs {other_ids.get(diff[0])})")
    info = DevkitInfo(label, classes, base != "map_clsloc.txt")
    for name, data in sorted(files.items()):
        if name.endswith("_ground_truth.txt"):
            info.truth = P.parse_number_list(data, where(name), "a class ID")
            info.truth_where = where(name)
            for line, ident in enumerate(info.truth, start=1):
                if ident not in ids:
                    raise DevkitError(f"{where(name)}:{line}: ID {ident} is not one of the "
                                      f"{len(ids)} classes in {base}")
        elif name.endswith("_blacklist.txt"):
            info.blacklist = set(P.parse_number_list(data, where(name)))
            info.blacklist_where = where(name)
    return info


def read_devkit_archive(path: str) -> DevkitInfo:
    """Read a devkit archive (.tar.gz/.tgz/.tar) without extracting it: the files of
    DATA_FILE under a ``data/`` folder. Raises DevkitError naming the file when it cannot be
    read or a file occurs twice."""
    files: Dict[str, bytes] = {}
    names: Dict[str, str] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if not (info.isfile() and "/data/" in f"/{info.name}" and DATA_FILE.match(base)
                        and info.size <= MAX_DATA_FILE):
                    continue
                if base in files:
                    raise DevkitError(f"{path}: {base} occurs twice ({names[base]}, {info.name})")
                files[base] = tar.extractfile(info).read()
                names[base] = info.name
            read_to_end(tar)  # checks a .tar.gz's CRC-32 over all of it
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DevkitError(f"{path}: cannot read the devkit archive: {archive_problem(path, exc)}") \
            from None
    return read_devkit_files(files, lambda base: f"{path}:{names[base]}", path)


def read_devkit_folder(folder: str) -> DevkitInfo:
    """Read an extracted devkit (``folder/data/*``)."""
    data = os.path.join(folder, "data")
    files = {}
    for base in sorted(os.listdir(data)):
        path = os.path.join(data, base)
        if DATA_FILE.match(base) and os.path.isfile(path):
            with open(path, "rb") as f:
                files[base] = f.read()
    return read_devkit_files(files, lambda base: os.path.join(data, base), folder)


def find_devkits(folder: str) -> List[str]:
    """Devkit archives and extracted devkit folders directly in ``folder`` (see DEVKIT_FOLDERS),
    newest year first. Extracted ones are recognised by a ``data/`` folder with a class table."""
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if DEVKIT_ARCHIVE.match(name) and os.path.isfile(os.path.join(folder, name)):
            found.append(os.path.join(folder, name))
    for sub in DEVKIT_FOLDERS:
        data = os.path.join(folder, *sub.split("/"), "data")
        if any(os.path.isfile(os.path.join(data, t)) for t in ("meta.mat", "meta_clsloc.mat",
                                                               "map_clsloc.txt")):
            found.append(os.path.join(folder, *sub.split("/")))
    return sorted(found, key=lambda p: (-_year(p), p))


def _year(path: str) -> int:
    m = re.search(r"ILSVRC(20[0-9]{2})", path)
    return int(m.group(1)) if m else 0


def read_devkit(path: str) -> DevkitInfo:
    """A devkit archive or extracted devkit folder (see find_devkits)."""
    return read_devkit_folder(path) if os.path.isdir(path) else read_devkit_archive(path)


def best_words(devkits: List[DevkitInfo]) -> Optional[DevkitInfo]:
    """The first devkit with full words, else the first one (short names), else None."""
    for d in devkits:
        if d.full_words:
            return d
    return devkits[0] if devkits else None


def check_same_truth(devkits: List[DevkitInfo]) -> None:
    """Devkits that all have a ground truth must agree on it (as wnids). Raises DevkitError
    naming both files and the first differing image."""
    with_truth = [d for d in devkits if d.truth is not None]
    for other in with_truth[1:]:
        a, b = with_truth[0], other
        wa, wb = a.id_to_wnid(), b.id_to_wnid()
        if len(a.truth) != len(b.truth):
            raise DevkitError(f"{a.truth_where} has {len(a.truth)} lines but {b.truth_where} has "
                              f"{len(b.truth)}")
        for n, (x, y) in enumerate(zip(a.truth, b.truth), start=1):
            if wa[x] != wb[y]:
                raise DevkitError(f"ILSVRC2012_val_{n:08d}.JPEG: {a.truth_where}:{n} says {wa[x]} "
                                  f"but {b.truth_where}:{n} says {wb[y]}")
