"""Small whole-ImageNet downloads, shaped like the real ones, made from the real photos.

``WholeSpec`` says what is in them: ``synsets`` synset tars in all, wnids taken in order from
the shipped words table (``sources/imagenet21k_words.tsv``, so their words are known); most
hold 1-2 images, ``empty`` of them none (the last one a 0-byte file, the others a tar without
members, as fall11 has), and the classes of ``counts`` hold that many images (just under and
over a scaled-down ImageNet-21K-P threshold; ILSVRC2012 classes and others). Images are
``jpegs`` small ImageNet-like JPEGs (``photos.small_jpeg``) reused by every synset: test time
stays low (``jpegs``: their (width, height), longer sides on both sides of 100). Then:

* ``write_fall11(root, spec)``: ``root/fall11_whole.tar``, a GNU tar of ``<wnid>.tar`` members,
  each a tar of ``<wnid>_<n>.JPEG``;
* ``write_winter21(root, spec)``: ``root/winter21_whole.tar.gz``, the same synset tars as
  members ``winter21_whole/<wnid>.tar`` of a gzip-compressed tar;
* ``write_synset_tars(root, spec, folders=k)``: the extracted form, ``root/<wnid>.tar`` files,
  the first ``k`` non-empty synsets as ``root/<wnid>/`` folders of JPEGs instead.

Each returns {wnid: [image file names, sorted]} (empty synsets included, with []). All output
is a pure function of the spec (fixed timestamps, seeded images).
"""
from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imagenet_db.sources.wholeimagenet import SHIPPED_WORDS
from imagenet_db.testing.photos import small_jpeg

MTIME = 1320000000  # fixed timestamp (Oct 2011)
# classes with more images (the recipe's threshold scaled to 5: 5 is dropped, 6 kept)
DEFAULT_COUNTS = {"n01440764": 8, "n01443537": 8, "n01484850": 6,  # ILSVRC2012 classes
                  "n00007846": 7, "n00005787": 5}                  # not ILSVRC2012 classes


@dataclass(frozen=True)
class WholeSpec:
    """What a whole-ImageNet fixture holds (see the module docstring)."""
    synsets: int = 3000
    empty: int = 4
    counts: dict = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    jpegs: tuple = ((96, 72), (120, 90), (80, 100), (72, 64), (140, 100), (110, 110))
    seed: int = 0


def _table_wnids() -> list[str]:
    with open(SHIPPED_WORDS, encoding="utf-8") as f:
        return [line.split("\t", 1)[0] for line in f if line[:1] == "n"]


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A GNU tar of (name, bytes) members, fixed timestamps (also for hand-made bad tars)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def synset_contents(spec: WholeSpec) -> dict[str, list[tuple[str, bytes]]]:
    """{wnid: [(file name, JPEG bytes)]} of the fixture, wnids in ASCII order."""
    rng = np.random.default_rng(spec.seed)
    jpegs = [small_jpeg(rng, size) for size in spec.jpegs]
    others = [w for w in _table_wnids() if w not in spec.counts]
    wnids = sorted(others[:spec.synsets - len(spec.counts)] + list(spec.counts))
    empty = set(others[:spec.synsets - len(spec.counts)][-spec.empty:]) if spec.empty else set()
    contents = {}
    for i, wnid in enumerate(wnids):
        count = spec.counts.get(wnid, 0 if wnid in empty else 1 + i % 2)
        contents[wnid] = [(f"{wnid}_{1000 + 7 * n}.JPEG", jpegs[(i + n) % len(jpegs)])
                          for n in range(count)]
    return contents


def _synset_tars(spec: WholeSpec) -> tuple[dict, dict[str, bytes]]:
    """(contents, {wnid: synset tar bytes}); the last empty synset is a 0-byte file."""
    contents = synset_contents(spec)
    tars = {wnid: tar_bytes(files) for wnid, files in contents.items()}
    empties = [w for w, files in contents.items() if not files]
    if empties:
        tars[empties[-1]] = b""
    return contents, tars


def _names(contents: dict) -> dict[str, list[str]]:
    return {wnid: sorted(name for name, _ in files) for wnid, files in contents.items()}


def write_fall11(root, spec: WholeSpec = WholeSpec()) -> dict[str, list[str]]:
    """Write ``root/fall11_whole.tar``; returns {wnid: image names} (module docstring)."""
    contents, tars = _synset_tars(spec)
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "fall11_whole.tar").write_bytes(
        tar_bytes([(f"{wnid}.tar", data) for wnid, data in tars.items()]))
    return _names(contents)


def write_winter21(root, spec: WholeSpec = WholeSpec()) -> dict[str, list[str]]:
    """Write ``root/winter21_whole.tar.gz``; returns {wnid: image names}."""
    contents, tars = _synset_tars(spec)
    Path(root).mkdir(parents=True, exist_ok=True)
    data = tar_bytes([(f"winter21_whole/{wnid}.tar", data) for wnid, data in tars.items()])
    with open(Path(root) / "winter21_whole.tar.gz", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=MTIME, compresslevel=1) as z:
            z.write(data)
    return _names(contents)


def write_synset_tars(root, spec: WholeSpec = WholeSpec(), folders: int = 0) -> dict[str, list[str]]:
    """Write the extracted form into ``root`` (``<wnid>.tar``; the first ``folders``
    non-empty synsets as ``<wnid>/`` folders); returns {wnid: image names}."""
    contents, tars = _synset_tars(spec)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    as_folders = [w for w, files in contents.items() if files][:folders]
    for wnid, data in tars.items():
        if wnid in as_folders:
            (root / wnid).mkdir()
            for name, jpeg in contents[wnid]:
                (root / wnid / name).write_bytes(jpeg)
        else:
            (root / f"{wnid}.tar").write_bytes(data)
    return _names(contents)
