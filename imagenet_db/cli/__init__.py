"""Command-line entry points: convert_imageset, compute_image_mean, create_imagenet, imagenet-db.

Thin wrappers over the Python API, one module per command (``convert``, ``mean``, ``create``,
``verify``, ``labels``, ``extract``, ``show``, ``report``); shared flags in ``flags``, whose
choices come from the registries (``outputs.OUTPUTS`` for --backend). Flags follow Caffe's
gflags spelling so existing scripts run unchanged: ``--flag=value``, ``--flag value``,
single-dash ``-flag``, and for booleans ``--flag``, ``--flag=true|false``, ``--noflag``.

Exit codes (all commands):
  0    success; skipped images are counted and reported in DB.skipped.tsv, not failures
       (unless --strict)
  1    bad input, a refused or failed build, a skipped image under --strict, or problems
       found by ``verify`` (one message naming the file and line, no traceback)
  2    command-line usage error
  130  stopped by Ctrl-C (SIGINT), 143 by SIGTERM: the work done is committed; rerun the
       same command with --resume to finish
"""
import sys
from typing import Optional, Sequence

from imagenet_db import __version__
from imagenet_db.cli.extract import extract_main
from imagenet_db.cli.flags import entry_point
from imagenet_db.cli.labels import labels_main
from imagenet_db.cli.convert import convert_imageset_main, convert_parser  # noqa: F401
from imagenet_db.cli.create import create_imagenet_main, create_parser  # noqa: F401
from imagenet_db.cli.mean import compute_image_mean_main, mean_parser  # noqa: F401
from imagenet_db.cli.report import report_main, report_parser  # noqa: F401
from imagenet_db.cli.show import show_main, show_parser  # noqa: F401
from imagenet_db.cli.verify import verify_main, verify_parser  # noqa: F401

SUBCOMMANDS = {
    "convert": (convert_imageset_main, "convert_imageset: list of images -> Datum database"),
    "mean": (compute_image_mean_main, "compute_image_mean: mean image of a database"),
    "create": (create_imagenet_main, "create_imagenet: the whole ImageNet recipe"),
    "labels": (labels_main,
               "only synsets.txt, synset_words.txt, train.txt, val.txt (archives or tree)"),
    "extract": (extract_main,
                "ILSVRC2012 archives -> train/<wnid>/, val/<wnid>/ folders (resumable)"),
    "verify": (verify_main,
               "check a Datum database (also Caffe-made) or a --format output end to end"),
    "show": (show_main, "contact sheet PNG of a database's datums (captioned tiles)"),
    "report": (report_main, "self-contained HTML report of OUTDIR or of one database"),
}


@entry_point
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
