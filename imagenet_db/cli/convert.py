"""``convert_imageset ROOTFOLDER/ LISTFILE DB_NAME``: Caffe's tool, same flags and defaults.

Convert a set of images to a Caffe Datum database (LMDB or LevelDB), as Caffe's
tools/convert_imageset, using all cores. LISTFILE lines are 'relpath label' (split on the last
space); keys are '%08d_relpath' in list order; raw datums hold uint8 pixels in CHW order, BGR
channels.
"""
import argparse
import os
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (EXIT_STATUS, backend_arg, bool_flag, build_args,
                                   build_options, entry_point, executor_for, fast_decode_arg,
                                   help_text, normalize_gflags, resize_args, resize_bools,
                                   run_command, seed_arg, transform_options, workers_arg)
from imagenet_db.sources.base import DEFAULT_SEED

CONVERT_BOOLS = ("gray", "processes", "shuffle", "check_size", "encoded", "overwrite", "progress", "resume",
                 "strict", "fast_decode")  # + the resize modes' (resize_bools)


def convert_parser(prog="convert_imageset") -> argparse.ArgumentParser:
    """Argument parser of convert_imageset (Caffe's flags and defaults, plus ours)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__),
        epilog="Example: convert_imageset --resize_height=256 --resize_width=256 --shuffle "
               "/data/train/ train.txt ilsvrc12_train_lmdb. " + EXIT_STATUS)
    p.add_argument("root", metavar="ROOTFOLDER/", help="folder the list's relpaths are under")
    p.add_argument("listfile", metavar="LISTFILE", help="Caffe list file: 'relpath label' lines")
    p.add_argument("db", metavar="DB_NAME", help="database directory to create")
    bool_flag(p, "gray", "decode images as 1-channel grayscale (default: 3-channel BGR)")
    bool_flag(p, "shuffle", "shuffle the list before writing (deterministic, see --seed)")
    backend_arg(p)
    p.add_argument("--resize_width", type=int, default=0, metavar="W",
                   help="width images are resized to (see --resize_mode; default squash, "
                        "bilinear); 0 = keep (needs both sizes)")
    p.add_argument("--resize_height", type=int, default=0, metavar="H",
                   help="height images are resized to (see --resize_mode); 0 = keep (needs both "
                        "sizes)")
    bool_flag(p, "check_size", "fail if images differ in channels/height/width")
    bool_flag(p, "encoded", "store encoded image bytes (the original file when unchanged)")
    p.add_argument("--encode_type", default="", metavar="EXT",
                   help="encoding for --encoded ('jpg', 'png'; default: each file's extension)")
    fast_decode_arg(p)
    resize_args(p)
    workers_arg(p, cluster=True)
    seed_arg(p, f"seed for --shuffle and for the fill/half_crop noise, a 64-bit integer "
                f"(default {DEFAULT_SEED}: same database on any machine)")
    bool_flag(p, "overwrite", "replace an existing DB_NAME (built beside it, swapped in at the end)")
    build_args(p, "DB_NAME (kept in DB_NAME.partial)")
    return p


def _convert(args) -> None:
    from imagenet_db.pipeline import Recorded, convert
    from imagenet_db.sources.listfile import read_list_columns
    from imagenet_db.sources.records import FolderLoader, RecordColumns, shuffle_permutation

    from imagenet_db.outputs import output_class

    options = transform_options(args, args.resize_width, args.resize_height,
                                is_color=not args.gray, encoded=args.encoded,
                                encode_type=args.encode_type, fast_decode=args.fast_decode)
    # the largest key number is the list's length - 1; checked before any image is read
    output = output_class(args.backend)
    entries = read_list_columns(args.listfile,
                                lambda relpath: output.record_problem(relpath, 10**7))
    order = shuffle_permutation(len(entries), args.seed) if args.shuffle else None
    print(f"A total of {len(entries)} images.", file=sys.stderr)
    records = RecordColumns(entries, FolderLoader(args.root), order)
    with executor_for(args) as executor:
        summary = convert(records, args.db, args.backend, options,
                          build_options(args, executor),
                          recorded=Recorded(settings={"shuffle": args.shuffle, "seed": args.seed},
                                            info={"listfile": os.path.abspath(args.listfile)}))
    print(summary.describe(), file=sys.stderr)
    if summary.skipped:
        print(f"skipped images are listed in {summary.db_path}.skipped.tsv", file=sys.stderr)


@entry_point
def convert_imageset_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``convert_imageset``."""
    argv = sys.argv[1:] if argv is None else argv
    args = convert_parser().parse_args(normalize_gflags(argv, CONVERT_BOOLS + resize_bools()))
    return run_command(_convert, args)
