"""``imagenet-db report OUTDIR_or_DB``: one self-contained HTML page about the databases.

Write an HTML report (pictures embedded, opens offline in any browser) of every Datum database
in OUTDIR (or of the one DB given): entry counts, image sizes, bytes per datum, a class
histogram with the smallest and largest classes, the mean image and per-channel mean values,
a sample contact sheet, the skipped images and the completion record's settings. Databases
are read read-only (nothing is written next to them). create_imagenet writes the same report
into OUTDIR/report.html at the end of a build (unless --no-report).
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (bool_flag, help_text, max_pixels_arg, normalize_gflags,
                                   run_command, stderr_log)
from imagenet_db.pictures.sheet import DEFAULT_COUNT

REPORT_BOOLS = ("overwrite",)


def report_parser(prog="imagenet-db report") -> argparse.ArgumentParser:
    """Argument parser of imagenet-db report OUTDIR_or_DB."""
    p = argparse.ArgumentParser(prog=prog, description=help_text(__doc__),
                                epilog="Exit status: 0 success; 1 no database found, one that "
                                       "cannot be read, or an --out file that is not an "
                                       "imagenet-db report (without --overwrite); 2 usage error.")
    p.add_argument("target", metavar="OUTDIR_or_DB",
                   help="a folder of databases (create_imagenet's OUTDIR) or one database")
    p.add_argument("--out", metavar="HTML", default=None,
                   help="page to write (default: OUTDIR/report.html; for a DB, "
                        "<DB name>.report.html in the current directory); an earlier report "
                        "there is replaced")
    p.add_argument("--synsets", metavar="SYNSET_WORDS_TXT", default=None,
                   help="class names (default: synset_words.txt or synsets.txt beside the "
                        "databases)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, metavar="N",
                   help=f"datums in each sample sheet (default {DEFAULT_COUNT})")
    bool_flag(p, "overwrite", "replace an --out file that is not an imagenet-db report")
    max_pixels_arg(p, "do not decode an encoded datum whose header declares more than N "
                      "pixels (width*height): its sample tile says so, and a mean to compute "
                      "over it is an error; JPEGs are decoded reduced to the tile size")
    return p


def _report(args) -> None:
    from imagenet_db.pictures.report import write_report

    out = write_report(args.target, args.out, args.synsets, args.count, args.overwrite,
                       log=stderr_log, max_pixels=args.max_pixels)
    print(f"wrote {out}", file=sys.stderr)


def report_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db report``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_report, report_parser().parse_args(normalize_gflags(argv, REPORT_BOOLS)))
