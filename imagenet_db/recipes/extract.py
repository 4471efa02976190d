"""``imagenet-db extract``: any SOURCE (the ILSVRC2012 archives, the ILSVRC2015 CLS-LOC .tar.gz,
Kaggle's zip, ...) as a folder tree, streamed and resumable.

Layout written under DEST (what the per-synset untar loop and ``valprep.sh`` produce, the
layout PyTorch's ImageFolder and Torch's imagenet loaders expect)::

    DEST/train/<wnid>/<wnid>_<n>.JPEG
    DEST/val/<wnid>/ILSVRC2012_val_%08d.JPEG     val_layout="folders" (default), or
    DEST/val/ILSVRC2012_val_%08d.JPEG + DEST/val.txt ('name wnid')   val_layout="flat" (Caffe)
    DEST/synset_words.txt                        'n01440764 tench, Tinca tinca', Caffe order
    DEST/imagenet_db_extract.json                completion record, written last

Both layouts are valid SOURCEs for ``create_imagenet``/``labels``. Images are read in archive
order (by offset: sequential I/O; runs of consecutive members go to one worker thread, so a
.tar.gz is decompressed about once) and written by worker threads; each file is written as
``.<name>.partial`` and renamed, so a file at its final name is complete. An interrupted run
is resumed by running the same command again: files already present with the right size are
kept. A file present with a different size is not ours to replace: it is an error unless
``overwrite``. At the end every folder's image count is checked against the archive index.
"""
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional

from tqdm import tqdm

from imagenet_db.engine.executor import ordered_map
from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import load_dataset
from imagenet_db.sources.base import Dataset, is_image_name

VAL_LAYOUTS = ("folders", "flat")
RECORD_NAME = "imagenet_db_extract.json"
BATCH = 32  # consecutive members written by one task


class ExtractError(ImagenetDbError):
    """Extraction cannot proceed or its result does not match the archives."""


@dataclass
class ExtractSummary:
    """written / kept (already present) file counts, bytes written, wall seconds, and the
    expected image count per folder (relative to DEST)."""
    dest: str
    written: int = 0
    kept: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    counts: Optional[Dict[str, int]] = None

    def describe(self) -> str:
        """One-line human summary of the extraction."""
        rate = (self.written + self.kept) / self.seconds if self.seconds else 0.0
        mb = self.bytes_written / self.seconds / 1e6 if self.seconds else 0.0
        return (f"{self.dest}: wrote {self.written} files ({self.bytes_written / 1e6:.1f} MB), "
                f"kept {self.kept} already present, {self.seconds:.1f} s "
                f"({rate:.0f} files/s, {mb:.0f} MB/s written)")


class Item(NamedTuple):
    """One file to write: relpath under DEST, the loader of its bytes, the expected size (None
    when unknown before reading)."""
    relpath: str
    load: Callable[[], bytes]
    size: Optional[int]


def _size_of(load) -> Optional[int]:
    size = getattr(load, "size", None)
    if size is None and hasattr(load, "member"):
        size = load.member.size
    if size is None and hasattr(load, "path"):
        try:
            size = os.path.getsize(load.path)
        except OSError:
            size = None
    return size


def _order(item: "Item"):
    key = getattr(item.load, "sort_key", None)
    if key is None:
        offset = getattr(item.load, "offset", None)
        reader = getattr(item.load, "reader", None)
        key = (getattr(reader, "path", ""), offset) if offset is not None else ("", 0)
    return (key, item.relpath)


def plan_extraction(dataset: Dataset, val_layout: str = "folders") -> List[Item]:
    """Items for every train and val image of ``dataset``, in archive order (by each loader's
    position in its archive when it has one, else by relpath). train -> ``train/<relpath>``;
    val -> ``val/<wnid>/<name>`` (folders) or ``val/<name>`` (flat)."""
    if val_layout not in VAL_LAYOUTS:
        raise ExtractError(f"val layout must be one of {', '.join(VAL_LAYOUTS)}, not {val_layout!r}")
    items = []
    for name, split in dataset.splits.items():
        for relpath, label in split.entries:
            load = split.loader(relpath)
            if name == "val":
                base = relpath.rsplit("/", 1)[-1]
                target = (f"val/{dataset.synsets[label]}/{base}" if val_layout == "folders"
                          else f"val/{base}")
            else:
                target = f"{name}/{relpath}"
            items.append(Item(target, load, _size_of(load)))
    return sorted(items, key=_order)


def _write_item(dest: str, item: Item, overwrite: bool) -> int:
    """Write one file; returns bytes written (0 when kept). Raises ExtractError."""
    path = os.path.join(dest, *item.relpath.split("/"))
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = None
    if size is not None and size == item.size:
        return 0
    data = item.load()
    if size is not None:
        if size == len(data):
            return 0
        if not overwrite:
            raise ExtractError(f"{path} exists with {size} bytes but the SOURCE's file has "
                               f"{len(data)}; not replacing it (pass --overwrite to replace such "
                               f"files)")
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


def _write_batch(dest: str, batch: List[Item], overwrite: bool) -> List[int]:
    return [_write_item(dest, item, overwrite) for item in batch]


def _write_text(path: str, text: str, overwrite: bool) -> None:
    """Write a small text file atomically; an existing different file is an error unless
    ``overwrite`` (an identical one is kept)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            if f.read() == text:
                return
        if not overwrite:
            raise ExtractError(f"{path} exists with other content; not replacing it "
                               f"(pass --overwrite)")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def _count_images(folder: str) -> int:
    try:
        return sum(1 for e in os.scandir(folder)
                   if e.is_file() and is_image_name(e.name)
                   and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def check_counts(dest: str, counts: Dict[str, int]) -> None:
    """Compare the image files in each folder of ``counts`` (relative to DEST) with the
    expected number. Raises ExtractError listing the first mismatches."""
    bad = []
    for folder, want in sorted(counts.items()):
        have = _count_images(os.path.join(dest, *folder.split("/")))
        if have != want:
            bad.append(f"{folder}: {have} images, expected {want}")
    if bad:
        raise ExtractError(f"{dest}: the extracted tree does not match the archives "
                           f"({len(bad)} folder(s)): " + "; ".join(bad[:5]))


def extract(source: str, dest: str, val_layout: str = "folders", overwrite: bool = False,
            workers: Optional[int] = None, progress: Optional[bool] = None,
            log: Callable[[str], None] = print, drop_blacklist: bool = False) -> ExtractSummary:
    """Extract any SOURCE ``sources`` reads into the folder layout above.

    val_layout: 'folders' (val/<wnid>/, as valprep.sh) or 'flat' (val/ + val.txt, Caffe).
    overwrite: replace files whose size differs from the SOURCE's (default: error).
    workers: writer threads (None = all cores). progress: tqdm bar (None = only on a terminal).
    drop_blacklist: leave out the validation images the devkit blacklists (see
    ``base.drop_val_blacklist``). Resumable: rerun after an interruption; complete files are
    kept, not rewritten. Raises ImagenetDbError subclasses for a bad SOURCE (see
    ``sources.open_dataset``), ExtractError for a conflicting file or a final count that
    differs from the SOURCE.
    """
    start = time.perf_counter()
    dataset = load_dataset(source, drop_blacklist, log)
    plan = plan_extraction(dataset, val_layout)
    counts: Dict[str, int] = {}
    for item in plan:
        folder = item.relpath.rsplit("/", 1)[0]
        counts[folder] = counts.get(folder, 0) + 1
    try:
        for folder in counts:
            os.makedirs(os.path.join(dest, *folder.split("/")), exist_ok=True)
    except OSError as exc:
        raise ExtractError(f"{dest}: cannot create folders: {exc.strerror or exc}") from None
    record = os.path.join(dest, RECORD_NAME)
    if os.path.exists(record):
        os.remove(record)  # the tree is being changed: no longer known to be complete
    summary = ExtractSummary(dest=dest, counts=counts)
    batches = [plan[i:i + BATCH] for i in range(0, len(plan), BATCH)]
    bar = tqdm(total=len(plan), unit="file", file=sys.stderr, desc="extract", dynamic_ncols=True,
               disable=None if progress is None else not progress)
    try:
        for written_batch in ordered_map(lambda batch: _write_batch(dest, batch, overwrite),
                                         batches, workers, window=4):
            for written in written_batch:
                bar.update(1)
                if written:
                    summary.written += 1
                    summary.bytes_written += written
                else:
                    summary.kept += 1
    except OSError as exc:
        raise ExtractError(f"{dest}: write failed: {exc}") from None
    finally:
        bar.close()

    if dataset.words:
        _write_text(os.path.join(dest, "synset_words.txt"),
                    "".join(f"{w} {dataset.words[w]}\n" for w in dataset.synsets), overwrite)
    val = dataset.splits.get("val")
    if val_layout == "flat" and val is not None:
        _write_text(os.path.join(dest, "val.txt"),
                    "".join(f"{rel.rsplit('/', 1)[-1]} {dataset.synsets[label]}\n"
                            for rel, label in val.entries), overwrite)
    check_counts(dest, counts)
    summary.seconds = time.perf_counter() - start
    with open(record + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"tool": "imagenet-db extract", "complete": True, "val_layout": val_layout,
                   "train_images": len(dataset.splits["train"].entries),
                   "val_images": len(val.entries) if val is not None else 0,
                   "classes": len(dataset.synsets), "folders": counts}, f, indent=1,
                  sort_keys=True)
    os.replace(record + ".tmp", record)
    return summary
