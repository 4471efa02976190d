"""Scale (issue 23): records as compact columns, the skips as columns, memory flat in the list's
length, the same order, keys, errors and databases as the per-record objects they replace."""
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import read_lmdb
from imagenet_db.cli import convert_imageset_main
from imagenet_db.engine.skips import SkipList
from imagenet_db.errors import ListFileError
from imagenet_db.sources.base import Record, Split, shuffle_order
from imagenet_db.sources.listfile import list_records, read_list, read_list_columns
from imagenet_db.sources.boxes import ImageBoxes, SplitBoxes
from imagenet_db.sources.records import (ChainedRecords, FileLoader, FolderLoader, ListColumns,
                                         RecordColumns, shuffle_permutation)
from imagenet_db.testing.photos import small_jpeg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_order(n, seed):
    """The --shuffle order as first written (issue 8): sorted by each position's digest."""
    seed_bytes = int(seed).to_bytes(8, "little", signed=True)
    return sorted(range(n), key=lambda i: hashlib.blake2b(
        seed_bytes + i.to_bytes(8, "little"), digest_size=8).digest())


@pytest.mark.parametrize("n,seed", [(0, 0), (1, 5), (70_000, 3), (2_000, -1), (999, 2**63 - 1)])
def test_shuffle_permutation_is_the_digest_order(n, seed):
    assert shuffle_permutation(n, seed).tolist() == reference_order(n, seed)
    assert shuffle_order(n, seed) == reference_order(n, seed)


def test_record_columns_read_like_a_list_of_records(tmp_path):
    (tmp_path / "a b").mkdir()
    names = [f"a b/{i}.jpg" for i in range(100)] + ["é/ü.JPEG"]
    entries = [(name, i * 7) for i, name in enumerate(names)]
    order = shuffle_permutation(len(entries), 4)
    records = RecordColumns(ListColumns.from_entries(entries), FolderLoader(str(tmp_path)),
                            order)
    expected = [Record(i, entries[j][0], entries[j][1], None) for i, j in enumerate(order)]
    got = list(records)
    assert [(r.index, r.relpath, r.label) for r in got] == \
        [(r.index, r.relpath, r.label) for r in expected]
    assert len(records) == 101 and records[-1].relpath == expected[-1].relpath
    tail = records[60:]
    assert len(tail) == 41 and tail[0].index == 60 and tail[0].relpath == expected[60].relpath
    assert [e[0] for e in tail.entries()] == list(range(60, 101))
    assert records[60:60].entries is not None and len(records[60:60]) == 0
    loaded = pickle.loads(pickle.dumps(records[3]))  # what a Dask worker gets
    assert loaded.load.path == os.path.join(str(tmp_path), expected[3].relpath)
    with pytest.raises(IndexError):
        records[101]


def test_split_records_are_columns_in_the_shuffled_order():
    entries = [(f"n0/{i}.JPEG", i % 3) for i in range(50)]
    split = Split("train", entries, lambda relpath: FileLoader("/x/" + relpath))
    records = split.records(True, 9)
    assert [r.relpath for r in records] == [entries[i][0] for i in reference_order(50, 9)]
    assert records[0].load.path == "/x/" + records[0].relpath


def write_text(path, text):
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_list_columns_keep_the_list_checks_and_their_order(tmp_path):
    good = write_text(tmp_path / "l.txt", "\ufeffa.jpg 1\r\n\nb c.jpg 2\nd.jpg 0\n")
    assert read_list(good) == [("a.jpg", 1), ("b c.jpg", 2), ("d.jpg", 0)]
    assert len(read_list_columns(good)) == 3
    dup = write_text(tmp_path / "d.txt", "x 1\na 1\n\nb 2\na 3\nb 4\n")
    with pytest.raises(ListFileError, match=r"d.txt:5: 'a' is listed again \(first at line 2\)"):
        read_list_columns(dup)
    # a repeat before a malformed line is reported first, as a line-by-line reader would
    both = write_text(tmp_path / "b.txt", "a 1\nc 2\na 3\nno_label\n")
    with pytest.raises(ListFileError, match=r"b.txt:3: 'a' is listed again"):
        read_list_columns(both)
    bad_first = write_text(tmp_path / "f.txt", "a 1\nno_label\na 3\n")
    with pytest.raises(ListFileError, match=r"f.txt:2: expected 'relpath label'"):
        read_list_columns(bad_first)
    many = [f"n{i % 97}/{i}.JPEG {i % 97}" for i in range(30_000)]
    many.append(many[12_345].rsplit(" ", 1)[0] + " 0")
    path = write_text(tmp_path / "m.txt", "\n".join(many) + "\n")
    with pytest.raises(ListFileError, match=r"m.txt:30001: 'n26/12345.JPEG' is listed again "
                                            r"\(first at line 12346\)"):
        read_list_columns(path)


def test_skip_list_reads_like_a_list_of_tuples():
    skips = SkipList([(2, "a.jpg", "cannot read file"), (5, "b.jpg", "too large")])
    skips.add(9, "c.jpg", "cannot read file")
    assert skips == [("a.jpg", "cannot read file"), ("b.jpg", "too large"),
                     ("c.jpg", "cannot read file")]
    assert skips[-1] == ("c.jpg", "cannot read file") and skips[1:] == list(skips)[1:]
    assert list(skips.indices()) == [2, 5, 9]
    skips.keep_upto(5)
    assert list(skips) == [("a.jpg", "cannot read file"), ("b.jpg", "too large")]
    skips.keep_upto(-1)
    assert not skips and skips == []


def test_missing_files_are_skipped_and_listed_from_the_columns(tmp_path):
    """A list whose files are mostly missing: each skip counted, logged and reported, the
    stored keys those of the files present, in order."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "real.jpg").write_bytes(small_jpeg(np.random.default_rng(0), (16, 12)))
    lines = [f"gone/{i}.jpg {i % 5}" for i in range(3000)]
    lines[1500] = "real.jpg 4"
    listfile = write_text(tmp_path / "list.txt", "\n".join(lines) + "\n")
    db = tmp_path / "db"
    assert convert_imageset_main([f"{images}/", listfile, str(db)]) == 0
    assert [k for k, _ in read_lmdb(db)] == [b"00001500_real.jpg"]
    report = (tmp_path / "db.skipped.tsv").read_text().splitlines()
    assert len(report) == 2999 and report[0] == "gone/0.jpg\tcannot read file: No such file " \
                                                 "or directory"
    assert report[1500] == "gone/1501.jpg\tcannot read file: No such file or directory"


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    from imagenet_db.engine.buildstate import list_fingerprint
    from imagenet_db.sources.listfile import read_list_columns
    from imagenet_db.sources.records import FolderLoader, RecordColumns, shuffle_permutation
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    columns = read_list_columns(sys.argv[1])
    records = RecordColumns(columns, FolderLoader("/nowhere"), shuffle_permutation(len(columns), 0))
    list_fingerprint(records)
    for record in records[len(records) // 2:]:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print((peak - before) / len(columns))
""")


def test_a_long_list_costs_under_150_bytes_a_record(tmp_path):
    """Read, shuffle, fingerprint and walk 600,000 records (ILSVRC-like paths) in a fresh
    interpreter: its peak RSS grows by less than 150 bytes per record (the target of issue 23;
    per-record Python objects cost ~600)."""
    listfile = tmp_path / "train.txt"
    with open(listfile, "w") as f:
        for i in range(600_000):
            f.write(f"n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG {i % 1000}\n")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(listfile)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert float(out.stdout) < 150, out.stdout


def test_list_records_takes_pairs_or_columns(tmp_path):
    pairs = [("a.jpg", 1), ("b.jpg", 2)]
    by_pairs = list_records(str(tmp_path), pairs)
    by_columns = list_records(str(tmp_path), ListColumns.from_entries(pairs))
    assert [(r.index, r.relpath, r.label) for r in by_pairs] == \
        [(r.index, r.relpath, r.label) for r in by_columns] == [(0, "a.jpg", 1), (1, "b.jpg", 2)]
    assert by_pairs[1].load.path == os.path.join(str(tmp_path), "b.jpg")


def open_fifo_writer(path, proc, deadline_seconds=120):
    """Open the FIFO at ``path`` for writing once a reader holds it open (ENXIO before: no
    reader yet); the build ``proc`` is then held inside a background flush."""
    import errno
    import time
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline or \
                    proc.poll() is not None:
                raise
            time.sleep(0.01)  # polls for the reader; the build cannot pass the held flush


def committed_entries(path):
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def test_kill_during_a_background_flush_then_resume_is_identical(sample_copy, tmp_path):
    """SIGKILL the build while its first commit's flush is held (a FIFO the flush reads
    first, IMAGENET_DB_TEST_HOLD_SYNC): the committed datums are there although never synced
    by the build, --resume continues after them and the database equals an uninterrupted
    build; a marker of another boot (a power loss) makes --resume refuse instead."""
    import shutil
    import signal
    from conftest import train_list
    from imagenet_db.engine.durable import MARKER_NAME
    from imagenet_db.sources.listfile import write_list
    root = sample_copy / "train"
    listfile = tmp_path / "train.txt"
    write_list(str(listfile), train_list(root))
    args = ["--resize_height=32", "--resize_width=32", "--txn_size=4", "--shuffle",
            f"{root}/", str(listfile)]
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": ROOT, "IMAGENET_DB_TEST_HOLD_SYNC": str(fifo)}
    cmd = [sys.executable, "-m", "imagenet_db.cli", "convert"]
    held = subprocess.Popen(cmd + args + [str(tmp_path / "db")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fd = open_fifo_writer(str(fifo), held)
        held.send_signal(signal.SIGKILL)
        held.wait(60)
        os.close(fd)
    finally:
        if held.poll() is None:
            held.kill()
    partial = tmp_path / "db.partial"
    assert (partial / MARKER_NAME).exists()
    assert 4 <= committed_entries(partial) <= 8  # one flush held: at most two commits made
    shutil.copytree(partial, tmp_path / "other.partial")
    (tmp_path / "other.partial" / MARKER_NAME).write_text("another-boot\n")
    clean = {**os.environ, "PYTHONPATH": ROOT}
    refused = subprocess.run(cmd + ["--resume"] + args + [str(tmp_path / "other")], env=clean,
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1
    assert "the machine restarted (power loss or OS crash)" in refused.stderr
    assert "Traceback" not in refused.stderr
    for name in ("db", "whole"):
        extra = ["--resume"] if name == "db" else []
        done = subprocess.run(cmd + extra + args + [str(tmp_path / name)], env=clean, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert ("resumed after" in done.stderr) is (name == "db"), done.stderr
    assert read_lmdb(tmp_path / "db") == read_lmdb(tmp_path / "whole")
    assert not (tmp_path / "db" / MARKER_NAME).exists()


def packed_jobs(tmp_path, want_pixels, **transform):
    """RecordJob results for real JPEGs (two good, one missing, one not an image)."""
    from imagenet_db.imaging.transform import TransformOptions
    from imagenet_db.outputs.lmdb import LmdbWriter
    from imagenet_db.pipeline import RecordJob
    rng = np.random.default_rng(3)
    (tmp_path / "a.jpg").write_bytes(small_jpeg(rng, (40, 30)))
    (tmp_path / "b.jpg").write_bytes(small_jpeg(rng, (20, 50)))
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    records = list_records(str(tmp_path), [("a.jpg", 1), ("gone.jpg", 2), ("b.jpg", 3),
                                           ("c.jpg", 4)])
    job = RecordJob(TransformOptions(**transform), 0, LmdbWriter, want_pixels)
    return [job(record) for record in records]


@pytest.mark.parametrize("transform,want_pixels,apart", [
    ({"resize_height": 8, "resize_width": 6}, True, 2),  # raw: pixels a view into the value
    ({"encoded": True}, False, 2),
    ({"encoded": True}, True, 4)])  # decoded pixels beside the file: sent as they are
def test_packed_results_cross_a_process_boundary_unchanged(tmp_path, transform, want_pixels,
                                                           apart):
    from imagenet_db.outputs.base import Encoded
    from imagenet_db.outputs.packed import PackedResults
    results = packed_jobs(tmp_path, want_pixels, **transform)
    assert [type(r) for r in results] == [Encoded, str, Encoded, str]
    packed = pickle.loads(pickle.dumps(PackedResults.of(results)))
    assert len(packed.others) == apart and len(packed) == 4
    for got, want in zip(packed.unpack(), results):
        if isinstance(want, str):
            assert got == want
            continue
        assert bytes(got.value) == bytes(want.value)
        assert (got.shape, got.name, got.checksum) == (tuple(want.shape), want.name,
                                                      want.checksum)
        assert (got.pixels is None and want.pixels is None) or \
            np.array_equal(got.pixels, want.pixels)


def test_processes_give_the_threaded_database(sample_copy, tmp_path):
    """--processes (worker processes from a fork server) and threads: the same LMDB, raw and
    --encoded, with a missing file skipped in both."""
    from conftest import train_list
    from imagenet_db.sources.listfile import write_list
    root = sample_copy / "train"
    entries = train_list(root)
    entries.insert(5, ("missing.jpg", 0))
    listfile = tmp_path / "train.txt"
    write_list(str(listfile), entries)
    for extra in (["--resize_height=24", "--resize_width=20", "--shuffle"], ["--encoded"]):
        dbs = []
        for mode in ([], ["--processes"]):
            db = tmp_path / f"db{len(dbs)}{len(extra)}"
            assert convert_imageset_main(extra + mode + ["--workers=2", f"{root}/",
                                                         str(listfile), str(db)]) == 0
            dbs.append(db)
            assert (tmp_path / f"{db.name}.skipped.tsv").read_text().startswith("missing.jpg\t")
        assert read_lmdb(dbs[0]) == read_lmdb(dbs[1])
        assert len(read_lmdb(dbs[0])) == len(entries) - 1


def test_processes_and_a_cluster_are_refused_together(tmp_path, capsys):
    (tmp_path / "l.txt").write_text("a.jpg 0\n")
    assert convert_imageset_main(["--processes", "--dask_scheduler=tcp://127.0.0.1:1",
                                  f"{tmp_path}/", str(tmp_path / "l.txt"),
                                  str(tmp_path / "db")]) == 1
    assert "give one of them" in capsys.readouterr().err


def test_a_command_line_cluster_in_its_own_folders_builds_the_local_database(sample_copy,
                                                                               tmp_path):
    """`dask scheduler` and two `dask worker --nthreads 1`, each a separate process started
    in a folder of its own (cwd and --local-directory), the client building from a SOURCE
    path they all see: the same LMDB as local threads and as --processes (the results
    travel packed, outputs.packed)."""
    import json
    import time
    pytest.importorskip("distributed")
    from conftest import train_list
    from imagenet_db.sources.listfile import write_list
    root = sample_copy / "train"
    listfile = tmp_path / "train.txt"
    write_list(str(listfile), train_list(root))
    env = {**os.environ, "PYTHONPATH": ROOT}
    dask = [sys.executable, "-m", "dask"]
    folders = [tmp_path / name for name in ("scheduler", "worker1", "worker2")]
    for folder in folders:
        folder.mkdir()
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--dashboard-address", "127.0.0.1:0",
                                      "--scheduler-file", str(info)],
                              cwd=folders[0], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 120
        while not info.exists() and time.monotonic() < deadline:  # waits for the scheduler
            time.sleep(0.1)
        procs += [subprocess.Popen(dask + ["worker", "--scheduler-file", str(info),
                                           "--nthreads", "1", "--host", "127.0.0.1",
                                           "--no-dashboard", "--local-directory", str(folder)],
                                   cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for folder in folders[1:]]
        address = json.loads(info.read_text())["address"]
        from distributed import Client
        with Client(address, timeout="120s") as client:
            client.wait_for_workers(2, timeout=120)
        args = ["--resize_height=20", "--resize_width=18", "--shuffle", f"{root}/",
                str(listfile)]
        assert convert_imageset_main([f"--dask_scheduler={address}"] + args +
                                     [str(tmp_path / "cluster")]) == 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            proc.wait(30)
    assert convert_imageset_main(args + [str(tmp_path / "local")]) == 0
    assert convert_imageset_main(["--processes", "--workers=2"] + args +
                                 [str(tmp_path / "processes")]) == 0
    local = read_lmdb(tmp_path / "local")
    assert len(local) == len(train_list(root))
    assert read_lmdb(tmp_path / "cluster") == local == read_lmdb(tmp_path / "processes")


def test_a_killed_worker_process_ends_the_build_cleanly_and_resume_finishes_it(sample_copy,
                                                                               tmp_path):
    """--processes: SIGKILL the worker processes while one is held reading a FIFO image
    (testing.hold.HeldImage): the build commits what came before, says so in one line
    (exit 1, no traceback), and --resume gives the uninterrupted database."""
    import signal
    from conftest import train_list
    from imagenet_db.sources.listfile import write_list
    from imagenet_db.testing.hold import HeldImage, hardlinked_copy
    root = hardlinked_copy(sample_copy / "train", tmp_path / "train")
    entries = train_list(root)
    listfile = tmp_path / "train.txt"
    write_list(str(listfile), entries)
    args = ["--resize_height=16", "--resize_width=16", "--workers=2", f"{root}/", str(listfile)]
    assert convert_imageset_main(args + [str(tmp_path / "whole")]) == 0
    held = HeldImage(root / entries[len(entries) // 2][0])
    cmd = [sys.executable, "-m", "imagenet_db.cli", "convert", "--processes", "--txn_size=2"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    build = subprocess.Popen(cmd + args + [str(tmp_path / "db")], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        fd = open_fifo_writer(str(held.path), build)  # a worker is blocked on the image
        with open(f"/proc/{build.pid}/task/{build.pid}/children") as f:
            workers = [int(pid) for pid in f.read().split()]
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
        _, err = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 1, err
    assert "a worker process of --processes died" in err and "Traceback" not in err
    assert "--resume" in err
    held.restore()
    assert convert_imageset_main(["--resume"] + args + [str(tmp_path / "db")]) == 0
    assert read_lmdb(tmp_path / "db") == read_lmdb(tmp_path / "whole")


def test_list_lines_end_at_newline_only(tmp_path):
    """Columns read a list as issue 24 specifies: split on '\\n' only; a lone '\\r' or another
    line-breaking character inside a path is refused on its own line, not taken as a line end."""
    for name, text, expected in [
            ("cr.txt", b"ok.jpg 0\na\rb.jpg 1\n", r"cr.txt:2: the path 'a\\rb.jpg' holds a "
                                                  r"line break"),
            ("nel.txt", "ok.jpg 0\nx.jpg 1\nc\x85d.jpg 2\n".encode(),
             r"nel.txt:3: .* holds a control character \(U\+0085\)"),
            ("ls.txt", "e\u2028f.jpg 3\n".encode(), r"ls.txt:1: .* holds a control character")]:
        (tmp_path / name).write_bytes(text)
        with pytest.raises(ListFileError, match=expected):
            read_list_columns(str(tmp_path / name))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfa.jpg 1\r\n\r\nb c.jpg 2\r\r\nd.jpg 3")
    assert read_list(str(tmp_path / "bom.txt")) == [("a.jpg", 1), ("b c.jpg", 2), ("d.jpg", 3)]


def _boxes_split(names):
    """A split whose boxes are read from a table (counting the reads)."""
    table = {"n1/a.jpg": ImageBoxes(((1.0, 2.0, 3.0, 4.0, "n1", False),), (10, 20), "a.xml"),
             "n2/c.jpg": ImageBoxes(((5.0, 6.0, 7.0, 8.0, "n2", True),
                                     (0.0, 0.0, 1.0, 1.0, "n9", False)), None, "c.xml")}
    reads = []
    boxes = SplitBoxes(lambda counts: reads.append(1) or table, "test boxes")
    entries = [(name, i % 2) for i, name in enumerate(names)]
    return Split("train", entries, FolderLoader("/x"), boxes), reads


def test_record_columns_carry_boxes_only_when_asked():
    names = ["n1/a.jpg", "n1/b.jpg", "n2/c.jpg", "n2/d.jpg"]
    split, reads = _boxes_split(names)
    plain = split.records(True, 7)
    assert plain.boxes is None and all(record.boxes is None for record in plain)
    assert reads == []  # a format without boxes does not read them
    labels = {"n1": 1, "n2": 2}
    records = split.records(True, 7, labels)
    assert [r.relpath for r in records] == [names[i] for i in shuffle_order(4, 7)]
    for record in list(records) + [records[i] for i in range(4)] + list(records[1:3]):
        if record.relpath == "n1/a.jpg":
            assert record.boxes.pixels.tolist() == [[1, 2, 3, 4, 1, 0]]
            assert record.boxes.size == (10, 20)
        elif record.relpath == "n2/c.jpg":  # a wnid outside the labels is left out
            assert record.boxes.pixels.tolist() == [[5, 6, 7, 8, 2, 1]]
            assert record.boxes.size is None
        else:
            assert record.boxes is None
    assert reads == [1]
    annotated = [r.relpath for r in records].index("n1/a.jpg")
    again = pickle.loads(pickle.dumps(records[annotated]))  # as it travels to a worker
    assert again.boxes.pixels.tolist() == [[1, 2, 3, 4, 1, 0]]


def test_chained_records_number_the_parts_one_after_the_other(tmp_path):
    train = RecordColumns(ListColumns.from_entries([("t0", 0), ("t1", 1), ("t2", 2)]),
                          FolderLoader(str(tmp_path / "train")), shuffle_permutation(3, 1))
    val = RecordColumns(ListColumns.from_entries([("v0", 5), ("v1", 6)]),
                        FolderLoader(str(tmp_path / "val")))
    empty = RecordColumns(ListColumns.from_entries([]), FolderLoader("/"))
    chained = ChainedRecords.of([train, empty, val])
    order = ["t%d" % i for i in shuffle_order(3, 1)]
    expected = [(i, name, int(name[1]) + (5 if name[0] == "v" else 0))
                for i, name in enumerate(order + ["v0", "v1"])]
    assert len(chained) == 5
    assert [(r.index, r.relpath, r.label) for r in chained] == expected
    assert list(chained.entries()) == expected
    assert [(chained[i].index, chained[i].relpath) for i in range(-5, 5)] == \
        [(i % 5, expected[i % 5][1]) for i in range(-5, 5)]
    assert chained[4].load.path == str(tmp_path / "val" / "v1")
    assert chained[0].load.path.startswith(str(tmp_path / "train"))
    for start in range(6):
        for stop in range(start, 6):
            part = chained[start:stop]
            assert [(r.index, r.relpath, r.label) for r in part] == expected[start:stop]
            assert list(part.entries()) == expected[start:stop] and len(part) == stop - start
    with pytest.raises(IndexError):
        chained[5]


class _CountedPack:
    """A task's results as one object (counts the tasks packed)."""
    made = []

    def __init__(self, results):
        self.results = list(results)
        _CountedPack.made.append(len(self.results))

    def unpack(self):
        return iter(self.results)


class _SquareJob:
    pack = _CountedPack

    def __call__(self, item):
        if item == 13:
            raise ValueError("thirteen")
        return item * item


def test_an_executor_ships_a_task_s_results_as_the_job_packs_them():
    """ordered_map packs each task's results by the job's ``pack`` (RecordJob's:
    PackedResults.of) on an executor, not on its own threads; order and errors unchanged."""
    from concurrent.futures import ThreadPoolExecutor
    from imagenet_db.engine.executor import ordered_map
    from imagenet_db.outputs.packed import PackedResults
    from imagenet_db.pipeline import RecordJob
    assert RecordJob.pack == PackedResults.of
    with ThreadPoolExecutor(2) as pool:
        _CountedPack.made.clear()
        assert list(ordered_map(_SquareJob(), range(13), executor=pool, chunk=5)) == \
            [i * i for i in range(13)]
        assert _CountedPack.made == [5, 5, 3]
        _CountedPack.made.clear()
        with pytest.raises(ValueError, match="thirteen"):
            list(ordered_map(_SquareJob(), range(20), executor=pool, chunk=4))
    _CountedPack.made.clear()
    assert list(ordered_map(_SquareJob(), range(10), workers=2, chunk=5)) == \
        [i * i for i in range(10)]
    assert _CountedPack.made == []  # local threads hand results over as they are
