"""Pictures of databases: ``imagenet-db show`` contact sheets and the HTML report, the report
rendered by a real browser (headless Chromium; skipped, with the reason, where it is absent)."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imagenet_db.cli import main
from imagenet_db.pictures.report import SECTIONS, render_report
from imagenet_db.pictures.sheet import contact_sheet, fit_tile, read_class_names, thumbnail
from imagenet_db.reader import DatumDB
from imagenet_db.testing.photos import write_corpus

from conftest import SAMPLE

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """A raw colour LMDB (40x30), a gray LevelDB and an encoded colour LMDB (kept sizes) made
    by convert_imageset from 10 real-photo JPEGs."""
    root = tmp_path_factory.mktemp("pictures")
    paths = write_corpus(root / "images", 10, seed=11)
    (root / "list.txt").write_text("".join(f"{p.name} {i % 3}\n" for i, p in enumerate(paths)))
    (root / "synset_words.txt").write_text("n01440764 tench, Tinca tinca\n"
                                           "n01443537 goldfish, Carassius auratus\n"
                                           "n01751748 sea snake\n")
    made = {}
    for name, flags in {"raw_lmdb": ["--resize_width=40", "--resize_height=30"],
                        "gray_leveldb": ["--gray", "--backend=leveldb", "--resize_width=24",
                                         "--resize_height=36"],
                        "encoded_lmdb": ["--encoded"]}.items():
        assert main(["convert", "--no-progress", *flags, str(root / "images") + "/",
                     str(root / "list.txt"), str(root / name)]) == 0
        made[name] = str(root / name)
    return made


def read_png_rgb(path_or_bytes) -> np.ndarray:
    """A PNG decoded by Pillow (not OpenCV), as (H, W, 3) RGB."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        path_or_bytes = __import__("io").BytesIO(path_or_bytes)
    return np.asarray(Image.open(path_or_bytes).convert("RGB"))


@pytest.mark.parametrize("name", ["raw_lmdb", "gray_leveldb", "encoded_lmdb"])
def test_sheet_tiles_are_the_datums(dbs, name, tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["show", dbs[name], "--tile", "0", "--count", "6", "--out", str(out)]) == 0
    sheet = read_png_rgb(out)
    db = DatumDB(dbs[name])
    drawn, tiles = contact_sheet(db, [0, 2, 4, 5, 7, 9], read_class_names(
        os.path.join(os.path.dirname(dbs[name]), "synset_words.txt")), tile=0,
        title=f"{dbs[name]}\n6 of 10 datums, spread over the key order")
    assert np.array_equal(sheet, drawn[:, :, ::-1])  # the command draws what the API draws
    rng = np.random.default_rng(0)
    for tile in tiles:
        image, _ = db[tile.position]  # (H, W, C) BGR
        assert (tile.height, tile.width) == image.shape[:2]
        expected = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, ::-1]
        ys = rng.integers(0, tile.height, 40)
        xs = rng.integers(0, tile.width, 40)
        assert np.array_equal(sheet[tile.y + ys, tile.x + xs], expected[ys, xs])
    db.close()


def test_scaled_tiles_keep_aspect_and_colours(dbs, tmp_path):
    db = DatumDB(dbs["encoded_lmdb"])
    sheet, tiles = contact_sheet(db, range(4), tile=64, columns=2)
    rgb = read_png_rgb(cv2.imencode(".png", sheet)[1].tobytes())
    for tile in tiles:
        image, _ = db[tile.position]
        assert tile.shape == (3, image.shape[0], image.shape[1])
        full = cv2.resize(image, (tile.width, tile.height), interpolation=cv2.INTER_AREA)
        # the JPEG is decoded reduced (libjpeg's 1/2..1/8, issue 24), then fitted in
        reduced = thumbnail(db, tile.position, 64)[0]
        assert max(reduced.shape[:2]) < max(image.shape[:2]) and max(reduced.shape[:2]) >= 64
        scaled = cv2.resize(reduced, (tile.width, tile.height), interpolation=cv2.INTER_AREA)
        assert max(tile.width, tile.height) == 64
        assert abs(tile.width / tile.height - image.shape[1] / image.shape[0]) < 0.05
        assert np.array_equal(fit_tile(reduced, 64), scaled)
        assert np.abs(scaled.astype(int) - full).mean() < 6  # the same picture (3 here)
        patch = rgb[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
        assert np.array_equal(patch, scaled[:, :, ::-1])  # BGR datum -> true colours
        assert not np.array_equal(patch, scaled)  # (real photos: the channels differ)
    db.close()


def test_show_one_label_and_refusals(dbs, tmp_path, capsys):
    out = tmp_path / "label2.png"
    assert main(["show", dbs["raw_lmdb"], "--label", "2", "--out", str(out)]) == 0
    db = DatumDB(dbs["raw_lmdb"])
    with_label = [i for i in range(len(db)) if db[i][1] == 2]
    sheet, tiles = contact_sheet(db, with_label, ["tench", "goldfish", "sea snake"],
                                 title=f"{dbs['raw_lmdb']}\n{len(with_label)} of 10 datums, "
                                       f"label 2 (sea snake)")
    assert np.array_equal(read_png_rgb(out), sheet[:, :, ::-1]) and len(tiles) == 3
    capsys.readouterr()
    assert main(["show", dbs["raw_lmdb"], "--out", str(out)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["show", dbs["raw_lmdb"], "--label", "5", "--out", str(tmp_path / "x.png")]) == 1
    assert "no datum has label 5" in capsys.readouterr().err
    assert main(["show", str(tmp_path), "--out", str(tmp_path / "y.png")]) == 1
    assert "is neither an LMDB nor a LevelDB" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()
    db.close()


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    """create_imagenet on the bundled sample plus one broken JPEG: OUTDIR with report.html."""
    root = tmp_path_factory.mktemp("report")
    source = root / "imagenet"
    shutil.copytree(SAMPLE, source)
    wnid = sorted(os.listdir(source / "train"))[0]
    (source / "train" / wnid / f"{wnid}_99.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert main(["create", "--no-progress", str(source), str(root / "out")]) == 0
    return root / "out"


def test_create_imagenet_writes_the_report(outdir):
    page = (outdir / "report.html").read_text()
    assert re.search(r"(src|href)=['\"](?!data:|#)", page) is None  # self-contained
    for db in ("ilsvrc12_train_lmdb", "ilsvrc12_val_lmdb"):
        for section in SECTIONS:
            assert f"id='db-{db.replace('_', '-')}-{section}'" in page
    assert "<td>datums</td><td>40</td>" in page  # 41 train images, one skipped
    assert f"{wnid_of(outdir)}_99.JPEG" in page and "1 image skipped" in page
    assert "98.6229" in page  # B of the train mean_value (README), from the stored mean


def wnid_of(outdir):
    return sorted(line.split()[0] for line in (outdir / "synsets.txt").read_text().splitlines())[0]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install "
                                             "chromium); CI installs it")
def test_report_renders_in_headless_chromium(outdir, tmp_path):
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => {document.body.setAttribute("
              "'data-images', [...document.images].map(i => i.complete && i.naturalWidth > 0 ? "
              "i.naturalWidth + 'x' + i.naturalHeight : 'broken').join(' '));});</script>")
    probe.write_text((outdir / "report.html").read_text().replace("</body>", script + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    images = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    # per database: class histogram, mean image (256x256), sample sheet
    assert len(images) == 6 and "broken" not in images and images.count("256x256") == 2
    for db in ("ilsvrc12-train-lmdb", "ilsvrc12-val-lmdb"):
        for section in SECTIONS:
            assert re.search(rf'<section id="db-{db}-{section}">\s*<h3>', dom), section
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,4000",
                            (outdir / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    picture = read_png_rgb(shot)
    assert picture.shape == (4000, 1200, 3)
    # the page's top shows the first histogram: its bars' blue (#3b6ea5) is on screen
    assert np.any(np.all(np.abs(picture[:1500].astype(int) - (59, 110, 165)) <= 2, axis=2))


def test_report_of_a_database_made_elsewhere(dbs, tmp_path, monkeypatch, capsys):
    """A DB given directly: the report goes to the current directory, not beside the DB; a DB
    without completion record says so; gray datums give a one-channel mean."""
    monkeypatch.chdir(tmp_path)
    os.remove(os.path.join(dbs["gray_leveldb"], "imagenet_db.json"))
    assert main(["report", dbs["gray_leveldb"]]) == 0
    page = Path("gray_leveldb.report.html").read_text()
    assert "no completion record" in page and "not recorded" in page
    assert "1x36x24 (10)" in page and "<th>gray</th>" in page
    assert main(["report", str(tmp_path)]) == 1
    assert "neither a database" in capsys.readouterr().err
    Path("other.html").write_text("my notes")
    assert main(["report", dbs["raw_lmdb"], "--out", "other.html"]) == 1
    assert Path("other.html").read_text() == "my notes"
    assert "--overwrite" in capsys.readouterr().err


def test_create_imagenet_no_report_and_refusal(sample_copy, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["create", "--no-progress", "--no-report", str(sample_copy), str(out)]) == 0
    assert not (out / "report.html").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.html").write_text("not ours")
    capsys.readouterr()
    assert main(["create", "--no-progress", str(sample_copy), str(other)]) == 1
    assert "report.html exists and is not an imagenet-db report" in capsys.readouterr().err
    assert sorted(os.listdir(other)) == ["report.html"]  # refused before any work


def test_render_report_lists_all_classes(outdir):
    page = render_report(str(outdir))
    names = read_class_names(str(outdir / "synset_words.txt"))
    for name in names:
        assert f"<td>{name}</td>" in page
