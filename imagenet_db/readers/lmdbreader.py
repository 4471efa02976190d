"""Reading an existing LMDB: read-only, lock-free, one environment per process, fork-safe.

Every read of an LMDB in imagenet-db (``DatumDB``, ``verify``, ``compute_image_mean``,
``iterate_db``) goes through ``open_reader``, because of three facts:

* ``lmdb.open(path, readonly=True, lock=False)`` writes nothing: no ``lock.mdb`` appears next
  to someone else's database (``lock=True`` creates one even for a read-only open), and it
  works on read-only media. Without the lock there is no reader table, so any number of
  threads may hold read transactions. LMDB's condition for this (MDB_NOLOCK) is that no
  writer is active: true for a finished database (imagenet-db builds in ``DB.partial`` and
  renames; ``--overwrite`` swaps in new files, so readers of the old ones are unaffected).
  Do not use it on a database another program is still appending to.
* py-lmdb opens the files of an environment once per process ("already open in this
  process", keyed by the files' device and inode) and that guard is inherited by ``fork()``.
  So one environment per database is shared by all readers of a process (reference-counted
  leases), and a forked child (a PyTorch DataLoader worker) keeps using the one it inherited:
  lock-free and read-only, it holds no lock or reader-table state that belongs to the parent.
  Read transactions are made anew in each process and thread.
* A key-only cursor still reads the first page of every value (LMDB checks the header of the
  value's overflow page), and with the default readahead the kernel reads ~128 KiB around
  it: listing the keys of a cold database would read nearly all of it. ``keys()`` therefore
  lists them through a separate environment opened without readahead when the process has
  none open (4 KiB per datum; 21 MB instead of 1 GB for 5,000 raw 256x256 datums), while
  reads keep readahead (48 single-page faults per 196 KB datum would be ~10x slower cold).
"""
import os
import threading
from typing import Dict, Iterator, List, Optional, Tuple

import lmdb

from imagenet_db.errors import DamagedDatabaseError, DatabaseError

_SHARED: Dict[Tuple[int, int], "_SharedEnv"] = {}  # (st_dev, st_ino) of data.mdb -> handle
_SHARED_LOCK = threading.Lock()


def _new_lock_after_fork():
    """A lock held by another thread at fork() would stay locked forever in the child."""
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def _identity(path: str) -> Tuple[int, int]:
    data = os.path.join(path, "data.mdb")
    try:
        st = os.stat(data)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot open as LMDB: {exc.strerror}: {data}") from None
    return st.st_dev, st.st_ino


def _open_env(path: str, readahead: bool) -> "lmdb.Environment":
    try:
        env = lmdb.open(path, readonly=True, lock=False, subdir=True, create=False,
                        readahead=readahead, max_dbs=0)
    except lmdb.Error as exc:
        raise DatabaseError(f"{path}: cannot open as LMDB: {exc}") from None
    try:
        check_size(env, path)
    except BaseException:
        env.close()
        raise
    return env


def check_size(env: "lmdb.Environment", path: str) -> None:
    """Raise DamagedDatabaseError when data.mdb is shorter than the pages its meta page counts
    (a copy cut short): reading such a file would kill the reader with SIGBUS."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    try:
        have = os.path.getsize(os.path.join(path, "data.mdb"))
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read data.mdb: {exc.strerror or exc}") from None
    if have < need:
        raise DamagedDatabaseError(f"{path}: data.mdb is truncated: {have:,} bytes, but its meta "
                                   f"page counts {need:,} (an incomplete copy?)")


def damaged(path: str, exc: "lmdb.Error") -> DamagedDatabaseError:
    """The error for an lmdb error met while reading (MDB_PAGE_NOTFOUND, MDB_CORRUPTED...)."""
    return DamagedDatabaseError(f"{path}: damaged LMDB: {exc}")


class _SharedEnv:
    """The process's environment for one database, with per-thread, per-process read txns."""

    def __init__(self, path: str, identity):
        self.env = _open_env(path, readahead=True)
        self.identity = identity
        self.pid = os.getpid()
        self.users = 0
        self.local = threading.local()

    def txn(self) -> "lmdb.Transaction":
        """This thread's read transaction (buffers=True), made anew after a fork."""
        local, pid = self.local, os.getpid()
        if getattr(local, "pid", None) != pid:
            local.txn, local.pid = self.env.begin(buffers=True), pid
        return local.txn


def list_keys(path: str) -> List[bytes]:
    """All keys of the LMDB at ``path`` in key order; through an environment without
    readahead when this process has none open (see the module docstring). Raises
    DatabaseError when ``path`` cannot be opened as an LMDB."""
    identity = _identity(path)
    with _SHARED_LOCK:  # nobody may open the shared environment while this one is open
        shared = _SHARED.get(identity)
        if shared is None:
            env = _open_env(path, readahead=False)
            try:
                with env.begin() as txn:
                    return list(txn.cursor().iternext(keys=True, values=False))
            except lmdb.Error as exc:
                raise damaged(path, exc) from None
            finally:
                env.close()
    try:
        with shared.env.begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))
    except lmdb.Error as exc:  # a damaged page: one line naming the database
        raise damaged(path, exc) from None


class LmdbReader:
    """A lease on the process's read-only, lock-free environment of the LMDB at ``path``.

    Thread-safe. ``get(key)`` returns a zero-copy memoryview into the memory map (valid until
    this thread's next ``get``; copy what you keep) or None. Raises DatabaseError when
    ``path`` cannot be opened as an LMDB.
    """

    def __init__(self, path: str):
        self.path = path
        identity = _identity(path)
        with _SHARED_LOCK:
            shared = _SHARED.get(identity)
            if shared is None:
                shared = _SHARED[identity] = _SharedEnv(path, identity)
            shared.users += 1
        self._shared: Optional[_SharedEnv] = shared

    def _env(self) -> _SharedEnv:
        if self._shared is None:
            raise DatabaseError(f"{self.path}: reader is closed")
        return self._shared

    def get(self, key: bytes):
        """The value stored under ``key`` (a memoryview into the map), or None.
        DamagedDatabaseError when a page on the way is damaged."""
        try:
            return self._env().txn().get(key)
        except lmdb.Error as exc:
            raise damaged(self.path, exc) from None

    def items(self, buffers: bool = False) -> Iterator[Tuple[bytes, object]]:
        """All (key, value) pairs in key order, in a read transaction of their own (ended when
        the iterator is dropped). buffers=True gives keys and values as memoryviews valid only
        until the next pair (no copy); else bytes."""
        # py-lmdb's own cursor iterator (no Python frame per pair: the mean walks it on every
        # thread); it keeps its transaction alive, which, lock-free, holds no reader slot
        try:
            pairs = self._env().env.begin(buffers=buffers).cursor().iternext()
        except lmdb.Error as exc:
            raise damaged(self.path, exc) from None
        return _checked(self.path, pairs)

    def entries(self) -> int:
        """Number of entries (from LMDB's statistics, no scan)."""
        try:
            return self._env().env.stat()["entries"]
        except lmdb.Error as exc:
            raise damaged(self.path, exc) from None

    def keys(self) -> List[bytes]:
        """All keys in key order."""
        return list_keys(self.path)

    def close(self) -> None:
        """Give the lease back. The environment closes with the last lease of the process that
        opened it; a forked child keeps the one it inherited (py-lmdb would refuse to open the
        same files again in it)."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _SHARED_LOCK:
            shared.users -= 1
            if shared.users <= 0 and shared.pid == os.getpid() and \
                    _SHARED.get(shared.identity) is shared:
                del _SHARED[shared.identity]
                shared.env.close()


def _checked(path: str, pairs: Iterator) -> Iterator:
    """``pairs`` with an lmdb error (a damaged page) raised as DamagedDatabaseError."""
    try:
        yield from pairs
    except lmdb.Error as exc:
        raise damaged(path, exc) from None


PARALLEL_READS = True  # readers on many threads scale (one mmap, no lock): the mean splits work


def open_reader(path: str, snapshot: Optional[str] = None) -> "LmdbReader":
    """A reader of the LMDB at ``path`` (``snapshot`` is LevelDB's; unused here)."""
    return LmdbReader(path)


def detect(path: str) -> bool:
    """True when ``path`` holds an LMDB's data.mdb."""
    return os.path.isfile(os.path.join(path, "data.mdb"))


def iterate(path: str) -> Iterator[Tuple[bytes, bytes]]:
    """(key, value) pairs of an existing LMDB in key order, read-only and lock-free (see the
    module docstring); DatabaseError if it cannot be opened, DamagedDatabaseError when it is
    truncated or a page is damaged."""
    reader = LmdbReader(path)
    try:
        yield from reader.items()
    except lmdb.Error as exc:
        raise damaged(path, exc) from None
    finally:
        reader.close()
