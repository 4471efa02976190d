"""``imagenet-db show DB``: a contact sheet PNG of a database's datums.

Draw datums of a Caffe Datum database (LMDB or LevelDB; made by imagenet-db or by Caffe; raw
or encoded, any size, gray or colour) side by side in one PNG, as Caffe's data layer sees
them (colours right: datums are BGR). Each tile is captioned with the key (number and file
name) and 'label class', the class being the first name on that label's line of
synset_words.txt (found beside the database, or --synsets). The datums are spread evenly over
the key order; --label N shows only class N. The database is read read-only (nothing is
written next to it).
"""
import argparse
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (backend_arg, bool_flag, help_text, int_range,
                                   normalize_gflags, run_command)
from imagenet_db.pictures.sheet import DEFAULT_COUNT, DEFAULT_TILE, MAX_TILE

SHOW_BOOLS = ("overwrite",)


def show_parser(prog="imagenet-db show") -> argparse.ArgumentParser:
    """Argument parser of imagenet-db show DB."""
    p = argparse.ArgumentParser(prog=prog, description=help_text(__doc__),
                                epilog="Exit status: 0 success; 1 a path that is not a "
                                       "database, a label no datum has, an existing --out "
                                       "(without --overwrite); 2 usage error.")
    p.add_argument("db", metavar="DB", help="LMDB or LevelDB directory")
    p.add_argument("--out", metavar="PNG", default=None,
                   help="picture to write (default: <DB name>.sheet.png in the current directory)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, metavar="N",
                   help=f"datums to show (default {DEFAULT_COUNT})")
    p.add_argument("--label", type=int, default=None, metavar="N",
                   help="show only datums with label N")
    p.add_argument("--synsets", metavar="SYNSET_WORDS_TXT", default=None,
                   help="class names: synset_words.txt or synsets.txt, label = line number "
                        "(default: the one beside DB, if any)")
    p.add_argument("--tile", type=int_range(0, MAX_TILE), default=DEFAULT_TILE,
                   metavar="PIXELS",
                   help=f"tile size 0..{MAX_TILE}; images are fitted in, aspect kept (default "
                        f"{DEFAULT_TILE}; 0 = stored size, unscaled)")
    p.add_argument("--columns", type=int_range(1, None), default=None, metavar="N",
                   help="tiles per row, >= 1 (default: about square)")
    backend_arg(p, default=None)
    bool_flag(p, "overwrite", "replace an existing --out file")
    return p


def _show(args) -> None:
    from imagenet_db.pictures.sheet import SheetOptions, write_sheet

    options = SheetOptions(args.out, args.count, args.label, args.synsets, args.tile,
                           args.columns or 0, args.backend, args.overwrite)
    out = write_sheet(args.db, options, log=lambda text: print(text, file=sys.stderr))
    print(f"wrote {out}", file=sys.stderr)


def show_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db show``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_show, show_parser().parse_args(normalize_gflags(argv, SHOW_BOOLS)))
