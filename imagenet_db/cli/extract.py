"""``imagenet-db extract SOURCE DEST``: any distribution as train/<wnid>/, val/<wnid>/ folders.

Extract the ILSVRC2012 archives, the ILSVRC2015 CLS-LOC .tar.gz, Kaggle's zip (or any SOURCE)
into train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the PyTorch/Torch layout, what valprep.sh
makes) plus synset_words.txt, streaming the archives without temporary copies. Resumable: run
it again after an interruption. Checks every folder's image count against the SOURCE at the end.
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (SOURCE_EPILOG, blacklist_arg, bool_flag, help_text,
                                   normalize_gflags, run_command, stderr_log, workers_arg)


def extract_parser(prog="imagenet-db extract") -> argparse.ArgumentParser:
    """Argument parser of ``imagenet-db extract SOURCE DEST``."""

    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__), epilog=SOURCE_EPILOG)
    p.add_argument("source", metavar="SOURCE", help="an ImageNet distribution (see below)")
    p.add_argument("dest", metavar="DEST", help="folder to extract into (created)")
    p.add_argument("--val_layout", choices=("folders", "flat"), default="folders",
                   help="folders: val/<wnid>/ (default); flat: val/ILSVRC2012_val_*.JPEG and "
                        "DEST/val.txt with 'name wnid' lines (Caffe's layout)")
    bool_flag(p, "verify", "first check the archives' MD5 against the published values "
                       "(reads all ~147 GB)")
    bool_flag(p, "overwrite", "replace files in DEST whose size differs from the archive's")
    blacklist_arg(p)
    workers_arg(p)
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _extract(args) -> None:
    from imagenet_db.sources.checksums import verify_source
    from imagenet_db.recipes.extract import extract

    log = stderr_log
    if args.verify:
        verify_source(args.source, progress=args.progress, log=log)
    summary = extract(args.source, args.dest, val_layout=args.val_layout,
                      overwrite=args.overwrite, workers=args.workers, progress=args.progress,
                      log=log, drop_blacklist=args.drop_val_blacklist)
    log(summary.describe())
    log(f"checked {sum(summary.counts.values())} images in {len(summary.counts)} folders "
        f"against the SOURCE: all present")


def extract_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db extract``."""

    argv = sys.argv[1:] if argv is None else argv
    args = extract_parser().parse_args(normalize_gflags(argv, ("verify", "overwrite", "progress",
                                                                  "drop_val_blacklist")))
    return run_command(_extract, args)
