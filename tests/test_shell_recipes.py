"""tools/create_imagenet.sh and tools/make_imagenet_mean.sh over the installed commands."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO, parse_datum, read_lmdb, train_list
from imagenet_db.sources.listfile import write_list
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.outputs.meanfile import read_mean

pytestmark = pytest.mark.skipif(shutil.which("convert_imageset") is None,
                                reason="console scripts not installed (pip install .)")


def test_caffe_style_shell_recipes_build_dbs_and_mean(sample_copy, tmp_path):
    data, example = tmp_path / "data", tmp_path / "example"
    data.mkdir()
    example.mkdir()
    train = train_list(sample_copy / "train")
    write_list(str(data / "train.txt"), train)
    val = [(line.split()[0], 0) for line in (sample_copy / "val.txt").read_text().splitlines()]
    write_list(str(data / "val.txt"), val)
    env = {"PATH": os.environ["PATH"], "EXAMPLE": str(example), "DATA": str(data),
           "TRAIN_DATA_ROOT": f"{sample_copy}/train/", "VAL_DATA_ROOT": f"{sample_copy}/val/"}
    for script in ("create_imagenet.sh", "make_imagenet_mean.sh"):
        proc = subprocess.run(["sh", str(REPO / "tools" / script)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    rows = read_lmdb(example / "ilsvrc12_train_lmdb")
    assert len(rows) == len(train)
    assert {parse_datum(v).height for _, v in rows} == {256}
    assert len(read_lmdb(example / "ilsvrc12_val_lmdb")) == len(val)
    mean, _ = compute_db_mean(str(example / "ilsvrc12_train_lmdb"))
    np.testing.assert_array_equal(read_mean(str(data / "imagenet_mean.binaryproto")), mean)


def test_shell_recipe_names_a_missing_root(tmp_path):
    env = {"PATH": os.environ["PATH"], "TRAIN_DATA_ROOT": str(tmp_path / "nope"),
           "VAL_DATA_ROOT": str(tmp_path)}
    proc = subprocess.run(["sh", str(REPO / "tools" / "create_imagenet.sh")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "nope is not a directory" in proc.stderr
