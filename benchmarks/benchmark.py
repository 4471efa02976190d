#!/usr/bin/env python
"""imagenet-db benchmark: our tools against a Caffe-style reference loop, on the same JPEGs.

Makes (or takes) a corpus of ImageNet-like JPEGs (``imagenet_db.testing.photos.write_corpus``:
~500x375 colour photos) and, in each of ``--repeats`` rounds, runs every job below in its own
subprocess (so each job's peak RSS is its own: VmHWM, as /usr/bin/time -v reports it), timing the work inside
the subprocess (interpreter start-up and imports excluded, for every job alike):

  reference      one process doing what Caffe's convert_imageset does per image: cv2.imread
                 (IMREAD_COLOR), cv2.resize to 256x256 (INTER_LINEAR), CHW bytes, a protobuf
                 Datum, LMDB put (no MDB_APPEND, fsync per commit) in transactions of 1,000
  convert x1/xN  our convert_imageset CLI, 1 and N worker threads (N = --workers)
  leveldb xN     the same with --backend=leveldb
  fast_decode    convert_imageset --fast_decode (on the corpus, and on a corpus of large
                 JPEGs, 1024x768 by default (--large-size), where libjpeg's DCT downscale
                 applies, with the exact path and the reference on that corpus for comparison)
  writer alone   pre-serialized raw 256x256 datums -> LmdbWriter (default fsync per commit, and
                 sync_commits=False),
                 steady state (after an untimed identical run); the final flush is timed apart
  mean           compute_image_mean (imagenet_db.observers.mean.compute_db_mean) on the xN database,
                 against a plain baseline: protobuf parse + numpy add into uint64, per datum
  10x images     the reference and convert xN on 10x the images (the corpus listed 10 times
                 through symlinks): peak RSS must stay flat (and under 1 GiB)

The machine is shared and noisy, so rates are compared as ratios to the reference measured in
the same round; the table shows the median over rounds. Each round starts with an untimed
warm-up conversion of the corpus; before each job the driver calls sync(2), and each job's
database is deleted before the next one starts, so that every job starts from the same state.
(On the development VM a job that had to take fresh memory for the page cache, e.g. while an
earlier 400 MB database was still cached, ran ~1.5x slower: the host backs guest memory lazily.)

Columns: images/s (datums/s for the writer), ratio to the reference, peak RSS of the job, the
database's size on disk divided by its payload (sum of key + value bytes), and how busy the
machine was with other processes while the job ran (median, in cores: CPU time from
/proc/stat minus the job's own, per second); on a 2-core machine a value near 1 means the xN
runs had only about one core.

Usage (from the repository root):
    python benchmarks/benchmark.py                       # 2,000 images, 3 rounds
    python benchmarks/benchmark.py --quick               # 400 images, 1 round, no 10x run
    python benchmarks/benchmark.py --images 3000 --corpus /tmp/corpus --workers 2 --out /tmp/bench
    python benchmarks/benchmark.py --profile             # also: per-image time split
Everything it writes goes under --out (default: a new folder in the system temp dir) and the
corpus folder; databases are deleted after each job.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIZE = 256  # output width and height, as create_imagenet.sh
LARGE_SIZE = (1024, 768)  # large JPEGs for --fast_decode: 256 <= 768 / 2, so 1/2 DCT scaling
GIB = 1 << 30


# ------------------------------------------------------------------ jobs (run in subprocesses)
def job_reference(corpus: str, listfile: str, db: str) -> dict:
    """Caffe's convert_imageset loop, single process: imread, resize, CHW, Datum, LMDB put."""
    import cv2
    import lmdb
    from imagenet_db.protos import Datum

    entries = [line.rsplit(" ", 1) for line in open(listfile).read().splitlines()]
    start = time.perf_counter()
    env = lmdb.open(db, map_size=1 << 40, subdir=True)  # Caffe: no MDB_NOSYNC, no writemap
    txn = env.begin(write=True)
    for index, (relpath, label) in enumerate(entries):
        image = cv2.imread(os.path.join(corpus, relpath), cv2.IMREAD_COLOR)
        image = cv2.resize(image, (SIZE, SIZE))
        datum = Datum(channels=3, height=SIZE, width=SIZE, data=image.transpose(2, 0, 1).tobytes(),
                      label=int(label), encoded=False)
        txn.put(b"%08d_%s" % (index, relpath.encode()), datum.SerializeToString())
        if (index + 1) % 1000 == 0:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    env.close()
    return {"seconds": time.perf_counter() - start, "count": len(entries)}


def job_convert(corpus: str, listfile: str, db: str, workers: int, backend: str = "lmdb",
                fast_decode: bool = False) -> dict:
    """Our convert_imageset command line, in this process."""
    import imagenet_db.pipeline  # noqa: F401  (imported before the clock starts, as the reference's)
    from imagenet_db.cli import convert_imageset_main

    argv = [f"--resize_height={SIZE}", f"--resize_width={SIZE}", f"--workers={workers}",
            f"--backend={backend}", "--noprogress", corpus + "/", listfile, db]
    if fast_decode:
        argv.insert(0, "--fast_decode")
    start = time.perf_counter()
    code = convert_imageset_main(argv)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"convert_imageset failed with exit code {code}")
    count = sum(1 for line in open(listfile) if line.strip())
    return {"seconds": seconds, "count": count}


def job_writer(corpus: str, listfile: str, db: str, count: int, sync_commits: bool) -> dict:
    """LmdbWriter alone: ``count`` raw 256x256 datums made beforehand from 32 corpus images.
    The same database is first written once untimed and deleted, so the timed run reuses
    warm heap and page-cache memory as a long build does (the steady-state rate)."""
    import cv2
    from imagenet_db.outputs.lmdb import LmdbWriter
    from imagenet_db.outputs.wire import raw_datum_buffer

    names = [line.rsplit(" ", 1)[0] for line in open(listfile).read().splitlines()[:32]]
    values = [bytes(raw_datum_buffer(cv2.resize(cv2.imread(os.path.join(corpus, n)), (SIZE, SIZE)),
                                     i)[0]) for i, n in enumerate(names)]
    def write(path):
        writer = LmdbWriter(path, sync_commits=sync_commits)
        for i in range(count):
            writer.put(b"%08d_%s" % (i, names[i % len(names)].encode()), values[i % len(values)])
        writer.commit()
        return writer

    write(db + ".warmup").close()  # untimed: first touch of the heap and of page-cache memory
    shutil.rmtree(db + ".warmup")
    start = time.perf_counter()
    writer = write(db)
    seconds = time.perf_counter() - start
    writer.close()  # the final flush to disk (fsync), timed apart: it measures the disk
    return {"seconds": seconds, "count": count, "flush": time.perf_counter() - start - seconds}


def job_mean(db: str, baseline: bool) -> dict:
    """compute_db_mean (ours) or the per-datum protobuf + numpy baseline, on a warm cache."""
    import numpy as np
    from imagenet_db.observers.mean import compute_db_mean
    from imagenet_db.protos import Datum
    from imagenet_db.outputs import iterate_db

    payload = sum(len(v) for _, v in iterate_db(db))  # also warms the page cache
    start = time.perf_counter()
    if baseline:
        total, datum, count = None, Datum(), 0
        for _, value in iterate_db(db):
            datum.ParseFromString(value)
            pixels = np.frombuffer(datum.data, dtype=np.uint8)
            if total is None:
                total = np.zeros(pixels.shape, dtype=np.uint64)
            np.add(total, pixels, out=total, casting="unsafe")
            count += 1
        mean = total / count
    else:
        mean, count = compute_db_mean(db)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "count": count, "payload": payload,
            "checksum": float(np.asarray(mean, dtype=np.float64).sum())}


JOBS = {"reference": job_reference, "convert": job_convert, "writer": job_writer, "mean": job_mean}


def peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM from /proc/self/status (Linux),
    which, unlike getrusage's ru_maxrss, does not include the parent's RSS from before exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------ driver side
def busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent so far (from /proc/stat; 0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_job(name: str, **params) -> dict:
    """Run a job in a fresh interpreter; returns its JSON result plus ``rss`` (its peak RSS,
    bytes) and ``others`` (cores' worth of CPU used by other processes meanwhile)."""
    import resource

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.sync()  # no job pays for the disk writes left behind by the one before
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, start = busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--job", name,
                           json.dumps(params)], stdout=subprocess.PIPE, env=env, text=True)
    wall, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"benchmark job {name} {params} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mine = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["others"] = max(0.0, busy - mine) / wall
    return result


def db_ratio(db: str) -> tuple:
    """(bytes on disk, payload bytes = sum of key + value lengths) of an LMDB or LevelDB."""
    from imagenet_db.outputs import iterate_db

    payload = sum(len(k) + len(v) for k, v in iterate_db(db))
    disk = sum(os.path.getsize(os.path.join(db, f)) for f in os.listdir(db)
               if f not in ("lock.mdb", "LOCK", "LOG", "LOG.old", "imagenet_db.json"))
    return disk, payload


def pixel_difference(db_a: str, db_b: str) -> tuple:
    """(mean |a - b|, max |a - b|) over all pixels of two raw databases with the same keys."""
    import numpy as np
    from imagenet_db.outputs.datum import datum_to_chw
    from imagenet_db.protos import Datum
    from imagenet_db.outputs import iterate_db

    total = count = worst = 0
    a, b = Datum(), Datum()
    for (ka, va), (kb, vb) in zip(iterate_db(db_a), iterate_db(db_b)):
        assert ka == kb, (ka, kb)
        a.ParseFromString(va)
        b.ParseFromString(vb)
        diff = np.abs(datum_to_chw(a).astype(np.int16) - datum_to_chw(b).astype(np.int16))
        total += int(diff.sum())
        count += diff.size
        worst = max(worst, int(diff.max()))
    return total / count, worst


def make_corpus(folder: str, count: int, size=None, seed: int = 0) -> None:
    """Ensure ``folder`` holds img_000000.JPEG .. (count-1) ImageNet-like JPEGs."""
    import numpy as np
    from imagenet_db.testing.photos import imagenet_like_jpeg, write_corpus

    have = os.path.isdir(folder) and sum(1 for n in os.listdir(folder) if n.endswith(".JPEG"))
    if have and have >= count:
        return
    print(f"writing {count} JPEGs{' of %dx%d' % size if size else ''} to {folder} ...",
          file=sys.stderr)
    if size is None:
        write_corpus(folder, count, seed=seed)
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        with open(os.path.join(folder, f"img_{i:06d}.JPEG"), "wb") as f:
            f.write(imagenet_like_jpeg(rng, size=size))


def write_list(path: str, relpaths) -> None:
    with open(path, "w") as f:
        for i, relpath in enumerate(relpaths):
            f.write(f"{relpath} {i % 1000}\n")


def corpus_names(folder: str, count: int) -> list:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".JPEG"))[:count]
    if len(names) < count:
        raise SystemExit(f"{folder} holds {len(names)} .JPEG files, fewer than --images {count}")
    return names


def profile(corpus: str, names: list) -> list:
    """Per-image time split of the single-thread work (ms per image), measured in-process."""
    import cv2
    import numpy as np
    import lmdb
    from imagenet_db.engine.executor import ordered_map
    from imagenet_db.protos import Datum
    from imagenet_db.outputs.lmdb import LmdbWriter
    from imagenet_db.outputs.wire import raw_datum_buffer

    names = names[:500]
    steps = dict.fromkeys(["read file", "decode (cv2.imdecode)", "resize (cv2.resize)",
                           "CHW + Datum, protobuf (reference)", "CHW + Datum, imagenet_db.outputs.wire",
                           "LMDB put+commit, Caffe-style", "LMDB put, LmdbWriter"], 0.0)
    tmp = tempfile.mkdtemp(prefix="imagenet-db-profile-")
    env = lmdb.open(os.path.join(tmp, "ref"), map_size=1 << 36)
    writer = LmdbWriter(os.path.join(tmp, "ours"))
    txn = env.begin(write=True)
    clock = time.perf_counter
    for i, name in enumerate(names):
        t0 = clock()
        with open(os.path.join(corpus, name), "rb") as f:
            data = f.read()
        t1 = clock()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        t2 = clock()
        image = cv2.resize(image, (SIZE, SIZE))
        t3 = clock()
        value = Datum(channels=3, height=SIZE, width=SIZE, data=image.transpose(2, 0, 1).tobytes(),
                      label=i, encoded=False).SerializeToString()
        t4 = clock()
        ours, _ = raw_datum_buffer(image, i)
        t5 = clock()
        txn.put(b"%08d_%s" % (i, name.encode()), value)
        if (i + 1) % 1000 == 0 or i + 1 == len(names):
            txn.commit()
            txn = env.begin(write=True)
        t6 = clock()
        writer.put(b"%08d_%s" % (i, name.encode()), ours)
        t7 = clock()
        for step, (a, b) in zip(steps, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5),
                                        (t5, t6), (t6, t7)]):
            steps[step] += b - a
    txn.abort()
    env.close()
    t0 = clock()
    writer.close()
    steps["LMDB put, LmdbWriter"] += clock() - t0  # its one fsync at the end
    # hand-off between threads: ordered_map with 2 threads over a function that does nothing
    t0 = clock()
    for _ in ordered_map(lambda x: x, range(20000), 2):
        pass
    steps["thread hand-off (ordered_map, per item)"] = (clock() - t0) * len(names) / 20000
    shutil.rmtree(tmp)
    return [(step, 1e3 * seconds / len(names)) for step, seconds in steps.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See the module docstring for what each row measures.")
    parser.add_argument("--images", type=int, default=2000, help="images in the corpus run (2000)")
    parser.add_argument("--corpus", help="folder of img_NNNNNN.JPEG files (made if missing or "
                                         "short; default: OUT/corpus)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker threads for the xN runs (default: all cores)")
    parser.add_argument("--out", help="scratch folder (default: a new temp folder, removed after)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the table shows medians (3)")
    parser.add_argument("--quick", action="store_true",
                        help="400 images, 1 round, no 10x RSS run (a smoke test, not a measurement)")
    parser.add_argument("--no-scale", dest="scale", action="store_false",
                        help="skip the 10x-images RSS run (it writes ~2 GB per 1,000 images)")
    parser.add_argument("--large-size", type=lambda t: tuple(int(v) for v in t.lower().split("x")),
                        default=LARGE_SIZE, metavar="WxH",
                        help="size of the large JPEGs for the --fast_decode rows (1024x768)")
    parser.add_argument("--profile", action="store_true",
                        help="also print the per-image time split of the single-thread work")
    parser.add_argument("--json", metavar="FILE", help="also write all raw results as JSON")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.job:
        result = JOBS[args.job](**json.loads(rest[0]))
        result["rss"] = peak_rss()
        print(json.dumps(result))
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.quick:
        args.images, args.repeats, args.scale = min(args.images, 400), 1, False
    from imagenet_db.engine.executor import default_workers

    workers = args.workers or default_workers()
    out = args.out or tempfile.mkdtemp(prefix="imagenet-db-bench-")
    os.makedirs(out, exist_ok=True)
    corpus = os.path.abspath(args.corpus or os.path.join(out, "corpus"))
    make_corpus(corpus, args.images)
    large = os.path.join(out, "corpus_large_%dx%d" % args.large_size)
    large_count = max(20, args.images // 10)
    make_corpus(large, large_count, size=args.large_size, seed=1)
    names = corpus_names(corpus, args.images)
    listfile, large_list = os.path.join(out, "list.txt"), os.path.join(out, "large.txt")
    write_list(listfile, names)
    write_list(large_list, corpus_names(large, large_count))
    db = lambda name: os.path.join(out, name)  # noqa: E731
    print(f"load before: {os.getloadavg()[0]:.2f}; {args.images} images, {workers} workers, "
          f"{args.repeats} round(s)", file=sys.stderr)

    rows = {}  # label -> list of results over rounds
    extra = {}

    def record(label, result):
        rows.setdefault(label, []).append(result)

    warmup_list = listfile
    for round_no in range(args.repeats):
        print(f"round {round_no + 1}/{args.repeats} ...", file=sys.stderr)
        # untimed: absorbs whatever state the previous round's last jobs left behind
        run_job("convert", corpus=corpus, listfile=warmup_list, db=db("warm"), workers=workers)
        shutil.rmtree(db("warm"))
        ref = run_job("reference", corpus=corpus, listfile=listfile, db=db("ref"))
        ref["round_ref"] = ref["count"] / ref["seconds"]
        if round_no == 0:
            extra["ref_db"] = db_ratio(db("ref"))
        shutil.rmtree(db("ref"))
        record("reference (Caffe-style loop)", ref)
        for w in sorted({1, workers}):
            r = run_job("convert", corpus=corpus, listfile=listfile, db=db("ours"), workers=w)
            r["round_ref"] = ref["round_ref"]
            record(f"convert_imageset x{w}", r)
            if round_no == 0 and w == workers:
                extra["ours_db"] = db_ratio(db("ours"))
            shutil.rmtree(db("ours"))
        r = run_job("convert", corpus=corpus, listfile=listfile, db=db("fast"), workers=workers,
                    fast_decode=True)
        r["round_ref"] = ref["round_ref"]
        record(f"convert_imageset x{workers} --fast_decode", r)
        shutil.rmtree(db("fast"))
        r = run_job("convert", corpus=corpus, listfile=listfile, db=db("ldb"), workers=workers,
                    backend="leveldb")
        r["round_ref"] = ref["round_ref"]
        record(f"convert_imageset x{workers} --backend=leveldb", r)
        if round_no == 0:
            extra["leveldb_db"] = db_ratio(db("ldb"))
        shutil.rmtree(db("ldb"))
        # large JPEGs: reference, exact and --fast_decode
        lref = run_job("reference", corpus=large, listfile=large_list, db=db("lref"))
        lref["round_ref"] = lref["count"] / lref["seconds"]
        record("large %dx%d: reference" % args.large_size, lref)
        shutil.rmtree(db("lref"))
        for fast in (False, True):
            r = run_job("convert", corpus=large, listfile=large_list,
                        db=db("lfast" if fast else "lexact"), workers=workers, fast_decode=fast)
            r["round_ref"] = lref["round_ref"]
            record(f"large: convert_imageset x{workers}" + (" --fast_decode" if fast else ""), r)
        if round_no == 0:
            extra["fast_diff"] = pixel_difference(db("lexact"), db("lfast"))
        shutil.rmtree(db("lexact"))
        shutil.rmtree(db("lfast"))
        for _ in range(3):  # cheap and noisy (see the README): three samples per round
            for sync in (True, False):
                r = run_job("writer", corpus=corpus, listfile=listfile, db=db("w"),
                            count=max(args.images, 2000), sync_commits=sync)
                r["round_ref"] = ref["round_ref"]
                record("writer alone (LmdbWriter" + (")" if sync else ", sync_commits=False)"), r)
                shutil.rmtree(db("w"))
        ours = db("ours")  # made again, untimed, for the mean jobs
        run_job("convert", corpus=corpus, listfile=listfile, db=ours, workers=workers)
        for baseline in (True, False):
            m = run_job("mean", db=ours, baseline=baseline)
            record("mean: protobuf + numpy baseline" if baseline else "compute_image_mean (ours)", m)
        shutil.rmtree(ours)

    if args.scale:
        print("10x images run ...", file=sys.stderr)
        big_root = os.path.join(out, "scale")
        os.makedirs(big_root, exist_ok=True)
        big = []
        for rep in range(10):
            os.makedirs(os.path.join(big_root, f"r{rep}"), exist_ok=True)
            for name in names:
                link = os.path.join(big_root, f"r{rep}", name)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(corpus, name), link)
                big.append(f"r{rep}/{name}")
        big_list = os.path.join(out, "list10x.txt")
        write_list(big_list, big)
        run_job("convert", corpus=corpus, listfile=warmup_list, db=db("warm"), workers=workers)
        shutil.rmtree(db("warm"))
        bref = run_job("reference", corpus=big_root, listfile=big_list, db=db("big"))
        bref["round_ref"] = bref["count"] / bref["seconds"]
        record(f"10x images ({len(big)}): reference", bref)
        shutil.rmtree(db("big"))
        r = run_job("convert", corpus=big_root, listfile=big_list, db=db("big"), workers=workers)
        r["round_ref"] = bref["round_ref"]
        record(f"10x images: convert_imageset x{workers}", r)
        shutil.rmtree(db("big"))
        shutil.rmtree(big_root)

    # ---------------------------------------------------------------- the table
    def fmt_ratio(disk_payload):
        return f"{disk_payload[0] / disk_payload[1]:.3f}" if disk_payload else ""

    db_col = {"reference (Caffe-style loop)": extra.get("ref_db"),
              f"convert_imageset x{workers}": extra.get("ours_db"),
              f"convert_imageset x{workers} --backend=leveldb": extra.get("leveldb_db")}
    lines = ["| run | images/s | ratio to reference | peak RSS (MiB) | DB bytes / payload "
             "| other processes (cores) | notes |", "|---|---:|---:|---:|---:|---:|---|"]
    for label, results in rows.items():
        rate = statistics.median(r["count"] / r["seconds"] for r in results)
        rss = max(r["rss"] for r in results) / (1 << 20)
        notes = ""
        if "payload" in results[0]:
            gbs = statistics.median(r["payload"] / r["seconds"] for r in results) / 1e9
            ratio, notes = "", f"{gbs:.2f} GB/s of datum payload"
        else:
            ratio = f"{statistics.median(r['count'] / r['seconds'] / r['round_ref'] for r in results):.2f}x"
        if label.startswith("large: ") and label.endswith("--fast_decode"):
            exact = rows[label.replace(" --fast_decode", "")]
            speedup = statistics.median(e["seconds"] / f["seconds"] for e, f in zip(exact, results))
            mean_diff, max_diff = extra["fast_diff"]
            notes = (f"{speedup:.2f}x the exact path; pixels differ by {mean_diff:.2f} on average "
                     f"(max {max_diff}) of 255")
        if label == f"convert_imageset x{workers}" and workers > 1 and "convert_imageset x1" in rows:
            scaling = statistics.median(o["seconds"] / r["seconds"] * r["count"] / o["count"]
                                        for o, r in zip(rows["convert_imageset x1"], results))
            notes = f"{scaling:.2f}x the x1 rate ({workers} workers)"
        if label.startswith("writer"):
            flush = statistics.median(r["flush"] for r in results)
            rates = sorted(r["count"] / r["seconds"] for r in results)
            notes = (f"raw 256x256 datums/s; {len(rates)} runs from {rates[0]:,.0f} to "
                     f"{rates[-1]:,.0f}; final flush of {results[0]['count']} datums {flush:.2f} s")
        others = statistics.median(r["others"] for r in results)
        lines.append(f"| {label} | {rate:,.0f} | {ratio} | {rss:,.0f} | {fmt_ratio(db_col.get(label))} "
                     f"| {others:.2f} | {notes} |")
    print(f"\n{args.images} ImageNet-like JPEGs (~500x375) -> {SIZE}x{SIZE} raw datums; "
          f"{workers} workers; median of {args.repeats} round(s); load average now "
          f"{os.getloadavg()[0]:.2f}\n")
    print("\n".join(lines))
    if args.profile:
        print("\nPer-image time split, one thread (ms per image):\n")
        print("| step | ms/image |\n|---|---:|")
        for step, ms in profile(corpus, names):
            print(f"| {step} | {ms:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "extra": extra}, f, indent=1)
    if not args.out:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
