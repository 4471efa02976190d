"""TFRecord shards as TensorFlow's ``build_imagenet_data.py`` writes them (tf.data, TFDS, slim).

``OUTDIR/tfrecord/`` holds ``train-%05d-of-%05d`` (1,024 shards by default, TF's
``--train_shards``) and ``validation-%05d-of-%05d`` (128, ``--validation_shards``); with
``shard_size`` N, each split gets ceil(count / N) shards of at most N records instead. Records
are split into contiguous, near-equal shards (``numpy.linspace`` boundaries, as TF's script);
a split with fewer images than shards gets one shard per image. Train is shuffled with
``--seed``; validation is in file order.

Each record is a ``tf.train.Example`` (``outputs.example_proto``) with TF's features:
``image/encoded`` (JPEG bytes, ``shards.plain_jpeg``: PNG and CMYK files become RGB JPEG, as
TF's script converts them), ``image/format`` = ``JPEG``, ``image/colorspace`` = ``RGB``,
``image/channels`` = 3, ``image/height``, ``image/width``, ``image/filename`` (basename),
``image/class/label``, ``image/class/synset``, ``image/class/text``, and, when the image has
an annotation file (``shards``: the boxes on the stored image), ``image/object/bbox/{xmin,xmax,
ymin,ymax}`` (float lists, relative, as build_imagenet_data.py with process_bounding_boxes.py:
min/max swapped when reversed, clamped to [0, 1], boxes with no area left dropped and counted
in the completion record's ``boxes.dropped_by_format``) and ``image/object/bbox/label`` (int64
list: the box's wnid's label with the label base below; empty lists for an annotation without
object).

Labels: TF's convention by default: 1..1000 in the wnids' ASCII order, 0 left for background
(slim's 1,001 classes; ``label_base`` 1). ``label_base`` 0 gives Caffe's 0..999 (the off-by-one
of tensorflow/models PR #1247). The choice is in the completion record.

Framing (TFRecord): ``uint64 length``, ``uint32 masked_crc32c(length)``, data,
``uint32 masked_crc32c(data)``, little-endian (``outputs.tfrecordio``). DALI's index
(``tfrecord2idx``'s format, one ``<offset> <length>`` line per record, length including the
framing) of shard NAME is ``idx/NAME.idx`` (a subfolder, so that a ``train-*`` glob finds
only shards).
"""
import math
from typing import Dict, List, Sequence

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs.example_proto import example_bytes
from imagenet_db.outputs.shards import HashingFile, ShardFormat, ShardSpec, shard_format_spec
from imagenet_db.outputs.spec import FormatOption
from imagenet_db.outputs.tfrecordio import frame

DEFAULT_SHARDS = {"train": 1024, "val": 128}
SPLIT_NAMES = {"val": "validation"}  # TF's file prefix of each split
INDEX_FOLDER = "idx"


def tf_box_rows(boxes: np.ndarray) -> np.ndarray:
    """TF's boxes of (N, 6) float32 boxes [xmin, ymin, xmax, ymax, label, difficult] on the
    stored image (process_bounding_boxes.py's rules): each coordinate clamped to [0, 1], min
    and max swapped when reversed, boxes left with no width or height dropped. Returns
    (M, 6) float32, M <= N, in the given order. (A loop over Python floats: for the few boxes
    of an image, ~10x faster than numpy's calls; clamping a float32 in double is exact.)"""
    rows = []
    for xmin, ymin, xmax, ymax, label, difficult in np.asarray(boxes, np.float32).tolist():
        x0, x1 = sorted((min(max(xmin, 0.0), 1.0), min(max(xmax, 0.0), 1.0)))
        y0, y1 = sorted((min(max(ymin, 0.0), 1.0), min(max(ymax, 0.0), 1.0)))
        if x1 > x0 and y1 > y0:
            rows.append((x0, y0, x1, y1, label, difficult))
    return np.asarray(rows, np.float32).reshape(len(rows), 6)


def tf_boxes(rows: np.ndarray) -> dict:
    """The ``image/object/bbox/*`` features of (M, 6) float32 rows of ``tf_box_rows``:
    xmin, xmax, ymin, ymax float lists, label the int64 list of the rows' labels (already in
    the output's label order)."""
    features = {f"image/object/bbox/{key}": [float(v) for v in rows[:, column]]
                for key, column in (("xmin", 0), ("xmax", 2), ("ymin", 1), ("ymax", 3))}
    features["image/object/bbox/label"] = [int(v) for v in rows[:, 4]]
    return features


def example_features(record, encoded, options: dict) -> dict:
    """The Example features of one record (module docstring); ``encoded``: a
    ``shards.EncodedSample`` (its ``box_rows``, TF's rules already applied)."""
    wnid = options["synsets"][record.label]
    words = options.get("words") or {}
    features = {
        "image/height": encoded.shape[1], "image/width": encoded.shape[2],
        "image/colorspace": b"RGB", "image/channels": 3,
        "image/class/label": record.label + options.get("label_base", 1),
        "image/class/synset": wnid.encode("ascii"),
        "image/class/text": words.get(wnid, "").encode("utf-8"),
        "image/format": b"JPEG",
        "image/filename": record.relpath.rsplit("/", 1)[-1].encode("utf-8"),
        "image/encoded": bytes(encoded.value)}
    if encoded.box_rows is not None:
        features.update(tf_boxes(encoded.box_rows))
    return features


def shard_bounds(count: int, start: int, shards: int, shard_size: int) -> List[tuple]:
    """[start, stop) of each shard of a split of ``count`` records at ``start``."""
    if shard_size:
        shards = math.ceil(count / shard_size)
        return [(start + i * shard_size, start + min(count, (i + 1) * shard_size))
                for i in range(shards)]
    shards = max(1, min(shards, count))
    edges = np.linspace(0, count, shards + 1).astype(int)
    return [(start + int(a), start + int(b)) for a, b in zip(edges[:-1], edges[1:])]


class TfRecordOutput(ShardFormat):
    """``create_imagenet --format tfrecord`` (module docstring). Options (the recipe's):
    splits [(name, count)], synsets, words ({wnid: text}), label_base (1 or 0), shard_size
    (0: TF's shard counts)."""
    name = "tfrecord"
    description = "TFRecord shards of tf.train.Example (build_imagenet_data.py) + DALI indexes"
    shard_reader = "tfrecord"
    verify_accepts = "(OUTDIR/tfrecord: train-*-of-*, validation-*-of-*, idx/)"

    @classmethod
    def recipe_options(cls, found, recipe) -> dict:
        """The class texts (image/class/text) and the label base (``--label_base``). Raises
        ImagenetDbError for a label base other than 0 or 1."""
        base = recipe.option("label_base", 1)
        if base not in (0, 1):
            raise ImagenetDbError(f"--label_base must be 0 (Caffe) or 1 (TF: 0 = background), "
                                  f"not {base}")
        return {"words": {w: found.words.get(w, "") for w in found.synsets},
                "label_base": base}

    @classmethod
    def box_labels(cls, synsets: Sequence[str], options: dict) -> Dict[str, int]:
        """wnid -> its box label: the record labels' convention (Caffe's + ``label_base``)."""
        base = options.get("label_base", 1)
        return {wnid: label + base for label, wnid in enumerate(synsets)}

    @classmethod
    def format_boxes(cls, boxes: np.ndarray) -> np.ndarray:
        """TF's rules (``tf_box_rows``)."""
        return tf_box_rows(boxes)

    @classmethod
    def plan(cls, records: Sequence, options: dict) -> List[ShardSpec]:
        """``{train,validation}-%05d-of-%05d`` over each split (module docstring)."""
        specs, start = [], 0
        for split, count in options["splits"]:
            bounds = shard_bounds(count, start, DEFAULT_SHARDS.get(split, 128),
                                  options.get("shard_size") or 0)
            prefix = SPLIT_NAMES.get(split, split)
            for number, (first, stop) in enumerate(bounds):
                name = f"{prefix}-{number:05d}-of-{len(bounds):05d}"
                specs.append(ShardSpec(name, split, number, first, stop,
                                       f"{INDEX_FOLDER}/{name}.idx"))
            start += count
        return specs

    @classmethod
    def write_sample(cls, out: HashingFile, record, encoded, options: dict) -> str:
        """One framed Example; its tfrecord2idx line."""
        data = frame(example_bytes(example_features(record, encoded, options)))
        line = f"{out.offset} {len(data)}\n"
        out.write(data)
        return line

    @classmethod
    def finish(cls, folder: str, results, options: dict) -> dict:
        """The label convention, for the completion record."""
        base = options.get("label_base", 1)
        return {"label_base": base,
                "label_order": "TF: wnids in ASCII order, " +
                               ("1-based, 0 = background" if base == 1 else "0-based (Caffe)")}


LABEL_BASE = FormatOption(
    "label_base", "tfrecord: 1 = TF's labels 1..1000 with 0 left for background (default, "
                  "slim's 1,001 classes); 0 = Caffe's 0..999 (same wnid order)",
    type=int, default=1, choices=(0, 1), only_for_owner=True)
TfRecordOutput.format_spec = shard_format_spec(TfRecordOutput, "TFRecord shards",
                                               (LABEL_BASE,))
