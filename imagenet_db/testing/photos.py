"""ImageNet-shaped test data made from real photographs.

The photographs live in ``examples/photos/`` (taken from scikit-image's data
folder; licences in ``examples/photos/SOURCES.md``).  From them this module
makes:

* ImageNet-like JPEGs: random crop of a photo, resized to roughly 500x375,
  slightly colour-jittered, baseline JPEG at quality 75..95
  (:func:`imagenet_like_jpeg`);
* the odd files real ImageNet contains (grayscale, CMYK, PNG named .JPEG, ...)
  plus broken ones (:func:`odd_images`);
* an extracted ILSVRC2012 directory tree (:func:`write_extracted_tree`);
* a flat directory of many JPEGs for benchmarks (:func:`write_corpus`).

Everything is deterministic for a given seed / random generator.
Only numpy and cv2 are needed; Pillow is imported lazily by :func:`odd_images`.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS_DIR = Path(__file__).resolve().parents[2] / "examples" / "photos"

_PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg"}
_VAL_NAME = "ILSVRC2012_val_%08d.JPEG"


@functools.lru_cache(maxsize=4)
def _load_photos(photos_dir: Path) -> tuple[tuple[str, np.ndarray], ...]:
    """Decode every photo in ``photos_dir`` once, sorted by file name.

    Returns ``(name, image)`` pairs; image is uint8, HxW (gray) or HxWx3 (BGR),
    read-only.  Raises FileNotFoundError if the folder is missing or holds no photo.
    """
    if not photos_dir.is_dir():
        raise FileNotFoundError(
            f"photo folder {photos_dir} not found: the photos ship in the source checkout's "
            f"examples/photos (not in the installed package); run from a checkout or pass "
            f"photos_dir=")
    files = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in _PHOTO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .png/.jpg photos in {photos_dir}")
    photos = []
    for path in files:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot decode photo {path}")
        if img.dtype != np.uint8:  # 16-bit PNGs
            img = (img / 257).round().astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        img.setflags(write=False)
        photos.append((path.name, img))
    return tuple(photos)


def _photos(photos_dir) -> tuple[tuple[str, np.ndarray], ...]:
    return _load_photos(Path(photos_dir or PHOTOS_DIR).resolve())


def _photo(name: str, photos_dir) -> np.ndarray:
    """The photo called ``name`` as a uint8 BGR (HxWx3) or gray (HxW) array."""
    for n, img in _photos(photos_dir):
        if n == name:
            return img
    raise FileNotFoundError(f"photo {name} not found in {photos_dir or PHOTOS_DIR}")


def _encode(img: np.ndarray, ext: str = ".jpg", params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    if not ok:
        raise RuntimeError(f"cv2.imencode({ext!r}) failed")
    return buf.tobytes()


def imagenet_like_jpeg(
    rng: np.random.Generator,
    photos_dir=None,
    size: tuple[int, int] | None = None,
    quality: int | None = None,
) -> bytes:
    """Make one ImageNet-like colour JPEG from a randomly chosen real photo.

    Steps: pick a photo; crop a random window covering 60..100 % of each side
    (its aspect ratio follows the target's where that fits); resize to the
    target size (INTER_AREA, or INTER_CUBIC when enlarging); jitter each
    channel with a gain of 0.92..1.08 and the whole image with an offset of
    -8..+8 grey levels; add Gaussian sensor noise (sigma 1..3 grey levels);
    encode as baseline (non-progressive) JPEG, chroma 4:2:0 (75 %) or 4:4:4
    (25 %), quality skewed towards 95 (median 93).  Gray photos are
    converted to BGR first, so the per-channel jitter makes B, G, R differ
    and the result is always a 3-channel colour JPEG.

    Args:
        rng: numpy Generator; the output is a pure function of its state, and
            the same number of draws is made whatever ``size``/``quality`` are.
        photos_dir: folder of source photos (default :data:`PHOTOS_DIR`).
        size: ``(width, height)`` in pixels.  Default: random, like ImageNet:
            the long side is 500 px (75 %) or 300..499 px, the short side is
            3/4 of it (40 %) or 0.6..1.0 of it, but at least 300 px; landscape
            (75 %) or portrait, so typically 500x375 or 375x500.
        quality: JPEG quality 0..100.  Default: random in 75..95 (median 93).

    Returns:
        The JPEG file's bytes: 80 % are 25..95 KB, median ~53 KB, extremes
        ~7..160 KB (smooth moon/rocket/retina crops are small, textures big).

    Raises:
        FileNotFoundError: no photos in ``photos_dir``.
        ValueError: ``size`` not two positive ints, or ``quality`` outside 0..100.
    """
    photos = _photos(photos_dir)
    d = _draw(rng, len(photos))  # a fixed sequence of draws, independent of the arguments
    if size is None:
        short_side = min(d.long_side,
                         max(300, round(d.long_side * (0.75 if d.snap_4_3 else d.ratio))))
        w, h = (short_side, d.long_side) if d.portrait else (d.long_side, short_side)
    else:
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive (width, height), got {size!r}")
    q = d.quality
    if quality is not None:
        q = int(quality)
        if not 0 <= q <= 100:
            raise ValueError(f"quality must be in 0..100, got {quality!r}")
    params = (cv2.IMWRITE_JPEG_QUALITY, q)
    if d.sampling_444:
        params += (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    return _encode(_crop_resize_jitter(photos[d.idx][1], w, h, d), ".jpg", params)


@dataclass(frozen=True)
class _Draws:
    """The random choices of one ``imagenet_like_jpeg``."""
    idx: int
    long_side: int
    snap_4_3: bool
    ratio: float
    portrait: bool
    frac_w: float
    pos_x: float
    pos_y: float
    gains: np.ndarray
    offset: float
    noise_sigma: float
    noise_seed: int
    quality: int
    sampling_444: bool


def _draw(rng: np.random.Generator, photo_count: int) -> _Draws:
    """Draw every choice of one image from ``rng``, always in this order and number."""
    idx = int(rng.integers(photo_count))
    long_side = 500 if rng.random() < 0.75 else int(rng.integers(300, 500))
    snap_4_3, ratio = rng.random() < 0.4, rng.uniform(0.6, 1.0)
    portrait = rng.random() < 0.25
    frac_w, pos_x, pos_y = rng.random(3)
    gains = rng.uniform(0.92, 1.08, size=3)
    offset = rng.uniform(-8.0, 8.0)
    noise_sigma = rng.uniform(1.0, 3.0)
    noise_seed = int(rng.integers(2**63))
    q = 95 - int(21 * rng.random() ** 3)  # 75..95, skewed high (median 93) like camera JPEGs
    sampling_444 = rng.random() < 0.25
    return _Draws(idx, long_side, snap_4_3, ratio, portrait, frac_w, pos_x, pos_y, gains,
                  offset, noise_sigma, noise_seed, q, sampling_444)


def _crop_resize_jitter(img: np.ndarray, w: int, h: int, d: _Draws) -> np.ndarray:
    """The (h, w, 3) uint8 BGR image of ``imagenet_like_jpeg``: crop, resize, gains, offset
    and sensor noise as drawn in ``d`` (a gray photo is made BGR first)."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    H, W = img.shape[:2]
    # Crop: width 60..100 % of W; height follows the target aspect, clipped to 60..100 % of H.
    cw = W * (0.6 + 0.4 * d.frac_w)
    ch = float(np.clip(cw * h / w, 0.6 * H, H))
    cw = float(np.clip(ch * w / h, 0.6 * W, W))
    cw, ch = max(1, round(cw)), max(1, round(ch))
    x0, y0 = int(d.pos_x * (W - cw + 1)), int(d.pos_y * (H - ch + 1))
    crop = img[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if cw * ch > w * h else cv2.INTER_CUBIC
    out = cv2.resize(crop, (w, h), interpolation=interp).astype(np.float32)
    noise = np.random.default_rng(d.noise_seed).normal(0.0, d.noise_sigma, out.shape)
    return np.clip(out * d.gains + d.offset + noise, 0, 255).round().astype(np.uint8)


def _corrupt_entropy_data(jpeg: bytes) -> bytes:
    """Overwrite 96 bytes in the middle of the scan data with bogus 0xFF markers."""
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no SOS marker")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")  # first entropy byte
    end = len(jpeg) - 2  # EOI
    mid = (start + end) // 2
    garbage = (b"\xff\xc4\x00\x03\xff\xd9\xff\xd3\xff\xff\x12\x34\xff\xdb\x00\x00") * 6
    return jpeg[:mid] + garbage + jpeg[mid + len(garbage):]


def odd_images(photos_dir=None) -> dict[str, bytes]:
    """The unusual and broken files real ImageNet (or a bad download) contains.

    All are made deterministically from the photos (about 320x240 px unless
    stated).  Keys and what ``cv2.imdecode(buf, cv2.IMREAD_COLOR)`` does with
    them (OpenCV 5 / libjpeg-turbo):

    * ``"grayscale"``: 1-channel baseline JPEG (camera.png); decodes to HxW
      with IMREAD_UNCHANGED, HxWx3 with IMREAD_COLOR.
    * ``"cmyk"``: 4-channel CMYK JPEG written by Pillow (chelsea.png); Pillow
      opens it in mode "CMYK"; cv2 converts it to a 3-channel BGR image.
    * ``"png_named_jpeg"``: PNG bytes (ImageNet has one PNG named .JPEG).
    * ``"progressive"``: progressive JPEG (cv2.IMWRITE_JPEG_PROGRESSIVE).
    * ``"truncated"``: the first 40 % of a valid 320x240 JPEG's bytes.
      cv2.imdecode returns None (OpenCV 5 rejects truncated JPEGs; older
      OpenCV returned a grey-filled image).  Pillow still opens its header.
    * ``"zero_bytes"``: ``b""``; cv2.imdecode raises cv2.error (empty buffer).
    * ``"text"``: ``b"this is not an image\\n"``; cv2.imdecode returns None.
    * ``"one_pixel"``: a 1x1 colour JPEG.
    * ``"exif_rotated"``: a 320x240 (landscape) JPEG carrying EXIF
      Orientation = 6; IMREAD_COLOR applies it and yields 240 wide x 320 high,
      IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION yields 320x240.
    * ``"corrupt_markers"``: a valid JPEG with 96 bytes in the middle of its
      entropy-coded data overwritten by bogus 0xFF markers (DHT, EOI, RST3,
      DQT...).  cv2.imdecode does NOT fail: it returns a full-size 240x320x3
      image and libjpeg prints "Corrupt JPEG data: premature end of data
      segment" to stderr; the rows above the damage (the top ~half) are
      intact, everything below is one flat fill colour, i.e. silent garbage.

    Args:
        photos_dir: folder of source photos (default :data:`PHOTOS_DIR`); must
            hold camera.png, chelsea.png, coffee.png and astronaut.png.

    Returns:
        dict mapping the names above to file bytes.

    Raises:
        FileNotFoundError: a needed photo is missing.
        ImportError: Pillow is not installed (needed for "cmyk", "exif_rotated").
    """
    def small(name: str) -> np.ndarray:
        return cv2.resize(_photo(name, photos_dir), (320, 240), interpolation=cv2.INTER_AREA)

    return _odd_files(small("camera.png"), small("chelsea.png"), small("coffee.png"),
                      small("astronaut.png"))


def _pil_jpeg(bgr: np.ndarray, mode: str, **kw) -> bytes:
    """``bgr`` saved by Pillow as a quality-90 JPEG in ``mode`` ('RGB', 'CMYK'); kw: save()'s."""
    from PIL import Image  # lazy: only needed for CMYK and EXIF

    buf = io.BytesIO()
    Image.fromarray(bgr[:, :, ::-1].copy()).convert(mode).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _odd_files(gray: np.ndarray, cat: np.ndarray, coffee: np.ndarray,
               astro: np.ndarray) -> dict[str, bytes]:
    """The files of ``odd_images`` made from four 320x240 photos."""
    from PIL import Image  # lazy: only needed for CMYK and EXIF

    q90 = (cv2.IMWRITE_JPEG_QUALITY, 90)
    valid = _encode(coffee, ".jpg", q90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return {
        "grayscale": _encode(gray, ".jpg", q90),
        "cmyk": _pil_jpeg(cat, "CMYK"),
        "png_named_jpeg": _encode(cat, ".png"),
        "progressive": _encode(astro, ".jpg", q90 + (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
        "truncated": valid[: int(len(valid) * 0.4)],
        "zero_bytes": b"",
        "text": b"this is not an image\n",
        "one_pixel": _encode(np.array([[[40, 120, 200]]], np.uint8), ".jpg", q90),
        "exif_rotated": _pil_jpeg(cat, "RGB", exif=exif.tobytes()),
        "corrupt_markers": _corrupt_entropy_data(valid),
    }


def write_extracted_tree(
    root,
    wnids,
    train_per_class: int,
    val_per_class: int,
    seed: int = 0,
    photos_dir=None,
    val_layout: str = "flat",
) -> dict:
    """Write a small extracted-ILSVRC2012 directory tree of ImageNet-like JPEGs.

    Layout (``root`` and subfolders are created; existing files are overwritten)::

        root/train/<wnid>/<wnid>_<n>.JPEG      n: distinct random ints 1..60000
        root/val/ILSVRC2012_val_00000001.JPEG   val_layout="flat", plus
        root/val.txt                            "ILSVRC2012_val_00000001.JPEG <wnid>"
        root/val/<wnid>/ILSVRC2012_val_%08d.JPEG  val_layout="folders" (no val.txt)

    Validation images are numbered from 1 in a shuffled class order, like the
    real val set.  Each image is :func:`imagenet_like_jpeg` with a random photo.

    Args:
        root: output folder (str or Path).
        wnids: class ids, e.g. ["n01440764", ...]; must be distinct.
        train_per_class, val_per_class: images per class (>= 0).
        seed: seed for numpy.random.default_rng; same seed -> same bytes.
        photos_dir: folder of source photos (default :data:`PHOTOS_DIR`).
        val_layout: "flat" or "folders".

    Returns:
        ``{"train": [(relpath, wnid), ...], "val": [(relpath, wnid), ...]}``;
        relpaths are relative to root/train resp. root/val, with "/"
        separators; train sorted by class then number, val by number.

    Raises:
        ValueError: bad val_layout, duplicate wnids, or negative counts.
        FileNotFoundError: no photos in ``photos_dir``.
    """
    wnids = list(wnids)
    if val_layout not in ("flat", "folders"):
        raise ValueError(f"val_layout must be 'flat' or 'folders', got {val_layout!r}")
    if len(set(wnids)) != len(wnids):
        raise ValueError("wnids must be distinct")
    if train_per_class < 0 or val_per_class < 0:
        raise ValueError("per-class counts must be >= 0")
    root = Path(root)
    rng = np.random.default_rng(seed)
    train, val = _tree_lists(rng, wnids, train_per_class, val_per_class, val_layout == "flat")
    for sub, items in (("train", train), ("val", val)):
        for rel, _ in items:
            path = root / sub / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(imagenet_like_jpeg(rng, photos_dir))
    (root / "val").mkdir(parents=True, exist_ok=True)
    if val_layout == "flat":
        (root / "val.txt").write_text("".join(f"{rel} {wnid}\n" for rel, wnid in val))
    return {"train": train, "val": val}


def _tree_lists(rng: np.random.Generator, wnids: list, train_per_class: int,
                val_per_class: int, flat: bool) -> tuple[list, list]:
    """(train, val) [(relpath, wnid)] of ``write_extracted_tree``, drawn from ``rng``: train
    file numbers per class, then the val images' shuffled class order."""
    train = []
    for wnid in wnids:
        numbers = np.sort(rng.choice(np.arange(1, 60001), size=train_per_class, replace=False))
        train += [(f"{wnid}/{wnid}_{int(n)}.JPEG", wnid) for n in numbers]
    val_labels = [w for w in wnids for _ in range(val_per_class)]
    order = rng.permutation(len(val_labels))
    val = []
    for i, k in enumerate(order, start=1):
        wnid = val_labels[k]
        name = _VAL_NAME % i
        val.append((name if flat else f"{wnid}/{name}", wnid))
    return train, val


def write_corpus(dir, count: int, seed: int = 0, photos_dir=None) -> list[Path]:
    """Write ``count`` ImageNet-like JPEGs flat into ``dir`` (e.g. for benchmarks).

    Files are named ``img_000000.JPEG`` .. ``img_%06d.JPEG`` % (count - 1), each
    from :func:`imagenet_like_jpeg` (~500x375, ~50..130 KB; a few thousand files
    take a few hundred MB and roughly a second per hundred files).

    Args:
        dir: output folder (created if missing; existing files overwritten).
        count: number of files (>= 0).
        seed: seed for numpy.random.default_rng; same seed -> same bytes.
        photos_dir: folder of source photos (default :data:`PHOTOS_DIR`).

    Returns:
        The written paths, in name order.

    Raises:
        ValueError: negative count.
        FileNotFoundError: no photos in ``photos_dir``.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = out / f"img_{i:06d}.JPEG"
        path.write_bytes(imagenet_like_jpeg(rng, photos_dir))
        paths.append(path)
    return paths


def small_jpeg(rng, size=None, photos_dir=None) -> bytes:
    """An ImageNet-like JPEG (:func:`imagenet_like_jpeg`) of ``size`` (width, height) or, by
    default, a random 150-299 x 120-239 pixels: small, so tests stay fast."""
    size = size or (int(rng.integers(150, 300)), int(rng.integers(120, 240)))
    return imagenet_like_jpeg(rng, photos_dir, size=size)


def write_small_val(root, count: int, wnids, rng) -> None:
    """``root/val/ILSVRC2012_val_%08d.JPEG`` for 1..``count`` (:func:`small_jpeg`) and
    ``root/val.txt`` giving image i the wnid ``wnids[i % len(wnids)]``, one
    'ILSVRC2012_val_NNNNNNNN.JPEG wnid' line each (the val layout of an extracted tree)."""
    root = Path(root)
    (root / "val").mkdir()
    lines = []
    for i in range(1, count + 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        (root / "val" / name).write_bytes(small_jpeg(rng))
        lines.append(f"{name} {wnids[i % len(wnids)]}\n")
    (root / "val.txt").write_text("".join(lines))


def write_list_folder(images, listfile, rng, count: int = 160,
                      broken=((50, "text"), (120, "truncated"))) -> None:
    """``count`` small JPEGs ``img_%04d.jpg`` in the folder ``images`` (created) and a Caffe
    list ``listfile`` of 'img_NNNN.jpg <i % 7>' lines; ``broken``: (index, kind) pairs whose
    file is replaced by :func:`odd_images` ``[kind]`` (default: a text file at 50 and a
    truncated JPEG at 120, both skipped by a build)."""
    images = Path(images)
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        (images / f"img_{i:04d}.jpg").write_bytes(small_jpeg(rng))
        lines.append(f"img_{i:04d}.jpg {i % 7}\n")
    odd = odd_images()
    for index, kind in broken:
        (images / f"img_{index:04d}.jpg").write_bytes(odd[kind])
    Path(listfile).write_text("".join(lines))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tree", help="write an extracted ILSVRC2012-like tree")
    t.add_argument("root")
    t.add_argument("--wnids", nargs="+", required=True)
    t.add_argument("--train-per-class", type=int, default=8)
    t.add_argument("--val-per-class", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-layout", choices=("flat", "folders"), default="flat")
    c = sub.add_parser("corpus", help="write N flat ImageNet-like JPEGs")
    c.add_argument("dir")
    c.add_argument("count", type=int)
    c.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    if a.cmd == "tree":
        r = write_extracted_tree(a.root, a.wnids, a.train_per_class, a.val_per_class,
                                 seed=a.seed, val_layout=a.val_layout)
        print(f"wrote {len(r['train'])} train and {len(r['val'])} val images to {a.root}")
    else:
        print(f"wrote {len(write_corpus(a.dir, a.count, seed=a.seed))} images to {a.dir}")
