"""Every distribution as SOURCE (ILSVRC2015 CLS-LOC .tar.gz or extracted, the 2014/2015 devkits
also beside the 2012 tars, Kaggle's zip / zip holding a .tar.gz / .tar.gz / extracted): the same
aux files and databases as the ILSVRC2012 archives for the same images, and clear errors.
Fixtures: imagenet_db.testing.clsloc, from the same real-photo JPEGs as the 2012 triple."""
import gzip
import json
import pickle
import shutil
from pathlib import Path

import pytest

from conftest import parse_datum, read_lmdb
from imagenet_db.cli import create_imagenet_main, main
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.errors import ImagenetDbError
from imagenet_db.recipes.extract import extract
from imagenet_db.recipes.imagenet import write_labels
from imagenet_db.sources import detect, ilsvrc2012, ilsvrc2015, kaggle, open_dataset
from imagenet_db.sources.archives import gzindex
from imagenet_db.testing import clsloc as F
from imagenet_db.testing.archives import ArchiveSpec

AUX = ("synsets.txt", "train.txt", "val.txt")
SMALL_WNIDS = ["n01440764", "n01443537", "n01751748", "n02105855", "n02119789", "n09193705"]


def quiet(_text):
    pass


def _variants(root: Path, base: dict) -> dict:
    """{name: SOURCE folder} of every distribution written from ``base``'s images."""
    out = {"ilsvrc2012": base["paths"]["train"].rsplit("/", 1)[0]}
    F.write_ilsvrc2015(root / "c15", base)
    F.write_ilsvrc2015(root / "c15x", base, form="tree")
    out.update({"2015 tar.gz + devkit": root / "c15", "2015 extracted": root / "c15x",
                "2015 extracted, SOURCE=ILSVRC2015/": root / "c15x" / "ILSVRC2015",
                "2015 extracted, SOURCE=Data/CLS-LOC": root / "c15x" / "ILSVRC2015" / "Data" / "CLS-LOC"})
    F.write_ilsvrc2015(root / "c15nodev", base, devkit=False)
    out["2015 tar.gz, no devkit"] = root / "c15nodev"
    for kit in ("2014", "2015"):
        folder = root / f"t12-{kit}"
        folder.mkdir()
        for key in ("train", "val"):
            shutil.copy(base["paths"][key], folder)
        if kit == "2014":
            F.write_devkit2014(folder, base)
        else:
            F._targz(folder / "ILSVRC2015_devkit.tar.gz", F.devkit2015_members(base))
        out[f"2012 tars + {kit} devkit"] = folder
    for form in ("zip", "zip-targz", "targz", "tree"):
        out[f"kaggle {form}"] = Path(F.write_kaggle(root / f"k-{form}", base, form=form)).parent \
            if form.startswith("zip") else Path(F.write_kaggle(root / f"k-{form}", base, form=form))
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The real 1,000 classes (real IDs, words, first ground-truth IDs), one tiny image each,
    12 val images, in every distribution."""
    root = tmp_path_factory.mktemp("full")
    base = F.write_base(root, ArchiveSpec(train_per_class=1, val_count=12, image_size=(32, 24),
                                          seed=1))
    base["sources"] = _variants(root, base)
    return base


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """6 classes x 3 train images, 8 val images, in every distribution (for database builds)."""
    root = tmp_path_factory.mktemp("small")
    base = F.write_base(root, ArchiveSpec(wnids=SMALL_WNIDS, train_per_class=3, val_count=8,
                                          seed=4))
    base["root"] = root
    base["sources"] = _variants(root, base)
    return base


def test_every_distribution_is_detected_as_itself(full):
    want = {"ilsvrc2012": ilsvrc2012, "kaggle": kaggle}
    for name, source in full["sources"].items():
        module = want.get(name.split()[0], ilsvrc2012 if name.startswith("2012") else ilsvrc2015)
        assert detect(source) is module, name


def test_labels_are_byte_identical_to_ilsvrc2012_from_every_distribution(full, tmp_path):
    ref = tmp_path / "ref"
    write_labels(full["sources"]["ilsvrc2012"], str(ref), log=quiet)
    assert (ref / "val.txt").read_text().startswith("ILSVRC2012_val_00000001.JPEG 65\n")
    assert len((ref / "synsets.txt").read_text().splitlines()) == 1000
    for name, source in full["sources"].items():
        out = tmp_path / name.replace(" ", "_").replace("/", "_").replace("=", "_")
        notes = []
        write_labels(source, str(out), log=notes.append)
        for aux in AUX:
            assert (out / aux).read_bytes() == (ref / aux).read_bytes(), (name, aux)
        words = out / "synset_words.txt"
        if "no devkit" in name:  # the XMLs carry no words
            assert not words.exists(), name
        else:
            assert words.read_bytes() == (ref / "synset_words.txt").read_bytes(), name


def test_map_clsloc_alone_gives_short_names_and_says_so(full, tmp_path):
    folder = tmp_path / "c15"
    shutil.copy(Path(full["sources"]["2015 tar.gz + devkit"]) / "ILSVRC2015_CLS-LOC.tar.gz", folder.mkdir() or folder)
    members = [m for m in F.devkit2015_members(full) if not m[0].endswith("meta_clsloc.mat")]
    F._targz(folder / "ILSVRC2015_devkit.tar.gz", members)
    notes = []
    write_labels(str(folder), str(tmp_path / "out"), log=notes.append)
    words = (tmp_path / "out" / "synset_words.txt").read_text().splitlines()
    assert "n02119789 kit fox" in words and "n01440764 tench" in words
    assert any("map_clsloc.txt's short names" in n for n in notes)


def _datum_labels(db):
    return {k.decode().split("_", 1)[1]: parse_datum(v).label for k, v in read_lmdb(db)}


@pytest.mark.parametrize("name", ["2015 tar.gz + devkit", "kaggle zip", "kaggle zip-targz",
                                  "2012 tars + 2014 devkit"])
def test_create_imagenet_builds_the_ilsvrc2012_databases(small, tmp_path, name):
    ref = small["root"] / "ref-build"
    if not ref.exists():
        assert create_imagenet_main([small["sources"]["ilsvrc2012"], str(ref), "--resize=16x16",
                                     "--workers=2", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert create_imagenet_main([small["sources"][name], str(out), "--resize=16x16",
                                 "--workers=2", "--no-progress"]) == 0
    for split in ("train", "val"):
        listed = dict(line.rsplit(" ", 1) for line in (out / f"{split}.txt").read_text().splitlines())
        labels = _datum_labels(out / f"ilsvrc12_{split}_lmdb")
        assert labels == {rel: int(label) for rel, label in listed.items()}
        assert read_lmdb(out / f"ilsvrc12_{split}_lmdb") == read_lmdb(ref / f"ilsvrc12_{split}_lmdb")
    assert (out / "imagenet_mean.binaryproto").read_bytes() == \
        (ref / "imagenet_mean.binaryproto").read_bytes()


def test_loaders_pickle_for_cluster_workers(small, monkeypatch, tmp_path):
    for name in ("2015 tar.gz + devkit", "kaggle zip", "kaggle zip-targz"):
        dataset = open_dataset(small["sources"][name])
        for split in dataset.splits.values():
            record = split.records(True, 0)[0]
            assert pickle.loads(pickle.dumps(record.load))() == record.load(), name
    # a large index travels as the path of its cache file, rebuilt once per process
    monkeypatch.setattr(gzindex, "INLINE_SEEK_POINTS", 0)
    monkeypatch.setattr(gzindex, "_SHARED", {})
    shutil.copytree(small["sources"]["2015 tar.gz + devkit"], tmp_path / "c15")
    load = open_dataset(str(tmp_path / "c15")).splits["train"].records(False, 0)[3].load
    payload = pickle.dumps(load)
    assert len(payload) < 1000 and load.reader.seek_file.encode() in payload
    a, b = pickle.loads(payload), pickle.loads(payload)
    assert a.reader is b.reader and a() == load()
    monkeypatch.setattr(gzindex, "_SHARED", {})
    Path(load.reader.seek_file).write_bytes(b"stale")
    with pytest.raises(OSError, match="is not the one the build uses"):
        pickle.loads(payload)


def test_targz_index_is_cached(small, monkeypatch, tmp_path):
    folder = tmp_path / "c15"
    shutil.copytree(small["sources"]["2015 tar.gz + devkit"], folder)
    first = open_dataset(str(folder))
    monkeypatch.setattr(gzindex, "build_index", lambda *a, **k: pytest.fail("index rebuilt"))
    again = open_dataset(str(folder))
    assert again.splits["val"].entries == first.splits["val"].entries
    assert again.splits["val"].records(False, 0)[0].load() == first.splits["val"].records(False, 0)[0].load()


def test_extract_gives_the_same_tree_from_every_archive(small, tmp_path):
    ref, build = tmp_path / "ref", BuildOptions(workers=2, progress=False)
    extract(small["sources"]["ilsvrc2012"], str(ref), build=build, log=quiet)
    want = {str(p.relative_to(ref)): p.read_bytes() for p in ref.rglob("*") if p.is_file()}
    want_records = {k: want.pop(k) for k in ("train/imagenet_db.json", "val/imagenet_db.json")}
    logs = ("train/imagenet_db.files.log", "val/imagenet_db.files.log")
    want_logs = {k: want.pop(k) for k in logs}
    for name in ("2015 tar.gz + devkit", "kaggle zip", "kaggle targz"):
        dest = tmp_path / name.replace(" ", "_")
        s = extract(small["sources"][name], str(dest), build=build, log=quiet)
        got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        for log in logs:  # the files written, in the order they were read (archive order)
            assert sorted(line.split(b"\t", 1)[1] for line in got.pop(log).splitlines()) == \
                sorted(line.split(b"\t", 1)[1] for line in want_logs[log].splitlines()), name
        for record in ("train/imagenet_db.json", "val/imagenet_db.json"):
            # the completion records name the order the files were read in (archive order)
            a, b = json.loads(got.pop(record)), json.loads(want_records[record])
            assert {k: v for k, v in a.items() if k not in ("list_sha256", "entries_sha256")} == \
                {k: v for k, v in b.items() if k not in ("list_sha256", "entries_sha256")}, \
                (name, record)
        assert got == want, name
        assert s.written == len(small["train"]) + len(small["val"])


def test_drop_val_blacklist(small, tmp_path):
    blacklisted = {f"ILSVRC2012_val_{n:08d}.JPEG" for n in small["blacklist"]}
    assert main(["labels", small["sources"]["2015 tar.gz + devkit"], str(tmp_path / "a"),
                 "--drop_val_blacklist"]) == 0
    names = [line.split()[0] for line in (tmp_path / "a" / "val.txt").read_text().splitlines()]
    assert len(names) == len(small["val"]) - len(blacklisted) and not blacklisted & set(names)
    assert main(["labels", small["sources"]["2015 tar.gz + devkit"], str(tmp_path / "b")]) == 0
    assert len((tmp_path / "b" / "val.txt").read_text().splitlines()) == len(small["val"])
    with pytest.raises(ImagenetDbError, match="no devkit with a validation blacklist"):
        write_labels(small["sources"]["kaggle zip"], str(tmp_path / "c"), log=quiet,
                     drop_blacklist=True)


# ------------------------------------------------------------------ errors
def test_xml_and_csv_labels_that_disagree_fail_on_the_first_image(small, tmp_path):
    F.write_kaggle(tmp_path / "k", small, form="tree", csv_wnid={3: "n01443537", 6: "n01443537"})
    with pytest.raises(ImagenetDbError) as err:
        open_dataset(str(tmp_path / "k"))
    text = str(err.value)
    assert text.startswith("ILSVRC2012_val_00000003.JPEG: ") and "LOC_val_solution.csv" in text
    assert "ILSVRC2012_val_00000003.xml" in text and "n01443537" in text and "disagree" in text


def test_xml_and_devkit_ground_truth_that_disagree_fail(small, tmp_path):
    folder = tmp_path / "c15"
    shutil.copytree(small["sources"]["2015 tar.gz + devkit"], folder)
    truth = list(small["ground_truth"])
    truth[4] = next(i for i, w, _ in small["classes"] if w != small["val"][4][1])
    F._targz(folder / "ILSVRC2015_devkit.tar.gz", F.devkit2015_members(small, truth))
    with pytest.raises(ImagenetDbError, match=r"ILSVRC2012_val_00000005.JPEG: .*\.xml says .* but "
                                              r".*ILSVRC2015_clsloc_validation_ground_truth.txt:5"):
        open_dataset(str(folder))


def test_devkits_beside_the_2012_tars_must_agree(small, tmp_path):
    folder = tmp_path / "t12"
    shutil.copytree(small["sources"]["2012 tars + 2014 devkit"], folder)
    shutil.copy(Path(small["sources"]["ilsvrc2012"]) / "ILSVRC2012_devkit_t12.tar.gz", folder)
    assert open_dataset(str(folder)).splits["val"].entries  # 2012 + 2014 agree
    truth = list(small["ground_truth"])
    truth[1] = next(i for i, w, _ in small["classes"] if w != small["val"][1][1])
    F.write_devkit2014(folder, small, truth=truth)
    with pytest.raises(ImagenetDbError, match=r"ILSVRC2012_val_00000002.JPEG: .*:2 says"):
        open_dataset(str(folder))


def test_truncated_targz_is_a_one_line_error(small, tmp_path, capsys):
    folder = tmp_path / "c15"
    folder.mkdir()
    data = (Path(small["sources"]["2015 tar.gz + devkit"]) / "ILSVRC2015_CLS-LOC.tar.gz").read_bytes()
    (folder / "ILSVRC2015_CLS-LOC.tar.gz").write_bytes(data[:len(data) * 2 // 3])
    assert main(["labels", str(folder), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ILSVRC2015_CLS-LOC.tar.gz" in err and ("truncated" in err or "damaged" in err)
    assert "Traceback" not in capsys.readouterr().err
    # a gzip stream that ends cleanly but holds a cut tar
    tar = gzip.decompress(data)
    (folder / "ILSVRC2015_CLS-LOC.tar.gz").write_bytes(gzip.compress(tar[:len(tar) // 2]))
    with pytest.raises(ImagenetDbError, match="ILSVRC2015_CLS-LOC.tar.gz: .*(truncated|damaged)"):
        open_dataset(str(folder))
    (folder / "ILSVRC2015_CLS-LOC.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ImagenetDbError, match="not a gzip file"):
        open_dataset(str(folder))


def test_zip_with_a_missing_member_names_it(small, tmp_path):
    missing = "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG"
    F.write_kaggle(tmp_path / "k", small, form="zip", missing=missing)
    with pytest.raises(ImagenetDbError, match=r"\.zip:ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_"
                                              r"val_00000003.xml labels ILSVRC2012_val_00000003.JPEG "
                                              r"but .*\.zip:ILSVRC/Data/CLS-LOC/val/ has no such image"):
        open_dataset(str(tmp_path / "k"))
    zip_path = tmp_path / "k" / kaggle.ZIP
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[:-200])
    with pytest.raises(ImagenetDbError, match="not a readable zip"):
        open_dataset(str(tmp_path / "k"))


def test_malformed_csv_row_names_file_and_line(small, tmp_path):
    F.write_kaggle(tmp_path / "k", small, form="zip", bad_row="ILSVRC2012_val_00000002,n01440764 1 2")
    with pytest.raises(ImagenetDbError, match=r"LOC_val_solution.csv:6: PredictionString "
                                              r"'n01440764 1 2' is not"):
        open_dataset(str(tmp_path / "k"))
    F.write_kaggle(tmp_path / "k2", small, form="tree", bad_row="ILSVRC2012_val_00000002")
    with pytest.raises(ImagenetDbError, match=r"LOC_val_solution.csv:6: expected 'ImageId,"
                                              r"PredictionString', got 1 field"):
        open_dataset(str(tmp_path / "k2"))


def test_nothing_found_lists_what_was_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["labels", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    for name in (kaggle.ZIP, "LOC_val_solution.csv", "ILSVRC2015_CLS-LOC.tar.gz",
                 "ILSVRC2012_img_train.tar", "ILSVRC2014_devkit.tgz", "train/<wnid>/"):
        assert name in err
    assert len(err.strip().splitlines()) == 1


def test_clsloc_val_sorted_into_folders_is_not_silently_dropped(small, tmp_path):
    shutil.copytree(small["sources"]["2015 extracted"], tmp_path / "x")
    val = tmp_path / "x" / "ILSVRC2015" / "Data" / "CLS-LOC" / "val"
    (val / "n01751748").mkdir()
    (val / "ILSVRC2012_val_00000001.JPEG").rename(val / "n01751748" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ImagenetDbError, match="is sorted into synset folders"):
        open_dataset(str(tmp_path / "x"))
