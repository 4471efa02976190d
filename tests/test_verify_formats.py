"""`imagenet-db verify` on the other outputs of create_imagenet --format (cuda-convnet2,
theano-alexnet, folder): real small builds of the bundled sample (real photos) verify OK; a
damaged copy (a truncated, byte-flipped or missing batch/image file) gives a problem line naming
the file and exit 1; an unfinished build is reported as unfinished."""
import shutil
from pathlib import Path

import pytest

from imagenet_db.cli import create_imagenet_main, main
from imagenet_db.verify import verify_output

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--progress=false", "--workers=2", "--seed", "3"]
BUILDS = {  # format: (extra flags, the output verified, relative to OUTDIR)
    "cuda-convnet2": (["--batch_images", "12"], "ilsvrc12_cuda_convnet2"),
    "theano-alexnet": (["--batch_images", "4"], "ilsvrc12_theano_alexnet"),
    "folder": ([], "train"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{format: OUTDIR} of one clean build of each format from the bundled sample."""
    root = tmp_path_factory.mktemp("formats")
    source = root / "imagenet"
    shutil.copytree(REPO / "examples" / "sample_imagenet", source)
    out = {}
    for fmt, (flags, _) in BUILDS.items():
        outdir = root / fmt
        assert create_imagenet_main([str(source), str(outdir), "--format", fmt, *flags,
                                     *ARGS]) == 0
        out[fmt] = outdir
    return out


def damaged_copy(built, fmt, tmp_path):
    """A private copy of the format's OUTDIR; returns the output to verify in it."""
    outdir = tmp_path / fmt
    shutil.copytree(built[fmt], outdir)
    return outdir / BUILDS[fmt][1]


def run(capsys, path):
    rc = main(["verify", str(path), "--no-progress"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out + out.err


def problems(text):
    return [line.strip()[len("problem: "):] for line in text.splitlines()
            if line.strip().startswith("problem: ")]


@pytest.mark.parametrize("fmt,images", [("cuda-convnet2", 50), ("theano-alexnet", 48),
                                        ("folder", 40)])
def test_clean_builds_verify_ok(built, fmt, images, capsys):
    path = built[fmt] / BUILDS[fmt][1]
    rc, out = run(capsys, path)
    assert rc == 0 and out.rstrip().endswith("OK"), out
    report = verify_output(str(path))
    assert report.backend == fmt and report.ok
    assert report.entries == report.manifest["entries"]
    assert sum(report.shapes.values()) == images  # theano: the incomplete val batch is dropped
    assert min(report.labels) >= 0 and max(report.labels) < report.manifest["synsets"]
    if fmt == "folder":  # the other split too
        assert verify_output(str(built[fmt] / "val")).ok


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGES = [
    # (format, file in the output, damage, what the problem line says after the file name)
    ("cuda-convnet2", "data_batch_1/data_batch_1.1", _truncate, "cannot be loaded"),
    ("cuda-convnet2", "data_batch_0/data_batch_0.2", Path.unlink, "missing"),
    ("cuda-convnet2", "data_batch_1000/data_batch_1000.0", lambda p: _flip(p, 2),
     "cannot be loaded"),  # the pickle's first opcode
    ("cuda-convnet2", "batches.meta", Path.unlink, "missing"),
    ("theano-alexnet", "train_hkl_b4_b_4/0003.hkl", _truncate, "cannot be loaded"),
    ("theano-alexnet", "val_hkl_b4_b_2/0001_0.hkl", Path.unlink, "missing"),
    ("theano-alexnet", "labels/train_labels.npy", lambda p: _flip(p, 200),
     "differs from the labels of the log"),
    ("folder", "n01440764/n01440764_14268.JPEG", _truncate, "truncated JPEG"),
    ("folder", "n01443537/n01443537_14779.JPEG", Path.unlink, "missing"),
    ("folder", "n01751748/n01751748_10879.JPEG", lambda p: _flip(p, 2), "JPEG"),
]


@pytest.mark.parametrize("fmt,name,damage,says", DAMAGES,
                         ids=[f"{d[0]}-{d[1]}-{getattr(d[2], '__name__', 'flip')}"
                              for d in DAMAGES])
def test_damaged_file_is_named(built, fmt, name, damage, says, tmp_path, capsys):
    output = damaged_copy(built, fmt, tmp_path)
    target = output / name
    assert target.is_file(), sorted(p.name for p in target.parent.iterdir())
    damage(target)
    rc, out = run(capsys, output)
    assert rc == 1 and "FAILED" in out
    named = [p for p in problems(out) if p.startswith(f"{target}: ")]
    assert named and says in named[0], out


def test_folder_changed_bytes_fail_the_content_checksum(built, tmp_path, capsys):
    """A byte flipped inside the image data still decodes; the recomputed content checksum
    (entries_crc32_sum) catches it."""
    output = damaged_copy(built, "folder", tmp_path)
    target = output / "n01440764" / "n01440764_14268.JPEG"
    _flip(target, target.stat().st_size // 2)
    rc, out = run(capsys, output)
    assert rc == 1 and any("entries_crc32_sum" in p for p in problems(out)), out


def test_extra_unit_file_and_changed_log_are_problems(built, tmp_path, capsys):
    output = damaged_copy(built, "cuda-convnet2", tmp_path)
    shutil.copy(output / "data_batch_0" / "data_batch_0.0", output / "data_batch_0" /
                "data_batch_0.7")
    log = output / "imagenet_db.batches.log"
    lines = log.read_text().splitlines(keepends=True)
    index, label, relpath = lines[0].rstrip("\n").split("\t")
    lines[0] = f"{index}\t{(int(label) + 1) % 5}\t{relpath}\n"
    log.write_text("".join(lines))
    rc, out = run(capsys, output)
    found = problems(out)
    assert rc == 1
    extra = output / "data_batch_0" / "data_batch_0.7"
    assert any(p.startswith(f"{extra}: not part") for p in found)
    assert any(p.startswith(f"{log}: ") and "entries_sha256" in p for p in found)
    assert any("labels differ from the log" in p for p in found)


def test_unfinished_build_is_reported_as_unfinished(built, tmp_path, capsys):
    output = damaged_copy(built, "theano-alexnet", tmp_path)
    partial = output.with_name(output.name + ".partial")
    output.rename(partial)
    (partial / "imagenet_db.json").unlink()
    for path in (output, partial):
        rc, out = run(capsys, path)
        assert rc == 1 and "unfinished imagenet-db build" in out and "--resume" in out
        assert "damaged" not in out and "cannot be loaded" not in out
    # build files left without a completion record, under the final name
    partial.rename(output)
    rc, out = run(capsys, output)
    assert rc == 1 and "unfinished imagenet-db build" in out and "imagenet_db.batches.log" in out


def test_not_an_output_says_what_verify_accepts(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    shutil.copy(sorted((REPO / "examples" / "photos").glob("*.jpg"))[0], tmp_path / "photos")
    rc, out = run(capsys, tmp_path / "photos")
    assert rc == 1 and out.count("\n") == 1
    assert all(word in out for word in ("LMDB", "cuda-convnet2", "theano-alexnet", "folder"))
