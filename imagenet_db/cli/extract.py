"""``imagenet-db extract SOURCE DEST``: any distribution as train/<wnid>/, val/<wnid>/ folders.

Write the ILSVRC2012 archives, the ILSVRC2015 CLS-LOC .tar.gz, Kaggle's zip (or any SOURCE)
as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the PyTorch/Torch layout, what valprep.sh
makes) plus Caffe's aux files, reading the archives in place, in archive order. The same as
create_imagenet --format folder: files copied byte for byte (bad images skipped and listed),
or with a resize flag (--shorter_side 256, --resize_mode with --resize_width/--resize_height,
--min_dim/--max_dim) resized and re-encoded (--encode_quality); an image the mode leaves
unchanged keeps its bytes. Always resumable: run it again after an interruption. Checks every
folder's image count against the SOURCE at the end.
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (SOURCE_EPILOG, apply_recipe_resize, blacklist_arg,
                                   bool_flag, class_selection, empty_classes_arg, entry_point,
                                   help_text, normalize_gflags, resize_args, resize_bools,
                                   run_command, selection_args, stderr_log, transform_options,
                                   workers_arg)


def extract_parser(prog="imagenet-db extract") -> argparse.ArgumentParser:
    """Argument parser of ``imagenet-db extract SOURCE DEST``."""

    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__), epilog=SOURCE_EPILOG)
    p.add_argument("source", metavar="SOURCE", help="an ImageNet distribution (see below)")
    p.add_argument("dest", metavar="DEST", help="folder to extract into (created)")
    p.add_argument("--val_layout", choices=("folders", "flat"), default="folders",
                   help="folders: val/<wnid>/ (default); flat: val/ILSVRC2012_val_*.JPEG and "
                        "DEST/val.txt with 'name label' lines (Caffe's layout)")
    bool_flag(p, "verify", "first check the archives' MD5 against the published values "
                       "(reads all ~147 GB), and extract with --check_contents")
    bool_flag(p, "check_contents", "at the end, also compare every extracted file with the "
                                   "content checksum recorded when it was written (reads them "
                                   "all): a file changed since, even at the same size, fails")
    bool_flag(p, "overwrite", "rebuild DEST/train and DEST/val if they exist (built beside them, "
                              "swapped in when complete; only the files extract wrote are "
                              "deleted, anything else refuses the run)")
    bool_flag(p, "resume", "continue an interrupted run (what extract always does without "
                           "--overwrite; with it, continue an interrupted --overwrite run)")
    p.add_argument("--resize_width", type=int, default=0, metavar="W",
                   help="width to resize to (with --resize_mode; default 0 = keep)")
    p.add_argument("--resize_height", type=int, default=0, metavar="H",
                   help="height to resize to (with --resize_mode; default 0 = keep)")
    resize_args(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fill/half_crop noise (default 0)")
    blacklist_arg(p)
    empty_classes_arg(p)
    selection_args(p)
    workers_arg(p)
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _extract(args) -> None:
    from imagenet_db.sources import verify_source
    from imagenet_db.engine.buildstate import BuildOptions
    from imagenet_db.recipes.extract import ExtractOptions, extract

    log = stderr_log
    apply_recipe_resize(args)
    transform = transform_options(args, args.resize_width, args.resize_height, encoded=True)
    if args.verify:
        verify_source(args.source, progress=args.progress, log=log)
    options = ExtractOptions(val_layout=args.val_layout, drop_blacklist=args.drop_val_blacklist,
                             allow_empty_classes=args.allow_empty_classes,
                             check_contents=args.check_contents or args.verify,
                             selection=class_selection(args))
    build = BuildOptions(overwrite=args.overwrite, resume=args.resume, workers=args.workers,
                         progress=args.progress)
    summary = extract(args.source, args.dest, transform if transform.resizing else None,
                      options, build, log)
    log(summary.describe())
    log(f"checked {sum(summary.counts.values())} images in {len(summary.counts)} folders "
        f"against the SOURCE: all present")


@entry_point
def extract_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db extract``."""

    argv = sys.argv[1:] if argv is None else argv
    bools = ("verify", "overwrite", "resume", "progress", "drop_val_blacklist", "allow_empty_classes",
             "check_contents") + resize_bools()
    args = extract_parser().parse_args(normalize_gflags(argv, bools))
    return run_command(_extract, args)
