"""create_imagenet --format cuda-convnet2 / theano-alexnet / folder: layouts, numbering, label
orders, batch shapes, loadable with plain pickle / hickle / numpy, mean and color_pca against a
plain numpy computation, resume. On the bundled sample (real photos) and on ILSVRC2012 archive
fixtures (real tars, real devkit meta.mat)."""
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import cv2
import hickle
import numpy as np
import pytest

from imagenet_db.cli import create_imagenet_main
from imagenet_db.outputs.batchfiles import BatchOutput
from imagenet_db.outputs.cuda_convnet2 import CudaConvnet2Output
from imagenet_db.imaging.resize import convnet2
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.sources import open_dataset
from imagenet_db.sources.base import shuffle_order
from imagenet_db.sources.labels import ilsvrc2012_ids
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec

ARGS = ["--progress=false", "--workers=2"]


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """All 1,000 real classes (real IDs, words) with one small image each, 7 val images."""
    root = tmp_path_factory.mktemp("arch")
    info = fixture_archives.write_archives(root, ArchiveSpec(None, train_per_class=1, val_count=7,
                                                             image_size=(40, 30), seed=4))
    info["root"] = root
    return info


def log_entries(folder):
    """(index, label, relpath) per stored image from the output's log."""
    out = []
    for line in (Path(folder) / "imagenet_db.batches.log").read_text().splitlines():
        index, label, relpath = line.split("\t", 2)
        out.append((int(index), int(label), relpath))
    return out


def load_py2(path):
    """A cuda-convnet2 pickle, read as the issue says users read them: latin1."""
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"  # protocol 2
        f.seek(0)
        return pickle.load(f, encoding="latin1")


def cc2_sub_batches(folder):
    """{(batch, part): dict} of every sub-batch file, checking the names on the way."""
    out = {}
    for entry in os.listdir(folder):
        if entry.startswith("data_batch_"):
            batch = int(entry[len("data_batch_"):])
            for name in os.listdir(folder / entry):
                prefix, _, part = name.rpartition(".")
                assert prefix == entry, name
                out[batch, int(part)] = load_py2(folder / entry / name)
    return out


# ---------------------------------------------------------------- cuda-convnet2
def test_cuda_convnet2_sample_layout_labels_meta(sample_copy, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "cuda-convnet2",
                                 "--batch_images", "12", "--seed", "3", *ARGS]) == 0
    root = out / "ilsvrc12_cuda_convnet2"
    subs = cc2_sub_batches(root)
    # 40 train images: batches 0..3 of 12 (sub-batches of 4), the last holds 4 (one sub-file);
    # val (10 images) starts at ceil(4 / 1000) * 1000 = 1000: 1000 (12 -> 10: .0 .1 .2)
    assert sorted(subs) == [(b, p) for b in range(3) for p in range(3)] + [(3, 0)] + \
        [(1000, 0), (1000, 1), (1000, 2)]
    assert [len(subs[k]["data"]) for k in sorted(subs)] == [4] * 10 + [4, 4, 2]
    # labels: the devkit's ILSVRC2012_ID order (kit fox first), as one-element lists
    ids = ilsvrc2012_ids()
    wnids = sorted(os.listdir(sample_copy / "train"), key=ids.get)
    assert wnids[0] == "n02119789"  # kit fox, ILSVRC2012_ID 1
    assert (out / "synsets.txt").read_text().split() == wnids
    entries = log_entries(root)
    stored = [subs[k] for k in sorted(subs)]
    labels = [l for d in stored for l in d["labels"]]
    assert all(isinstance(l, list) and len(l) == 1 for l in labels)
    assert [l[0] for l in labels] == [label for _, label, _ in entries]
    assert all(label == wnids.index(rel.split("/")[0]) for _, label, rel in entries[:40])
    truth = dict(line.split() for line in (sample_copy / "val.txt").read_text().splitlines())
    assert [rel for _, _, rel in entries[40:]] == sorted(truth)  # val in file order
    assert all(label == wnids.index(truth[rel]) for _, label, rel in entries[40:])
    # train shuffled with --seed (the project's seeded order of the sorted list)
    train = sorted(rel for rel, _ in open_dataset(str(sample_copy)).splits["train"].entries)
    assert [rel for _, _, rel in entries[:40]] == [train[i] for i in shuffle_order(40, 3)]
    # each image: make-data's transform of the source file, JPEG quality 95
    jpegs = [s.encode("latin1") for d in stored for s in d["data"]]
    first = cv2.imdecode(np.fromfile(str(sample_copy / "train" / entries[0][2]), np.uint8),
                         cv2.IMREAD_COLOR)
    make_data = TransformOptions(256, 256, resize_mode="convnet2", interpolation="auto")
    ok, want = cv2.imencode(".jpg", convnet2.apply(first, make_data),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert jpegs[0] == want.tobytes()
    # batches.meta: data_mean and color_pca of the stored train images, as decoded (RGB)
    meta = load_py2(root / "batches.meta")
    assert (meta["batch_size"], meta["num_vis"]) == (12, 196608)
    words = dict(line.split(" ", 1) for line in
                 (sample_copy / "synset_words.txt").read_text().splitlines())
    assert meta["label_names"] == [words[w] for w in wnids]
    rgb = np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                    for j in jpegs[:40]]).astype(np.float64)
    assert rgb.shape == (40, 256, 256, 3)
    mean = meta["data_mean"]
    assert mean.dtype == np.float32 and mean.shape == (196608, 1)
    assert np.allclose(mean.reshape(3, 256, 256), rgb.mean(axis=0).transpose(2, 0, 1), atol=1e-4)
    stdevs, vectors = meta["color_pca"]
    values, want_vectors = np.linalg.eigh(np.cov(rgb.reshape(-1, 3).T, bias=True))
    assert stdevs.shape == (3,) and vectors.shape == (3, 3)
    assert np.allclose(stdevs, np.sqrt(values), rtol=1e-9)
    assert np.allclose(np.abs(vectors.T @ want_vectors), np.eye(3), atol=1e-9)  # up to sign
    # plain Python 3 with encoding='bytes' too
    with open(root / "data_batch_0" / "data_batch_0.0", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert raw[b"data"][0] == jpegs[0] and raw[b"labels"][0] == [entries[0][1]]


def test_cuda_convnet2_archives_use_ilsvrc2012_id_minus_1(arch, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(arch["root"]), str(out), "--format", "cuda-convnet2",
                                 "--batch_images", "600", *ARGS]) == 0
    root = out / "ilsvrc12_cuda_convnet2"
    ids = {w: i for i, w, _ in arch["classes"]}
    entries = log_entries(root)
    assert len(entries) == 1007
    for _, label, rel in entries[:1000]:
        assert label == ids[rel.split("/")[0]] - 1  # kit fox n02119789 = 0
    assert [label for _, label, _ in entries[1000:]] == [i - 1 for i in arch["ground_truth"]]
    subs = cc2_sub_batches(root)
    assert sorted({b for b, _ in subs}) == [0, 1, 1000]  # 1000 train images: 2 batches of 600
    meta = load_py2(root / "batches.meta")
    assert len(meta["label_names"]) == 1000
    assert meta["label_names"][0] == "kit fox, Vulpes macrotis"
    assert (out / "val.txt").read_text().splitlines()[0] == \
        f"ILSVRC2012_val_00000001.JPEG {arch['ground_truth'][0] - 1}"


def _py2_numpy():
    py2 = shutil.which("python2")
    if not py2:
        return None
    env = dict(os.environ, PYENV_VERSION="2.7.18")
    ok = subprocess.run([py2, "-c", "import numpy"], env=env, capture_output=True)
    return (py2, env) if ok.returncode == 0 else None


@pytest.mark.skipif(_py2_numpy() is None, reason="needs Python 2.7 with numpy (cuda-convnet2's)")
def test_cuda_convnet2_python2_cpickle_reads_it_like_the_loader(sample_copy, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "cuda-convnet2",
                                 "--batch_images", "30", *ARGS]) == 0
    py2, env = _py2_numpy()
    script = (  # what convdata.py does with the files, under Python 2's cPickle
        "import cPickle, sys, os, numpy as n, numpy.random as nr\n"
        "root = sys.argv[1]\n"
        "meta = cPickle.load(open(os.path.join(root, 'batches.meta'), 'rb'))\n"
        "mean = meta['data_mean'].astype(n.single).reshape((3, 256, 256))\n"
        "eig = meta['color_pca'][1].astype(n.single)\n"
        "sd = n.c_[meta['color_pca'][0].astype(n.single)]\n"
        "noise = n.dot(nr.randn(4, 3).astype(n.single) * sd.T, eig.T)\n"
        "d = cPickle.load(open(os.path.join(root, 'data_batch_0', 'data_batch_0.1'), 'rb'))\n"
        "assert type(d['data'][0]) is str and d['data'][0][:2] == '\\xff\\xd8'\n"
        "labs = [(l[nr.randint(len(l))] if len(l) > 0 else -1) for l in d['labels']]\n"
        "print len(meta['label_names']), meta['num_vis'], mean.shape, noise.shape, len(labs)\n")
    run = subprocess.run([py2, "-c", script, str(out / "ilsvrc12_cuda_convnet2")], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["5", "196608", "(3,", "256,", "256)", "(4,", "3)", "10"]


# ---------------------------------------------------------------- theano-alexnet
def test_theano_alexnet_sample_layout_labels_mean(sample_copy, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "theano-alexnet",
                                 "--batch_images", "16", "--seed", "1", *ARGS]) == 0
    root = out / "ilsvrc12_theano_alexnet"
    assert sorted(os.listdir(root / "train_hkl_b16_b_16")) == ["0000.hkl", "0001.hkl"]
    assert sorted(os.listdir(root / "train_hkl_b16_b_8")) == [
        "0000_0.hkl", "0000_1.hkl", "0001_0.hkl", "0001_1.hkl"]
    assert os.listdir(root / "val_hkl_b16_b_16") == []  # 10 val images: no full batch
    # train: sorted list, numpy's legacy shuffle with the seed (upstream: np.random.seed(1))
    train = sorted(open_dataset(str(sample_copy)).splits["train"].entries)
    names = np.array([rel for rel, _ in train])
    np.random.seed(1)
    np.random.shuffle(names)
    got = np.load(root / "misc" / "shuffled_train_filenames.npy")
    assert list(got) == list(names)
    synsets = (out / "synsets.txt").read_text().split()
    assert synsets == sorted(synsets)  # Caffe's order
    labels = np.load(root / "labels" / "train_labels.npy")
    assert labels.dtype == np.int64 and list(labels) == [dict(train)[r] for r in names]
    l0, l1 = (np.load(root / "labels" / f"train_labels_{h}.npy") for h in (0, 1))
    assert list(l0) == list(labels[0:8]) + list(labels[16:24])
    assert list(l1) == list(labels[8:16]) + list(labels[24:32])
    truth = dict(line.split() for line in (sample_copy / "val.txt").read_text().splitlines())
    assert list(np.load(root / "labels" / "val_labels.npy")) == \
        [synsets.index(truth[n]) for n in sorted(truth)]
    assert len(np.load(root / "labels" / "val_labels_0.npy")) == 0
    # batches: c01b uint8 RGB, image i of batch b = squash of the shuffled list's 16 b + i
    pixels = []
    for rel in names[:32]:
        bgr = cv2.imdecode(np.fromfile(str(sample_copy / "train" / rel), np.uint8),
                           cv2.IMREAD_COLOR)
        pixels.append(cv2.resize(bgr, (256, 256))[:, :, ::-1].transpose(2, 0, 1))
    pixels = np.stack(pixels, axis=-1)
    for b in range(2):
        batch = hickle.load(str(root / "train_hkl_b16_b_16" / f"{b:04d}.hkl"))
        assert batch.shape == (3, 256, 256, 16) and batch.dtype == np.uint8
        assert np.array_equal(batch, pixels[..., 16 * b:16 * b + 16])
        halves = [hickle.load(str(root / "train_hkl_b16_b_8" / f"{b:04d}_{h}.hkl")) for h in (0, 1)]
        assert [h.shape for h in halves] == [(3, 256, 256, 8)] * 2
        assert np.array_equal(np.concatenate(halves, axis=-1), batch)
    mean = np.load(root / "misc" / "img_mean.npy")
    assert mean.dtype == np.float64 and mean.shape == (3, 256, 256)
    assert np.allclose(mean, pixels.astype(np.float64).mean(axis=-1), rtol=0, atol=1e-9)
    assert (root / "misc" / "train.txt").read_text().splitlines()[0] == f"{train[0][0]} 0"


def test_theano_alexnet_archives_caffe_labels(arch, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(arch["root"]), str(out), "--format", "theano-alexnet",
                                 "--batch_images", "500", "--resize", "32x32", *ARGS]) == 0
    root = out / "ilsvrc12_theano_alexnet"
    synsets = sorted(w for _, w, _ in arch["classes"])
    id_wnid = {i: w for i, w, _ in arch["classes"]}
    assert list(np.load(root / "labels" / "val_labels.npy")) == \
        [synsets.index(id_wnid[i]) for i in arch["ground_truth"]]  # devkit truth -> Caffe labels
    labels = np.load(root / "labels" / "train_labels.npy")
    names = np.load(root / "misc" / "shuffled_train_filenames.npy")
    assert len(labels) == 1000 and all(synsets.index(n.split("/")[0]) == label
                                       for n, label in zip(names, labels))
    assert hickle.load(str(root / "train_hkl_b500_b_250" / "0001_1.hkl")).shape == \
        (3, 32, 32, 250)


# ---------------------------------------------------------------- folder
def test_folder_sample_copies_bytes_and_resizes(sample_copy, tmp_path):
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "folder", *ARGS]) == 0
    truth = dict(line.split() for line in (sample_copy / "val.txt").read_text().splitlines())
    for rel, _ in open_dataset(str(sample_copy)).splits["train"].entries:
        assert (out / "train" / rel).read_bytes() == (sample_copy / "train" / rel).read_bytes()
    for name, wnid in truth.items():
        assert (out / "val" / wnid / name).read_bytes() == (sample_copy / "val" / name).read_bytes()
    labels = dict(open_dataset(str(sample_copy)).splits["val"].entries)
    assert open_dataset(str(out)).splits["val"].entries == \
        sorted((f"{wnid}/{name}", labels[name]) for name, wnid in truth.items())
    # the build log stays: the files written, all that --overwrite may delete (issue 24)
    logged = (out / "train" / "imagenet_db.files.log").read_text().splitlines()
    assert sorted(line.split("\t")[2] for line in logged) == \
        sorted(rel for rel, _ in open_dataset(str(sample_copy)).splits["train"].entries)
    small = tmp_path / "small"
    assert create_imagenet_main([str(sample_copy), str(small), "--format", "folder",
                                 "--resize", "64x48", "--val_layout", "flat", *ARGS]) == 0
    img = cv2.imread(str(small / "val" / sorted(truth)[0]))
    assert img.shape == (48, 64, 3)
    assert len(list((small / "train").rglob("*.JPEG"))) == 40


# ---------------------------------------------------------------- resume
def _interrupted(args, monkeypatch, after, where):
    """Run create_imagenet and kill it (KeyboardInterrupt: the pipeline aborts the output)
    after ``after`` images were added; ``where``='log' dies after the batch file is in
    place but before it is logged (the window a crash can hit)."""
    with monkeypatch.context() as m:
        add, append_log = BatchOutput.append, BatchOutput._append_log
        count = {"n": 0}

        def counting_append(self, record, value):
            count["n"] += 1
            if where == "add" and count["n"] > after:
                raise KeyboardInterrupt("killed")
            add(self, record, value)

        def dying_log(self, entries):
            if where == "log" and count["n"] > after:
                raise KeyboardInterrupt("killed")
            append_log(self, entries)
        m.setattr(BatchOutput, "append", counting_append)
        m.setattr(BatchOutput, "_append_log", dying_log)
        assert create_imagenet_main(args) == 130  # the command reports the interruption


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name not in ("imagenet_db.json",)}


@pytest.mark.parametrize("fmt,batch,after,where", [
    ("cuda-convnet2", "6", 13, "add"), ("cuda-convnet2", "6", 20, "log"),
    ("theano-alexnet", "8", 19, "add"), ("theano-alexnet", "8", 41, "log")])
def test_batch_formats_resume_to_the_same_bytes(sample_copy, tmp_path, monkeypatch, fmt, batch,
                                                 after, where):
    base = [str(sample_copy), "--format", fmt, "--batch_images", batch, *ARGS]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert create_imagenet_main([base[0], str(whole), *base[1:]]) == 0
    _interrupted([base[0], str(part), *base[1:]], monkeypatch, after, where)
    name = "ilsvrc12_" + fmt.replace("-", "_")
    assert (part / f"{name}.partial").is_dir() and not (part / name).exists()
    assert create_imagenet_main([base[0], str(part), *base[1:]]) == 1  # refused without --resume
    assert create_imagenet_main([base[0], str(part), *base[1:], "--resume"]) == 0
    a, b = _tree(part / name), _tree(whole / name)
    del a["imagenet_db.batches.state.npz"], b["imagenet_db.batches.state.npz"]  # zip times
    assert a == b


def test_open_unit_is_committed_by_close_and_continued(tmp_path):
    """Ctrl-C closes the output: the open sub-batch is written as it stands, then grown."""
    class R:
        def __init__(self, index):
            self.index, self.label, self.relpath = index, index % 3, f"img{index}.JPEG"

    class E:
        def __init__(self, index):
            rgb = np.full((256, 256, 3), index, np.uint8)
            self.value = b"\xff\xd8jpeg%d" % index
            self.stats = (rgb, None)
    path = str(tmp_path / "out")
    out = CudaConvnet2Output(path, [("train", 7), ("val", 2)], ["a", "b", "c"],
                             batch_size_images=6, sub_batch_size=2)
    for i in range(3):
        out.add(R(i), E(i))
    out.close()  # sub-batch 0.1 holds image 2 alone
    assert load_py2(Path(path) / "data_batch_0" / "data_batch_0.1")["data"] == ["\xff\xd8jpeg2"]
    out = CudaConvnet2Output(path, [("train", 7), ("val", 2)], ["a", "b", "c"],
                             batch_size_images=6, sub_batch_size=2)
    assert out.resume_position([R(i) for i in range(9)]) == 3
    for i in (3, 5, 6, 7, 8):  # 4 skipped
        out.add(R(i), E(i))
    out.close()
    facts = out.finish()
    assert facts["batch_ranges"] == {"train": "0-0", "val": "1000-1000"}
    assert [load_py2(Path(path) / "data_batch_0" / f"data_batch_0.{k}")["labels"]
            for k in range(3)] == [[[0], [1]], [[2], [0]], [[2], [0]]]
    meta = load_py2(Path(path) / "batches.meta")
    assert np.allclose(meta["data_mean"], np.mean([0, 1, 2, 3, 5, 6]))


def test_bad_images_are_skipped_and_labels_stay_aligned(sample_copy, tmp_path):
    wnid = sorted(os.listdir(sample_copy / "train"))[1]
    good = sorted((sample_copy / "train" / wnid).iterdir())[0].read_bytes()
    (sample_copy / "train" / wnid / f"{wnid}_1.JPEG").write_bytes(good[:len(good) // 3])
    (sample_copy / "train" / wnid / f"{wnid}_2.JPEG").write_bytes(b"")
    out = tmp_path / "out"
    assert create_imagenet_main([str(sample_copy), str(out), "--format", "cuda-convnet2",
                                 "--batch_images", "9", *ARGS]) == 0
    report = (out / "ilsvrc12_cuda_convnet2.skipped.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in report) == \
        [f"{wnid}/{wnid}_1.JPEG", f"{wnid}/{wnid}_2.JPEG"]
    entries = log_entries(out / "ilsvrc12_cuda_convnet2")
    assert len(entries) == 50 and all(wnid not in rel or rel[-7:] not in ("_1.JPEG", "_2.JPEG")
                                      for _, _, rel in entries)
    labels = [l[0] for k, d in sorted(cc2_sub_batches(out / "ilsvrc12_cuda_convnet2").items())
              for l in d["labels"]]
    assert labels == [label for _, label, _ in entries]
    assert create_imagenet_main([str(sample_copy), str(tmp_path / "strict"), "--format",
                                 "theano-alexnet", "--batch_images", "8", "--strict",
                                 *ARGS]) == 1
