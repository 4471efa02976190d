"""The resize modes through the commands: convert_imageset, create_imagenet (mean over a centre
crop, imagenet_mean.png, --prototxt), compute_image_mean --crop_size, verify, extract."""
import math
import os

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from conftest import SAMPLE, parse_datum, read_lmdb
from imagenet_db.cli import main
from imagenet_db.imaging.resize.geometry import center_crop
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.outputs.datum import datum_to_chw
from imagenet_db.outputs.meanfile import read_mean
from imagenet_db.protos import BlobProto, NetParameter, SolverParameter
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.verify import verify_db

TRAIN_LIST = [(f"{w}/{f}", i) for i, w in enumerate(sorted(os.listdir(SAMPLE / "train")))
              for f in sorted(os.listdir(SAMPLE / "train" / w))]


@pytest.fixture(scope="module")
def listfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("lists") / "train.txt"
    path.write_text("".join(f"{rel} {label}\n" for rel, label in TRAIN_LIST))
    return path


def convert(listfile, db, *flags):
    return main(["convert", *flags, "--workers=2", "--progress=false", str(SAMPLE / "train") + "/",
                 str(listfile), str(db)])


def datums(db):
    return [(k.decode(), parse_datum(v)) for k, v in read_lmdb(db)]


def hwc(datum):
    pixels = datum_to_chw(datum, "?")
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def source_image(key):
    return cv2.imread(str(SAMPLE / "train" / key.split("_", 1)[1]), cv2.IMREAD_COLOR)


def load_net(path, message=NetParameter):
    net = message()
    text_format.Merge(open(path).read(), net)
    return net


# ------------------------------------------------------------------ convert_imageset
def test_fill_noise_is_seeded_and_padding_is_digits(listfile, tmp_path):
    flags = ["--resize_mode=fill", "--resize_width=256", "--resize_height=256", "--seed=1"]
    assert convert(listfile, tmp_path / "a", *flags) == 0
    assert convert(listfile, tmp_path / "b", *flags) == 0
    assert convert(listfile, tmp_path / "c", *flags[:-1], "--seed=2") == 0
    a, b, c = (read_lmdb(tmp_path / n) for n in "abc")
    assert a == b and a != c
    for key, datum in datums(tmp_path / "a"):
        image, src = hwc(datum), source_image(key)
        h, w = src.shape[:2]
        assert image.shape == (256, 256, 3)
        if w > h:  # 500x375 -> 256 x round(192) rows, 32 rows of noise above and below
            rows = math.floor(h / (w / 256) + 0.5)
            rows += (256 - rows) % 2
            pad = (256 - rows) // 2
            assert np.array_equal(image[:pad], image[pad + rows:])  # one strip, both sides
            assert image[:pad].max() <= 254
            assert np.array_equal(image[pad:pad + rows], cv2.resize(src, (256, rows)))
    assert convert(listfile, tmp_path / "d", "--resize_mode=fill", "--resize_width=256",
                   "--resize_height=256", "--fill_value=104,117,123") == 0
    key, datum = datums(tmp_path / "d")[0]
    image = hwc(datum)
    assert (image[0, 0] == [104, 117, 123]).all() or (image[:, 0] == [104, 117, 123]).all()


def test_crop_and_convnet2_through_convert(listfile, tmp_path):
    assert convert(listfile, tmp_path / "crop", "--resize_mode=crop", "--resize_width=224",
                   "--resize_height=224") == 0
    for key, datum in datums(tmp_path / "crop")[:5]:
        src = source_image(key)
        h, w = src.shape[:2]
        if w > h:
            full = cv2.resize(src, (math.floor(w * 224 / h + 0.5), 224))
            start = math.floor((full.shape[1] - 224) / 2 + 0.5)
            assert np.array_equal(hwc(datum), full[:, start:start + 224])
    assert convert(listfile, tmp_path / "cc2", "--resize_mode=convnet2", "--resize_width=256",
                   "--resize_height=256", "--encoded", "--encode_type=jpg") == 0
    key, datum = datums(tmp_path / "cc2")[0]
    src = source_image(key)
    h, w = src.shape[:2]
    s = 256 / min(h, w)
    full = cv2.resize(src, (math.floor(w * s + 0.5), math.floor(h * s + 0.5)),
                      interpolation=cv2.INTER_AREA)  # shrinking: cuda-convnet2 uses AREA
    top, left = (full.shape[0] - 256) // 2, (full.shape[1] - 256) // 2
    expected = cv2.imencode(".jpg", full[top:top + 256, left:left + 256])[1].tobytes()
    assert datum.encoded and datum.data == expected


def test_only_shrink_keeps_original_files_and_quality_is_applied(listfile, tmp_path):
    assert convert(listfile, tmp_path / "s", "--shorter_side=360", "--only_shrink",
                   "--encoded") == 0
    kept = resized = 0
    for key, datum in datums(tmp_path / "s"):
        raw = (SAMPLE / "train" / key.split("_", 1)[1]).read_bytes()
        src = source_image(key)
        if min(src.shape[:2]) <= 360:
            assert datum.data == raw
            kept += 1
        else:
            assert min(datum.height, datum.width) == 360 and datum.data != raw
            resized += 1
    assert kept and resized
    for q in (50, 95):
        assert convert(listfile, tmp_path / f"q{q}", "--resize_width=128", "--resize_height=128",
                       "--encoded", "--encode_type=jpg", f"--encode_quality={q}") == 0
    key, d50 = datums(tmp_path / "q50")[0]
    d95 = datums(tmp_path / "q95")[0][1]
    small = cv2.resize(source_image(key), (128, 128))
    assert d50.data == cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    assert d95.data == cv2.imencode(".jpg", small)[1].tobytes()  # OpenCV's default is 95


def test_contradicting_flags_are_one_line_errors(listfile, tmp_path, capsys):
    code = convert(listfile, tmp_path / "x", "--resize_mode=crop", "--shorter_side=256")
    err = capsys.readouterr().err
    assert code == 1 and "--shorter_side goes with --resize_mode=shorter_side" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


# ------------------------------------------------------------------ create_imagenet, mean, verify
@pytest.fixture(scope="module")
def resnet_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("resnet") / "out"
    assert main(["create", str(SAMPLE), str(out), "--shorter_side=256", "--encoded",
                 "--mean_crop=224", "--prototxt", "--progress=false"]) == 0
    return out


def test_shorter_side_build_mean_over_centre_crops(resnet_build):
    db = resnet_build / "ilsvrc12_train_lmdb"
    sizes, total = set(), np.zeros((3, 224, 224))
    entries = datums(db)
    for _, datum in entries:  # the mean computed here, independently, from the stored images
        pixels = datum_to_chw(datum, "?")
        sizes.add(pixels.shape)
        assert min(pixels.shape[1:]) == 256
        total += center_crop(pixels.transpose(1, 2, 0), 224, 224).transpose(2, 0, 1)
    assert len(sizes) > 5
    mean = read_mean(str(resnet_build / "imagenet_mean.binaryproto"))
    assert mean.shape == (3, 224, 224)
    assert np.allclose(mean, total / len(entries), atol=1e-4)
    again, count = compute_db_mean(str(db), crop=224)
    assert count == len(entries) and np.array_equal(again, mean)
    picture = cv2.imread(str(resnet_build / "imagenet_mean.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(picture, np.rint(mean).astype(np.uint8).transpose(1, 2, 0))
    report = verify_db(str(db), progress=False)
    assert report.ok and any("different channels/height/width" in n for n in report.notes)


def test_shorter_side_prototxt_is_resnet50_with_mean_values(resnet_build):
    net = load_net(resnet_build / "train_val.prototxt")
    mean = read_mean(str(resnet_build / "imagenet_mean.npy"))
    assert net.name == "ResNet-50" and net.layer[-3].inner_product_param.num_output == 5
    for data in net.layer[:2]:
        assert os.path.isdir(data.data_param.source)
        assert data.data_param.backend == data.data_param.LMDB
        t = data.transform_param
        assert t.crop_size == 224 and t.force_color and not t.mean_file
        assert np.allclose(list(t.mean_value), mean.mean(axis=(1, 2)), atol=1e-3)
        assert t.mirror == (data.include[0].phase == 0)  # mirror in TRAIN only
    solver = load_net(resnet_build / "solver.prototxt", SolverParameter)
    assert solver.net == str(resnet_build / "train_val.prototxt") and solver.test_iter == [1]
    assert (solver.base_lr, solver.weight_decay, solver.iter_size) == (
        pytest.approx(0.1), pytest.approx(0.0001), 8)
    deploy = load_net(resnet_build / "deploy.prototxt")
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]


def test_variable_sizes_without_mean_crop(tmp_path, capsys):
    assert main(["create", str(SAMPLE), str(tmp_path / "o"), "--shorter_side=256",
                 "--encoded", "--progress=false"]) == 0
    assert not (tmp_path / "o" / "imagenet_mean.binaryproto").exists()
    assert "--mean_crop" in capsys.readouterr().err
    assert main(["create", str(SAMPLE), str(tmp_path / "o"), "--shorter_side=256",
                 "--encoded", "--prototxt", "--progress=false"]) == 1
    assert "pass --mean_crop N" in capsys.readouterr().err


def test_caffenet_prototxt_for_the_default_build(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["create", str(SAMPLE), str(out), "--backend=leveldb", "--prototxt",
                 "--progress=false"]) == 0
    net = load_net(out / "train_val.prototxt")
    assert net.name == "CaffeNet" and [l.name for l in net.layer if l.type == "InnerProduct"] == \
        ["fc6", "fc7", "fc8"]
    assert net.layer[-3].inner_product_param.num_output == 5
    for data in net.layer[:2]:
        assert data.data_param.backend == data.data_param.LEVELDB
        assert os.path.isdir(data.data_param.source)
        blob = BlobProto()
        blob.ParseFromString(open(data.transform_param.mean_file, "rb").read())
        first = parse_datum(next(iter(read_lmdb_or_leveldb(data.data_param.source))))
        assert (blob.channels, blob.height, blob.width) == (first.channels, first.height,
                                                             first.width) == (3, 256, 256)
        assert data.transform_param.crop_size == 227
    solver = load_net(out / "solver.prototxt", SolverParameter)
    assert os.path.isfile(solver.net) and solver.test_iter == [1] and solver.max_iter == 450000
    # a second run keeps identical files; a file of the user's is refused before any work
    before = (out / "train_val.prototxt").read_text()
    assert main(["create", str(SAMPLE), str(out), "--backend=leveldb", "--prototxt", "--resume",
                 "--progress=false"]) == 0
    assert (out / "train_val.prototxt").read_text() == before
    (out / "solver.prototxt").write_text("net: 'mine'\n")
    assert main(["create", str(SAMPLE), str(out), "--backend=leveldb", "--prototxt", "--resume",
                 "--progress=false"]) == 1
    assert "was not written by create_imagenet" in capsys.readouterr().err
    assert (out / "solver.prototxt").read_text() == "net: 'mine'\n"


def read_lmdb_or_leveldb(path):
    import plyvel
    db = plyvel.DB(path)
    try:
        return [v for _, v in db.iterator()]
    finally:
        db.close()


def test_crop_size_mean_of_fixed_size_db_is_centre_of_full_mean(tmp_path):
    out = tmp_path / "o"
    assert main(["create", str(SAMPLE), str(out), "--progress=false"]) == 0
    db = str(out / "ilsvrc12_train_lmdb")
    full, _ = compute_db_mean(db)
    cropped, _ = compute_db_mean(db, crop=227, workers=2)
    assert cropped.shape == (3, 227, 227)
    assert np.allclose(cropped, full[:, 14:241, 14:241], atol=1e-4)  # (256 - 227) // 2 = 14
    assert main(["mean", "--crop_size=227", db, str(tmp_path / "m.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "m.npy"), cropped)


# ------------------------------------------------------------------ extract
def test_extract_shorter_side_resizes_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE", str(tmp_path / "idx"))
    spec = ArchiveSpec(["n01440764", "n02119789"], train_per_class=3, val_count=4, seed=5)
    info = fixture_archives.write_archives(tmp_path / "arch", spec, tree_root=tmp_path / "tree")
    dest = tmp_path / "x"
    args = ["extract", str(tmp_path / "arch"), str(dest), "--shorter_side=64",
            "--encode_quality=90", "--workers=2", "--progress=false"]
    assert main(args) == 0
    files = sorted(p for p in dest.rglob("*.JPEG"))
    assert len(files) == len(info["train"]) + len(info["val"])
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert min(image.shape[:2]) == 64
    relpath = info["train"][0][0]
    original = cv2.imread(str(tmp_path / "tree" / "train" / relpath), cv2.IMREAD_COLOR)
    h, w = original.shape[:2]
    small = cv2.imread(str(dest / "train" / relpath), cv2.IMREAD_COLOR)
    size = (64, math.floor(h * 64 / w + 0.5)) if w <= h else (math.floor(w * 64 / h + 0.5), 64)
    assert small.shape[:2] == size[::-1]
    assert np.abs(small.astype(int) - cv2.resize(original, size).astype(int)).mean() < 4
    capsys.readouterr()
    assert main(args) == 0  # rerun: everything present is kept
    assert "wrote 0 files" in capsys.readouterr().err
    assert main(args[:3] + ["--shorter_side=48", "--progress=false"]) == 1
    assert "options.shorter_side: 64 there, 48 now" in capsys.readouterr().err
    assert main(args[:3] + ["--shorter_side=48", "--overwrite", "--progress=false"]) == 0
    assert min(cv2.imread(str(dest / "train" / relpath)).shape[:2]) == 48
    # only_shrink with a size larger than every image keeps the archive's bytes
    keep = tmp_path / "keep"
    assert main(["extract", str(tmp_path / "arch"), str(keep), "--shorter_side=4000",
                 "--only_shrink", "--progress=false"]) == 0
    assert (keep / "train" / relpath).read_bytes() == \
        (tmp_path / "tree" / "train" / relpath).read_bytes()
