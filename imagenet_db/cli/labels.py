"""``imagenet-db labels SOURCE OUTDIR``: only Caffe's aux files.

Write only Caffe's aux files, as get_ilsvrc_aux.sh: synsets.txt (one wnid per line; line i =
Caffe label i, wnids in ASCII order), synset_words.txt ('n01440764 tench, Tinca tinca'),
train.txt and val.txt ('relpath label', sorted). From archives only the devkits, annotations and
archive indexes are read (a .tar.gz is indexed once, then cached): the devkit's IDs are mapped
to wnids, never used as labels. Every distribution gives the same files for the same images.
With --min_class_images (or --recipe) also dropped_classes.txt ('wnid images' per line: the
classes left out); the whole ImageNet has only train.txt unless --val_per_class makes val.txt.
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (SOURCE_EPILOG, blacklist_arg, class_selection,
                                   empty_classes_arg, entry_point, help_text, normalize_gflags,
                                   run_command, selection_args, stderr_log)

SOURCE_HELP = "an ImageNet distribution (see below)"


def labels_parser(prog="imagenet-db labels") -> argparse.ArgumentParser:
    """Argument parser of ``imagenet-db labels SOURCE OUTDIR``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__), epilog=SOURCE_EPILOG)
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the four text files")
    blacklist_arg(p)
    empty_classes_arg(p)
    selection_args(p)
    return p


def _labels(args) -> None:
    from imagenet_db.recipes.imagenet import write_labels

    write_labels(args.source, args.outdir, log=stderr_log, drop_blacklist=args.drop_val_blacklist,
                 allow_empty_classes=args.allow_empty_classes,
                 selection=class_selection(args))


@entry_point
def labels_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db labels``."""

    argv = sys.argv[1:] if argv is None else argv
    return run_command(_labels, labels_parser().parse_args(
        normalize_gflags(argv, ("drop_val_blacklist", "allow_empty_classes"))))
