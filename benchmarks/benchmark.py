#!/usr/bin/env python
"""imagenet-db benchmark: our tools against a Caffe-style reference loop, on the same JPEGs.

Makes (or takes) a corpus of ImageNet-like JPEGs (``imagenet_db.testing.photos.write_corpus``:
~500x375 colour photos) and, in each of ``--repeats`` rounds, runs every job below in its own
subprocess (so each job's peak RSS is its own: VmHWM, as /usr/bin/time -v reports it), timing the work inside
the subprocess (interpreter start-up and imports excluded, for every job alike):

  reference      one process doing what Caffe's convert_imageset does per image: cv2.imread
                 (IMREAD_COLOR), cv2.resize to 256x256 (INTER_LINEAR), CHW bytes, a protobuf
                 Datum, LMDB put (no MDB_APPEND, fsync per commit) in transactions of 1,000
  limit          the same JPEGs decoded + resized with cv2 only, in memory (bytes read before the
                 clock starts), 1 and N threads: the ceiling a build can approach; every
                 build's ratio to the N-thread limit is printed
  convert x1/xN  our convert_imageset CLI, 1 and N worker threads (N = --workers)
  encoded        convert_imageset --encoded, no resize (the DIGITS/DALI case): JPEGs stored as
                 they are, sizes from their headers, no decode
  dask           convert_imageset --dask_scheduler on a real cluster started from the command
                 line (`dask scheduler` + 2 x `dask worker --nworkers 1 --nthreads 1` on
                 127.0.0.1) against local threads, both on the first 1,000 images (--no-dask
                 to skip)
  leveldb xN     the same with --backend=leveldb
  fast_decode    convert_imageset --fast_decode (on the corpus, and on a corpus of large
                 JPEGs, 1024x768 by default (--large-size), where libjpeg's DCT downscale
                 applies, with the exact path and the reference on that corpus for comparison)
  writer alone   pre-serialized raw 256x256 datums -> LmdbWriter (default fsync per commit, and
                 sync_commits=False),
                 steady state (after an untimed identical run); the final flush is timed apart
  mean           compute_image_mean (imagenet_db.observers.mean.compute_db_mean) on the xN database,
                 against a plain baseline: protobuf parse + numpy add into uint64, per datum
  shards         create_imagenet --format webdataset / tfrecord's build (pipeline_shards) of the
                 corpus: JPEGs passed through (the --encoded case; target >= 8,000/s on 2
                 cores), WebDataset at shorter side 256 (target >= 0.9x the limit), and on the
                 Dask cluster against local threads (target <= 1.05x); 250 samples per shard
  10x images     the reference and convert xN on 10x the images (the corpus listed 10 times
                 through symlinks): peak RSS must stay flat (and under 1 GiB)

The machine is shared and noisy, so rates are compared as ratios to the reference measured in
the same round; the table shows the median over rounds. Each round starts with an untimed
warm-up conversion of the corpus; before each job the driver calls sync(2), and each job's
database is deleted before the next one starts, so that every job starts from the same state.
(On the development VM a job that had to take fresh memory for the page cache, e.g. while an
earlier 400 MB database was still cached, ran ~1.5x slower: the host backs guest memory lazily.)

Columns: images/s (datums/s for the writer), ratio to the reference and to the N-thread limit
(same round), CPU time of the job per image (all its threads, user + system), peak RSS of the job, the
database's size on disk divided by its payload (sum of key + value bytes), and how busy the
machine was with other processes while the job ran (median, in cores: CPU time from
/proc/stat minus the job's own, per second); on a 2-core machine a value near 1 means the xN
runs had only about one core.

Usage (from the repository root):
    python benchmarks/benchmark.py                       # 2,000 images, 3 rounds
    python benchmarks/benchmark.py --quick               # 400 images, 1 round, no 10x run
    python benchmarks/benchmark.py --images 3000 --corpus /tmp/corpus --workers 2 --out /tmp/bench
    python benchmarks/benchmark.py --profile             # also: CPU per stage + scaling projection
    python benchmarks/benchmark.py --targets --out /tmp/t  # issue 23's targets (long: 5M records)
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
HERE = os.path.dirname(os.path.abspath(__file__))  # scaling.py lives beside this file
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

SIZE = 256  # output width and height, as create_imagenet.sh
LARGE_SIZE = (1024, 768)  # large JPEGs for --fast_decode: 256 <= 768 / 2, so 1/2 DCT scaling
GIB = 1 << 30


# ------------------------------------------------------------------ jobs (run in subprocesses)
def cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_limit(corpus: str, listfile: str, threads: int) -> dict:
    """The decode limit: cv2.imdecode + cv2.resize of the same JPEGs, in memory, no output."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    names = [line.rsplit(" ", 1)[0] for line in open(listfile).read().splitlines()]
    blobs = []
    for name in names:
        with open(os.path.join(corpus, name), "rb") as f:
            blobs.append(np.frombuffer(f.read(), np.uint8))

    def work(blob):
        return cv2.resize(cv2.imdecode(blob, cv2.IMREAD_COLOR), (SIZE, SIZE)).shape

    for blob in blobs[:20]:
        work(blob)
    cpu, start = cpu_seconds(), time.perf_counter()
    if threads == 1:
        for blob in blobs:
            work(blob)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(work, blobs, chunksize=8):
                pass
    return {"seconds": time.perf_counter() - start, "count": len(blobs),
            "cpu": cpu_seconds() - cpu}


def job_reference(corpus: str, listfile: str, db: str) -> dict:
    """Caffe's convert_imageset loop, single process: imread, resize, CHW, Datum, LMDB put."""
    import cv2
    import lmdb
    from imagenet_db.protos import Datum

    entries = [line.rsplit(" ", 1) for line in open(listfile).read().splitlines()]
    cpu, start = cpu_seconds(), time.perf_counter()
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
    return {"seconds": time.perf_counter() - start, "count": len(entries), "cpu": cpu_seconds() - cpu}


def job_convert(corpus: str, listfile: str, db: str, workers: int, backend: str = "lmdb",
                fast_decode: bool = False, encoded: bool = False, dask: str = "") -> dict:
    """Our convert_imageset command line, in this process (encoded: --encoded without resize;
    dask: the scheduler address for --dask_scheduler)."""
    import imagenet_db.pipeline  # noqa: F401  (imported before the clock starts, as the reference's)
    from imagenet_db.cli import convert_imageset_main

    argv = [f"--workers={workers}", f"--backend={backend}", "--noprogress", corpus + "/",
            listfile, db]
    if encoded:
        argv.insert(0, "--encoded")
    else:
        argv[:0] = [f"--resize_height={SIZE}", f"--resize_width={SIZE}"]
    if fast_decode:
        argv.insert(0, "--fast_decode")
    if dask:
        import distributed  # noqa: F401  (imported before the clock starts)
        argv.insert(0, f"--dask_scheduler={dask}")
    cpu, start = cpu_seconds(), time.perf_counter()
    code = convert_imageset_main(argv)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"convert_imageset failed with exit code {code}")
    count = sum(1 for line in open(listfile) if line.strip())
    return {"seconds": seconds, "count": count, "cpu": cpu_seconds() - cpu}


def job_writer(corpus: str, listfile: str, db: str, count: int, sync_commits: bool,
               background: bool = False) -> dict:
    """LmdbWriter alone: ``count`` raw 256x256 datums made beforehand from 32 corpus images.
    The same database is first written once untimed and deleted, so the timed run reuses
    warm heap and page-cache memory as a long build does (the steady-state rate).
    background: commits flushed by ``engine.durable.BackgroundSync`` (else fsync in each
    commit). Also returns the writing thread's own CPU (``thread_cpu``) and, with
    background flushes, the time it waited for them (``sync_wait``) and their total
    (``sync_busy``); with in-commit fsync the wait is the wall time less the thread's CPU."""
    import cv2
    from imagenet_db.outputs.lmdb import LmdbWriter
    from imagenet_db.outputs.wire import raw_datum_buffer

    names = [line.rsplit(" ", 1)[0] for line in open(listfile).read().splitlines()[:32]]
    values = [bytes(raw_datum_buffer(cv2.resize(cv2.imread(os.path.join(corpus, n)), (SIZE, SIZE)),
                                     i)[0]) for i, n in enumerate(names)]
    def write(path):
        writer = LmdbWriter(path, sync_commits=sync_commits, background_sync=background)
        for i in range(count):
            writer.put(b"%08d_%s" % (i, names[i % len(names)].encode()), values[i % len(values)])
        writer.commit()
        return writer

    write(db + ".warmup").close()  # untimed: first touch of the heap and of page-cache memory
    shutil.rmtree(db + ".warmup")
    cpu, thread_cpu, start = cpu_seconds(), time.thread_time(), time.perf_counter()
    writer = write(db)
    writer.commit()
    syncer = writer._syncer
    if syncer is not None:
        syncer.flush()  # the last commit's flush is part of the steady state
    seconds = time.perf_counter() - start
    cpu, thread_cpu = cpu_seconds() - cpu, time.thread_time() - thread_cpu
    wait = writer.sync_wait_seconds if syncer is not None else max(0.0, seconds - thread_cpu)
    busy = syncer.sync_seconds if syncer is not None else wait
    flush_start = time.perf_counter()
    writer.close()  # the final flush to disk (fsync), timed apart: it measures the disk
    return {"seconds": seconds, "count": count, "flush": time.perf_counter() - flush_start,
            "cpu": cpu, "thread_cpu": thread_cpu, "sync_wait": wait, "sync_busy": busy,
            "bytes": count * len(values[0])}


def job_mean(db: str, baseline: bool) -> dict:
    """compute_db_mean (ours) or the per-datum protobuf + numpy baseline, on a warm cache."""
    import numpy as np
    from imagenet_db.observers.mean import compute_db_mean
    from imagenet_db.protos import Datum
    from imagenet_db.readers import iterate_db

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


SHARD_SIZE = 250  # samples per shard in the shard rows: 8 shards of 2,000 images, 4 of 1,000


def job_shards(corpus: str, listfile: str, db: str, workers: int, fmt: str,
               resize: bool = False, dask: str = "") -> dict:
    """create_imagenet --format webdataset/tfrecord's build (``pipeline_shards.convert_shards``)
    of the list's JPEGs, in this process: passed through as they are (the --encoded case), or
    with ``resize`` shorter side 256 (re-encoded at quality 95). SHARD_SIZE samples per shard;
    dask: a scheduler address (workers write the shards)."""
    import contextlib

    from imagenet_db.engine.buildstate import BuildOptions
    from imagenet_db.engine.executor import dask_executor
    from imagenet_db.imaging.transform import TransformOptions
    from imagenet_db.pipeline import Recorded
    from imagenet_db.pipeline_shards import convert_shards
    from imagenet_db.sources.base import FileLoader, Record

    entries = [line.rsplit(" ", 1) for line in open(listfile).read().splitlines()]
    records = [Record(i, rel, int(label), FileLoader(os.path.join(corpus, rel)))
               for i, (rel, label) in enumerate(entries)]
    transform = TransformOptions(encoded=True, encode_type="jpg", **(
        {"resize_mode": "shorter_side", "shorter_side": SIZE} if resize else {}))
    options = {"splits": [("train", len(records))], "synsets": [f"n{i:08d}" for i in range(1000)],
               "shard_size": SHARD_SIZE, "shard_bytes": 10 ** 9, "label_base": 1}
    with (dask_executor(dask) if dask else contextlib.nullcontext()) as executor:
        cpu, start = cpu_seconds(), time.perf_counter()
        convert_shards(records, db, fmt, transform,
                       BuildOptions(workers=workers, progress=False, executor=executor),
                       recorded=Recorded(output_options=options))
        seconds = time.perf_counter() - start
    with open(os.path.join(db, "imagenet_db.json")) as f:  # the shards' SHA-256, in order
        digest = "".join(shard["sha256"] for shard in json.load(f)["shards"])
    return {"seconds": seconds, "count": len(records), "cpu": cpu_seconds() - cpu,
            "shards_sha256": digest}


JOBS = {"limit": job_limit, "reference": job_reference, "convert": job_convert,
        "writer": job_writer, "mean": job_mean, "shards": job_shards}


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


def run_script_job(argv: list, what: str, quiet: bool = False) -> dict:
    """Run ``python3 argv...`` in a fresh interpreter (the repository on PYTHONPATH) after
    sync(2); its last stdout line is a JSON result, to which ``others`` is added (cores' worth
    of CPU used by other processes meanwhile). SystemExit naming ``what`` when it fails."""
    import resource

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    os.sync()  # no job pays for the disk writes left behind by the one before
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, start = busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], stdout=subprocess.PIPE, env=env, text=True,
                          stderr=subprocess.DEVNULL if quiet else None)
    wall, busy = time.perf_counter() - start, busy_cpu_seconds() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    mine = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["others"] = max(0.0, busy - mine) / wall
    return result


def run_job(name: str, **params) -> dict:
    """Run a job in a fresh interpreter; returns its JSON result plus ``rss`` (its peak RSS,
    bytes) and ``others`` (cores' worth of CPU used by other processes meanwhile)."""
    return run_script_job([os.path.abspath(__file__), "--job", name, json.dumps(params)],
                          f"benchmark job {name} {params}")


def db_ratio(db: str) -> tuple:
    """(bytes on disk, payload bytes = sum of key + value lengths) of an LMDB or LevelDB."""
    from imagenet_db.readers import iterate_db

    payload = sum(len(k) + len(v) for k, v in iterate_db(db))
    disk = sum(os.path.getsize(os.path.join(db, f)) for f in os.listdir(db)
               if f not in ("lock.mdb", "LOCK", "LOG", "LOG.old", "imagenet_db.json"))
    return disk, payload


def pixel_difference(db_a: str, db_b: str) -> tuple:
    """(mean |a - b|, max |a - b|) over all pixels of two raw databases with the same keys."""
    import numpy as np
    from imagenet_db.outputs.datum import datum_to_chw
    from imagenet_db.protos import Datum
    from imagenet_db.readers import iterate_db

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


def start_dask_cluster(folder: str):
    """A real Dask cluster from the command line: `dask scheduler` and two `dask worker
    --nworkers 1 --nthreads 1`, on 127.0.0.1 (ports chosen by the OS). Returns (scheduler
    address, [Popen]); stop it with stop_dask_cluster. None when 'distributed' is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return None
    scheduler_file = os.path.join(folder, "dask-scheduler.json")
    if os.path.exists(scheduler_file):
        os.remove(scheduler_file)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    dask = [sys.executable, "-m", "dask"]  # the `dask` command of this interpreter
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=folder)
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--dashboard-address", "127.0.0.1:0",
                                      "--scheduler-file", scheduler_file], **quiet)]
    deadline = time.monotonic() + 60
    while not os.path.exists(scheduler_file) and time.monotonic() < deadline:
        time.sleep(0.2)
    worker = dask + ["worker", "--scheduler-file",
              scheduler_file, "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
              "--no-dashboard"]
    procs += [subprocess.Popen(worker, **quiet) for _ in range(2)]
    address = json.load(open(scheduler_file))["address"]
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=120)
        client.run(lambda: __import__("imagenet_db.pipeline"))  # imports before any timing
    return address, procs


def stop_dask_cluster(procs) -> None:
    """Stop the processes start_dask_cluster started (workers first), by their pids."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
                        help="also print the CPU per image of each stage and the scaling "
                             "projection (8/16/64 cores, SATA vs NVMe) built from it")
    parser.add_argument("--no-dask", dest="dask", action="store_false",
                        help="skip the real Dask cluster rows")
    parser.add_argument("--dask-images", type=int, default=1000,
                        help="images in the Dask cluster vs local threads rows (1000)")
    parser.add_argument("--json", metavar="FILE", help="also write all raw results as JSON")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--targets", action="store_true",
                        help="run issue 23's target rows instead (benchmarks/targets.py: memory "
                             "at 1M/5M records, SIGINT on a 14.2M list, kill + resume, writer "
                             "overlap, --processes, Dask); the arguments after it go to it")
    args, rest = parser.parse_known_args(argv)
    if args.targets:  # its own process (targets.py takes its jobs from this file)
        return subprocess.call([sys.executable, os.path.join(HERE, "targets.py")] + rest)
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
    dask_list = os.path.join(out, "list_dask.txt")
    write_list(dask_list, names[:args.dask_images])
    db = lambda name: os.path.join(out, name)  # noqa: E731
    cluster = start_dask_cluster(out) if args.dask else None
    print(f"load before: {os.getloadavg()[0]:.2f}; {args.images} images, {workers} workers, "
          f"{args.repeats} round(s)", file=sys.stderr)

    rows = {}  # label -> list of results over rounds
    extra = {}

    def record(label, result):
        rows.setdefault(label, []).append(result)

    warmup_list = listfile
    try:
        run_rounds(args, corpus, listfile, large, large_list, dask_list, workers, db, cluster,
                   record, extra)
    finally:
        if cluster:
            stop_dask_cluster(cluster[1])
    if args.scale:
        run_scale(args, corpus, names, workers, out, db, warmup_list, record)
    print_table(args, rows, extra, workers, corpus, names)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "extra": extra}, f, indent=1)
    if not args.out:
        shutil.rmtree(out)
    return 0


def _with_refs(result: dict, ref: dict, limit: dict) -> dict:
    result["round_ref"] = ref["count"] / ref["seconds"]
    result["round_limit"] = limit["count"] / limit["seconds"]
    return result


def run_rounds(args, corpus, listfile, large, large_list, dask_list, workers, db, cluster,
               record, extra) -> None:
    """The --repeats rounds of jobs; results go to ``record(label, result)``."""
    warmup_list = listfile
    for round_no in range(args.repeats):
        print(f"round {round_no + 1}/{args.repeats} ...", file=sys.stderr)
        # untimed: absorbs whatever state the previous round's last jobs left behind
        run_job("convert", corpus=corpus, listfile=warmup_list, db=db("warm"), workers=workers)
        shutil.rmtree(db("warm"))
        limits = {t: run_job("limit", corpus=corpus, listfile=listfile, threads=t)
                  for t in sorted({1, workers})}
        limit = limits[workers]
        ref = run_job("reference", corpus=corpus, listfile=listfile, db=db("ref"))
        _with_refs(ref, ref, limit)
        if round_no == 0:
            extra["ref_db"] = db_ratio(db("ref"))
        shutil.rmtree(db("ref"))
        for t, result in limits.items():
            record(f"limit: decode+resize only, {t} thread{'s' * (t > 1)}, in memory",
                   _with_refs(result, ref, limit))
        record("reference (Caffe-style loop)", ref)
        for w in sorted({1, workers}):
            r = run_job("convert", corpus=corpus, listfile=listfile, db=db("ours"), workers=w)
            _with_refs(r, ref, limit)
            record(f"convert_imageset x{w}", r)
            if round_no == 0 and w == workers:
                extra["ours_db"] = db_ratio(db("ours"))
            shutil.rmtree(db("ours"))
        r = run_job("convert", corpus=corpus, listfile=listfile, db=db("enc"), workers=workers,
                    encoded=True)
        record(f"convert_imageset x{workers} --encoded, no resize (stored as is)",
               _with_refs(r, ref, limit))
        shutil.rmtree(db("enc"))
        if cluster:
            for address in ("", cluster[0]):
                r = run_job("convert", corpus=corpus, listfile=dask_list, db=db("dask"),
                            workers=workers, dask=address)
                label = (f"Dask cluster, 2 workers x 1 thread ({r['count']} images)" if address
                         else f"local threads x{workers} ({r['count']} images)")
                record(label, _with_refs(r, ref, limit))
                shutil.rmtree(db("dask"))
        run_shard_rows(corpus, listfile, dask_list, workers, db, cluster, ref, limit, record)
        r = run_job("convert", corpus=corpus, listfile=listfile, db=db("fast"), workers=workers,
                    fast_decode=True)
        _with_refs(r, ref, limit)
        record(f"convert_imageset x{workers} --fast_decode", r)
        shutil.rmtree(db("fast"))
        r = run_job("convert", corpus=corpus, listfile=listfile, db=db("ldb"), workers=workers,
                    backend="leveldb")
        _with_refs(r, ref, limit)
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
                _with_refs(r, ref, limit)
                record("writer alone (LmdbWriter" + (")" if sync else ", sync_commits=False)"), r)
                shutil.rmtree(db("w"))
        ours = db("ours")  # made again, untimed, for the mean jobs
        run_job("convert", corpus=corpus, listfile=listfile, db=ours, workers=workers)
        for baseline in (True, False):
            m = run_job("mean", db=ours, baseline=baseline)
            record("mean: protobuf + numpy baseline" if baseline else "compute_image_mean (ours)", m)
        shutil.rmtree(ours)


def run_shard_rows(corpus, listfile, dask_list, workers, db, cluster, ref, limit,
                   record) -> None:
    """The sharded formats (issue 22): WebDataset and TFRecord with the JPEGs passed through,
    WebDataset resized to shorter side 256, and WebDataset on the Dask cluster against local
    threads (workers write their own shards)."""
    for fmt in ("webdataset", "tfrecord"):
        r = run_job("shards", corpus=corpus, listfile=listfile, db=db("shards"),
                    workers=workers, fmt=fmt)
        record(f"{fmt} x{workers} --encoded pass-through (workers write shards)",
               _with_refs(r, ref, limit))
        shutil.rmtree(db("shards"))
    r = run_job("shards", corpus=corpus, listfile=listfile, db=db("shards"), workers=workers,
                fmt="webdataset", resize=True)
    record(f"webdataset x{workers} shorter side 256 (re-encoded)", _with_refs(r, ref, limit))
    shutil.rmtree(db("shards"))
    for address in ("", cluster[0]) if cluster else ():
        r = run_job("shards", corpus=corpus, listfile=dask_list, db=db("shards"),
                    workers=workers, fmt="webdataset", resize=True, dask=address)
        label = (f"shards: Dask cluster, 2 workers x 1 thread ({r['count']} images)" if address
                 else f"shards: local threads x{workers} ({r['count']} images)")
        record(label, _with_refs(r, ref, limit))
        shutil.rmtree(db("shards"))


def run_scale(args, corpus, names, workers, out, db, warmup_list, record) -> None:
    """The reference and convert xN on 10x the images (symlinks): peak RSS must stay flat."""
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



def print_table(args, rows, extra, workers, corpus, names) -> None:
    """Print the table of medians (and, with --profile, the stage CPU and the projection)."""
    def fmt_ratio(disk_payload):
        return f"{disk_payload[0] / disk_payload[1]:.3f}" if disk_payload else ""

    def median_range(values):
        values = sorted(values)
        return statistics.median(values), values[0], values[-1]

    db_col = {"reference (Caffe-style loop)": extra.get("ref_db"),
              f"convert_imageset x{workers}": extra.get("ours_db"),
              f"convert_imageset x{workers} --backend=leveldb": extra.get("leveldb_db")}
    lines = ["| run | images/s | ratio to reference | ratio to limit | CPU ms/image "
             "| peak RSS (MiB) | DB bytes / payload | other processes (cores) | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, results in rows.items():
        rate = statistics.median(r["count"] / r["seconds"] for r in results)
        rss = max(r["rss"] for r in results) / (1 << 20)
        notes = to_ref = to_limit = cpu = ""
        if "cpu" in results[0]:
            cpu = f"{statistics.median(1e3 * r['cpu'] / r['count'] for r in results):.2f}"
        if "payload" in results[0]:
            gbs = statistics.median(r["payload"] / r["seconds"] for r in results) / 1e9
            notes = f"{gbs:.2f} GB/s of datum payload"
        else:
            to_ref = f"{statistics.median(r['count'] / r['seconds'] / r['round_ref'] for r in results):.2f}x"
        if "round_limit" in results[0] and not label.startswith(("large", "writer", "10x")) \
                and "--encoded" not in label:
            mid, low, high = median_range(r["count"] / r["seconds"] / r["round_limit"]
                                          for r in results)
            to_limit = f"{mid:.2f}x"
            if len(results) > 1:
                notes = f"ratio to limit {low:.2f}-{high:.2f} over {len(results)} rounds"
        if label.startswith("large: ") and label.endswith("--fast_decode"):
            exact = rows[label.replace(" --fast_decode", "")]
            speedup = statistics.median(e["seconds"] / f["seconds"] for e, f in zip(exact, results))
            mean_diff, max_diff = extra["fast_diff"]
            notes = (f"{speedup:.2f}x the exact path; pixels differ by {mean_diff:.2f} on average "
                     f"(max {max_diff}) of 255")
        if label == f"convert_imageset x{workers}" and workers > 1 and "convert_imageset x1" in rows:
            scaling = statistics.median(o["seconds"] / r["seconds"] * r["count"] / o["count"]
                                        for o, r in zip(rows["convert_imageset x1"], results))
            notes += f"; {scaling:.2f}x the x1 rate ({workers} workers)"
        if label.startswith(("Dask cluster", "shards: Dask cluster")):
            local_label = "shards: local threads" if label.startswith("shards") else \
                "local threads"
            local = next((v for k, v in rows.items() if k.startswith(local_label)), None)
            if local:
                mid, low, high = median_range(d["seconds"] / t["seconds"]
                                              for d, t in zip(results, local))
                same = all(d.get("shards_sha256") == t.get("shards_sha256")
                           for d, t in zip(results, local))
                what = "shards" if label.startswith("shards") else "database"
                notes = (f"{mid:.2f}x the local-threads time ({low:.2f}-{high:.2f}), "
                         f"{'same' if same else 'DIFFERENT'} {what}")
        if "--encoded" in label:
            _, low, high = median_range(r["count"] / r["seconds"] for r in results)
            notes = f"{low:,.0f}-{high:,.0f} images/s over {len(results)} rounds; no decode"
        if label.startswith("writer"):
            flush = statistics.median(r["flush"] for r in results)
            rates = sorted(r["count"] / r["seconds"] for r in results)
            cpu_rate = statistics.median(r["count"] / r["cpu"] for r in results)
            notes = (f"raw 256x256 datums/s; {len(rates)} runs from {rates[0]:,.0f} to "
                     f"{rates[-1]:,.0f}; CPU alone would allow {cpu_rate:,.0f}/s; final flush "
                     f"{flush:.2f} s")
            if label == "writer alone (LmdbWriter)":
                waits = [(r["seconds"] - r["cpu"]) for r in results]
                extra["vm_disk_rate"] = statistics.median(
                    r["bytes"] / w for r, w in zip(results, waits) if w > 0) if any(
                    w > 0 for w in waits) else 0.0
                notes += f"; disk took ~{extra['vm_disk_rate'] / 1e9:.1f} GB/s while synced"
        others = statistics.median(r["others"] for r in results)
        lines.append(f"| {label} | {rate:,.0f} | {to_ref} | {to_limit} | {cpu} | {rss:,.0f} "
                     f"| {fmt_ratio(db_col.get(label))} | {others:.2f} | {notes.lstrip('; ')} |")
    print(f"\n{args.images} ImageNet-like JPEGs (~500x375) -> {SIZE}x{SIZE} raw datums; "
          f"{workers} workers; median of {args.repeats} round(s); load average now "
          f"{os.getloadavg()[0]:.2f}\n")
    print("\n".join(lines))
    if args.profile:
        import scaling

        print("\nCPU per image of each stage (one thread, time.thread_time; the writer's "
              "stages run on its own thread):\n")
        measured = {int(k.rsplit("x", 1)[1]): statistics.median(r["count"] / r["seconds"]
                                                                for r in v)
                    for k, v in rows.items() if k.startswith("convert_imageset x")
                    and k.rsplit("x", 1)[1].isdigit()}
        print(scaling.format_tables(scaling.stage_cpu(corpus, names),
                                    extra.get("vm_disk_rate", 0.0), measured))

if __name__ == "__main__":
    sys.exit(main())
