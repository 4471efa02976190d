"""Command-line entry points: convert_imageset, compute_image_mean, create_imagenet, imagenet-db.

Thin wrappers over the Python API. Flags follow Caffe's gflags spelling so existing scripts
run unchanged: ``--flag=value``, ``--flag value``, single-dash ``-flag``, and for booleans
``--flag``, ``--flag=true|false``, ``--noflag``.

Exit codes (all commands):
  0    success; skipped images are counted and reported in DB.skipped.tsv, not failures
       (unless --strict)
  1    bad input, a refused or failed build, a skipped image under --strict, or problems
       found by ``verify`` (one message naming the file and line, no traceback)
  2    command-line usage error
  130  stopped by Ctrl-C (SIGINT), 143 by SIGTERM: the work done is committed; rerun the
       same command with --resume to finish
"""
import argparse
import os
import sys
from typing import Optional, Sequence

from imagenet_db import __version__
from imagenet_db.cli.flags import EXIT_STATUS, bool_flag, normalize_gflags, run_command, workers_arg
from imagenet_db.outputs.lmdb import BACKENDS
from imagenet_db.sources.base import DEFAULT_SEED

def _executor(args):
    """The Dask executor for --dask_scheduler, else a null context (local threads)."""
    import contextlib

    if getattr(args, "dask_scheduler", None):
        from imagenet_db.engine.executor import dask_executor
        return dask_executor(args.dask_scheduler)
    return contextlib.nullcontext(None)


def _fast_decode_arg(parser):
    bool_flag(parser, "fast_decode", "decode JPEGs at 1/2, 1/4 or 1/8 scale in libjpeg when the output "
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


def _reliability_args(parser, what: str):
    """--resume, --strict, --txn_size, --max_pixels (shared by convert_imageset/create_imagenet)."""
    from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS
    from imagenet_db.pipeline import DEFAULT_TXN_SIZE

    bool_flag(parser, "resume", f"continue an interrupted build of {what} from its last committed "
                            f"transaction (same command and settings; a changed list or setting "
                            f"is refused); finished outputs with the same settings are kept")
    bool_flag(parser, "strict", "fail (exit 1) on the first image that has to be skipped")
    parser.add_argument("--txn_size", type=int, default=DEFAULT_TXN_SIZE, metavar="N",
                        help=f"datums per database transaction (default {DEFAULT_TXN_SIZE}, as "
                             f"convert_imageset); a crash loses at most one transaction")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"skip JPEG/PNG files whose header declares more than N pixels "
                             f"(width*height; default {DEFAULT_MAX_PIXELS}; 0 = no cap)")


# ---------------------------------------------------------------- convert_imageset
CONVERT_BOOLS = ("gray", "shuffle", "check_size", "encoded", "overwrite", "progress", "resume",
                 "strict", "fast_decode")


def convert_parser(prog="convert_imageset") -> argparse.ArgumentParser:
    """Argument parser of convert_imageset (Caffe's flags and defaults, plus ours)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convert a set of images to a Caffe Datum database (LMDB or LevelDB), "
                    "as Caffe's tools/convert_imageset, using all cores. LISTFILE lines are "
                    "'relpath label' (split on the last space); keys are '%08d_relpath' in list "
                    "order; raw datums hold uint8 pixels in CHW order, BGR channels.",
        epilog="Example: convert_imageset --resize_height=256 --resize_width=256 --shuffle "
               "/data/train/ train.txt ilsvrc12_train_lmdb. " + EXIT_STATUS)
    p.add_argument("root", metavar="ROOTFOLDER/", help="folder the list's relpaths are under")
    p.add_argument("listfile", metavar="LISTFILE", help="Caffe list file: 'relpath label' lines")
    p.add_argument("db", metavar="DB_NAME", help="database directory to create")
    bool_flag(p, "gray", "decode images as 1-channel grayscale (default: 3-channel BGR)")
    bool_flag(p, "shuffle", "shuffle the list before writing (deterministic, see --seed)")
    p.add_argument("--backend", default="lmdb", choices=BACKENDS, help="database type (default lmdb)")
    p.add_argument("--resize_width", type=int, default=0, metavar="W",
                   help="width images are squashed to (bilinear); 0 = keep (needs both sizes)")
    p.add_argument("--resize_height", type=int, default=0, metavar="H",
                   help="height images are squashed to (bilinear); 0 = keep (needs both sizes)")
    bool_flag(p, "check_size", "fail if images differ in channels/height/width")
    bool_flag(p, "encoded", "store encoded image bytes (the original file when unchanged)")
    p.add_argument("--encode_type", default="", metavar="EXT",
                   help="encoding for --encoded ('jpg', 'png'; default: each file's extension)")
    _fast_decode_arg(p)
    workers_arg(p, cluster=True)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed for --shuffle (default {DEFAULT_SEED}: same order on any machine)")
    bool_flag(p, "overwrite", "replace an existing DB_NAME (built beside it, swapped in at the end)")
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    _reliability_args(p, "DB_NAME (kept in DB_NAME.partial)")
    return p


def _convert(args) -> None:
    from imagenet_db.sources.listfile import read_list
    from imagenet_db.pipeline import convert
    from imagenet_db.sources.base import list_records, shuffled
    from imagenet_db.imaging.transform import TransformOptions

    entries = read_list(args.listfile)
    if args.shuffle:
        entries = shuffled(entries, args.seed)
    print(f"A total of {len(entries)} images.", file=sys.stderr)
    options = TransformOptions(resize_height=max(0, args.resize_height),
                               resize_width=max(0, args.resize_width), is_color=not args.gray,
                               encoded=args.encoded, encode_type=args.encode_type,
                               fast_decode=args.fast_decode)
    with _executor(args) as executor:
        summary = convert(list_records(args.root, entries), args.db, args.backend, options,
                          args.workers, check_size=args.check_size, overwrite=args.overwrite,
                          progress=args.progress,
                          settings={"shuffle": args.shuffle, "seed": args.seed},
                          info={"listfile": os.path.abspath(args.listfile)}, resume=args.resume,
                          strict=args.strict, txn_size=args.txn_size,
                          max_pixels=args.max_pixels, executor=executor)
    print(summary.describe(), file=sys.stderr)
    if summary.skipped:
        print(f"skipped images are listed in {summary.db_path}.skipped.tsv", file=sys.stderr)


def convert_imageset_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``convert_imageset``."""
    argv = sys.argv[1:] if argv is None else argv
    args = convert_parser().parse_args(normalize_gflags(argv, CONVERT_BOOLS))
    return run_command(_convert, args)


# ---------------------------------------------------------------- compute_image_mean
def mean_parser(prog="compute_image_mean") -> argparse.ArgumentParser:
    """Argument parser of compute_image_mean INPUT_DB [OUTPUT_FILE]."""
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
    from imagenet_db.observers.mean import channel_means, compute_db_mean, write_mean

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
    return run_command(_mean, mean_parser().parse_args(normalize_gflags(argv, ())))


# ---------------------------------------------------------------- create_imagenet
CREATE_BOOLS = ("encoded", "overwrite", "progress", "verify", "resume", "strict", "fast_decode")


def create_parser(prog="create_imagenet") -> argparse.ArgumentParser:
    """Argument parser of create_imagenet SOURCE OUTDIR."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Build Caffe's ImageNet data in one step (get_ilsvrc_aux.sh + "
                    "create_imagenet.sh + make_imagenet_mean.sh): synsets.txt, train.txt, val.txt "
                    "(labels = position of the wnid in ASCII order), shuffled "
                    "ilsvrc12_{train,val}_<backend> databases and imagenet_mean.binaryproto/.npy.",
        epilog="SOURCE: the folder holding the raw ILSVRC2012_img_train.tar, "
               "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz (read in place, "
               "nothing extracted; labels from the devkit), or an extracted ImageNet with "
               "train/<wnid>/*.JPEG and val/ either as per-wnid folders or flat with "
               "SOURCE/val.txt ('file wnid-or-label' lines). " + EXIT_STATUS)
    p.add_argument("source", metavar="SOURCE", help="ILSVRC2012 archives folder or ImageNet tree")
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the databases and aux files")
    p.add_argument("--resize", type=_size, default=(256, 256), metavar="WxH",
                   help="squash every image to WIDTHxHEIGHT (default 256x256; 0x0 = keep size)")
    p.add_argument("--backend", default="lmdb", choices=BACKENDS, help="database type (default lmdb)")
    bool_flag(p, "encoded", "store JPEG bytes instead of raw pixels")
    _fast_decode_arg(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="shuffle seed")
    workers_arg(p, cluster=True)
    bool_flag(p, "overwrite", "replace existing outputs (databases are swapped in when complete)")
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    bool_flag(p, "verify", "archives only: first check their MD5 against the published values "
                       "(reads all ~147 GB)")
    _reliability_args(p, "OUTDIR: finished stages (aux files, train DB, val DB, mean) are "
                         "kept, the interrupted one continues")
    return p


def _create(args) -> None:
    from imagenet_db.recipes.imagenet import create_imagenet

    with _executor(args) as executor:
        create_imagenet(args.source, args.outdir, resize=args.resize, backend=args.backend,
                        encoded=args.encoded, fast_decode=args.fast_decode, seed=args.seed,
                        workers=args.workers, overwrite=args.overwrite, progress=args.progress,
                        verify=args.verify, log=lambda text: print(text, file=sys.stderr),
                        executor=executor, resume=args.resume, strict=args.strict,
                        txn_size=args.txn_size, max_pixels=args.max_pixels)


def create_imagenet_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``create_imagenet``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_create, create_parser().parse_args(normalize_gflags(argv, CREATE_BOOLS)))


# ---------------------------------------------------------------- verify
VERIFY_BOOLS = ("progress", "require_manifest", "allow_mixed_sizes")


def verify_parser(prog="imagenet-db verify") -> argparse.ArgumentParser:
    """Argument parser of imagenet-db verify DB."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Check a Caffe Datum database end to end: completion record "
                    "(imagenet_db.json; a database made elsewhere, e.g. by Caffe, is checked "
                    "without it), entry count, key format ('%08d_relpath') and order, every "
                    "datum parses and (encoded) decodes, one channels/height/width, labels in "
                    "range. Prints a summary; exit 0 when no problem is found, 1 otherwise.",
        epilog=EXIT_STATUS)
    p.add_argument("db", metavar="DB", help="LMDB or LevelDB directory")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="database type (default: detected from the files)")
    p.add_argument("--synsets", metavar="SYNSETS_TXT", default=None,
                   help="synsets.txt: labels must be in 0..(number of lines - 1)")
    bool_flag(p, "require_manifest", "a missing completion record is a problem, not a note")
    bool_flag(p, "allow_mixed_sizes", "datums of different sizes are not a problem")
    workers_arg(p)
    bool_flag(p, "progress", "progress bar (default: only on a terminal)", default=None)
    return p


def _verify(args) -> int:
    from imagenet_db.verify import verify_db

    report = verify_db(args.db, args.backend, args.synsets, args.workers, args.progress,
                       require_manifest=args.require_manifest,
                       allow_mixed_sizes=args.allow_mixed_sizes)
    print(report.describe())
    return 0 if report.ok else 1


def verify_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``imagenet-db verify``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_verify, verify_parser().parse_args(normalize_gflags(argv, VERIFY_BOOLS)))


# ---------------------------------------------------------------- imagenet-db
SUBCOMMANDS = {
    "convert": (convert_imageset_main, "convert_imageset: list of images -> Datum database"),
    "mean": (compute_image_mean_main, "compute_image_mean: mean image of a database"),
    "create": (create_imagenet_main, "create_imagenet: the whole ImageNet recipe"),
    "labels": (lambda argv: _archives_cli().labels_main(argv),
               "only synsets.txt, synset_words.txt, train.txt, val.txt (archives or tree)"),
    "extract": (lambda argv: _archives_cli().extract_main(argv),
                "ILSVRC2012 archives -> train/<wnid>/, val/<wnid>/ folders (resumable)"),
    "verify": (verify_main, "check a Datum database end to end (also Caffe-made ones)"),
}


def _archives_cli():
    from imagenet_db.cli import archives as cli_archives
    return cli_archives


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
