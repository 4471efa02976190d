"""Command-line entry points: convert_imageset, compute_image_mean, create_imagenet, imagenet-db.

Thin wrappers over the Python API. Flags follow Caffe's gflags spelling so existing scripts
run unchanged: ``--flag=value``, ``--flag value``, single-dash ``-flag``, and for booleans
``--flag``, ``--flag=true|false``, ``--noflag``.

Exit codes: 0 success (skipped images are reported, not failures); 1 bad input or a failed
build (one-line message naming the file, no traceback); 2 command-line usage error;
130 interrupted by Ctrl-C.
"""
import argparse
import os
import sys
from typing import List, Optional, Sequence

from imagenet_db import __version__
from imagenet_db.errors import ImagenetDbError
from imagenet_db.executor import default_workers
from imagenet_db.sinks import BACKENDS
from imagenet_db.sources import DEFAULT_SEED

TRUE_WORDS = {"true", "1", "yes", "t", "y"}
FALSE_WORDS = {"false", "0", "no", "f", "n"}


def normalize_gflags(argv: Sequence[str], bool_flags: Sequence[str]) -> List[str]:
    """Rewrite gflags-style arguments into argparse form.

    '-flag[=v]' -> '--flag[=v]'; for boolean flags '--flag=false' -> '--no-flag',
    '--flag=true' -> '--flag', '--noflag' -> '--no-flag'. Raises SystemExit(2) for a boolean
    given a value that is not true/false.
    """
    out = []
    for arg in argv:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            out.append(arg)
            continue
        if not arg.startswith("--") and len(arg) > 2:
            arg = "-" + arg
        name, eq, value = arg[2:].partition("=")
        if name in bool_flags and eq:
            if value.lower() in TRUE_WORDS:
                arg = f"--{name}"
            elif value.lower() in FALSE_WORDS:
                arg = f"--no-{name}"
            else:
                sys.stderr.write(f"error: --{name} takes true or false, not {value!r}\n")
                raise SystemExit(2)
        elif name.startswith("no") and name[2:] in bool_flags and not eq:
            arg = f"--no-{name[2:]}"
        out.append(arg)
    return out


def _bool(parser, name, help_text, default=False):
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default,
                        help=help_text)


def _workers_arg(parser):
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"worker threads for decode/resize/encode (default: all cores, "
                             f"{default_workers()} here); the output does not depend on it")


def _fast_decode_arg(parser):
    _bool(parser, "fast_decode", "decode JPEGs at 1/2, 1/4 or 1/8 scale in libjpeg when the output "
                                 "is at most half their size on both sides, then resize: faster on "
                                 "large photos, pixels differ slightly from Caffe's (default off: "
                                 "byte-identical to Caffe)")


def _size(text: str):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x256, got {text!r}")
    if width < 0 or height < 0:
        raise argparse.ArgumentTypeError("sizes must be >= 0")
    return width, height


def _run(func, args) -> int:
    try:
        func(args)
        return 0
    except ImagenetDbError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


# ---------------------------------------------------------------- convert_imageset
CONVERT_BOOLS = ("gray", "shuffle", "check_size", "encoded", "overwrite", "progress", "fast_decode")


def convert_parser(prog="convert_imageset") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convert a set of images to a Caffe Datum database (LMDB or LevelDB), "
                    "as Caffe's tools/convert_imageset, using all cores. LISTFILE lines are "
                    "'relpath label' (split on the last space); keys are '%%08d_relpath' in list "
                    "order; raw datums hold uint8 pixels in CHW order, BGR channels.",
        epilog="Example: convert_imageset --resize_height=256 --resize_width=256 --shuffle "
               "/data/train/ train.txt ilsvrc12_train_lmdb")
    p.add_argument("root", metavar="ROOTFOLDER/", help="folder the list's relpaths are under")
    p.add_argument("listfile", metavar="LISTFILE", help="Caffe list file: 'relpath label' lines")
    p.add_argument("db", metavar="DB_NAME", help="database directory to create")
    _bool(p, "gray", "decode images as 1-channel grayscale (default: 3-channel BGR)")
    _bool(p, "shuffle", "shuffle the list before writing (deterministic, see --seed)")
    p.add_argument("--backend", default="lmdb", choices=BACKENDS, help="database type (default lmdb)")
    p.add_argument("--resize_width", type=int, default=0, metavar="W",
                   help="width images are squashed to (bilinear); 0 = keep (needs both sizes)")
    p.add_argument("--resize_height", type=int, default=0, metavar="H",
                   help="height images are squashed to (bilinear); 0 = keep (needs both sizes)")
    _bool(p, "check_size", "fail if images differ in channels/height/width")
    _bool(p, "encoded", "store encoded image bytes (the original file when unchanged)")
    p.add_argument("--encode_type", default="", metavar="EXT",
                   help="encoding for --encoded ('jpg', 'png'; default: each file's extension)")
    _fast_decode_arg(p)
    _workers_arg(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed for --shuffle (default {DEFAULT_SEED}: same order on any machine)")
    _bool(p, "overwrite", "replace an existing DB_NAME (built beside it, swapped in at the end)")
    _bool(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _convert(args) -> None:
    from imagenet_db.listfile import read_list
    from imagenet_db.pipeline import convert
    from imagenet_db.sources import list_records, shuffled
    from imagenet_db.transform import TransformOptions

    entries = read_list(args.listfile)
    if args.shuffle:
        entries = shuffled(entries, args.seed)
    print(f"A total of {len(entries)} images.", file=sys.stderr)
    options = TransformOptions(resize_height=max(0, args.resize_height),
                               resize_width=max(0, args.resize_width), is_color=not args.gray,
                               encoded=args.encoded, encode_type=args.encode_type,
                               fast_decode=args.fast_decode)
    summary = convert(list_records(args.root, entries), args.db, args.backend, options,
                      args.workers, check_size=args.check_size, overwrite=args.overwrite,
                      progress=args.progress,
                      settings={"listfile": os.path.abspath(args.listfile), "shuffle": args.shuffle,
                                "seed": args.seed})
    print(summary.describe(), file=sys.stderr)
    if summary.skipped:
        print(f"skipped images are listed in {summary.db_path}.skipped.tsv", file=sys.stderr)


def convert_imageset_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``convert_imageset``."""
    argv = sys.argv[1:] if argv is None else argv
    args = convert_parser().parse_args(normalize_gflags(argv, CONVERT_BOOLS))
    return _run(_convert, args)


# ---------------------------------------------------------------- compute_image_mean
def mean_parser(prog="compute_image_mean") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compute the mean image of a Caffe Datum database, as Caffe's "
                    "tools/compute_image_mean: a BlobProto (num=1, channels, height, width, float "
                    "data in CHW/BGR order) for transform_param { mean_file }, and the per-channel "
                    "mean_value. Sums exactly in 64-bit integers. Encoded datums are decoded.")
    p.add_argument("input_db", metavar="INPUT_DB", help="LMDB or LevelDB directory")
    p.add_argument("output", metavar="OUTPUT_FILE", nargs="?",
                   help="mean file to write: .binaryproto (BlobProto) or .npy (float32 CxHxW)")
    p.add_argument("--backend", default="lmdb", choices=BACKENDS, help="database type (default lmdb)")
    return p


def _mean(args) -> None:
    from imagenet_db.mean import channel_means, compute_db_mean, write_mean

    mean, count = compute_db_mean(args.input_db, args.backend)
    print(f"Processed {count} datums; mean shape (channels, height, width) = {mean.shape}",
          file=sys.stderr)
    if args.output:
        write_mean(args.output, mean)
        print(f"Write to {args.output}", file=sys.stderr)
    for c, value in enumerate(channel_means(mean)):
        print(f"mean_value channel [{c}]: {value:.6g}")


def compute_image_mean_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``compute_image_mean``."""
    argv = sys.argv[1:] if argv is None else argv
    return _run(_mean, mean_parser().parse_args(normalize_gflags(argv, ())))


# ---------------------------------------------------------------- create_imagenet
CREATE_BOOLS = ("encoded", "overwrite", "progress", "fast_decode")


def create_parser(prog="create_imagenet") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Build Caffe's ImageNet data in one step (get_ilsvrc_aux.sh + "
                    "create_imagenet.sh + make_imagenet_mean.sh): synsets.txt, train.txt, val.txt "
                    "(labels = position of the wnid in ASCII order), shuffled "
                    "ilsvrc12_{train,val}_<backend> databases and imagenet_mean.binaryproto/.npy.",
        epilog="SOURCE: an extracted ImageNet with train/<wnid>/*.JPEG and val/ either as "
               "per-wnid folders or flat with SOURCE/val.txt ('file wnid-or-label' lines).")
    p.add_argument("source", metavar="SOURCE", help="ImageNet folder")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the databases and aux files")
    p.add_argument("--resize", type=_size, default=(256, 256), metavar="WxH",
                   help="squash every image to WIDTHxHEIGHT (default 256x256; 0x0 = keep size)")
    p.add_argument("--backend", default="lmdb", choices=BACKENDS, help="database type (default lmdb)")
    _bool(p, "encoded", "store JPEG bytes instead of raw pixels")
    _fast_decode_arg(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="shuffle seed")
    _workers_arg(p)
    _bool(p, "overwrite", "replace existing databases (each swapped in when complete)")
    _bool(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _create(args) -> None:
    from imagenet_db.imagenet import create_imagenet

    create_imagenet(args.source, args.outdir, resize=args.resize, backend=args.backend,
                    encoded=args.encoded, fast_decode=args.fast_decode, seed=args.seed,
                    workers=args.workers,
                    overwrite=args.overwrite, progress=args.progress,
                    log=lambda text: print(text, file=sys.stderr))


def create_imagenet_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``create_imagenet``."""
    argv = sys.argv[1:] if argv is None else argv
    return _run(_create, create_parser().parse_args(normalize_gflags(argv, CREATE_BOOLS)))


# ---------------------------------------------------------------- imagenet-db
SUBCOMMANDS = {
    "convert": (convert_imageset_main, "convert_imageset: list of images -> Datum database"),
    "mean": (compute_image_mean_main, "compute_image_mean: mean image of a database"),
    "create": (create_imagenet_main, "create_imagenet: the whole ImageNet recipe"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db SUBCOMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [f"usage: imagenet-db {{{','.join(SUBCOMMANDS)}}} ...  (version {__version__})", ""]
        lines += [f"  {name:10s} {text}" for name, (_, text) in SUBCOMMANDS.items()]
        lines += ["", "Run 'imagenet-db SUBCOMMAND --help' for a subcommand's flags."]
        out = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        if argv and argv[0] not in ("-h", "--help"):
            lines.insert(0, f"error: unknown subcommand {argv[0]!r}")
        print("\n".join(lines), file=out)
        return 0 if out is sys.stdout else 2
    return SUBCOMMANDS[argv[0]][0](argv[1:])
