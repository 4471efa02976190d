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
``--encode_quality`` (0 = OpenCV's 95).

Boxes (issue 21): when the SOURCE has annotation files, ``shard_stages`` asks for them in the
format's label order (``ShardFormat.box_labels``) and each annotated record carries its
``Record.boxes``; a source without them reads nothing more. The worker moves them with the
image (``imaging.boxes.stored_boxes``, as ``transform_image(..., boxes=...)``: divided by the
XML's size, then the resize mode's placement), the format applies its own rules
(``ShardFormat.format_boxes``) and the ``EncodedSample`` carries the rows to ``write_sample``.
A record without an annotation file has no boxes (``EncodedSample.box_rows`` None), which is
not the same as an annotation without object (an empty array). The completion record's
``boxes`` counts them (``BOX_COUNTS``); it is absent when no sample had an annotation.
"""
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.engine.files import fsync_dir, write_file_atomic
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.boxes import stored_boxes
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
# the completion record's ``boxes``: samples with an annotation, those with a box stored,
# boxes stored, boxes the resize cut off, boxes the format's rules left out (TF: degenerate)
BOX_COUNTS = ("images", "with_boxes", "boxes", "dropped_by_resize", "dropped_by_format")


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
    SHA-256 (hex) and size in bytes of the file, the skipped records as (index, relpath,
    reason), and the box counts ({``BOX_COUNTS`` name: int}; empty when no sample of the
    shard had an annotation)."""
    name: str
    split: str
    count: int
    sha256: str
    size: int
    skipped: List[Tuple[int, str, str]] = field(default_factory=list)
    boxes: Dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The result as the shard log keeps it (``boxes`` only when counted)."""
        obj = {"name": self.name, "split": self.split, "count": self.count,
               "sha256": self.sha256, "bytes": self.size,
               "skipped": [list(skip) for skip in self.skipped]}
        if self.boxes:
            obj["boxes"] = dict(self.boxes)
        return obj

    @classmethod
    def from_json(cls, obj: dict) -> "ShardResult":
        """The inverse of to_json."""
        return cls(obj["name"], obj["split"], int(obj["count"]), obj["sha256"],
                   int(obj["bytes"]), [tuple(skip) for skip in obj.get("skipped", [])],
                   {name: int(obj["boxes"][name]) for name in BOX_COUNTS}
                   if obj.get("boxes") else {})


@dataclass
class EncodedSample(Encoded):
    """One sample of a sharded output: the ``Encoded`` JPEG (value; pixels None; shape
    (3, height, width); name: the sample key; boxes: (boxes stored, boxes the resize
    dropped) when the record has an annotation, else None) and ``box_rows``: the boxes to
    store, (N, 6) float32 [xmin, ymin, xmax, ymax, label, difficult], coordinates relative to
    the stored image, label in the format's order, after the format's rules
    (``ShardFormat.format_boxes``); None when the record has no annotation.
    ``format_dropped``: boxes those rules left out."""
    box_rows: Optional[np.ndarray] = None
    format_dropped: int = 0

    def __reduce__(self):
        return EncodedSample, (self.value, self.pixels, self.shape, self.name, self.checksum,
                               self.boxes, self.box_rows, self.format_dropped)


def box_totals(results: Sequence[ShardResult]) -> Dict[str, int]:
    """The box counts of the whole output ({``BOX_COUNTS`` name: int}, the shards' summed),
    or {} when no sample had an annotation."""
    totals: Dict[str, int] = {}
    for result in results:
        for name, value in result.boxes.items():
            totals[name] = totals.get(name, 0) + value
    return totals


def add_box_counts(counts: Dict[str, int], sample: EncodedSample) -> None:
    """Count ``sample``'s boxes into ``counts`` ({``BOX_COUNTS`` name: int}); a sample
    without an annotation counts nothing."""
    if sample.box_rows is None:
        return
    stored = len(sample.box_rows)
    for name, value in zip(BOX_COUNTS, (1, int(stored > 0), stored, sample.boxes[1],
                                        sample.format_dropped)):
        counts[name] = counts.get(name, 0) + value


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
    stores_boxes = False  # no BoxCount observer (none sees the records): ShardResult.boxes
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
    def box_labels(cls, synsets: Sequence[str], options: dict) -> Dict[str, int]:
        """wnid -> the label its boxes carry: the sample's own label (Caffe's, the position
        in ``synsets``); a format that writes labels otherwise overrides it."""
        return {wnid: label for label, wnid in enumerate(synsets)}

    @classmethod
    def format_boxes(cls, boxes: np.ndarray) -> np.ndarray:
        """The boxes the format stores of (N, 6) float32 boxes on the stored image: all of
        them, as they are (a format with its own rules, e.g. TFRecord's, overrides it)."""
        return boxes

    @classmethod
    def _sample(cls, record, jpeg: bytes, shape: Tuple[int, int, int],
                placed: Tuple[Optional[np.ndarray], int]) -> EncodedSample:
        """The EncodedSample of a stored JPEG and its boxes ``placed`` ((boxes, dropped by the
        resize) of ``imaging.boxes.stored_boxes``)."""
        boxes, dropped = placed
        if boxes is None:
            return EncodedSample(jpeg, None, shape, sample_key(record.relpath))
        rows = cls.format_boxes(boxes)
        return EncodedSample(jpeg, None, shape, sample_key(record.relpath), None,
                             (len(rows), dropped), rows, len(boxes) - len(rows))

    @classmethod
    def encode_file(cls, record, data: bytes, options: TransformOptions):
        """Without a resize: the JPEG to store (``plain_jpeg``) and the record's boxes
        relative to it (``stored_boxes``, as ``transform_image`` places them) as an
        EncodedSample, or a skip reason; with a resize: None (the transform decodes, resizes
        and moves the boxes)."""
        if options.resizing:
            return None
        try:
            jpeg, shape = plain_jpeg(data, options.encode_quality)
        except ImagenetDbError as exc:
            return str(exc)
        return cls._sample(record, jpeg, shape,
                           stored_boxes(record.boxes, shape[2], shape[1], options))

    @classmethod
    def encode(cls, record, image):
        """The transformed image as a plain JPEG (re-encoded when the transform kept a file
        that is not one, e.g. a small PNG under --only_shrink) with its boxes
        (``Image.boxes``): an EncodedSample (value: the JPEG bytes, shape (3, height, width)),
        or a str saying why the image is skipped."""
        try:
            jpeg, shape = plain_jpeg(image.encoded)
        except ImagenetDbError as exc:
            return str(exc)
        return cls._sample(record, jpeg, shape, (image.boxes, image.dropped_boxes))

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
    def write_sample(cls, out: HashingFile, record, encoded: EncodedSample, options: dict) -> str:
        """Append one sample (its boxes: ``encoded.box_rows``) to the shard; returns its
        index line(s)."""
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
            lines, skipped, boxes = [], [], {}
            for record in records:
                result = self.record_job(record)
                if isinstance(result, Encoded):
                    lines.append(self.fmt.write_sample(out, record, result, self.options))
                    add_box_counts(boxes, result)
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
                           out.offset, skipped, boxes)


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
    in ASCII order; TFRecord adds its label base when writing). Annotated records carry their
    boxes (``Record.boxes``, labels ``fmt.box_labels``) when the split has annotation files
    (read here, once; their counts and odd cases become notes); a split without them reads
    nothing more. The output options carry what the workers need (splits, wnids,
    ``shard_size``, the format's ``recipe_options``); they are recorded and compared on
    ``--resume``, as is whether boxes were read (``settings["read_boxes"]``, only when they were).
    Raises ImagenetDbError for shard settings out of range, BoxError for a malformed
    annotation."""
    shard_size = recipe.option("shard_size", 0) or 0
    if shard_size < 0:
        raise ImagenetDbError("--shard_size must be >= 0")
    options = {"synsets": list(found.synsets), "shard_size": shard_size}
    options.update(fmt.recipe_options(found, recipe))
    box_labels = fmt.box_labels(found.synsets, options)
    parts, splits, notes = [], [], []
    for name, split in found.splits.items():
        parts.append(split.records(name == "train", recipe.seed, box_labels))
        splits.append((name, len(split.entries)))
        if split.boxes is not None:
            notes += split.boxes.counts.notes(name)
    records = ChainedRecords.of(parts)  # numbered on: val after train
    options = {"splits": splits, **options}
    settings = {"seed": recipe.seed, "synsets": len(found.synsets), "format": fmt.name}
    if any(split.boxes is not None for split in found.splits.values()):
        settings["read_boxes"] = True
    return replace(found, notes=found.notes + notes), [
        Stage(fmt.name, os.path.join(out, fmt.name), fmt.name, records, settings, options)]


def shard_format_spec(fmt, summary: str, options: Tuple[FormatOption, ...]) -> FormatSpec:
    """The ``FormatSpec`` of the sharded format class ``fmt``: ``sharded``, Caffe's label
    order, ``fmt``'s default transform and check, one stage (``shard_stages``), ``options``:
    its flags (``SHARD_SIZE`` first)."""
    return FormatSpec(
        name=fmt.name, summary=summary, folder=fmt.name,
        default_transform=fmt.default_transform, check_transform=fmt.check_transform,
        stages=lambda found, out, recipe, want_mean: shard_stages(found, out, recipe, fmt),
        options=(SHARD_SIZE,) + tuple(options), sharded=True)
