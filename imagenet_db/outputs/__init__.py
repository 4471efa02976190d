"""Output formats: one module per format, registered in ``OUTPUTS`` by the name the commands use.

Each format is a class implementing ``outputs.base.Output`` (encode on the workers; add /
commit / close / abort on the writing thread; resume by record index). Caffe's Datum
databases share ``outputs.datumdb`` (keys ``%08d_relpath``, Datum values from
``outputs.datum``); they are read back, read-only and lock-free, by ``imagenet_db.readers``.

To add a format: write ``outputs/<format>.py`` with its ``Output`` class and add one line to
``OUTPUTS``. The Caffe Datum databases (``BACKENDS``: the ``DatumWriter`` outputs) are the
``--backend`` choices that ``verify`` and the mean tools read; the others are
``create_imagenet --format`` choices (``FORMATS``, with their recipe in ``recipes.formats``).
"""
from typing import Dict, Type

from imagenet_db.errors import DatabaseError
from imagenet_db.outputs import cuda_convnet2, folder, leveldb, lmdb, theano_alexnet
from imagenet_db.outputs.base import Output
from imagenet_db.outputs.datumdb import DatumWriter

OUTPUTS: Dict[str, Type[Output]] = {
    "lmdb": lmdb.LmdbWriter,        # Caffe's default: data_param { backend: LMDB }
    "leveldb": leveldb.LevelDbWriter,  # data_param { backend: LEVELDB }
    "cuda-convnet2": cuda_convnet2.CudaConvnet2Output,  # make-data.py batches + batches.meta
    "theano-alexnet": theano_alexnet.TheanoAlexnetOutput,  # theano_alexnet hickle batches
    "folder": folder.FolderOutput,  # train/<wnid>/*.JPEG image files (ImageFolder, Torch)
}
# the Caffe Datum databases (--backend), read back by imagenet_db.readers
BACKENDS = tuple(name for name, cls in OUTPUTS.items() if issubclass(cls, DatumWriter))
# create_imagenet --format: Caffe's databases (of --backend), then every other output
FORMATS = ("caffe",) + tuple(name for name in OUTPUTS if name not in BACKENDS)


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
