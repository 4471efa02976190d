"""Finding a stock Caffe for the tests that run the real thing (train the examples, parse
prototxts with Caffe's own tools).

``tools/install_caffe.sh`` installs Debian's CPU-only Caffe 1.0 into
``~/.cache/imagenet-db/caffe-cpu`` (see that script); a Caffe on PATH or named by
``IMAGENET_DB_CAFFE`` is used as well.
"""
import os
import shutil
from pathlib import Path
from typing import Optional

DEFAULT_PREFIX = Path.home() / ".cache" / "imagenet-db" / "caffe-cpu"


def find_caffe_tool(name: str = "caffe") -> Optional[str]:
    """Path of Caffe's command-line tool ``name`` ('caffe', 'classification',
    'upgrade_net_proto_text', ...), or None: beside ``$IMAGENET_DB_CAFFE`` (the path of a
    ``caffe`` binary), in ``$IMAGENET_DB_CAFFE_PREFIX/bin`` or ``~/.cache/imagenet-db/caffe-cpu/bin``
    (tools/install_caffe.sh), or on PATH."""
    candidates = []
    if os.environ.get("IMAGENET_DB_CAFFE"):
        candidates.append(Path(os.environ["IMAGENET_DB_CAFFE"]).parent / name)
    prefix = Path(os.environ.get("IMAGENET_DB_CAFFE_PREFIX", DEFAULT_PREFIX))
    candidates.append(prefix / "bin" / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)
