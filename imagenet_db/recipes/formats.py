"""What ``create_imagenet --format`` builds, read from each format's declaration.

Each format (``outputs.format_specs()``: an ``outputs.spec.FormatSpec`` in the format's own
module) turns the located ``Dataset`` into *stages* — one output each, built by
``pipeline.convert`` — and the dataset whose aux files (synsets.txt, train.txt, val.txt...)
go into OUTDIR, so that those files always carry the labels the outputs hold. Here only what
every format shares: the options (``RecipeOptions``), the label order applied before the
format's stages (``LABEL_ORDERS``), the transform defaults and checks, and the observers of a
stage. What each format makes: ``outputs.caffe`` (``ilsvrc12_{train,val}_<backend>``, Caffe
labels, both splits shuffled, mean of train), ``outputs.cuda_convnet2`` (devkit labels),
``outputs.theano_alexnet``, ``outputs.folder``, ``outputs.webdataset`` and
``outputs.tfrecord`` (shards written by the workers, ``outputs.shards``: ``FormatSpec.sharded``).
"""
import os
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.observers.boxcount import BoxCount
from imagenet_db.observers.mean import MeanObserver
from imagenet_db.outputs import backends, format_spec, output_class
from imagenet_db.outputs.spec import Stage
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import DEFAULT_SEED, Dataset, Split, relabel
from imagenet_db.sources.selection import ClassSelection

__all__ = ["RecipeOptions", "Stage", "stage_observers", "default_transform", "check_transform",
           "relabel", "in_label_order", "plan"]


@dataclass(frozen=True)
class RecipeOptions:
    """What ``create_imagenet`` makes, besides the transform and how the build runs.

    output_format: a name in ``outputs.format_specs()`` ('caffe': Caffe's LMDB/LevelDB of
    ``backend`` + the mean, 'cuda-convnet2', 'theano-alexnet', 'folder'). backend: a name in
    ``outputs.backends()``, 'lmdb' or 'leveldb' (formats of Datum databases). seed: shuffle
    seed of the training images (and, for caffe, of val). mean_crop: Datum databases: the
    mean over the centre mean_crop x mean_crop window of every train image (needed for
    varying sizes, e.g. 224 for a shorter_side 256 build; 0 = whole images). prototxt: Datum
    databases: also write train_val/solver/deploy prototxts (``recipes.prototxt``). report:
    Datum databases: write OUTDIR/report.html at the end. val_layout: folder: 'folders'
    (val/<wnid>/) or 'flat'. batch_images: images per batch of the batch formats (None:
    upstream's 3072 / 256). drop_blacklist: leave out the val images the 2014/2015 devkit
    blacklists (off: the classification task keeps all 50,000). allow_empty_classes: keep a
    synset without training images as a label (else an error). verify: first check the
    archives' MD5 against the published values (reads every byte). boxes_csv: also write
    OUTDIR/boxes.csv (``sources.boxes.boxes_csv_text``). format_options: the
    values of formats' own flags that are not fields here ({name: value}, e.g.
    cuda-convnet2's 'uncropped'); read with ``option(name)``. selection: the classes kept
    and the val split made from train (``sources.selection``: --min_class_images,
    --val_per_class; --recipe imagenet21k-p).
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
    boxes_csv: bool = False
    format_options: Mapping[str, object] = field(default_factory=dict)
    selection: ClassSelection = ClassSelection()

    def option(self, name: str, default=None):
        """The value of a format's flag ``name``: a field of these options, else
        ``format_options[name]``, else ``default``."""
        if name in RECIPE_FIELDS:
            return getattr(self, name)
        return self.format_options.get(name, default)


RECIPE_FIELDS = frozenset(f.name for f in fields(RecipeOptions)) - {"format_options", "selection"}


def stage_observers(stage: Stage) -> list:
    """The observers of a stage's build (the Caffe mean for a stage that wants it, over the
    centre mean_crop square when it is > 0; the box counts of an output that stores boxes)."""
    boxes = [BoxCount()] if output_class(stage.backend).stores_boxes else []
    return ([MeanObserver(stage.mean_crop)] if stage.want_mean else []) + boxes


def default_transform(output_format: str, uncropped: bool = False) -> TransformOptions:
    """The transform a format's recipe uses when none is given (its ``FormatSpec``'s): caffe
    and theano-alexnet squash to 256x256 (create_imagenet.sh; make_hkl.py); cuda-convnet2:
    make-data's resize (``uncropped``: shorter side 256, no crop); folder: none (files copied
    byte for byte). ImagenetDbError for an unknown format."""
    options = RecipeOptions(output_format, format_options={"uncropped": uncropped})
    return format_spec(output_format).default_transform(options)


def check_transform(output_format: str, transform: TransformOptions) -> None:
    """Refuse a transform the format cannot store (raises ImagenetDbError)."""
    format_spec(output_format).check_transform(transform)


def _one_based(found: Dataset) -> Dataset:
    """``found`` with every label + 1 (label 0 left free); synsets keep Caffe's order."""
    splits = {name: Split(name, [(rel, label + 1) for rel, label in s.entries], s.loader, s.boxes)
              for name, s in found.splits.items()}
    return replace(found, splits=splits)


# outputs.spec.LABEL_ORDERS -> how a dataset in Caffe's order gets there
LABEL_ORDERS: Dict[str, Callable[[Dataset], Dataset]] = {
    "caffe": lambda found: found,  # get_ilsvrc_aux.sh: wnids in ASCII order, 0..N-1
    "devkit": lambda found: relabel(found, L.devkit_synsets(found.synsets)),  # ILSVRC2012_ID-1
    "1-based": _one_based,  # Caffe's order + 1
}


def in_label_order(found: Dataset, label_order: str) -> Dataset:
    """``found`` (Caffe labels) relabelled in ``label_order`` (a key of ``LABEL_ORDERS``)."""
    return LABEL_ORDERS[label_order](found)


def plan(found: Dataset, outdir: str, transform: TransformOptions, recipe: RecipeOptions,
         want_mean: bool = True) -> Tuple[Dataset, List[Stage]]:
    """(dataset for the aux files, stages) of ``recipe.output_format`` for ``found`` into
    ``outdir``: the format's ``FormatSpec`` checks the transform, the dataset is put in its
    label order, and its ``stages`` make the outputs (for Datum databases, of
    ``recipe.backend``; the train DB gets the mean when ``want_mean``). recipe.batch_images:
    images per batch of the batch formats (cuda-convnet2: 3072, a multiple of 3, written as
    3 sub-batch files; theano-alexnet: 256, an even number); None = upstream's.
    Raises ImagenetDbError for an unknown format or backend, a dataset the format cannot
    label, or options the format refuses (e.g. a training split smaller than one Theano
    batch: there would be no batch and no mean)."""
    spec = format_spec(recipe.output_format)
    spec.check_transform(transform)
    if spec.datum_databases and recipe.backend not in backends():
        raise ImagenetDbError(f"unknown backend {recipe.backend!r}")
    out = os.path.normpath(outdir)
    return spec.stages(in_label_order(found, spec.label_order), out, recipe, want_mean)
