"""Declared image sizes (imaging.sizes) for the header variants OpenCV cannot write itself:
top-down and OS/2 BMPs, BigTIFF, a raw JPEG 2000 codestream, WebP VP8X, GIF frames larger
than the screen, PNM comments, HDR axis orders, OpenEXR; and malformed headers give None.
Real files from cv2.imencode are covered by test_reliability_round2 (every format at once)."""
import struct

import cv2
import numpy as np
import pytest

from imagenet_db.imaging.headers import check_image_bytes
from imagenet_db.imaging.sizes import declared_size, image_format


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
