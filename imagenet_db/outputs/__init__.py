"""Output formats: one module per format, registered in ``OUTPUTS`` by the name the commands use.

Each format is a class implementing ``outputs.base.Output`` (encode on the workers; add /
commit / close / abort on the writing thread; resume by record index). Caffe's Datum
databases share ``outputs.datumdb`` (keys ``%08d_relpath``, Datum values from
``outputs.datum``); they are read back, read-only and lock-free, by ``imagenet_db.readers``.

To add a format: write ``outputs/<format>.py`` with its ``Output`` class, whose class
attributes declare the rest (``format_spec``: an ``outputs.spec.FormatSpec`` with its
default transform, transform checks, stages, folder, label order and ``create_imagenet``
flags; ``datum_database``; ``verify_accepts``), and add one line to ``OUTPUTS``. Derived
from it, when called: ``backends()`` (the Caffe Datum databases: ``--backend`` choices),
``format_specs()`` (the ``create_imagenet --format`` choices, in registry order; Caffe's LMDB
and LevelDB share the one format 'caffe', ``outputs.caffe``).
"""
from typing import Dict, Tuple, Type

from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.outputs import (cuda_convnet2, folder, leveldb, lmdb, ssd, tfrecord,
                                 theano_alexnet, webdataset)
from imagenet_db.outputs.base import Output
from imagenet_db.outputs.spec import FormatSpec

OUTPUTS: Dict[str, Type[Output]] = {
    "lmdb": lmdb.LmdbWriter,        # Caffe's default: data_param { backend: LMDB }
    "leveldb": leveldb.LevelDbWriter,  # data_param { backend: LEVELDB }
    "cuda-convnet2": cuda_convnet2.CudaConvnet2Output,  # make-data.py batches + batches.meta
    "theano-alexnet": theano_alexnet.TheanoAlexnetOutput,  # theano_alexnet hickle batches
    "folder": folder.FolderOutput,  # train/<wnid>/*.JPEG image files (ImageFolder, Torch)
    "webdataset": webdataset.WebDatasetOutput,  # tar shards + DALI .idx + timm's _info.json
    "tfrecord": tfrecord.TfRecordOutput,  # build_imagenet_data.py's TFRecords + DALI indexes
    "ssd": ssd.SsdWriter,  # SSD-Caffe's AnnotatedDatum LMDB + labelmap.prototxt (boxes)
}
# Read from OUTPUTS when called (the commands build their flags so), so that an output
# registered later (a plugin, a test) is offered everywhere.
def backends() -> Tuple[str, ...]:
    """The Caffe Datum databases among OUTPUTS (``datum_database``): the --backend choices of
    convert_imageset and create_imagenet ('lmdb', 'leveldb')."""
    return tuple(name for name, output in OUTPUTS.items() if output.datum_database)


def format_specs() -> Dict[str, FormatSpec]:
    """The ``create_imagenet --format`` choices: {name: FormatSpec} of each output's
    ``format_spec``, in registry order ('caffe' for lmdb and leveldb, then the others)."""
    specs: Dict[str, FormatSpec] = {}
    for output in OUTPUTS.values():
        specs.setdefault(output.format_spec.name, output.format_spec)
    return specs


def datum_formats() -> Tuple[str, ...]:
    """The formats whose outputs are Caffe Datum databases ('caffe'): --encoded, the mean,
    --prototxt and report.html apply to them."""
    return tuple(name for name, spec in format_specs().items() if spec.datum_databases)


def encoded_formats() -> Tuple[str, ...]:
    """The formats that take --encoded: those of Datum databases and those declaring
    ``takes_encoded`` ('caffe', 'ssd')."""
    return tuple(name for name, spec in format_specs().items()
                 if spec.datum_databases or spec.takes_encoded)


def format_spec(name: str) -> FormatSpec:
    """The ``FormatSpec`` of ``create_imagenet --format name``; ImagenetDbError for an unknown
    name."""
    specs = format_specs()
    try:
        return specs[name]
    except KeyError:
        raise ImagenetDbError(f"unknown format {name!r}; expected one of "
                              f"{', '.join(specs)}") from None


BACKENDS = backends()  # as registered at import (the commands call backends())
FORMATS = tuple(format_specs())  # as registered at import (the commands call format_specs())


def output_class(name: str) -> Type[Output]:
    """The Output class registered as ``name``; DatabaseError for an unknown name."""
    try:
        return OUTPUTS[name]
    except KeyError:
        raise DatabaseError(f"unknown backend {name!r}; expected one of "
                            f"{', '.join(OUTPUTS)}") from None


def open_writer(backend: str, path: str, **kwargs) -> Output:
    """A writer of format ``backend`` creating (or continuing) the output at ``path``."""
    return output_class(backend)(path, **kwargs)
