"""Synsets and Caffe labels.

Caffe's ILSVRC2012 labels are the positions of the 1,000 wnids sorted in ASCII order
(``synsets.txt`` of Caffe's ``get_ilsvrc_aux.sh``): n01440764 (tench) = 0, n01751748 (sea snake)
= 65. The devkit's ILSVRC2012_ID numbering (1..1000, ``meta.mat``) is a different order and is
only ever mapped to wnids, never used as a label.
"""
import os
from typing import Dict, Iterable, List, Mapping, Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.text import WNID, check_one_line, is_ascii_number, split_lines


def is_wnid(text: str) -> bool:
    """True for a WordNet id such as 'n01440764' (an 'n' and eight ASCII digits, nothing after)."""
    return bool(WNID.match(text))


def caffe_synsets(wnids: Iterable[str]) -> List[str]:
    """The wnids in Caffe label order: unique, sorted by ASCII (label = list position)."""
    return sorted(set(wnids))


def label_map(synsets: List[str]) -> Dict[str, int]:
    """wnid -> Caffe label for a synsets list already in label order."""
    return {wnid: label for label, wnid in enumerate(synsets)}


def synsets_text(synsets: List[str]) -> str:
    """The text of ``synsets.txt``: one wnid per line, line i (0-based) = Caffe label i.
    Raises ImagenetDbError for a value that is not one line (``text.check_one_line``)."""
    return "".join(f"{check_one_line(wnid, 'synsets.txt')}\n" for wnid in synsets)


def synset_words_text(synsets: List[str], words: Mapping[str, str]) -> str:
    """The text of ``synset_words.txt``: 'n01440764 tench, Tinca tinca' per line, in label
    order. Raises ImagenetDbError when a wnid has no words, or words that are not one line
    (a line break would give every later class its neighbour's words)."""
    missing = [w for w in synsets if w not in words]
    if missing:
        raise ImagenetDbError(f"no words (class names) known for synset(s) {', '.join(missing[:5])}")
    return "".join(f"{check_one_line(f'{wnid} {words[wnid]}', f'synset_words.txt: {wnid}')}\n"
                   for wnid in synsets)


def read_synsets(path: str) -> List[str]:
    """Read a synsets.txt (first token of each non-blank line; synset_words.txt works too).
    Raises ImagenetDbError naming the file and line for a token that is not a wnid. Lines
    end at '\\n' only (``text.split_lines``)."""
    synsets = []
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(split_lines(f.read(), crlf=True), start=1):
            if not line.strip():
                continue
            wnid = line.split()[0]
            if not is_wnid(wnid):
                raise ImagenetDbError(f"{path}:{number}: {wnid!r} is not a wnid")
            synsets.append(wnid)
    return synsets


def parse_label_token(token: str, labels: Mapping[str, int], where: str) -> int:
    """A label given either as a wnid (mapped through ``labels``) or as a Caffe label integer
    (checked to be in range). Raises ImagenetDbError naming ``where`` otherwise."""
    if is_wnid(token):
        if token not in labels:
            raise ImagenetDbError(f"{where}: synset {token} has no train folder")
        return labels[token]
    if not is_ascii_number(token):  # not int(): it takes "+7", "1_000", other digits
        raise ImagenetDbError(f"{where}: {token!r} is neither a wnid nor an integer label")
    label = int(token)
    if not 0 <= label < len(labels):
        raise ImagenetDbError(f"{where}: label {label} is outside 0..{len(labels) - 1}")
    return label


def optional_words(path: Optional[str]) -> Dict[str, str]:
    """wnid -> words from a synset_words.txt ('wnid words...' per line); {} if path is None
    or missing. Raises ImagenetDbError naming file and line for words holding a control
    character (lines end at '\\n' only, see ``imagenet_db.text``)."""
    words: Dict[str, str] = {}
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8", newline="") as f:
            lines = split_lines(f.read(), crlf=True)
        for number, line in enumerate(lines, start=1):
            parts = line.split(" ", 1)
            if len(parts) == 2 and is_wnid(parts[0]):
                words[parts[0]] = check_one_line(parts[1], f"{path}:{number}")
    return words


ILSVRC2012_CLASSES = os.path.join(os.path.dirname(__file__), "ilsvrc2012_classes.tsv")


def ilsvrc2012_ids() -> Dict[str, int]:
    """wnid -> ILSVRC2012_ID of the 1,000 ILSVRC2012 classes (the devkit's meta.mat, shipped
    as ``ilsvrc2012_classes.tsv``: 1 = n02119789 kit fox)."""
    ids = {}
    with open(ILSVRC2012_CLASSES, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                ident, wnid, _ = line.rstrip("\n").split("\t", 2)
                ids[wnid] = int(ident)
    return ids


def devkit_synsets(synsets: Iterable[str]) -> List[str]:
    """The wnids in the ILSVRC2012 devkit's ILSVRC2012_ID order (label = list position), as
    cuda-convnet2's make-data labels them: ILSVRC2012_ID - 1 with all 1,000 classes (kit fox
    n02119789 = 0); with fewer, the rank of the ID among the classes present. The IDs are the
    2012 devkit's meta.mat (shipped as ``ilsvrc2012_classes.tsv``; the 2014/2015 CLS-LOC
    devkits number the classes differently). Raises ImagenetDbError naming the first (ASCII
    order) wnid that is not an ILSVRC2012 class, e.g. of the whole ImageNet."""
    ids = ilsvrc2012_ids()
    missing = [w for w in synsets if w not in ids]
    if missing:
        raise ImagenetDbError(f"synset {missing[0]} is not one of ILSVRC2012's 1,000 classes "
                              f"({len(missing):,} such synset(s)): the devkit order "
                              f"(ILSVRC2012_ID) labels those classes only")
    return sorted(set(synsets), key=lambda w: ids[w])
