"""--max_pixels: an image whose declared size is over the cap is skipped (and reported) before
any decoder sees it, in every format OpenCV decodes, and a 35-byte GIF declaring 30000x30000
pixels costs no memory. The declared sizes (imaging.sizes) are read from the headers, including
the variants OpenCV cannot write itself: top-down and OS/2 BMPs, BigTIFF, a raw JPEG 2000
codestream, WebP VP8X, GIF frames larger than the screen, PNM comments, HDR axis orders,
OpenEXR; malformed headers give None and are not decoded under a cap.
Out-of-range values of the flag: tests/test_hostile_input.py."""
import shutil
import struct

import cv2
import numpy as np
import pytest

from conftest import call, db_items, run, skip_reasons
from imagenet_db.imaging.headers import check_image_bytes
from imagenet_db.imaging.sizes import declared_size, image_format
from imagenet_db.protos import Datum
from imagenet_db.testing import photos

def encoded(ext, width=40, height=30, params=()):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if ext == ".hdr":
        image = image.astype(np.float32) / 255
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def test_bmp_variants():
    bmp = bytearray(encoded(".bmp"))
    assert declared_size(bytes(bmp)) == ("BMP", (40, 30))
    bmp[22:26] = struct.pack("<i", -30)  # top-down rows
    assert declared_size(bytes(bmp)) == ("BMP", (40, 30))
    core = b"BM" + bytes(12) + struct.pack("<IHHHH", 12, 7000, 5000, 1, 24)  # OS/2 header
    assert declared_size(core) == ("BMP", (7000, 5000))


def test_bigtiff_and_classic_tiff():
    assert declared_size(encoded(".tiff")) == ("TIFF", (40, 30))
    entries = [(256, 16, 1, 90000), (257, 4, 1, 70000)]  # LONG8 width, LONG height
    ifd = struct.pack("<Q", len(entries)) + b"".join(
        struct.pack("<HHQQ", tag, kind, count, value) for tag, kind, count, value in entries)
    big = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + struct.pack("<Q", 0)
    assert declared_size(big) == ("TIFF", (90000, 70000))


def test_jpeg2000_codestream_and_box_format():
    jp2 = encoded(".jp2", 120, 90)  # (OpenJPEG needs a few resolution levels' worth)
    assert declared_size(jp2) == ("JPEG 2000", (120, 90))
    codestream = jp2[jp2.find(b"\xff\x4f\xff\x51"):]
    assert declared_size(codestream) == ("JPEG 2000", (120, 90))
    siz = bytearray(codestream)
    siz[8:16] = struct.pack(">II", 50000, 40000)  # Xsiz, Ysiz
    assert declared_size(bytes(siz)) == ("JPEG 2000", (50000, 40000))


def test_webp_chunks():
    assert declared_size(encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80))) == \
        ("WebP", (40, 30))
    assert declared_size(encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101))) == \
        ("WebP", (40, 30))
    vp8x = (b"RIFF" + struct.pack("<I", 22) + b"WEBP" + b"VP8X" + struct.pack("<I", 10)
            + bytes(4) + (16382).to_bytes(3, "little") + (9999).to_bytes(3, "little"))
    assert declared_size(vp8x) == ("WebP", (16383, 10000))


def test_gif_frame_larger_than_its_screen():
    screen = struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 5, 0, 20000, 30000, 0)
    comment = b"\x21\xfe\x03abc\x00"
    assert declared_size(b"GIF89a" + screen + comment + frame + b"\x02\x00\x3b") == \
        ("GIF", (20005, 30000))


def test_text_headers():
    assert declared_size(b"P6\n# made by hand\n# 2nd comment\n 640\n480 255\n") == \
        ("PNM", (640, 480))
    assert declared_size(b"P7\nWIDTH 33\nHEIGHT 44\nDEPTH 3\nMAXVAL 255\nENDHDR\n") == \
        ("PAM", (33, 44))
    assert declared_size(b"PF\n20 10\n-1.0\n") == ("PFM", (20, 10))
    for line, size in ((b"-Y 100 +X 200", (200, 100)), (b"+X 300 -Y 50", (300, 50))):
        assert declared_size(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + line + b"\n") == \
            ("HDR", size)
    assert declared_size(encoded(".hdr")) == ("HDR", (40, 30))


def test_openexr_data_window():
    attribute = b"dataWindow\0box2i\0" + struct.pack("<I", 16) + struct.pack("<iiii", 0, 0,
                                                                               7999, 5999)
    exr = b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + b"channels\0chlist\0" + \
        struct.pack("<I", 1) + b"\0" + attribute + b"\0"
    assert declared_size(exr) == ("OpenEXR", (8000, 6000))
    assert "8000x6000" in check_image_bytes(exr, max_pixels=1_000_000)


@pytest.mark.parametrize("data", [b"GIF89a\x01", b"BM\x00", b"II*\x00\xff\xff\xff\x7f",
                                  b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n# no size\n",
                                  b"#?RADIANCE\n\n-Y x +X 3\n", b"\xff\x4f\xff\x51\x00"])
def test_malformed_headers_have_no_size_and_are_not_decoded_under_a_cap(data):
    name, size = declared_size(data)
    assert name is not None and size is None
    assert check_image_bytes(data, max_pixels=1000).startswith("cannot read the image size")
    assert check_image_bytes(data, max_pixels=0) is None


def test_unknown_bytes_are_no_format():
    assert image_format(b"\x00\x01 not an image") is None
    assert image_format(b"") is None


def gif_bomb(width=30000, height=30000):
    """A 35-byte GIF whose screen and one frame declare width x height pixels."""
    screen = width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x80\x00\x00"
    colours = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + bytes(4) + screen[:4] + b"\x00"
    return b"GIF89a" + screen + colours + frame + b"\x02\x02\x4c\x01\x00" + b"\x3b"


def test_a_gif_header_bomb_is_skipped_before_decoding(data, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    bomb = gif_bomb()
    assert len(bomb) == 35
    (folder / "bomb.JPEG").write_bytes(bomb)  # named like an ImageNet file
    for i in range(4):
        shutil.copy(data / "images" / f"img_{i:04d}.jpg", folder / f"ok_{i}.jpg")
    (tmp_path / "list.txt").write_text("bomb.JPEG 0\n" + "".join(f"ok_{i}.jpg 1\n"
                                                                for i in range(4)))

    def address_space_cap():  # protects the machine should a decoder try anyway
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    db = tmp_path / "db"
    rc, err = run("convert", folder, tmp_path / "list.txt", db, "--max_pixels=1000000",
                  "--workers=2", preexec_fn=address_space_cap, REPORT_MAXRSS=1)
    assert rc == 0, err
    assert "30000x30000" in skip_reasons(db)["bomb.JPEG"]
    peak_mib = int(err.rsplit("MAXRSS ", 1)[1].split()[0]) // 1024
    assert peak_mib < 600, f"peak RSS {peak_mib} MiB for a 35-byte file"
    assert len(db_items(db)) == 4


def format_samples():
    """{name: bytes}: the same photo as every format this OpenCV can write and read, at
    1300x1000 (1.3 megapixels) and 120x90."""
    photo = cv2.imread(str(photos.PHOTOS_DIR / "astronaut.png"))
    variants = {"bmp": (".bmp", []), "png": (".png", []), "jpeg": (".jpg", []),
                "webp_lossy": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                "webp_lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                "tiff": (".tiff", []), "ppm": (".ppm", []), "pgm": (".pgm", []),
                "pam": (".pam", []), "pfm": (".pfm", []), "sunraster": (".sr", []),
                "jpeg2000": (".jp2", []), "hdr": (".hdr", []), "gif": (".gif", []),
                "avif": (".avif", [])}
    out = {}
    for name, (ext, params) in variants.items():
        for tag, size in (("big", (1300, 1000)), ("small", (120, 90))):
            image = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
            if name == "pgm":
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if name in ("pfm", "hdr"):
                image = image.astype(np.float32) / 255
            try:
                ok, buf = cv2.imencode(ext, image, params)
            except cv2.error:
                ok = False
            if ok and cv2.imdecode(buf, cv2.IMREAD_COLOR) is not None:
                out[f"{tag}_{name}"] = buf.tobytes()
    return out


def test_max_pixels_covers_every_format_opencv_decodes(tmp_path):
    samples = format_samples()
    formats = {name.split("_", 1)[1] for name in samples}
    assert {"bmp", "png", "webp_lossy", "tiff", "ppm", "gif", "jpeg2000", "hdr"} <= formats
    folder = tmp_path / "img"
    folder.mkdir()
    for name, data in samples.items():
        (folder / f"{name}.JPEG").write_bytes(data)
    (tmp_path / "list.txt").write_text("".join(f"{name}.JPEG 3\n" for name in sorted(samples)))
    db = tmp_path / "db"
    rc, err = call("convert", folder, tmp_path / "list.txt", db, "--max_pixels=1000000")
    assert rc == 0, err
    reasons = skip_reasons(db)
    for name in samples:
        if name.startswith("big_"):
            assert "1300x1000" in reasons.get(f"{name}.JPEG", ""), (name, reasons.get(f"{name}.JPEG"))
    stored = {k.split(b"_", 1)[1].decode(): Datum.FromString(v) for k, v in db_items(db)}
    assert set(stored) == {f"{name}.JPEG" for name in samples if name.startswith("small_")}
    for datum in stored.values():
        assert (datum.height, datum.width, datum.channels) == (90, 120, 3)

