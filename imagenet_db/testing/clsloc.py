"""Small but faithful fixtures of the ILSVRC2015 CLS-LOC download, the ILSVRC2014/2015 devkits
and Kaggle's ImageNet Object Localization Challenge, made from the same images as an
ILSVRC2012 archive triple (layouts as documented in README "Other distributions as SOURCE":
ILSVRC2015/ or ILSVRC/ top folder, Data/Annotations/ImageSets, devkit data files, the four LOC
files with Kaggle's CSV quirks: ImageId without .JPEG, rows shuffled, trailing space).

Usage: ``base = write_base(root)`` writes the 2012 triple and its extracted tree (the
project's ``testing.archives.write_archives``); the other writers take ``base`` and write the
same images in their layout, so every distribution must give the same synsets.txt,
train.txt and val.txt as the 2012 triple. All output is a pure function of the arguments.
"""
from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

from imagenet_db.testing import archives as A
from imagenet_db.testing import boxes as B
from imagenet_db.testing import photos as P

MTIME = A.MTIME


def write_base(root, spec: A.ArchiveSpec = A.ArchiveSpec()) -> dict:
    """The 2012 archive triple of ``spec`` in ``root/ilsvrc2012`` and the same images
    extracted in ``root/tree`` (Caffe layout). Returns write_archives' dict plus "tree" and
    "blacklist" (the 2012 devkit's blacklisted image numbers)."""
    root = Path(root)
    info = A.write_archives(root / "ilsvrc2012", spec, tree_root=root / "tree")
    info["tree"] = str(root / "tree")
    with tarfile.open(info["paths"]["devkit"]) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("validation_blacklist.txt"))
        info["blacklist"] = [int(x) for x in t.extractfile(member).read().split()]
    return info


def _image(base: dict, relpath: str) -> bytes:
    return (Path(base["tree"]) / relpath).read_bytes()


def clsloc_members(base: dict, top: str = "ILSVRC2015", seed: int = 0, val_xml_wnid: dict | None = None,
                   test_count: int = 2) -> list[tuple[str, bytes]]:
    """The CLS-LOC tree as (archive path, bytes): ``top/Data/CLS-LOC/{train/<wnid>/,val/,test/}``,
    ``top/Annotations/CLS-LOC/{train/<wnid>/ (half the images), val/}`` and
    ``top/ImageSets/CLS-LOC/{train_cls,train_loc,val,test}.txt``. val_xml_wnid: {image
    number: wnid} written instead of the true one (for disagreement tests)."""
    boxes = B.annotations(base)
    out, train_cls, train_loc = [], [], []
    for n, (relpath, wnid) in enumerate(base["train"], start=1):
        stem = relpath.rsplit(".", 1)[0]
        out.append((f"{top}/Data/CLS-LOC/train/{relpath}", _image(base, f"train/{relpath}")))
        train_cls.append(f"{stem} {n}\n")
        if n % 2:
            out.append((f"{top}/Annotations/CLS-LOC/train/{stem}.xml",
                        B.voc_xml(wnid, stem.split("/")[1], boxes[("train", relpath)])))
            train_loc.append(f"{stem} {len(train_loc) + 1}\n")
    for n, (name, wnid) in enumerate(base["val"], start=1):
        stem = name.rsplit(".", 1)[0]
        out.append((f"{top}/Data/CLS-LOC/val/{name}", _image(base, f"val/{name}")))
        named = (val_xml_wnid or {}).get(n)
        out.append((f"{top}/Annotations/CLS-LOC/val/{stem}.xml",
                    B.voc_xml("val", stem, boxes[("val", name)], named)))
    test_rng = np.random.default_rng(seed + 1)
    for n in range(1, test_count + 1):
        out.append((f"{top}/Data/CLS-LOC/test/ILSVRC2012_test_{n:08d}.JPEG",
                    P.imagenet_like_jpeg(test_rng)))
    sets = f"{top}/ImageSets/CLS-LOC"
    out += [(f"{sets}/train_cls.txt", "".join(train_cls).encode()),
            (f"{sets}/train_loc.txt", "".join(train_loc).encode()),
            (f"{sets}/val.txt", "".join(f"{name.rsplit('.', 1)[0]} {n}\n"
                                        for n, (name, _) in enumerate(base["val"], 1)).encode()),
            (f"{sets}/test.txt", "".join(f"ILSVRC2012_test_{n:08d} {n}\n"
                                         for n in range(1, test_count + 1)).encode())]
    order = np.random.default_rng(seed + 2).permutation(len(out))  # tar order is not sorted
    return [out[i] for i in order]


def short_name(words: str) -> str:
    """map_clsloc.txt's name: the first synonym with '_' for spaces ('kit fox, ...' -> kit_fox)."""
    return words.split(",")[0].strip().replace(" ", "_")


def meta_clsloc_2015(classes) -> bytes:
    """The 2015 devkit's meta_clsloc.mat: ``synsets`` 1 x N struct, fields ILSVRC2015_CLSLOC_ID,
    WNID, name (the words), description, num_train_images, sorted by ID."""
    fields = ("ILSVRC2015_CLSLOC_ID", "WNID", "name", "description", "num_train_images")
    table = np.empty((1, len(classes)), dtype=[(f, "O") for f in fields])
    for i, (ident, wnid, words) in enumerate(sorted(classes)):
        for f, v in zip(fields, (float(ident), wnid, words, f"gloss of {short_name(words)}", 0.0)):
            table[0, i][f] = v
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table}, format="5")
    return buf.getvalue()


def meta_clsloc_2014(classes) -> bytes:
    """The 2014 devkit's meta_clsloc.mat: 2012's meta.mat layout (classes + internal synsets,
    num_children) with the ID field named ILSVRC2014_ID."""
    data = A.meta_mat_bytes(classes, {})
    mat = scipy.io.loadmat(io.BytesIO(data))
    old = mat["synsets"]
    names = ["ILSVRC2014_ID" if n == "ILSVRC2012_ID" else n for n in old.dtype.names]
    table = np.empty(old.shape, dtype=[(n, "O") for n in names])
    for idx in np.ndindex(old.shape):
        for new, name in zip(names, old.dtype.names):
            table[idx][new] = old[idx][name]
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table}, format="5")
    return buf.getvalue()


def devkit2015_members(base: dict, truth=None) -> list[tuple[str, bytes]]:
    """``ILSVRC2015/devkit/{readme.txt, data/map_clsloc.txt, data/meta_clsloc.mat,
    data/ILSVRC2015_clsloc_validation_ground_truth.txt, ..._blacklist.txt}``."""
    classes = base["classes"]
    truth = base["ground_truth"] if truth is None else truth
    d = "ILSVRC2015/devkit"
    return [(f"{d}/readme.txt", b"Fixture with the layout of the ILSVRC2015 devkit.\n"),
            (f"{d}/data/map_clsloc.txt", "".join(f"{w} {i} {short_name(t)}\n"
                                                 for i, w, t in sorted(classes)).encode()),
            (f"{d}/data/meta_clsloc.mat", meta_clsloc_2015(classes)),
            (f"{d}/data/ILSVRC2015_clsloc_validation_ground_truth.txt",
             "".join(f"{t}\n" for t in truth).encode()),
            (f"{d}/data/ILSVRC2015_clsloc_validation_blacklist.txt",
             "".join(f"{b}\n" for b in base["blacklist"]).encode())]


def devkit2014_members(base: dict, truth=None) -> list[tuple[str, bytes]]:
    """``ILSVRC2014_devkit/{readme.txt, data/meta_clsloc.mat, data/ILSVRC2014_clsloc_validation_
    ground_truth.txt, ..._blacklist.txt}``."""
    truth = base["ground_truth"] if truth is None else truth
    d = "ILSVRC2014_devkit"
    return [(f"{d}/readme.txt", b"Fixture with the layout of the ILSVRC2014 devkit.\n"),
            (f"{d}/data/meta_clsloc.mat", meta_clsloc_2014(base["classes"])),
            (f"{d}/data/ILSVRC2014_clsloc_validation_ground_truth.txt",
             "".join(f"{t}\n" for t in truth).encode()),
            (f"{d}/data/ILSVRC2014_clsloc_validation_blacklist.txt",
             "".join(f"{b}\n" for b in base["blacklist"]).encode())]


def _targz(path: Path, members) -> None:
    data = A._tar_with_dirs(members)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=MTIME) as f:
        f.write(data)
    path.write_bytes(buf.getvalue())


def _extract(folder: Path, members) -> None:
    for name, data in members:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def kaggle_files(base: dict, seed: int = 0, csv_wnid: dict | None = None,
                 bad_row: str | None = None) -> list[tuple[str, bytes]]:
    """The four LOC files: LOC_synset_mapping.txt (ASCII wnid order, words),
    LOC_val_solution.csv (rows shuffled, 1-2 boxes, trailing space as Kaggle's),
    LOC_train_solution.csv (the train images with XMLs), LOC_sample_submission.csv.
    csv_wnid: {image number: wnid} written instead of the truth; bad_row: a line appended
    as is (malformed-row tests)."""
    rng = np.random.default_rng(seed + 3)
    words = {w: t for _, w, t in base["classes"]}
    mapping = "".join(f"{w} {words[w]}\n" for w in sorted(words))
    boxes = B.annotations(base)
    rows = [B.csv_row(name.rsplit('.', 1)[0], boxes[("val", name)], words,
                      (csv_wnid or {}).get(n)) for n, (name, _) in enumerate(base["val"], start=1)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    if bad_row is not None:
        rows.insert(len(rows) // 2, bad_row + "\n")
    train_rows = [B.csv_row(rel.split('/')[1].rsplit('.', 1)[0], boxes[("train", rel)], words)
                  for i, (rel, w) in enumerate(base["train"]) if i % 2 == 0]
    train_rows = [row for row in train_rows if row is not None]
    sample = "".join(f"ILSVRC2012_test_{n:08d},{sorted(words)[0]} 0 0 100 100\n" for n in (1, 2))
    return [("LOC_synset_mapping.txt", mapping.encode()),
            ("LOC_val_solution.csv", ("ImageId,PredictionString\n" + "".join(rows)).encode()),
            ("LOC_train_solution.csv", ("ImageId,PredictionString\n" + "".join(train_rows)).encode()),
            ("LOC_sample_submission.csv", ("ImageId,PredictionString\n" + sample).encode())]


def write_ilsvrc2015(folder, base: dict, form: str = "targz", devkit: bool = True, **kw) -> dict:
    """ILSVRC2015 CLS-LOC in ``folder``: form 'targz' writes ILSVRC2015_CLS-LOC.tar.gz (and
    ILSVRC2015_devkit.tar.gz when devkit), 'tree' the two extracted into ``folder``
    (``folder/ILSVRC2015/{Data,Annotations,ImageSets,devkit}``). kw: clsloc_members'.
    Returns {"paths": [...]}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data, kit = clsloc_members(base, **kw), devkit2015_members(base) if devkit else []
    if form == "tree":
        _extract(folder, data + kit)
        return {"paths": [str(folder / "ILSVRC2015")]}
    paths = [folder / "ILSVRC2015_CLS-LOC.tar.gz"]
    _targz(paths[0], data)
    if devkit:
        paths.append(folder / "ILSVRC2015_devkit.tar.gz")
        _targz(paths[1], kit)
    return {"paths": [str(p) for p in paths]}


def write_devkit2014(folder, base: dict, extracted: bool = False, truth=None) -> str:
    """ILSVRC2014_devkit.tgz (or the extracted ILSVRC2014_devkit/) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    members = devkit2014_members(base, truth)
    if extracted:
        _extract(folder, members)
        return str(folder / "ILSVRC2014_devkit")
    _targz(folder / "ILSVRC2014_devkit.tgz", members)
    return str(folder / "ILSVRC2014_devkit.tgz")


def write_kaggle(folder, base: dict, form: str = "zip", missing: str | None = None,
                 seed: int = 0, csv_wnid=None, bad_row=None, val_xml_wnid=None) -> str:
    """Kaggle's download in ``folder``: form 'zip' = imagenet-object-localization-challenge.zip
    holding ILSVRC/... and the LOC files (every member deflated); 'zip-targz' = the zip holding
    the LOC files and a STORED
    imagenet_object_localization_patched2019.tar.gz (the older download); 'targz' = that
    .tar.gz and the LOC files unzipped; 'tree' = everything extracted. missing: an archive
    path left out of the zip (e.g. 'ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG').
    Returns the path written (zip, or folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = clsloc_members(base, top="ILSVRC", seed=seed, val_xml_wnid=val_xml_wnid)
    loc = kaggle_files(base, seed, csv_wnid, bad_row)
    if form == "tree":
        _extract(folder, data + loc)
        return str(folder)
    if form == "targz":
        _targz(folder / "imagenet_object_localization_patched2019.tar.gz", data)
        _extract(folder, loc)
        return str(folder)
    path = folder / "imagenet-object-localization-challenge.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        def put(name, payload, method=zipfile.ZIP_DEFLATED):
            info = zipfile.ZipInfo(name, date_time=(2019, 10, 10, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, payload)
        for name, payload in loc:
            put(name, payload)
        if form == "zip-targz":
            buf = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=MTIME) as f:
                f.write(A._tar_with_dirs(data))
            put("imagenet_object_localization_patched2019.tar.gz", buf.getvalue(), zipfile.ZIP_STORED)
        else:
            for name, payload in sorted(data):
                if name != missing:
                    put(name, payload)
    return str(path)
