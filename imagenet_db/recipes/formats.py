"""What ``create_imagenet --format`` builds for each framework: outputs, record order, labels.

Each format turns the located ``Dataset`` (Caffe labels) into *stages* — one output each, built
by ``pipeline.convert`` — and the dataset whose aux files (synsets.txt, train.txt, val.txt...)
go into OUTDIR, so that those files always carry the labels the outputs hold:

``caffe``           ``ilsvrc12_{train,val}_<backend>``: Caffe labels, both splits shuffled with
                    ``--seed`` (blake2b order, ``sources.base.shuffle_order``), mean of train.
``cuda-convnet2``   one output ``ilsvrc12_cuda_convnet2/`` holding train (shuffled with
                    ``--seed``) then val (sorted by name), as make-data.py: labels in the
                    devkit's order (ILSVRC2012_ID - 1; kit fox n02119789 = 0), and the aux
                    files in that order too; ``label_names`` = the classes' words.
``theano-alexnet``  one output ``ilsvrc12_theano_alexnet/``: Caffe labels; train sorted then
                    shuffled with numpy's legacy ``RandomState(seed).shuffle`` (``--seed 1``
                    is upstream's ``np.random.seed(1)`` order), val sorted by name.
``folder``          ``train/`` and ``val/`` as image folders (``<wnid>/<name>``, val in
                    per-wnid folders as valprep.sh makes them, or flat with
                    ``val_layout='flat'``), in archive order (sequential reads); the aux
                    files name those paths.
"""
import os
from dataclasses import dataclass, field, replace
from typing import List, Optional, Tuple

import numpy as np

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.observers.mean import MeanObserver
from imagenet_db.outputs import BACKENDS, FORMATS, OUTPUTS
from imagenet_db.outputs.cuda_convnet2 import IMAGE_SIZE as CC2_SIZE
from imagenet_db.outputs.theano_alexnet import BATCH_SIZE as THEANO_BATCH
from imagenet_db.recipes.shardformats import shard_stage
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import DEFAULT_SEED, Dataset, Record, Split, shuffled

VAL_LAYOUTS = ("folders", "flat")
CC2_DIR = "ilsvrc12_cuda_convnet2"
THEANO_DIR = "ilsvrc12_theano_alexnet"


@dataclass(frozen=True)
class RecipeOptions:
    """What ``create_imagenet`` makes, besides the transform and how the build runs.

    output_format: 'caffe' (Caffe's LMDB/LevelDB of ``backend`` + the mean), 'cuda-convnet2',
    'theano-alexnet' or 'folder'. backend: 'lmdb' or 'leveldb' (caffe). seed: shuffle seed of
    the training images (and, for caffe, of val). mean_crop: caffe: the mean over the centre
    mean_crop x mean_crop window of every train image (needed for varying sizes, e.g. 224
    for a shorter_side 256 build; 0 = whole images). prototxt: caffe: also write
    train_val/solver/deploy prototxts (``recipes.prototxt``). report: caffe: write
    OUTDIR/report.html at the end. val_layout: folder: 'folders' (val/<wnid>/) or 'flat'.
    batch_images: images per batch of the batch formats (None: upstream's 3072 / 256).
    drop_blacklist: leave out the val images the 2014/2015 devkit blacklists (off: the
    classification task keeps all 50,000). allow_empty_classes: keep a synset without
    training images as a label (else an error). verify: first check the archives' MD5
    against the published values (reads every byte).
    """
    output_format: str = "caffe"
    backend: str = "lmdb"
    seed: int = DEFAULT_SEED
    mean_crop: int = 0
    prototxt: bool = False
    report: bool = True
    val_layout: str = "folders"
    batch_images: Optional[int] = None
    drop_blacklist: bool = False
    allow_empty_classes: bool = False
    verify: bool = False
    # sharded formats (webdataset, tfrecord; recipes.shardformats): samples per shard (0 =
    # the format's default), bytes per shard (webdataset), shard name prefix (webdataset),
    # label base (tfrecord: 1 = TF's 1..N with 0 background, 0 = Caffe's 0..N-1)
    shard_size: int = 0
    shard_bytes: int = 10 ** 9
    shard_prefix: str = "imagenet"
    label_base: int = 1


@dataclass
class Stage:
    """One output of a recipe: its records (in output order), path, output name (backend),
    settings for the build record, output_options, and whether it gets the Caffe mean."""
    name: str
    db_path: str
    backend: str
    records: List[Record]
    settings: dict
    output_options: dict = field(default_factory=dict)
    want_mean: bool = False
    mean_crop: int = 0

    def observers(self) -> list:
        """The observers of this stage's build (the Caffe mean for Caffe's train DB, over the
        centre mean_crop square when it is > 0)."""
        return [MeanObserver(self.mean_crop)] if self.want_mean else []


def default_transform(output_format: str, uncropped: bool = False) -> TransformOptions:
    """The transform a format's recipe uses when none is given: caffe and theano-alexnet squash
    to 256x256 (create_imagenet.sh; make_hkl.py); cuda-convnet2: make-data's resize (resize
    mode convnet2: shorter side 256 with C rounding, AREA/CUBIC by the scale, centre 256x256;
    ``uncropped``: shorter_side 256 with the same interpolation rule, no crop); folder: none
    (files copied byte for byte); the sharded formats: their own (``outputs.shards``)."""
    if _sharded(output_format):
        return OUTPUTS[output_format].default_transform()
    if output_format == "cuda-convnet2":
        if uncropped:
            return TransformOptions(resize_mode="shorter_side", shorter_side=CC2_SIZE,
                                    interpolation="auto")
        return TransformOptions(resize_height=CC2_SIZE, resize_width=CC2_SIZE,
                                resize_mode="convnet2", interpolation="auto")
    if output_format == "folder":
        return TransformOptions(encoded=True)
    return TransformOptions(resize_height=256, resize_width=256)


def check_transform(output_format: str, transform: TransformOptions) -> None:
    """Refuse a transform the format cannot store (raises ImagenetDbError)."""
    if _sharded(output_format):
        OUTPUTS[output_format].check_transform(transform)
    if output_format == "cuda-convnet2":
        crop = (transform.resize_mode == "convnet2" and transform.resize_width == CC2_SIZE
                and transform.resize_height == CC2_SIZE)
        keep = (transform.resize_mode == "shorter_side" and transform.shorter_side == CC2_SIZE
                and not transform.only_shrink)
        if not (crop or keep) or transform.interpolation != "auto":
            raise ImagenetDbError(f"cuda-convnet2 batches hold make-data's images: resize mode "
                                  f"convnet2 at {CC2_SIZE}x{CC2_SIZE} (or shorter_side "
                                  f"{CC2_SIZE}, uncropped) with interpolation auto")
    if output_format in ("cuda-convnet2", "theano-alexnet"):
        if not transform.is_color or transform.encoded:
            raise ImagenetDbError(f"{output_format} stores colour images it encodes itself: "
                                  f"--gray and --encoded do not apply")
    if output_format == "theano-alexnet" and not transform.fixed_size:
        raise ImagenetDbError("theano-alexnet batches need one image size (--resize WxH with a "
                              "fixed-size resize mode)")
    if output_format == "folder" and not transform.encoded:
        raise ImagenetDbError("the folder format stores image files: the transform must encode")


def _sharded(output_format: str) -> bool:
    """True for a sharded format (``outputs.shards.ShardFormat``, issue 22)."""
    return getattr(OUTPUTS.get(output_format), "sharded", False)


def numpy_shuffled(entries: list, seed: int) -> list:
    """``entries`` shuffled as numpy's legacy ``np.random.seed(seed); np.random.shuffle(x)``
    does (the same permutation for any list of that length; stable across numpy versions)."""
    order = list(range(len(entries)))
    np.random.RandomState(seed).shuffle(order)
    return [entries[i] for i in order]


def _records(split: Split, order: List[Tuple[str, int]], start: int) -> List[Record]:
    return [Record(start + i, relpath, label, split.loader(relpath))
            for i, (relpath, label) in enumerate(order)]


def _position(load, relpath: str):
    """Where a loader reads in its archive (for sequential I/O), else the relpath."""
    key = getattr(load, "sort_key", None)
    if key is None:
        offset = getattr(load, "offset", None)
        reader = getattr(load, "reader", None)
        key = (getattr(reader, "path", ""), offset) if offset is not None else ("", 0)
    return key, relpath


def archive_order_records(split: Split) -> List[Record]:
    """The split's records in the order its images sit in their archives (by each loader's
    position when it has one, else by relpath): sequential reads for a plain copy."""
    loads = [(split.loader(relpath), relpath, label) for relpath, label in split.entries]
    loads.sort(key=lambda item: _position(item[0], item[1]))
    return [Record(i, relpath, label, load) for i, (load, relpath, label) in enumerate(loads)]


def relabel(found: Dataset, synsets: List[str]) -> Dataset:
    """``found`` with labels = positions in ``synsets`` (another order of the same wnids)."""
    new = L.label_map(synsets)
    splits = {name: Split(name, [(rel, new[found.synsets[label]]) for rel, label in s.entries],
                          s.loader) for name, s in found.splits.items()}
    return replace(found, synsets=synsets, splits=splits)


def folder_relpaths(found: Dataset, val_layout: str) -> Dataset:
    """``found`` with val relpaths as the folder output writes them: ``<wnid>/<name>``
    (folders) or ``<name>`` (flat); loaders still read the source's paths."""
    if val_layout not in VAL_LAYOUTS:
        raise ImagenetDbError(f"val layout must be one of {', '.join(VAL_LAYOUTS)}, "
                              f"not {val_layout!r}")
    splits = dict(found.splits)
    if "val" in splits:
        val = splits["val"]
        names = {}
        for rel, label in val.entries:
            base = rel.rsplit("/", 1)[-1]
            names[f"{found.synsets[label]}/{base}" if val_layout == "folders" else base] = rel
        entries = sorted((new, label) for new, (rel, label) in
                         zip(names, val.entries))
        if len(names) != len(val.entries):
            raise ImagenetDbError("two validation images have the same file name")
        loader = val.loader
        splits["val"] = Split("val", entries, lambda new, _n=names, _l=loader: _l(_n[new]))
    return replace(found, splits=splits)


def plan(found: Dataset, outdir: str, transform: TransformOptions, recipe: RecipeOptions,
         want_mean: bool = True) -> Tuple[Dataset, List[Stage]]:
    """(dataset for the aux files, stages) of ``recipe.output_format`` for ``found`` into
    ``outdir``. recipe.batch_images: images per batch of the batch formats (cuda-convnet2:
    3072, a multiple of 3, written as 3 sub-batch files; theano-alexnet: 256, an even number);
    None = upstream's. want_mean, recipe.mean_crop: caffe only: the train DB gets the Caffe
    mean (over the centre mean_crop square when > 0).
    Raises ImagenetDbError for an unknown format, a dataset the format cannot label, or a
    training split smaller than one Theano batch (there would be no batch and no mean)."""
    output_format = recipe.output_format
    if output_format not in FORMATS:
        raise ImagenetDbError(f"unknown format {output_format!r}; expected one of "
                              f"{', '.join(FORMATS)}")
    check_transform(output_format, transform)
    out = os.path.normpath(outdir)
    if output_format == "caffe":
        return found, _caffe_stages(found, out, recipe, want_mean)
    if _sharded(output_format):
        path, records, settings, options = shard_stage(found, out, recipe,
                                                       OUTPUTS[output_format])
        return found, [Stage(output_format, path, output_format, records, settings, options)]
    if output_format == "folder":
        found = folder_relpaths(found, recipe.val_layout)
        return found, [Stage(name, os.path.join(out, name), "folder",
                             archive_order_records(split),
                             {"split": name, "synsets": len(found.synsets), "format": "folder",
                              "val_layout": recipe.val_layout})
                       for name, split in found.splits.items()]
    return _batch_stage(found, out, recipe)


def _caffe_stages(found: Dataset, out: str, recipe: RecipeOptions,
                  want_mean: bool) -> List[Stage]:
    """One shuffled Datum DB a split (``ilsvrc12_<split>_<backend>``); the train DB gets the
    mean when ``want_mean``."""
    backend, seed = recipe.backend, recipe.seed
    if backend not in BACKENDS:
        raise ImagenetDbError(f"unknown backend {backend!r}")
    base = {"seed": seed, "synsets": len(found.synsets)}
    return [Stage(name, os.path.join(out, f"ilsvrc12_{name}_{backend}"), backend,
                  split.records(True, seed),
                  {"split": name, **base, "shuffle": True},
                  want_mean=name == "train" and want_mean, mean_crop=recipe.mean_crop)
            for name, split in found.splits.items()]


def _batch_options(found: Dataset, recipe: RecipeOptions) -> Tuple[Dataset, dict]:
    """(dataset relabelled for the format, output options) of a batch format: cuda-convnet2
    takes the devkit's label order and its label names; ``recipe.batch_images`` is checked
    (a multiple of 3 for cuda-convnet2, even for theano-alexnet, and for theano-alexnet no
    more than the training images)."""
    output_format, batch_images = recipe.output_format, recipe.batch_images
    options = {}
    if output_format == "cuda-convnet2":
        found = relabel(found, L.devkit_synsets(found.synsets))
        options["label_names"] = [found.words.get(wnid, wnid) for wnid in found.synsets]
        if batch_images is not None:
            if batch_images <= 0 or batch_images % 3:
                raise ImagenetDbError(f"cuda-convnet2 batches hold 3 sub-batches: "
                                      f"--batch_images {batch_images} is not a multiple of 3")
            options.update(batch_size_images=batch_images, sub_batch_size=batch_images // 3)
    elif batch_images is not None:
        if batch_images <= 0 or batch_images % 2:
            raise ImagenetDbError(f"theano-alexnet batches are cut in two halves: "
                                  f"--batch_images {batch_images} is not even")
        options["batch_images"] = batch_images
    if output_format == "theano-alexnet":
        size = batch_images or THEANO_BATCH
        train = len(found.splits["train"].entries) if "train" in found.splits else 0
        if train < size:
            raise ImagenetDbError(f"{train} training images are fewer than one theano-alexnet "
                                  f"batch of {size}: no batch would be written (see "
                                  f"--batch_images)")
    return found, options


def _batch_stage(found: Dataset, out: str, recipe: RecipeOptions) -> Tuple[Dataset, List[Stage]]:
    """The one stage of a batch format: every split's records in one list (train shuffled as
    upstream does: Python's random for cuda-convnet2, numpy's for theano-alexnet; the other
    splits sorted), the split sizes in the output options."""
    output_format, seed = recipe.output_format, recipe.seed
    found, options = _batch_options(found, recipe)
    records, splits = [], []
    for name, split in found.splits.items():
        if name != "train":
            order = sorted(split.entries)
        elif output_format == "cuda-convnet2":
            order = shuffled(split.entries, seed)
        else:
            order = numpy_shuffled(split.entries, seed)
        records += _records(split, order, len(records))
        splits.append((name, len(order)))
    options["splits"] = splits
    settings = {"seed": seed, "synsets": len(found.synsets), "format": output_format,
                "label_order": "devkit" if output_format == "cuda-convnet2" else "caffe"}
    folder = CC2_DIR if output_format == "cuda-convnet2" else THEANO_DIR
    return found, [Stage(output_format, os.path.join(out, folder), output_format, records,
                         settings, options)]
