"""The recipe of the sharded formats (``create_imagenet --format webdataset / tfrecord``).

One stage, one output folder ``OUTDIR/<format folder>`` (``webdataset/``, ``tfrecord/``): the
training images shuffled with ``--seed`` (blake2b order, ``sources.base.shuffle_order``, as the
caffe format), then the validation images in file order (sorted by name); labels are Caffe's
(wnids in ASCII order; TFRecord adds ``label_base``, 1 by default, TF's convention). The
output options carry what the workers need to write a sample (splits, wnids, class texts)
and the shard settings; they are recorded and compared on ``--resume``.
"""
import os
from typing import List, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.base import Dataset, Record, shuffled


def shard_stage(found: Dataset, out: str, recipe, fmt) -> Tuple[str, List[Record], dict, dict]:
    """(output path, records, settings, output options) of the one stage of the sharded format
    class ``fmt`` for ``recipe`` (``formats.RecipeOptions``: seed, shard_size, shard_bytes,
    shard_prefix, label_base). Raises ImagenetDbError for shard settings out of range."""
    if recipe.shard_size < 0 or recipe.shard_bytes < 0:
        raise ImagenetDbError("--shard_size and --shard_bytes must be >= 0")
    records: List[Record] = []
    splits = []
    for name, split in found.splits.items():
        order = shuffled(split.entries, recipe.seed) if name == "train" else split.entries
        start = len(records)
        records += [Record(start + i, relpath, label, split.loader(relpath))
                    for i, (relpath, label) in enumerate(order)]
        splits.append((name, len(order)))
    options = {"splits": splits, "synsets": list(found.synsets),
               "shard_size": recipe.shard_size}
    options.update(fmt.recipe_options(found, recipe))
    settings = {"seed": recipe.seed, "synsets": len(found.synsets), "format": fmt.name}
    return os.path.join(out, fmt.folder), records, settings, options
