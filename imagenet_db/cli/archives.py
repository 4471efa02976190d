"""Commands for the raw ILSVRC2012 archives: ``imagenet-db labels`` and ``imagenet-db extract``.

Thin wrappers over ``imagenet_db.recipes.imagenet.write_labels`` and ``imagenet_db.recipes.extract.extract``;
flags use Caffe's gflags spelling like the other commands (see ``imagenet_db.cli``).
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.sources.ilsvrc2012 import ARCHIVE_NAMES

SOURCE_HELP = (f"folder holding the ILSVRC2012 archives ({', '.join(ARCHIVE_NAMES)}) "
               f"or an extracted ImageNet (train/<wnid>/*.JPEG, val/)")


def labels_parser(prog="imagenet-db labels") -> argparse.ArgumentParser:
    """Argument parser of ``imagenet-db labels SOURCE OUTDIR``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Write only Caffe's aux files, as get_ilsvrc_aux.sh: synsets.txt (one wnid "
                    "per line; line i = Caffe label i, wnids in ASCII order), synset_words.txt "
                    "('n01440764 tench, Tinca tinca'), train.txt and val.txt ('relpath label', "
                    "sorted). From archives only the devkit and the tar headers are read: the "
                    "devkit's ILSVRC2012_IDs are mapped to wnids, never used as labels.")
    p.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the four text files")
    return p


def extract_parser(prog="imagenet-db extract") -> argparse.ArgumentParser:
    """Argument parser of ``imagenet-db extract SOURCE DEST``."""
    from imagenet_db.cli.flags import bool_flag, workers_arg

    p = argparse.ArgumentParser(
        prog=prog,
        description="Extract the ILSVRC2012 archives into train/<wnid>/*.JPEG and "
                    "val/<wnid>/*.JPEG (the PyTorch/Torch layout, what valprep.sh makes) plus "
                    "synset_words.txt, streaming the nested train tars without temporary "
                    "copies. Resumable: run it again after an interruption. Checks every "
                    "folder's image count against the archives at the end.")
    p.add_argument("source", metavar="SOURCE", help=f"folder holding {', '.join(ARCHIVE_NAMES)}")
    p.add_argument("dest", metavar="DEST", help="folder to extract into (created)")
    p.add_argument("--val_layout", choices=("folders", "flat"), default="folders",
                   help="folders: val/<wnid>/ (default); flat: val/ILSVRC2012_val_*.JPEG and "
                        "DEST/val.txt with 'name wnid' lines (Caffe's layout)")
    bool_flag(p, "verify", "first check the archives' MD5 against the published values "
                       "(reads all ~147 GB)")
    bool_flag(p, "overwrite", "replace files in DEST whose size differs from the archive's")
    workers_arg(p)
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _labels(args) -> None:
    from imagenet_db.recipes.imagenet import write_labels

    write_labels(args.source, args.outdir, log=lambda text: print(text, file=sys.stderr))


def _extract(args) -> None:
    from imagenet_db.sources.checksums import verify_source
    from imagenet_db.recipes.extract import extract

    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    if args.verify:
        verify_source(args.source, progress=args.progress, log=log)
    summary = extract(args.source, args.dest, val_layout=args.val_layout,
                      overwrite=args.overwrite, workers=args.workers, progress=args.progress,
                      log=log)
    log(summary.describe())
    log(f"checked {sum(summary.counts.values())} images in {len(summary.counts)} folders "
        f"against the archives: all present")


def labels_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db labels``."""
    from imagenet_db.cli.flags import normalize_gflags, run_command

    argv = sys.argv[1:] if argv is None else argv
    return run_command(_labels, labels_parser().parse_args(normalize_gflags(argv, ())))


def extract_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db extract``."""
    from imagenet_db.cli.flags import normalize_gflags, run_command

    argv = sys.argv[1:] if argv is None else argv
    args = extract_parser().parse_args(normalize_gflags(argv, ("verify", "overwrite", "progress")))
    return run_command(_extract, args)
