"""Every output pinned by digest: databases, mean files, aux files and skip reports.

Every input is a file in the repository: the bundled sample and ``tests/data/golden_inputs/``
(24 ImageNet-like JPEGs, the odd image files, an ILSVRC2012 archive triple). They were made
once by ``imagenet_db.testing`` and frozen (issue 18): generated at test time, their bytes
followed the installed OpenCV's JPEG encoder and resize, so a new OpenCV moved the digests
although the product had not changed. A pinned output must start from bytes that cannot drift.

The digests in ``golden_digests.json`` were first taken from the code before the package was
split into sources/imaging/outputs (issue 8) and re-pinned once from the frozen inputs; a
restructuring must leave every byte the same. LMDB and LevelDB contents are digested as their
(key, value) pairs in key order (LevelDB's files are not deterministic byte for byte); the
other files as their bytes. Regenerate only for a deliberate output change:
``python3 tests/test_golden_outputs.py --write``. ``--freeze-inputs`` remakes the inputs with
the installed libraries (then the digests must be re-pinned too, saying why).
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import lmdb
import plyvel
import pytest

from imagenet_db.cli import main
from imagenet_db.testing.archives import ArchiveSpec, write_archives
from imagenet_db.testing.photos import odd_images, write_corpus

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample_imagenet"
GOLDEN = Path(__file__).with_name("golden_digests.json")
INPUTS = Path(__file__).parent / "data" / "golden_inputs"
WNIDS = ["n01440764", "n01443537", "n02119789", "n04592741"]


def _kv_digest(path: Path) -> str:
    digest = hashlib.sha256()
    if (path / "data.mdb").exists():
        env = lmdb.open(str(path), readonly=True, lock=False)
        with env.begin() as txn:
            pairs = list(txn.cursor())
        env.close()
    else:
        db = plyvel.DB(str(path))
        pairs = list(db.iterator())
        db.close()
    for key, value in pairs:
        digest.update(len(key).to_bytes(4, "little") + key + len(value).to_bytes(8, "little"))
        digest.update(value)
    return f"{len(pairs)}:{digest.hexdigest()}"


def _digests(outdir: Path) -> dict:
    found = {}
    for path in sorted(outdir.rglob("*")):
        rel = path.relative_to(outdir).as_posix()
        if path.is_dir() and ((path / "data.mdb").exists() or (path / "CURRENT").exists()):
            found[rel + "/"] = _kv_digest(path)
        elif path.name == "report.html":  # holds paths and times; see tests/test_pictures.py
            found[rel] = "present"
        elif path.is_file() and path.parent == outdir:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _run(argv):
    assert main(argv) == 0, argv


def freeze_inputs(dest: Path = INPUTS) -> None:
    """Write the generated inputs under ``dest`` (run once; see the module docstring)."""
    shutil.rmtree(dest, ignore_errors=True)
    for name, data in sorted(odd_images().items()):
        (dest / "odd").mkdir(parents=True, exist_ok=True)
        (dest / "odd" / f"{name}.JPEG").write_bytes(data)
    write_corpus(dest / "corpus", 24, seed=5)
    write_archives(dest / "archives", ArchiveSpec(wnids=WNIDS, train_per_class=4, val_count=8, seed=11))


def _odd_tree(root: Path) -> Path:
    images = root / "images"
    shutil.copytree(INPUTS / "odd", images)
    names = sorted(path.name for path in images.iterdir())
    (root / "list.txt").write_text("".join(f"{name} {i % 3}\n" for i, name in enumerate(names)))
    return images


def build_all(work: Path) -> dict:
    """Build every pinned configuration under ``work``; {config: {file: digest}}."""
    results = {}
    sample = work / "sample"
    shutil.copytree(SAMPLE, sample)
    out = work / "sample_lmdb"
    _run(["create", str(sample), str(out), "--no-progress", "--workers", "2"])
    results["create sample lmdb"] = _digests(out)
    out = work / "sample_leveldb_encoded"
    _run(["create", str(sample), str(out), "--no-progress", "--backend", "leveldb",
          "--encoded", "--seed", "7", "--resize", "64x48"])
    results["create sample leveldb encoded"] = _digests(out)

    images = _odd_tree(work / "odd")
    out = work / "odd_out"
    out.mkdir()
    _run(["convert", "--no-progress", "--shuffle", "--seed=3", "--gray", "--resize_height=32",
          "--resize_width=48", f"{images}/", str(work / "odd" / "list.txt"), str(out / "gray_lmdb")])
    _run(["convert", "--no-progress", "--encoded", "--encode_type=png", f"{images}/",
          str(work / "odd" / "list.txt"), str(out / "png_lmdb")])
    _run(["mean", str(out / "gray_lmdb"), str(out / "gray_mean.binaryproto")])
    results["convert odd images"] = _digests(out)

    corpus = shutil.copytree(INPUTS / "corpus", work / "corpus")
    names = sorted(path.name for path in corpus.iterdir())
    (work / "corpus.txt").write_text("".join(f"{name} {i % 5}\n" for i, name in enumerate(names)))
    out = work / "corpus_out"
    out.mkdir()
    _run(["convert", "--no-progress", "--resize_height=256", "--resize_width=256", "--shuffle",
          f"{corpus}/", str(work / "corpus.txt"), str(out / "train_lmdb")])
    _run(["convert", "--no-progress", "--backend=leveldb", "--fast_decode",
          "--resize_height=100", "--resize_width=120", f"{corpus}/", str(work / "corpus.txt"),
          str(out / "fast_leveldb")])
    _run(["mean", str(out / "train_lmdb"), str(out / "mean.npy")])
    results["convert corpus"] = _digests(out)

    arch = shutil.copytree(INPUTS / "archives", work / "archives")
    out = work / "archive_out"
    _run(["create", str(arch), str(out), "--no-progress", "--resize", "24x24"])
    results["create archives"] = _digests(out)
    return results


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_all(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("config", sorted(json.loads(GOLDEN.read_text())))
def test_outputs_match_pinned_digests(built, config):
    expected = json.loads(GOLDEN.read_text())[config]
    assert built[config] == expected


if __name__ == "__main__":
    if "--freeze-inputs" in sys.argv:
        freeze_inputs()
        print(f"wrote {INPUTS}")
    if "--write" in sys.argv:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            GOLDEN.write_text(json.dumps(build_all(Path(tmp)), indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
