"""Sharded outputs (WebDataset tars, TFRecords): what the two formats share.

A sharded output is one directory (``OUTDIR/webdataset``, ``OUTDIR/tfrecord``) of shard files,
each a contiguous slice of the output's record list (train shuffled with ``--seed``, then val
in file order). **Workers write whole shards themselves**: one task per shard (``ShardJob``)
loads, checks, transforms and encodes its records and writes the shard file, through a
temporary beside its final name (``NAME.tmp-<random>``) that is synced and renamed into
place only when complete, after the shard's DALI index. It returns only a ``ShardResult``
(name, count, SHA-256, bytes, skips). The client (``pipeline_shards``) appends each result to
``imagenet_db.shards.log`` in the build folder (one JSON line, synced): ``--resume`` keeps every
shard the log lists whose file is there with its size, and rebuilds the rest. The completion
record lists every shard with its count and SHA-256.

Each format is a ``ShardFormat`` subclass (registered in ``outputs.OUTPUTS``) that names its
shards (``plan``), writes one sample (``write_sample``) and its index line, and declares its
``FormatSpec`` (``shard_format_spec``: ``sharded=True``, one stage, ``shard_stages``) with its
flags (``SHARD_SIZE`` and its own). A finished output is read back, and verified, by
``readers.shardreaders`` through the format's ``shard_reader``. Stored images are JPEG (``plain_jpeg``): a JPEG file (gray or colour, not
CMYK) keeps its bytes when no resize applies; a PNG, CMYK JPEG or other file is decoded and
re-encoded as colour JPEG (as TensorFlow's build_imagenet_data.py converts them), at
``--encode_quality`` (0 = OpenCV's 95). Boxes: a record may carry ``boxes``, an (N, 6) float32
array ``xmin, ymin, xmax, ymax, label, difficult`` in coordinates normalized to [0, 1]
(``record_boxes``); the formats store them when present.
"""
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.engine.files import fsync_dir, write_file_atomic
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.headers import _jpeg_frame, sniff_format
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs.base import Encoded
from imagenet_db.outputs.spec import FormatOption, FormatSpec, Stage
from imagenet_db.sources.base import Dataset
from imagenet_db.sources.records import ChainedRecords

SHARD_LOG = "imagenet_db.shards.log"
DEFAULT_SHARD_SIZE = 1000
DEFAULT_SHARD_BYTES = 10 ** 9  # 1 GB
DEFAULT_QUALITY = 95  # OpenCV's default JPEG quality (--encode_quality 0)


class ShardSpec(NamedTuple):
    """One shard to write: file name (relative to the output folder), split, its number in
    the split, the records [start, stop) of the output's list, and the index file name
    (relative, None for none)."""
    name: str
    split: str
    number: int
    start: int
    stop: int
    index_name: Optional[str]


@dataclass
class ShardResult:
    """What a worker hands back for a finished shard: name, split, samples written (count),
    SHA-256 (hex) and size in bytes of the file, and the skipped records as (index, relpath,
    reason)."""
    name: str
    split: str
    count: int
    sha256: str
    size: int
    skipped: List[Tuple[int, str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        """The result as the shard log and the completion record keep it."""
        return {"name": self.name, "split": self.split, "count": self.count,
                "sha256": self.sha256, "bytes": self.size,
                "skipped": [list(skip) for skip in self.skipped]}

    @classmethod
    def from_json(cls, obj: dict) -> "ShardResult":
        """The inverse of to_json."""
        return cls(obj["name"], obj["split"], int(obj["count"]), obj["sha256"],
                   int(obj["bytes"]), [tuple(skip) for skip in obj.get("skipped", [])])


def sample_key(relpath: str) -> str:
    """The WebDataset/TFRecord key of an image: its file name without the extension
    (``n01440764_10026``, ``ILSVRC2012_val_00000001``)."""
    return os.path.splitext(relpath.rsplit("/", 1)[-1])[0]


def check_keys(records: Sequence, splits: Sequence[Tuple[str, int]]) -> None:
    """Raise DatabaseError, naming the records, when a key holds a dot or a non-ASCII
    character (readers split member names at the first dot), or two records of one split
    have the same key."""
    start = 0
    for split, count in splits:
        seen: Dict[str, str] = {}
        for record in records[start:start + count]:
            key = sample_key(record.relpath)
            if "." in key or not key.isascii() or not key or len(key) > 90:
                raise DatabaseError(f"record {record.index} ({record.relpath!r}): its key "
                                    f"{key!r} must be 1..90 ASCII characters without a dot")
            if key in seen:
                raise DatabaseError(f"{split}: {seen[key]!r} and {record.relpath!r} have the "
                                    f"same key {key!r}")
            seen[key] = record.relpath
        start += count


def record_boxes(record) -> Optional[np.ndarray]:
    """The record's boxes: an (N, 6) float32 array ``xmin, ymin, xmax, ymax, label,
    difficult`` normalized to [0, 1] (issue 21's sources set ``record.boxes``), or None when
    the source knows none."""
    boxes = getattr(record, "boxes", None)
    return None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 6)


def plain_jpeg(data: bytes, quality: int = 0) -> Tuple[bytes, Tuple[int, int, int]]:
    """(JPEG bytes, (3, height, width)) of image file bytes: a baseline/progressive JPEG with
    1 or 3 components as it is (height/width from its frame header, EXIF ignored, as
    tf.io.decode_jpeg and PIL read it); anything else (PNG, CMYK JPEG, BMP...) decoded by
    OpenCV to 3-channel colour and encoded as JPEG at ``quality`` (0 = 95). Raises
    ImagenetDbError with the reason when the bytes cannot be decoded or encoded."""
    if sniff_format(data) == "JPEG":
        frame = _jpeg_frame(data)
        if frame is not None and frame[2] in (1, 3):
            return data, (3, frame[1], frame[0])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImagenetDbError("cannot decode image data")
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality or DEFAULT_QUALITY])
    if not ok:
        raise ImagenetDbError("cannot encode image as JPEG")
    return buf.tobytes(), (3, image.shape[0], image.shape[1])


def split_slices(count: int, start: int, shard_size: int, sizes=None,
                 shard_bytes: int = 0) -> List[Tuple[int, int]]:
    """Contiguous [start, stop) slices of ``count`` records beginning at ``start``: at most
    ``shard_size`` records each and, when ``sizes`` (estimated stored bytes per record) is
    given, at most ``shard_bytes`` bytes (a record larger than that gets a shard of its own)."""
    slices, begin, total = [], start, 0
    for position in range(start, start + count):
        size = sizes[position - start] if sizes is not None else 0
        full = position - begin >= shard_size or (shard_bytes and total + size > shard_bytes)
        if position > begin and full:
            slices.append((begin, position))
            begin, total = position, 0
        total += size
    if count:
        slices.append((begin, start + count))
    return slices


def estimated_size(record) -> int:
    """The record's source file size when its loader knows it without reading the image (a
    file's stat, a tar or zip member's size), else 0: the shard plan's estimate of stored
    bytes."""
    load = record.load
    size = getattr(load, "size", None)
    if size is None:
        size = getattr(getattr(load, "member", None), "size", None)
    if size is not None:
        return int(size)
    path = getattr(load, "path", None)
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0


class HashingFile:
    """A file being written that counts its bytes (``offset``) and hashes them (SHA-256)."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(path, "wb")
        self.offset = 0
        self.sha256 = hashlib.sha256()

    def write(self, data) -> None:
        """Append ``data`` (bytes-like)."""
        self.file.write(data)
        self.sha256.update(data)
        self.offset += len(data)

    def sync_close(self) -> None:
        """Flush, fsync and close."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class ShardFormat:
    """A sharded output format (see the module docstring); subclasses set ``name`` (also
    the output's directory under OUTDIR), ``description``, ``shard_reader`` (the
    ``readers.shardreaders.SHARD_READERS`` key that reads a shard back), ``format_spec``
    (``shard_format_spec``) and implement the hooks.

    Not an ``outputs.base.Output``: no record passes through the client, so there is no
    add/commit; ``pipeline_shards.convert_shards`` builds it (its ``FormatSpec.sharded``).
    Nor does it verify itself: reading shards back is ``readers.shardreaders``'s (a layer
    up), which ``imagenet-db verify`` reaches through ``shardreaders.output_verify``."""
    name = ""
    description = ""
    shard_reader = ""
    datum_database = False  # outputs.backends(): not a --backend
    stores_boxes = False  # no BoxCount observer: no record passes through the client
    format_spec: FormatSpec

    @classmethod
    def default_transform(cls, options=None) -> TransformOptions:
        """No resize; JPEG files kept as they are, others re-encoded as JPEG (``options``, the
        recipe's, are not read)."""
        return TransformOptions(encoded=True, encode_type="jpg")

    @classmethod
    def check_transform(cls, transform: TransformOptions) -> None:
        """Refuse a transform the format cannot store: shards hold colour JPEGs."""
        if not transform.is_color or not transform.encoded or \
                transform.encode_type not in ("jpg", "jpeg"):
            raise ImagenetDbError(f"{cls.name} shards hold colour JPEG images: --gray and "
                                  f"--encode_type other than jpg do not apply")

    @classmethod
    def record_problem(cls, relpath: str, index: int = 0) -> Optional[str]:
        """None: keys are checked per split by ``check_keys``."""
        return None

    @classmethod
    def encode_file(cls, record, data: bytes, options: TransformOptions):
        """Without a resize: the JPEG to store (``plain_jpeg``) as an Encoded, or a skip reason;
        with one: None (the transform decodes and resizes)."""
        if options.resizing:
            return None
        try:
            jpeg, shape = plain_jpeg(data, options.encode_quality)
        except ImagenetDbError as exc:
            return str(exc)
        return Encoded(jpeg, None, shape, sample_key(record.relpath))

    @classmethod
    def encode(cls, record, image):
        """The transformed image as a plain JPEG (re-encoded when the transform kept a file
        that is not one, e.g. a small PNG under --only_shrink): an Encoded (value: the JPEG
        bytes, shape (3, height, width)), or a str saying why the image is skipped."""
        try:
            jpeg, shape = plain_jpeg(image.encoded)
        except ImagenetDbError as exc:
            return str(exc)
        return Encoded(jpeg, None, shape, sample_key(record.relpath))

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` is an unfinished build of this format (its shard log)."""
        return os.path.isfile(os.path.join(path, SHARD_LOG))

    @classmethod
    def recipe_options(cls, found, recipe) -> dict:
        """The format's own output options from the located dataset and the recipe
        (``recipes.formats.RecipeOptions``)."""
        return {}

    @classmethod
    def plan(cls, records: Sequence, options: dict) -> List[ShardSpec]:
        """The shards of ``records`` (the splits of ``options['splits']`` one after the other)."""
        raise NotImplementedError

    @classmethod
    def write_sample(cls, out: HashingFile, record, encoded: Encoded, options: dict) -> str:
        """Append one sample to the shard; returns its index line(s)."""
        raise NotImplementedError

    @classmethod
    def end_shard(cls, out: HashingFile) -> None:
        """Write what closes a shard file (the tar's end blocks)."""

    @classmethod
    def index_text(cls, lines: List[str]) -> str:
        """The DALI index of a shard from its samples' lines."""
        return "".join(lines)

    @classmethod
    def finish(cls, folder: str, results: List[ShardResult], options: dict) -> dict:
        """After every shard: write the format's own side files; facts for the completion
        record."""
        return {}


@dataclass(frozen=True)
class ShardJob:
    """The work of one shard, on a worker thread or a Dask worker (picklable): each record
    through ``record_job`` (load, check, transform, encode: an Encoded or a skip reason), each
    sample appended by ``fmt.write_sample``, the index written, the shard renamed into place.

    folder: the build folder (a path every worker sees). options: the format's options."""
    record_job: Callable
    fmt: type
    folder: str
    options: dict

    def __call__(self, task: Tuple[ShardSpec, list]) -> ShardResult:
        spec, records = task
        final = os.path.join(self.folder, spec.name)
        out = HashingFile(f"{final}.tmp-{uuid.uuid4().hex}")
        try:
            lines, skipped = [], []
            for record in records:
                result = self.record_job(record)
                if isinstance(result, Encoded):
                    lines.append(self.fmt.write_sample(out, record, result, self.options))
                else:
                    skipped.append((record.index, record.relpath, " ".join(str(result).split())))
            self.fmt.end_shard(out)
            out.sync_close()
            if spec.index_name:
                index = os.path.join(self.folder, spec.index_name)
                os.makedirs(os.path.dirname(index), exist_ok=True)
                write_file_atomic(index, self.fmt.index_text(lines).encode("ascii"),
                                  f"{index}.tmp-{uuid.uuid4().hex}")
            os.replace(out.path, final)
            fsync_dir(os.path.dirname(final))
        except BaseException:
            out.file.close()
            if os.path.exists(out.path):
                os.remove(out.path)
            raise
        return ShardResult(spec.name, spec.split, len(lines), out.sha256.hexdigest(),
                           out.offset, skipped)


def read_shard_log(folder: str) -> Dict[str, ShardResult]:
    """{shard name: result} of the shards an interrupted build finished: the lines of
    ``imagenet_db.shards.log`` (a line cut short by a crash is dropped) whose file is there
    with the logged size."""
    try:
        with open(os.path.join(folder, SHARD_LOG), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    done = {}
    for line in text.split("\n")[:-1]:
        try:
            result = ShardResult.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        try:
            if os.path.getsize(os.path.join(folder, result.name)) == result.size:
                done[result.name] = result
        except OSError:
            pass
    return done


class ShardLog:
    """Appends finished shards to ``imagenet_db.shards.log`` (one JSON line each, synced)."""

    def __init__(self, folder: str):
        self.file = open(os.path.join(folder, SHARD_LOG), "a", encoding="utf-8")

    def add(self, result: ShardResult) -> None:
        """Log one finished shard durably."""
        self.file.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the log."""
        self.file.close()


def remove_temporaries(folder: str) -> None:
    """Delete the ``*.tmp-*`` files a killed build left in ``folder`` and its subfolders
    (the caller holds the output's lock: no build of this output is running)."""
    for root, _, files in os.walk(folder):
        for name in files:
            if ".tmp-" in name:
                os.remove(os.path.join(root, name))


# ---------------------------------------------------------------- what the formats declare
SHARD_SIZE = FormatOption(
    "shard_size", "webdataset/tfrecord: at most N samples per shard (default: webdataset "
                  "1000; tfrecord TF's 1024 train / 128 validation shards)",
    type=int, default=0, metavar="N", only_for_owner=True)


def shard_stages(found: Dataset, out: str, recipe, fmt) -> Tuple[Dataset, List[Stage]]:
    """The one stage of the sharded format class ``fmt`` (``OUTDIR/<fmt.name>``): the
    training images shuffled with ``recipe.seed`` (blake2b order, ``Split.records``,
    as the caffe format), then the validation images in file order; labels are Caffe's (wnids
    in ASCII order; TFRecord adds its label base when writing). The output options carry what
    the workers need (splits, wnids, ``shard_size``, the format's ``recipe_options``); they are
    recorded and compared on ``--resume``. Raises ImagenetDbError for shard settings out of
    range."""
    shard_size = recipe.option("shard_size", 0) or 0
    if shard_size < 0:
        raise ImagenetDbError("--shard_size must be >= 0")
    parts, splits = [], []
    for name, split in found.splits.items():
        parts.append(split.records(name == "train", recipe.seed))
        splits.append((name, len(split.entries)))
    records = ChainedRecords.of(parts)
    options = {"splits": splits, "synsets": list(found.synsets), "shard_size": shard_size}
    options.update(fmt.recipe_options(found, recipe))
    settings = {"seed": recipe.seed, "synsets": len(found.synsets), "format": fmt.name}
    return found, [Stage(fmt.name, os.path.join(out, fmt.name), fmt.name, records, settings,
                         options)]


def shard_format_spec(fmt, summary: str, options: Tuple[FormatOption, ...]) -> FormatSpec:
    """The ``FormatSpec`` of the sharded format class ``fmt``: ``sharded``, Caffe's label
    order, ``fmt``'s default transform and check, one stage (``shard_stages``), ``options``:
    its flags (``SHARD_SIZE`` first)."""
    return FormatSpec(
        name=fmt.name, summary=summary, folder=fmt.name,
        default_transform=fmt.default_transform, check_transform=fmt.check_transform,
        stages=lambda found, out, recipe, want_mean: shard_stages(found, out, recipe, fmt),
        options=(SHARD_SIZE,) + tuple(options), sharded=True)
