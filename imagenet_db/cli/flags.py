"""Flag handling shared by all commands: Caffe's gflags spellings on top of argparse, common
flags, and the mapping of errors to exit codes (documented in ``imagenet_db.cli``)."""
import argparse
import contextlib
import functools
import signal
import sys
import threading
from typing import List, Optional, Sequence

from imagenet_db.engine.buildstate import DEFAULT_TXN_SIZE, BuildOptions
from imagenet_db.engine.executor import DEFAULT_DASK_TIMEOUT, default_workers
from imagenet_db.errors import BuildInterrupted, ImagenetDbError
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS
from imagenet_db.outputs import backends
from imagenet_db.sources.base import DEFAULT_SEED

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


EXIT_STATUS = ("Exit status: 0 success (skipped images are listed in DB.skipped.tsv); 1 bad "
               "input, a refused or failed build, a skipped image under --strict, or problems "
               "found by verify; 2 usage error; 130/143 stopped by Ctrl-C/SIGTERM after "
               "committing the work done (rerun the same command with --resume).")


def bool_flag(parser, name, help_text, default=False):
    """Add a boolean --name / --no-name flag (gflags' --name=false and --noname are mapped to
    it by normalize_gflags)."""
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default,
                        help=help_text)


def workers_arg(parser, cluster=False):
    """Add --workers N (and, with ``cluster``, --dask_scheduler ADDRESS)."""
    parser.add_argument("--workers", type=int_range(1, None), default=None, metavar="N",
                        help=f"worker threads for decode/resize/encode, >= 1 (default: all cores, "
                             f"{default_workers()} here); the output does not depend on it")
    if cluster:
        bool_flag(parser, "processes",
                  "run decode/resize/encode in --workers processes instead of threads (past "
                  "Python's GIL: for tiny images and --encoded; the output is the same)")
        parser.add_argument("--dask_scheduler", default=None, metavar="ADDRESS",
                            help="run decode/resize/encode on an existing Dask cluster "
                                 "(e.g. tcp://host:8786; needs 'imagenet-db[cluster]' and the "
                                 "images at the same paths on every worker); the database is "
                                 "written here and is the same as a local build")
        parser.add_argument("--dask_timeout", type=positive_seconds,
                            default=DEFAULT_DASK_TIMEOUT, metavar="SECONDS",
                            help=f"give up connecting to the cluster after SECONDS, and end the "
                                 f"build (work committed, resumable) when the scheduler is lost "
                                 f"or no worker returns a result for SECONDS (default "
                                 f"{DEFAULT_DASK_TIMEOUT:g})")


def int_range(low: Optional[int], high: Optional[int]):
    """argparse type: an integer in low..high (None: unbounded on that side)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low if low is not None else '...'}..{high if high is not None else ''}"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value
    return parse


SEED_RANGE = (-2**63, 2**63 - 1)  # the seed is hashed as 8 signed bytes (sources.base)


def seed_arg(parser, help_text: str) -> None:
    """Add --seed (a 64-bit signed integer)."""
    parser.add_argument("--seed", type=int_range(*SEED_RANGE), default=DEFAULT_SEED,
                        help=help_text)


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def run_command(func, args) -> int:
    """Run ``func(args)`` and map the outcome to an exit code: its return value (or 0), 1 for
    ImagenetDbError/OSError (one line on stderr, no traceback), 128+signal when interrupted."""
    try:
        return func(args) or 0
    except ImagenetDbError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except OSError as exc:  # e.g. an output file that cannot be written (disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"error: {where}{exc.strerror or exc}\n")
        return 1
    except KeyboardInterrupt as exc:
        return _interrupted(exc)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """Report a Ctrl-C/SIGTERM in one line ("interrupted", or the build's own message saying
    what is committed) and return 128 + the signal number (130, 143)."""
    sys.stderr.write(f"{str(exc).strip() or 'interrupted'}\n")
    return 128 + getattr(exc, "signum", signal.SIGINT)


def _terminate(signum, frame):
    raise BuildInterrupted("", signum)


def entry_point(main):
    """Decorator of the commands' entry points: SIGTERM is handled like Ctrl-C for the whole
    command (also outside a build's loop, e.g. while archives are indexed or flags parsed),
    and either ends the command with one line and exit code 130/143, never a traceback.
    (Inside a build, ``engine.graceful`` first commits the work done.)"""
    @functools.wraps(main)
    def wrapper(argv: Optional[Sequence[str]] = None) -> int:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return main(argv)
        except KeyboardInterrupt as exc:
            return _interrupted(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def backend_arg(parser, default="lmdb"):
    """Add --backend with the registered output formats as choices."""
    parser.add_argument("--backend", default=default, choices=backends(),
                        help="database type (default lmdb)" if default else
                             "database type (default: detected from the files)")


def fast_decode_arg(parser):
    """Add --fast_decode."""
    bool_flag(parser, "fast_decode", "decode JPEGs at 1/2, 1/4 or 1/8 scale in libjpeg when the "
                                     "output is at most half their size on both sides, then "
                                     "resize: faster on large photos, pixels differ slightly "
                                     "from Caffe's (default off: byte-identical to Caffe)")


def build_args(parser, what: str):
    """--overwrite, --progress, --resume, --strict, --txn_size, --max_pixels (the
    ``BuildOptions`` of convert_imageset and create_imagenet)."""
    bool_flag(parser, "progress", "progress bar (default: only on a terminal)", default=None)
    bool_flag(parser, "resume", f"continue an interrupted build of {what} from its last "
                                f"committed transaction (same command and settings; a changed "
                                f"list or setting is refused); finished outputs with the same "
                                f"settings are kept")
    bool_flag(parser, "strict", "fail (exit 1) on the first image that has to be skipped")
    parser.add_argument("--txn_size", type=int_range(1, None), default=DEFAULT_TXN_SIZE,
                        metavar="N",
                        help=f"datums per database transaction at most, >= 1 (default {DEFAULT_TXN_SIZE}, "
                             f"as convert_imageset; an LMDB transaction also ends at 32 MiB of "
                             f"datums); a crash loses only uncommitted work: the "
                             f"transaction being written and what is queued behind it")
    max_pixels_arg(parser, "skip image files whose header declares more than N pixels "
                           "(width*height), before decoding, in every format OpenCV decodes; "
                           "under a cap, files whose size cannot be read from their header "
                           "are skipped too")


def max_pixels_arg(parser, what: str) -> None:
    """Add --max_pixels N (``what`` it does; default DEFAULT_MAX_PIXELS, 0 = no cap)."""
    parser.add_argument("--max_pixels", type=int_range(0, None), default=DEFAULT_MAX_PIXELS,
                        metavar="N", help=f"{what} (default {DEFAULT_MAX_PIXELS}; 0 = no cap)")


def build_options(args, executor) -> BuildOptions:
    """The BuildOptions of parsed arguments (see build_args, workers_arg)."""
    return BuildOptions(overwrite=args.overwrite, resume=args.resume, strict=args.strict,
                        txn_size=args.txn_size, max_pixels=args.max_pixels,
                        check_size=getattr(args, "check_size", False), workers=args.workers,
                        progress=args.progress, executor=executor)


def executor_for(args):
    """The Dask executor for --dask_scheduler, worker processes for --processes
    (``engine.processes``), else a null context (local threads). Raises ImagenetDbError
    when both are given."""
    processes = getattr(args, "processes", False)
    if getattr(args, "dask_scheduler", None):
        if processes:
            raise ImagenetDbError("--processes runs the work on this machine and "
                                  "--dask_scheduler on a cluster: give one of them")
        from imagenet_db.engine.executor import dask_executor
        return dask_executor(args.dask_scheduler, args.dask_timeout)
    if processes:
        from imagenet_db.engine.processes import process_executor
        return process_executor(args.workers)
    return contextlib.nullcontext(None)


def stderr_log(text: str) -> None:
    """Progress lines of the commands go to stderr."""
    print(text, file=sys.stderr)


def help_text(module_doc: str) -> str:
    """A command's --help description: its module docstring without the title line."""
    return module_doc.split("\n\n", 1)[1].strip()


def empty_classes_arg(parser) -> None:
    """--allow_empty_classes (create_imagenet, labels, extract)."""
    bool_flag(parser, "allow_empty_classes",
              "keep a synset without training images (an empty train/<wnid>/ folder) as a "
              "label; by default that is an error, since it shifts the labels after it")


def selection_args(parser) -> None:
    """--recipe, --min_class_images, --val_per_class (create_imagenet, labels, extract)."""
    from imagenet_db.recipes.presets import PRESETS

    parser.add_argument("--recipe", choices=tuple(PRESETS), default=None,
                        help="a published preparation: " + "; ".join(
                            f"{p.name}: {p.summary}" for p in PRESETS.values())
                        + " (--min_class_images / --val_per_class / resize flags override it)")
    parser.add_argument("--min_class_images", type=int, default=None, metavar="N",
                        help="drop the classes with fewer than N training images; they are "
                             "listed with their counts in OUTDIR/dropped_classes.txt")
    parser.add_argument("--val_per_class", type=int, default=None, metavar="N",
                        help="make the val split from the first N training images of each "
                             "class, in ASCII (byte) file-name order (the whole ImageNet has "
                             "no val split)")


def class_selection(args):
    """The ``sources.selection.ClassSelection`` of parsed ``selection_args`` (the --recipe's,
    each value replaced by an explicit flag). Raises ImagenetDbError for a negative count."""
    from imagenet_db.recipes.presets import preset
    from imagenet_db.sources.selection import ClassSelection

    if args.recipe:
        return preset(args.recipe).selection(args.min_class_images, args.val_per_class)
    return ClassSelection(args.min_class_images or 0, args.val_per_class or 0)


def apply_recipe_resize(args) -> None:
    """Set the --recipe's resize (``--miil_size``, ``--miil_short_edge``) on parsed flags
    when no resize flag was given (then they pick the resize)."""
    if getattr(args, "recipe", None) and not resize_asked(args) and \
            not getattr(args, "resize", None):
        from imagenet_db.recipes.presets import preset

        chosen = preset(args.recipe)
        args.miil_size, args.miil_short_edge = chosen.miil_size, chosen.miil_short_edge


def blacklist_arg(parser) -> None:
    """--drop_val_blacklist (create_imagenet, labels, extract)."""
    bool_flag(parser, "drop_val_blacklist",
              "leave out the validation images listed in the devkit's "
              "*_clsloc_validation_blacklist.txt (1,762 images whose boxes ILSVRC's localization "
              "evaluation skips; off by default: the classification task keeps all 50,000). "
              "Needs a devkit (2012/2014/2015) in or beside SOURCE")


SOURCE_EPILOG = (
    "SOURCE is any of: the folder holding ILSVRC2012_img_train.tar + ILSVRC2012_img_val.tar + a "
    "devkit (ILSVRC2012_devkit_t12.tar.gz, ILSVRC2014_devkit.tgz or ILSVRC2015_devkit.tar.gz); "
    "the folder holding ILSVRC2015_CLS-LOC.tar.gz (or ILSVRC2017_CLS-LOC.tar.gz), optionally "
    "with a devkit; the folder holding Kaggle's imagenet-object-localization-challenge.zip; any "
    "of these extracted (the folder holding ILSVRC2015/ or Kaggle's LOC_*.csv + ILSVRC/, "
    "ILSVRC2015/ itself, or its Data/CLS-LOC/); or a train/<wnid>/*.JPEG + val/ tree (val/ per "
    "wnid, or flat with SOURCE/val.txt 'file wnid-or-label' lines); the whole ImageNet: the "
    "folder holding fall11_whole.tar or winter21_whole.tar.gz, or a folder of n*.tar files "
    "and/or n*/ folders (train only: see --val_per_class, --recipe). Archives are read in place, "
    "nothing is extracted (a .tar.gz is indexed once; the index is cached).")


def _fill_value(text: str):
    """argparse type of --fill_value: 'V' or 'B,G,R' (integers 0..255) -> tuple."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected V or B,G,R such as 104,117,123, got {text!r}")
    if len(values) not in (1, 3) or any(not 0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or three values in 0..255, got {text!r}")
    return values


def resize_args(parser, sizes_help: str = "--resize_width/--resize_height"):
    """The resize stage's flags (shared by convert_imageset, create_imagenet, extract):
    --resize_mode, each mode's own flags (its ``PARAMS``: --shorter_side, --only_shrink,
    --min_dim, --max_dim), --interpolation, --encode_quality, --fill_value. See
    ``transform_options`` for how they combine."""
    from imagenet_db.imaging.resize import RESIZE_MODES, mode_params
    from imagenet_db.imaging.resize.geometry import INTERPOLATION_NAMES

    g = parser.add_argument_group(
        "resize", "how images are resized (default: Caffe's squash to the given size, bilinear, "
                  "byte-identical to convert_imageset)")
    g.add_argument("--resize_mode", choices=tuple(RESIZE_MODES), default=None,
                   help=f"squash (Caffe: stretch to {sizes_help}); crop, fill, half_crop (NVIDIA "
                        f"DIGITS: keep the aspect ratio and cut the centre / pad with noise / "
                        f"half of each); convnet2 (cuda-convnet2: shorter side to N, centre NxN, "
                        f"AREA/CUBIC); shorter_side and min_max_dim are implied by their flags")
    for _, param in mode_params():  # each mode's own flags (imaging.resize: PARAMS)
        if isinstance(param.default, bool):
            bool_flag(g, param.name, param.help, default=param.default)
        else:
            g.add_argument(f"--{param.name}", type=int, default=param.default,
                           metavar=param.metavar, help=param.help)
    g.add_argument("--interpolation", choices=INTERPOLATION_NAMES, default=None,
                   help="linear (bilinear, Caffe's; the default), area, cubic, or auto "
                        "(cuda-convnet2's rule: AREA when shrinking, CUBIC when enlarging; the "
                        "default of --resize_mode=convnet2)")
    g.add_argument("--encode_quality", type=int, default=0, metavar="Q",
                   help="JPEG quality 1..100 of re-encoded images (default: OpenCV's 95, as "
                        "Caffe; DIGITS uses 90)")
    g.add_argument("--fill_value", type=_fill_value, default=(), metavar="V|B,G,R",
                   help="fill/half_crop: pad with this constant (e.g. the mean 104,117,123) "
                        "instead of DIGITS' random noise 0..254 (seeded by --seed and each "
                        "image's path)")


def transform_options(args, resize_width: int, resize_height: int, **fields):
    """TransformOptions from the resize flags (``resize_args``) and the given sizes/fields.

    The mode is --resize_mode, else the one a mode's flag picks (``resize.selected_mode``:
    shorter_side for --shorter_side, min_max_dim for --min_dim/--max_dim), else squash.
    --interpolation defaults to the mode's ``DEFAULT_INTERPOLATION`` (auto for convnet2,
    linear otherwise). The noise seed is --seed, for the noise-padding modes (``NOISE``) only
    (other builds' records stay as before). Raises ImagenetDbError for flags that do not go
    together."""
    from imagenet_db.imaging.resize import RESIZE_MODES, declared, mode_params, selected_mode
    from imagenet_db.imaging.transform import TransformOptions

    mode = args.resize_mode or selected_mode(args)
    interpolation = args.interpolation or declared(RESIZE_MODES[mode], "DEFAULT_INTERPOLATION")
    noisy = declared(RESIZE_MODES[mode], "NOISE") and not args.fill_value
    params = {param.name: getattr(args, param.name) for _, param in mode_params()}
    return TransformOptions(resize_width=max(0, resize_width), resize_height=max(0, resize_height),
                            resize_mode=mode, **params, interpolation=interpolation,
                            encode_quality=args.encode_quality,
                            fill_value=tuple(args.fill_value),
                            seed=getattr(args, "seed", 0) if noisy else 0, **fields)


def resize_bools() -> tuple:
    """The boolean flags of the resize modes (e.g. only_shrink), for ``normalize_gflags``."""
    from imagenet_db.imaging.resize import mode_params

    return tuple(param.name for _, param in mode_params() if isinstance(param.default, bool))


def resize_asked(args) -> bool:
    """True when any flag of ``resize_args`` that picks or sets up a resize is given: a mode,
    a mode's selecting flag (--shorter_side, --min_dim, --max_dim), --interpolation."""
    from imagenet_db.imaging.resize import mode_params

    return bool(args.resize_mode or args.interpolation or
                any(getattr(args, param.name) for _, param in mode_params() if param.selects))


def keeps_aspect(args) -> bool:
    """True when the resize flags ask for a mode whose sizes vary (not ``FIXED_SIZE``:
    shorter_side, min_max_dim), named or picked by its flag."""
    from imagenet_db.imaging.resize import RESIZE_MODES, selected_mode

    return not RESIZE_MODES[args.resize_mode or selected_mode(args)].FIXED_SIZE
