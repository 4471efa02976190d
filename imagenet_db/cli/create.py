"""``create_imagenet SOURCE OUTDIR``: the whole ImageNet recipe in one command.

Build Caffe's ImageNet data in one step (get_ilsvrc_aux.sh + create_imagenet.sh +
make_imagenet_mean.sh): synsets.txt, train.txt, val.txt (labels = position of the wnid in ASCII
order), shuffled ilsvrc12_{train,val}_<backend> databases and imagenet_mean.binaryproto/.npy.
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (EXIT_STATUS, SOURCE_EPILOG, backend_arg, blacklist_arg,
                                   bool_flag, build_args,
                                   build_options, executor_for, fast_decode_arg, help_text,
                                   normalize_gflags, run_command, stderr_log, workers_arg)
from imagenet_db.sources.base import DEFAULT_SEED


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
                "drop_val_blacklist")


def create_parser(prog="create_imagenet") -> argparse.ArgumentParser:
    """Argument parser of create_imagenet SOURCE OUTDIR."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__),
        epilog=SOURCE_EPILOG + " " + EXIT_STATUS)
    p.add_argument("source", metavar="SOURCE", help="an ImageNet distribution (see below)")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the databases and aux files")
    p.add_argument("--resize", type=size_arg, default=(256, 256), metavar="WxH",
                   help="squash every image to WIDTHxHEIGHT (default 256x256; 0x0 = keep size)")
    backend_arg(p)
    bool_flag(p, "encoded", "store JPEG bytes instead of raw pixels")
    fast_decode_arg(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="shuffle seed")
    workers_arg(p, cluster=True)
    bool_flag(p, "overwrite", "replace existing outputs (databases are swapped in when complete)")
    bool_flag(p, "verify", "archives only: first check their MD5 against the published values "
                       "(reads all ~147 GB)")
    blacklist_arg(p)
    build_args(p, "OUTDIR: finished stages (aux files, train DB, val DB, mean) are "
                         "kept, the interrupted one continues")
    return p


def _create(args) -> None:
    from imagenet_db.imaging.transform import TransformOptions
    from imagenet_db.recipes.imagenet import create_imagenet

    width, height = args.resize
    transform = TransformOptions(resize_height=height, resize_width=width, encoded=args.encoded,
                                 fast_decode=args.fast_decode)
    with executor_for(args) as executor:
        create_imagenet(args.source, args.outdir, transform, args.backend, args.seed,
                        build_options(args, executor), verify=args.verify, log=stderr_log,
                        drop_blacklist=args.drop_val_blacklist)


def create_imagenet_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``create_imagenet``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_create, create_parser().parse_args(normalize_gflags(argv, CREATE_BOOLS)))
