"""Sources of records: (image bytes loader, label, key) in database order.

A ``Record`` is one line of a Caffe list: its position in the (shuffled) list gives the key
``%08d_<relpath>`` exactly as Caffe's ``convert_imageset`` forms it. The image bytes are not
read here: ``record.load()`` reads them when a worker needs them, so the list of records
stays small (no pixels are held for the list).

Sources: a Caffe list file under a root folder (``list_records``); the extracted ImageNet tree
and the raw ILSVRC2012 archives are turned into such lists by ``imagenet_db.recipes.imagenet``.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

DEFAULT_SEED = 0


def caffe_key(index: int, relpath: str) -> bytes:
    """Database key as Caffe's convert_imageset writes it: ``format_int(index, 8) + "_" + relpath``,
    UTF-8 encoded. Zero-padding makes byte order equal list order (below 10^8 entries)."""
    return b"%08d_%s" % (index, relpath.encode("utf-8"))


class FileLoader:
    """Zero-argument callable that returns the bytes of one file (raises OSError if unreadable)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def __call__(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def __repr__(self) -> str:
        return f"FileLoader({self.path!r})"


@dataclass(frozen=True)
class Record:
    """One image to convert.

    index: position in the (shuffled) list, the number in the key. relpath: the list's path,
    '/'-separated, used in the key. label: int32 class label. load: returns the image file bytes.
    """
    index: int
    relpath: str
    label: int
    load: Callable[[], bytes]

    @property
    def key(self) -> bytes:
        """The Caffe key ``%08d_<relpath>`` (UTF-8 bytes) of this record."""
        return caffe_key(self.index, self.relpath)


def shuffle_order(n: int, seed: int = DEFAULT_SEED) -> List[int]:
    """A deterministic permutation of range(n) for ``--shuffle``.

    Position i goes where the BLAKE2b-64 digest of (seed, i) sorts: the same seed gives the
    same order on every machine, Python and numpy version, and with any number of workers.
    (Caffe's own shuffle uses an unseeded RNG, so no Caffe order can be reproduced anyway.)
    """
    seed_bytes = int(seed).to_bytes(8, "little", signed=True)

    def rank(i: int) -> bytes:
        return hashlib.blake2b(seed_bytes + i.to_bytes(8, "little"), digest_size=8).digest()

    return sorted(range(n), key=rank)


def shuffled(entries: Sequence, seed: int = DEFAULT_SEED) -> list:
    """``entries`` reordered by ``shuffle_order(len(entries), seed)``."""
    return [entries[i] for i in shuffle_order(len(entries), seed)]


def list_records(root: str, entries: Sequence[Tuple[str, int]]) -> List[Record]:
    """Records for list entries [(relpath, label), ...] whose files live under ``root``;
    record i gets key number i (so shuffle ``entries`` first, as convert_imageset does)."""
    return [Record(i, relpath, label, FileLoader(os.path.join(root, relpath)))
            for i, (relpath, label) in enumerate(entries)]
