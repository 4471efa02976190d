"""``create_imagenet --format caffe``: Caffe's recipe, one Datum database per split.

What ``examples/imagenet/create_imagenet.sh`` + ``make_imagenet_mean.sh`` make:
``ilsvrc12_{train,val}_<backend>`` (an LMDB or LevelDB, ``outputs.lmdb`` / ``outputs.leveldb``,
chosen by ``--backend``), Caffe labels (wnids in ASCII order), both splits shuffled with
``--seed`` (blake2b order, ``sources.base.shuffle_order``), the mean of train. The stages are
Caffe Datum databases, so --encoded, the mean, --prototxt and report.html apply.
"""
import os
from typing import List, Tuple

from imagenet_db.outputs.spec import FormatSpec, Stage, caffe_squash
from imagenet_db.sources.base import Dataset

FOLDER = "ilsvrc12_{split}_{backend}"


def stages(found: Dataset, out: str, recipe, want_mean: bool) -> Tuple[Dataset, List[Stage]]:
    """One shuffled Datum DB a split (``ilsvrc12_<split>_<backend>``) of ``recipe.backend``;
    the train DB gets the mean (over the centre ``recipe.mean_crop`` square when > 0) when
    ``want_mean``."""
    backend, seed = recipe.backend, recipe.seed
    base = {"seed": seed, "synsets": len(found.synsets)}
    return found, [Stage(name, os.path.join(out, FOLDER.format(split=name, backend=backend)),
                         backend, split.records(True, seed),
                         {"split": name, **base, "shuffle": True},
                         want_mean=name == "train" and want_mean, mean_crop=recipe.mean_crop)
                   for name, split in found.splits.items()]


CAFFE = FormatSpec(name="caffe", summary="Caffe's LMDB/LevelDB + mean", folder=FOLDER,
                   default_transform=caffe_squash, stages=stages, datum_databases=True)
