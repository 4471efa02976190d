"""A finished WebDataset or TFRecord output read by position, as ``DatumDB`` reads a database
(for ``imagenet-db show``'s contact sheet).

``ShardDB(path)`` takes the shards in the order of the completion record (``imagenet_db.json``:
train shards then val) and finds each sample through the shard's DALI index file (wds2idx:
the ``.jpg`` and ``.cls`` members' offsets; tfrecord2idx: each record's offset and length),
so opening reads no image. ``db[i]`` is ``(image, label)``: the sample's JPEG decoded by
OpenCV to (H, W, 3) uint8 BGR, and the label as a position in ``synsets.txt`` (the stored label
minus the output's ``label_base``: TFRecord's 1-based labels come back 0-based). ``db.key(i)``:
the sample's key (file stem) as bytes; ``db.labels()``: every label, an int64 array. Raises
ImagenetDbError naming the file for a missing or unreadable shard, index or record.
"""
import os
import struct
from typing import List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from imagenet_db.engine import buildstate as B
from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs import OUTPUTS
from imagenet_db.outputs.example_proto import parse_example
from imagenet_db.readers.datumreader import DatumDB


class _Entry(NamedTuple):
    shard: str      # file path
    offset: int     # of the JPEG member (tar) or of the record (TFRecord)
    size: int
    key: bytes
    label_at: Tuple[int, int]  # (offset, size) of the .cls member; (0, 0) for TFRecord


def is_shard_output(path: str) -> bool:
    """True when ``path`` is a finished output whose completion record lists shards."""
    manifest = B.read_manifest(path) if os.path.isdir(path) else None
    return bool(manifest and manifest.get("shards") is not None)


def _wds_entries(shard: str, index: str) -> List[_Entry]:
    entries = []
    with open(index, encoding="ascii") as f:
        lines = f.read().splitlines()[1:]
    for line in lines:
        fields = line.split()
        members = {fields[i]: (int(fields[i + 1]), int(fields[i + 2]), fields[i + 3])
                   for i in range(0, len(fields), 4)}
        offset, size, name = members["jpg"]
        cls = members["cls"]
        entries.append(_Entry(shard, offset, size, name.split(".", 1)[0].encode("ascii"),
                              (cls[0], cls[1])))
    return entries


def _tf_entries(shard: str, index: str) -> List[_Entry]:
    with open(index, encoding="ascii") as f:
        rows = [line.split() for line in f.read().splitlines()]
    return [_Entry(shard, int(offset), int(size), b"", (0, 0)) for offset, size in rows]


# a ShardFormat's shard_reader -> the reader of its DALI index files
INDEX_READERS = {"tar": _wds_entries, "tfrecord": _tf_entries}


class ShardDB:
    """Samples of a finished sharded output by position (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        manifest = B.read_manifest(path) if os.path.isdir(path) else None
        if not manifest or manifest.get("shards") is None:
            raise ImagenetDbError(f"{path}: not a finished webdataset/tfrecord output")
        self.label_base = int(manifest.get("label_base", 0))
        self.entries: List[_Entry] = []
        kind = getattr(OUTPUTS.get(manifest.get("format")), "shard_reader", None)
        if kind not in INDEX_READERS:
            raise ImagenetDbError(f"{path}: its completion record names format "
                                  f"{manifest.get('format')!r}, not a sharded format")
        read = INDEX_READERS[kind]
        for shard in manifest["shards"]:
            index = os.path.join(path, shard.get("index") or "")
            try:
                self.entries += read(os.path.join(path, shard["name"]), index)
            except (OSError, ValueError, KeyError, IndexError) as exc:
                raise ImagenetDbError(f"{index}: cannot read the index: "
                                      f"{getattr(exc, 'strerror', None) or exc}") from None

    def __enter__(self) -> "ShardDB":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, shard: str, offset: int, size: int) -> bytes:
        try:
            with open(shard, "rb") as f:
                f.seek(offset)
                data = f.read(size)
        except OSError as exc:
            raise ImagenetDbError(f"{shard}: {exc.strerror or exc}") from None
        if len(data) != size:
            raise ImagenetDbError(f"{shard}: ends before byte {offset + size}")
        return data

    def sample(self, index: int) -> Tuple[bytes, int, bytes]:
        """(JPEG bytes, label as the format stores it, key) of sample ``index``, undecoded;
        ImagenetDbError naming the shard when it cannot be read."""
        jpeg, label, key = self._sample(index)
        return jpeg, label - self.label_base, key

    def _sample(self, index: int) -> Tuple[bytes, int, bytes]:
        """(JPEG bytes, label as stored, key) of sample ``index``."""
        entry = self.entries[index]
        if entry.label_at != (0, 0):
            label = self._read(entry.shard, *entry.label_at)
            return self._read(entry.shard, entry.offset, entry.size), int(label), entry.key
        record = self._read(entry.shard, entry.offset, entry.size)
        (length,) = struct.unpack("<Q", record[:8])
        try:
            features = parse_example(record[12:12 + length])
            name = features["image/filename"][0]
            return (features["image/encoded"][0], int(features["image/class/label"][0]),
                    os.path.splitext(name)[0])
        except Exception:  # noqa: BLE001 (any parse failure is a damaged record)
            raise ImagenetDbError(f"{entry.shard}: record at byte {entry.offset} is not a "
                                  f"tf.train.Example") from None

    def __getitem__(self, index: int) -> Tuple[np.ndarray, int]:
        jpeg, label, _ = self._sample(index)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ImagenetDbError(f"{self.entries[index].shard}: sample {index} does not decode")
        return image, label - self.label_base

    def key(self, index: int) -> bytes:
        """The sample's key (file stem)."""
        entry = self.entries[index]
        return entry.key or self._sample(index)[2]

    def labels(self) -> np.ndarray:
        """Every sample's label (module docstring), int64, in position order."""
        return np.array([(int(self._read(e.shard, *e.label_at)) if e.label_at != (0, 0)
                          else self._sample(i)[1]) - self.label_base
                         for i, e in enumerate(self.entries)], np.int64)


def open_db(path: str, backend: Optional[str] = None):
    """A ShardDB for a sharded output, else ``datumreader.DatumDB(path, backend)``."""
    if is_shard_output(path):
        return ShardDB(path)
    return DatumDB(path, backend)
