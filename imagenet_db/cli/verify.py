"""``imagenet-db verify PATH``: check a database or another output end to end.

Check a Caffe Datum database end to end: completion record (imagenet_db.json; a database made
elsewhere, e.g. by Caffe, is checked without it), entry count, key format ('%08d_relpath') and
order, every datum parses and (encoded) decodes, one channels/height/width, labels in range.
Also the other outputs of create_imagenet --format: cuda-convnet2 (every sub-batch pickle
loads with encoding='latin1' and holds the logged JPEGs and labels, batches.meta), theano-
alexnet (every .hkl loads with hickle as uint8 c01b of the batch size, labels/*.npy equal the
log, misc/img_mean.npy) and folder (one split: the listed files are there and decode, the
content checksum); an unfinished build (NAME.partial) is reported as such.
Prints a summary; exit 0 when no problem is found, 1 otherwise.
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (EXIT_STATUS, backend_arg, bool_flag, entry_point, help_text,
                                   normalize_gflags, run_command, workers_arg)

VERIFY_BOOLS = ("progress", "require_manifest", "allow_mixed_sizes")


def verify_parser(prog="imagenet-db verify") -> argparse.ArgumentParser:
    """Argument parser of imagenet-db verify DB."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__),
        epilog=EXIT_STATUS)
    p.add_argument("db", metavar="PATH", help="LMDB or LevelDB directory, or a cuda-convnet2, "
                   "theano-alexnet or folder (OUTDIR/train, OUTDIR/val) output")
    backend_arg(p, default=None)
    p.add_argument("--synsets", metavar="SYNSETS_TXT", default=None,
                   help="synsets.txt: labels must be in 0..(number of lines - 1)")
    bool_flag(p, "require_manifest", "a missing completion record is a problem, not a note")
    bool_flag(p, "allow_mixed_sizes", "datums of different sizes are not a problem")
    workers_arg(p)
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _verify(args) -> int:
    from imagenet_db.verify import verify_output

    report = verify_output(args.db, args.backend, args.synsets, args.workers, args.progress,
                       require_manifest=args.require_manifest,
                       allow_mixed_sizes=args.allow_mixed_sizes)
    print(report.describe())
    return 0 if report.ok else 1


@entry_point
def verify_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db verify``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_verify, verify_parser().parse_args(normalize_gflags(argv, VERIFY_BOOLS)))
