"""Reads per second of ``imagenet_db.reader.DatumDB`` against plain ``lmdb`` loops.

Builds (once, in --work) a corpus of ImageNet-like JPEGs (``testing.photos.write_corpus``)
and, with this checkout's convert_imageset, a shuffled raw 256x256 LMDB and an encoded
(JPEG) LMDB of them; then times, on the warm databases, each way of getting (image, label)
pairs out, in this process, for ``--rounds`` rounds (every loop once a round, in turn;
medians printed):

* ``lmdb cursor, bytes only``: a cursor walk touching no pixel (LMDB itself), and ``+ one copy
  of each value``: the least any reader that hands out arrays it does not own must do;
* ``lmdb cursor + protobuf``: what a user writes without imagenet-db: ``Datum.ParseFromString``,
  ``np.frombuffer(datum.data).reshape(C, H, W)``, ``.transpose(1, 2, 0).copy()`` for HWC;
  ``lmdb get, random order + protobuf``: the same by key in a shuffled order;
* ``DatumDB``: iteration (one cursor), ``db[i]`` in order and in a shuffled order, HWC and CHW.
Also the cost of DatumDB's key list (``len(db)`` on a fresh object) and the other processes'
CPU use while measuring (the machine is shared: read ratios, not absolute numbers).

    python3 benchmarks/reader.py                     # 2,000 images, ~1-2 min the first time
    python3 benchmarks/reader.py --images 200 --rounds 1    # smoke test
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import cv2
import lmdb
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

from benchmark import busy_cpu_seconds  # noqa: E402
from imagenet_db.protos import Datum  # noqa: E402
from imagenet_db.reader import DatumDB  # noqa: E402


def prepare(work: str, images: int) -> dict:
    """The corpus and the two databases in ``work`` (made when missing)."""
    from imagenet_db.testing.photos import write_corpus

    corpus = os.path.join(work, "corpus")
    listfile = os.path.join(work, f"list{images}.txt")
    if not os.path.exists(listfile):
        paths = write_corpus(corpus, images)
        with open(listfile, "w") as f:
            f.writelines(f"{p.name} {i % 100}\n" for i, p in enumerate(paths))
    dbs = {}
    for name, flags in (("raw", []), ("encoded", ["--encoded"])):
        db = os.path.join(work, f"{name}{images}_lmdb")
        if not os.path.exists(db):
            subprocess.run([sys.executable, "-m", "imagenet_db.cli", "convert", "--shuffle",
                            "--resize_width=256", "--resize_height=256", "--no-progress",
                            *flags, corpus + "/", listfile, db], check=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT))
        dbs[name] = db
    return dbs


def to_image(datum: Datum, hwc: bool) -> np.ndarray:
    if datum.encoded:
        image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
        return image if hwc else image.transpose(2, 0, 1).copy()
    chw = np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)
    return chw.transpose(1, 2, 0).copy() if hwc else chw.copy()


def plain_loops(path: str, order) -> dict:
    """The plain-lmdb loops, each returning the number of datums read."""
    def bytes_only():
        env = lmdb.open(path, readonly=True, lock=False)
        with env.begin(buffers=True) as txn:
            n = sum(1 for _ in txn.cursor())
        env.close()
        return n

    def copy_values():
        env = lmdb.open(path, readonly=True, lock=False)
        n = 0
        with env.begin(buffers=True) as txn:
            for _, value in txn.cursor():
                np.frombuffer(value, np.uint8).copy()
                n += 1
        env.close()
        return n

    def cursor_protobuf(hwc):
        def run():
            env = lmdb.open(path, readonly=True, lock=False)
            datum, n = Datum(), 0
            with env.begin() as txn:
                for _, value in txn.cursor():
                    datum.ParseFromString(value)
                    to_image(datum, hwc)
                    n += 1
            env.close()
            return n
        return run

    def random_protobuf(hwc):
        def run():
            env = lmdb.open(path, readonly=True, lock=False)
            datum = Datum()
            with env.begin() as txn:
                keys = list(txn.cursor().iternext(values=False))
                for i in order:
                    datum.ParseFromString(txn.get(keys[i]))
                    to_image(datum, hwc)
            env.close()
            return len(order)
        return run

    return {"lmdb cursor, bytes only (no pixels)": bytes_only,
            "lmdb cursor + one copy of each value (no parsing)": copy_values,
            "lmdb cursor + protobuf, HWC": cursor_protobuf(True),
            "lmdb cursor + protobuf, CHW": cursor_protobuf(False),
            "lmdb get, random order + protobuf, HWC": random_protobuf(True)}


def datumdb_loops(path: str, order) -> dict:
    def make(layout, how):
        def run():
            db = DatumDB(path, layout=layout)
            n = len(db)  # the key list is built here, outside the timing below
            start = time.perf_counter()
            if how == "iteration":
                for _ in db:
                    pass
            elif how == "sequential":
                for i in range(n):
                    db[i]
            else:
                for i in order:
                    db[int(i)]
            took = time.perf_counter() - start
            db.close()
            return n, took
        return run

    loops = {}
    for layout in ("HWC", "CHW"):
        loops[f"DatumDB iteration, {layout}"] = make(layout, "iteration")
        loops[f"DatumDB db[i] in order, {layout}"] = make(layout, "sequential")
        loops[f"DatumDB db[i] random order, {layout}"] = make(layout, "random")
    return loops


def measure(loops: dict, rounds: int) -> list:
    """[(label, median reads/s, median other processes' cores)]: every round runs every loop
    once, in turn, so that a burst of load elsewhere hits all of them alike."""
    rates = {label: [] for label in loops}
    others = {label: [] for label in loops}
    for _ in range(rounds):
        for label, fn in loops.items():
            busy, cpu, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
            result = fn()
            wall = time.perf_counter() - start
            mine = time.process_time() - cpu
            others[label].append(max(0.0, busy_cpu_seconds() - busy - mine) / wall)
            n, took = result if isinstance(result, tuple) else (result, wall)
            rates[label].append(n / took)
    return [(label, statistics.median(rates[label]), statistics.median(others[label]))
            for label in loops]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="datums (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, median kept (default 3)")
    parser.add_argument("--work", default="/tmp/imagenet-db-reader-bench",
                        help="folder for the corpus and databases (kept for the next run)")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    dbs = prepare(args.work, args.images)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.images} datums; "
          f"{args.rounds} rounds, median")
    for name, path in dbs.items():
        fresh = DatumDB(path)
        start = time.perf_counter()
        count = len(fresh)
        index_ms = (time.perf_counter() - start) * 1000
        fresh.close()
        order = np.random.default_rng(0).permutation(count)
        rows = measure({**plain_loops(path, order), **datumdb_loops(path, order)}, args.rounds)
        base = dict((r[0], r[1]) for r in rows)["lmdb cursor + protobuf, HWC"]
        size = os.path.getsize(os.path.join(path, "data.mdb")) / 1e6
        print(f"\n{name} 256x256 datums ({size:,.0f} MB LMDB); DatumDB key list: "
              f"{index_ms:.1f} ms for {count:,} keys\n")
        print("| loop | reads/s | vs cursor + protobuf (HWC) | other processes (cores) |")
        print("|---|---:|---:|---:|")
        for label, rate, others in rows:
            print(f"| {label} | {rate:,.0f} | {rate / base:.2f}x | {others:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
