"""Reading an existing LevelDB without changing it, from any number of processes.

Opening a LevelDB with plyvel (LevelDB's own ``DB::Open``) changes its directory: it writes
LOCK, LOG and a new MANIFEST, replays the ``.log`` files into new tables and deletes them.
And only one process may hold a LevelDB at a time (the LOCK file). Caffe's databases (and
imagenet-db's, written with Caffe's 256 MiB write buffer) end with up to a few hundred MB
still in ``.log`` files, so even a reader would rewrite them.

So readers open a private *view* instead, in the temporary folder:

* the **snapshot** (once per database, in the process that first reads it): CURRENT and the
  MANIFEST copied, every table file symlinked, the logs symlinked; LevelDB is opened there
  once, which replays the logs into new tables *inside the snapshot* (seconds for 256 MB) and
  deletes only the log symlinks. Tables are linked under the name ``N.sst``: LevelDB opens
  table N as ``N.ldb``, else ``N.sst``, but only ever creates ``N.ldb``. Linking them under
  their own names is not safe: a table that LevelDB wrote but never recorded (a flush cut
  short when the writer closed) has a number LevelDB hands out again, and it would create
  the new table *through the symlink*, overwriting the original file.
* a **view** per process (milliseconds): hard links to the snapshot's tables (symlinks when
  the temporary folder spans file systems), symlinks to the original tables, copies of
  CURRENT and MANIFEST; nothing left to replay. LevelDB writes only LOCK, LOG and a new
  MANIFEST there. One view (one plyvel DB, thread-safe) serves every reader of the process.

The original directory is left byte for byte as it was (tests check sizes, mtimes and contents
of every file). Views are opened with ``paranoid_checks`` and read with every block's checksum
verified: a damaged log or table is a DamagedDatabaseError, not silently shorter data (LevelDB's
default recovery drops a write batch whose log record is damaged). What LevelDB writes goes to the temporary folder instead: the replayed logs (up
to the writer's 256 MiB write buffer, twice) and, when the database was closed with a
compaction pending (a big, freshly written one may be), the tables that compaction writes, in
the snapshot and possibly again in each process's view. Caffe's own LevelDB reader does that
compaction in place. Snapshots and views are named with their process id and removed when their
last reader closes or the process exits; those of processes that are gone (a killed parent, a
DataLoader worker that ends with ``os._exit``) are removed by the next reader that makes one.
"""
import atexit
import os
import re
import shutil
import tempfile
import threading
from typing import Dict, Iterator, List, Optional, Tuple

import plyvel

from imagenet_db.engine.files import pid_alive
from imagenet_db.errors import DamagedDatabaseError, DatabaseError
from imagenet_db.outputs.leveldb import _error_text
from imagenet_db.text import is_ascii_number

PREFIX = "imagenet-db-leveldb-"
READ_MAX_OPEN_FILES = 500  # table files kept open per process (Caffe uses 100 for writing)
_NAME = re.compile(re.escape(PREFIX) + r"(snapshot|view)-([0-9]+)-")

_SHARED: Dict[str, "_View"] = {}  # realpath -> this process's view
_SNAPSHOTS: Dict[str, str] = {}   # realpath -> snapshot dir made by this process
_KEEP: List[object] = []           # views inherited through fork(): never closed or freed
_LOCK = threading.Lock()


def _after_fork_in_child():
    global _LOCK
    _LOCK = threading.Lock()
    _KEEP.extend(_SHARED.values())  # freeing a parent's plyvel DB in the child would hang
    _SHARED.clear()
    _SNAPSHOTS.clear()  # the parent's, not ours to remove


os.register_at_fork(after_in_child=_after_fork_in_child)


def _table_number(name: str) -> Optional[int]:
    stem, ext = os.path.splitext(name)
    return int(stem) if ext in (".ldb", ".sst") and is_ascii_number(stem) else None


def _tables(folder: str) -> Dict[int, str]:
    """Table number -> file; when both N.ldb and N.sst exist LevelDB reads N.ldb."""
    found: Dict[int, str] = {}
    for name in sorted(os.listdir(folder)):
        number = _table_number(name)
        if number is not None and (number not in found or name.endswith(".ldb")):
            found[number] = os.path.join(folder, name)
    return found


def remove_stale() -> None:
    """Remove snapshots and views of processes that no longer run."""
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        match = _NAME.match(name)
        if match and not pid_alive(int(match.group(2))):
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)


def _new_dir(kind: str) -> str:
    return tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-")


def _open_db(folder: str, path: str) -> "plyvel.DB":
    # paranoid_checks: a damaged log or table is an error, never "recovered" by dropping data
    try:
        return plyvel.DB(folder, create_if_missing=False, max_open_files=READ_MAX_OPEN_FILES,
                         paranoid_checks=True)
    except plyvel.CorruptionError as exc:
        raise DamagedDatabaseError(f"{path}: damaged LevelDB: {_error_text(exc)}") from None
    except plyvel.Error as exc:
        raise DatabaseError(f"{path}: cannot open as LevelDB: {_error_text(exc)}") from None


def _checked(pairs, path: str):
    """``pairs`` (a plyvel iterator) with LevelDB's errors (a block checksum mismatch...) as
    DamagedDatabaseError."""
    try:
        yield from pairs
    except plyvel.Error as exc:
        raise DamagedDatabaseError(f"{path}: damaged LevelDB: {_error_text(exc)}") from None


def make_snapshot(path: str) -> str:
    """Replay the LevelDB at ``path`` into a private snapshot folder (see the module docstring)
    and return it. Raises DatabaseError when ``path`` is not a readable LevelDB."""
    remove_stale()
    snapshot = _new_dir("snapshot")
    try:
        for number, table in _tables(path).items():
            os.symlink(os.path.abspath(table), os.path.join(snapshot, f"{number:06d}.sst"))
        for name in os.listdir(path):
            source = os.path.join(path, name)
            if name == "CURRENT" or name.startswith("MANIFEST-"):
                shutil.copyfile(source, os.path.join(snapshot, name))
            elif name.endswith(".log") and is_ascii_number(name[:-4]):  # read, then unlinked
                os.symlink(os.path.abspath(source), os.path.join(snapshot, name))
        _open_db(snapshot, path).close()
    except BaseException:
        shutil.rmtree(snapshot, ignore_errors=True)
        raise
    return snapshot


def _make_view(snapshot: str, path: str) -> str:
    view = _new_dir("view")
    try:
        for number, table in _tables(snapshot).items():
            target = os.path.join(view, f"{number:06d}.sst")
            if os.path.islink(table):
                os.symlink(os.readlink(table), target)
            else:
                try:
                    os.link(table, target)
                except OSError:
                    os.symlink(os.path.abspath(table), target)
        for name in os.listdir(snapshot):
            if name == "CURRENT" or name.startswith("MANIFEST-"):
                shutil.copyfile(os.path.join(snapshot, name), os.path.join(view, name))
    except OSError as exc:
        shutil.rmtree(view, ignore_errors=True)
        raise DatabaseError(f"{path}: cannot make a read-only view of the LevelDB in "
                            f"{tempfile.gettempdir()}: {exc}") from None
    return view


class _View:
    def __init__(self, path: str, snapshot: str):
        self.folder = _make_view(snapshot, path)
        try:
            self.db = _open_db(self.folder, path)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.users = 0

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _close_all() -> None:
    with _LOCK:
        for view in _SHARED.values():
            view.close()
        _SHARED.clear()
        for snapshot in _SNAPSHOTS.values():
            shutil.rmtree(snapshot, ignore_errors=True)
        _SNAPSHOTS.clear()


atexit.register(_close_all)


class LevelDbReader:
    """A lease on this process's read-only view of the LevelDB at ``path`` (module docstring).

    snapshot: a snapshot folder made for this database by another process (a pickled
    DatumDB passes its own on), else one is made (or this process's is reused). Thread-safe.
    Raises DatabaseError when ``path`` cannot be opened as a LevelDB.
    """

    def __init__(self, path: str, snapshot: Optional[str] = None):
        self.path = path
        real = os.path.realpath(path)
        with _LOCK:
            view = _SHARED.get(real)
            if view is None:
                if snapshot is None or not os.path.isdir(snapshot):
                    snapshot = _SNAPSHOTS.get(real)
                    if snapshot is None:
                        snapshot = _SNAPSHOTS[real] = make_snapshot(path)
                view = _SHARED[real] = _View(path, snapshot)
            view.users += 1
            self.snapshot = snapshot or _SNAPSHOTS.get(real)
        self._real = real
        self._view: Optional[_View] = view

    def _db(self) -> "plyvel.DB":
        if self._view is None:
            raise DatabaseError(f"{self.path}: reader is closed")
        return self._view.db

    def get(self, key: bytes) -> Optional[bytes]:
        """The value stored under ``key``, or None."""
        return self._db().get(key)

    def items(self, buffers: bool = False) -> Iterator[Tuple[bytes, bytes]]:
        """All (key, value) pairs in key order (values are bytes whatever ``buffers``), every
        block's checksum verified (DamagedDatabaseError on a mismatch)."""
        return _checked(self._db().iterator(verify_checksums=True), self.path)

    def keys(self) -> List[bytes]:
        """All keys in key order (LevelDB stores values beside keys: this reads everything)."""
        return list(self._db().iterator(include_value=False))

    def entries(self) -> int:
        """Number of entries (counted by iterating the keys)."""
        return sum(1 for _ in self._db().iterator(include_value=False))

    def close(self) -> None:
        """Give the lease back; the view (and the snapshot, when this process made it) is
        removed with the last lease."""
        view, self._view = self._view, None
        if view is None:
            return
        with _LOCK:
            view.users -= 1
            if view.users <= 0 and _SHARED.get(self._real) is view:
                del _SHARED[self._real]
                view.close()
                snapshot = _SNAPSHOTS.pop(self._real, None)
                if snapshot:
                    shutil.rmtree(snapshot, ignore_errors=True)


PARALLEL_READS = False  # plyvel iterators serialize: the mean reads on one thread
list_keys = None  # no key listing without opening a view (DatumDB opens one)


def open_reader(path: str, snapshot: Optional[str] = None) -> "LevelDbReader":
    """A reader of the LevelDB at ``path`` through ``snapshot`` (made once per database, see
    the module docstring; None: made or found now)."""
    return LevelDbReader(path, snapshot)


def detect(path: str) -> bool:
    """True when ``path`` holds a LevelDB's CURRENT file."""
    return os.path.isfile(os.path.join(path, "CURRENT"))


def iterate(path: str) -> Iterator[Tuple[bytes, bytes]]:
    """(key, value) pairs of an existing LevelDB in key order, read through a private view
    (the database itself is not touched); DatabaseError if it cannot be opened."""
    reader = LevelDbReader(path)
    try:
        yield from reader.items()
    finally:
        reader.close()
