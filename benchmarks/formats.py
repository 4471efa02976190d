#!/usr/bin/env python
"""create_imagenet --format: one row per output format against the Caffe LMDB build, on the
same images.

Makes (or takes) an extracted ImageNet-like tree (``imagenet_db.testing.photos
.write_extracted_tree``: ~500x375 colour JPEGs in train/<wnid>/, flat val/ + val.txt) and runs,
each in its own subprocess (its peak RSS is its own: VmHWM), timing the build inside it
(interpreter start-up and imports excluded):

  caffe lmdb       create_imagenet (squash 256x256 raw Datums, both splits, + the mean)
  cuda-convnet2    make-data's resize + crop, JPEG q95 in pickled batches + batches.meta
  theano-alexnet   squash 256x256, RGB c01b uint8 hickle batches of 256 + halves + labels
  folder copy      the files copied byte for byte into train/<wnid>/, val/<wnid>/
  folder 256x256   squashed and re-encoded (JPEG, OpenCV's quality 95)

Columns: images/s (train + val images over the build's wall time), ratio to the caffe lmdb
row, bytes written per image (everything under the output folder / images), peak RSS, and how
busy the machine was with other processes meanwhile (cores: CPU time from /proc/stat minus the
job's own, per second; the machine is shared).

Usage (from the repository root):
    python benchmarks/formats.py                    # 10 classes x 100 + 100 val, 2 rounds
    python benchmarks/formats.py --quick            # 10 x 20 + 20 val, 1 round
    python benchmarks/formats.py --classes 10 --per-class 300 --rounds 3 --workers 2
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

from benchmark import peak_rss, run_script_job  # noqa: E402

JOBS = [  # (row name, create_imagenet arguments)
    ("caffe lmdb", ["--format", "caffe"]),
    ("cuda-convnet2", ["--format", "cuda-convnet2"]),
    ("theano-alexnet", ["--format", "theano-alexnet"]),
    ("folder copy", ["--format", "folder"]),
    ("folder 256x256", ["--format", "folder", "--resize", "256x256"]),
]


def tree_bytes(folder: str) -> int:
    """Bytes of all files under ``folder``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder)
               for f in files)


def job(source: str, out: str, args: list) -> dict:
    """In the subprocess: one create_imagenet build, timed."""
    from imagenet_db.cli import create_imagenet_main

    start = time.perf_counter()
    code = create_imagenet_main([source, out, "--progress=false", *args])
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(code)
    return {"seconds": seconds, "rss": peak_rss(), "bytes": tree_bytes(out)}


def run(source: str, out: str, args: list) -> dict:
    """Run one job in a fresh interpreter; adds ``others`` (other processes' cores)."""
    shutil.rmtree(out, ignore_errors=True)
    result = run_script_job([os.path.abspath(__file__), "--job", json.dumps([source, out, args])],
                            f"job {args}", quiet=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=100, help="train images per class")
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--tree", default=None, help="reuse/make the source tree here")
    p.add_argument("--out", default=None, help="work folder (default: a temp folder)")
    p.add_argument("--quick", action="store_true", help="10 x 30 images + 30 val, 1 round")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        print(json.dumps(job(*json.loads(args.job))))
        return 0
    if args.quick:
        args.per_class, args.val_per_class, args.rounds = 30, 3, 1
    work = args.out or tempfile.mkdtemp(prefix="imagenet-db-formats-")
    tree = args.tree or os.path.join(work, "tree")
    from imagenet_db.sources.labels import ilsvrc2012_ids
    from imagenet_db.testing.photos import write_extracted_tree

    wnids = sorted(ilsvrc2012_ids())[:args.classes]
    images = args.classes * (args.per_class + args.val_per_class)
    if not os.path.isdir(os.path.join(tree, "train")):
        write_extracted_tree(tree, wnids, args.per_class, args.val_per_class, seed=11)
    extra = ["--workers", str(args.workers)] if args.workers else []
    print(f"load before: {os.getloadavg()[0]:.2f}; {images} images "
          f"({args.classes} classes x {args.per_class} train + {args.val_per_class} val), "
          f"{args.rounds} round(s), workers {args.workers or 'all'} of {os.cpu_count()} cores")
    rows = {name: [] for name, _ in JOBS}
    for _ in range(args.rounds):
        for name, job_args in JOBS:
            rows[name].append(run(tree, os.path.join(work, "out"), job_args + extra))
    base = statistics.median(images / r["seconds"] for r in rows["caffe lmdb"])
    print("\n| format | images/s | ratio to caffe lmdb | bytes written / image | peak RSS (MiB) "
          "| other processes (cores) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, results in rows.items():
        rate = statistics.median(images / r["seconds"] for r in results)
        size = statistics.median(r["bytes"] for r in results) / images
        rss = statistics.median(r["rss"] for r in results) / 2 ** 20
        others = statistics.median(r["others"] for r in results)
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x | {size:,.0f} | {rss:,.0f} | "
              f"{others:.2f} |")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
