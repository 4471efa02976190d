"""Output formats: one module per format, registered in ``OUTPUTS`` by the name the commands use.

Each format is a class implementing ``outputs.base.Output`` (encode on the workers; add /
commit / close / abort on the writing thread; resume by record index) and, for reading an
existing output, a reader module with ``iterate(path)`` in ``READERS``. Caffe's Datum
databases share ``outputs.datumdb`` (keys ``%08d_relpath``, Datum values from
``outputs.datum``); they are read read-only and lock-free, without changing their files,
through ``outputs.lmdbreader`` / ``outputs.leveldbreader``, and by position with
``outputs.datumreader.DatumDB`` (public as ``imagenet_db.reader.DatumDB``).

To add a format: write ``outputs/<format>.py`` with its ``Output`` class and add one line to
``OUTPUTS``. The Caffe Datum databases (``READERS``) are the ``--backend`` choices that
``verify`` and the mean tools read; the others are ``create_imagenet --format`` choices
(``FORMATS``, with their recipe in ``recipes.formats``).
"""
import os
from types import ModuleType
from typing import Dict, Iterator, Optional, Tuple, Type

from imagenet_db.errors import DatabaseError
from imagenet_db.outputs import (cuda_convnet2, folder, leveldb, leveldbreader, lmdb, lmdbreader,
                                 tfrecord, theano_alexnet, webdataset)
from imagenet_db.outputs.base import Output

OUTPUTS: Dict[str, Type[Output]] = {
    "lmdb": lmdb.LmdbWriter,        # Caffe's default: data_param { backend: LMDB }
    "leveldb": leveldb.LevelDbWriter,  # data_param { backend: LEVELDB }
    "cuda-convnet2": cuda_convnet2.CudaConvnet2Output,  # make-data.py batches + batches.meta
    "theano-alexnet": theano_alexnet.TheanoAlexnetOutput,  # theano_alexnet hickle batches
    "folder": folder.FolderOutput,  # train/<wnid>/*.JPEG image files (ImageFolder, Torch)
    # sharded outputs (outputs.shards.ShardFormat, built by pipeline_shards): issue 22
    "webdataset": webdataset.WebDatasetOutput,  # tar shards + DALI .idx + timm's _info.json
    "tfrecord": tfrecord.TfRecordOutput,  # build_imagenet_data.py's TFRecords + DALI indexes
}
# the Caffe Datum databases: read-only, lock-free readers (outputs.lmdbreader, leveldbreader)
READERS: Dict[str, ModuleType] = {"lmdb": lmdbreader, "leveldb": leveldbreader}
BACKENDS = tuple(READERS)  # the Caffe Datum databases (--backend)
# create_imagenet --format: Caffe's databases (of --backend), then every other output
FORMATS = ("caffe",) + tuple(name for name in OUTPUTS if name not in READERS)


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


def detect_backend(path: str) -> Optional[str]:
    """The Datum database backend whose files ``path`` holds ('lmdb' or 'leveldb'), else None."""
    for name in READERS:
        if OUTPUTS[name].detect(path):
            return name
    return None


def iterate_db(path: str, backend: Optional[str] = None) -> Iterator[Tuple[bytes, bytes]]:
    """Yield (key, value) pairs of an existing LMDB or LevelDB in key order, read-only.

    backend: 'lmdb', 'leveldb', or None to detect from the files. Read-only and lock-free:
    nothing is written next to the database (see ``outputs.lmdbreader``, ``leveldbreader``).
    Raises DatabaseError when ``path`` is not a database of that backend.
    """
    if not os.path.isdir(path):
        raise DatabaseError(f"{path}: no such database directory")
    found = detect_backend(path)
    if backend is None:
        backend = found
    if found is None or found != backend:
        what = f"a {found} database" if found else "neither an LMDB nor a LevelDB database"
        raise DatabaseError(f"{path}: is {what}" + (f", not {backend}" if backend else ""))
    yield from READERS[backend].iterate(path)
