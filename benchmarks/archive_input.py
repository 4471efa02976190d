"""Benchmark: building the shuffled train database from the raw ILSVRC2012 archives versus
from the same images extracted, and the two ways to keep the shuffled order with tar input.

Writes a fixture archive triple (imagenet_db.testing.archives, ImageNet-like JPEGs) plus the
same images as an extracted tree, then converts the train split (shuffled, 256x256 raw Datums,
LMDB) four ways, each with a warm page cache and with the input evicted from it
(posix_fadvise DONTNEED on the input files only, so other processes are not affected):

  tree       extracted files, shuffled order (what create_imagenet does with a tree)
  tar-pread  archives, shuffled order, each image read by its indexed offset (os.pread);
             what create_imagenet does with archives
  tar-stream archives read sequentially in tar order, transformed in parallel, and written
             out of order: each Datum put at its shuffled key (LMDB without MDB_APPEND)

and a read-only pass (no decode) for each input order, to show the I/O part. Prints one
table: images/s, ratio to the tree, MB/s read, data.mdb size. Usage:

    python benchmarks/archive_input.py --classes 20 --per-class 60 --workers 2
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmdb  # noqa: E402

from imagenet_db.engine.buildstate import BuildOptions  # noqa: E402
from imagenet_db.engine.executor import ordered_map  # noqa: E402
from imagenet_db.imaging.transform import TransformOptions, transform_image  # noqa: E402
from imagenet_db.readers import iterate_db  # noqa: E402
from imagenet_db.outputs.datum import caffe_key, encode_datum  # noqa: E402
from imagenet_db.pipeline import convert  # noqa: E402
from imagenet_db.sources import open_dataset  # noqa: E402
from imagenet_db.sources.base import Record, shuffle_order  # noqa: E402
from imagenet_db.sources.ilsvrc2012 import index_archives  # noqa: E402
from imagenet_db.sources.archives.tarindex import TarReader  # noqa: E402
from imagenet_db.testing import archives as fixture_archives  # noqa: E402
from imagenet_db.testing.archives import ArchiveSpec  # noqa: E402

OPTIONS = TransformOptions(resize_height=256, resize_width=256)


def evict(paths):
    """Drop the files' pages from the page cache (after flushing them)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def stream_out_of_order(index, db_path, workers, seed=0):
    """The alternative to positioned reads: read the train tar front to back, transform in
    parallel, put each Datum under its shuffled key (no MDB_APPEND, keys arrive unordered)."""
    entries = index.train_entries()
    order = shuffle_order(len(entries), seed)
    position = [0] * len(entries)
    for i, j in enumerate(order):
        position[j] = i
    by_offset = sorted(range(len(entries)), key=lambda j: index.train[entries[j][0]].offset)
    reader = TarReader(index.paths.train)

    def work(j):
        relpath, label = entries[j]
        m = index.train[relpath]
        image = transform_image(reader.read(m.offset, m.size), relpath, OPTIONS)
        return j, encode_datum(Record(position[j], relpath, label, None), image)

    env = lmdb.open(db_path, map_size=1 << 34, subdir=True, meminit=False)
    txn, pending = env.begin(write=True), 0
    for j, result in ordered_map(work, by_offset, workers):
        txn.put(caffe_key(position[j], entries[j][0]), result.value)
        pending += 1
        if pending == 1000:
            txn.commit()
            txn, pending = env.begin(write=True), 0
    txn.commit()
    env.close()
    reader.close()


def read_only(loaders, workers):
    total = 0
    for data in ordered_map(lambda load: load(), loaders, workers):
        total += len(data)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs per case; the best is shown")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="archive-bench-"))
    wnids = [w for _, w, _ in fixture_archives.ilsvrc2012_classes()[:args.classes]]
    arch, tree = work / "arch", work / "tree"
    if not (arch / "ILSVRC2012_img_train.tar").exists():
        t = time.perf_counter()
        fixture_archives.write_archives(arch, ArchiveSpec(wnids, args.per_class, val_count=10,
                                                          seed=0), tree_root=tree)
        print(f"fixture: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    os.environ["IMAGENET_DB_TAR_INDEX_CACHE"] = str(work / "index-cache")

    t = time.perf_counter()
    index = index_archives(str(arch))
    index_s = time.perf_counter() - t
    n = len(index.train)
    tree_files = [str(tree / "train" / rel) for rel in index.train]
    tar_bytes = os.path.getsize(index.paths.train)
    payload = sum(m.size for m in index.train.values())

    build = BuildOptions(workers=args.workers, progress=False)

    def split_records(source):
        return open_dataset(str(source)).splits["train"].records(True, 0)

    cases = {
        "tree": (tree_files, lambda db: convert(split_records(tree), db, "lmdb", OPTIONS, build)),
        "tar-pread": ([index.paths.train],
                      lambda db: convert(split_records(arch), db, "lmdb", OPTIONS, build)),
        "tar-stream": ([index.paths.train],
                       lambda db: stream_out_of_order(index, db, args.workers)),
    }
    rows = []
    for name, (inputs, run) in cases.items():
        for cache in ("warm", "cold"):
            best, size = None, None
            for _ in range(args.repeat):
                db = str(work / f"db-{name}")
                shutil.rmtree(db, ignore_errors=True)
                if cache == "cold":
                    evict(inputs)
                else:
                    read_only([lambda p=p: open(p, "rb").read() for p in inputs], 1)
                t = time.perf_counter()
                run(db)
                seconds = time.perf_counter() - t
                best = seconds if best is None else min(best, seconds)
                size = os.path.getsize(os.path.join(db, "data.mdb"))
            rows.append((name, cache, n / best, payload / best / 1e6, size))
    # the three databases must hold the same keys and values
    ref = list(iterate_db(str(work / "db-tree")))
    for name in ("tar-pread", "tar-stream"):
        assert list(iterate_db(str(work / f"db-{name}"))) == ref, name

    # read-only passes (no decode): shuffled files, shuffled pread, sequential pread
    entries = index.train_entries()
    order = shuffle_order(n, 0)
    reader = TarReader(index.paths.train)
    reads = {
        "files, shuffled": (tree_files, [lambda p=tree_files[i]: open(p, "rb").read()
                                         for i in order]),
        "tar pread, shuffled": ([index.paths.train],
                                [lambda m=index.train[entries[i][0]]: reader.read(m.offset, m.size)
                                 for i in order]),
        "tar pread, tar order": ([index.paths.train],
                                 [lambda m=m: reader.read(m.offset, m.size)
                                  for m in sorted(index.train.values(), key=lambda m: m.offset)]),
    }
    read_rows = []
    for name, (inputs, loaders) in reads.items():
        evict(inputs)
        t = time.perf_counter()
        total = read_only(loaders, args.workers)
        seconds = time.perf_counter() - t
        read_rows.append((name, n / seconds, total / seconds / 1e6))

    print(f"\n{n} train images, {args.classes} classes, payload {payload / 1e6:.1f} MB "
          f"(train tar {tar_bytes / 1e6:.1f} MB), {args.workers} workers, 256x256 raw LMDB; "
          f"index {index_s:.2f} s\n")
    print("| input | page cache | images/s | vs tree | MB/s read | data.mdb MB |")
    print("|---|---|---:|---:|---:|---:|")
    tree_rate = {cache: rate for name, cache, rate, _, _ in rows if name == "tree"}
    for name, cache, rate, mbs, size in rows:
        print(f"| {name} | {cache} | {rate:.0f} | {rate / tree_rate[cache]:.2f} | {mbs:.1f} "
              f"| {size / 1e6:.1f} |")
    print(f"\n| read only (cold, {args.workers} threads) | images/s | MB/s |")
    print("|---|---:|---:|")
    for name, rate, mbs in read_rows:
        print(f"| {name} | {rate:.0f} | {mbs:.1f} |")


if __name__ == "__main__":
    main()
