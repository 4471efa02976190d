"""Issue 24 (reliability, round 3), the archive and source items: each test makes the attack with
real archives (gzip, tar and zip files written here, damaged byte by byte) and runs the real
commands, in this process or in a child process.

1. a damaged .tar.gz (a byte changed mid-stream, a wrong gzip CRC-32 or ISIZE footer, a stored
   .tar.gz inside Kaggle's zip) is an error naming the archive;
2. a zip whose central directory lies (size, offset) or whose member CRC is wrong is an error
   naming archive and member, not a skipped image;
3. ImageNet names and numbers are ASCII: Arabic-Indic digits do not make a validation image;
4. / 11. a word, wnid or file name holding a control character is refused wherever a value
   is written one per line, and what we write is read back split on '\\n' only;
9. a zip member that inflates past its declared size is damage, and members over the
   documented limit are refused before inflating;
11. a NaN or Inf ILSVRC2012_ID in meta.mat is a one-line error;
14. a zip with a duplicate member name is an error.
"""
import gzip
import io
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from imagenet_db.testing import clsloc as F
from test_reliability_round2 import call, files_under, one_line_error, run

WNIDS = ["n01440764", "n01443537", "n01751748", "n02119789"]


@pytest.fixture(autouse=True)
def private_index_cache(tmp_path_factory, monkeypatch):
    """Archive indexes are cached per user; keep these tests' cache apart."""
    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE",
                       str(tmp_path_factory.getbasetemp() / "round3-index-cache"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """4 classes x 2 train images, 6 val images: the 2012 triple and its extracted tree."""
    root = tmp_path_factory.mktemp("base")
    return F.write_base(root, wnids=WNIDS, train_per_class=2, val_count=6, seed=7)


def val_image(base, number: int) -> bytes:
    """The bytes of ILSVRC2012_val_<number>.JPEG (every distribution holds the same)."""
    return (Path(base["tree"]) / "val" / f"ILSVRC2012_val_{number:08d}.JPEG").read_bytes()


def flip_inside(path: Path, needle: bytes) -> None:
    """Change one byte of ``path`` in the middle of where ``needle`` is stored (uncompressed)."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) < 0, "the bytes to damage are not stored once"
    data[at + len(needle) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def assert_refused(source: Path, out: Path, *names: str, child: bool = False) -> str:
    """``labels`` and ``create`` on SOURCE both end with one error line naming ``names``, and
    publish nothing (no aux file, no database at its final name)."""
    for command, extra in (("labels", ()), ("create", ("--no-progress",))):
        target = out / command
        rc, err = (run if child else call)(command, source, target, *extra)
        assert rc == 1, err
        line = one_line_error(err)
        for name in names:
            assert name in line, line
        published = [p for p in files_under(target)
                     if p.endswith(("_lmdb", ".txt", ".binaryproto"))]
        assert not published, published
    return line


# ====================================================== 1. a damaged .tar.gz is an error


def stored_targz(members) -> bytes:
    """A .tar.gz whose deflate blocks are stored (level 0): a byte changed in it decodes
    without a deflate error, so only the gzip CRC-32 can tell."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=F.MTIME, compresslevel=0) as f:
        f.write(F.A._tar_with_dirs(members))
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["byte mid-stream", "footer CRC-32", "footer ISIZE",
                                    "byte mid-stream, deflated"])
def test_1_a_damaged_targz_is_an_error_naming_it(base, tmp_path, damage):
    folder = tmp_path / "c15"
    F.write_ilsvrc2015(folder, base)
    archive = folder / "ILSVRC2015_CLS-LOC.tar.gz"
    if damage == "byte mid-stream":
        archive.write_bytes(stored_targz(F.clsloc_members(base)))
        flip_inside(archive, val_image(base, 4)[1000:1400])
    elif damage == "byte mid-stream, deflated":
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0x01
        archive.write_bytes(bytes(data))
    else:
        data = bytearray(archive.read_bytes())
        data[-8 if damage == "footer CRC-32" else -4] ^= 0x01
        archive.write_bytes(bytes(data))
    line = assert_refused(folder, tmp_path / "out", str(archive), child=damage == "footer ISIZE")
    assert "damaged" in line and "download or copy it again" in line, line


def test_1_a_targz_damaged_after_it_was_indexed_is_indexed_again_and_refused(base, tmp_path):
    folder = tmp_path / "c15"
    F.write_ilsvrc2015(folder, base)
    archive = folder / "ILSVRC2015_CLS-LOC.tar.gz"
    archive.write_bytes(stored_targz(F.clsloc_members(base)))
    rc, err = call("labels", folder, tmp_path / "first")
    assert rc == 0, err  # whole: indexed (and the index cached)
    flip_inside(archive, val_image(base, 4)[1000:1400])
    assert_refused(folder, tmp_path / "out", str(archive))


def test_1_a_damaged_targz_stored_in_kaggles_zip_is_an_error(base, tmp_path):
    folder = tmp_path / "k"
    folder.mkdir()
    zip_path = folder / "imagenet-object-localization-challenge.zip"
    with zipfile.ZipFile(zip_path, "w") as z:  # as write_kaggle's 'zip-targz', level 0 inside
        for name, payload in F.kaggle_files(base):
            z.writestr(name, payload, zipfile.ZIP_DEFLATED)
        z.writestr("imagenet_object_localization_patched2019.tar.gz",
                   stored_targz(F.clsloc_members(base, top="ILSVRC")), zipfile.ZIP_STORED)
    rc, err = call("labels", folder, tmp_path / "whole")
    assert rc == 0, err
    flip_inside(zip_path, val_image(base, 2)[1000:1400])
    line = assert_refused(folder, tmp_path / "out", f"{zip_path}:imagenet_object_localization_"
                                                    f"patched2019.tar.gz")
    assert "damaged" in line, line
