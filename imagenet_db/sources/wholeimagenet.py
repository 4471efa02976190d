"""What the whole-ImageNet distributions share (``fall11``, ``winter21``, ``synset_tars``): from
per-synset groups of image files to a ``Dataset`` with Caffe's labels, and the synsets' words.

Each distribution lists, per synset, the files of its synset tar (or folder) as
``(name, size in bytes, handle)``; ``whole_dataset`` then applies the rules they share:

* a name must be a plain file name: a member with a path (``../x.JPEG``, ``n02/x.JPEG``,
  ``/x.JPEG``) lies outside its synset and is an error naming the file and the member, as is
  a name that occurs twice in one synset;
* a member whose name is not an image (``base.is_image_name``: .JPEG, .jpg, .png, ...) and a
  0-byte member are left out, counted, and reported in one note each (with the first one);
  an image that cannot be decoded is skipped by the build (``DB.skipped.tsv``), as always;
* labels: the synsets with at least one image, in ASCII order, get 0..N-1 (Caffe's rule, as
  for an extracted tree); an empty synset tar (fall11 has some) gets no label, counted in a
  note. Relpaths are Caffe's ``<wnid>/<file name>``. The whole ImageNet has no validation
  split: the dataset holds ``train`` only (``sources.selection`` makes one).

Words: ImageNet's ``words.txt`` (``wnid<TAB>gloss`` per line, 82,115 lines) beside the
archive when present, else the shipped ``imagenet21k_words.tsv`` (timm's synset-to-lemma table,
source in its header). When a synset has no words, no synset_words.txt is written (a note).
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import labels as L
from imagenet_db.sources.archives.containers import Container
from imagenet_db.sources.base import Dataset, Split, check_list_name, is_image_name

WORDS_TXT = "words.txt"
SHIPPED_WORDS = os.path.join(os.path.dirname(__file__), "imagenet21k_words.tsv")
# (file name, size in bytes, what the container reads it by)
File = Tuple[str, int, object]


class WholeImagenetError(ImagenetDbError):
    """A whole-ImageNet SOURCE that cannot be read as such; the message names file and member."""


@dataclass
class Skipped:
    """What the index left out, counted (reported as notes): members that are not images,
    0-byte members, synsets without images; each with its first example."""
    not_images: List[str] = field(default_factory=list)
    empty_files: List[str] = field(default_factory=list)
    empty_synsets: List[str] = field(default_factory=list)

    def notes(self) -> List[str]:
        """One line per kind of skip that happened."""
        out = []
        for items, what in ((self.not_images, "members that are not images (by name)"),
                            (self.empty_files, "empty (0-byte) members")):
            if items:
                out.append(f"left out {len(items):,} {what}, e.g. {items[0]}")
        if self.empty_synsets:
            out.append(f"{len(self.empty_synsets):,} synset(s) hold no images and get no label, "
                       f"e.g. {self.empty_synsets[0]}")
        return out


def synset_of(name: str, suffix: str, where: str) -> str:
    """The wnid of a synset tar or folder named ``name`` (``n00004475`` + ``suffix``, e.g.
    '.tar'). Raises WholeImagenetError naming ``where`` and the name otherwise."""
    wnid = name[:-len(suffix)] if suffix and name.endswith(suffix) else name
    if not (wnid.isascii() and L.is_wnid(wnid)) or (suffix and not name.endswith(suffix)):
        raise WholeImagenetError(f"{where}: member {name!r} is not a synset tar named like "
                                 f"n00004475{suffix}")
    return wnid


def _plain_name(name: str, where: str) -> str:
    clean = name[2:] if name.startswith("./") else name
    if not clean or "/" in clean or clean in (".", ".."):
        raise WholeImagenetError(f"{where}: member {name!r} lies outside its synset (a path, "
                                 f"not a plain file name); the synset tar is damaged or not "
                                 f"ImageNet's")
    check_list_name(clean, f"{where}: member")
    return clean


def synset_files(files: Iterable[File], where: str, skipped: Skipped) -> List[File]:
    """The image files of one synset, sorted by name (ASCII/byte order), the others counted
    in ``skipped``. ``where`` names the synset tar or folder. Raises WholeImagenetError for a
    member outside the synset or a name that occurs twice."""
    kept: Dict[str, File] = {}
    for name, size, handle in files:
        clean = _plain_name(name, where)
        if clean in kept:
            raise WholeImagenetError(f"{where}: member {clean} occurs twice")
        if not is_image_name(clean):
            skipped.not_images.append(f"{where}: {clean}")
        elif size == 0:
            skipped.empty_files.append(f"{where}: {clean}")
        else:
            kept[clean] = (clean, size, handle)
    return [kept[name] for name in sorted(kept)]


def whole_dataset(groups: Dict[str, List[File]], container: Callable[[Dict[str, object]], Container],
                  words_folder: str, skipped: Skipped) -> Dataset:
    """The Dataset of per-synset image files ``groups`` ({wnid: files from synset_files}):
    labels for the synsets with images (ASCII order), one ``train`` split whose loader is
    ``container({relpath: handle})``'s, words (``synset_words``) from ``words_folder``, the
    skips as notes. Raises WholeImagenetError when no synset holds an image."""
    skipped.empty_synsets.extend(sorted(w for w, files in groups.items() if not files))
    synsets = L.caffe_synsets(w for w, files in groups.items() if files)
    if not synsets:
        raise WholeImagenetError(f"{words_folder}: no synset holds an image")
    members: Dict[str, object] = {}
    entries = []
    for label, wnid in enumerate(synsets):
        for name, _, handle in groups[wnid]:
            relpath = f"{wnid}/{name}"
            members[relpath] = handle
            entries.append((relpath, label))
    notes = skipped.notes()
    words = synset_words(words_folder, synsets, notes)
    return Dataset(synsets, {"train": Split("train", entries, container(members).loader)},
                   words, notes)


def read_words_txt(path: str) -> Dict[str, str]:
    """ImageNet's ``words.txt``: {wnid: gloss} from 'n00004475<TAB>organism, being' lines
    (the shipped table has the same layout after its '#' comment lines). Blank lines are
    skipped. Raises WholeImagenetError naming path:line for a line without a tab, a first
    field that is not an ASCII wnid, or text that is not UTF-8."""
    words: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                wnid, tab, gloss = line.partition("\t")
                if not tab or not (wnid.isascii() and L.is_wnid(wnid)):
                    raise WholeImagenetError(f"{path}:{number}: expected 'n00004475<TAB>words', "
                                             f"got {line[:60]!r}")
                words[wnid] = gloss.strip()
    except UnicodeDecodeError as exc:
        raise WholeImagenetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise WholeImagenetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return words


def synset_words(folder: str, synsets: List[str], notes: List[str]) -> Dict[str, str]:
    """Words of ``synsets``: from ``folder``/words.txt when present, else the shipped table.
    {} (and a note) when any synset has none: synset_words.txt is then not written."""
    path = os.path.join(folder, WORDS_TXT)
    table = read_words_txt(path if os.path.isfile(path) else SHIPPED_WORDS)
    missing = [w for w in synsets if w not in table]
    if missing:
        where = path if os.path.isfile(path) else "the shipped imagenet21k_words.tsv"
        notes.append(f"no words for {len(missing):,} synset(s) in {where} (e.g. {missing[0]}): "
                     f"synset_words.txt is not written")
        return {}
    return {w: table[w] for w in synsets}


def one_archive(source: str, name: str) -> Optional[str]:
    """``source``/``name`` when it exists (None when not); WholeImagenetError when it is
    there but not a regular file."""
    path = os.path.join(source, name)
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        raise WholeImagenetError(f"{path}: not a regular file")
    return path
