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
from typing import Optional, Sequence

from imagenet_db.cli.flags import (EXIT_STATUS, SOURCE_EPILOG, backend_arg, blacklist_arg,
                                   bool_flag, build_args, build_options, empty_classes_arg,
                                   entry_point, executor_for, fast_decode_arg, help_text,
                                   normalize_gflags, resize_args, run_command, seed_arg,
                                   stderr_log, transform_options, workers_arg)
from imagenet_db.outputs import FORMATS, OUTPUTS


def size_arg(text: str):
    """argparse type of WIDTHxHEIGHT sizes such as 256x256 -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x256, got {text!r}")
    if width < 0 or height < 0:
        raise argparse.ArgumentTypeError("sizes must be >= 0")
    return width, height


CREATE_BOOLS = ("encoded", "overwrite", "progress", "verify", "resume", "strict", "fast_decode",
                "only_shrink", "prototxt", "drop_val_blacklist", "uncropped",
                "report", "allow_empty_classes")


def create_parser(prog="create_imagenet") -> argparse.ArgumentParser:
    """Argument parser of create_imagenet SOURCE OUTDIR."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__),
        epilog=SOURCE_EPILOG + " " + EXIT_STATUS)
    p.add_argument("source", metavar="SOURCE", help="an ImageNet distribution (see below)")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the databases and aux files")
    p.add_argument("--format", dest="output_format", default="caffe", choices=FORMATS,
                   help="what to build (default caffe): Caffe's LMDB/LevelDB + mean; "
                        "cuda-convnet2 batches; Theano AlexNet hickle batches; image folders; "
                        "WebDataset or TFRecord shards")
    p.add_argument("--resize", type=size_arg, default=None, metavar="WxH",
                   help="resize every image to WIDTHxHEIGHT with --resize_mode (default 256x256 "
                        "squash, as Caffe's create_imagenet.sh and theano-alexnet; folder: none, "
                        "files copied byte for byte; 0x0 = keep size; not used with "
                        "--shorter_side or --min_dim/--max_dim; cuda-convnet2 always uses "
                        "make-data's resize)")
    bool_flag(p, "uncropped", "cuda-convnet2: keep the aspect ratio (shorter side 256, no "
                              "centre crop; make-data's CROP_TO_SQUARE=False)")
    p.add_argument("--batch_images", type=int, default=None, metavar="N",
                   help="images per batch: cuda-convnet2 3072 (3 sub-batch files of N/3), "
                        "theano-alexnet 256 (halves of N/2); default: upstream's")
    p.add_argument("--val_layout", choices=("folders", "flat"), default="folders",
                   help="folder format: val/<wnid>/ (default, as valprep.sh) or flat val/")
    _shard_args(p)
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
    bool_flag(p, "report", "at the end, write OUTDIR/report.html (imagenet-db report: counts, "
                       "sizes, class histogram, mean image, samples, skips, settings; default "
                       "on, --no-report to skip)", default=True)
    build_args(p, "OUTDIR: finished stages (aux files, train DB, val DB, mean) are "
                         "kept, the interrupted one continues")
    return p


def _shard_args(p) -> None:
    """The flags of the sharded formats (webdataset, tfrecord)."""
    p.add_argument("--shard_size", type=int, default=0, metavar="N",
                   help="webdataset/tfrecord: at most N samples per shard (default: webdataset "
                        "1000; tfrecord TF's 1024 train / 128 validation shards)")
    p.add_argument("--shard_bytes", type=int, default=10 ** 9, metavar="BYTES",
                   help="webdataset: close a shard before BYTES of source file bytes (default "
                        "1 GB); a shard closes at --shard_size or this, whichever comes first")
    p.add_argument("--shard_prefix", default="imagenet", metavar="NAME",
                   help="webdataset: shard names NAME-{split}-%%06d.tar (default imagenet)")
    p.add_argument("--label_base", type=int, choices=(0, 1), default=1,
                   help="tfrecord: 1 = TF's labels 1..1000 with 0 left for background (default, "
                        "slim's 1,001 classes); 0 = Caffe's 0..999 (same wnid order)")


def create_transform(args):
    """The TransformOptions of parsed create_imagenet arguments: the resize flags, with the
    format's defaults (256x256 squash for caffe and theano-alexnet, a copy for folder,
    make-data's resize for cuda-convnet2, which takes no resize flag; webdataset and tfrecord:
    no resize, JPEG). Raises ImagenetDbError for flags the format does not have."""
    from imagenet_db.errors import ImagenetDbError
    from imagenet_db.recipes.formats import default_transform

    fmt = args.output_format
    if args.uncropped and fmt != "cuda-convnet2":
        raise ImagenetDbError("--uncropped applies to --format cuda-convnet2 only")
    sharded = getattr(OUTPUTS.get(fmt), "sharded", False)  # JPEG shards, no resize by default
    if not sharded and (args.shard_size or args.shard_bytes != 10 ** 9 or
                        args.shard_prefix != "imagenet" or args.label_base != 1):
        raise ImagenetDbError("--shard_size, --shard_bytes, --shard_prefix and --label_base "
                              "apply to --format webdataset and tfrecord only")
    if args.encoded and fmt != "caffe" and not sharded:
        raise ImagenetDbError(f"--encoded applies to --format caffe only ({fmt} decides how it "
                              f"stores images)")
    if fmt == "cuda-convnet2":
        if args.resize or args.resize_mode or args.shorter_side or args.min_dim or \
                args.max_dim or args.interpolation:
            raise ImagenetDbError("cuda-convnet2 uses make-data's resize (shorter side 256, "
                                  "centre crop; --uncropped): no resize flags")
        from dataclasses import replace
        return replace(default_transform(fmt, args.uncropped), fast_decode=args.fast_decode)
    keeps_aspect = args.shorter_side or args.min_dim or args.max_dim or \
        args.resize_mode in ("shorter_side", "min_max_dim")
    default = (0, 0) if keeps_aspect or fmt == "folder" or sharded else (256, 256)
    width, height = args.resize or default
    extra = {"encode_type": "jpg"} if sharded else {}
    return transform_options(args, width, height, fast_decode=args.fast_decode,
                             encoded=args.encoded or fmt == "folder" or sharded, **extra)


def _create(args) -> None:
    from imagenet_db.recipes.formats import RecipeOptions
    from imagenet_db.recipes.imagenet import create_imagenet

    transform = create_transform(args)
    recipe = RecipeOptions(output_format=args.output_format, backend=args.backend, seed=args.seed,
                           mean_crop=args.mean_crop, prototxt=args.prototxt, report=args.report,
                           val_layout=args.val_layout, batch_images=args.batch_images,
                           drop_blacklist=args.drop_val_blacklist,
                           allow_empty_classes=args.allow_empty_classes, verify=args.verify,
                           shard_size=args.shard_size, shard_bytes=args.shard_bytes,
                           shard_prefix=args.shard_prefix, label_base=args.label_base)
    with executor_for(args) as executor:
        create_imagenet(args.source, args.outdir, transform, recipe, build_options(args, executor),
                        log=stderr_log)


@entry_point
def create_imagenet_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``create_imagenet``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_create, create_parser().parse_args(normalize_gflags(argv, CREATE_BOOLS)))
