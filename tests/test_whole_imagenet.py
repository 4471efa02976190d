"""The whole ImageNet as SOURCE (issue 20): fall11_whole.tar, winter21_whole.tar.gz and the
extracted forms, Caffe's labels, --min_class_images / --val_per_class / --recipe
imagenet21k-p, every format, and the bad inputs. Fixtures: imagenet_db.testing.whole."""
import os
import pickle

import pytest

from conftest import parse_datum, read_lmdb
from imagenet_db.cli import create_imagenet_main, main
from imagenet_db.sources import detect, fall11, load_dataset, open_dataset, synset_tars, winter21
from imagenet_db.testing.whole import (WholeSpec, synset_contents, tar_bytes, write_fall11,
                                       write_synset_tars, write_winter21)

SMALL = WholeSpec(synsets=200)
CLI = ["--workers=2", "--no-progress", "--no-report"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """fall11 (3,000 synset tars), winter21 and the extracted forms (200 each, same images)."""
    root = tmp_path_factory.mktemp("whole")
    return {"fall11": (root / "f11", write_fall11(root / "f11")),
            "fall11-small": (root / "f11s", write_fall11(root / "f11s", SMALL)),
            "winter21": (root / "w21", write_winter21(root / "w21", SMALL)),
            "extracted": (root / "ext", write_synset_tars(root / "ext", SMALL, folders=3))}


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def _labels(source, out, *flags):
    assert main(["labels", str(source), str(out), *flags]) == 0
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}


def test_each_download_is_detected_as_itself(made):
    for name, module in (("fall11", fall11), ("winter21", winter21), ("extracted", synset_tars)):
        assert detect(str(made[name][0])) is module


def test_labels_are_caffes_for_the_synsets_with_images(made, tmp_path, capsys):
    source, names = made["fall11"]
    files = _labels(source, tmp_path / "out")
    assert sorted(files) == ["synset_words.txt", "synsets.txt", "train.txt"]  # no val: none
    with_images = sorted(w for w, n in names.items() if n)
    assert len(names) == 3000 and len(with_images) == 2996
    assert _lines(tmp_path / "out" / "synsets.txt") == with_images
    assert _lines(tmp_path / "out" / "train.txt") == [
        f"{w}/{n} {label}" for label, w in enumerate(with_images) for n in names[w]]
    words = dict(line.split(" ", 1) for line in _lines(tmp_path / "out" / "synset_words.txt"))
    assert words["n01440764"] == "tench, Tinca tinca" and list(words) == with_images
    assert "note: 4 synset(s) hold no images and get no label" in capsys.readouterr().err


def test_every_form_gives_the_same_aux_files(made, tmp_path):
    flags = ("--min_class_images", "6", "--val_per_class", "2")
    outs = [_labels(made[name][0], tmp_path / name, *flags)
            for name in ("fall11-small", "winter21", "extracted")]
    assert outs[0] == outs[1] == outs[2]
    assert sorted(outs[0]) == ["dropped_classes.txt", "synset_words.txt", "synsets.txt",
                               "train.txt", "val.txt"]


def test_split_is_deterministic_with_its_counts(made, tmp_path):
    source, names = made["fall11"]
    flags = ("--min_class_images", "6", "--val_per_class", "2")
    first, again = _labels(source, tmp_path / "a", *flags), _labels(source, tmp_path / "b", *flags)
    assert first == again
    kept = sorted(w for w, n in names.items() if len(n) >= 6)
    assert kept == ["n00007846", "n01440764", "n01443537", "n01484850"]
    assert _lines(tmp_path / "a" / "synsets.txt") == kept
    val = _lines(tmp_path / "a" / "val.txt")
    assert val == [f"{w}/{n} {label}" for label, w in enumerate(kept) for n in sorted(names[w])[:2]]
    train = _lines(tmp_path / "a" / "train.txt")
    assert train == [f"{w}/{n} {label}" for label, w in enumerate(kept) for n in sorted(names[w])[2:]]
    assert len(train) == sum(len(names[w]) - 2 for w in kept) == 21
    dropped = _lines(tmp_path / "a" / "dropped_classes.txt")
    assert "n00005787 5" in dropped and len(dropped) == 2996 - 4
    assert all(line.split()[0] not in kept for line in dropped)


def test_recipe_keeps_classes_with_more_than_500_images(tmp_path):
    spec = WholeSpec(synsets=3, empty=0, counts={"n01440764": 500, "n01443537": 501},
                     jpegs=((8, 8),))
    write_synset_tars(tmp_path / "src", spec)
    files = _labels(tmp_path / "src", tmp_path / "out", "--recipe", "imagenet21k-p")
    assert _lines(tmp_path / "out" / "synsets.txt") == ["n01443537"]  # 501 kept, 500 dropped
    assert len(_lines(tmp_path / "out" / "val.txt")) == 50
    assert len(_lines(tmp_path / "out" / "train.txt")) == 451
    assert files["dropped_classes.txt"].decode().splitlines()[:2] == ["n00004475 1",
                                                                      "n01440764 500"]


def _caffe_check(out, source_names, size):
    for split in ("train", "val"):
        listed = dict(line.rsplit(" ", 1) for line in _lines(out / f"{split}.txt"))
        rows = read_lmdb(out / f"ilsvrc12_{split}_lmdb")
        assert len(rows) == len(listed)
        for key, value in rows:
            datum = parse_datum(value)
            assert datum.label == int(listed[key.decode().split("_", 1)[1]])
            small = max(datum.width, datum.height) < size  # MIIL: kept unless longer side >= N
            assert small or (datum.width, datum.height) == (size, size)


@pytest.mark.parametrize("name", ["fall11", "winter21"])
@pytest.mark.parametrize("fmt", ["caffe", "cuda-convnet2", "theano-alexnet", "folder"])
def test_every_format_builds_from_both_downloads(made, tmp_path, name, fmt):
    source, names = made[name]
    out = tmp_path / "out"
    flags = {"caffe": ["--miil_size", "100"], "folder": [],
             "cuda-convnet2": ["--min_class_images", "8", "--batch_images", "6"],
             "theano-alexnet": ["--resize", "32x32", "--batch_images", "6"]}[fmt]
    argv = [str(source), str(out), "--format", fmt, "--recipe", "imagenet21k-p",
            "--min_class_images", "6", "--val_per_class", "2", *CLI, *flags]
    assert create_imagenet_main(argv) == 0
    classes = _lines(out / "synsets.txt")
    assert classes == sorted(w for w, n in names.items() if len(n) >= (8 if "8" in flags else 6))
    if fmt == "caffe":
        _caffe_check(out, names, 100)
    if fmt == "folder":
        spec = WholeSpec() if name == "fall11" else SMALL
        by_name = {n: data for files in synset_contents(spec).values() for n, data in files}
        for line in _lines(out / "val.txt"):
            relpath = line.rsplit(" ", 1)[0]
            assert (out / "val" / relpath).read_bytes() == by_name[relpath.split("/")[1]]
    if fmt == "cuda-convnet2":  # 16 train images in batches of 6, val after them
        made_files = sorted(os.listdir(out / "ilsvrc12_cuda_convnet2"))
        assert [f for f in made_files if f.startswith("data_batch_")] == [
            "data_batch_0", "data_batch_1", "data_batch_1000"] and "batches.meta" in made_files
    if fmt == "theano-alexnet":  # batches of 6 (+ halves of 3) of the 21 train, 8 val images
        made_files = os.listdir(out / "ilsvrc12_theano_alexnet")
        assert sorted(f for f in made_files if "_hkl_" in f) == [
            "train_hkl_b6_b_3", "train_hkl_b6_b_6", "val_hkl_b6_b_3", "val_hkl_b6_b_6"]
        assert len(os.listdir(out / "ilsvrc12_theano_alexnet" / "train_hkl_b6_b_6")) == 3


def test_devkit_order_refuses_a_class_outside_ilsvrc2012(made, tmp_path, capsys):
    argv = [str(made["fall11"][0]), str(tmp_path / "out"), "--format", "cuda-convnet2",
            "--min_class_images", "6", "--val_per_class", "2", *CLI]
    assert create_imagenet_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: synset n00007846 is not one of ILSVRC2012's 1,000 classes (1 such "
                       "synset(s)): the devkit order (ILSVRC2012_ID) labels those classes only")


def test_the_extracted_form_builds_the_same_database(made, tmp_path):
    outs = []
    for name in ("winter21", "extracted"):
        outs.append(tmp_path / name)
        assert create_imagenet_main([str(made[name][0]), str(outs[-1]), "--resize", "24x24",
                                     "--val_per_class", "2", "--min_class_images", "6",
                                     *CLI]) == 0
    for split in ("train", "val"):
        a = read_lmdb(outs[0] / f"ilsvrc12_{split}_lmdb")
        assert a and a == read_lmdb(outs[1] / f"ilsvrc12_{split}_lmdb")


def test_miil_short_edge_variant(tmp_path, made):
    out = tmp_path / "out"
    assert create_imagenet_main([str(made["winter21"][0]), str(out), "--miil_size", "100",
                                 "--miil_short_edge", "--min_class_images", "6", *CLI]) == 0
    for _, value in read_lmdb(out / "ilsvrc12_train_lmdb"):
        d = parse_datum(value)
        assert max(d.width, d.height) < 100 or min(d.width, d.height) == 100


def test_loaders_pickle_for_cluster_workers(made):
    for name in ("fall11-small", "winter21", "extracted"):
        split = open_dataset(str(made[name][0])).splits["train"]
        for relpath, _ in split.entries[:3] + split.entries[-3:]:
            loader = split.loader(relpath)
            assert pickle.loads(pickle.dumps(loader))() == loader()


# --- bad input -------------------------------------------------------------------------

def _jpeg():
    return synset_contents(WholeSpec(synsets=1, empty=0, counts={}))["n00004475"][0][1]


def _fall11_of(tmp_path, synsets):
    """A fall11_whole.tar of [(wnid.tar, bytes or [(member, bytes)])], in a new folder (the
    index cache knows a file by path, size, mtime and inode)."""
    root = tmp_path / f"bad{len(list(tmp_path.glob('bad*')))}"
    root.mkdir()
    members = [(name, data if isinstance(data, bytes) else tar_bytes(data))
               for name, data in synsets]
    (root / "fall11_whole.tar").write_bytes(tar_bytes(members))
    return root


def _one_line_error(source, tmp_path, capsys):
    assert main(["labels", str(source), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err  # (a .tar.gz logs 'indexing ...' first)
    assert "Traceback" not in err and err.count("error:") == 1, err
    return err.strip().splitlines()[-1]


def test_a_synset_tar_that_is_not_a_tar_names_the_member(tmp_path, capsys):
    source = _fall11_of(tmp_path, [("n00004475.tar", [("n00004475_1.JPEG", _jpeg())]),
                                   ("n00005787.tar", b"this is no tar archive " * 40)])
    err = _one_line_error(source, tmp_path, capsys)
    assert "fall11_whole.tar: member n00005787.tar: " in err and "tar" in err


def test_members_outside_their_synset_and_repeated_synsets_are_errors(tmp_path, capsys):
    good = [("n00004475_1.JPEG", _jpeg())]
    for bad in ("../n00004475_2.JPEG", "n00005787/n00005787_2.JPEG", "/n00004475_2.JPEG"):
        source = _fall11_of(tmp_path, [("n00004475.tar", good + [(bad, _jpeg())])])
        err = _one_line_error(source, tmp_path, capsys)
        assert f"member n00004475.tar: member {bad!r} lies outside its synset" in err
    source = _fall11_of(tmp_path, [("n00004475.tar", good), ("n00004475.tar", good)])
    assert "fall11_whole.tar: member n00004475.tar occurs twice" in _one_line_error(source, tmp_path, capsys)
    source = _fall11_of(tmp_path, [("readme.txt", b"hello")])
    assert "fall11_whole.tar: member readme.txt: not a readable" in _one_line_error(
        source, tmp_path, capsys)


def test_empty_tars_non_images_and_zero_byte_members_are_counted_skips(tmp_path, capsys):
    source = _fall11_of(tmp_path, [
        ("n00004475.tar", [("n00004475_1.JPEG", _jpeg()), ("n00004475_2.JPEG", b""),
                           ("README.txt", b"not an image"),
                           ("n00004475_3.JPEG", b"GIF89a not a jpeg at all")]),
        ("n00005787.tar", []), ("n00006024.tar", b"")])
    found = load_dataset(str(source), log=lambda _: None)
    assert found.synsets == ["n00004475"]
    assert [rel for rel, _ in found.splits["train"].entries] == [
        "n00004475/n00004475_1.JPEG", "n00004475/n00004475_3.JPEG"]
    assert found.notes == [
        f"left out 1 members that are not images (by name), e.g. {source}/fall11_whole.tar: "
        f"member n00004475.tar: README.txt",
        f"left out 1 empty (0-byte) members, e.g. {source}/fall11_whole.tar: member "
        f"n00004475.tar: n00004475_2.JPEG",
        "2 synset(s) hold no images and get no label, e.g. n00005787"]
    out = tmp_path / "out"  # the non-JPEG bytes named .JPEG: a skip of the build, listed
    assert create_imagenet_main([str(source), str(out), "--resize", "8x8", *CLI]) == 0
    skipped = (out / "ilsvrc12_train_lmdb.skipped.tsv").read_text()
    assert "n00004475/n00004475_3.JPEG" in skipped and len(read_lmdb(out / "ilsvrc12_train_lmdb")) == 1


def test_the_same_synset_as_tar_and_folder_is_an_error(tmp_path, capsys):
    write_synset_tars(tmp_path / "ext", WholeSpec(synsets=5, empty=0, counts={}))
    (tmp_path / "ext" / "n00004475").mkdir()
    (tmp_path / "ext" / "n00004475" / "n00004475_9.JPEG").write_bytes(_jpeg())
    err = _one_line_error(tmp_path / "ext", tmp_path, capsys)
    assert err.endswith("synset n00004475 is there twice, as n00004475.tar and as the folder "
                        "n00004475/; keep one")


def test_a_gzip_stream_that_ends_early_is_a_one_line_error(made, tmp_path, capsys):
    data = (made["winter21"][0] / "winter21_whole.tar.gz").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "winter21_whole.tar.gz").write_bytes(data[:len(data) // 2])
    err = _one_line_error(tmp_path / "cut", tmp_path, capsys)
    assert "winter21_whole.tar.gz: " in err and ("truncated" in err or "damaged" in err)


def test_words_txt_beside_the_archive_wins_and_a_line_without_tab_is_an_error(tmp_path, capsys):
    source = _fall11_of(tmp_path, [("n00004475.tar", [("n00004475_1.JPEG", _jpeg())])])
    (source / "words.txt").write_text("n00004475\tliving thing, organism\nn00005787\tbenthos\n")
    assert load_dataset(str(source), log=lambda _: None).words == {
        "n00004475": "living thing, organism"}
    (source / "words.txt").write_text("n00004475\tok\nn00005787 benthos\n")
    err = _one_line_error(source, tmp_path, capsys)
    assert err == (f"error: {source}/words.txt:2: expected 'n00004475<TAB>words', got "
                   f"'n00005787 benthos'")


def test_verify_checks_winter21_against_the_published_md5(made, tmp_path, capsys):
    argv = [str(made["winter21"][0]), str(tmp_path / "out"), "--verify", *CLI]
    assert create_imagenet_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {made['winter21'][0]}/winter21_whole.tar.gz: MD5 ")
    assert "differs from the published ab313ce03179fd803a401b02c651c0a2" in err
    assert not (tmp_path / "out").exists()

