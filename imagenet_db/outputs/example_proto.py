"""TensorFlow's ``tf.train.Example`` message, built with the protobuf runtime (no TensorFlow).

The messages and field numbers are those of TensorFlow's ``core/example/example.proto`` and
``feature.proto`` (package ``tensorflow``, proto3), declared here through a
``FileDescriptorProto`` instead of a compiled file:

    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }
    Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                             Int64List int64_list = 3; } }
    Features  { map<string, Feature> feature = 1; }
    Example   { Features features = 1; }

``example_bytes(features)`` serializes with ``deterministic=True`` (map entries in key order),
so that a rebuild gives the same bytes; ``parse_example`` reads one back.
"""
from typing import Dict, List, Union

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_FILE = "imagenet_db/tensorflow_example.proto"


def _message(file, name: str, fields, nested=None, map_entry: bool = False):
    message = file.message_type.add() if nested is None else nested.nested_type.add()
    message.name = name
    if map_entry:
        message.options.map_entry = True
    for number, (field_name, kind, label, type_name, oneof) in enumerate(fields, start=1):
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
        if oneof is not None:
            field.oneof_index = oneof
    return message


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=_FILE, package="tensorflow", syntax="proto3")
    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    _message(file, "BytesList", [("value", _F.TYPE_BYTES, rep, None, None)])
    _message(file, "FloatList", [("value", _F.TYPE_FLOAT, rep, None, None)])
    _message(file, "Int64List", [("value", _F.TYPE_INT64, rep, None, None)])
    feature = _message(file, "Feature", [
        ("bytes_list", _F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
        ("float_list", _F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
        ("int64_list", _F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0)])
    feature.oneof_decl.add(name="kind")
    features = _message(file, "Features", [
        ("feature", _F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None)])
    _message(file, "FeatureEntry", [("key", _F.TYPE_STRING, opt, None, None),
                                    ("value", _F.TYPE_MESSAGE, opt, ".tensorflow.Feature", None)],
             nested=features, map_entry=True)
    _message(file, "Example", [("features", _F.TYPE_MESSAGE, opt, ".tensorflow.Features", None)])
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))

FeatureValue = Union[bytes, int, float, List[bytes], List[int], List[float]]


def example_bytes(features: Dict[str, FeatureValue]) -> bytes:
    """A serialized Example holding ``features``: bytes (or a list of bytes) -> bytes_list,
    int (or a list of ints) -> int64_list, float (or a list of floats) -> float_list. An empty
    list must name its kind by the key ending: boxes are float lists except ``.../label``
    (int64), as TF's build_imagenet_data.py. Deterministic (map keys in order)."""
    example = Example()
    feature_map = example.features.feature
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        kind = _kind(key, values)
        getattr(feature_map[key], kind).value.extend(values)
    return example.SerializeToString(deterministic=True)


def _kind(key: str, values: list) -> str:
    if not values:
        return "int64_list" if key.endswith("/label") else "float_list"
    if isinstance(values[0], bytes):
        return "bytes_list"
    if isinstance(values[0], float):
        return "float_list"
    return "int64_list"


def parse_example(data: bytes) -> Dict[str, list]:
    """{feature name: list of values} of a serialized Example (raises
    google.protobuf.message.DecodeError when the bytes are not one)."""
    example = Example()
    example.ParseFromString(data)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out
