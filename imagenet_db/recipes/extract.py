"""``imagenet-db extract``: the ILSVRC2012 archives as a folder tree, streamed and resumable.

Layout written under DEST (what the per-synset untar loop and ``valprep.sh`` produce, the
layout PyTorch's ImageFolder and Torch's imagenet loaders expect)::

    DEST/train/<wnid>/<wnid>_<n>.JPEG
    DEST/val/<wnid>/ILSVRC2012_val_%08d.JPEG     val_layout="folders" (default), or
    DEST/val/ILSVRC2012_val_%08d.JPEG + DEST/val.txt ('name wnid')   val_layout="flat" (Caffe)
    DEST/synset_words.txt                        'n01440764 tench, Tinca tinca', Caffe order
    DEST/imagenet_db_extract.json                completion record, written last

Both layouts are valid SOURCEs for ``create_imagenet``/``labels``. Members are read by offset
in archive order (sequential I/O) and written by worker threads; each file is written as
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
from typing import Callable, Dict, List, Optional, Tuple

from tqdm import tqdm

from imagenet_db.sources.ilsvrc2012 import ArchiveIndex, index_archives
from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.base import is_image_name
from imagenet_db.engine.executor import ordered_map
from imagenet_db.sources.tarindex import Member, TarReader

VAL_LAYOUTS = ("folders", "flat")
RECORD_NAME = "imagenet_db_extract.json"


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


def plan_extraction(index: ArchiveIndex, val_layout: str = "folders"
                    ) -> List[Tuple[str, str, Member]]:
    """[(archive path, relpath under DEST, member)] in archive-offset order per archive."""
    if val_layout not in VAL_LAYOUTS:
        raise ExtractError(f"val layout must be one of {', '.join(VAL_LAYOUTS)}, not {val_layout!r}")
    train = [(index.paths.train, f"train/{rel}", m) for rel, m in index.train.items()]
    val = [(index.paths.val, (f"val/{index.val_wnids[name]}/{name}" if val_layout == "folders"
                              else f"val/{name}"), m) for name, m in index.val.items()]
    return sorted(train, key=lambda t: t[2].offset) + sorted(val, key=lambda t: t[2].offset)


def _write_member(dest: str, readers: Dict[str, TarReader], item: Tuple[str, str, Member],
                  overwrite: bool) -> int:
    """Write one member; returns bytes written (0 when kept). Raises ExtractError."""
    archive, relpath, member = item
    path = os.path.join(dest, *relpath.split("/"))
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        size = None
    if size == member.size:
        return 0
    if size is not None and not overwrite:
        raise ExtractError(f"{path} exists with {size} bytes but {archive} holds {member.size}; "
                           f"not replacing it (pass --overwrite to replace such files)")
    data = readers[archive].read(member.offset, member.size)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return len(data)


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
            log: Callable[[str], None] = print) -> ExtractSummary:
    """Extract the ILSVRC2012 archives in ``source`` into the folder layout above.

    val_layout: 'folders' (val/<wnid>/, as valprep.sh) or 'flat' (val/ + val.txt, Caffe).
    overwrite: replace files whose size differs from the archive's member (default: error).
    workers: writer threads (None = all cores). progress: tqdm bar (None = only on a terminal).
    Resumable: rerun after an interruption; complete files are kept, not rewritten.
    Raises ImagenetDbError subclasses for bad archives (see index_archives), ExtractError for
    a conflicting file or a final count that differs from the archives.
    """
    start = time.perf_counter()
    index = index_archives(source)
    for note in index.notes:
        log(f"note: {note}")
    plan = plan_extraction(index, val_layout)
    counts: Dict[str, int] = {}
    for _, relpath, _ in plan:
        folder = relpath.rsplit("/", 1)[0]
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
    readers = {index.paths.train: TarReader(index.paths.train),
               index.paths.val: TarReader(index.paths.val)}
    bar = tqdm(total=len(plan), unit="file", file=sys.stderr, desc="extract", dynamic_ncols=True,
               disable=None if progress is None else not progress)
    try:
        for written in ordered_map(lambda item: _write_member(dest, readers, item, overwrite),
                                   plan, workers):
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
        for reader in readers.values():
            reader.close()

    _write_text(os.path.join(dest, "synset_words.txt"),
                "".join(f"{w} {index.words[w]}\n" for w in index.synsets), overwrite)
    if val_layout == "flat":
        _write_text(os.path.join(dest, "val.txt"),
                    "".join(f"{name} {index.val_wnids[name]}\n" for name in index.val), overwrite)
    check_counts(dest, counts)
    summary.seconds = time.perf_counter() - start
    with open(record + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"tool": "imagenet-db extract", "complete": True, "val_layout": val_layout,
                   "train_images": len(index.train), "val_images": len(index.val),
                   "classes": len(index.synsets), "folders": counts}, f, indent=1, sort_keys=True)
    os.replace(record + ".tmp", record)
    return summary
