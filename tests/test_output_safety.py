"""Outputs and tools fail safely (issue 24): each attack on them reproduced
on real builds (real photos, real LMDB, real batch files), through the command line, then
checked to fail safely.

Commands run in this process (``call``) or, where a process matters (code that a crafted file
would run, peak memory, signals), as child processes (``run``/``start``), both from
tests/conftest.py.
"""
import os
import pickle
import shutil
from pathlib import Path

import pytest

from test_kill_and_resume_formats import batches_in_place, digests, kill_midway, source  # noqa: F401
from conftest import CHILD, call, child_env, one_line_error
from conftest import run as run_child

import subprocess
import sys

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--progress=false", "--workers=2", "--seed", "3"]
BUILDS = {  # format: (extra flags, what it writes into OUTDIR)
    "caffe": ([], "ilsvrc12_train_lmdb"),
    "cuda-convnet2": (["--batch_images", "12"], "ilsvrc12_cuda_convnet2"),
    "theano-alexnet": (["--batch_images", "4"], "ilsvrc12_theano_alexnet"),
    "folder": ([], "train"),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The bundled sample ImageNet tree (5 classes, real photos), copied."""
    root = tmp_path_factory.mktemp("round3")
    shutil.copytree(REPO / "examples" / "sample_imagenet", root / "imagenet")
    return root / "imagenet"


@pytest.fixture(scope="module")
def built(sample, tmp_path_factory):
    """{format: OUTDIR} of one clean build of each format from the sample (never changed)."""
    root = tmp_path_factory.mktemp("round3_builds")
    out = {}
    for fmt, (flags, _) in BUILDS.items():
        outdir = root / fmt
        code, err = call("create", sample, outdir, "--format", fmt, *flags, *ARGS,
                         "--no-report")
        assert code == 0, err
        out[fmt] = outdir
    return out


def run(*args, timeout=120):
    """``imagenet-db ARGS`` in a child process; (exit code, its stderr + stdout)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], env=child_env(),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout.replace("READY\n", "", 1)


def copy_of(built, fmt, tmp_path):
    """A private copy of the format's OUTDIR."""
    outdir = tmp_path / fmt
    shutil.copytree(built[fmt], outdir)
    return outdir


def create(sample, outdir, fmt, *extra):
    return call("create", sample, outdir, "--format", fmt, *BUILDS[fmt][0], *ARGS,
                "--no-report", *extra)


# ================================================================ 8. no code from a file is run
class _RunsCode:
    """Pickles as a call of os.system (what a crafted batch file holds)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("target", ["data_batch_0/data_batch_0.0", "batches.meta"])
def test_verify_never_runs_a_pickle_from_a_cuda_convnet2_batch(built, tmp_path, target):
    out = copy_of(built, "cuda-convnet2", tmp_path) / BUILDS["cuda-convnet2"][1]
    marker = tmp_path / "code_was_run"
    crafted = out / target
    crafted.write_bytes(pickle.dumps({"data": [_RunsCode(marker)], "labels": [[0]],
                                      "x": _RunsCode(marker)}, protocol=2))
    assert not marker.exists()
    code, err = run("verify", out, "--no-progress")
    assert not marker.exists(), "the crafted pickle's code was run"
    assert code == 1 and "Traceback" not in err, err
    problem = [line for line in err.splitlines() if str(crafted) in line]
    assert problem and "refused to load posix.system" in problem[0], err


def test_verify_never_runs_a_pickled_payload_in_a_theano_hkl(built, tmp_path):
    import hickle

    out = copy_of(built, "theano-alexnet", tmp_path) / BUILDS["theano-alexnet"][1]
    marker = tmp_path / "code_was_run"
    crafted = out / "train_hkl_b4_b_4" / "0000.hkl"
    crafted.unlink()
    hickle.dump(_RunsCode(marker), str(crafted), mode="w")  # hickle pickles what it can't map
    code, err = run("verify", out, "--no-progress")
    assert not marker.exists(), "the crafted hickle payload was run"
    assert code == 1 and "Traceback" not in err, err
    problem = [line for line in err.splitlines() if str(crafted) in line]
    assert len(problem) == 1 and "expected uint8 (3, H, W, 4)" in problem[0], err


# ================================================================ 7. --overwrite deletes only ours
FOREIGN = {  # format: the files a user adds to the finished output (relative to OUTDIR)
    "folder": ["train/NOTES.txt", "train/n01440764/my_photo.JPEG"],
    "cuda-convnet2": ["ilsvrc12_cuda_convnet2/NOTES.txt",
                      "ilsvrc12_cuda_convnet2/data_batch_0/my_photo.JPEG"],
    "theano-alexnet": ["ilsvrc12_theano_alexnet/misc/NOTES.txt",
                       "ilsvrc12_theano_alexnet/train_hkl_b4_b_4/9999.hkl"],
}


@pytest.mark.parametrize("fmt", sorted(FOREIGN))
def test_overwrite_refuses_to_delete_files_the_build_did_not_write(sample, built, tmp_path,
                                                                     fmt):
    outdir = copy_of(built, fmt, tmp_path)
    for relpath in FOREIGN[fmt]:
        (outdir / relpath).write_bytes(b"the user's own file")
    code, err = create(sample, outdir, fmt, "--overwrite")
    error = one_line_error(err)
    assert code == 1
    first = FOREIGN[fmt][0]  # the walk is sorted: a folder's files, then its folders
    assert f"holds {outdir / first}, which is not part of" in error and "move it away" in error
    for relpath in FOREIGN[fmt]:
        assert (outdir / relpath).read_bytes() == b"the user's own file"
    for relpath in FOREIGN[fmt]:
        (outdir / relpath).unlink()
    code, err = create(sample, outdir, fmt, "--overwrite")  # only its own files: replaced
    assert code == 0, err


def test_a_folder_output_without_its_log_is_judged_by_its_list(sample, built, tmp_path):
    """A folder output of an earlier version (no imagenet_db.files.log): its list file, as
    long as it matches the completion record, says which files it holds."""
    outdir = copy_of(built, "folder", tmp_path)
    (outdir / "train" / "imagenet_db.files.log").unlink()
    (outdir / "train" / "n01440764" / "my_photo.JPEG").write_bytes(b"mine")
    code, err = create(sample, outdir, "folder", "--overwrite")
    assert code == 1 and f"holds {outdir / 'train' / 'n01440764' / 'my_photo.JPEG'}," in \
        one_line_error(err)
    (outdir / "train.txt").write_text("n01440764/my_photo.JPEG 0\n")  # a list that lies
    code, err = create(sample, outdir, "folder", "--overwrite")
    assert code == 1 and "says which files the build wrote" in one_line_error(err)
    assert (outdir / "train" / "n01440764" / "my_photo.JPEG").exists()
    (outdir / "train" / "n01440764" / "my_photo.JPEG").unlink()
    shutil.copy(built["folder"] / "train.txt", outdir / "train.txt")
    code, err = create(sample, outdir, "folder", "--overwrite")
    assert code == 0, err


def test_extract_overwrite_keeps_what_the_user_added(sample, tmp_path):
    dest = tmp_path / "dest"
    code, err = call("extract", sample, dest, "--progress=false", "--workers=2")
    assert code == 0, err
    (dest / "train" / "NOTES.txt").write_text("notes")
    (dest / "train" / "n01440764" / "my_photo.JPEG").write_bytes(b"mine")
    code, err = call("extract", sample, dest, "--overwrite", "--progress=false")
    assert code == 1 and f"holds {dest / 'train' / 'NOTES.txt'}," in one_line_error(err)
    (dest / "train" / "NOTES.txt").unlink()
    code, err = call("extract", sample, dest, "--overwrite", "--progress=false")
    assert code == 1 and str(dest / "train" / "n01440764" / "my_photo.JPEG") in err
    assert (dest / "train" / "n01440764" / "my_photo.JPEG").read_bytes() == b"mine"


# ================================================================ 6. resume checks what is committed
def test_resume_of_a_folder_build_rewrites_a_committed_file_emptied_since(source, tmp_path):
    from conftest import start

    args = ["--format", "folder", "--txn_size", "4", "--workers", "1", "--progress=false"]
    code, err = call("create", source, tmp_path / "clean", *args)
    assert code == 0, err
    out = tmp_path / "killed"
    kill_midway(start("create", source, out, *args), out, lambda d: batches_in_place(d) > 4)
    (partial,) = out.glob("*.partial")  # train's (val's when train was done first)
    log = (partial / "imagenet_db.files.log").read_text().splitlines()
    victim = partial / log[2].split("\t")[2]
    victim.write_bytes(b"")  # a committed file emptied after the kill
    code, err = call("create", source, out, *args, "--resume")
    assert code == 0, err
    assert f"note: {victim} is empty: the build continues from it" in err
    assert digests(out) == digests(tmp_path / "clean")  # nothing damaged was published


# ================================================================ 12. flags that did nothing
@pytest.mark.parametrize("mode", ["crop", "fill", "half_crop", "convnet2"])
def test_a_resize_mode_without_sizes_is_the_error_of_one_size(sample, tmp_path, mode):
    lists = tmp_path / "list.txt"
    lists.write_text("train/n01440764/" + sorted(os.listdir(sample / "train" / "n01440764"))[0]
                     + " 0\n")
    one = call("convert", sample, lists, tmp_path / "one", f"--resize_mode={mode}",
               "--resize_width=32")
    none = call("convert", sample, lists, tmp_path / "none", f"--resize_mode={mode}")
    assert one[0] == none[0] == 1
    if mode != "convnet2":  # (one size of convnet2's is first refused as not square)
        assert one_line_error(none[1]) == one_line_error(one[1])
    assert f"--resize_mode={mode} needs both --resize_width and --resize_height" in none[1]
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.partial").exists()
    code, err = call("extract", sample, tmp_path / "x", f"--resize_mode={mode}")
    assert code == 1 and "needs both" in one_line_error(err)


@pytest.mark.parametrize("flag", ["--txn_size=0", "--txn_size=-3", "--workers=0",
                                  "--workers=-1"])
def test_zero_or_negative_txn_size_and_workers_are_usage_errors(sample, tmp_path, flag):
    lists = tmp_path / "list.txt"
    lists.write_text("val.txt 0\n")
    commands = [["convert", sample, lists, tmp_path / "db"],
                ["create", sample, tmp_path / "out"]]
    if flag.startswith("--workers"):
        commands += [["extract", sample, tmp_path / "x"], ["verify", tmp_path]]
    for command in commands:
        code, err = call(*command, flag)
        assert code == 2 and "must be in 1.." in err, (command, err)
    assert sorted(os.listdir(tmp_path)) == ["list.txt"]  # nothing was started


def test_work_in_flight_is_capped_by_memory_not_by_workers():
    """1000 workers and 1 MiB results: the work computed ahead of the consumer stays under
    IN_FLIGHT_BYTES (each record counted WORKING_FACTOR x its result; real threads), and no
    more threads are started than tasks in flight."""
    import threading

    from imagenet_db.engine import executor as E

    lock, counts = threading.Lock(), {"started": 0, "most": 0}
    workers = set()  # the threads that ran work (other tests' threads may still be alive)
    consumed = 0

    def work(item):
        with lock:
            counts["started"] += 1
            counts["most"] = max(counts["most"], counts["started"] - consumed)
            workers.add(threading.get_ident())
        return bytes(1 << 20)

    chunks = max(2 * E.default_workers(),  # the cap: by memory, at least two chunks a core
                 E.IN_FLIGHT_BYTES // ((1 << 20) * E.THREAD_CHUNK * E.WORKING_FACTOR))
    assert chunks * E.THREAD_CHUNK < 300  # (a test that can fail: 600 items, 1000 workers)
    for result in E.ordered_map(work, range(600), workers=1000, size=len):
        consumed += 1
    assert consumed == 600
    assert counts["most"] <= (chunks + 1) * E.THREAD_CHUNK, counts
    assert len(workers) <= chunks + 4, (counts, len(workers))


# ================================================================ 10. huge encoded datums
@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """An encoded LMDB of two 6000x4000 JPEGs (24 M pixels each, a few hundred KB on disk:
    smooth colours), built with --max_pixels 0."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("huge")
    (root / "images").mkdir()
    rng = np.random.default_rng(24)
    for n in range(2):
        small = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        image = cv2.resize(small, (6000, 4000), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(root / "images" / f"big_{n}.jpg"), image)
    (root / "list.txt").write_text("big_0.jpg 0\nbig_1.jpg 1\n")
    code, err = call("convert", root / "images", root / "list.txt", root / "db", "--encoded",
                     "--max_pixels=0")
    assert code == 0, err
    return root


def test_mean_and_report_check_the_header_size_before_decoding(huge, tmp_path):
    db = huge / "db"
    code, err = call("mean", db, tmp_path / "mean.npy", "--max_pixels=1000000")
    error = one_line_error(err)
    assert code == 1 and str(db) in error and "'00000000_big_0.jpg'" in error
    assert "6000x4000 = 24000000 pixels, above the cap of 1000000" in error
    assert not (tmp_path / "mean.npy").exists()
    code, err = call("report", db, "--out", tmp_path / "r.html", "--max_pixels=1000000")
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "Mean image</h3><p>not computed:" in page.replace("\n", "") and "above the cap" in page
    code, err = call("show", db, "--out", tmp_path / "s.png")  # under the default cap
    assert code == 0, err


def test_show_decodes_a_huge_jpeg_reduced_to_its_tile(huge, built, tmp_path):
    """Peak memory of show on two 6000x4000 JPEGs (72 MB each decoded) stays within 40 MB of
    show on the sample's 256x256 database: libjpeg's 1/8 decode, never the full image."""
    from imagenet_db.pictures.sheet import thumbnail
    from imagenet_db.reader import DatumDB

    with DatumDB(str(huge / "db")) as db:
        image, label, shape = thumbnail(db, 1, 128)
    assert image.shape == (500, 750, 3) and label == 1 and shape == (3, 4000, 6000)
    peaks = {}
    for name, path in (("huge", huge / "db"), ("small", built["caffe"] / BUILDS["caffe"][1])):
        code, err = run_child("show", path, "--out", tmp_path / f"{name}.png",
                              REPORT_MAXRSS=1)
        assert code == 0, err
        peaks[name] = int(err.split("MAXRSS ")[1].split()[0])
    assert peaks["huge"] - peaks["small"] < 40_000, peaks  # KiB


# ================================================================ 11. tracebacks
@pytest.mark.parametrize("flags", [["--tile", "30000"], ["--tile", "-5"], ["--columns", "0"],
                                   ["--columns", "-2"]])
def test_show_refuses_tile_and_column_values_that_cannot_work(built, tmp_path, flags):
    db = built["caffe"] / "ilsvrc12_train_lmdb"
    code, err = run_child("show", db, "--out", tmp_path / "s.png", *flags,
                          preexec_fn=address_space_cap)  # a 30000-pixel tile would take ~170 GB
    assert code == 2 and "must be in" in err and "Traceback" not in err, err
    assert not (tmp_path / "s.png").exists()


def address_space_cap():
    """In a child: at most 4 GiB of address space (a runaway allocation fails, not the box)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_sheet_too_big_to_draw_is_refused_not_allocated(built):
    from imagenet_db.pictures.sheet import MAX_TILE, contact_sheet
    from imagenet_db.errors import ImagenetDbError
    from imagenet_db.reader import DatumDB

    with DatumDB(str(built["caffe"] / "ilsvrc12_train_lmdb")) as db:
        with pytest.raises(ImagenetDbError, match="the sheet would be"):
            contact_sheet(db, range(40), tile=MAX_TILE)


def _damage_lmdb_pages(path):
    """Zero the page-type flags of every branch and leaf page of an LMDB (a damaged page
    header: MDB_CORRUPTED where a reader lands on it)."""
    from test_verify_corruption import LMDB_PAGE, lmdb_tree_pages

    data = bytearray((path / "data.mdb").read_bytes())
    for page in lmdb_tree_pages(bytes(data)):
        data[page * LMDB_PAGE + 10:page * LMDB_PAGE + 12] = b"\0\0"
    (path / "data.mdb").write_bytes(bytes(data))


def test_damaged_lmdb_page_headers_are_one_line_errors_from_the_reader(built, tmp_path):
    from imagenet_db.errors import DamagedDatabaseError
    from imagenet_db.reader import DatumDB

    db = tmp_path / "db"
    shutil.copytree(built["caffe"] / "ilsvrc12_train_lmdb", db)
    _damage_lmdb_pages(db)
    for use in (len, lambda d: d[0], list, lambda d: d.labels(), lambda d: list(d.items())):
        with DatumDB(str(db)) as reader:
            with pytest.raises(DamagedDatabaseError, match=f"^{db}: damaged LMDB: "):
                use(reader)
    for command in (["show", db, "--out", tmp_path / "s.png"],
                    ["report", db, "--out", tmp_path / "r.html"], ["mean", db]):
        code, err = call(*command)
        assert code == 1 and f"{db}: damaged LMDB" in one_line_error(err), (command, err)


# ================================================================ 14. a split too small, said
def test_a_theano_val_split_smaller_than_one_batch_is_said(sample, tmp_path):
    out = tmp_path / "out"
    code, err = call("create", sample, out, "--format", "theano-alexnet", "--batch_images",
                     "12", *ARGS)
    assert code == 0, err
    root = out / BUILDS["theano-alexnet"][1]
    assert os.listdir(root / "train_hkl_b12_b_12") and not os.listdir(root / "val_hkl_b12_b_12")
    assert ("note: val: its 10 images are fewer than one batch of 12, so val_hkl_b12_b_12/ "
            "and val_hkl_b12_b_6/ hold no batch file") in err, err
    code, err = call("create", sample, out, "--format", "theano-alexnet", "--batch_images",
                     "12", *ARGS, "--overwrite")  # the empty folders are its own
    assert code == 0, err


# ================================================================ 13. every hint works
def _committed(outdir):
    """Files (folder) or datums (LMDB) committed in the outputs being built in ``outdir``."""
    from conftest import lmdb_entries

    return batches_in_place(outdir) + sum(lmdb_entries(partial) for partial in
                                          Path(outdir).glob("*.partial"))


def _stop_with_sigterm(proc, outdir):
    """SIGTERM ``proc`` once some of its work is committed (frozen first, so that it is
    midway); returns (exit code, stderr)."""
    import signal
    import time

    from conftest import pause

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the build ended first: " + proc.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out waiting"
        if _committed(outdir) > 0:
            pause(proc)
            if list(Path(outdir).glob("*.partial")):
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    err = proc.communicate(timeout=120)[1].decode()
    return proc.returncode, err


def _hinted(err, command):
    """The flags a message tells to add to ``command``: '--resume' or '--overwrite'."""
    flags = [flag for flag in ("--resume", "--overwrite") if flag in err.split("error:")[-1]
             or flag in err.splitlines()[-1]]
    assert flags, err
    return command + flags[:1]


@pytest.mark.parametrize("command", ["extract", "create", "convert"])
def test_the_hint_after_sigterm_is_a_command_that_works(source, tmp_path, command):
    from conftest import start

    out = tmp_path / "out"
    if command == "convert":
        lines = [f"train/{path.relative_to(source / 'train').as_posix()} 0"
                 for path in sorted((source / "train").rglob("*.JPEG"))]
        (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
        args = ["convert", source, tmp_path / "list.txt", out / "db", "--txn_size=4"]
        out.mkdir()
    elif command == "create":
        args = ["create", source, out, "--format", "folder", "--txn_size", "4"]
    else:
        args = ["extract", source, out]
    args += ["--workers", "1", "--progress=false"]
    code, err = _stop_with_sigterm(start(*args), out)
    assert code == 143 and "run the same command again with --resume" in err, err
    code, err = run_child(*_hinted(err, args))
    assert code == 0, err


def test_hints_of_verify_and_of_a_refused_run_work(source, tmp_path):
    from conftest import start

    out = tmp_path / "out"
    args = ["extract", source, out, "--workers", "1", "--progress=false"]
    args_create = ["create", source, out, "--format", "folder", "--txn_size", "4",
                   "--workers", "1", "--progress=false"]
    code, err = _stop_with_sigterm(start(*args_create), out)
    assert code == 143, err
    (partial,) = out.glob("*.partial")
    code, err = run("verify", partial)
    assert code == 1 and "run the command that built it again with --resume" in err, err
    code, err = run_child(*args_create)  # without --resume: refused, saying what to pass
    assert code == 1 and "pass --resume to continue it or --overwrite to discard it" in err
    code, err = run_child(*args_create, "--overwrite")
    assert code == 0, err
    # extract into it: --overwrite --resume (both flags its hints name) are accepted
    code, err = run_child(*args, "--overwrite", "--resume")
    assert code == 0, err


# ================================================================ 5. one format per OUTDIR
@pytest.mark.parametrize("first,second", [("caffe", "cuda-convnet2"), ("folder", "caffe"),
                                          ("cuda-convnet2", "theano-alexnet")])
def test_a_second_format_never_rewrites_the_label_files_of_the_first(sample, built, tmp_path,
                                                                       first, second):
    outdir = copy_of(built, first, tmp_path)
    before = {p.name: p.read_bytes() for p in outdir.glob("*.txt")}
    theirs = sorted(entry for entry in os.listdir(outdir) if (outdir / entry).is_dir())[0]
    for extra in ([], ["--overwrite"]):
        code, err = create(sample, outdir, second, *extra)
        error = one_line_error(err)
        assert code == 1 and f"{outdir} holds {outdir / theirs}, a " in error, err
        assert "formats are not mixed in one OUTDIR, even with --overwrite" in error
        assert f"move {theirs} (and its label files) away" in error
    assert {p.name: p.read_bytes() for p in outdir.glob("*.txt")} == before
    assert sorted(os.listdir(outdir)) == sorted(os.listdir(built[first]))  # nothing written
    code, err = call("verify", outdir / theirs)
    assert code == 0, err
