"""Hostile or odd input is a one-line error naming the file and line (or member), or a
reported skip, never a traceback: NUL bytes and non-UTF-8 names, out-of-range numbers, keys
over LMDB's limit, non-ASCII digits in labels, half a JPEG, sparse tar members, odd member names,
empty synset folders, an empty devkit, a damaged tar-index cache, a subset archive; every kind
of broken image file (truncated, empty, text, corrupt markers, over --max_pixels, missing, a
folder) has its reported outcome; list-file and database-input errors name the file and line.

Everything runs through the command line (``imagenet-db SUBCOMMAND``, tests/conftest.py: ``call``
in this process, ``run``/``start`` as a child process) on real files."""
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import (WNIDS, call, convert_args, db_items, files_under, flip,
                      one_line_error, skip_reasons, write_small_archives)
from imagenet_db.cli import compute_image_mean_main, convert_imageset_main
from imagenet_db.imaging.headers import check_image_bytes, jpeg_structure
from imagenet_db.protos import Datum
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.testing import photos



def test_nul_byte_in_a_list_path_is_an_error_naming_the_line(data, tmp_path):
    listfile = tmp_path / "list.txt"
    listfile.write_bytes(b"img_0001.jpg 1\nimg\x00_0002.jpg 2\n")
    rc, err = call(*["convert", data / "images", listfile, tmp_path / "db"])
    assert rc == 1, err
    assert f"{listfile}:2:" in one_line_error(err)
    assert not (tmp_path / "db.partial").exists() and not (tmp_path / "db").exists()


def test_non_utf8_file_name_in_a_tree_is_a_one_line_error(data, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(data / "tree", tree)
    bad = os.path.join(os.fsencode(tree / "train" / WNIDS[1]), b"caf\xe9.JPEG")
    shutil.copy(data / "images" / "img_0000.jpg", bad)
    for command in ("labels", "create"):
        rc, err = call(command, tree, tmp_path / command)
        assert rc == 1, err
        line = one_line_error(err)
        assert WNIDS[1] in line and "UTF-8" in line, line


def test_a_damaged_tar_index_cache_is_ignored_and_rebuilt(tmp_path):
    arch = tmp_path / "arch"
    write_small_archives(arch)
    cache = tmp_path / "cache"
    rc, err = call("labels", arch, tmp_path / "first", IMAGENET_DB_TAR_INDEX_CACHE=cache)
    assert rc == 0, err
    cached = sorted(cache.glob("*"))
    assert len(cached) == 2
    for path in cached:
        flip(path, count=16)
    for attempt in ("second", "third"):
        rc, err = call("labels", arch, tmp_path / attempt, IMAGENET_DB_TAR_INDEX_CACHE=cache)
        assert rc == 0 and "Traceback" not in err, err
        assert files_under(tmp_path / attempt) == files_under(tmp_path / "first")
    for path in sorted(cache.glob("*")):
        gzip.decompress(path.read_bytes())  # rebuilt whole


@pytest.mark.parametrize("flag", ["--seed=18446744073709551616", "--seed=9223372036854775808",
                                  "--max_pixels=-1"])
def test_out_of_range_numbers_are_usage_errors(data, tmp_path, flag):
    rc, err = call(*convert_args(data, tmp_path / "db", "--shuffle", flag))
    assert rc == 2 and "Traceback" not in err, err
    assert flag.split("=")[0] in err.splitlines()[-1], err
    assert not (tmp_path / "db.partial").exists()


def test_a_key_over_lmdbs_limit_is_refused_before_the_first_image(data, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(data / "images", root)
    deep = Path(*[f"{'d' * 100}{i}" for i in range(5)])  # a 500-character relative path
    (root / deep).mkdir(parents=True)
    shutil.copy(root / "img_0001.jpg", root / deep / "photo.jpg")
    listfile = tmp_path / "list.txt"
    listfile.write_text(f"img_0000.jpg 0\nimg_0001.jpg 1\n{deep}/photo.jpg 2\n")
    rc, err = call("convert", root, listfile, tmp_path / "db")
    assert rc == 1, err
    line = one_line_error(err)
    assert f"{listfile}:3:" in line and "511" in line, line
    assert not (tmp_path / "db.partial").exists()  # before any work
    rc, err = call("convert", root, listfile, tmp_path / "level", "--backend=leveldb")
    assert rc == 0, err  # LevelDB has no key limit


@pytest.mark.parametrize("label", ["1_000", "+7", "\u0663", "0x1f"])
def test_labels_are_ascii_digits_only(data, tmp_path, label):
    listfile = tmp_path / "list.txt"
    listfile.write_text(f"img_0000.jpg 0\nimg_0001.jpg {label}\n", encoding="utf-8")
    rc, err = call(*["convert", data / "images", listfile, tmp_path / "db"])
    assert rc == 1, err
    assert f"{listfile}:2:" in one_line_error(err)


def _half_jpeg_with_eoi(jpeg):
    sos = jpeg.find(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")
    return jpeg[:(start + len(jpeg)) // 2] + b"\xff\xd9"


def test_half_a_jpeg_with_an_end_marker_is_skipped_and_grey_photos_are_kept(tmp_path):
    photo = cv2.resize(cv2.imread(str(photos.PHOTOS_DIR / "coffee.png")), (320, 240))
    whole = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    grey_bottom = photo.copy()
    grey_bottom[160:] = 128  # a real image may end in flat mid-grey: it must be kept
    folder = tmp_path / "img"
    folder.mkdir()
    files = {"half.jpg": _half_jpeg_with_eoi(whole), "whole.jpg": whole,
             "grey_bottom.jpg": cv2.imencode(".jpg", grey_bottom,
                                             [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()}
    assert cv2.imdecode(np.frombuffer(files["half.jpg"], np.uint8), cv2.IMREAD_COLOR) is not None
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (tmp_path / "list.txt").write_text("half.jpg 0\nwhole.jpg 1\ngrey_bottom.jpg 2\n")
    rc, err = call("convert", folder, tmp_path / "list.txt", tmp_path / "db")
    assert rc == 0, err
    assert "truncated" in skip_reasons(tmp_path / "db").get("half.jpg", ""), err
    assert len(db_items(tmp_path / "db")) == 2


def _retar(path, transform):
    """Rewrite a tar, passing each (TarInfo, bytes) through ``transform``."""
    with tarfile.open(path) as tar:
        members = [(info, tar.extractfile(info).read() if info.isfile() else None)
                   for info in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info, data = transform(info, data)
            tar.addfile(info, None if data is None else __import__("io").BytesIO(data))


def test_sparse_tar_members_are_refused(tmp_path):
    arch = tmp_path / "arch"
    spec = ArchiveSpec(WNIDS[:3], train_per_class=2, val_count=12, image_size=(256, 192))
    fixture_archives.write_archives(arch, spec)  # the sparse member is not last
    val_tar = arch / "ILSVRC2012_img_val.tar"
    files = tmp_path / "val_files"
    with tarfile.open(val_tar) as tar:
        tar.extractall(files, filter="data")
        names = tar.getnames()
    first = files / names[0]
    jpeg = first.read_bytes()
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + bytes(65533)  # 64 KB of zeros
    padded = jpeg[:2] + comment + jpeg[2:]
    with open(first, "wb") as f:  # written with a hole, so GNU tar stores it sparse
        f.write(padded[:6])
        f.seek(len(padded) - len(jpeg) + 2 - 8)
        f.write(padded[len(padded) - len(jpeg) + 2 - 8:])
    assert first.read_bytes() == padded
    subprocess.run(["tar", "--sparse", "--format=gnu", "-C", str(files), "-cf", str(val_tar),
                    *names], check=True)
    with tarfile.open(val_tar) as tar:
        assert tar.getmember(names[0]).issparse()
    for command in ("extract", "labels"):  # refused (not read as if contiguous), naming it
        rc, err = call(command, arch, tmp_path / command)
        assert rc == 1, err
        line = one_line_error(err).replace(str(tmp_path), "DIR")
        assert names[0] in line and "sparse" in line, line


def test_odd_member_names_in_archives(tmp_path):
    arch = tmp_path / "arch"
    write_small_archives(arch)
    train_tar = arch / "ILSVRC2012_img_train.tar"
    original = train_tar.read_bytes()

    def add_member(name):
        def transform(info, data):
            if info.name == f"{WNIDS[0]}.tar":
                inner = tmp_path / "inner.tar"
                inner.write_bytes(data)
                with tarfile.open(inner, "a", format=tarfile.GNU_FORMAT) as tar:
                    extra = tarfile.TarInfo(name)
                    extra.size = 5
                    tar.addfile(extra, __import__("io").BytesIO(b"hello"))
                data = inner.read_bytes()
                info.size = len(data)
            return info, data
        train_tar.write_bytes(original)
        _retar(train_tar, transform)

    # a non-image member: extracted, and the count check passes (every run)
    add_member("README.txt")
    for _ in range(2):
        rc, err = call("extract", arch, tmp_path / "dest")
        assert rc == 0, err
    # a member name with a newline cannot go into train.txt: refused, naming it
    add_member(f"{WNIDS[0]}_99\n.JPEG")
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 1, err
    line = one_line_error(err)
    assert "ILSVRC2012_img_train.tar" in line and "\\n" in line, line
    assert not (tmp_path / "aux" / "train.txt").exists()


def test_an_empty_synset_folder_is_refused_unless_allowed(data, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(data / "tree", tree)
    (tree / "train" / "n01443000").mkdir()  # sorts second: would shift labels 1..5
    rc, err = call("labels", tree, tmp_path / "aux")
    assert rc == 1 and "n01443000" in one_line_error(err), err
    assert not (tmp_path / "aux").exists() or not os.listdir(tmp_path / "aux")
    rc, err = call("labels", tree, tmp_path / "aux", "--allow_empty_classes")
    assert rc == 0, err
    assert (tmp_path / "aux" / "synsets.txt").read_text().split()[1] == "n01443000"


def test_an_empty_devkit_is_a_one_line_error(tmp_path):
    arch = tmp_path / "arch"
    write_small_archives(arch)
    (arch / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"")
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "ILSVRC2012_devkit_t12.tar.gz" in one_line_error(err)


def test_a_subset_archive_notes_its_counts_once(tmp_path):
    arch = tmp_path / "arch"
    wnids = [wnid for _, wnid, _ in fixture_archives.ilsvrc2012_classes()[:100]]
    info = fixture_archives.write_archives(arch, ArchiveSpec(wnids, train_per_class=1, val_count=4,
                                                             image_size=(16, 12),
                                                             odd_members=False))
    assert len(info["classes"]) == 100
    devkit = arch / "ILSVRC2012_devkit_t12.tar.gz"  # meta.mat as the real devkit's: 1300 each
    meta = fixture_archives.meta_mat_bytes(info["classes"],
                                           {wnid: 1300 for _, wnid, _ in info["classes"]})
    with tarfile.open(devkit) as tar:
        members = [(i, tar.extractfile(i).read() if i.isfile() else None)
                   for i in tar.getmembers()]
    with tarfile.open(devkit, "w:gz") as tar:
        for i, content in members:
            if i.name.endswith("meta.mat"):
                content, i.size = meta, len(meta)
            tar.addfile(i, None if content is None else __import__("io").BytesIO(content))
    rc, err = call("labels", arch, tmp_path / "aux")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert 1 <= len(notes) <= 3, f"{len(notes)} note lines: {notes[:3]}"


def _write_bad_image_set(folder):
    """Every kind of odd or broken image file; returns the list lines (relpath label)."""
    odd = photos.odd_images()
    folder.mkdir()
    files = dict(odd)
    # a real 4000x3000 photo (12 megapixels) and a header claiming 30000x30000
    big = cv2.resize(cv2.imread(str(photos.PHOTOS_DIR / "astronaut.png")), (4000, 3000))
    files["big_12mp"] = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes()
    bomb = bytearray(odd["one_pixel"])
    sof = bomb.find(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    files["bomb_header"] = bytes(bomb)
    lines = []
    for label, (name, data) in enumerate(sorted(files.items())):
        (folder / f"{name}.JPEG").write_bytes(data)
        lines.append(f"{name}.JPEG {label}")
    lines.append(f"missing.JPEG {len(files)}")
    (folder / "a_directory.JPEG").mkdir()
    lines.append(f"a_directory.JPEG {len(files) + 1}")
    return lines


def test_every_bad_image_has_a_clear_outcome(tmp_path, capsys):
    lines = _write_bad_image_set(tmp_path / "img")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    db = tmp_path / "db"
    rc = convert_imageset_main([str(tmp_path / "img"), str(tmp_path / "list.txt"), str(db),
                                "--max_pixels=10000000"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    report = dict(line.split("\t") for line in
                  Path(f"{db}.skipped.tsv").read_text().splitlines())
    assert set(report) == {"truncated.JPEG", "zero_bytes.JPEG", "text.JPEG",
                           "corrupt_markers.JPEG", "big_12mp.JPEG", "bomb_header.JPEG",
                           "missing.JPEG", "a_directory.JPEG"}
    assert report["truncated.JPEG"].startswith("truncated JPEG")
    assert report["zero_bytes.JPEG"] == "empty file (0 bytes)"
    assert report["text.JPEG"].startswith("not an image file")
    assert report["corrupt_markers.JPEG"].startswith("corrupt JPEG")
    assert "4000x3000 = 12000000 pixels" in report["big_12mp.JPEG"]
    assert "30000x30000" in report["bomb_header.JPEG"]
    assert "No such file" in report["missing.JPEG"]
    assert "Is a directory" in report["a_directory.JPEG"]
    stored = {k.decode().split("_", 1)[1]: Datum.FromString(v) for k, v in db_items(db)}
    assert set(stored) == {"cmyk.JPEG", "exif_rotated.JPEG", "grayscale.JPEG", "one_pixel.JPEG",
                           "png_named_jpeg.JPEG", "progressive.JPEG"}
    labels = {line.split()[0]: int(line.split()[1]) for line in lines}
    for name, datum in stored.items():
        assert datum.label == labels[name] and datum.channels == 3  # grayscale/CMYK -> BGR
    # EXIF orientation 6 is applied, as Caffe's cv::imread does: 320x240 is stored 240 wide
    assert (stored["exif_rotated.JPEG"].height, stored["exif_rotated.JPEG"].width) == (320, 240)
    assert (stored["one_pixel.JPEG"].height, stored["one_pixel.JPEG"].width) == (1, 1)
    manifest = json.loads((db / "imagenet_db.json").read_text())
    assert (manifest["entries"], manifest["skipped"]) == (6, 8)
    # --strict turns the first skip into a failure naming the file
    rc = convert_imageset_main([str(tmp_path / "img"), str(tmp_path / "list.txt"),
                                str(tmp_path / "strict"), "--strict"])
    err = capsys.readouterr().err
    assert rc == 1 and "--strict" in err and "Traceback" not in err
    assert "big_12mp.JPEG" in err or "bomb_header.JPEG" in err  # the first skip in list order


def test_structure_check_accepts_valid_jpegs_from_many_encoders(tmp_path):
    from PIL import Image

    photo = cv2.imread(str(photos.PHOTOS_DIR / "chelsea.png"))
    variants = [cv2.imencode(".jpg", photo, params)[1].tobytes() for params in (
        [], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 3],
        [cv2.IMWRITE_JPEG_RST_INTERVAL, 1, cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
        [cv2.IMWRITE_JPEG_OPTIMIZE, 1, cv2.IMWRITE_JPEG_QUALITY, 20])]
    for kwargs in ({}, {"progressive": True}, {"optimize": True}, {"subsampling": 0},
                   {"quality": 5}, {"exif": Image.Exif().tobytes(), "icc_profile": b"x" * 70000}):
        buf = io.BytesIO()
        Image.fromarray(photo[:, :, ::-1]).save(buf, "JPEG", **kwargs)
        variants.append(buf.getvalue())
    variants += [p.read_bytes() for p in photos.PHOTOS_DIR.glob("*.jpg")]
    odd = photos.odd_images()
    variants += [v for k, v in odd.items() if k not in ("truncated", "corrupt_markers", "text")]
    for data in variants:
        assert check_image_bytes(data) is None, jpeg_structure(data)
    # under a pixel cap, a file of no image format is not handed to a decoder at all
    assert check_image_bytes(odd["text"]).startswith("not an image file")
    assert check_image_bytes(odd["text"], max_pixels=0) is None
    good = variants[2]  # with restart markers
    assert check_image_bytes(good + b"trailing bytes after EOI") is None
    dqt = good.find(b"\xff\xdb")  # extraneous bytes before a marker: libjpeg skips them
    padded = good[:dqt] + b"\x00junk" + good[dqt:]
    assert check_image_bytes(padded) is None
    assert cv2.imdecode(np.frombuffer(padded, np.uint8), cv2.IMREAD_COLOR) is not None
    rst = good.find(b"\xff\xd1")
    swapped = good[:rst] + b"\xff\xd5" + good[rst + 2:]
    assert "out of sequence" in check_image_bytes(swapped)
    assert check_image_bytes(good[:len(good) // 2]).startswith("truncated JPEG")


def test_list_file_errors_name_file_and_line(tree, tmp_path, capsys):
    cases = {
        "img_0001.jpg\n": ":1: expected 'relpath label'",
        "img_0001.jpg 1\nimg_0002.jpg two\n": ":2: label 'two' is not an integer",
        "img_0001.jpg -3\n": ":1: label -3 is outside",
        "img_0001.jpg 1\n\nimg_0001.jpg 2\n": ":3: 'img_0001.jpg' is listed again (first at line 1)",
        "\n\n": "the list file has no entries",
        "": "the list file has no entries",
    }
    for number, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"list{number}.txt"
        path.write_text(text)
        rc = convert_imageset_main([str(tree / "images"), str(path), str(tmp_path / f"db{number}")])
        err = capsys.readouterr().err
        assert rc == 1 and f"{path}" in err and message in err and "Traceback" not in err, err
        assert not (tmp_path / f"db{number}.partial").exists()
    # CRLF line endings and blank lines are fine; a missing file is a reported skip
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"img_0001.jpg 1\r\n\r\nnot_there.jpg 2\r\nimg_0002.jpg 3\r\n")
    assert convert_imageset_main([str(tree / "images"), str(crlf), str(tmp_path / "crlf")]) == 0
    assert [Datum.FromString(v).label for _, v in db_items(tmp_path / "crlf")] == [1, 3]
    assert "not_there.jpg\tcannot read file" in Path(f"{tmp_path / 'crlf'}.skipped.tsv").read_text()
    assert convert_imageset_main([str(tree / "images"), str(tmp_path / "nope.txt"),
                                  str(tmp_path / "x")]) == 1
    assert "nope.txt: cannot read list file" in capsys.readouterr().err


def test_database_input_errors(tree, tmp_path, capsys):
    not_db = tmp_path / "not_a_db"
    not_db.mkdir()
    (not_db / "data.txt").write_text("hello")
    assert compute_image_mean_main([str(not_db)]) == 1
    assert "neither an LMDB nor a LevelDB" in capsys.readouterr().err
    garbage = tmp_path / "garbage_lmdb"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(b"\0garbage" * 1000)
    assert compute_image_mean_main([str(garbage)]) == 1
    assert "cannot open as LMDB" in capsys.readouterr().err
    level = tmp_path / "level"
    assert convert_imageset_main([str(tree / "images"), str(tree / "list.txt"), str(level),
                                  "--backend=leveldb", "--resize_width=8",
                                  "--resize_height=8"]) == 0
    capsys.readouterr()
    assert compute_image_mean_main([str(level)]) == 1  # default --backend=lmdb
    assert "is a leveldb database, not lmdb" in capsys.readouterr().err
    mixed = tmp_path / "mixed"  # original sizes: the mean needs one size
    assert convert_imageset_main([str(tree / "images"), str(tree / "list.txt"), str(mixed)]) == 0
    capsys.readouterr()
    assert compute_image_mean_main([str(mixed)]) == 1
    err = capsys.readouterr().err
    assert "channels/height/width" in err and "Traceback" not in err
