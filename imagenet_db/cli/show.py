"""``imagenet-db show DB``: a contact sheet PNG of a database's datums.

Draw datums of a Caffe Datum database (LMDB or LevelDB; made by imagenet-db or by Caffe; raw
or encoded, any size, gray or colour) side by side in one PNG, as Caffe's data layer sees
them (colours right: datums are BGR). Each tile is captioned with the key (number and file
name) and 'label class', the class being the first name on that label's line of
synset_words.txt (found beside the database, or --synsets). The datums are spread evenly over
the key order; --label N shows only class N. The database is read read-only (nothing is
written next to it). DB may also be a create_imagenet --format webdataset or tfrecord output
(OUTDIR/webdataset, OUTDIR/tfrecord): its samples in shard order, labels as positions in
synsets.txt.
"""
import argparse
import os
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (backend_arg, bool_flag, help_text, normalize_gflags,
                                   run_command)
from imagenet_db.pictures.sheet import DEFAULT_COUNT, DEFAULT_TILE

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
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PIXELS",
                   help=f"tile size; images are fitted in, aspect kept (default {DEFAULT_TILE}; "
                        f"0 = stored size, unscaled)")
    p.add_argument("--columns", type=int, default=0, metavar="N",
                   help="tiles per row (default: about square)")
    backend_arg(p, default=None)
    bool_flag(p, "overwrite", "replace an existing --out file")
    return p


def show(db_path: str, out: Optional[str] = None, count: int = DEFAULT_COUNT,
         label: Optional[int] = None, synsets: Optional[str] = None, tile: int = DEFAULT_TILE,
         columns: int = 0, backend: Optional[str] = None, overwrite: bool = False) -> str:
    """Write the contact sheet of ``db_path`` (see the module docstring) and return the PNG's
    path. Raises ImagenetDbError for a bad database, a label no datum has, or an existing
    ``out`` without ``overwrite``."""
    from imagenet_db.engine.files import write_file_atomic
    from imagenet_db.errors import ImagenetDbError
    from imagenet_db.pictures.sheet import (choose_positions, contact_sheet, encode_png,
                                            find_class_file, read_class_names)
    from imagenet_db.outputs.sharddb import open_db  # a Datum DB, or WebDataset/TFRecord shards

    if count < 1:
        raise ImagenetDbError("--count must be at least 1")
    out = out or os.path.basename(os.path.abspath(db_path)) + ".sheet.png"
    if os.path.exists(out) and not overwrite:
        raise ImagenetDbError(f"{out} already exists; pass --overwrite to replace it")
    with open_db(db_path, backend) as db:
        class_file = synsets or find_class_file(db_path)
        names = read_class_names(class_file) if class_file else []
        if len(db) == 0:
            raise ImagenetDbError(f"{db_path}: the database is empty")
        positions = choose_positions(db, count, label)
        which = f"label {label}" + (f" ({names[label]})" if 0 <= label < len(names) else "") \
            if label is not None else "spread over the key order"
        title = f"{db_path}\n{len(positions)} of {len(db):,} datums, {which}"
        sheet, tiles = contact_sheet(db, positions, names, tile, columns, title)
    write_file_atomic(out, encode_png(sheet))
    bad = [t for t in tiles if t.problem]
    for t in bad:
        print(f"note: {t.problem}", file=sys.stderr)
    return out


def _show(args) -> None:
    out = show(args.db, args.out, args.count, args.label, args.synsets, args.tile, args.columns,
               args.backend, args.overwrite)
    print(f"wrote {out}", file=sys.stderr)


def show_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db show``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_show, show_parser().parse_args(normalize_gflags(argv, SHOW_BOOLS)))
