"""Raw ILSVRC2012 archives as SOURCE: devkit labels, aux files, DBs equal to extracted input,
extract, checksums and clear errors. Fixtures are real tars of real-photo JPEGs
(imagenet_db.testing.archives)."""
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.sources.ilsvrc2012 import ArchiveError, index_archives, verify_archives
from imagenet_db.sources.checksums import ChecksumError
from imagenet_db.cli import create_imagenet_main, main
from imagenet_db.sources.devkit import DevkitError, read_devkit
from imagenet_db.recipes.extract import ExtractError, ExtractOptions, extract
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.outputs.folder import FolderOutput
from imagenet_db import sources
from imagenet_db.sources import open_dataset
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.recipes.imagenet import create_imagenet, write_labels
from imagenet_db.protos import Datum
from imagenet_db.readers import iterate_db
from imagenet_db.sources.archives.tarindex import (TarIndexError, TarReader, cache_file, index_nested,
                                  index_tar)

SMALL_WNIDS = ["n01440764", "n01443537", "n01751748", "n02105855", "n02119789", "n09193705"]
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")


def quiet(_text):
    pass


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """6 classes x 4 train images, 12 val images, plus the same images as a Caffe tree."""
    root = tmp_path_factory.mktemp("small")
    spec = ArchiveSpec(SMALL_WNIDS, train_per_class=4, val_count=12, seed=3)
    info = fixture_archives.write_archives(root / "arch", spec, tree_root=root / "tree")
    info["root"] = root
    return info


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """All 1,000 real classes (real IDs and words), one tiny image each, 10 val images."""
    root = tmp_path_factory.mktemp("full")
    spec = ArchiveSpec(None, train_per_class=1, val_count=10, image_size=(32, 24), seed=1)
    info = fixture_archives.write_archives(root / "arch", spec)
    info["root"] = root
    return info


def copy_archives(small, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVES:
        shutil.copyfile(small["root"] / "arch" / name, dest / name)
    return dest


def read_lines(path):
    return Path(path).read_text().splitlines()


def files_under(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ tar index
def test_tar_index_offsets_give_the_member_bytes(small):
    train = small["paths"]["train"]
    nested = index_nested(train)
    with tarfile.open(train) as outer, TarReader(train) as reader:
        assert sorted(nested) == sorted(m.name for m in outer.getmembers())
        for outer_member in outer.getmembers():
            inner = tarfile.open(fileobj=outer.extractfile(outer_member))
            expected = {m.name: inner.extractfile(m).read() for m in inner.getmembers()}
            got = {m.name: reader.read(m.offset, m.size) for m in nested[outer_member.name]}
            assert got == expected and len(got) == 4
    val = index_tar(small["paths"]["val"])
    assert [m.name for m in val] == [name for name, _ in small["val"]]


def test_index_cache_is_used_and_invalidated(small, tmp_path):
    arch = copy_archives(small, tmp_path / "arch")
    train = str(arch / "ILSVRC2012_img_train.tar")
    first = index_nested(train)
    cached = cache_file(train)
    assert os.path.isfile(cached)
    assert index_nested(train) == first == index_nested(train, cache=False)
    # the cache is what is read: a doctored cache shows through ...
    with gzip.open(cached, "rt") as f:
        lines = f.read().splitlines()
    name, inner, offset, size = lines[1].split("\t")
    with gzip.open(cached, "wt") as f:
        f.write("\n".join(lines[:1] + [f"{name}\t{inner}\t{int(offset) + 1}\t{size}"]
                          + lines[2:]) + "\n")
    assert index_nested(train) != first
    # ... until the archive changes (mtime), which makes a new key
    os.utime(train, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache_file(train) != cached and index_nested(train) == first
    # an unreadable cache is ignored
    with open(cache_file(train), "wb") as f:
        f.write(b"garbage")
    assert index_nested(train) == first


@pytest.mark.parametrize("where", ["inside_nested_data", "member_boundary", "inside_header",
                                   "end_marker_missing"])
def test_truncated_train_tar_is_named(small, tmp_path, where):
    arch = copy_archives(small, tmp_path / "arch")
    train = arch / "ILSVRC2012_img_train.tar"
    data = train.read_bytes()
    members = tarfile.open(train).getmembers()
    second = members[1]
    cut = {"inside_nested_data": second.offset_data + second.size // 2,
           "member_boundary": second.offset,  # the file stops right before a header
           "inside_header": second.offset + 100,
           "end_marker_missing": members[-1].offset_data + members[-1].size}[where]
    train.write_bytes(data[:cut])
    with pytest.raises(TarIndexError) as err:
        index_archives(str(arch))
    assert str(train) in str(err.value)
    assert "truncated" in str(err.value) or "damaged" in str(err.value)


# ------------------------------------------------------------------ devkit and labels
def test_devkit_ids_map_to_wnids_not_labels(small):
    devkit = read_devkit(small["paths"]["devkit"])
    internal = [s for s in devkit.synsets if not s.is_class]
    assert internal and all(s.num_children > 0 and s.ilsvrc2012_id > 1000 for s in internal)
    assert [s.wnid for s in devkit.classes] == [w for _, w, _ in small["classes"]]
    mapping = devkit.id_to_wnid()
    assert mapping[1] == "n02119789" and mapping[490] == "n01751748" and mapping[449] == "n01440764"
    assert devkit.val_ground_truth == small["ground_truth"]
    # the ID order is not the ASCII order Caffe uses
    ids_order = [s.wnid for s in devkit.classes]
    assert ids_order != sorted(ids_order)
    assert devkit.words()["n01440764"] == "tench, Tinca tinca"


def test_labels_on_full_class_set_match_caffe(full, tmp_path):
    start = time.perf_counter()
    assert main(["labels", str(full["root"] / "arch"), str(tmp_path)]) == 0
    seconds = time.perf_counter() - start
    synsets = read_lines(tmp_path / "synsets.txt")
    assert len(synsets) == 1000 and synsets == sorted(synsets)
    assert synsets[0] == "n01440764" and synsets[65] == "n01751748"
    words = read_lines(tmp_path / "synset_words.txt")
    assert words[0] == "n01440764 tench, Tinca tinca"
    assert words[synsets.index("n02119789")] == "n02119789 kit fox, Vulpes macrotis"
    # Caffe's val.txt for the real ground truth (490, 361, 171, 822, 297, ...)
    val = read_lines(tmp_path / "val.txt")
    assert val[0] == "ILSVRC2012_val_00000001.JPEG 65"
    assert [int(line.split()[1]) for line in val[:10]] == [65, 970, 230, 809, 516, 57, 334,
                                                           415, 674, 332]
    train = read_lines(tmp_path / "train.txt")
    assert train[0] == "n01440764/n01440764_10026.JPEG 0" and len(train) == 1000
    for line in train:
        relpath, label = line.split()
        assert synsets[int(label)] == relpath.split("/")[0]
    assert "n02105855/n02105855_2933.JPEG 230" in train  # the PNG named .JPEG keeps its label
    assert seconds < 10


def test_labels_equal_for_archives_and_extracted_tree(small, tmp_path):
    write_labels(str(small["root"] / "arch"), str(tmp_path / "a"), log=quiet)
    write_labels(str(small["root"] / "tree"), str(tmp_path / "t"), log=quiet)
    assert files_under(tmp_path / "a") == files_under(tmp_path / "t")
    synsets = read_lines(tmp_path / "a" / "synsets.txt")
    expected = [f"{name} {synsets.index(wnid)}" for name, wnid in small["val"]]
    assert read_lines(tmp_path / "a" / "val.txt") == expected


# ------------------------------------------------------------------ databases
def datums(db):
    return {k: v for k, v in iterate_db(db)}


def test_archives_and_extracted_tree_give_identical_databases(small, tmp_path):
    out_a, out_t = tmp_path / "from_archives", tmp_path / "from_tree"
    opts, build = TransformOptions(48, 64), BuildOptions(workers=2, progress=False)
    sa = create_imagenet(str(small["root"] / "arch"), str(out_a), opts, build=build, log=quiet)
    st = create_imagenet(str(small["root"] / "tree"), str(out_t), opts, build=build, log=quiet)
    for split in ("train", "val"):
        a = list(iterate_db(str(out_a / f"ilsvrc12_{split}_lmdb")))
        t = list(iterate_db(str(out_t / f"ilsvrc12_{split}_lmdb")))
        assert a == t and len(a) == len(small[split])
        assert sa[split].written == len(a) and not sa[split].skipped and not st[split].skipped
        # and the database files themselves, byte for byte
        assert ((out_a / f"ilsvrc12_{split}_lmdb" / "data.mdb").read_bytes()
                == (out_t / f"ilsvrc12_{split}_lmdb" / "data.mdb").read_bytes())
    for name in ("synsets.txt", "synset_words.txt", "train.txt", "val.txt",
                 "imagenet_mean.binaryproto", "imagenet_mean.npy"):
        assert (out_a / name).read_bytes() == (out_t / name).read_bytes(), name

    # labels through ID -> wnid -> Caffe label; keys are Caffe's relpaths
    synsets = read_lines(out_a / "synsets.txt")
    id_to_wnid = {i: w for i, w, _ in small["classes"]}
    val = datums(str(out_a / "ilsvrc12_val_lmdb"))
    for key, value in val.items():
        name = key.decode().split("_", 1)[1]
        number = int(name[len("ILSVRC2012_val_"):-len(".JPEG")])
        datum = Datum.FromString(value)
        assert datum.label == synsets.index(id_to_wnid[small["ground_truth"][number - 1]])
        assert (datum.channels, datum.height, datum.width) == (3, 48, 64)
    # the odd members (CMYK, grayscale, PNG named .JPEG) are converted, not skipped
    train = datums(str(out_a / "ilsvrc12_train_lmdb"))
    relpaths = {k.decode().split("_", 1)[1] for k in train}
    assert set(small["odd"]) <= relpaths and "n02105855/n02105855_2933.JPEG" in relpaths


# ------------------------------------------------------------------ extract
def test_extract_reproduces_layout_and_resumes(small, tmp_path, monkeypatch):
    arch, tree = str(small["root"] / "arch"), small["root"] / "tree"
    dest = tmp_path / "imagenet"
    s = extract(arch, str(dest), build=BuildOptions(workers=2, progress=False), log=quiet)
    assert s.written == len(small["train"]) + len(small["val"]) and s.kept == 0
    for relpath, _ in small["train"]:
        assert (dest / "train" / relpath).read_bytes() == (tree / "train" / relpath).read_bytes()
    for name, wnid in small["val"]:
        assert (dest / "val" / wnid / name).read_bytes() == (tree / "val" / name).read_bytes()
    assert (dest / "synset_words.txt").read_bytes() == (tree / "synset_words.txt").read_bytes()
    assert (dest / "train" / "imagenet_db.json").is_file()
    # the tree is a SOURCE with the archives' labels; val.txt names its paths
    labels = dict(open_dataset(arch).splits["val"].entries)
    want = sorted((f"{w}/{n}", labels[n]) for n, w in small["val"])
    assert open_dataset(str(dest)).splits["val"].entries == want
    assert read_lines(dest / "val.txt") == [f"{p} {label}" for p, label in want]

    # an interrupted run: train complete, val stopped after 5 files (4 committed, 2 per commit)
    shutil.rmtree(dest / "val")
    with monkeypatch.context() as m:
        init, add = FolderOutput.__init__, FolderOutput.add

        def small_commits(self, path, batch_size=1000):
            init(self, path, batch_size=2)

        def crash_on_sixth(self, record, encoded):
            if len(self.logged) + self.pending == 5:
                raise KeyboardInterrupt("killed")
            add(self, record, encoded)
        m.setattr(FolderOutput, "__init__", small_commits)
        m.setattr(FolderOutput, "add", crash_on_sixth)
        with pytest.raises(KeyboardInterrupt):
            extract(arch, str(dest), build=BuildOptions(workers=1, progress=False), log=quiet)
    assert len(read_lines(dest / "val.partial" / "imagenet_db.files.log")) == 4
    s = extract(arch, str(dest), build=BuildOptions(workers=2, progress=False), log=quiet)
    assert s.kept == len(small["train"]) and s.written == len(small["val"])
    for name, wnid in small["val"]:
        assert (dest / "val" / wnid / name).read_bytes() == (tree / "val" / name).read_bytes()
    assert not list(dest.rglob(".*.tmp-*")) and not (dest / "val.partial").exists()

    # counts are checked against the source at the end
    victim = dest / "train" / small["train"][5][0]
    (victim.parent / "stray.JPEG").write_bytes(b"x")
    with pytest.raises(ExtractError, match="train/" + victim.parent.name + ".*move away"):
        extract(arch, str(dest), build=BuildOptions(progress=False), log=quiet)
    # --overwrite deletes only the files the extraction wrote (issue 24): the stray is named
    with pytest.raises(DatabaseError, match=str(victim.parent / "stray.JPEG")):
        extract(arch, str(dest), build=BuildOptions(overwrite=True, progress=False), log=quiet)
    (victim.parent / "stray.JPEG").unlink()
    victim.unlink()  # fewer files than the source: --overwrite extracts again
    with pytest.raises(ExtractError, match="pass --overwrite"):
        extract(arch, str(dest), build=BuildOptions(progress=False), log=quiet)
    extract(arch, str(dest), build=BuildOptions(overwrite=True, progress=False), log=quiet)
    assert victim.exists()


def test_extract_flat_layout_is_the_caffe_tree(small, tmp_path):
    code = main(["extract", str(small["root"] / "arch"), str(tmp_path / "x"),
                 "--val_layout=flat", "--progress=false", "--workers=1"])
    assert code == 0
    got = files_under(tmp_path / "x")
    want = files_under(small["root"] / "tree")
    images = {k for k in want if k.startswith(("train/", "val/"))}
    assert {k: got[k] for k in images} == {k: want[k] for k in images}
    assert got["synset_words.txt"] == want["synset_words.txt"]
    # Caffe's val.txt (labels instead of the fixture's wnids): the same tree as a SOURCE
    x, fixture = open_dataset(str(tmp_path / "x")), open_dataset(str(small["root"] / "tree"))
    assert x.splits["val"].entries == fixture.splits["val"].entries
    # a val.txt edited by the user is not replaced silently
    (tmp_path / "x" / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG n01440764\n")
    with pytest.raises(ImagenetDbError, match="val.txt exists with other contents"):
        extract(str(small["root"] / "arch"), str(tmp_path / "x"),
                options=ExtractOptions(val_layout="flat"), build=BuildOptions(progress=False),
                log=quiet)


# ------------------------------------------------------------------ checksums
def test_verify_checks_md5_of_every_archive(small, capsys):
    arch = small["root"] / "arch"
    paths = index_archives(str(arch)).paths
    md5sum = subprocess.run(["md5sum", *[str(arch / n) for n in ARCHIVES]], check=True,
                            capture_output=True, text=True).stdout.split()
    expected = {Path(md5sum[i + 1]).name: md5sum[i] for i in range(0, len(md5sum), 2)}
    verify_archives(paths, expected, progress=False, log=quiet)  # the right digests pass
    with pytest.raises(ChecksumError) as err:  # the fixtures are not the published files
        verify_archives(paths, progress=False, log=quiet)
    assert all(str(arch / n) in str(err.value) for n in ARCHIVES)
    assert "1d675b47d978889d74fa0da5fadfb00e" in str(err.value)
    code = create_imagenet_main([str(arch), str(small["root"] / "never"), "--verify",
                                 "--progress=false"])
    assert code == 1 and "differs from the published" in capsys.readouterr().err
    assert not (small["root"] / "never").exists()


def test_verify_dispatches_through_the_distributions(small, tmp_path, monkeypatch, capsys):
    """--verify runs the verify of the distribution that reads SOURCE (sources.DISTRIBUTIONS);
    a SOURCE whose distribution publishes no checksums gets one line naming it, exit 1."""
    tree = str(small["root"] / "tree")
    with pytest.raises(ImagenetDbError) as err:
        sources.verify_source(tree, progress=False, log=quiet)
    assert str(err.value) == (f"{tree}: --verify checks the ILSVRC2012 archives "
                              f"(ILSVRC2012_img_train.tar, ...); or the winter21 archive "
                              f"(winter21_whole.tar.gz), and this folder holds none")
    code = create_imagenet_main([tree, str(tmp_path / "never"), "--verify", "--progress=false"])
    assert code == 1 and capsys.readouterr().err.strip().endswith("and this folder holds none")
    assert not (tmp_path / "never").exists()
    seen = []  # a distribution added to the registry with its own verify is the one called
    own = types.SimpleNamespace(NAME="own", LOOKS_FOR="own", VERIFIES="own files",
                                detect=lambda path: path == tree,
                                verify=lambda path, progress, log: seen.append(path))
    monkeypatch.setattr(sources, "DISTRIBUTIONS", [own] + sources.DISTRIBUTIONS)
    sources.verify_source(tree, progress=False, log=quiet)
    assert seen == [tree]
    with pytest.raises(ChecksumError):  # the archives still go to ilsvrc2012.verify
        sources.verify_source(str(small["root"] / "arch"), progress=False, log=quiet)


# ------------------------------------------------------------------ errors
def rewrite_devkit(arch: Path, ground_truth=None, drop=None):
    path = arch / "ILSVRC2012_devkit_t12.tar.gz"
    members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.isfile() and not (drop and m.name.endswith(drop)):
                data = tar.extractfile(m).read()
                if ground_truth is not None and m.name.endswith("ground_truth.txt"):
                    data = ground_truth.encode()
                members.append((m.name, data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_missing_and_wrong_files_are_named(small, tmp_path, capsys):
    arch = copy_archives(small, tmp_path / "arch")
    (arch / "ILSVRC2012_img_val.tar").unlink()
    code, err = run_cli(["labels", str(arch), str(tmp_path / "out")], capsys)
    assert code == 1 and "missing ILSVRC2012_img_val.tar" in err

    shutil.copyfile(small["paths"]["devkit"], arch / "ILSVRC2012_img_val.tar")  # a .tar.gz
    code, err = run_cli(["labels", str(arch), str(tmp_path / "out")], capsys)
    assert code == 1 and f"{arch / 'ILSVRC2012_img_val.tar'}: not a readable" in err

    shutil.copyfile(small["paths"]["val"], arch / "ILSVRC2012_img_val.tar")
    (arch / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"not gzip")
    code, err = run_cli(["labels", str(arch), str(tmp_path / "out")], capsys)
    assert code == 1 and "ILSVRC2012_devkit_t12.tar.gz: cannot read the devkit" in err
    assert not (tmp_path / "out").exists()


def test_ground_truth_must_cover_the_val_tar(small, tmp_path):
    arch = copy_archives(small, tmp_path / "arch")
    truth = small["ground_truth"]
    rewrite_devkit(arch, "".join(f"{t}\n" for t in truth[:-2]))
    with pytest.raises(ArchiveError) as err:
        index_archives(str(arch))
    text = str(err.value)
    assert "ILSVRC2012_img_val.tar" in text and "ILSVRC2012_devkit_t12.tar.gz" in text
    assert f"ILSVRC2012_val_{len(truth) - 1:08d}.JPEG" in text and "covers only" in text

    rewrite_devkit(arch, "".join(f"{t}\n" for t in truth + [truth[0]]))
    with pytest.raises(ArchiveError, match=f"missing e.g. ILSVRC2012_val_{len(truth) + 1:08d}"):
        index_archives(str(arch))

    rewrite_devkit(arch, "490\n361\nkit fox\n")
    with pytest.raises(DevkitError, match=r"ground_truth.txt:3: expected an ILSVRC2012_ID"):
        index_archives(str(arch))
    rewrite_devkit(arch, "490\n7\n")  # ID 7 is not among the fixture's classes
    with pytest.raises(DevkitError, match=r"ground_truth.txt:2: ILSVRC2012_ID 7 is not one"):
        index_archives(str(arch))
    rewrite_devkit(arch, drop="meta.mat")
    with pytest.raises(DevkitError, match="no data/meta.mat in the devkit"):
        index_archives(str(arch))


def test_train_tar_must_hold_every_devkit_class(small, tmp_path):
    arch = copy_archives(small, tmp_path / "arch")
    train = arch / "ILSVRC2012_img_train.tar"
    with tarfile.open(small["paths"]["train"]) as src:
        kept = [(m, src.extractfile(m).read()) for m in src.getmembers()
                if m.name != "n01751748.tar"]
    with tarfile.open(train, "w") as dst:
        for m, data in kept:
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"no n01751748.tar for class n01751748.*1 of 6"):
        index_archives(str(arch))


def test_png_named_jpeg_and_cmyk_decode_from_the_tar(small):
    index = index_archives(str(small["root"] / "arch"))
    with TarReader(index.paths.train) as reader:
        for relpath, kind in small["odd"].items():
            m = index.train[relpath]
            data = reader.read(m.offset, m.size)
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.ndim == 3, kind
            if kind == "png_named_jpeg":
                assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_fixture_archives_are_reproducible(tmp_path):
    digests = []
    for run in ("a", "b"):
        spec = ArchiveSpec(SMALL_WNIDS[:3], train_per_class=2, val_count=3, image_size=(40, 30),
                           seed=9)
        fixture_archives.write_archives(tmp_path / run, spec)
        digests.append([hashlib.md5((tmp_path / run / n).read_bytes()).hexdigest()
                        for n in ARCHIVES])
    assert digests[0] == digests[1]
