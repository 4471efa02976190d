"""An extracted ImageNet as a SOURCE (what the per-synset untar loop and valprep.sh leave):

    SOURCE/train/<wnid>/<any>.JPEG         one folder per synset (the class list)
    SOURCE/val/<wnid>/<any>.JPEG           validation in per-synset folders, or
    SOURCE/val/<name>.JPEG + SOURCE/val.txt  flat, with 'name label' lines where label is a
                                            wnid or a Caffe label (Caffe's val.txt)
    SOURCE/synset_words.txt                 optional: 'n01440764 tench, Tinca tinca' lines

Labels are Caffe's: the train wnid folders in ASCII order get 0..N-1.
"""
import os
from typing import Dict, List, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import labels as L
from imagenet_db.sources.archives.containers import FolderContainer
from imagenet_db.sources.base import Dataset, Split, check_list_name, is_image_name
from imagenet_db.text import split_lines

NAME = "tree"
LOOKS_FOR = "an extracted tree: train/<wnid>/*.JPEG and val/"


def _image_files(folder: str) -> List[str]:
    names = sorted(name for name in os.listdir(folder)
                   if is_image_name(name) and os.path.isfile(os.path.join(folder, name)))
    for name in names:
        check_list_name(name, folder)
    return names


def _wnid_folders(root: str) -> List[str]:
    return sorted(name for name in os.listdir(root)
                  if L.is_wnid(name) and os.path.isdir(os.path.join(root, name)))


def detect(source: str) -> bool:
    """True when ``source`` has a train/ folder."""
    return os.path.isdir(os.path.join(source, "train"))


def open_dataset(source: str) -> Dataset:
    """The extracted ImageNet under ``source`` (layout in the module docstring).

    Raises ImagenetDbError when train/ or its wnid folders are missing, when a flat val/ has no
    label file, or when a val label line is malformed or names an unknown synset.
    """
    train_root = os.path.join(source, "train")
    if not os.path.isdir(train_root):
        raise ImagenetDbError(f"{source}: no train/ folder (expected train/<wnid>/*.JPEG)")
    synsets = L.caffe_synsets(_wnid_folders(train_root))
    if not synsets:
        raise ImagenetDbError(f"{train_root}: no synset folders named like n01440764")
    labels = L.label_map(synsets)
    train = [(f"{wnid}/{name}", labels[wnid]) for wnid in synsets
             for name in _image_files(os.path.join(train_root, wnid))]
    splits = {"train": Split("train", train, FolderContainer(train_root).loader)}

    val_root = os.path.join(source, "val")
    if os.path.isdir(val_root):
        folders = _wnid_folders(val_root)
        if folders:
            val = [(f"{wnid}/{name}", L.parse_label_token(wnid, labels, os.path.join(val_root, wnid)))
                   for wnid in folders for name in _image_files(os.path.join(val_root, wnid))]
        else:
            val = _read_val_labels(source, labels)
        splits["val"] = Split("val", sorted(val), FolderContainer(val_root).loader)
    words = L.optional_words(os.path.join(source, "synset_words.txt"))
    return Dataset(synsets, splits, words)


def _read_val_labels(source: str, labels: Dict[str, int]) -> List[Tuple[str, int]]:
    for name in ("val.txt", os.path.join("val", "val.txt")):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            break
    else:
        raise ImagenetDbError(f"{source}: val/ is flat but there is no val.txt "
                              f"('ILSVRC2012_val_00000001.JPEG <wnid or label>' per line)")
    entries = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = split_lines(f.read(), crlf=True)  # '\n' only (imagenet_db.text)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        relpath, _, token = line.rpartition(" ")
        if not relpath:
            raise ImagenetDbError(f"{path}:{number}: expected 'file label', got {line!r}")
        entries.append((relpath, L.parse_label_token(token, labels, f"{path}:{number}")))
    return entries
