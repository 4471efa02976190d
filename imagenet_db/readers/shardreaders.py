"""Reading WebDataset and TFRecord shards back, every byte checked (for ``imagenet-db verify``).

``read_wds_shard(path)`` and ``read_tfrecord_shard(path)`` return ``(samples, index_text)``:
the samples as ``ShardSample(key, label, jpeg)`` (the label as stored) and the DALI index the
shard's bytes call for (wds2idx / tfrecord2idx format), to compare with the index file. They
raise ``ShardDamaged`` (one line: where and why) for bad framing: a tar header checksum, a
member cut short, members not grouped by key and sorted by extension, a ``.cls`` that is not
ASCII decimal or disagrees with the ``.json``; a TFRecord length or data CRC-32C that does
not match, a record cut short, an Example that does not parse or lacks a feature.

``verify_shards`` checks a finished output against its completion record (``imagenet_db.json``:
the list of shards with count, SHA-256 and size): every shard present with its SHA-256, no
shard file it does not list, the framing above, counts, labels in range, each JPEG decodes
(OpenCV), and each index file equal to the one the shard calls for. Problems go to the report
one line each, naming the file.
"""
import json
import os
import re
import struct
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from imagenet_db.outputs.tar_ustar import TarDamaged, read_members
from imagenet_db.outputs.tfrecordio import masked_crc


class ShardDamaged(ValueError):
    """A shard whose bytes are not what its format says; the text says where and why."""


class ShardSample(NamedTuple):
    """One sample read from a shard: key, label (as stored), JPEG bytes."""
    key: str
    label: int
    jpeg: bytes


WDS_EXTENSIONS = ("cls", "jpg", "json")


def _wds_sample(data: bytes, group: list) -> Tuple[ShardSample, str]:
    key = group[0].name.split(".", 1)[0]
    extensions = [m.name.split(".", 1)[1] for m in group]
    if tuple(extensions) != WDS_EXTENSIONS:
        raise ShardDamaged(f"sample {key}: members {', '.join(m.name for m in group)}, expected "
                           f"{', '.join(key + '.' + e for e in WDS_EXTENSIONS)}")
    cls, jpg, meta = (bytes(data[m.offset:m.offset + m.size]) for m in group)
    if not cls.isdigit():
        raise ShardDamaged(f"{key}.cls: {cls[:20]!r} is not an ASCII decimal label")
    try:
        label_in_json = json.loads(meta.decode("utf-8"))["label"]
    except (ValueError, KeyError, TypeError):
        raise ShardDamaged(f"{key}.json: not a JSON object with a label") from None
    if label_in_json != int(cls):
        raise ShardDamaged(f"sample {key}: label {int(cls)} in .cls, {label_in_json} in .json")
    line = " ".join(f"{m.name.split('.', 1)[1]} {m.offset} {m.size} {m.name}" for m in group)
    return ShardSample(key, int(cls), jpg), line + "\n"


def read_wds_shard(path: str) -> Tuple[List[ShardSample], str]:
    """(samples, wds2idx index text) of a WebDataset tar (see the module docstring)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        members = read_members(data)
    except TarDamaged as exc:
        raise ShardDamaged(str(exc)) from None
    groups: List[list] = []
    for member in members:
        key = member.name.split(".", 1)[0]
        if groups and groups[-1][0].name.split(".", 1)[0] == key:
            groups[-1].append(member)
        else:
            groups.append([member])
    samples, lines = [], []
    for group in groups:
        sample, line = _wds_sample(data, group)
        samples.append(sample)
        lines.append(line)
    return samples, f"v1.2 {len(samples)}\n" + "".join(lines)


def _crc_ok(data: bytes, stored: bytes) -> bool:
    return struct.unpack("<I", stored)[0] == masked_crc(data)


def _tf_sample(data: bytes, at: int) -> ShardSample:
    from google.protobuf.message import DecodeError

    from imagenet_db.outputs.example_proto import parse_example

    try:
        features = parse_example(data)
    except DecodeError:
        raise ShardDamaged(f"record at byte {at}: not a tf.train.Example") from None
    missing = [name for name in ("image/encoded", "image/class/label", "image/filename")
               if len(features.get(name, [])) != 1]
    if missing:
        raise ShardDamaged(f"record at byte {at}: no single {', '.join(missing)}")
    name = features["image/filename"][0].decode("utf-8", "replace")
    return ShardSample(os.path.splitext(name)[0], int(features["image/class/label"][0]),
                       features["image/encoded"][0])


def read_tfrecord_shard(path: str) -> Tuple[List[ShardSample], str]:
    """(samples, tfrecord2idx index text) of a TFRecord file (see the module docstring)."""
    with open(path, "rb") as f:
        data = f.read()
    samples, lines, at = [], [], 0
    while at < len(data):
        if at + 12 > len(data):
            raise ShardDamaged(f"record at byte {at}: header cut short (file ends at "
                               f"{len(data)})")
        if not _crc_ok(data[at:at + 8], data[at + 8:at + 12]):
            raise ShardDamaged(f"record at byte {at}: length CRC-32C does not match")
        length = struct.unpack("<Q", data[at:at + 8])[0]
        end = at + 12 + length + 4
        if end > len(data):
            raise ShardDamaged(f"record at byte {at}: {length} bytes run past the end of the "
                               f"file ({len(data)} bytes): truncated")
        body = data[at + 12:at + 12 + length]
        if not _crc_ok(body, data[end - 4:end]):
            raise ShardDamaged(f"record at byte {at}: data CRC-32C does not match")
        samples.append(_tf_sample(body, at))
        lines.append(f"{at} {end - at}\n")
        at = end
    return samples, "".join(lines)


def _file_sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_samples(full: str, samples: List[ShardSample], manifest: dict, report) -> None:
    """Labels in range and every JPEG decodes; counts go to the report."""
    base = manifest.get("label_base", 0)
    synsets = manifest.get("synsets")
    for sample in samples:
        label = sample.label - base
        report.labels[label] += 1
        if label < 0 or (synsets is not None and label >= synsets):
            report.problem(f"{full}: {sample.key}: label {sample.label} is outside "
                           f"{base}..{(synsets or 0) - 1 + base}")
        image = cv2.imdecode(np.frombuffer(sample.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            report.problem(f"{full}: {sample.key}: the image does not decode")
        else:
            report.shapes[(3, image.shape[0], image.shape[1])] += 1


def _check_shard(path: str, shard: dict, manifest: dict, report, reader: Callable) -> None:
    full = os.path.join(path, shard["name"])
    if not os.path.isfile(full):
        report.problem(f"{full}: missing")
        return
    if _file_sha256(full) != shard.get("sha256"):
        report.problem(f"{full}: SHA-256 differs from the completion record's: the shard "
                       f"was changed")
    try:
        samples, index = reader(full)
    except ShardDamaged as exc:
        report.problem(f"{full}: {exc}")
        return
    if len(samples) != shard.get("count"):
        report.problem(f"{full}: {len(samples)} samples, the completion record says "
                       f"{shard.get('count')}")
    report.entries += len(samples)
    _check_samples(full, samples, manifest, report)
    index_name = shard.get("index")
    if index_name:
        index_path = os.path.join(path, index_name)
        try:
            with open(index_path, encoding="ascii") as f:
                found = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            report.problem(f"{index_path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
            return
        if found != index:
            report.problem(f"{index_path}: does not match the offsets and sizes in "
                           f"{shard['name']}")


def verify_shards(path: str, manifest: dict, report, reader: Callable) -> None:
    """Check every shard of the finished output ``path`` (module docstring) with ``reader``
    (``read_wds_shard`` or ``read_tfrecord_shard``), adding problems to ``report`` (a
    ``verify.VerifyReport``)."""
    shards = manifest.get("shards") or []
    listed = {shard["name"] for shard in shards}
    listed |= {shard["index"] for shard in shards if shard.get("index")}
    for shard in shards:
        _check_shard(path, shard, manifest, report, reader)
    patterns = {re.sub(r"\d", "#", name) for name in listed}  # shard names, digits aside
    for root, _, files in os.walk(path):
        for name in sorted(files):
            relative = os.path.relpath(os.path.join(root, name), path).replace(os.sep, "/")
            if re.sub(r"\d", "#", relative) in patterns and relative not in listed:
                report.problem(f"{os.path.join(path, relative)}: not a shard of the completion "
                               f"record")


def check_wds_info(path: str, manifest: dict, report) -> None:
    """``_info.json`` agrees with the completion record's shards (names, lengths, totals)."""
    info_path = os.path.join(path, "_info.json")
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        report.problem(f"{info_path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return
    for split, entry in (info.get("splits") or {}).items():
        mine = [s for s in manifest.get("shards", []) if s.get("split") == split]
        wanted = ([s["name"] for s in mine], [s["count"] for s in mine],
                  sum(s["count"] for s in mine))
        if (entry.get("filenames"), entry.get("shard_lengths"), entry.get("num_samples")) \
                != wanted:
            report.problem(f"{info_path}: split {split} does not match the shards")


# a ShardFormat's shard_reader -> (the shard reader, the check of the output's side files)
SHARD_READERS: Dict[str, Tuple[Callable, Optional[Callable]]] = {
    "tar": (read_wds_shard, check_wds_info),  # WebDataset: _info.json
    "tfrecord": (read_tfrecord_shard, None),
}


def verify_shard_output(path: str, manifest: dict, report, kind: str) -> None:
    """Check the finished sharded output ``path`` (``verify_shards``) with the reader of
    ``kind`` (a ``SHARD_READERS`` key), then its side files; problems go to ``report``."""
    reader, check_side_files = SHARD_READERS[kind]
    verify_shards(path, manifest, report, reader)
    if check_side_files:
        check_side_files(path, manifest, report)


def output_verify(output) -> Callable:
    """The check ``(path, manifest, report) -> None`` of a finished output of the registered
    class ``output`` (an ``outputs.OUTPUTS`` value): for a sharded format (it declares a
    ``shard_reader``), ``verify_shard_output`` with that reader; else ``output.verify``."""
    kind = getattr(output, "shard_reader", None)
    if not kind:
        return output.verify
    return lambda path, manifest, report: verify_shard_output(path, manifest, report, kind)
