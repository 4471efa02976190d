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


# ============================== 2, 9, 14. a damaged zip is an error naming archive and member
VAL3 = "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG"
CENTRAL = struct.Struct("<4s6H3L5H2L")  # a central directory header, 46 bytes


def central_entry(zip_path: Path, name: str) -> int:
    """Byte offset of ``name``'s central directory header in the zip."""
    data = zip_path.read_bytes()
    with zipfile.ZipFile(zip_path) as z:
        start = z.start_dir
    at = data.find(b"PK\x01\x02", start)
    while at >= 0:
        fields = CENTRAL.unpack_from(data, at)
        if data[at + 46:at + 46 + fields[10]] == name.encode():
            return at
        at = data.find(b"PK\x01\x02", at + 46)
    raise AssertionError(f"{name} not in the central directory")


def patch_central(zip_path: Path, name: str, field: str, change) -> None:
    """Rewrite one field of ``name``'s central directory entry: change(old value) -> new."""
    offsets = {"crc": 16, "compressed_size": 20, "size": 24, "header_offset": 42}
    at = central_entry(zip_path, name) + offsets[field]
    data = bytearray(zip_path.read_bytes())
    (old,) = struct.unpack_from("<L", data, at)
    struct.pack_into("<L", data, at, change(old))
    zip_path.write_bytes(bytes(data))


def kaggle_zip(base, folder: Path) -> Path:
    """Kaggle's zip (every member deflated) in ``folder``."""
    return Path(F.write_kaggle(folder, base, form="zip"))


def assert_build_stops(source: Path, out: Path, *names: str) -> str:
    """``create`` and ``extract`` on SOURCE end with one error line naming ``names``: no
    database, no "all present"."""
    for command, extra in (("create", ("--no-progress",)), ("extract", ())):
        rc, err = call(command, source, out / command, *extra)
        assert rc == 1, err
        line = one_line_error(err)
        assert "all present" not in err and "skipped 1" not in err, err
        for name in names:
            assert name in line, line
    assert not (out / "create" / "ilsvrc12_val_lmdb").exists()  # the split holding the member
    return line


@pytest.mark.parametrize("lie", ["crc", "size", "size smaller", "compressed_size",
                                 "header_offset"])
def test_2_a_zip_member_that_does_not_match_its_central_directory_is_an_error(base, tmp_path,
                                                                             lie):
    zip_path = kaggle_zip(base, tmp_path / "k")
    changes = {"crc": lambda v: v ^ 1, "size": lambda v: v + 1, "size smaller": lambda v: v - 1,
               "compressed_size": lambda v: v - 7,
               "header_offset": lambda v: central_offset(zip_path, VAL3.replace("03", "04"))}
    patch_central(zip_path, VAL3, lie.split()[0], changes[lie])
    line = assert_build_stops(tmp_path / "k", tmp_path / "out", f"{zip_path}: member {VAL3}")
    assert "damaged zip" in line and "download or copy the zip again" in line, line


def central_offset(zip_path: Path, name: str) -> int:
    """The local header offset the central directory gives for ``name``."""
    with zipfile.ZipFile(zip_path) as z:
        return z.getinfo(name).header_offset


def copy_zip(src: Path, dst: Path, replace=None, append=()) -> None:
    """Copy the zip ``src`` to ``dst``, member by member (same names, dates, methods), with
    replace {name: write(zipfile, ZipInfo)} writing those members instead, then ``append``
    [(name, bytes)] added at the end (deflated)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", compresslevel=1) as new:
        for info in old.infolist():
            if info.filename in (replace or {}):
                replace[info.filename](new, info)
            else:
                new.writestr(info, old.read(info))
        for name, payload in append:
            new.writestr(zipfile.ZipInfo(name, date_time=(2019, 10, 10, 0, 0, 0)), payload,
                         zipfile.ZIP_DEFLATED)


def zeros_member(size: int):
    """A replace= writer: ``size`` zero bytes, deflated as they are streamed."""
    def write(z, info):
        with z.open(info, "w", force_zip64=False) as f:
            for _ in range(size // (4 << 20)):
                f.write(bytes(4 << 20))
            f.write(bytes(size % (4 << 20)))
    return write


def test_9_a_member_inflating_past_its_declared_size_is_damage_and_memory_stays_low(base,
                                                                                   tmp_path):
    """1 GiB of zeros declared as 1,000 bytes (the issue's attack): before, zlib inflated it
    all (3.2 GB peak); now inflation stops at the declared size + 1 byte."""
    honest = kaggle_zip(base, tmp_path / "honest")
    (tmp_path / "k").mkdir()
    zip_path = tmp_path / "k" / honest.name
    copy_zip(honest, zip_path, {VAL3: zeros_member(1 << 30)})
    patch_central(zip_path, VAL3, "size", lambda v: 1000)
    rc, err = run("create", tmp_path / "k", tmp_path / "out", "--no-progress", REPORT_MAXRSS=1)
    assert rc == 1, err
    line = one_line_error(err)
    assert f"{zip_path}: member {VAL3}: it inflates to more than the 1,000 bytes" in line, line
    peak_kib = int(err.rsplit("MAXRSS ", 1)[1].split()[0])
    assert peak_kib < 512 << 10, f"peak RSS {peak_kib} KiB"
    assert not (tmp_path / "out" / "ilsvrc12_val_lmdb").exists()


def test_9_a_member_over_the_limit_is_refused_before_inflating(base, tmp_path, monkeypatch):
    """An honest member declared larger than zipindex.MAX_MEMBER_BYTES (lowered here to 1 MiB,
    the real one being 256 MiB) is not read: the image is skipped and reported."""
    from imagenet_db.sources import zipindex

    monkeypatch.setattr(zipindex, "MAX_MEMBER_BYTES", 1 << 20)
    honest = kaggle_zip(base, tmp_path / "honest")
    (tmp_path / "k").mkdir()
    copy_zip(honest, tmp_path / "k" / honest.name, {VAL3: zeros_member((1 << 20) + 1)})
    rc, err = call("create", tmp_path / "k", tmp_path / "out", "--no-progress")
    assert rc == 0, err
    assert "ilsvrc12_val_lmdb: wrote 5 datums, skipped 1" in err, err
    report = (tmp_path / "out" / "ilsvrc12_val_lmdb.skipped.tsv").read_text()
    assert "ILSVRC2012_val_00000003.JPEG\t" in report, report
    assert "a zip member of 1,048,577 bytes, over the limit of 1,048,576 bytes" in report, report


def test_14_a_zip_with_a_duplicate_member_name_is_an_error(base, tmp_path):
    honest = kaggle_zip(base, tmp_path / "honest")
    (tmp_path / "k").mkdir()
    zip_path = tmp_path / "k" / honest.name
    with pytest.warns(UserWarning, match="Duplicate name"):
        copy_zip(honest, zip_path, append=[(VAL3, val_image(base, 5))])
    assert_refused(tmp_path / "k", tmp_path / "out", f"{zip_path}: member {VAL3} occurs twice")


def test_14_a_targz_with_a_duplicate_member_name_is_an_error(base, tmp_path):
    folder = tmp_path / "c15"
    F.write_ilsvrc2015(folder, base)
    archive = folder / "ILSVRC2015_CLS-LOC.tar.gz"
    members = F.clsloc_members(base)
    twice = "ILSVRC2015/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG"
    archive.write_bytes(stored_targz(members + [(twice, val_image(base, 5))]))
    assert_refused(folder, tmp_path / "out", f"{archive}: member {twice} occurs twice")
