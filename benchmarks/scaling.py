"""Per-stage CPU per image and the scaling projection built from it (benchmark.py --profile).

``stage_cpu`` runs the pipeline's per-image steps one by one in one thread on the corpus and
times each with ``time.thread_time`` (CPU of this thread only: other processes' load does not
count, though it still slows caches), the LMDB commit also in wall time, and the garbage
collector through ``gc.callbacks``. ``projection`` turns that into expected images/s on more
cores and other disks, naming the first bottleneck:

* workers: cores x 1000 / (worker CPU + writer CPU per image): every stage runs on some core;
* the writer: one thread (puts + commits, in list order): 1000 / writer CPU ms per image;
* the disk: sustained write bandwidth / bytes per stored image (durable: every byte is synced);
* reading a .tar.gz: one gzip stream decompresses on one core (zlib) -> MB/s / JPEG size.
The disk figures are assumptions (stated in the table): a SATA SSD ~0.5 GB/s, an NVMe SSD
~2.5 GB/s of sustained writes; "this VM" is the durable rate the writer-alone job measured.
"""
import gc
import os
import shutil
import tempfile
import time
import zlib

SIZE = 256
STAGES = ("read file", "header check", "decode", "resize", "Datum serialize", "hand-off",
          "LMDB put", "LMDB commit (writev + fsync)")
WORKER_STAGES = STAGES[:6]   # on the worker threads
WRITER_STAGES = STAGES[6:]   # on the writing thread
DISKS = (("SATA SSD (~0.5 GB/s, assumed)", 0.5e9), ("NVMe SSD (~2.5 GB/s, assumed)", 2.5e9))


def stage_cpu(corpus: str, names: list, count: int = 500) -> dict:
    """{'cpu': {stage: ms/image}, 'commit_wall': ms/image, 'gc': (collections, ms/image),
    'bytes': mean stored value size, 'jpeg': mean file size, 'gzip_mb_s': zlib MB/s}."""
    import cv2
    import numpy as np

    from imagenet_db.engine.executor import ordered_map
    from imagenet_db.imaging.headers import check_image_bytes
    from imagenet_db.outputs.lmdb import LmdbWriter
    from imagenet_db.outputs.wire import raw_datum_buffer
    from imagenet_db.sources.base import FileLoader

    names = names[:count]
    cpu = dict.fromkeys(STAGES, 0.0)
    gc_seen = [0, 0.0]

    def on_gc(phase, info):
        if phase == "start":
            on_gc.started = time.thread_time()
        else:
            gc_seen[0] += 1
            gc_seen[1] += time.thread_time() - on_gc.started

    tmp = tempfile.mkdtemp(prefix="imagenet-db-stages-")
    writer = LmdbWriter(os.path.join(tmp, "db"))
    commit, commit_wall = writer.commit, [0.0]

    def timed_commit():
        c, w = time.thread_time(), time.perf_counter()
        commit()
        cpu["LMDB commit (writev + fsync)"] += time.thread_time() - c
        commit_wall[0] += time.perf_counter() - w

    writer.commit = timed_commit
    loaders = [FileLoader(os.path.join(corpus, n)) for n in names]
    for load in loaders[:50]:  # warm: page cache, heap
        cv2.resize(cv2.imdecode(np.frombuffer(load(), np.uint8), cv2.IMREAD_COLOR), (SIZE, SIZE))
    clock = time.thread_time
    stored = jpeg = 0
    gc.callbacks.append(on_gc)
    try:
        for i, (name, load) in enumerate(zip(names, loaders)):
            t0 = clock()
            data = load()
            t1 = clock()
            check_image_bytes(data)
            t2 = clock()
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            t3 = clock()
            image = cv2.resize(image, (SIZE, SIZE))
            t4 = clock()
            value, _ = raw_datum_buffer(image, i % 1000)
            t5 = clock()
            before = cpu["LMDB commit (writev + fsync)"]
            writer.put(b"%08d_%s" % (i, name.encode()), value)
            t6 = clock()
            for stage, (a, b) in zip(STAGES[:5], ((t0, t1), (t1, t2), (t2, t3), (t3, t4),
                                                  (t4, t5))):
                cpu[stage] += b - a
            cpu["LMDB put"] += (t6 - t5) - (cpu["LMDB commit (writev + fsync)"] - before)
            stored += len(value)
            jpeg += len(data)
        writer.commit()  # the last transaction, timed like the others
        writer.close()
    finally:
        gc.callbacks.remove(on_gc)
        shutil.rmtree(tmp)
    # hand-off: ordered_map (chunks of 8 on 2 threads) over a function that does nothing;
    # process CPU (all threads) per item
    items = 20000
    c0 = time.process_time()
    for _ in ordered_map(abs, range(items), 2):
        pass
    cpu["hand-off"] = (time.process_time() - c0) / items * len(names)
    # one gzip stream: what reading a .tar.gz costs per MB on one core
    blob = b"".join(load() for load in loaders[:200])
    packed = zlib.compress(blob, 6)
    c0 = time.process_time()
    for _ in range(3):
        zlib.decompress(packed)
    gzip_rate = 3 * len(blob) / max(time.process_time() - c0, 1e-9) / 1e6
    n = len(names)
    return {"cpu": {s: 1e3 * v / n for s, v in cpu.items()}, "commit_wall": 1e3 * commit_wall[0] / n,
            "gc": (gc_seen[0], 1e3 * gc_seen[1] / n), "bytes": stored / n, "jpeg": jpeg / n,
            "gzip_mb_s": gzip_rate}


def projection(stages: dict, vm_disk_rate: float = 0.0) -> list:
    """Rows (cores, disk, expected images/s, first bottleneck, the caps) from ``stage_cpu``.
    vm_disk_rate: bytes/s this VM's disk took durably (from the writer-alone job; 0 = skip)."""
    worker = sum(stages["cpu"][s] for s in WORKER_STAGES)
    writer = sum(stages["cpu"][s] for s in WRITER_STAGES)
    on_disk = stages["bytes"] * 1.021  # LMDB file / payload, measured (benchmark table)
    gzip_cap = stages["gzip_mb_s"] * 1e6 / stages["jpeg"]
    disks = list(DISKS)
    if vm_disk_rate:
        disks.insert(0, (f"this VM (~{vm_disk_rate / 1e9:.1f} GB/s durable, measured)", vm_disk_rate))
    rows = []
    for cores in (2, 8, 16, 64):
        for disk, bandwidth in (disks if cores > 2 else disks[:1]):
            disk_ms = 1e3 * on_disk / bandwidth
            caps = {"decode (all cores)": cores * 1000 / (worker + writer),
                    "writer (CPU + fsync)": 1000 / (writer + disk_ms)}
            rate = min(caps.values())
            first = min(caps, key=caps.get)
            if first.startswith("writer"):
                first = ("writer: disk bandwidth" if disk_ms > writer else "writer: CPU") + \
                    f" ({writer:.2f} ms CPU + {disk_ms:.2f} ms disk per image)"
            rows.append((cores, disk, rate, first, caps, gzip_cap))
    return rows


def projected_rate(stages: dict, workers: int, cores: int = 2) -> float:
    """Images/s the stage CPU predicts for ``workers`` decode threads on ``cores`` cores
    (the writer thread shares them), ignoring the disk."""
    worker = sum(stages["cpu"][s] for s in WORKER_STAGES)
    writer = sum(stages["cpu"][s] for s in WRITER_STAGES)
    return min(workers * 1000 / worker, cores * 1000 / (worker + writer), 1000 / writer)


def format_tables(stages: dict, vm_disk_rate: float, measured: dict) -> str:
    """Markdown: the per-stage CPU table, the projection, and the 1 vs 2 worker check.
    measured: {workers: images/s} from the benchmark table (this run)."""
    cpu = stages["cpu"]
    lines = ["| stage | CPU ms/image | where |", "|---|---:|---|"]
    for stage in STAGES:
        where = "worker threads" if stage in WORKER_STAGES else "writing thread"
        lines.append(f"| {stage} | {cpu[stage]:.3f} | {where} |")
    worker = sum(cpu[s] for s in WORKER_STAGES)
    writer = sum(cpu[s] for s in WRITER_STAGES)
    decode = cpu["decode"] + cpu["resize"]
    lines.append(f"| **total** | **{worker + writer:.3f}** | decode+resize {decode:.3f}, "
                 f"everything else {worker + writer - decode:.3f} |")
    collections, gc_ms = stages["gc"]
    lines.append(f"\nLMDB commit wall time {stages['commit_wall']:.3f} ms/image (fsync waits on "
                 f"the disk, off the workers' path); garbage collector: {collections} collections, "
                 f"{gc_ms:.3f} ms/image; stored {stages['bytes'] / 1e3:.0f} KB/image from "
                 f"{stages['jpeg'] / 1e3:.0f} KB JPEGs; one gzip stream: "
                 f"{stages['gzip_mb_s']:.0f} MB/s of JPEG bytes per core.\n")
    lines += ["| cores | disk | expected images/s | first bottleneck | decode cap | writer cap "
              "| .tar.gz read cap (one gzip stream) |", "|---:|---|---:|---|---:|---:|---:|"]
    for cores, disk, rate, first, caps, gzip_cap in projection(stages, vm_disk_rate):
        note = first if rate < gzip_cap else first + "; from a .tar.gz: gzip first"
        lines.append(f"| {cores} | {disk} | {rate:,.0f} | {note} | "
                     f"{caps['decode (all cores)']:,.0f} | {caps['writer (CPU + fsync)']:,.0f} | "
                     f"{gzip_cap:,.0f} |")
    if measured:
        lines.append("\nMeasured here against the projection (2 cores, disk ignored):\n")
        lines += ["| workers | projected images/s | measured images/s | measured / projected |",
                  "|---:|---:|---:|---:|"]
        for workers, rate in sorted(measured.items()):
            expect = projected_rate(stages, workers)
            lines.append(f"| {workers} | {expect:,.0f} | {rate:,.0f} | {rate / expect:.2f} |")
        if 1 in measured and len(measured) > 1:
            top = max(measured)
            lines.append(f"\nx{top} / x1: projected {projected_rate(stages, top) / projected_rate(stages, 1):.2f}, "
                         f"measured {measured[top] / measured[1]:.2f}.")
    return "\n".join(lines)
