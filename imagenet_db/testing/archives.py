"""Small but structurally faithful ILSVRC2012 archive triples, made from the real photos.

``write_archives(root, ArchiveSpec(...))`` writes into ``root``:

* ``ILSVRC2012_img_train.tar``: one GNU-format member ``<wnid>.tar`` per class (outer order
  shuffled), each a tar of ``<wnid>_<n>.JPEG`` (inner order shuffled, n >= 10026 so that
  tench's first file is ``n01440764_10026.JPEG`` as in the real train.txt);
* ``ILSVRC2012_img_val.tar``: flat ``ILSVRC2012_val_%08d.JPEG``;
* ``ILSVRC2012_devkit_t12.tar.gz``: ``ILSVRC2012_devkit_t12/data/meta.mat`` (a MATLAB struct
  array ``synsets`` with the real devkit's fields: the classes with their real ILSVRC2012_ID,
  WNID and words from ``imagenet_db/sources/ilsvrc2012_classes.tsv``, plus internal synsets with
  num_children > 0 and IDs above 1000, as in the real file), the validation ground truth
  (one ILSVRC2012_ID per line) and a validation blacklist.

The ID order is the real one (1 = n02119789 kit fox), which differs from Caffe's ASCII order.
With all 1,000 classes the ground truth starts with the real first ten IDs (490, 361, 171,
...). Odd members as in the real train set: a CMYK JPEG, a grayscale JPEG, and a PNG named
``n02105855_2933.JPEG`` (in another class's tar when n02105855 is not among the classes).
Images are ImageNet-like JPEGs from ``imagenet_db.testing.photos``. Optionally the same bytes are
also written as an extracted Caffe-layout tree (train/<wnid>/, flat val/ + val.txt,
synset_words.txt), independently of ``imagenet-db extract``.
All output is a pure function of the arguments (fixed tar/gzip timestamps).
"""
from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import scipy.io

from imagenet_db.testing import photos

CLASSES_TSV = Path(__file__).resolve().parents[1] / "sources" / "ilsvrc2012_classes.tsv"
# The first ten lines of the real data/ILSVRC2012_validation_ground_truth.txt; with the real
# ID->wnid table they give Caffe's val.txt labels 65, 970, 230, 809, 516, 57, 334, 415, 674, 332.
REAL_GROUND_TRUTH_HEAD = (490, 361, 171, 822, 297, 482, 13, 704, 599, 164)
PNG_MEMBER = ("n02105855", "n02105855_2933.JPEG")
MTIME = 1336000000  # fixed timestamp (May 2012) for reproducible archives
DEVKIT_DIR = "ILSVRC2012_devkit_t12"


def ilsvrc2012_classes() -> list[tuple[int, str, str]]:
    """The 1,000 ILSVRC2012 classes as (ILSVRC2012_ID, wnid, words), in ID order."""
    rows = []
    for line in CLASSES_TSV.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            ident, wnid, words = line.split("\t")
            rows.append((int(ident), wnid, words))
    return rows


def _tar_bytes(members: list[tuple[str, bytes]], fmt=tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            info.uname = info.gname = "imagenet"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tar_with_dirs(members: list[tuple[str, bytes]]) -> bytes:
    """A tar with directory entries before the files (like `tar czf` of a folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({"/".join(n.split("/")[:i]) for n, _ in members
                       for i in range(1, n.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def meta_mat_bytes(classes: list[tuple[int, str, str]], train_counts: dict[str, int],
                   groups: int = 3) -> bytes:
    """A meta.mat like the devkit's: struct array ``synsets`` (N x 1) with fields
    ILSVRC2012_ID, WNID, words, gloss, num_children, children, wordnet_height,
    num_train_images (numbers as MATLAB doubles). Entries: the classes (leaves), then
    ``groups`` internal synsets splitting the classes, then one root with the groups as
    children. Internal wnids (n0000xxxx) and words are synthetic."""
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images")
    rows = []
    for ident, wnid, words in classes:
        rows.append((ident, wnid, words, f"gloss of {words.split(',')[0]}", 0,
                     np.zeros((1, 0)), 0, train_counts.get(wnid, 0)))
    next_id = max(c[0] for c in classes) + 1
    next_id = max(next_id, 1001)
    chunks = np.array_split(np.array([c[0] for c in classes]), max(1, min(groups, len(classes))))
    group_ids = []
    for k, chunk in enumerate(chunks):
        members = [c for c in classes if c[0] in set(chunk.tolist())]
        count = sum(train_counts.get(w, 0) for _, w, _ in members)
        rows.append((next_id, f"n0000{1800 + k:04d}", f"fixture group {k}", "internal synset",
                     len(chunk), chunk.astype(float)[np.newaxis], 1, count))
        group_ids.append(next_id)
        next_id += 1
    rows.append((next_id, "n00001740", "entity", "root of the fixture hierarchy", len(group_ids),
                 np.array(group_ids, float)[np.newaxis], 2, sum(train_counts.values())))
    table = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for name, value in zip(fields, row):
            table[i, 0][name] = float(value) if isinstance(value, int) else value
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table}, format="5")
    # the 116-byte text header holds the creation time: fix it so the bytes are reproducible
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created on: Tue May  1 00:00:00 2012"
    return header.ljust(116, b" ") + buf.getvalue()[116:]


def _add_odd_members(files: dict, order: list, photos_dir) -> dict:
    """Replace three train images by a CMYK JPEG, a grayscale JPEG and a PNG named .JPEG (as
    n02105855_2933.JPEG is in the real train tar); returns {relpath: kind}."""
    odd: dict[str, str] = {}
    weird = photos.odd_images(photos_dir)
    for wnid, kind in ((order[0], "cmyk"), (order[1], "grayscale")):
        name = sorted(files[wnid])[-1]
        files[wnid][name] = weird[kind]
        odd[f"{wnid}/{name}"] = kind
    png_wnid = PNG_MEMBER[0] if PNG_MEMBER[0] in files else order[-1]
    png_name = PNG_MEMBER[1] if png_wnid == PNG_MEMBER[0] else f"{png_wnid}_2933.JPEG"
    victim = sorted(files[png_wnid])[0]
    if png_name not in files[png_wnid]:
        del files[png_wnid][victim]
        odd.pop(f"{png_wnid}/{victim}", None)
    files[png_wnid][png_name] = weird["png_named_jpeg"]
    odd[f"{png_wnid}/{png_name}"] = "png_named_jpeg"
    return odd


def _ground_truth(class_ids: list, val_count: int, rng) -> list:
    """ILSVRC2012_IDs of the val images: the real first ones where their class is present."""
    truth = []
    for n in range(val_count):
        real = REAL_GROUND_TRUTH_HEAD[n] if n < len(REAL_GROUND_TRUTH_HEAD) else None
        truth.append(real if real in class_ids else int(rng.choice(class_ids)))
    return truth


def devkit_bytes(classes: list, counts: dict, truth: list, blacklist: list) -> bytes:
    """ILSVRC2012_devkit_t12.tar.gz: meta.mat, the val ground truth and blacklist (gzip with a
    fixed mtime, so the bytes are reproducible)."""
    devkit = _tar_with_dirs([
        (f"{DEVKIT_DIR}/COPYING", b"Synthetic devkit made by imagenet_db.testing.archives.\n"),
        (f"{DEVKIT_DIR}/readme.txt", b"Test fixture with the layout of the ILSVRC2012 devkit.\n"),
        (f"{DEVKIT_DIR}/data/meta.mat", meta_mat_bytes(classes, counts)),
        (f"{DEVKIT_DIR}/data/ILSVRC2012_validation_ground_truth.txt",
         "".join(f"{t}\n" for t in truth).encode()),
        (f"{DEVKIT_DIR}/data/ILSVRC2012_validation_blacklist.txt",
         "".join(f"{b}\n" for b in blacklist).encode()),
    ])
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=MTIME) as f:
        f.write(devkit)
    return gz.getvalue()


def _write_tree(tree: Path, files: dict, val: list, val_bytes: dict, words: dict) -> None:
    """The same images as an extracted Caffe-layout tree (train/<wnid>/, flat val/ + val.txt)."""
    for wnid, named in files.items():
        (tree / "train" / wnid).mkdir(parents=True, exist_ok=True)
        for name, data in named.items():
            (tree / "train" / wnid / name).write_bytes(data)
    (tree / "val").mkdir(parents=True, exist_ok=True)
    for name, data in val_bytes.items():
        (tree / "val" / name).write_bytes(data)
    (tree / "val.txt").write_text("".join(f"{n} {w}\n" for n, w in val))
    (tree / "synset_words.txt").write_text("".join(f"{w} {words[w]}\n" for w in sorted(files)))


@dataclass(frozen=True)
class ArchiveSpec:
    """What ``write_archives`` puts in the archives; same spec -> same bytes.

    wnids: class wnids, a subset of the real 1,000 (None: all 1,000). train_per_class: images
    per class tar (>= 1). val_count: validation images (= ground-truth lines, >= 1). seed:
    numpy seed. image_size: (width, height) of every image; None = ImageNet-like random
    sizes. odd_members: replace three train images by a CMYK JPEG, a grayscale JPEG and a PNG
    named .JPEG (needs at least 2 classes). photos_dir: source photos (None: examples/photos).
    """
    wnids: Optional[Sequence[str]] = None
    train_per_class: int = 3
    val_count: int = 10
    seed: int = 0
    image_size: Optional[Tuple[int, int]] = None
    odd_members: bool = True
    photos_dir: Optional[str] = None


def _classes(spec: ArchiveSpec) -> list[tuple[int, str, str]]:
    """The (ID, wnid, words) of ``spec.wnids`` in ID order; ValueError for a bad spec."""
    table = ilsvrc2012_classes()
    known = {w: (i, w, words) for i, w, words in table}
    wnids = [w for _, w, _ in table] if spec.wnids is None else list(spec.wnids)
    unknown = [w for w in wnids if w not in known]
    if unknown:
        raise ValueError(f"not ILSVRC2012 classes: {unknown}")
    if spec.train_per_class < 1 or spec.val_count < 1:
        raise ValueError("train_per_class and val_count must be >= 1")
    return sorted((known[w] for w in set(wnids)), key=lambda c: c[0])


def _draw_images(classes, spec: ArchiveSpec, rng):
    """(files {wnid: {name: bytes}}, odd {relpath: kind}, ground truth, val [(name, wnid)],
    val bytes {name: bytes}), drawn from ``rng`` in a fixed order."""
    def image() -> bytes:
        return photos.imagenet_like_jpeg(rng, spec.photos_dir, size=spec.image_size)

    files: dict[str, dict[str, bytes]] = {}
    for _, wnid, _ in classes:
        numbers = rng.choice(np.arange(10027, 60001), size=spec.train_per_class, replace=False)
        if wnid == "n01440764":
            numbers[0] = 10026
        files[wnid] = {f"{wnid}_{int(n)}.JPEG": image() for n in numbers}
    odd = _add_odd_members(files, [c[1] for c in classes], spec.photos_dir) \
        if spec.odd_members and len(classes) >= 2 else {}
    truth = _ground_truth([c[0] for c in classes], spec.val_count, rng)
    id_to_wnid = {i: w for i, w, _ in classes}
    val = [(f"ILSVRC2012_val_{n:08d}.JPEG", id_to_wnid[t]) for n, t in enumerate(truth, 1)]
    return files, odd, truth, val, {name: image() for name, _ in val}


def write_archives(root, spec: ArchiveSpec = ArchiveSpec(), tree_root=None) -> dict:
    """Write an ILSVRC2012 archive triple into ``root`` (see the module docstring).

    Args:
        root: output folder (created; the three files are overwritten).
        spec: the classes, counts, seed and images (``ArchiveSpec``).
        tree_root: if given, also write the same images as an extracted Caffe-layout tree
            (train/<wnid>/*.JPEG, flat val/, val.txt with wnids, synset_words.txt).

    Returns:
        dict with "train" [(relpath, wnid)] sorted, "val" [(name, wnid)] by number,
        "ground_truth" [ILSVRC2012_ID per val image], "classes" [(ID, wnid, words)] used,
        "odd" {relpath: kind}, and "paths" {"train", "val", "devkit"} (str).

    Raises:
        ValueError: unknown wnid, train_per_class < 1, val_count < 1.
    """
    classes = _classes(spec)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    files, odd, truth, val, val_bytes = _draw_images(classes, spec, rng)
    outer = []
    for k in rng.permutation(len(classes)):
        wnid = classes[k][1]
        names = list(files[wnid])
        inner = [(names[j], files[wnid][names[j]]) for j in rng.permutation(len(names))]
        outer.append((f"{wnid}.tar", _tar_bytes(inner)))
    paths = {"train": root / "ILSVRC2012_img_train.tar", "val": root / "ILSVRC2012_img_val.tar",
             "devkit": root / "ILSVRC2012_devkit_t12.tar.gz"}
    paths["train"].write_bytes(_tar_bytes(outer))
    paths["val"].write_bytes(_tar_bytes([(name, val_bytes[name]) for name, _ in val]))
    blacklist = sorted(rng.choice(np.arange(1, spec.val_count + 1), size=min(2, spec.val_count),
                                  replace=False).tolist())
    paths["devkit"].write_bytes(devkit_bytes(classes, {w: len(f) for w, f in files.items()},
                                             truth, blacklist))
    if tree_root is not None:
        _write_tree(Path(tree_root), files, val, val_bytes, {w: words for _, w, words in classes})
    train = sorted((f"{w}/{n}", w) for w, named in files.items() for n in named)
    return {"train": train, "val": val, "ground_truth": truth, "classes": classes, "odd": odd,
            "paths": {k: str(v) for k, v in paths.items()}}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a small ILSVRC2012 archive triple "
                                                 "(train tar of tars, val tar, devkit).")
    parser.add_argument("root")
    parser.add_argument("--wnids", nargs="*", default=None, help="default: all 1,000 classes")
    parser.add_argument("--train-per-class", type=int, default=3)
    parser.add_argument("--val-count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tree", default=None, help="also write the extracted Caffe tree here")
    a = parser.parse_args()
    r = write_archives(a.root, ArchiveSpec(a.wnids, a.train_per_class, a.val_count, a.seed),
                       tree_root=a.tree)
    print(f"wrote {len(r['train'])} train and {len(r['val'])} val images "
          f"({len(r['classes'])} classes) to {a.root}")
