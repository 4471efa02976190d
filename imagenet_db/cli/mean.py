"""``compute_image_mean INPUT_DB [OUTPUT_FILE]``: Caffe's mean tool.

Compute the mean image of a Caffe Datum database, as Caffe's tools/compute_image_mean: a
BlobProto (num=1, channels, height, width, float data in CHW/BGR order) for transform_param {
mean_file }, and the per-channel mean_value. Sums exactly in 64-bit integers. Encoded datums are
decoded.
"""
import argparse
import contextlib
import os
import sys
from typing import Optional, Sequence

from imagenet_db.cli.flags import (backend_arg, entry_point, help_text, max_pixels_arg,
                                   normalize_gflags, run_command)
from imagenet_db.errors import ImagenetDbError


def mean_parser(prog="compute_image_mean") -> argparse.ArgumentParser:
    """Argument parser of compute_image_mean INPUT_DB [OUTPUT_FILE]."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=help_text(__doc__))
    p.add_argument("input_db", metavar="INPUT_DB", help="LMDB or LevelDB directory")
    p.add_argument("output", metavar="OUTPUT_FILE", nargs="?",
                   help="mean file to write: .binaryproto (BlobProto), .npy (float32 CxHxW) or "
                        ".png (the mean as a picture)")
    backend_arg(p)
    max_pixels_arg(p, "do not decode an encoded datum whose header declares more than N "
                      "pixels (width*height): an error naming it, as builds skip such files")
    p.add_argument("--crop_size", type=int, default=0, metavar="N",
                   help="average the centre NxN window of every datum (Caffe's TEST-phase crop) "
                        "instead of the whole image: the mean of a database whose images differ "
                        "in size, e.g. a --shorter_side 256 build with --crop_size 224 (for Caffe "
                        "use its per-channel mean_value: a mean_file must have the datums' size)")
    return p


def _mean(args) -> None:
    from imagenet_db.engine.lock import OutputLock, lock_path_for
    from imagenet_db.observers.mean import compute_db_mean
    from imagenet_db.outputs.meanfile import channel_means, write_mean

    if args.crop_size < 0:
        raise ImagenetDbError(f"--crop_size must be >= 0, not {args.crop_size}")
    lock = contextlib.nullcontext()
    if args.output:
        if os.path.isdir(args.output):
            raise ImagenetDbError(f"{args.output}: is a directory; OUTPUT_FILE is the mean file "
                                  f"to write (.binaryproto or .npy)")
        lock = OutputLock(lock_path_for(args.output), f"{args.output} is being written")
    with lock:
        mean, count = compute_db_mean(args.input_db, args.backend, crop=args.crop_size or None,
                                      max_pixels=args.max_pixels)
        print(f"Processed {count} datums; mean shape (channels, height, width) = {mean.shape}",
              file=sys.stderr)
        if args.output:
            write_mean(args.output, mean)
            print(f"Write to {args.output}", file=sys.stderr)
    for c, value in enumerate(channel_means(mean)):
        print(f"mean_value channel [{c}]: {value:.6g}")


@entry_point
def compute_image_mean_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``compute_image_mean``."""
    argv = sys.argv[1:] if argv is None else argv
    return run_command(_mean, mean_parser().parse_args(normalize_gflags(argv, ())))
