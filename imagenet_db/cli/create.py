"""``create_imagenet SOURCE OUTDIR``: the whole ImageNet recipe in one command.

Build ImageNet training data in one step. --format caffe (default): Caffe's
get_ilsvrc_aux.sh + create_imagenet.sh + make_imagenet_mean.sh: synsets.txt, train.txt,
val.txt (labels = position of the wnid in ASCII order), shuffled ilsvrc12_{train,val}_<backend>
databases and imagenet_mean.binaryproto/.npy, then report.html, a page with
pictures of what was built (--no-report to skip). --format cuda-convnet2: make-data.py's batches
(ilsvrc12_cuda_convnet2/, devkit label order). --format theano-alexnet: theano_alexnet's hickle
batches (ilsvrc12_theano_alexnet/). --format folder: train/<wnid>/ and val/<wnid>/ image
folders (files copied as they are unless a resize is asked). --format webdataset: WebDataset
tar shards with DALI index files and timm's _info.json (webdataset/). --format tfrecord:
TensorFlow's build_imagenet_data.py TFRecords with DALI index files (tfrecord/).
"""
import argparse
import sys
from typing import Dict, Optional, Sequence, Tuple

from imagenet_db.cli.flags import (EXIT_STATUS, SOURCE_EPILOG, apply_recipe_resize,
                                   backend_arg, blacklist_arg, bool_flag, build_args,
                                   build_options, class_selection, empty_classes_arg,
                                   entry_point, executor_for, fast_decode_arg, help_text,
                                   keeps_aspect, normalize_gflags, resize_args, resize_asked,
                                   resize_bools, run_command, seed_arg, selection_args,
                                   stderr_log, transform_options, workers_arg)
from imagenet_db.errors import ImagenetDbError
from imagenet_db.outputs import encoded_formats, format_spec, format_specs
from imagenet_db.outputs.spec import FormatOption


def size_arg(text: str):
    """argparse type of WIDTHxHEIGHT sizes such as 256x256 -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x256, got {text!r}")
    if width < 0 or height < 0:
        raise argparse.ArgumentTypeError("sizes must be >= 0")
    return width, height


def format_flags() -> Dict[str, Tuple[FormatOption, Tuple[str, ...]]]:
    """The formats' own flags (``FormatSpec.options``), in registry order, each once:
    {flag name: (its FormatOption as first declared, the formats declaring it)}."""
    flags: Dict[str, Tuple[FormatOption, Tuple[str, ...]]] = {}
    for spec in format_specs().values():
        for option in spec.options:
            first, owners = flags.get(option.name, (option, ()))
            flags[option.name] = (first, owners + (spec.name,))
    return flags


CREATE_BOOLS = ("encoded", "processes", "overwrite", "progress", "verify", "resume", "strict",
                "fast_decode", "prototxt", "drop_val_blacklist", "report", "allow_empty_classes",
                "boxes_csv")


def create_bools() -> tuple:
    """The boolean flags of create_imagenet (for gflags' --flag=false, ``normalize_gflags``):
    ``CREATE_BOOLS``, the resize modes' and the formats' boolean flags."""
    return CREATE_BOOLS + resize_bools() + tuple(
        name for name, (option, _) in format_flags().items() if option.kind == "bool")


def add_format_flags(parser) -> None:
    """Add every format's own flags (``format_flags``) with their declared help."""
    for name, (option, _) in format_flags().items():
        if option.kind == "bool":
            bool_flag(parser, name, option.help, default=option.default)
        else:
            parser.add_argument(f"--{name}", type=option.type, default=option.default,
                                metavar=option.metavar, choices=option.choices,
                                help=option.help)


def create_parser(prog="create_imagenet") -> argparse.ArgumentParser:
    """Argument parser of create_imagenet SOURCE OUTDIR."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__),
        epilog=SOURCE_EPILOG + " " + EXIT_STATUS)
    p.add_argument("source", metavar="SOURCE", help="an ImageNet distribution (see below)")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the databases and aux files")
    specs = format_specs()
    p.add_argument("--format", dest="output_format", default=next(iter(specs)),
                   choices=tuple(specs),
                   help=f"what to build (default {next(iter(specs))}): "
                        + "; ".join(spec.summary for spec in specs.values()))
    p.add_argument("--resize", type=size_arg, default=None, metavar="WxH",
                   help="resize every image to WIDTHxHEIGHT with --resize_mode (default 256x256 "
                        "squash, as Caffe's create_imagenet.sh and theano-alexnet; folder: none, "
                        "files copied byte for byte; 0x0 = keep size; not used with "
                        "--shorter_side or --min_dim/--max_dim; cuda-convnet2 always uses "
                        "make-data's resize)")
    add_format_flags(p)
    backend_arg(p)
    bool_flag(p, "encoded", "store JPEG bytes instead of raw pixels")
    fast_decode_arg(p)
    resize_args(p, "--resize")
    p.add_argument("--mean_crop", type=int, default=0, metavar="N",
                   help="take the mean over the centre NxN window of every train image (needed "
                        "when sizes vary, e.g. --shorter_side 256 --mean_crop 224); default: "
                        "whole images, and no mean when sizes vary")
    bool_flag(p, "prototxt", "also write Caffe prototxts into OUTDIR (train_val, solver, deploy; "
                             "CaffeNet for fixed-size builds, ResNet-50 for --shorter_side "
                             "builds) filled with the real paths, class count and backend")
    seed_arg(p, "shuffle seed of the training images, a 64-bit integer (and seed of the "
                "fill/half_crop noise; theano-alexnet: numpy's legacy shuffle, --seed 1 = "
                "upstream's order)")
    workers_arg(p, cluster=True)
    bool_flag(p, "overwrite", "replace existing outputs (databases are swapped in when complete)")
    bool_flag(p, "verify", "archives only: first check their MD5 against the published values "
                       "(reads all ~147 GB)")
    blacklist_arg(p)
    empty_classes_arg(p)
    selection_args(p)
    bool_flag(p, "boxes_csv", "also write OUTDIR/boxes.csv, the SOURCE's bounding boxes in the "
                              "layout of TensorFlow's process_bounding_boxes.py (filename,xmin,"
                              "ymin,xmax,ymax relative to the image as distributed)")
    bool_flag(p, "report", "at the end, write OUTDIR/report.html (imagenet-db report: counts, "
                       "sizes, class histogram, mean image, samples, skips, settings; default "
                       "on, --no-report to skip)", default=True)
    build_args(p, "OUTDIR: finished stages (aux files, train DB, val DB, mean) are "
                         "kept, the interrupted one continues")
    return p


def create_transform(args):
    """The TransformOptions of parsed create_imagenet arguments: the resize flags, with the
    format's defaults (``FormatSpec.default_transform``: 256x256 squash for caffe and
    theano-alexnet, a copy for folder, make-data's resize for cuda-convnet2, which takes no
    resize flag: ``FormatSpec.own_resize``). Raises ImagenetDbError for flags the format does
    not have."""
    from dataclasses import replace

    spec = format_spec(args.output_format)
    _refuse_foreign_flags(args, spec.name)
    if not spec.own_resize:
        apply_recipe_resize(args)
    if args.encoded and not (spec.datum_databases or spec.takes_encoded):
        raise ImagenetDbError(f"--encoded applies to --format {' / '.join(encoded_formats())} only "
                              f"({spec.name} decides how it stores images)")
    defaults = spec.default_transform(recipe_options(args))
    if spec.own_resize:
        if args.resize or resize_asked(args):
            raise ImagenetDbError(spec.own_resize)
        return replace(defaults, fast_decode=args.fast_decode)
    default = (0, 0) if keeps_aspect(args) else (defaults.resize_width, defaults.resize_height)
    width, height = args.resize or default
    return transform_options(args, width, height, encoded=args.encoded or defaults.encoded,
                             encode_type=defaults.encode_type, fast_decode=args.fast_decode)


def _refuse_foreign_flags(args, name: str) -> None:
    """ImagenetDbError for a format's own flag (``only_for_owner``) given to format ``name``."""
    for flag, (option, owners) in format_flags().items():
        if option.only_for_owner and name not in owners and \
                getattr(args, flag) != option.default:
            raise ImagenetDbError(f"--{flag} applies to --format {' / '.join(owners)} only")


def recipe_options(args):
    """The RecipeOptions of parsed create_imagenet arguments (the formats' own flags as
    fields, or in ``format_options`` when not one)."""
    from imagenet_db.recipes.formats import RECIPE_FIELDS, RecipeOptions

    values = {name: getattr(args, name) for name in format_flags()}
    return RecipeOptions(output_format=args.output_format, backend=args.backend, seed=args.seed,
                         mean_crop=args.mean_crop, prototxt=args.prototxt, report=args.report,
                         drop_blacklist=args.drop_val_blacklist,
                         allow_empty_classes=args.allow_empty_classes, verify=args.verify,
                         selection=class_selection(args),
                         boxes_csv=args.boxes_csv,
                         **{k: v for k, v in values.items() if k in RECIPE_FIELDS},
                         format_options={k: v for k, v in values.items()
                                         if k not in RECIPE_FIELDS})


def _create(args) -> None:
    from imagenet_db.recipes.imagenet import create_imagenet

    transform = create_transform(args)
    with executor_for(args) as executor:
        create_imagenet(args.source, args.outdir, transform, recipe_options(args),
                        build_options(args, executor), log=stderr_log)


@entry_point
def create_imagenet_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``create_imagenet``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_create, create_parser().parse_args(normalize_gflags(argv, create_bools())))
