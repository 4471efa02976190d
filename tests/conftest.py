"""Shared fixtures: the bundled real-photo sample and small generated ImageNet-like trees."""
import os
import shutil
from pathlib import Path

import lmdb
import pytest

from imagenet_db.protos import Datum

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample_imagenet"


@pytest.fixture
def sample_copy(tmp_path):
    """A private copy of the bundled sample ImageNet tree (train/<wnid>/, flat val/ + val.txt)."""
    dest = tmp_path / "imagenet"
    shutil.copytree(SAMPLE, dest)
    return dest


def read_lmdb(path):
    """[(key bytes, value bytes)] of an LMDB in key order, read with plain py-lmdb."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()


def parse_datum(value: bytes) -> Datum:
    datum = Datum()
    datum.ParseFromString(value)
    return datum


def train_list(root):
    """[(relpath, label)] for a train/<wnid>/ tree, wnids in ASCII order = labels."""
    wnids = sorted(os.listdir(root))
    return [(f"{w}/{f}", i) for i, w in enumerate(wnids) for f in sorted(os.listdir(Path(root) / w))]
