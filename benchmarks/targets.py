#!/usr/bin/env python
"""Issue 23's targets, measured side by side in one run and printed as one table
(``python benchmarks/benchmark.py --targets``, or this file directly).

Rows (each: the figure, its baseline or limit, the ratio, the target, holds or not):

  memory N          convert_imageset on an N-line list (--shuffle, 16x16 output): symlinks to 8
                    small real JPEGs; the build process's peak RSS (wait4's ru_maxrss) and
                    (peak - peak of a 1,000-line build) / N bytes per record; images/s.
                    Targets: < 1 GiB at 5,000,000, <= 150 B/record at 1M and 5M.
  SIGINT 14.2M      a 14,200,000-line list, SIGINT once 10,000 datums are committed: peak RSS
                    (< 2 GiB) and the exit status (130).
  kill + resume     the first memory row's list killed (SIGKILL) at about half its datums,
                    then --resume: same keys and values as the uninterrupted build (SHA-256).
  writer alone      raw 256x256 datums -> LmdbWriter, fsync in each commit (baseline) and
                    flushed in the background: per datum the writing thread's CPU, the fsync
                    wait, the flushes' own time and the wall; wall / max(CPU, flush) <= 1.15.
  dd                the disk's own rate: dd bs=1M count=256 conv=fdatasync.
  processes         --processes against threads (--workers 2) on tiny images (32x24 -> 16x16)
                    and on --encoded pass-through: >= 1.6x.
  Dask              a real `dask scheduler` + 2 `dask worker --nthreads 1` against local threads
                    on the same 1,000 photos: <= 1.15x the local time, identical database.

Each build runs in its own process; rows repeat ``--repeats`` times where cheap (writer,
processes, Dask) and show the median and the run-to-run range. The machine is shared: the
load (other processes' cores) is printed with the table.
"""
import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

GIB = 1 << 30
CLI = [sys.executable, "-m", "imagenet_db.cli", "convert"]
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def tiny_tree(folder: str, count: int, size=(32, 24)) -> str:
    """``folder`` with 8 small real JPEGs and ``count`` symlinks to them; returns the list."""
    import numpy as np
    from imagenet_db.testing.photos import small_jpeg
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(8):
        with open(os.path.join(folder, f"src{k}.jpg"), "wb") as f:
            f.write(small_jpeg(rng, size))
    listfile = folder + f".{count}.txt"
    with open(listfile, "w") as f:
        for i in range(count):
            name = f"{i // 10000:04d}/{i}.jpg"
            f.write(f"{name} {i % 1000}\n")
    for d in range((count + 9999) // 10000):
        sub = os.path.join(folder, f"{d:04d}")
        os.makedirs(sub, exist_ok=True)
        last = min(count, (d + 1) * 10000) - 1
        if os.path.lexists(os.path.join(sub, f"{last}.jpg")):
            continue  # made by an earlier call (links are made in order)
        for i in range(d * 10000, last + 1):
            try:
                os.symlink(f"../src{i % 8}.jpg", os.path.join(sub, f"{i}.jpg"))
            except FileExistsError:
                pass
    return listfile


def run_build(args: list, stop_at: int = 0, sig=signal.SIGINT, db: str = "") -> dict:
    """Run convert_imageset ``args`` in a child; with ``stop_at``, send ``sig`` once the LMDB
    being built (``db``.partial) has that many entries. Returns seconds, rss (peak, bytes,
    from wait4), status, samples [(seconds, RSS bytes)] taken every second."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(CLI + args, env=ENV, stdout=subprocess.DEVNULL, stderr=err,
                                text=True)
        samples, sent = [], False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.5)
            samples.append((time.perf_counter() - start, _rss(proc.pid)))
            if stop_at and not sent and _entries(db + ".partial") >= stop_at:
                proc.send_signal(sig)
                sent = True
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-400:]
    return {"seconds": time.perf_counter() - start, "rss": usage.ru_maxrss * 1024,
            "status": proc.returncode, "samples": samples, "stderr": tail}


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _entries(path: str) -> int:
    import lmdb
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return 0
    try:
        env = lmdb.open(path, readonly=True, lock=False)
    except lmdb.Error:
        return 0
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def db_digest(path: str) -> str:
    """SHA-256 over every (key, value) of an LMDB, in key order."""
    import lmdb
    digest = hashlib.sha256()
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        for key, value in txn.cursor():
            digest.update(key)
            digest.update(value)
    env.close()
    return digest.hexdigest()


def memory_rows(out: str, counts: list, rows: list) -> None:
    """The memory rows: a whole build per count."""
    base_list = tiny_tree(os.path.join(out, "tiny"), 1000)
    flags = ["--shuffle", "--resize_height=4", "--resize_width=4", "--workers=2"]
    base = run_build(flags + [os.path.join(out, "tiny") + "/", base_list,
                              os.path.join(out, "base")])
    shutil.rmtree(os.path.join(out, "base"))
    for n in counts:
        listfile = tiny_tree(os.path.join(out, "tiny"), n)
        db = os.path.join(out, f"m{n}")
        r = run_build(flags + [os.path.join(out, "tiny") + "/", listfile, db])
        per = (r["rss"] - base["rss"]) / n
        rss = [s[1] for s in r["samples"] if s[1]]
        flat = (f"RSS {min(rss[len(rss) // 4:]) / 2**20:.0f}-{max(rss[len(rss) // 4:]) / 2**20:.0f}"
                f" MiB after the first quarter") if rss else ""
        rows.append((f"memory: convert_imageset, {n:,} records", f"{r['rss'] / 2**20:.0f} MiB peak",
                     f"{per:.0f} B/record over a 1,000-line build; {n / r['seconds']:.0f} "
                     f"images/s; {flat}", "< 1 GiB (5M), <= 150 B/record",
                     per <= 150 and (n < 5_000_000 or r["rss"] < GIB)))
        shutil.rmtree(db)


def kill_resume_row(out: str, n: int, rows: list) -> None:
    """An ``n``-line build uninterrupted, and again SIGKILLed at about half then --resume'd:
    the two databases' digests must match."""
    listfile = tiny_tree(os.path.join(out, "tiny"), n)
    flags = ["--shuffle", "--resize_height=4", "--resize_width=4", "--workers=2"]
    root = os.path.join(out, "tiny") + "/"
    whole, again = os.path.join(out, f"k{n}"), os.path.join(out, f"k{n}r")
    run_build(flags + [root, listfile, whole])
    want = db_digest(whole)
    killed = run_build(flags + [root, listfile, again], stop_at=n // 2, sig=signal.SIGKILL,
                       db=again)
    resumed = run_build(flags + ["--resume", root, listfile, again])
    same = resumed["status"] == 0 and db_digest(again) == want
    rows.append((f"kill + resume: SIGKILL at {n // 2:,} of {n:,}, then --resume",
                 f"status {killed['status']}, then {resumed['status']}",
                 f"resume {resumed['seconds']:.0f} s; identical: {same}",
                 "identical to the uninterrupted build", same))
    shutil.rmtree(again)
    shutil.rmtree(whole)


def sigint_row(out: str, count: int, rows: list, stop_at: int = 10_000) -> None:
    """A ``count``-line list (ImageNet-21k-like paths; the first 20,000 exist), SIGINT once
    ``stop_at`` datums are committed: peak RSS (< 2 GiB at 14.2M), bytes per record over a
    1,000-line build, exit status 130."""
    folder = os.path.join(out, "tiny")
    root, flags = folder + "/", ["--resize_height=4", "--resize_width=4", "--workers=2"]
    base = run_build(flags + [root, tiny_tree(folder, 1000), os.path.join(out, "base")])
    shutil.rmtree(os.path.join(out, "base"), ignore_errors=True)
    tiny_tree(folder, 20_000)
    listfile = os.path.join(out, f"big{count}.txt")
    with open(listfile, "w") as f:
        for i in range(count):
            wnid = f"n{i % 21841:08d}"
            f.write(f"{wnid}/{wnid}_{i}.JPEG {i % 21841}\n" if i >= 20000 else
                    f"{i // 10000:04d}/{i}.jpg {i % 1000}\n")
    db = os.path.join(out, "big")
    r = run_build(flags + [root, listfile, db], stop_at=stop_at, db=db)
    per = (r["rss"] - base["rss"]) / count
    limit = 2 * GIB if count > 5_000_000 else GIB
    rows.append((f"SIGINT: {count:,}-line list, stopped after {stop_at:,} datums",
                 f"{r['rss'] / 2**20:.0f} MiB peak", f"{per:.0f} B/record over a 1,000-line "
                 f"build; exit status {r['status']}, {r['seconds']:.0f} s",
                 f"< {limit // GIB} GiB, <= 150 B/record, exit 130",
                 r["rss"] < limit and per <= 150 and r["status"] == 130))
    shutil.rmtree(db + ".partial", ignore_errors=True)
    os.remove(listfile)


def _span(values, fmt="{:.2f}") -> str:
    """median (min-max) of ``values``."""
    return (fmt.format(statistics.median(values)) + " (" + fmt.format(min(values)) + "-" +
            fmt.format(max(values)) + ")")


def writer_rows(out: str, corpus: str, corpus_list: str, repeats: int, rows: list) -> None:
    """Writer alone, fsync in the commit vs background flushes; and dd's rate."""
    from benchmark import job_writer
    per = {False: [], True: []}
    for _ in range(repeats):
        for background in (False, True):
            db = os.path.join(out, "w")
            r = job_writer(corpus, corpus_list, db, 3000, True, background)
            shutil.rmtree(db)
            n = r["count"]
            per[background].append({k: r[k] / n * 1e3 for k in
                                    ("seconds", "thread_cpu", "sync_wait", "sync_busy")})
    for background in (False, True):
        runs = per[background]
        ratio = [r["seconds"] / max(r["thread_cpu"], r["sync_busy"]) for r in runs]
        rate = [1e3 / r["seconds"] for r in runs]
        name = "background flush" if background else "fsync in each commit (baseline)"
        rows.append((f"writer alone, raw 256x256 datums: {name}",
                     _span(rate, "{:.0f}") + " datums/s",
                     "ms/datum: wall " + _span([r["seconds"] for r in runs], "{:.3f}") +
                     ", thread CPU " + _span([r["thread_cpu"] for r in runs], "{:.3f}") +
                     ", fsync wait " + _span([r["sync_wait"] for r in runs], "{:.3f}") +
                     ", flushing " + _span([r["sync_busy"] for r in runs], "{:.3f}") +
                     "; wall / max(CPU, flush) " + _span(ratio),
                     "wall <= 1.15 x max(CPU, fsync)" if background else "baseline",
                     statistics.median(ratio) <= 1.15 if background else None))
    target = os.path.join(out, "dd.bin")
    done = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=256",
                           "conv=fdatasync"], capture_output=True, text=True)
    os.remove(target)
    rows.append(("dd bs=1M count=256 conv=fdatasync (the disk)",
                 done.stderr.strip().splitlines()[-1].split(", ")[-1], "", "", None))


def convert_time(args: list) -> float:
    r = run_build(args)
    if r["status"] != 0:
        raise SystemExit(f"convert failed: {r['stderr']}")
    return r["seconds"]


def processes_rows(out: str, corpus: str, corpus_list: str, repeats: int, rows: list) -> None:
    """--processes against threads, tiny images and --encoded pass-through (same databases)."""
    tiny = tiny_tree(os.path.join(out, "tiny"), 20_000)
    cases = (("tiny images 32x24 -> 16x16, 20,000", ["--resize_height=16", "--resize_width=16",
                                                    os.path.join(out, "tiny") + "/", tiny]),
             ("--encoded pass-through, corpus JPEGs", ["--encoded", corpus + "/", corpus_list]))
    for label, args in cases:
        ratios, dbs = [], {}
        for _ in range(repeats):
            times = {}
            for mode in ("threads", "processes"):
                db = os.path.join(out, f"p{mode}")
                shutil.rmtree(db, ignore_errors=True)
                extra = ["--processes"] if mode == "processes" else []
                times[mode] = convert_time(["--workers=2"] + extra + args + [db])
                dbs[mode] = db_digest(db)
            ratios.append(times["threads"] / times["processes"])
        same = dbs["threads"] == dbs["processes"]
        rows.append((f"--processes vs threads (2 workers): {label}", _span(ratios) + "x",
                     f"identical database: {same}", ">= 1.6x",
                     statistics.median(ratios) >= 1.6 and same))


def dask_row(out: str, corpus: str, corpus_list: str, repeats: int, rows: list) -> None:
    """A real Dask cluster (scheduler + 2 single-thread workers) against local threads."""
    from benchmark import start_dask_cluster, stop_dask_cluster
    cluster = start_dask_cluster(out)
    if cluster is None:
        rows.append(("Dask", "not installed", "", "<= 1.15x", None))
        return
    address, procs = cluster
    try:
        ratios, digests = [], set()
        for _ in range(repeats):
            times = {}
            for where in ("local", address):
                db = os.path.join(out, "dask")
                shutil.rmtree(db, ignore_errors=True)
                extra = [f"--dask_scheduler={address}"] if where == address else ["--workers=2"]
                times[where] = convert_time(extra + ["--resize_height=256", "--resize_width=256",
                                                     corpus + "/", corpus_list, db])
                digests.add(db_digest(db))
            ratios.append(times[address] / times["local"])
    finally:
        stop_dask_cluster(procs)
    rows.append(("Dask: scheduler + 2 workers x 1 thread vs local threads, LMDB",
                 _span(ratios) + "x the local time", f"identical database: {len(digests) == 1}",
                 "<= 1.15x", statistics.median(ratios) <= 1.15 and len(digests) == 1))


def busy_cores() -> float:
    """Cores busy with anything over the last 5 s (load average, 1 minute)."""
    return os.getloadavg()[0]


def print_table(rows: list, load: list) -> None:
    print(f"\nIssue 23 targets (one run; load average {min(load):.1f}-{max(load):.1f} on "
          f"{os.cpu_count()} cores)\n")
    print("| row | figure | detail | target | holds |")
    print("| --- | --- | --- | --- | --- |")
    for name, figure, detail, target, holds in rows:
        verdict = "-" if holds is None else ("yes" if holds else "NO")
        print(f"| {name} | {figure} | {detail} | {target} | {verdict} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="scratch folder (default: a new temp folder, removed)")
    parser.add_argument("--counts", default="1000000,5000000",
                        help="list lengths of the memory rows (the first is killed + resumed)")
    parser.add_argument("--sigint-counts", default="14200000",
                        help="list lengths stopped by SIGINT after 10,000 datums")
    parser.add_argument("--kill-count", type=int, default=1_000_000,
                        help="records of the SIGKILL + --resume row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000, help="photos for Dask/--encoded")
    parser.add_argument("--rows", default="memory,kill,sigint,writer,processes,dask")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="imagenet-db-targets-")
    os.makedirs(out, exist_ok=True)
    from benchmark import make_corpus, write_list
    corpus = os.path.join(out, "corpus")
    if not os.path.isdir(corpus):
        make_corpus(corpus, args.images)
    corpus_list = os.path.join(out, "corpus.txt")
    write_list(corpus_list, sorted(os.listdir(corpus))[:args.images])
    wanted, rows, load = args.rows.split(","), [], [busy_cores()]
    try:
        if "memory" in wanted:
            memory_rows(out, [int(c) for c in args.counts.split(",")], rows)
        if "kill" in wanted:
            kill_resume_row(out, args.kill_count, rows)
        load.append(busy_cores())
        if "sigint" in wanted:
            for count in args.sigint_counts.split(","):
                sigint_row(out, int(count), rows)
        for name, row in (("writer", writer_rows), ("processes", processes_rows),
                          ("dask", dask_row)):
            if name in wanted:
                row(out, corpus, corpus_list, args.repeats, rows)
                load.append(busy_cores())
    finally:
        print_table(rows, load)
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
