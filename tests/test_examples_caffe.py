"""examples/imagenet and examples/sample: they parse as Caffe's NetParameter/SolverParameter with
the project's compiled caffe_pb2, hold the recipes' settings, name files the sample build really
writes, and (with a stock Caffe installed by tools/install_caffe.sh) train in it."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
from google.protobuf import text_format

from imagenet_db.cli import main
from imagenet_db.protos import NetParameter, SolverParameter
from imagenet_db.recipes.prototxt import example_files
from imagenet_db.testing.caffe import find_caffe_tool

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CAFFE = find_caffe_tool("caffe")
# CI (.ci/run) sets IMAGENET_DB_REQUIRE_CAFFE=1: there a missing Caffe fails these tests, so
# that Caffe-exactness is checked against every OpenCV release pip installs.
REQUIRE_CAFFE = os.environ.get("IMAGENET_DB_REQUIRE_CAFFE") == "1"


@pytest.fixture
def missing_caffe():
    pytest.fail("IMAGENET_DB_REQUIRE_CAFFE=1 but no stock Caffe was found: run "
                "tools/install_caffe.sh (Debian's CPU Caffe 1.0)")


if CAFFE is None and REQUIRE_CAFFE:
    needs_caffe = pytest.mark.usefixtures("missing_caffe")
else:
    needs_caffe = pytest.mark.skipif(CAFFE is None, reason="no stock Caffe (tools/install_caffe.sh "
                                                           "installs Debian's CPU Caffe 1.0)")


def load(path, message=NetParameter):
    msg = message()
    text_format.Merge(Path(path).read_text(), msg)
    return msg


def test_examples_imagenet_are_what_the_generator_writes():
    for name, text in example_files().items():
        assert (EXAMPLES / "imagenet" / name).read_text() == text, name


def test_caffenet_example_has_the_reference_settings():
    net = load(EXAMPLES / "imagenet" / "train_val.prototxt")
    train, test = net.layer[0], net.layer[1]
    assert [l.include[0].phase for l in (train, test)] == [0, 1]  # TRAIN, TEST
    assert train.data_param.source.endswith("ilsvrc12_train_lmdb")
    assert test.data_param.source.endswith("ilsvrc12_val_lmdb")
    assert (train.data_param.batch_size, test.data_param.batch_size) == (256, 50)
    assert train.transform_param.mirror and not test.transform_param.mirror
    for layer in (train, test):
        assert layer.transform_param.crop_size == 227
        assert layer.transform_param.mean_file.endswith("imagenet_mean.binaryproto")
    convs = {l.name: l.convolution_param for l in net.layer if l.type == "Convolution"}
    assert [(c.num_output, c.kernel_size[0], c.group) for c in convs.values()] == [
        (96, 11, 1), (256, 5, 2), (384, 3, 1), (384, 3, 2), (256, 3, 2)]
    solver = load(EXAMPLES / "imagenet" / "solver.prototxt", SolverParameter)
    assert (solver.base_lr, solver.lr_policy, solver.gamma, solver.stepsize, solver.max_iter,
            solver.momentum, solver.weight_decay, solver.snapshot) == (
        pytest.approx(0.01), "step", pytest.approx(0.1), 100000, 450000, pytest.approx(0.9),
        pytest.approx(0.0005), 10000)
    assert solver.net == "examples/imagenet/train_val.prototxt"
    deploy = load(EXAMPLES / "imagenet" / "deploy.prototxt")
    assert list(deploy.layer[0].input_param.shape[0].dim) == [10, 3, 227, 227]
    assert deploy.layer[-1].type == "Softmax"


def test_resnet50_example_reads_an_encoded_shorter_side_build():
    net = load(EXAMPLES / "imagenet" / "resnet50_train_val.prototxt")
    data = net.layer[0]
    assert data.transform_param.crop_size == 224 and data.transform_param.force_color
    assert len(data.transform_param.mean_value) == 3 and not data.transform_param.mean_file
    convs = [l for l in net.layer if l.type == "Convolution"]
    blocks = [l.name for l in net.layer if l.type == "Eltwise"]
    assert len(convs) == 53 and len(blocks) == 16  # 1 + 16 x 3 + 4 projections; 3+4+6+3 blocks
    deploy = load(EXAMPLES / "imagenet" / "resnet50_deploy.prototxt")
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]
    assert all(l.batch_norm_param.use_global_stats for l in deploy.layer if l.type == "BatchNorm")


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A folder laid out like the repository root after README's first command: sample_out/
    built by create_imagenet from the bundled sample, and a copy of examples/sample/."""
    root = tmp_path_factory.mktemp("repo")
    assert main(["create", str(EXAMPLES / "sample_imagenet"), str(root / "sample_out"),
                 "--progress=false"]) == 0
    shutil.copytree(EXAMPLES / "sample", root / "examples" / "sample")
    return root


def test_sample_prototxts_name_files_the_sample_build_wrote(sample_run):
    solver = load(sample_run / "examples/sample/solver.prototxt", SolverParameter)
    assert (sample_run / solver.net).is_file()
    net = load(sample_run / solver.net)
    for data in (l for l in net.layer if l.type == "Data"):
        assert (sample_run / data.data_param.source / "data.mdb").is_file()
        assert (sample_run / data.transform_param.mean_file).is_file()
    assert net.layer[-3].inner_product_param.num_output == \
        len((sample_run / "sample_out/synsets.txt").read_text().split())
    deploy = load(sample_run / "examples/sample/deploy.prototxt")
    trained = [l.name for l in net.layer if l.type not in ("Data", "Accuracy", "SoftmaxWithLoss")]
    assert [l.name for l in deploy.layer[1:-1]] == trained


@needs_caffe
def test_sample_net_trains_in_stock_caffe_with_a_falling_loss(sample_run):
    run = subprocess.run([CAFFE, "train", "--solver", "examples/sample/solver.prototxt"],
                         cwd=sample_run, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*?\), loss = ([0-9.e+-]+)",
                                           run.stderr)]
    assert len(losses) >= 10
    assert losses[-1] < losses[0] - 0.3 and losses[-1] < min(losses[:3])
    model = sample_run / "sample_out" / "samplenet_iter_120.caffemodel"
    assert model.is_file()
    classify = subprocess.run(
        [find_caffe_tool("classification"), "examples/sample/deploy.prototxt", str(model),
         "sample_out/imagenet_mean.binaryproto", "sample_out/synset_words.txt",
         str(EXAMPLES / "sample_imagenet/val/ILSVRC2012_val_00000001.JPEG")],
        cwd=sample_run, capture_output=True, text=True, timeout=120)
    assert classify.returncode == 0, classify.stderr[-2000:]
    assert len(re.findall(r'^\d\.\d{4} - "n\d{8} ', classify.stdout, re.M)) == 5


@needs_caffe
def test_stock_caffe_parses_every_prototxt_we_write(tmp_path, sample_run):
    out = tmp_path / "resnet"
    assert main(["create", str(EXAMPLES / "sample_imagenet"), str(out), "--shorter_side=256",
                 "--encoded", "--mean_crop=224", "--prototxt", "--progress=false"]) == 0
    nets = [out / "train_val.prototxt", out / "deploy.prototxt"]
    nets += sorted((EXAMPLES / "imagenet").glob("*.prototxt"))
    nets += sorted((EXAMPLES / "sample").glob("*.prototxt"))
    for path in nets:
        tool = "upgrade_solver_proto_text" if "solver" in path.name else "upgrade_net_proto_text"
        run = subprocess.run([find_caffe_tool(tool), str(path), str(tmp_path / "up.prototxt")],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (path, run.stderr[-1000:])
    # Caffe's Data layers as written for the variable-size encoded build (crop 224,
    # mean_values, force_color) feed a small net: a few iterations read and crop real datums
    net = load(out / "train_val.prototxt")
    head = [l for l in net.layer[:2]]
    for layer in head:
        layer.data_param.batch_size = 4
    probe = NetParameter(name="probe")
    probe.layer.extend(head)
    text_format.Merge('''
      layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
              pooling_param { pool: AVE global_pooling: true } }
      layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
              inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
    ''', probe)
    (tmp_path / "probe.prototxt").write_text(text_format.MessageToString(probe))
    (tmp_path / "probe_solver.prototxt").write_text(
        f'net: "{tmp_path / "probe.prototxt"}" base_lr: 0.001 lr_policy: "fixed" max_iter: 4 '
        f'display: 1 test_iter: 3 test_interval: 2 solver_mode: CPU snapshot_after_train: false')
    run = subprocess.run([CAFFE, "train", "--solver", str(tmp_path / "probe_solver.prototxt")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Top shape: 4 3 224 224" in run.stderr and "Iteration 4" in run.stderr


@needs_caffe
def test_default_squash_is_byte_identical_to_stock_caffe(tmp_path):
    """Caffe's own convert_imageset and ours, same list and flags: the same (key, value) pairs;
    its compute_image_mean (float32 sums) agrees with our exact mean."""
    from conftest import parse_datum, read_lmdb, train_list
    from imagenet_db.outputs.meanfile import read_mean

    root = EXAMPLES / "sample_imagenet" / "train"
    listfile = tmp_path / "train.txt"
    listfile.write_text("".join(f"{rel} {label}\n" for rel, label in train_list(root)))
    for encoded in ("false", "true"):
        flags = ["--resize_height=256", "--resize_width=256", f"--encoded={encoded}"]
        theirs, ours = tmp_path / f"caffe_{encoded}", tmp_path / f"ours_{encoded}"
        run = subprocess.run([find_caffe_tool("convert_imageset"), *flags, f"{root}/",
                              str(listfile), str(theirs)], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-1000:]
        assert main(["convert", *flags, "--progress=false", f"{root}/", str(listfile),
                     str(ours)]) == 0
        caffe_pairs, our_pairs = read_lmdb(theirs), read_lmdb(ours)
        assert len(caffe_pairs) == 40
        if encoded == "false":  # decode + bilinear resize: OpenCV decides every pixel
            differ = sum(ours_kv != theirs_kv for ours_kv, theirs_kv in zip(our_pairs, caffe_pairs))
            assert our_pairs == caffe_pairs, (
                f"opencv {cv2.__version__}: {differ} of {len(caffe_pairs)} raw datums differ from "
                f"stock Caffe 1.0's convert_imageset; README ('Which OpenCV is Caffe-exact') lists "
                f"the releases known to be exact")
        else:  # same keys, labels and JPEG bytes; ours also fill channels/height/width
            for (k1, v1), (k2, v2) in zip(caffe_pairs, our_pairs):
                theirs_d, ours_d = parse_datum(v1), parse_datum(v2)
                assert k1 == k2 and theirs_d.data == ours_d.data and theirs_d.encoded
                assert theirs_d.label == ours_d.label and (theirs_d.height, theirs_d.width) == (0, 0)
                assert (ours_d.channels, ours_d.height, ours_d.width) == (3, 256, 256)
    run = subprocess.run([find_caffe_tool("compute_image_mean"), str(tmp_path / "caffe_false"),
                          str(tmp_path / "caffe_mean.binaryproto")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1000:]
    assert main(["mean", str(tmp_path / "ours_false"), str(tmp_path / "ours.binaryproto")]) == 0
    theirs = read_mean(str(tmp_path / "caffe_mean.binaryproto"))
    assert theirs.shape == (3, 256, 256)
    assert abs(theirs - read_mean(str(tmp_path / "ours.binaryproto"))).max() < 1e-3
