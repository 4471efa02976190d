"""Hostile archives and sources: each test makes the attack with real archives (gzip, tar and zip
files written here, damaged byte by byte) and runs the real commands, in this process or in a
child process.

- a damaged .tar.gz (a byte changed mid-stream, a wrong gzip CRC-32 or ISIZE footer, a stored
  .tar.gz inside Kaggle's zip) is an error naming the archive;
- a zip whose central directory lies (size, offset) or whose member CRC is wrong is an error
  naming archive and member, not a skipped image;
- ImageNet names and numbers are ASCII: Arabic-Indic digits do not make a validation image;
- a word, wnid or file name holding a control character is refused wherever a value
  is written one per line, and what we write is read back split on '\\n' only;
- a zip member that inflates past its declared size is damage, and members over the
  documented limit are refused before inflating;
- a NaN or Inf ILSVRC2012_ID in meta.mat is a one-line error;
- a zip with a duplicate member name is an error.
"""
import gzip
import io
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from conftest import call, files_under, one_line_error, run
from imagenet_db.testing import archives as A
from imagenet_db.testing import clsloc as F

WNIDS = ["n01440764", "n01443537", "n01751748", "n02119789"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """4 classes x 2 train images, 6 val images: the 2012 triple and its extracted tree."""
    root = tmp_path_factory.mktemp("base")
    return F.write_base(root, A.ArchiveSpec(wnids=WNIDS, train_per_class=2, val_count=6, seed=7))


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
def test_a_damaged_targz_is_an_error_naming_it(base, tmp_path, damage):
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


def test_a_targz_damaged_after_it_was_indexed_is_indexed_again_and_refused(base, tmp_path):
    folder = tmp_path / "c15"
    F.write_ilsvrc2015(folder, base)
    archive = folder / "ILSVRC2015_CLS-LOC.tar.gz"
    archive.write_bytes(stored_targz(F.clsloc_members(base)))
    rc, err = call("labels", folder, tmp_path / "first")
    assert rc == 0, err  # whole: indexed (and the index cached)
    flip_inside(archive, val_image(base, 4)[1000:1400])
    assert_refused(folder, tmp_path / "out", str(archive))


def test_a_damaged_targz_stored_in_kaggles_zip_is_an_error(base, tmp_path):
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
def test_a_zip_member_that_does_not_match_its_central_directory_is_an_error(base, tmp_path,
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


def test_a_member_inflating_past_its_declared_size_is_damage_and_memory_stays_low(base,
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


def test_a_member_over_the_limit_is_refused_before_inflating(base, tmp_path, monkeypatch):
    """An honest member declared larger than zipindex.MAX_MEMBER_BYTES (lowered here to 1 MiB,
    the real one being 256 MiB) is not read: the image is skipped and reported."""
    from imagenet_db.sources.archives import zipindex

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


def test_a_zip_with_a_duplicate_member_name_is_an_error(base, tmp_path):
    honest = kaggle_zip(base, tmp_path / "honest")
    (tmp_path / "k").mkdir()
    zip_path = tmp_path / "k" / honest.name
    with pytest.warns(UserWarning, match="Duplicate name"):
        copy_zip(honest, zip_path, append=[(VAL3, val_image(base, 5))])
    assert_refused(tmp_path / "k", tmp_path / "out", f"{zip_path}: member {VAL3} occurs twice")


def test_a_targz_with_a_duplicate_member_name_is_an_error(base, tmp_path):
    folder = tmp_path / "c15"
    F.write_ilsvrc2015(folder, base)
    archive = folder / "ILSVRC2015_CLS-LOC.tar.gz"
    members = F.clsloc_members(base)
    twice = "ILSVRC2015/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG"
    archive.write_bytes(stored_targz(members + [(twice, val_image(base, 5))]))
    assert_refused(folder, tmp_path / "out", f"{archive}: member {twice} occurs twice")


# ============================================ 3. ImageNet names and numbers are ASCII
ARABIC_1 = "ILSVRC2012_val_" + "\u0660" * 7 + "\u0661"  # ILSVRC2012_val_٠٠٠٠٠٠٠١


def test_a_val_name_in_arabic_indic_digits_does_not_replace_image_1(base, tmp_path):
    """Before: \\d and int() read it as image 1, so a tench took image 1's label."""
    F.write_ilsvrc2015(tmp_path / "c15", base, form="tree")
    val = tmp_path / "c15" / "ILSVRC2015" / "Data" / "CLS-LOC" / "val"
    (val / f"{ARABIC_1}.JPEG").write_bytes(val_image(base, 5))
    assert_refused(tmp_path / "c15", tmp_path / "out", f"{ARABIC_1}.JPEG",
                   "not named like ILSVRC2012_val_00000001.JPEG")


def test_a_solution_row_in_arabic_indic_digits_does_not_override_a_label(base, tmp_path):
    """Before: the row's ImageId matched \\d and int() made it image 1, silently replacing
    the label an ASCII duplicate would have been refused for ('listed twice')."""
    other = next(w for w in WNIDS if w != base["val"][0][1])
    F.write_kaggle(tmp_path / "k", base, form="tree", bad_row=f"{ARABIC_1},{other} 1 2 3 4")
    line = assert_refused(tmp_path / "k", tmp_path / "out", "LOC_val_solution.csv:",
                          f"ImageId '{ARABIC_1}' is not like")
    assert "[0-9]" in line, line


def test_ground_truth_and_labels_take_ascii_digits_only(base, tmp_path):
    """A devkit ground-truth line and a val.txt label in Arabic-Indic digits are refused,
    naming file and line, as '+7' and '1_000' are."""
    from imagenet_db.errors import ImagenetDbError
    from imagenet_db.sources import clsloc, devkit, labels

    with pytest.raises(ImagenetDbError, match=r"truth.txt:2: expected an ILSVRC2012_ID"):
        devkit.parse_ground_truth("449\n\u0664\u0664\u0669\n", "truth.txt", {449})
    with pytest.raises(ImagenetDbError, match=r"blacklist.txt:1: expected an image number"):
        clsloc.parse_number_list("\u0661\n".encode(), "blacklist.txt")
    with pytest.raises(ImagenetDbError, match=r"val.txt:3: '\u0661' is neither a wnid"):
        labels.parse_label_token("\u0661", {"n01440764": 0, "n01443537": 1}, "val.txt:3")
    assert not labels.is_wnid("n0144076\u0664") and not labels.is_wnid("n01440764\n")


# ========================= 4, 11. one value per line: control characters are refused


def replace_in_targz(path: Path, suffix: str, data: bytes) -> None:
    """Rewrite the .tar.gz at ``path`` with the member ending in ``suffix`` holding ``data``."""
    import tarfile

    with tarfile.open(path) as tar:
        members = [(m.name, data if m.name.endswith(suffix) else tar.extractfile(m).read())
                   for m in tar.getmembers() if m.isfile()]
    assert any(name.endswith(suffix) for name, _ in members)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=F.MTIME) as f:
        f.write(F.A._tar_with_dirs(members))
    path.write_bytes(buf.getvalue())


def meta_mat_with(base, column: str, row: int, value) -> bytes:
    """The 2012 fixture's meta.mat with synsets(row).column set to ``value``."""
    import scipy.io

    counts = {w: 2 for w in WNIDS}
    mat = scipy.io.loadmat(io.BytesIO(F.A.meta_mat_bytes(base["classes"], counts)))
    table = mat["synsets"]
    table[row - 1, 0][column] = value
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table}, format="5")
    return buf.getvalue()


def archives_with_meta(base, folder: Path, meta: bytes) -> Path:
    """The 2012 archive triple in ``folder`` with the devkit's meta.mat replaced."""
    shutil.copytree(Path(base["paths"]["devkit"]).parent, folder)
    replace_in_targz(folder / "ILSVRC2012_devkit_t12.tar.gz", "data/meta.mat", meta)
    return folder


@pytest.mark.parametrize("word", ["tench,\nTinca tinca", "tench\x0cTinca", "tench\u2028x",
                                  "tench\x1fTinca"])
def test_a_word_that_is_not_one_line_is_refused_in_meta_mat(base, tmp_path, word):
    """Before: synset_words.txt got one line more than synsets.txt and every later class
    was captioned with its neighbour's words."""
    source = archives_with_meta(base, tmp_path / "arch", meta_mat_with(base, "words", 1, word))
    line = assert_refused(source, tmp_path / "out", "data/meta.mat: synsets(1).words")
    assert "which a file of one value per line cannot hold" in line, line


def test_words_with_control_characters_are_refused_in_every_class_file(base, tmp_path):
    """The 2015 devkit's meta_clsloc.mat and map_clsloc.txt, Kaggle's LOC_synset_mapping.txt
    and a tree's synset_words.txt: each names file and line (or entry)."""
    classes = [(i, w, t + "\x0b" if w == WNIDS[1] else t) for i, w, t in base["classes"]]
    F.write_ilsvrc2015(tmp_path / "c15", base)
    kit = tmp_path / "c15" / "ILSVRC2015_devkit.tar.gz"
    replace_in_targz(kit, "meta_clsloc.mat", F.meta_clsloc_2015(classes))
    assert_refused(tmp_path / "c15", tmp_path / "out15", "meta_clsloc.mat: synsets(3).name",
                   "'goldfish, Carassius auratus\\x0b'")  # entry 3: kit fox is ID 1
    replace_in_targz(kit, "map_clsloc.txt", b"n01440764 449 tench\x1c\n")
    replace_in_targz(kit, "meta_clsloc.mat", F.meta_clsloc_2015(base["classes"]))
    assert_refused(tmp_path / "c15", tmp_path / "outmap", "map_clsloc.txt:1")
    F.write_kaggle(tmp_path / "k", base, form="tree")
    mapping = tmp_path / "k" / "LOC_synset_mapping.txt"
    mapping.write_bytes(mapping.read_bytes().replace(b"goldfish", b"gold\xc2\x85fish"))
    assert_refused(tmp_path / "k", tmp_path / "outk", "LOC_synset_mapping.txt:2")
    tree = tmp_path / "tree"
    shutil.copytree(base["tree"], tree)
    words = tree / "synset_words.txt"
    words.write_bytes(words.read_bytes().replace(b"goldfish", b"gold\rfish"))
    assert_refused(tree, tmp_path / "outt", f"{words}:2")


def test_the_writers_refuse_what_is_not_one_line():
    from imagenet_db.errors import ImagenetDbError
    from imagenet_db.sources import labels

    with pytest.raises(ImagenetDbError, match=r"synset_words.txt: n01440764: .* a line break"):
        labels.synset_words_text(["n01440764"], {"n01440764": "tench\nTinca"})
    assert labels.synset_words_text(["n01440764"], {"n01440764": "tench\tx"}) == \
        "n01440764 tench\tx\n"  # a tab is not a line end


@pytest.mark.parametrize("char", ["\x0c", "\x0b", "\x1e", "\x85", "\u2029", "\x1b"])
def test_a_file_name_that_is_not_one_line_is_refused_before_any_build(base, tmp_path, char):
    """Before: a name with \\x0c passed the sources (they refused only \\n, \\r, NUL) and a
    killed --format folder build could not resume (its log was read with splitlines)."""
    tree = tmp_path / "tree"
    shutil.copytree(base["tree"], tree)
    name = f"{WNIDS[0]}_bad{char}name.JPEG"
    (tree / "train" / WNIDS[0] / name).write_bytes(val_image(base, 1))
    line = assert_refused(tree, tmp_path / "out", f"train/{WNIDS[0]}: the name")
    assert f"(U+{ord(char):04X})" in line and "rename it" in line, line
    rc, err = call("create", tree, tmp_path / "folder", "--format", "folder", "--no-progress")
    assert rc == 1 and f"(U+{ord(char):04X})" in one_line_error(err), err


def test_a_list_file_path_that_is_not_one_line_is_refused(tmp_path):
    from imagenet_db.errors import ListFileError
    from imagenet_db.sources.listfile import read_list

    listing = tmp_path / "train.txt"
    listing.write_bytes("a.JPEG 0\r\nb\u2028c.JPEG 1\r\n".encode())
    with pytest.raises(ListFileError, match=r"train.txt:2: the path 'b\\u2028c.JPEG' holds a "
                                            r"control character \(U\+2028\)"):
        read_list(str(listing))
    listing.write_bytes(b"a.JPEG 0\r\nb.JPEG 1\r\n")  # CRLF stays accepted
    assert read_list(str(listing)) == [("a.JPEG", 0), ("b.JPEG", 1)]


# =================================== 11. NaN or Inf ILSVRC2012_ID: a one-line error


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_inf_id_in_meta_mat_is_a_one_line_error(base, tmp_path, value):
    """Before: int(nan) raised ValueError and int(inf) OverflowError, as tracebacks."""
    source = archives_with_meta(base, tmp_path / "arch",
                                meta_mat_with(base, "ILSVRC2012_ID", 2, value))
    line = assert_refused(source, tmp_path / "out", "data/meta.mat: synsets(2).ILSVRC2012_ID",
                          child=value == float("inf"))
    assert "expected an integer" in line, line


def flip_footer(path: Path, at: int = -8) -> None:
    """Change one bit of a .tar.gz's gzip footer (-8: CRC-32, -4: ISIZE)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [-8, -4])
def test_a_devkit_targz_with_a_wrong_gzip_footer_is_an_error(base, tmp_path, at):
    """The devkits are read with tarfile, which stops at the tar's end marker, before the
    gzip footer: now read to the end, so the CRC-32 and length are checked."""
    folder = tmp_path / "arch"
    shutil.copytree(Path(base["paths"]["devkit"]).parent, folder)
    flip_footer(folder / "ILSVRC2012_devkit_t12.tar.gz", at)
    line = assert_refused(folder, tmp_path / "out", "ILSVRC2012_devkit_t12.tar.gz: cannot read "
                                                    "the devkit archive")
    assert "CRC check failed" in line or "Incorrect length" in line, line
    F.write_ilsvrc2015(tmp_path / "c15", base)
    flip_footer(tmp_path / "c15" / "ILSVRC2015_devkit.tar.gz", at)
    assert_refused(tmp_path / "c15", tmp_path / "out15", "ILSVRC2015_devkit.tar.gz: cannot read "
                                                         "the devkit archive")
