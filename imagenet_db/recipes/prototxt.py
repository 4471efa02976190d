"""Caffe network and solver definitions (prototxt text) for the databases imagenet-db builds.

``create_imagenet --prototxt`` writes into OUTDIR, filled with OUTDIR's absolute paths, the
number of classes and the backend:

* fixed-size builds (the default 256x256 squash, DIGITS' modes, convnet2): CaffeNet, as BVLC's
  ``models/bvlc_reference_caffenet`` (same layers and hyperparameters; Data layers with crop 227,
  mirror in TRAIN only, ``mean_file`` imagenet_mean.binaryproto) and the ImageNet tutorial's solver
  (batch 256, base_lr 0.01, step 100,000 x 0.1, 450,000 iterations, momentum 0.9,
  weight_decay 0.0005, snapshot every 10,000);
* varying-size builds (``--shorter_side 256 --encoded --mean_crop 224``): ResNet-50 with the
  layers and names of KaimingHe/deep-residual-networks' ResNet-50 (BatchNorm + Scale), Data
  layers with crop 224 (= --mean_crop), ``force_color`` for encoded datums and the mean's three
  ``mean_value``s (Caffe only accepts a ``mean_file`` of the datums' full size, which varying
  sizes do not have), and He et al.'s solver (lr 0.1 /10 at 150k and 300k, 600k iterations,
  momentum 0.9, weight decay 0.0001, batch 32 x iter_size 8 = 256).

The files are ``train_val.prototxt``, ``solver.prototxt`` and ``deploy.prototxt``; the text is
rendered from small Python descriptions by ``render`` (our own writer), and parses as Caffe's
NetParameter / SolverParameter (``imagenet_db.protos``). ``example_files()`` renders the
committed ``examples/imagenet/*.prototxt`` (run this module with ``--examples DIR`` to redo them).
"""
from __future__ import annotations

import math
import os
import sys
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from imagenet_db.engine.files import write_file_atomic
from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs.meanfile import channel_means


class Enum(str):
    """A prototxt enum value (written without quotes), e.g. Enum('MAX')."""


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def render(fields: Sequence[Tuple[str, object]], indent: int = 0) -> str:
    """Text-format a message given as [(name, value)]: value is a scalar (str/int/float/bool/Enum),
    a nested list of pairs (a sub-message), or a comment when name is '#'."""
    pad = "  " * indent
    lines = []
    for name, value in fields:
        if name == "#":
            lines += [f"{pad}# {line}" for line in textwrap.wrap(str(value), 92)]
        elif isinstance(value, list):
            lines.append(f"{pad}{name} {{")
            lines.append(render(value, indent + 1))
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return "\n".join(line for line in lines if line != "")


def layer(name: str, type_: str, bottom=(), top=(), **extra) -> Tuple[str, list]:
    """One ``layer { }`` entry; ``extra`` values are lists of pairs (params) or [(..), ..]."""
    body: list = [("name", name), ("type", type_)]
    body += [("bottom", b) for b in ([bottom] if isinstance(bottom, str) else bottom)]
    body += [("top", t) for t in ([top] if isinstance(top, str) else top)]
    for key, value in extra.items():
        if key == "params":
            body += [("param", p) for p in value]
        else:
            body.append((key, value))
    return ("layer", body)


@dataclass
class DataSpec:
    """Where a net's Data layers read from and how they transform the input.

    train_source, val_source: database paths as written into the prototxt. backend: 'lmdb' or
    'leveldb'. crop: crop_size. mean_file: a .binaryproto of the datums' full size, or None to use
    mean_values (B, G, R) - needed for variable-size databases (Caffe checks that a mean_file has
    the datum's height/width). force_color: decode encoded datums as 3-channel (grayscale JPEGs
    stored as they are would otherwise come out with 1 channel).
    """
    train_source: str
    val_source: str
    backend: str = "lmdb"
    crop: int = 227
    mean_file: Optional[str] = None
    mean_values: Tuple[float, ...] = ()
    force_color: bool = False
    train_batch: int = 256
    val_batch: int = 50


def _transform(spec: DataSpec, train: bool) -> list:
    body: list = [("mirror", train), ("crop_size", spec.crop)]
    if spec.mean_file:
        body.append(("mean_file", spec.mean_file))
    else:
        body += [("mean_value", round(float(v), 4)) for v in spec.mean_values]
    if spec.force_color:
        body.append(("force_color", True))
    return body


def data_layers(spec: DataSpec) -> List[Tuple[str, list]]:
    """The TRAIN and TEST Data layers (tops 'data' and 'label')."""
    out = []
    for phase, source, batch in (("TRAIN", spec.train_source, spec.train_batch),
                                 ("TEST", spec.val_source, spec.val_batch)):
        out.append(layer("data", "Data", top=("data", "label"),
                         include=[("phase", Enum(phase))],
                         transform_param=_transform(spec, phase == "TRAIN"),
                         data_param=[("source", source), ("batch_size", batch),
                                     ("backend", Enum(spec.backend.upper()))]))
    return out


def input_layer(batch: int, channels: int, size: int) -> Tuple[str, list]:
    """Deploy input: ``Input`` layer of shape batch x channels x size x size."""
    return layer("data", "Input", top="data",
                 input_param=[("shape", [("dim", batch), ("dim", channels), ("dim", size),
                                         ("dim", size)])])


# ------------------------------------------------------------------ CaffeNet
_LEARN = [[("lr_mult", 1), ("decay_mult", 1)], [("lr_mult", 2), ("decay_mult", 0)]]


def _conv(name, bottom, num, kernel, std, bias, train, stride=1, pad=0, group=1):
    param = [("num_output", num)]
    if pad:
        param.append(("pad", pad))
    param.append(("kernel_size", kernel))
    if stride != 1:
        param.append(("stride", stride))
    if group != 1:
        param.append(("group", group))
    extra = _learned(param, std, bias, train)
    return layer(name, "Convolution", bottom, name, convolution_param=param, **extra)


def _fc(name, bottom, num, std, bias, train):
    param = [("num_output", num)]
    extra = _learned(param, std, bias, train)
    return layer(name, "InnerProduct", bottom, name, inner_product_param=param, **extra)


def _learned(param: list, std: float, bias: float, train: bool) -> dict:
    """In a TRAIN net: appends the Gaussian weight (``std``) and constant bias fillers to a
    layer's ``param`` and returns its learning rates (``params``: ``_LEARN``); else {}."""
    if not train:
        return {}
    param += [("weight_filler", [("type", "gaussian"), ("std", std)]),
              ("bias_filler", [("type", "constant"), ("value", bias)])]
    return {"params": _LEARN}


def _relu(name, blob):
    return layer(name, "ReLU", blob, blob)


def _maxpool(name, bottom, kernel=3, stride=2):
    return layer(name, "Pooling", bottom, name,
                 pooling_param=[("pool", Enum("MAX")), ("kernel_size", kernel), ("stride", stride)])


def _lrn(name, bottom):
    return layer(name, "LRN", bottom, name,
                 lrn_param=[("local_size", 5), ("alpha", 0.0001), ("beta", 0.75)])


def _dropout(name, blob):
    return layer(name, "Dropout", blob, blob, dropout_param=[("dropout_ratio", 0.5)])


def caffenet_layers(num_classes: int, train: bool) -> list:
    """CaffeNet's layers from conv1 to fc8 (bvlc_reference_caffenet's hyperparameters)."""
    t = train
    return [
        _conv("conv1", "data", 96, 11, 0.01, 0, t, stride=4), _relu("relu1", "conv1"),
        _maxpool("pool1", "conv1"), _lrn("norm1", "pool1"),
        _conv("conv2", "norm1", 256, 5, 0.01, 1, t, pad=2, group=2), _relu("relu2", "conv2"),
        _maxpool("pool2", "conv2"), _lrn("norm2", "pool2"),
        _conv("conv3", "norm2", 384, 3, 0.01, 0, t, pad=1), _relu("relu3", "conv3"),
        _conv("conv4", "conv3", 384, 3, 0.01, 1, t, pad=1, group=2), _relu("relu4", "conv4"),
        _conv("conv5", "conv4", 256, 3, 0.01, 1, t, pad=1, group=2), _relu("relu5", "conv5"),
        _maxpool("pool5", "conv5"),
        _fc("fc6", "pool5", 4096, 0.005, 1, t), _relu("relu6", "fc6"), _dropout("drop6", "fc6"),
        _fc("fc7", "fc6", 4096, 0.005, 1, t), _relu("relu7", "fc7"), _dropout("drop7", "fc7"),
        _fc("fc8", "fc7", num_classes, 0.01, 0, t),
    ]


def _heads(top: str, train: bool) -> list:
    if not train:
        return [layer("prob", "Softmax", top, "prob")]
    return [layer("accuracy", "Accuracy", (top, "label"), "accuracy",
                  include=[("phase", Enum("TEST"))]),
            layer("loss", "SoftmaxWithLoss", (top, "label"), "loss")]


def caffenet_train_val(spec: DataSpec, num_classes: int = 1000, comments=()) -> str:
    """CaffeNet train_val.prototxt text over ``spec``'s databases."""
    return _net("CaffeNet", data_layers(spec) + caffenet_layers(num_classes, True)
                + _heads("fc8", True), comments)


def caffenet_deploy(num_classes: int = 1000, crop: int = 227, comments=()) -> str:
    """CaffeNet deploy.prototxt text: Input 10x3xcropxcrop, softmax 'prob'."""
    return _net("CaffeNet", [input_layer(10, 3, crop)] + caffenet_layers(num_classes, False)
                + _heads("fc8", False), comments)


def _net(name: str, layers: list, comments: Sequence[str] = ()) -> str:
    head = [("#", c) for c in comments]
    return render(head + [("name", name)] + layers) + "\n"


# ------------------------------------------------------------------ ResNet-50
def _bn_scale(suffix: str, blob: str, train: bool) -> list:
    bn: dict = {}
    if not train:
        bn["batch_norm_param"] = [("use_global_stats", True)]
    return [layer(f"bn{suffix}", "BatchNorm", blob, blob, **bn),
            layer(f"scale{suffix}", "Scale", blob, blob, scale_param=[("bias_term", True)])]


def _res_conv(name, bottom, num, kernel, stride, pad, train, bias=False):
    param = [("num_output", num), ("kernel_size", kernel), ("pad", pad), ("stride", stride)]
    if not bias:
        param.append(("bias_term", False))
    if train:
        param.append(("weight_filler", [("type", "msra")]))
        if bias:
            param.append(("bias_filler", [("type", "constant"), ("value", 0)]))
    return layer(name, "Convolution", bottom, name, convolution_param=param)


def resnet50_layers(num_classes: int, train: bool) -> list:
    """ResNet-50's layers (KaimingHe/deep-residual-networks names): conv1 ... fc<N>."""
    out = [_res_conv("conv1", "data", 64, 7, 2, 3, train, bias=True)]  # conv1 has a bias
    out += _bn_scale("_conv1", "conv1", train)
    out += [layer("conv1_relu", "ReLU", "conv1", "conv1"),
            layer("pool1", "Pooling", "conv1", "pool1",
                  pooling_param=[("kernel_size", 3), ("stride", 2), ("pool", Enum("MAX"))])]
    bottom = "pool1"
    stages = [(2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)]
    for stage, blocks, width in stages:
        for b in range(blocks):
            tag = f"{stage}{chr(ord('a') + b)}"
            stride = 2 if (b == 0 and stage > 2) else 1
            if b == 0:
                shortcut = f"res{tag}_branch1"
                out.append(_res_conv(shortcut, bottom, width * 4, 1, stride, 0, train))
                out += _bn_scale(f"{tag}_branch1", shortcut, train)
            else:
                shortcut = bottom
            prev = bottom
            for part, (num, kernel, pad, s) in zip("abc", ((width, 1, 0, stride), (width, 3, 1, 1),
                                                          (width * 4, 1, 0, 1))):
                name = f"res{tag}_branch2{part}"
                out.append(_res_conv(name, prev, num, kernel, s, pad, train))
                out += _bn_scale(f"{tag}_branch2{part}", name, train)
                if part != "c":
                    out.append(layer(f"{name}_relu", "ReLU", name, name))
                prev = name
            out.append(layer(f"res{tag}", "Eltwise", (shortcut, prev), f"res{tag}"))
            out.append(layer(f"res{tag}_relu", "ReLU", f"res{tag}", f"res{tag}"))
            bottom = f"res{tag}"
    out.append(layer("pool5", "Pooling", bottom, "pool5",
                     pooling_param=[("kernel_size", 7), ("stride", 1), ("pool", Enum("AVE"))]))
    fc = [("num_output", num_classes)]
    if train:
        fc += [("weight_filler", [("type", "msra")]), ("bias_filler", [("type", "constant"),
                                                                       ("value", 0)])]
    out.append(layer(f"fc{num_classes}", "InnerProduct", "pool5", f"fc{num_classes}",
                     inner_product_param=fc))
    return out


def resnet50_train_val(spec: DataSpec, num_classes: int = 1000, comments=()) -> str:
    """ResNet-50 train_val.prototxt text (BatchNorm statistics by phase)."""
    return _net("ResNet-50", data_layers(spec) + resnet50_layers(num_classes, True)
                + _heads(f"fc{num_classes}", True), comments)


def resnet50_deploy(num_classes: int = 1000, crop: int = 224, comments=()) -> str:
    """ResNet-50 deploy.prototxt text: Input 1x3xcropxcrop, softmax 'prob'."""
    return _net("ResNet-50", [input_layer(1, 3, crop)] + resnet50_layers(num_classes, False)
                + _heads(f"fc{num_classes}", False), comments)


# ------------------------------------------------------------------ solvers
def solver(net: str, snapshot_prefix: str, recipe: str = "caffenet", mode: str = "GPU",
           test_iter: int = 1000, comments=()) -> str:
    """solver.prototxt text. 'caffenet': Caffe's ImageNet tutorial (base_lr 0.01, step 100,000 x0.1,
    450,000 iterations, momentum 0.9, weight_decay 0.0005, snapshot 10,000; test 1,000 x 50 =
    the 50,000 val images every 1,000 iterations). 'resnet50': He et al. 2015 (lr 0.1 /10 at
    150k and 300k, 600k iterations, momentum 0.9, weight_decay 0.0001) with batch 32 x iter_size 8
    = 256 images per step. test_iter: TEST batches per test (val images / val batch size)."""
    if recipe == "caffenet":
        body = [("net", net), ("test_iter", test_iter), ("test_interval", 1000), ("base_lr", 0.01),
                ("lr_policy", "step"), ("gamma", 0.1), ("stepsize", 100000), ("display", 20),
                ("max_iter", 450000), ("momentum", 0.9), ("weight_decay", 0.0005),
                ("snapshot", 10000), ("snapshot_prefix", snapshot_prefix),
                ("solver_mode", Enum(mode))]
    elif recipe == "resnet50":
        body = [("net", net), ("test_iter", test_iter), ("test_interval", 5000), ("base_lr", 0.1),
                ("lr_policy", "multistep"), ("gamma", 0.1), ("stepvalue", 150000),
                ("stepvalue", 300000), ("display", 20), ("max_iter", 600000),
                ("iter_size", 8), ("momentum", 0.9), ("weight_decay", 0.0001),
                ("snapshot", 10000), ("snapshot_prefix", snapshot_prefix),
                ("solver_mode", Enum(mode))]
    else:
        raise ValueError(f"unknown solver recipe {recipe!r}")
    return render([("#", c) for c in comments] + body) + "\n"


# ------------------------------------------------------------------ what create_imagenet writes
PROTOTXT_NAMES = ("train_val.prototxt", "solver.prototxt", "deploy.prototxt")
VAL_BATCH = 50


def prototxt_files(outdir: str, num_classes: int, backend: str, transform, val_count: int,
                   mean: Optional[object], mean_crop: int = 0) -> Dict[str, str]:
    """{file name: text} of the three prototxts for a build in ``outdir`` (see module doc).

    num_classes: synsets. backend: 'lmdb'/'leveldb'. transform: the build's TransformOptions.
    val_count: images in the val database (test_iter = ceil(val_count / 50)). mean: the train
    mean ((C, H, W) float array) or None. mean_crop: the crop the mean was taken over (0: whole
    images). Paths are absolute. Raises ImagenetDbError when the build cannot feed a net:
    varying sizes without a mean_crop mean, or images smaller than the crop.
    """
    root = os.path.abspath(outdir)
    train_db = os.path.join(root, f"ilsvrc12_train_{backend}")
    val_db = os.path.join(root, f"ilsvrc12_val_{backend}")
    test_iter = max(1, math.ceil(val_count / VAL_BATCH))
    color = transform.is_color
    force_color = transform.encoded and color
    what = f"{num_classes} classes, {backend}"
    if transform.fixed_size:
        size = min(transform.resize_width, transform.resize_height)
        crop = mean_crop or min(227, size)
        if mean is None:
            raise ImagenetDbError(f"{root}: no train mean to put in the prototxt")
        spec = DataSpec(train_db, val_db, backend, crop, force_color=force_color,
                        val_batch=VAL_BATCH,
                        mean_file=None if mean_crop else os.path.join(root, "imagenet_mean.binaryproto"),
                        mean_values=tuple(channel_means(mean)) if mean_crop else ())
        note = [f"CaffeNet over {root} ({what}; {transform.resize_width}x"
                f"{transform.resize_height} images, crop {crop}). {MARKER}"]
        return _net_files(root, "caffenet", caffenet_train_val(spec, num_classes, note),
                          caffenet_deploy(num_classes, crop, note), test_iter, note)
    if not mean_crop or mean is None:
        raise ImagenetDbError(f"{root}: the images have varying sizes; pass --mean_crop N (the "
                              f"training crop, e.g. 224) so the prototxt gets mean values")
    if transform.only_shrink or transform.resize_mode != "shorter_side" or \
            transform.shorter_side < mean_crop:
        note_size = "some images may be smaller than the crop: Caffe then stops"
    else:
        note_size = f"shorter side {transform.shorter_side} >= crop {mean_crop}"
    spec = DataSpec(train_db, val_db, backend, mean_crop, mean_values=tuple(channel_means(mean)),
                    force_color=force_color, train_batch=32, val_batch=VAL_BATCH)
    note = [f"ResNet-50 over {root} ({what}; varying sizes, {note_size}; crop {mean_crop}, "
            f"mean_value = the mean of the centre {mean_crop}x{mean_crop} crops). {MARKER}"]
    return _net_files(root, "resnet50", resnet50_train_val(spec, num_classes, note),
                      resnet50_deploy(num_classes, mean_crop, note), test_iter, note)


def _net_files(root: str, recipe: str, train_val: str, deploy: str, test_iter: int,
               note: List[str]) -> Dict[str, str]:
    """{file name: text} of one net in ``root``: its train_val and deploy texts and the solver
    of ``recipe`` ('caffenet', 'resnet50') over ROOT/train_val.prototxt."""
    return {"train_val.prototxt": train_val,
            "solver.prototxt": solver(os.path.join(root, "train_val.prototxt"),
                                      os.path.join(root, f"{recipe}_train"), recipe,
                                      test_iter=test_iter, comments=note),
            "deploy.prototxt": deploy}


MARKER = "Written by create_imagenet --prototxt."


def check_prototxt_targets(outdir: str, overwrite: bool) -> None:
    """Before a build: refuse (ImagenetDbError) a train_val/solver/deploy.prototxt already in
    ``outdir`` that create_imagenet did not write (no MARKER line), unless ``overwrite``; ours
    are compared with the new text at the end (``write_prototxts``)."""
    if overwrite:
        return
    for name in PROTOTXT_NAMES:
        path = os.path.join(outdir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
            if "Written by create_imagenet" not in head:
                raise ImagenetDbError(f"{path} exists and was not written by create_imagenet "
                                      f"--prototxt; pass --overwrite to replace it")


def write_prototxts(outdir: str, found, transform, backend: str, summaries: dict,
                    mean_crop: int = 0, overwrite: bool = False) -> List[str]:
    """Write ``prototxt_files`` for a finished ``create_imagenet`` build into ``outdir``.

    found: the Dataset (its synsets give the class count). summaries: create_imagenet's
    {'train': ConvertSummary, 'val': ...} (the train mean, the val count). An existing file
    with other contents is refused unless ``overwrite`` (identical files are kept). Returns
    the paths written. Raises ImagenetDbError (see prototxt_files; also without a val split).
    """
    if "val" not in summaries:
        raise ImagenetDbError(f"{outdir}: no val database, so no TEST net for the prototxt")
    mean = summaries["train"].mean if "train" in summaries else None
    files = prototxt_files(outdir, len(found.synsets), backend, transform,
                           summaries["val"].written, mean, mean_crop)
    written = []
    for name, text in files.items():
        path = os.path.join(outdir, name)
        data = text.encode("utf-8")
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
            if not overwrite:
                raise ImagenetDbError(f"{path} exists with other contents; pass --overwrite to "
                                      f"replace it")
        write_file_atomic(path, data)
        written.append(path)
    return written


# ------------------------------------------------------------------ examples/imagenet
EXAMPLE_NOTE = ("From the repository root after `create_imagenet /data/ilsvrc2012 imagenet_out/` "
                "(or use create_imagenet --prototxt, which fills in the real paths): caffe train "
                "--solver examples/imagenet/solver.prototxt")
RESNET_NOTE = ("From the repository root after `create_imagenet --shorter_side 256 --encoded "
               "--mean_crop 224 /data/ilsvrc2012 imagenet_resnet/`: caffe train --solver "
               "examples/imagenet/resnet50_solver.prototxt. Replace the mean_values (Caffe's "
               "104/117/123) with the three values create_imagenet prints, or use --prototxt.")


def example_files() -> Dict[str, str]:
    """{file name: text} of examples/imagenet/: CaffeNet over imagenet_out/ and ResNet-50 over
    imagenet_resnet/ (paths relative to the repository root)."""
    caffenet = DataSpec("imagenet_out/ilsvrc12_train_lmdb", "imagenet_out/ilsvrc12_val_lmdb",
                        mean_file="imagenet_out/imagenet_mean.binaryproto")
    resnet = DataSpec("imagenet_resnet/ilsvrc12_train_lmdb", "imagenet_resnet/ilsvrc12_val_lmdb",
                      crop=224, mean_values=(104.0, 117.0, 123.0), force_color=True,
                      train_batch=32)
    return {
        "train_val.prototxt": caffenet_train_val(caffenet, 1000, [EXAMPLE_NOTE]),
        "solver.prototxt": solver("examples/imagenet/train_val.prototxt",
                                  "examples/imagenet/caffenet_train", "caffenet",
                                  comments=[EXAMPLE_NOTE]),
        "deploy.prototxt": caffenet_deploy(1000, 227, [EXAMPLE_NOTE]),
        "resnet50_train_val.prototxt": resnet50_train_val(resnet, 1000, [RESNET_NOTE]),
        "resnet50_solver.prototxt": solver("examples/imagenet/resnet50_train_val.prototxt",
                                           "examples/imagenet/resnet50_train", "resnet50",
                                           comments=[RESNET_NOTE]),
        "resnet50_deploy.prototxt": resnet50_deploy(1000, 224, [RESNET_NOTE]),
    }


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--examples":
        sys.exit("usage: python -m imagenet_db.recipes.prototxt --examples DIR")
    os.makedirs(sys.argv[2], exist_ok=True)
    for name, text in example_files().items():
        with open(os.path.join(sys.argv[2], name), "w", encoding="utf-8") as f:
            f.write(text)
        print(os.path.join(sys.argv[2], name))
