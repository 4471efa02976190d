import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagenet_db.testing import photos as fixtures

WNIDS = ["n01440764", "n01443537", "n02123045"]


def decode(buf: bytes, flags=cv2.IMREAD_COLOR):
    return cv2.imdecode(np.frombuffer(buf, np.uint8), flags)


def test_photos_are_bundled():
    names = {p.name for p in fixtures.PHOTOS_DIR.iterdir()}
    assert "SOURCES.md" in names
    assert len([n for n in names if n.endswith((".png", ".jpg"))]) == 14


def test_imagenet_like_jpeg_is_deterministic():
    a = [fixtures.imagenet_like_jpeg(np.random.default_rng(7)) for _ in range(2)]
    b = fixtures.imagenet_like_jpeg(np.random.default_rng(8))
    assert a[0] == a[1]
    assert a[0] != b


def test_imagenet_like_jpegs_are_colour_and_imagenet_sized():
    rng = np.random.default_rng(0)
    shapes, sizes = [], []
    for _ in range(40):
        buf = fixtures.imagenet_like_jpeg(rng)
        assert buf[:2] == b"\xff\xd8" and buf[-2:] == b"\xff\xd9"
        img = decode(buf, cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert 300 <= img.shape[0] <= 500 and 300 <= img.shape[1] <= 500
        # even gray source photos come out with distinct B, G, R channels
        assert not np.array_equal(img[..., 0], img[..., 1])
        shapes.append(img.shape[:2])
        sizes.append(len(buf))
    assert (375, 500) in shapes and any(h > w for h, w in shapes)
    assert 4_000 < min(sizes) and max(sizes) < 250_000 and 35_000 < np.median(sizes) < 100_000


def test_imagenet_like_jpeg_size_and_quality_arguments():
    buf = fixtures.imagenet_like_jpeg(np.random.default_rng(1), size=(64, 48), quality=50)
    assert decode(buf).shape == (48, 64, 3)
    with pytest.raises(ValueError):
        fixtures.imagenet_like_jpeg(np.random.default_rng(1), quality=101)


def test_odd_images():
    from PIL import Image

    odd = fixtures.odd_images()
    assert odd == fixtures.odd_images()  # deterministic

    assert decode(odd["grayscale"], cv2.IMREAD_UNCHANGED).ndim == 2
    assert odd["cmyk"][:2] == b"\xff\xd8"
    assert Image.open(io.BytesIO(odd["cmyk"])).mode == "CMYK"
    assert decode(odd["cmyk"]).shape[2] == 3
    assert odd["png_named_jpeg"][:8] == b"\x89PNG\r\n\x1a\n"
    assert decode(odd["png_named_jpeg"]) is not None
    assert b"\xff\xc2" in odd["progressive"]  # SOF2 = progressive DCT
    assert decode(odd["progressive"]) is not None
    assert decode(odd["one_pixel"]).shape == (1, 1, 3)

    assert odd["truncated"][:2] == b"\xff\xd8"
    assert decode(odd["truncated"]) is None
    assert odd["zero_bytes"] == b""
    with pytest.raises(cv2.error):
        decode(odd["zero_bytes"])
    assert odd["text"] == b"this is not an image\n"
    assert decode(odd["text"]) is None

    rotated = decode(odd["exif_rotated"], cv2.IMREAD_COLOR)
    raw = decode(odd["exif_rotated"], cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape[:2] == rotated.shape[1::-1] and raw.shape[0] != raw.shape[1]
    assert Image.open(io.BytesIO(odd["exif_rotated"])).getexif()[0x0112] == 6

    # documented: decodes "successfully", but the lower part is garbage
    corrupt = decode(odd["corrupt_markers"])
    assert corrupt is not None and corrupt.shape == (240, 320, 3)
    bottom = corrupt[-40:].reshape(-1, 3)
    assert len(np.unique(bottom, axis=0)) == 1


def files_under(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}


def test_write_extracted_tree_flat(tmp_path):
    out = fixtures.write_extracted_tree(tmp_path / "a", WNIDS, 3, 2, seed=5)
    root = tmp_path / "a"
    assert len(out["train"]) == 9 and len(out["val"]) == 6
    assert files_under(root / "train") == {rel for rel, _ in out["train"]}
    assert files_under(root / "val") == {rel for rel, _ in out["val"]}
    for rel, wnid in out["train"]:
        d, name = rel.split("/")
        assert d == wnid and name.startswith(wnid + "_") and name.endswith(".JPEG")
        int(name[len(wnid) + 1:-5])
    assert [rel for rel, _ in out["val"]] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    lines = (root / "val.txt").read_text().splitlines()
    assert [tuple(line.split(" ")) for line in lines] == out["val"]
    assert sorted(w for _, w in out["val"]) == sorted(WNIDS * 2)
    img = cv2.imread(str(root / "val" / out["val"][0][0]))
    assert img.ndim == 3 and img.shape[2] == 3

    again = fixtures.write_extracted_tree(tmp_path / "b", WNIDS, 3, 2, seed=5)
    assert again == out
    for rel, _ in out["train"]:
        assert (root / "train" / rel).read_bytes() == (tmp_path / "b" / "train" / rel).read_bytes()


def test_write_extracted_tree_folders(tmp_path):
    out = fixtures.write_extracted_tree(tmp_path, WNIDS, 1, 2, val_layout="folders")
    assert not (tmp_path / "val.txt").exists()
    assert files_under(tmp_path / "val") == {rel for rel, _ in out["val"]}
    assert all(rel.startswith(wnid + "/ILSVRC2012_val_") for rel, wnid in out["val"])
    with pytest.raises(ValueError):
        fixtures.write_extracted_tree(tmp_path, WNIDS, 1, 1, val_layout="nested")


def test_write_corpus(tmp_path):
    paths = fixtures.write_corpus(tmp_path / "c", 5, seed=3)
    assert [p.name for p in paths] == [f"img_{i:06d}.JPEG" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [p.name for p in paths]
    assert all(cv2.imread(str(p)).shape[2] == 3 for p in paths)
