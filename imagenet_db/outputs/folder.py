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
``finish`` deletes the log (the tree is then plain image folders plus the completion record
``imagenet_db.json`` and, if any, the skip log).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.crc import crc32
from imagenet_db.engine.files import fsync_dir, remove_path
from imagenet_db.errors import DatabaseError
from imagenet_db.imaging.decode import decode_image
from imagenet_db.imaging.headers import describe_undecodable, jpeg_size, png_dimensions, \
    sniff_format
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.batchfiles import sync_file, temporary_path

LOG_NAME = "imagenet_db.files.log"
SYNC_THREADS = 8


def file_checksum(relpath: str, data) -> int:
    """CRC-32 of a written file's relpath (UTF-8) followed by its bytes: the per-entry checksum
    the completion record sums (``observers.checksum``) and ``extract --check_contents``
    recomputes."""
    return crc32(data, crc32(relpath.encode("utf-8")))


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
        for line in complete.decode("utf-8").splitlines():
            index, label, relpath = line.split("\t", 2)
            self.logged.append((int(index), int(label), relpath))

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
        """Delete the log (the completion record counts the files)."""
        remove_path(self.log_path)
        return {}
