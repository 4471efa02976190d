"""WebDataset tar shards (PyTorch ``webdataset``, timm, DALI's ``readers.webdataset``).

``OUTDIR/webdataset/`` holds, per split, ``{prefix}-{split}-%06d.tar`` (prefix ``imagenet``),
each a deterministic POSIX ustar (``outputs.tar_ustar``) of samples in list order (train
shuffled with ``--seed``, val in file order). A sample is three members, sorted by extension:

``<key>.cls``   the label in ASCII decimal: Caffe's (wnids in ASCII order, 0..999, which is
                also timm's and torchvision ImageFolder's order);
``<key>.jpg``   the image (``shards.plain_jpeg``: the original bytes unless resized or
                converted);
``<key>.json``  ``{"height", "label", "relpath", "width", "wnid"}``, keys sorted, no
                spaces; + ``"boxes"`` when the image has an annotation file (``[]`` for one
                without object): a list of ``[xmin, ymin, xmax, ymax, label, difficult]``,
                coordinates relative to the stored image (as SSD's: divided by the XML's
                size, moved by the resize, not clamped unless a crop cut them; the shortest
                decimal of the float32 value), label the Caffe label of the box's wnid (a box
                may name another class than the image's), difficult 0 or 1.

The key is the file stem (``n01440764_10026``); it holds no dot (readers split at the first
dot). A shard closes at ``shard_size`` samples (default 1,000) or ``shard_bytes`` (default
1 GB) of source file bytes, whichever comes first (the plan is made before the workers start,
from the file sizes, so that each worker writes its own shards).

Beside each shard, its DALI index ``{prefix}-{split}-%06d.idx`` in DALI's ``wds2idx`` format:
``v1.2 <samples>``, then one line per sample listing, per member, ``<ext> <offset> <size>
<member name>`` (offset of the member's data, a multiple of 512). ``_info.json`` describes
the splits as timm's WebDataset reader reads it: ``{"name": "imagenet", "splits": {split:
{"name", "filenames", "shard_lengths", "num_samples"}}}``.
"""
import json
import os
from typing import List, Sequence

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs.shards import (DEFAULT_SHARD_BYTES, DEFAULT_SHARD_SIZE, HashingFile,
                                        ShardFormat, ShardResult, ShardSpec, estimated_size,
                                        sample_key, shard_format_spec, split_slices)
from imagenet_db.outputs.spec import FormatOption
from imagenet_db.outputs.tar_ustar import END_OF_ARCHIVE, member_header, padding

INFO_NAME = "_info.json"
DEFAULT_PREFIX = "imagenet"


def json_boxes(rows) -> list:
    """(N, 6) float32 boxes as JSON lists ``[xmin, ymin, xmax, ymax, label, difficult]``:
    coordinates as the shortest decimal that reads back as the same float32 (numpy's
    ``str``), label and difficult as integers."""
    coords = [float(str(v)) for v in np.asarray(rows, np.float32)[:, :4].ravel()]
    return [coords[4 * i:4 * i + 4] + [int(label), int(difficult)]
            for i, (label, difficult) in enumerate(np.asarray(rows)[:, 4:].tolist())]


def sample_json(record, encoded, options: dict) -> bytes:
    """The ``<key>.json`` member of a sample (see the module docstring); ``encoded``: a
    ``shards.EncodedSample`` (its ``box_rows``)."""
    shape = encoded.shape
    meta = {"wnid": options["synsets"][record.label], "label": record.label,
            "relpath": record.relpath, "width": shape[2], "height": shape[1]}
    if encoded.box_rows is not None:
        meta["boxes"] = json_boxes(encoded.box_rows)
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")


class WebDatasetOutput(ShardFormat):
    """``create_imagenet --format webdataset`` (module docstring). Options (the recipe's):
    splits [(name, count)], synsets (wnid per label), prefix, shard_size, shard_bytes."""
    name = "webdataset"
    description = "WebDataset tar shards + DALI index files + timm's _info.json"
    shard_reader = "tar"
    verify_accepts = "(OUTDIR/webdataset: *.tar shards, *.idx, _info.json)"

    @classmethod
    def recipe_options(cls, found, recipe) -> dict:
        """The shard name prefix and the byte limit of a shard (``--shard_prefix``,
        ``--shard_bytes``). Raises ImagenetDbError for a negative byte limit or a prefix
        that is not a plain ASCII file name part."""
        prefix = recipe.option("shard_prefix", DEFAULT_PREFIX)
        limit = recipe.option("shard_bytes", DEFAULT_SHARD_BYTES)
        if limit < 0:
            raise ImagenetDbError("--shard_bytes must be >= 0")
        if not prefix or not prefix.isascii() or "/" in prefix or prefix.startswith("."):
            raise ImagenetDbError(f"--shard_prefix must be a non-empty ASCII name without '/', "
                                  f"not {prefix!r}")
        return {"prefix": prefix, "shard_bytes": limit}

    @classmethod
    def plan(cls, records: Sequence, options: dict) -> List[ShardSpec]:
        """Per split: slices of at most shard_size samples and shard_bytes source bytes."""
        prefix = options.get("prefix", DEFAULT_PREFIX)
        size = options.get("shard_size") or DEFAULT_SHARD_SIZE
        limit = options.get("shard_bytes", DEFAULT_SHARD_BYTES)
        specs, start = [], 0
        for split, count in options["splits"]:
            sizes = [estimated_size(r) for r in records[start:start + count]] if limit else None
            for number, (first, stop) in enumerate(split_slices(count, start, size, sizes,
                                                                limit)):
                base = f"{prefix}-{split}-{number:06d}"
                specs.append(ShardSpec(f"{base}.tar", split, number, first, stop, f"{base}.idx"))
            start += count
        return specs

    @classmethod
    def write_sample(cls, out: HashingFile, record, encoded, options: dict) -> str:
        """The sample's three members, sorted by extension; its wds2idx line."""
        key = sample_key(record.relpath)
        members = (("cls", str(record.label).encode("ascii")), ("jpg", bytes(encoded.value)),
                   ("json", sample_json(record, encoded, options)))
        fields, parts, offset = [], [], out.offset
        for ext, data in members:
            name = f"{key}.{ext}"
            fields.append(f"{ext} {offset + 512} {len(data)} {name}")
            parts += (member_header(name, len(data)), data, padding(len(data)))
            offset += 512 + len(data) + len(parts[-1])
        out.write(b"".join(parts))  # one write and one hash update per sample
        return " ".join(fields) + "\n"

    @classmethod
    def end_shard(cls, out: HashingFile) -> None:
        """The two zero blocks ending a tar."""
        out.write(END_OF_ARCHIVE)

    @classmethod
    def index_text(cls, lines: List[str]) -> str:
        """wds2idx: ``v1.2 N`` then the samples' lines."""
        return f"v1.2 {len(lines)}\n" + "".join(lines)

    @classmethod
    def finish(cls, folder: str, results: List[ShardResult], options: dict) -> dict:
        """Write ``_info.json`` (timm's WebDataset reader) into ``folder``."""
        from imagenet_db.engine.files import write_file_atomic

        splits = {}
        for split, _ in options["splits"]:
            mine = [r for r in results if r.split == split]
            splits[split] = {"name": split, "filenames": [r.name for r in mine],
                             "shard_lengths": [r.count for r in mine],
                             "num_samples": sum(r.count for r in mine)}
        info = {"name": options.get("name", "imagenet"), "splits": splits}
        write_file_atomic(os.path.join(folder, INFO_NAME),
                          (json.dumps(info, indent=1) + "\n").encode("utf-8"))
        return {"info_file": INFO_NAME}


OPTIONS = (
    FormatOption("shard_bytes", "webdataset: close a shard before BYTES of source file bytes "
                                "(default 1 GB); a shard closes at --shard_size or this, "
                                "whichever comes first",
                 type=int, default=DEFAULT_SHARD_BYTES, metavar="BYTES", only_for_owner=True),
    FormatOption("shard_prefix", "webdataset: shard names NAME-{split}-%%06d.tar (default "
                                 "imagenet)",
                 default=DEFAULT_PREFIX, metavar="NAME", only_for_owner=True))
WebDatasetOutput.format_spec = shard_format_spec(WebDatasetOutput, "WebDataset tar shards",
                                                 OPTIONS)
