"""Every resize mode on real photos (examples/photos: portrait, landscape, square, tiny, gray)
and on small arrays whose result is computed by hand here."""
import cv2
import numpy as np
import pytest

from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.resize import RESIZE_MODES, geometry
from imagenet_db.imaging.resize.convnet2 import interpolation_for as convnet2_interpolation
from imagenet_db.imaging.resize.min_max_dim import scale_for
from imagenet_db.imaging.resize.shorter_side import shorter_side_size
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.testing.photos import PHOTOS_DIR


def run(mode, image, key="", **options):
    """Apply registered resize mode ``mode`` with TransformOptions(**options)."""
    opts = TransformOptions(resize_mode=mode, **options)  # checks the options (and the name)
    return RESIZE_MODES[opts.resize_mode].apply(image, opts, key)


class R:
    """The modes under the names the tests use."""
    round_half_up = staticmethod(geometry.round_half_up)
    interpolation_flag = staticmethod(geometry.interpolation_flag)
    convnet2_interpolation = staticmethod(convnet2_interpolation)
    min_max_dim_scale = staticmethod(scale_for)
    MODES = ("squash", "crop", "fill", "half_crop")

    @staticmethod
    def squash(image, w, h, interpolation="linear"):
        return run("squash", image, resize_width=w, resize_height=h, interpolation=interpolation)

    @staticmethod
    def crop(image, w, h, interpolation="linear"):
        return run("crop", image, resize_width=w, resize_height=h, interpolation=interpolation)

    @staticmethod
    def fill(image, w, h, interpolation="linear", fill_value=(), seed=0, key=""):
        fill_value = (fill_value,) if isinstance(fill_value, int) else tuple(fill_value or ())
        return run("fill", image, key, resize_width=w, resize_height=h,
                   interpolation=interpolation, fill_value=fill_value, seed=seed)

    @staticmethod
    def half_crop(image, w, h, interpolation="linear", fill_value=(), seed=0, key=""):
        fill_value = (fill_value,) if isinstance(fill_value, int) else tuple(fill_value or ())
        return run("half_crop", image, key, resize_width=w, resize_height=h,
                   interpolation=interpolation, fill_value=fill_value, seed=seed)

    @staticmethod
    def shorter_side(image, size, only_shrink=False):
        return run("shorter_side", image, shorter_side=size, only_shrink=only_shrink)

    @staticmethod
    def shorter_side_size(w, h, size, only_shrink=False):
        return shorter_side_size(w, h, size, only_shrink) or (w, h)

    @staticmethod
    def min_max_dim(image, min_dim=0, max_dim=0):
        return run("min_max_dim", image, min_dim=min_dim, max_dim=max_dim)

    @staticmethod
    def convnet2(image, size=256, interpolation="auto"):
        return run("convnet2", image, resize_width=size, resize_height=size,
                   interpolation=interpolation)

    @staticmethod
    def center_crop(image, w, h):
        return geometry.center_crop(image, w, h)

    @staticmethod
    def resize(image, mode, w, h):
        return run(mode, image, resize_width=w, resize_height=h)


def _read(name, flag=cv2.IMREAD_COLOR):
    image = cv2.imread(str(PHOTOS_DIR / name), flag)
    assert image is not None, name
    return image


@pytest.fixture(scope="module")
def photos():
    """Real photos in the five shapes the issue names (BGR uint8, gray 2-D)."""
    rocket = _read("rocket.jpg")                                    # 640x427 landscape
    return {
        "portrait": np.ascontiguousarray(cv2.rotate(rocket, cv2.ROTATE_90_CLOCKWISE)),  # 427x640
        "landscape": _read("chelsea.png"),                          # 451x300 (odd width)
        "square": _read("astronaut.png"),                           # 512x512
        "tiny": cv2.resize(_read("coffee.png"), (15, 10), interpolation=cv2.INTER_AREA),
        "gray": _read("coins.png", cv2.IMREAD_GRAYSCALE),           # 384x303, 2-D
    }


SHAPES = ["portrait", "landscape", "square", "tiny", "gray"]
TARGETS = [(256, 256), (224, 224), (300, 200)]  # (width, height)


def _channels(image):
    return image.shape[2:] if image.ndim == 3 else ()


# ------------------------------------------------------------------ squash
@pytest.mark.parametrize("shape", SHAPES)
def test_squash_is_caffe_resize(photos, shape):
    image = photos[shape]
    out = R.squash(image, 256, 200)
    assert out.shape == (200, 256) + _channels(image) and out.dtype == np.uint8
    # Caffe: cv::resize(img, Size(w, h)) with the default INTER_LINEAR
    assert np.array_equal(out, cv2.resize(image, (256, 200)))
    assert not np.array_equal(R.squash(image, 256, 200, "area"), out)


# ------------------------------------------------------------------ crop (DIGITS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_crop_size_and_geometry(photos, shape, target):
    image = photos[shape]
    width, height = target
    out = R.crop(image, width, height)
    assert out.shape == (height, width) + _channels(image)
    h, w = image.shape[:2]
    rw, rh = w / width, h / height
    # the crop is a window of the aspect-preserving resize that covers the target
    if rw > rh:
        full = cv2.resize(image, (int(np.floor(w / rh + 0.5)), height))
        start = int(np.floor((full.shape[1] - width) / 2 + 0.5))
        expect = full[:, start:start + width]
    else:
        full = cv2.resize(image, (width, int(np.floor(h / rw + 0.5))))
        start = int(np.floor((full.shape[0] - height) / 2 + 0.5))
        expect = full[start:start + height]
    assert np.array_equal(out, expect)


def test_crop_hand_computed_area():
    # 4x8 (H x W) -> 2x2: rw = 4 > rh = 2, so the height becomes 2 and the width round(8 / 2) = 4;
    # INTER_AREA at exactly half size = mean of 2x2 blocks; start = round((4 - 2) / 2) = 1.
    image = (np.arange(32, dtype=np.uint8) * 7).reshape(4, 8)
    blocks = image.reshape(2, 2, 4, 2).astype(float).mean(axis=(1, 3))   # 2 x 4 block means
    expect = np.floor(blocks[:, 1:3] + 0.5).astype(np.uint8)              # columns 1 and 2
    assert np.array_equal(R.crop(image, 2, 2, "area"), expect)


def test_crop_offset_rounds_half_up_like_python2():
    # 2x7 -> 2x2 needs no resize (height already 2, width round(7 / 1) = 7); DIGITS' start is
    # int(round(2.5)) = 3 in Python 2 (Python 3's round would give 2).
    image = np.arange(14, dtype=np.uint8).reshape(2, 7)
    assert np.array_equal(R.crop(image, 2, 2), image[:, 3:5])
    assert np.array_equal(R.crop(image.T.copy(), 2, 2), image.T[3:5, :])
    assert R.round_half_up(2.5) == 3 and round(2.5) == 2


def test_crop_keeps_exact_size_and_equal_ratio_squashes(photos):
    image = photos["square"]
    assert np.array_equal(R.crop(image, 512, 512), image)
    assert np.array_equal(R.crop(image, 256, 256), cv2.resize(image, (256, 256)))


# ------------------------------------------------------------------ fill (DIGITS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_fill_size_padding_and_noise(photos, shape, target):
    image = photos[shape]
    width, height = target
    out = R.fill(image, width, height, seed=7, key="n01440764/x.JPEG")
    assert out.shape == (height, width) + _channels(image)
    h, w = image.shape[:2]
    rw, rh = w / width, h / height
    if rw == rh:
        return
    if rw > rh:
        rows = int(np.floor(h / rw + 0.5))
        rows += (height - rows) % 2
        pad = (height - rows) // 2
        inner, top, bottom = out[pad:pad + rows], out[:pad], out[pad + rows:]
        assert np.array_equal(inner, cv2.resize(image, (width, rows)))
    else:
        cols = int(np.floor(w / rh + 0.5))
        cols += (width - cols) % 2
        pad = (width - cols) // 2
        inner, top, bottom = out[:, pad:pad + cols], out[:, :pad], out[:, pad + cols:]
        assert np.array_equal(inner, cv2.resize(image, (cols, height)))
    assert np.array_equal(top, bottom)           # DIGITS puts one noise strip on both sides
    if top.size:
        assert top.max() <= 254                   # randint(0, 255): 255 never drawn


def test_fill_noise_reproducible_with_seed(photos):
    image = photos["landscape"]                    # 451x300 -> 256x256: 170 rows, 43 pad each
    a = R.fill(image, 256, 256, seed=1, key="a.JPEG")
    assert np.array_equal(a, R.fill(image, 256, 256, seed=1, key="a.JPEG"))
    assert not np.array_equal(a[:43], R.fill(image, 256, 256, seed=2, key="a.JPEG")[:43])
    assert not np.array_equal(a[:43], R.fill(image, 256, 256, seed=1, key="b.JPEG")[:43])
    noise = a[:43].ravel()
    assert noise.min() == 0 and noise.max() == 254
    counts = np.bincount(noise, minlength=255)
    assert counts.min() > 0.5 * noise.size / 255  # roughly uniform over 0..254


def test_fill_constant_value(photos):
    image = photos["portrait"]                     # 427x640 -> 256x256: pad columns
    out = R.fill(image, 256, 256, fill_value=(104, 117, 123))
    cols = int(np.floor(427 / (640 / 256) + 0.5))  # 171 -> 172 (even padding)
    cols += (256 - cols) % 2
    pad = (256 - cols) // 2
    assert cols == 172 and pad == 42
    assert (out[:, :pad] == [104, 117, 123]).all() and (out[:, -pad:] == [104, 117, 123]).all()
    gray = R.fill(photos["gray"], 256, 256, fill_value=128)
    assert gray.ndim == 2 and (gray[:1] == 128).all()
    with pytest.raises(ImagenetDbError, match="fill_value"):
        R.fill(image, 256, 256, fill_value=(1, 2))
    with pytest.raises(ImagenetDbError, match="fill_value"):
        R.fill(image, 256, 256, fill_value=(0, 0, 256))


# ------------------------------------------------------------------ half_crop (DIGITS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_half_crop_size_and_geometry(photos, shape, target):
    image = photos[shape]
    width, height = target
    out = R.half_crop(image, width, height, seed=3, key="k")
    assert out.shape == (height, width) + _channels(image)
    h, w = image.shape[:2]
    rw, rh = w / width, h / height
    if rw == rh:
        return
    r = (rw + rh) / 2
    cols, rows = int(np.floor(w / r + 0.5)), int(np.floor(h / r + 0.5))
    if rw > rh:
        rows += (height - rows) % 2
        full = cv2.resize(image, (cols, rows))
        start = int(np.floor((cols - width) / 2 + 0.5))
        pad = (height - rows) // 2
        assert np.array_equal(out[pad:pad + rows], full[:, start:start + width])
    else:
        cols += (width - cols) % 2
        full = cv2.resize(image, (cols, rows))
        start = int(np.floor((rows - height) / 2 + 0.5))
        pad = (width - cols) // 2
        assert np.array_equal(out[:, pad:pad + cols], full[start:start + height])


def test_half_crop_landscape_numbers(photos):
    # chelsea 451x300 -> 256x256: rw = 1.76171875, rh = 1.171875, r = 1.466796875;
    # resized round(307.47) = 307 x round(204.53) = 205 -> 206 rows (even pad 25),
    # cut 307 -> 256 from round(25.5) = 26
    out = R.half_crop(photos["landscape"], 256, 256, fill_value=0)
    full = cv2.resize(photos["landscape"], (307, 206))
    assert np.array_equal(out[25:231], full[:, 26:282])
    assert (out[:25] == 0).all() and (out[231:] == 0).all()


# ------------------------------------------------------------------ shorter side
@pytest.mark.parametrize("shape", SHAPES)
def test_shorter_side(photos, shape):
    image = photos[shape]
    h, w = image.shape[:2]
    out = R.shorter_side(image, 256)
    assert min(out.shape[:2]) == 256 and out.ndim == image.ndim
    long_expect = int(np.floor(max(h, w) * 256 / min(h, w) + 0.5))
    assert max(out.shape[:2]) == long_expect
    assert (out.shape[0] >= out.shape[1]) == (h >= w)   # orientation kept
    kept = R.shorter_side(image, 256, only_shrink=True)
    if min(h, w) <= 256:
        assert np.array_equal(kept, image)              # ImageMagick "256^>": never enlarge
    else:
        assert np.array_equal(kept, out)


def test_shorter_side_sizes_by_hand():
    assert R.shorter_side_size(500, 375, 256) == (341, 256)    # 500 * 256 / 375 = 341.33
    assert R.shorter_side_size(375, 500, 256) == (256, 341)
    assert R.shorter_side_size(451, 300, 256) == (385, 256)    # 384.85
    assert R.shorter_side_size(15, 10, 256) == (384, 256)      # enlarge
    assert R.shorter_side_size(15, 10, 256, only_shrink=True) == (15, 10)


# ------------------------------------------------------------------ SSD min_dim / max_dim
def test_min_max_dim_sizes_by_hand(photos):
    land = photos["landscape"]                                 # 451x300
    assert R.min_max_dim(land, min_dim=600).shape[:2] == (600, 902)        # scale 2
    # scale 2 would make int(902) > 800: scale = 800 / 451 -> 800 x round(532.15) = 532
    assert R.min_max_dim(land, min_dim=600, max_dim=800).shape[:2] == (532, 800)
    assert R.min_max_dim(land, max_dim=300).shape[:2] == (200, 300)        # shrink only
    assert np.array_equal(R.min_max_dim(land, min_dim=300), land)          # short == min: kept
    assert np.array_equal(R.min_max_dim(land, max_dim=1000), land)
    tiny = R.min_max_dim(photos["tiny"], min_dim=300, max_dim=1000)        # 15x10 -> 450x300
    assert tiny.shape[:2] == (300, 450)
    gray = R.min_max_dim(photos["gray"], max_dim=192)                      # 384x303 -> 192x152
    assert gray.shape == (152, 192)                                        # round(151.5) = 152
    with pytest.raises(ImagenetDbError, match="min_dim"):
        R.min_max_dim(land)


def test_min_max_dim_scale_is_float32():
    # C++: float scale = 800.0f / 451; int(scale * 451) must be computed in float32
    s = R.min_max_dim_scale(451, 300, 600, 800)
    assert s == float(np.float32(800) / np.float32(451)) and s != 800 / 451


# ------------------------------------------------------------------ cuda-convnet2
def test_convnet2_interpolation_choice():
    assert R.convnet2_interpolation(1.0) == cv2.INTER_LINEAR
    assert R.convnet2_interpolation(256 / 300) == cv2.INTER_AREA
    assert R.convnet2_interpolation(256 / 10) == cv2.INTER_CUBIC
    src = (500, 375)
    assert R.interpolation_flag("auto", src, src) == cv2.INTER_LINEAR
    assert R.interpolation_flag("auto", src, (341, 256)) == cv2.INTER_AREA
    assert R.interpolation_flag("auto", src, (600, 400)) == cv2.INTER_CUBIC
    assert R.interpolation_flag("auto", src, (600, 300)) == cv2.INTER_LINEAR
    with pytest.raises(ValueError):
        R.interpolation_flag("nearest", src, src)


def test_convnet2_square_is_block_mean(photos):
    # astronaut 512x512: scale 0.5 -> AREA -> each pixel is the mean of a 2x2 block
    image = photos["square"]
    out = R.convnet2(image)
    blocks = image.reshape(256, 2, 256, 2, 3).astype(float).mean(axis=(1, 3))
    assert out.shape == (256, 256, 3)
    assert np.abs(out.astype(float) - blocks).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("shape", SHAPES)
def test_convnet2_geometry(photos, shape):
    image = photos[shape]
    h, w = image.shape[:2]
    scale = 256 / min(h, w)
    nh, nw = int(np.floor(scale * h + 0.5)), int(np.floor(scale * w + 0.5))
    flag = {True: cv2.INTER_CUBIC, False: cv2.INTER_AREA}[scale > 1] if scale != 1 else cv2.INTER_LINEAR
    full = cv2.resize(image, (nw, nh), interpolation=flag)
    out = R.convnet2(image)
    assert out.shape == (256, 256) + _channels(image)
    top, left = (nh - 256) // 2, (nw - 256) // 2
    assert np.array_equal(out, full[top:top + 256, left:left + 256])


def test_convnet2_landscape_offset(photos):
    # chelsea 451x300: new size round(384.85) = 385 x 256; left = (385 - 256) // 2 = 64
    full = cv2.resize(photos["landscape"], (385, 256), interpolation=cv2.INTER_AREA)
    assert np.array_equal(R.convnet2(photos["landscape"]), full[:, 64:320])


# ------------------------------------------------------------------ centre crop, dispatch
def test_center_crop_is_caffe_test_phase():
    image = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    assert np.array_equal(R.center_crop(image, 4, 2), image[1:3, 1:5])     # (5-2)//2, (7-4)//2
    with pytest.raises(ValueError):
        R.center_crop(image, 8, 2)


@pytest.mark.parametrize("mode", R.MODES)
def test_dispatch_and_bad_options(photos, mode):
    out = R.resize(photos["gray"], mode, 64, 48)
    assert out.shape == (48, 64)
    if mode == "squash":  # Caffe: a zero size means "keep the decoded size"
        assert R.resize(photos["gray"], mode, 0, 48) is photos["gray"]
    else:
        with pytest.raises(ImagenetDbError, match="needs both"):
            R.resize(photos["gray"], mode, 0, 48)
    with pytest.raises(ImagenetDbError, match="unknown resize mode"):
        R.resize(photos["gray"], "stretch", 64, 48)


@pytest.mark.parametrize("options, message", [
    (dict(resize_mode="crop", shorter_side=256), "--shorter_side goes with"),
    (dict(resize_mode="shorter_side", shorter_side=256, resize_width=256, resize_height=256),
     "keeps the aspect ratio"),
    (dict(resize_mode="shorter_side"), "needs --shorter_side"),
    (dict(resize_mode="squash", min_dim=300), "--min_dim/--max_dim go with"),
    (dict(resize_mode="squash", only_shrink=True, resize_width=4, resize_height=4),
     "--only_shrink goes with"),
    (dict(resize_mode="convnet2", resize_width=256, resize_height=224), "must equal"),
    (dict(interpolation="nearest"), "--interpolation must be one of"),
    (dict(encode_quality=101), "--encode_quality"),
    (dict(resize_mode="fill", resize_width=8, resize_height=8, is_color=False,
          fill_value=(1, 2, 3)), "with --gray takes one value"),
])
def test_contradicting_options_are_refused(options, message):
    with pytest.raises(ImagenetDbError, match=message):
        TransformOptions(**options)


def test_degenerate_aspect_is_clamped():
    line = np.full((1, 1000, 3), 200, np.uint8)
    out = R.fill(line, 256, 256, fill_value=0)
    assert out.shape == (256, 256, 3) and (out[127:129] == 200).all()


def test_readme_picture_is_drawn_by_the_registered_modes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "modes.jpg"
    run = subprocess.run([sys.executable, str(repo / "tools" / "resize_modes_figure.py"),
                          str(PHOTOS_DIR / "chelsea.png"), str(out)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    picture = cv2.imread(str(out))
    committed = cv2.imread(str(repo / "docs" / "resize_modes.jpg"))
    assert picture.shape == committed.shape            # 8 panels: the original + 7 modes
    assert np.abs(picture.astype(int) - committed.astype(int)).mean() < 2
    assert "docs/resize_modes.jpg" in (repo / "README.md").read_text()
