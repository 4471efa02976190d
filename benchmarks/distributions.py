"""Benchmark: create_imagenet from each distribution on the same images, in one run.

Writes one fixture set (imagenet_db.testing.clsloc: ImageNet-like ~500x375 JPEGs from the real
photos) as the three ILSVRC2012 files, the same images extracted (train/<wnid>/, flat val/),
ILSVRC2015_CLS-LOC.tar.gz + devkit (read in place through gzip random access) and Kaggle's
zip, then runs the whole create_imagenet recipe (aux files, shuffled train and val LMDBs of
256x256 raw Datums, mean) from each, in interleaved rounds (tree, tars, tar.gz, zip, tree, ...)
so that load from other processes hits every case alike. The .tar.gz's one-time index pass
and the zip's central-directory read are timed separately (the rounds use the cached index).
Every build must give the same databases. Prints one table: images/s (median of the rounds,
with min..max), ratio to the extracted tree, this process's CPU time per image (less sensitive
to other load than the wall-clock rate; its inverse ratio is what the rate would be on idle
cores), and the other processes' CPU use during the runs.

    python benchmarks/distributions.py --classes 20 --per-class 50 --rounds 3
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagenet_db.engine.buildstate import BuildOptions  # noqa: E402
from imagenet_db.imaging.transform import TransformOptions  # noqa: E402
from imagenet_db.readers import iterate_db  # noqa: E402
from imagenet_db.recipes.imagenet import create_imagenet  # noqa: E402
from imagenet_db.sources import open_dataset  # noqa: E402
from imagenet_db.sources.archives import gzindex  # noqa: E402
from imagenet_db.testing import archives as fixture_archives  # noqa: E402
from imagenet_db.testing import clsloc  # noqa: E402
from imagenet_db.testing.archives import ArchiveSpec  # noqa: E402


def cpu_ticks_of_others():
    """{pid: CPU ticks} of every process but this one (from /proc)."""
    ticks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[pid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return ticks


def others_used(before, after) -> float:
    """CPU ticks other processes used between two snapshots (processes that ended in between
    are missed, so this is a lower bound)."""
    return sum(t - before.get(pid, 0) for pid, t in after.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="dist-bench-"))
    os.environ["IMAGENET_DB_TAR_INDEX_CACHE"] = str(work / "index-cache")
    wnids = [w for _, w, _ in fixture_archives.ilsvrc2012_classes()[:args.classes]]
    t = time.perf_counter()
    base = clsloc.write_base(work / "base", ArchiveSpec(wnids=wnids, train_per_class=args.per_class,
                                                        val_count=args.val, seed=0))
    clsloc.write_ilsvrc2015(work / "c15", base)
    clsloc.write_kaggle(work / "kaggle", base, form="zip")
    print(f"fixture: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    sources = {"extracted tree": work / "base" / "tree", "ILSVRC2012 tars": work / "base" / "ilsvrc2012",
               "ILSVRC2015 .tar.gz in place": work / "c15", "Kaggle .zip in place": work / "kaggle"}
    images = len(base["train"]) + len(base["val"])
    payload = sum((work / "base" / "tree" / "train" / r).stat().st_size for r, _ in base["train"])

    t = time.perf_counter()
    targz = work / "c15" / "ILSVRC2015_CLS-LOC.tar.gz"
    open_dataset(str(work / "c15"))  # the one-time index pass (then cached)
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    open_dataset(str(work / "c15"))
    cached_s = time.perf_counter() - t
    t = time.perf_counter()
    open_dataset(str(work / "kaggle"))
    zip_s = time.perf_counter() - t

    transform = TransformOptions(resize_height=256, resize_width=256)
    times = {name: [] for name in sources}
    cpu = {name: [] for name in sources}
    others = {name: [] for name in sources}
    for _ in range(args.rounds):
        for name, source in sources.items():
            out = work / f"out-{name.split()[0]}"
            shutil.rmtree(out, ignore_errors=True)
            ticks = cpu_ticks_of_others()
            c = time.process_time()
            t = time.perf_counter()
            create_imagenet(str(source), str(out), transform,
                            build=BuildOptions(workers=args.workers, progress=False),
                            log=lambda _: None)
            seconds = time.perf_counter() - t
            times[name].append(seconds)
            cpu[name].append((time.process_time() - c) / images * 1e3)
            others[name].append(others_used(ticks, cpu_ticks_of_others())
                                / os.sysconf("SC_CLK_TCK") / seconds)
    ref = work / "out-extracted"
    for name in sources:
        out = work / f"out-{name.split()[0]}"
        for db in ("ilsvrc12_train_lmdb", "ilsvrc12_val_lmdb"):
            assert list(iterate_db(str(out / db))) == list(iterate_db(str(ref / db))), (name, db)

    print(f"\n{images} images ({len(base['train'])} train in {args.classes} classes, "
          f"{len(base['val'])} val; {payload / len(base['train']) / 1e3:.0f} KB JPEGs on average), "
          f"create_imagenet 256x256 raw LMDB + mean, {args.workers} workers, {args.rounds} "
          f"interleaved rounds; load average at the end {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    print("| SOURCE | images/s (median) | min..max | vs extracted tree | CPU ms/image (ours) "
          "| CPU vs tree | other processes (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    tree_cpu = statistics.median(cpu["extracted tree"])
    tree_rate = images / statistics.median(times["extracted tree"])
    for name in sources:
        rates = [images / s for s in times[name]]
        rate = images / statistics.median(times[name])
        ms = statistics.median(cpu[name])
        print(f"| {name} | {rate:.0f} | {min(rates):.0f}..{max(rates):.0f} | {rate / tree_rate:.2f}x "
              f"| {ms:.2f} | {tree_cpu / ms:.2f}x | {statistics.median(others[name]):.2f} |")
    print(f"\none-time .tar.gz index pass: {index_s:.2f} s for {targz.stat().st_size / 1e6:.0f} MB "
          f"({targz.stat().st_size / index_s / 1e6:.0f} MB/s, seek point every "
          f"{gzindex.CHUNK >> 10} KiB), cached index load {cached_s:.2f} s; zip central directory "
          f"+ labels {zip_s:.2f} s")


if __name__ == "__main__":
    main()
