"""Caffe protobuf messages (Datum, BlobProto, BlobShape, BlobProtoVector; NetParameter,
SolverParameter, LayerParameter for prototxt files; SSD-Caffe's AnnotatedDatum, AnnotationGroup,
Annotation, NormalizedBBox, LabelMap, LabelMapItem for ``--format ssd``).

The classes are generated from ``proto/caffe.proto`` with grpcio-tools' protoc. An installed
package carries the generated ``imagenet_db/caffe_pb2.py`` (made by ``setup.py`` at build time).
When that module is missing (running from a source checkout) or was generated for a protobuf
runtime this interpreter cannot load, the .proto is compiled once into a per-user cache
directory keyed by the .proto's hash and the protobuf version, and loaded from there.
"""
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _proto_path() -> Path:
    for candidate in (_HERE / "caffe.proto", _HERE.parent / "proto" / "caffe.proto"):
        if candidate.is_file():
            return candidate
    raise ImportError("imagenet_db: caffe.proto not found beside the package or in proto/")


def _compile_into_cache():
    import google.protobuf
    from grpc_tools import protoc

    proto = _proto_path()
    digest = hashlib.sha256(proto.read_bytes() + google.protobuf.__version__.encode()).hexdigest()[:16]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagenet-db"
    out_dir = cache_root / f"caffe_pb2-{digest}"
    module_file = out_dir / "caffe_pb2.py"
    if not module_file.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            rc = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={tmp}", str(proto)])
            if rc != 0:
                raise ImportError(f"protoc could not compile {proto}")
            os.replace(Path(tmp) / "caffe_pb2.py", module_file)
    spec = importlib.util.spec_from_file_location("imagenet_db._caffe_pb2_cached", module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


try:
    from imagenet_db import caffe_pb2 as _pb2  # generated at install time
except Exception:  # missing in a source checkout, or a protobuf runtime version mismatch
    _pb2 = _compile_into_cache()

Datum = _pb2.Datum
BlobShape = _pb2.BlobShape
BlobProto = _pb2.BlobProto
BlobProtoVector = _pb2.BlobProtoVector
# network and solver definitions (prototxt), for checking the files create_imagenet writes
NetParameter = _pb2.NetParameter
SolverParameter = _pb2.SolverParameter
LayerParameter = _pb2.LayerParameter
# SSD-Caffe (weiliu89/caffe, branch ssd): annotated datums and the label map
AnnotatedDatum = _pb2.AnnotatedDatum
AnnotationGroup = _pb2.AnnotationGroup
Annotation = _pb2.Annotation
NormalizedBBox = _pb2.NormalizedBBox
LabelMap = _pb2.LabelMap
LabelMapItem = _pb2.LabelMapItem

__all__ = ["Datum", "BlobShape", "BlobProto", "BlobProtoVector", "NetParameter",
           "SolverParameter", "LayerParameter", "AnnotatedDatum", "AnnotationGroup", "Annotation",
           "NormalizedBBox", "LabelMap", "LabelMapItem"]
