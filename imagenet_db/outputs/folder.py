"""Image files in a folder tree: ``<split>/<wnid>/<name>.JPEG`` (PyTorch ImageFolder, Torch's
imagenet-multiGPU and fb.resnet, DIGITS' image folders).

One output per split directory (``OUTDIR/train``, ``OUTDIR/val``); each record is written as
the file ``<output>/<relpath>`` — the recipe gives the relpaths (``<wnid>/<name>``, the val
images in per-wnid folders as ``valprep.sh`` makes them, or flat). Without a resize or colour
change the original file bytes are copied byte for byte, without decoding (bad files are
still caught: the header checks of ``imaging.headers``, an empty file or an unknown format is
skipped and reported); with a resize mode the transformed image is re-encoded in the file's
own format (JPEG at OpenCV's default quality 95).

Each file is written through ``.NAME.tmp-PID`` in the output root (where a resumed build
removes those of a killed one) and renamed into its folder. Every ``batch_size`` files (the
pipeline's txn_size) they are fsync'ed (on 8 threads) and appended to ``imagenet_db.files.log``
(``index TAB label TAB relpath``, fsync'ed): the log says which records are stored, so a resumed
build continues after its last line (files written after it are written again, identically).
The finished output keeps the log: it lists every file the build wrote, which is all that
``--overwrite`` may delete there (``made_files``). The tree is plain image folders plus the
completion record ``imagenet_db.json``, the log and, if any, the skip log.
"""
import os
import sys
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.crc import CHECKSUM_FIELD, add_checksum, crc32
from imagenet_db.engine.files import fsync_dir
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.imaging.decode import decode_image
from imagenet_db.imaging.headers import describe_undecodable, jpeg_size, png_dimensions, \
    sniff_format
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.batchfiles import sync_file, temporary_path
from imagenet_db.outputs.spec import FormatOption, FormatSpec, Stage
from imagenet_db.sources.base import Dataset, Record, Split
from imagenet_db.text import split_lines

LOG_NAME = "imagenet_db.files.log"
SYNC_THREADS = 8


def file_checksum(relpath: str, data) -> int:
    """CRC-32 of a written file's relpath (UTF-8) followed by its bytes: the per-entry checksum
    the completion record sums (``observers.checksum``) and ``extract --check_contents``
    recomputes."""
    return crc32(data, crc32(relpath.encode("utf-8")))


def listed_files(list_path: str, skipped=()) -> List[Tuple[int, str, int]]:
    """(record index, relpath, label) of each line of a split's list (``OUTDIR/train.txt``:
    'relpath label' lines, line i = record i), the relpaths in ``skipped`` left out: the files
    a finished folder output holds. Raises OSError when the list cannot be read."""
    skipped = set(skipped)
    out = []
    with open(list_path, encoding="utf-8", newline="\n") as f:
        for index, line in enumerate(f):
            relpath, label = line.rstrip("\n").rsplit(" ", 1)
            if relpath not in skipped:
                out.append((index, relpath, int(label)))
    return out


def files_checksum(root: str, relpaths, visit=None) -> int:
    """The content checksum of the files ``root/relpath``: the sum modulo 2^64 of their
    ``file_checksum`` (what the completion record keeps as ``entries_crc32_sum``). Reads every
    file; ``visit(relpath, data)``, if given, sees each one. Raises OSError (with the file's
    name) for a file that cannot be read."""
    total = 0
    for relpath in relpaths:
        with open(os.path.join(root, *relpath.split("/")), "rb") as f:
            data = f.read()
        if visit is not None:
            visit(relpath, data)
        total = add_checksum(total, file_checksum(relpath, data))
    return total


def copies_files(options) -> bool:
    """True when ``options`` (TransformOptions) leave every image unchanged: no resize, colour,
    stored encoded in each file's own format — the file bytes can be copied as they are."""
    return (not options.resizing and options.is_color and options.encoded
            and not options.encode_type)


class FolderOutput(Output):
    """Writes image files under ``path`` (one split), resumable (module docstring).

    batch_size: files per commit (fsync + log line), the pipeline's txn_size.
    """
    name = "folder"
    verify_accepts = "(one split: OUTDIR/train or OUTDIR/val, with its imagenet_db.json)"
    description = "image files in <wnid>/ folders (ImageFolder / Torch layout)"

    def __init__(self, path: str, batch_size: int = 1000):
        self.path = path
        self.batch_size = max(1, batch_size)
        os.makedirs(path, exist_ok=True)
        self.log_path = os.path.join(path, LOG_NAME)
        self.logged: List[Tuple[int, int, str]] = []
        self._pending: List[Tuple[int, int, str]] = []
        self._folders = set()
        self._syncer: Optional[ThreadPoolExecutor] = None
        self._load()
        self._drop_damaged()

    def _load(self) -> None:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[:data.rfind(b"\n") + 1]  # a line cut short by a crash is dropped
        if len(complete) != len(data):
            with open(self.log_path, "ab") as f:
                f.truncate(len(complete))
        for line in split_lines(complete.decode("utf-8")):  # '\n' only: imagenet_db.text
            index, label, relpath = line.split("\t", 2)
            self.logged.append((int(index), int(label), relpath))

    def _drop_damaged(self) -> None:
        """Check every logged file (a stat each): from the first one that is missing, not a
        regular file or empty (damaged after the build was killed), the log is cut back, so
        that a resumed build writes it, and what follows, again instead of publishing it.
        The file is named on stderr."""
        for position, (_, _, relpath) in enumerate(self.logged):
            path = self._file(relpath)
            try:
                damaged = None if os.lstat(path).st_size else "is empty"
                if os.path.islink(path) or not os.path.isfile(path):
                    damaged = "is not a regular file"
            except FileNotFoundError:
                damaged = "is missing"
            if damaged:
                print(f"note: {path} {damaged}: the build continues from it (record "
                      f"{self.logged[position][0]}), writing it again", file=sys.stderr)
                with open(self.log_path, "rb+") as f:
                    lines = f.read().split(b"\n")
                    f.truncate(sum(len(line) + 1 for line in lines[:position]))
                del self.logged[position:]
                return

    @classmethod
    def encode_file(cls, record, data: bytes, options) -> Optional[object]:
        """The file's own bytes when ``options`` ask for no change (``copies_files``): no
        decode. Returns an Encoded, a skip reason (empty or not an image), or None to go
        through the transform."""
        if not copies_files(options):
            return None
        if not data or sniff_format(data) is None:
            return describe_undecodable(data)
        size = jpeg_size(data) or png_dimensions(data) or (0, 0)
        return Encoded(data, None, (3, size[1], size[0]), record.relpath,
                       file_checksum(record.relpath, data))

    @classmethod
    def encode(cls, record, image) -> object:
        """The transformed image's file bytes (re-encoded by the transform)."""
        if image.encoded is not None:
            return Encoded(image.encoded, None, image.shape, record.relpath,
                           file_checksum(record.relpath, image.encoded))
        ext = os.path.splitext(record.relpath)[1] or ".jpg"
        ok, buf = cv2.imencode(ext, image.pixels)
        if not ok:
            return f"cannot encode image as {ext!r}"
        data = buf.tobytes()
        return Encoded(data, None, image.shape, record.relpath, file_checksum(record.relpath, data))

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds a folder build's log (an unfinished one)."""
        return os.path.isfile(os.path.join(path, LOG_NAME))

    @classmethod
    def verify(cls, path: str, manifest: dict, report) -> None:
        """Check the finished split folder ``path`` (``imagenet-db verify``): the files of its
        list (``OUTDIR/<split>.txt`` beside it, less the skipped ones of ``path.skipped.tsv``)
        are there and no other image file; when the list is gone, the image files found are
        checked; each decodes (OpenCV, after the header checks of the build); labels in
        0..synsets-1 and the list against ``entries_sha256``; the content checksum
        (``entries_crc32_sum``) recomputed from every file. Problems go to ``report`` (a
        ``verify.VerifyReport``), one line each, naming the file."""
        from imagenet_db.imaging.headers import check_image_bytes

        found = _image_files(path)
        list_path = os.path.join(os.path.dirname(path), f"{manifest.get('split')}.txt")
        listed = _checked_list(path, list_path, manifest, found, report)
        present = []
        for _, relpath, label in listed:
            if relpath not in found:
                report.problem(f"{os.path.join(path, relpath)}: missing")
                continue
            present.append(relpath)
            if label is not None:
                report.labels[label] += 1
                if label < 0 or label >= manifest.get("synsets", label + 1):
                    report.problem(f"{list_path}: {relpath}: label {label} is outside "
                                   f"0..{manifest['synsets'] - 1}")
        report.entries = len(present)

        def decodes(relpath, data):
            problem = check_image_bytes(data)
            image = None if problem else decode_image(data, True)
            if image is None:
                report.problem(f"{os.path.join(path, relpath)}: "
                               f"{problem or describe_undecodable(data)}")
            else:
                report.shapes[(3, image.shape[0], image.shape[1])] += 1

        try:
            total = files_checksum(path, present, decodes)
        except OSError as exc:
            report.problem(f"{exc.filename}: {exc.strerror or exc}")
            return
        recorded = manifest.get(CHECKSUM_FIELD)
        if recorded is not None and recorded != f"{total:016x}" and not report.problems:
            report.problem(f"{path}: its files differ from those written (content checksum "
                           f"{CHECKSUM_FIELD} of its completion record): a file was changed")

    @property
    def pending(self) -> int:
        """Files written since the last commit."""
        return len(self._pending)

    def _file(self, relpath: str) -> str:
        parts = relpath.split("/")
        if any(part in ("", ".", "..") for part in parts) or os.path.isabs(relpath):
            raise DatabaseError(f"{relpath!r}: not a relative path inside the output")
        return os.path.join(self.path, *parts)

    def add(self, record, encoded: Encoded) -> None:
        """Write the file ``<path>/<relpath>`` (through a temporary, renamed)."""
        if self._pending and record.index <= self._pending[-1][0] or \
                self.logged and record.index <= self.logged[-1][0]:
            raise DatabaseError(f"{self.path}: record {record.index} is not in list order")
        final = self._file(record.relpath)
        folder = os.path.dirname(final)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        # The temporary goes to the output root, where a resumed build removes stale ones: one
        # beside the file (in <wnid>/) outlived a SIGKILL and was published with the tree.
        tmp = temporary_path(final, self.path)
        try:
            with open(tmp, "wb") as f:
                f.write(encoded.value)
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self._pending.append((record.index, int(record.label), record.relpath))
        if len(self._pending) >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        """fsync the files written since the last commit and their folders, then log them."""
        if not self._pending:
            return
        files = [self._file(relpath) for _, _, relpath in self._pending]
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="imagenet-db-fsync")
        # fsyncs of many files overlap well (7x faster with 8 threads here than one by one)
        list(self._syncer.map(sync_file, files))
        for folder in {os.path.dirname(path) for path in files}:
            fsync_dir(folder)
        text = "".join(f"{i}\t{label}\t{relpath}\n" for i, label, relpath in self._pending)
        with open(self.log_path, "ab") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.logged.extend(self._pending)
        self._pending = []

    def close(self) -> None:
        """Commit."""
        self.commit()
        self._stop_syncer()

    def abort(self) -> None:
        """Forget the files not yet committed (they stay on disk and are written again, with
        the same bytes, by a resumed build)."""
        self._pending = []
        self._stop_syncer()

    def _stop_syncer(self) -> None:
        if self._syncer is not None:
            self._syncer.shutdown()
            self._syncer = None

    def resume_position(self, records: Sequence) -> int:
        """1 + the index of the last logged file (0 when none); DatabaseError when that file is
        not the record of this list at that index."""
        if not self.logged:
            return 0
        index, label, relpath = self.logged[-1]
        if index >= len(records) or (records[index].relpath, records[index].label) != \
                (relpath, label):
            raise DatabaseError(f"{self.path}: its last file {relpath!r} (record {index}) is not "
                                f"in the list; the partial output belongs to another list")
        return index + 1

    def entries(self) -> int:
        """Files committed."""
        return len(self.logged)

    def checksums(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """Committed files from record ``start`` on: (index, file_checksum), read back."""
        for index, _, relpath in self.logged:
            if index >= start:
                with open(self._file(relpath), "rb") as f:
                    yield index, file_checksum(relpath, f.read())

    def stored(self, start: int = 0) -> Iterator[Tuple[int, str, np.ndarray]]:
        """Committed files from record ``start`` on: (index, relpath, (C, H, W) BGR pixels)."""
        for index, _, relpath in self.logged:
            if index >= start:
                with open(self._file(relpath), "rb") as f:
                    image = decode_image(f.read(), True)
                yield index, relpath, np.ascontiguousarray(image.transpose(2, 0, 1))

    def finish(self) -> dict:
        """Nothing to add: the log stays, as the list of the files written (``made_files``)."""
        return {}

    @classmethod
    def made_files(cls, path: str, manifest: dict) -> set:
        """The files the log of the finished output ``path`` lists (relpaths); for an output
        of an earlier version without the log, the files of its list ``OUTDIR/<split>.txt``
        when that still matches the completion record (``entries_sha256``). Raises
        DatabaseError when neither can be read."""
        try:
            with open(os.path.join(path, LOG_NAME), "rb") as f:
                return {line.split(b"\t", 2)[2].decode("utf-8") for line in f.read().split(b"\n")
                        if line.count(b"\t") >= 2}
        except (OSError, UnicodeDecodeError):
            pass
        from imagenet_db.engine.buildstate import list_fingerprint, read_skip_report
        from imagenet_db.sources.base import Record

        list_path = os.path.join(os.path.dirname(path), f"{manifest.get('split')}.txt")
        try:
            listed = listed_files(list_path, [relpath for relpath, _ in read_skip_report(path)])
        except (OSError, ValueError):
            listed = None
        if listed is None or list_fingerprint([Record(i, r, label, None) for i, r, label in
                                               listed]) != manifest.get("entries_sha256"):
            raise DatabaseError(f"{path}: neither {LOG_NAME} nor {list_path} says which files "
                                f"the build wrote")
        return {relpath for _, relpath, _ in listed}


def _image_files(path: str) -> set:
    """The image files under ``path`` (relpaths with '/'), hidden files and folders left out."""
    from imagenet_db.sources.base import is_image_name

    found = set()
    for folder, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, path).replace(os.sep, "/")
        found.update(name if rel == "." else f"{rel}/{name}" for name in names
                     if is_image_name(name) and not name.startswith("."))
    return found


def _checked_list(path: str, list_path: str, manifest: dict, found: set, report) -> list:
    """The (index, relpath, label) entries a split folder must hold: its list file less the
    skipped images, checked against the completion record's ``entries_sha256`` and against
    the files ``found`` (extra files are problems); when the list cannot be read, the files
    found (with unknown labels), and a note saying so."""
    from imagenet_db.engine.buildstate import list_fingerprint
    from imagenet_db.engine.buildstate import read_skip_report
    from imagenet_db.sources.base import Record

    try:
        skipped = [relpath for relpath, _ in read_skip_report(path)]
        listed = listed_files(list_path, skipped)
    except (OSError, ValueError) as exc:
        report.notes.append(f"{list_path}: not read ({getattr(exc, 'strerror', None) or exc}): "
                            f"the image files found are checked, not the list")
        return [(None, relpath, None) for relpath in sorted(found)]
    fingerprint = list_fingerprint([Record(i, r, label, None) for i, r, label in listed])
    if manifest.get("entries_sha256") not in (None, fingerprint):
        report.problem(f"{list_path}: its images or labels differ from those the "
                       f"folder was built from (entries_sha256)")
    for relpath in sorted(found - {relpath for _, relpath, _ in listed}):
        report.problem(f"{os.path.join(path, relpath)}: not in {list_path}")
    return listed


VAL_LAYOUTS = ("folders", "flat")


def _position(load, relpath: str):
    """Where a loader reads in its archive (for sequential I/O), else the relpath."""
    key = getattr(load, "sort_key", None)
    if key is None:
        offset = getattr(load, "offset", None)
        reader = getattr(load, "reader", None)
        key = (getattr(reader, "path", ""), offset) if offset is not None else ("", 0)
    return key, relpath


def archive_order_records(split: Split) -> List[Record]:
    """The split's records in the order its images sit in their archives (by each loader's
    position when it has one, else by relpath): sequential reads for a plain copy."""
    loads = [(split.loader(relpath), relpath, label) for relpath, label in split.entries]
    loads.sort(key=lambda item: _position(item[0], item[1]))
    return [Record(i, relpath, label, load) for i, (load, relpath, label) in enumerate(loads)]


def folder_relpaths(found: Dataset, val_layout: str) -> Dataset:
    """``found`` with val relpaths as the folder output writes them: ``<wnid>/<name>``
    (folders) or ``<name>`` (flat); loaders still read the source's paths. Raises
    ImagenetDbError for another layout or two val files of one name."""
    if val_layout not in VAL_LAYOUTS:
        raise ImagenetDbError(f"val layout must be one of {', '.join(VAL_LAYOUTS)}, "
                              f"not {val_layout!r}")
    splits = dict(found.splits)
    if "val" in splits:
        val = splits["val"]
        names = {}
        for rel, label in val.entries:
            base = rel.rsplit("/", 1)[-1]
            names[f"{found.synsets[label]}/{base}" if val_layout == "folders" else base] = rel
        entries = sorted((new, label) for new, (rel, label) in
                         zip(names, val.entries))
        if len(names) != len(val.entries):
            raise ImagenetDbError("two validation images have the same file name")
        loader = val.loader
        splits["val"] = Split("val", entries, lambda new, _n=names, _l=loader: _l(_n[new]))
    return replace(found, splits=splits)


def check_transform(transform: TransformOptions) -> None:
    """The folder format stores image files: the transform must encode."""
    if not transform.encoded:
        raise ImagenetDbError("the folder format stores image files: the transform must encode")


def stages(found: Dataset, out: str, recipe, want_mean: bool) -> Tuple[Dataset, list]:
    """``train/`` and ``val/`` as image folders (``<wnid>/<name>``, val in per-wnid folders as
    valprep.sh makes them, or flat with ``recipe.val_layout='flat'``), in archive order
    (sequential reads); the aux files name those paths."""
    found = folder_relpaths(found, recipe.val_layout)
    return found, [Stage(name, os.path.join(out, FORMAT.folder.format(split=name)), FORMAT.name,
                         archive_order_records(split),
                         {"split": name, "synsets": len(found.synsets), "format": FORMAT.name,
                          "val_layout": recipe.val_layout})
                   for name, split in found.splits.items()]


def default_transform(options=None) -> TransformOptions:
    """No resize: each file stored as it is (copied byte for byte)."""
    return TransformOptions(encoded=True)


FORMAT = FormatSpec(
    name="folder", summary="image folders", folder="{split}",
    default_transform=default_transform,
    check_transform=check_transform, stages=stages,
    options=(FormatOption("val_layout", "folder format: val/<wnid>/ (default, as valprep.sh) or "
                                        "flat val/", choices=VAL_LAYOUTS, default="folders"),))
FolderOutput.format_spec = FORMAT
