"""What an output format declares about itself, for the recipes, the CLI and verify to read.

Each ``create_imagenet --format`` is a ``FormatSpec`` in its format's module (``outputs/caffe.py``
for Caffe's LMDB/LevelDB recipe, ``outputs/cuda_convnet2.py``...), hung on its Output class as
``Output.format_spec``; ``outputs.format_specs()`` collects them from ``outputs.OUTPUTS``. Nothing
outside a format's module compares format names: ``recipes.formats``, ``cli.create`` and
``verify`` read these fields.

Label orders (``FormatSpec.label_order``, see ``LABEL_ORDERS``): 'caffe' (a wnid's position
in ASCII order, Caffe's get_ilsvrc_aux.sh: 0..N-1), 'devkit' (the devkit's ILSVRC2012_ID - 1,
cuda-convnet2's make-data.py: kit fox n02119789 = 0), '1-based' (Caffe's order + 1, label 0
left free, e.g. for a background class).
"""
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.sources.base import Record

LABEL_ORDERS = ("caffe", "devkit", "1-based")


@dataclass(frozen=True)
class FormatOption:
    """One ``create_imagenet`` flag a format declares: ``--<name>`` (argparse dest ``name``).

    kind: 'bool' (``--name/--no-name``, gflags' ``--name=false`` too), or 'value' (``type``
    parses the text; ``choices``, ``metavar`` as in argparse). default: its value when not
    given. help: the --help line. only_for_owner: refuse it (one line, exit 1) with a
    ``--format`` that does not declare it; else another format ignores it. The value reaches
    the format as ``RecipeOptions.option(name)``.
    """
    name: str
    help: str
    kind: str = "value"
    type: Optional[Callable] = None
    default: object = None
    metavar: Optional[str] = None
    choices: Optional[Tuple] = None
    only_for_owner: bool = False


@dataclass
class Stage:
    """One output of a recipe: its records (in output order), path, output name (an
    ``outputs.OUTPUTS`` key), settings for the build record, output_options (the Output's
    constructor keywords), and whether it gets the Caffe mean (over the centre mean_crop
    square when mean_crop > 0)."""
    name: str
    db_path: str
    backend: str
    records: List[Record]
    settings: dict
    output_options: dict = field(default_factory=dict)
    want_mean: bool = False
    mean_crop: int = 0


def _any_transform(transform: TransformOptions) -> None:
    """The default transform check: every transform can be stored."""


@dataclass(frozen=True)
class FormatSpec:
    """A ``create_imagenet --format``: everything the recipes, the CLI and verify need.

    name: the --format value. summary: its phrase in --format's help. folder: the output
    folder name under OUTDIR, ``{split}`` and ``{backend}`` filled in by ``stages``.
    label_order: one of ``LABEL_ORDERS``; the dataset reaches ``stages`` (and the aux files)
    relabelled so. default_transform(options) -> TransformOptions: the transform when none is
    given (``options``: a ``RecipeOptions`` or None; e.g. cuda-convnet2 reads
    ``options.option('uncropped')``).
    check_transform(transform): raise ImagenetDbError for a transform it cannot store.
    stages(found, outdir, recipe, want_mean) -> (dataset for the aux files, [Stage]); raises
    ImagenetDbError for options it cannot build. options: its own flags (``FormatOption``).
    datum_databases: its stages are Caffe Datum databases: --encoded, the mean
    (imagenet_mean.*), --prototxt and report.html apply. own_resize: None, or why the
    format takes no resize flag (it resizes as its upstream does; the one-line error).
    sharded: its stages are written whole by the workers, one task per shard
    (``outputs.shards.ShardFormat``, built by ``pipeline_shards.convert_shards``, not
    ``pipeline.convert``; no observer sees the records).
    takes_encoded: --encoded applies although its outputs are not Caffe Datum databases (e.g.
    SSD's AnnotatedDatum LMDB, whose datums may be encoded).
    How it is verified is its Output class's: ``datum_database`` (``verify.verify_db``) or
    ``Output.verify``.
    """
    name: str
    summary: str
    folder: str
    default_transform: Callable[[object], TransformOptions]
    stages: Callable
    check_transform: Callable[[TransformOptions], None] = _any_transform
    label_order: str = "caffe"
    options: Tuple[FormatOption, ...] = ()
    datum_databases: bool = False
    own_resize: Optional[str] = None
    sharded: bool = False
    takes_encoded: bool = False

    def __post_init__(self):
        if self.label_order not in LABEL_ORDERS:
            raise ValueError(f"format {self.name}: label order {self.label_order!r} is not one "
                             f"of {', '.join(LABEL_ORDERS)}")


def caffe_squash(options=None) -> TransformOptions:
    """Caffe's create_imagenet.sh transform (RESIZE=true): squash to 256x256, bilinear, raw
    datums; also theano-alexnet's make_hkl.py size."""
    return TransformOptions(resize_height=256, resize_width=256)
