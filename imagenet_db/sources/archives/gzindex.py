"""A .tar.gz read in place: every member is a positioned read of the *uncompressed* tar, served by
gzip random access (rapidgzip) from a cached index of seek points. Nothing is extracted to disk.

Why rapidgzip (measured on this project's 2-core VM, JPEG data, see benchmarks/README.md):
a gzip stream can only be entered at a seek point that stores the 32 KiB of output before it.
indexed_gzip stores those windows whole (32 KiB a point: 77 GB of index for the 155 GB
ILSVRC2015 archive at 64 KiB spacing, 4.8 GB at 1 MiB where a random read costs ~2 ms);
rapidgzip exports them in gztool's format sparse (bytes no later back-reference uses are
zeroed) and compressed, ~180 bytes a point for JPEG data (~0.4 GB for 155 GB at 64 KiB).

Index pass (once per archive): one sequential pass decompresses the whole file with rapidgzip
on all cores while ``tarfile`` reads the member headers from that stream (``InOrder``: every
byte is read, none skipped, so rapidgzip checks each gzip member's CRC-32 and ISIZE footer:
a byte changed anywhere, or a wrong footer, is an error naming the file; the cache below holds
only indexes made by such a checked pass; reads later serve bytes of that checked file, whose
size and mtime must not change, see ``GzipTarReader``); rapidgzip records a
seek point every CHUNK (64 KiB) of compressed data; small metadata members chosen by the caller
(validation XMLs, devkit files) are kept. All three are cached beside the tar index
(``imagenet_db.sources.archives.tarindex``: ``~/.cache/imagenet-db/tar-index``, keyed by the file's path,
size, mtime and inode; ``IMAGENET_DB_TAR_INDEX_CACHE=off`` disables it). The pass runs at
~50 MB/s per core at this spacing (the per-seek-point bookkeeping dominates): ~25-50 minutes
for the 155 GB archive on 2 cores, once.

Reads: each worker thread owns one rapidgzip reader (parallelization 1) that imported the
index; ``read(offset, size)`` seeks and reads, decompressing from the seek point before the
member (on average 32 KiB of compressed data earlier) with the GIL released: ~0.3-0.5 ms for
a 60 KB JPEG. Errors (damaged or truncated data, CRC mismatch) become one-line messages naming
the file; a truncated archive is found by the index pass (no end-of-archive marker, or
rapidgzip's decoding error at the cut).
"""
import atexit
import gzip
import io
import os
import sys
import tarfile
import threading
import weakref
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional

from tqdm import tqdm

from imagenet_db.sources.archives.tarindex import (BLOCK, CACHE_ENV, Member, TarIndexError, archive_changed,
                                         cache_file, check_unchanged, file_identity,
                                         scan_tar, sparse_member)

CHUNK = int(os.environ.get("IMAGENET_DB_GZIP_SPACING", 64 << 10))  # compressed bytes per seek point
GZIP_MAGIC = b"\x1f\x8b"
# v2: made by a pass that read every byte in order, so rapidgzip checked each gzip member's
# CRC-32 and length (ISIZE); a v1 cache (seeking pass, nothing checked) is never used.
INDEX_FORMAT = f"imagenet-db tar.gz index v2 crc-checked spacing {CHUNK}"
LOOKBACK = 64 << 10  # bytes kept for tarfile's short backward seeks during the index pass


class GzipTarIndex(NamedTuple):
    """What the index pass learns: the regular-file members (offsets into the uncompressed tar),
    rapidgzip's seek points (gztool format bytes), the uncompressed size, the kept small
    members {name: bytes}, and where the seek points are cached (None when not cached)."""
    members: List[Member]
    seek_points: bytes
    length: int
    small: Dict[str, bytes]
    seek_file: Optional[str] = None


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def is_gzip(path: str) -> bool:
    """True when the file at ``path`` starts with the gzip magic bytes 1f 8b. Raises
    TarIndexError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise TarIndexError(f"{path}: cannot read: {exc.strerror or exc}") from None


_OPEN_READERS: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _close_readers() -> None:
    # rapidgzip aborts the interpreter at exit when a reader's threads are still running
    for reader in list(_OPEN_READERS):
        try:
            reader.close()
        except Exception:
            pass


def _open(path: str, parallelization: int, fileobj=None):
    import rapidgzip  # imported here: only .tar.gz SOURCEs need it

    if fileobj is None:
        if not is_gzip(path):  # rapidgzip's constructor leaves a thread behind on a non-gzip file
            raise TarIndexError(f"{path}: not a gzip file (it does not start with 1f 8b)")
    reader = rapidgzip.RapidgzipFile(fileobj if fileobj is not None else path,
                                     parallelization=parallelization, chunk_size=CHUNK)
    _OPEN_READERS.add(reader)
    return reader


class FileWindow(io.RawIOBase):
    """Bytes ``start .. start + length`` of the file at ``path`` as a read-only seekable file
    (a .tar.gz stored uncompressed inside a .zip is read in place through it)."""

    def __init__(self, path: str, start: int, length: int):
        super().__init__()
        self.path, self.start, self.length = path, start, length
        self._fd = os.open(path, os.O_RDONLY)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.length - self._pos))
        data = os.pread(self._fd, n, self.start + self._pos)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class InOrder(io.RawIOBase):
    """A rapidgzip reader that is only ever read forwards, as ``tarfile`` sees it in the index
    pass. rapidgzip checks a gzip member's CRC-32 and ISIZE footer only when its whole output
    was read in order (a seek skips the check; measured with rapidgzip 0.16), and ``tarfile``
    seeks past every member's data. Here a forward seek reads the skipped bytes, and a
    backward seek (tarfile re-reading its end-of-archive block) is served from the last
    LOOKBACK bytes read; further back raises OSError (never reached by tarfile)."""

    def __init__(self, reader):
        super().__init__()
        self.reader = reader
        self._pos = 0  # position seen by the caller
        self._tail = b""  # the last bytes read from ``reader``, ending at _end
        self._end = 0  # bytes read from ``reader`` so far

    def readable(self) -> bool:
        """True: a file opened for reading."""
        return True

    def seekable(self) -> bool:
        """True: seeks are served by reading forward (see the class docstring)."""
        return True

    def tell(self) -> int:
        """The position in the uncompressed stream, in bytes."""
        return self._pos

    def _fetch(self, size: int) -> bytes:
        data = self.reader.read(size)
        self._end += len(data)
        self._tail = data[-LOOKBACK:] if len(data) >= LOOKBACK else (self._tail + data)[-LOOKBACK:]
        return data

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative) from the position; rapidgzip's
        ValueError/RuntimeError for damaged data or a footer mismatch propagate."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(4 << 20), b""))
        replay = self._tail[len(self._tail) - (self._end - self._pos):][:size]
        data = replay + (self._fetch(size - len(replay)) if len(replay) < size else b"")
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        """``read`` into ``buffer``; returns the byte count."""
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move to ``offset`` (whence 0: from the start, 1: from here) by reading forward, or
        back within LOOKBACK bytes; stops at the end of the data. Returns the position.
        Raises OSError for a seek further back or from the end (whence 2)."""
        target = offset if whence == 0 else self._pos + offset
        if whence not in (0, 1) or target < self._end - len(self._tail):
            raise OSError(f"cannot seek back to byte {target} of the gzip stream")
        while self._end < target and self._fetch(min(target - self._end, 4 << 20)):
            pass
        self._pos = min(target, self._end)
        return self._pos


def _window_of(path: str, window):
    """(display name, a fresh FileWindow or None) for ``path`` or (zip path, start, length)."""
    if window is None:
        return path, None
    return path, FileWindow(window[0], window[1], window[2])


def _list_members(tar: tarfile.TarFile, name: str, keep, nested, members: List[Member],
                  small: Dict[str, bytes], progress: Callable[[int], None]) -> None:
    """Read the member headers of ``tar`` into ``members`` (and kept bytes into ``small``);
    the members of a member that ``nested(name)`` picks (a tar inside the tar) follow it as
    '<member>/<inner name>' with offsets into the uncompressed outer tar."""
    for info in tar:
        if info.isfile() and info.issparse():
            raise TarIndexError(sparse_member(name, info.name))
        if not info.isfile():
            continue
        members.append(Member(info.name, info.offset_data, info.size))
        if keep is not None and keep(info.name, info.size):
            small[info.name] = tar.extractfile(info).read()
        if nested is not None and nested(info.name):
            try:
                inner = scan_tar(tar.extractfile(info), info.size, f"{name}: member {info.name}")
            except TarIndexError:  # a gzip stream that ends early shows first as a cut member
                _check_not_cut(tar.fileobj, name, info)
                raise
            members.extend(Member(f"{info.name}/{i.name}", info.offset_data + i.offset_data,
                                  i.size) for i in inner if i.isfile())
        progress(info.offset_data)


def _check_not_cut(reader, name: str, info: tarfile.TarInfo) -> None:
    """Raise TarIndexError 'truncated' when the uncompressed data (read on to its end; a
    decoding error propagates) ends before member ``info`` does."""
    while reader.read(4 << 20):
        pass
    if reader.tell() < info.offset_data + info.size:
        raise TarIndexError(f"{name}: truncated: the data ends at byte {reader.tell():,} of the "
                            f"tar, inside member {info.name}; download or copy it again")


def build_index(path: str, keep: Optional[Callable[[str, int], bool]] = None,
                workers: Optional[int] = None, progress: Optional[bool] = None,
                window=None, nested: Optional[Callable[[str], bool]] = None) -> GzipTarIndex:
    """One pass over the .tar.gz (see module docstring). keep(name, size): members whose bytes
    are returned in ``small``. window: (file, start, length) when the .tar.gz is stored inside
    another file (a zip); ``path`` then only names it in messages. nested(name): members that
    are tars themselves (winter21_whole.tar.gz's synset tars), whose members are listed too
    (see ``_list_members``; a 0-byte one has none).

    Raises TarIndexError naming ``path`` for a file that is not gzip, damaged or truncated
    gzip data (decoding or CRC errors), a damaged tar, or a tar without its end-of-archive
    marker.
    """
    name, fileobj = _window_of(path, window)
    total = window[2] if window else os.path.getsize(path)
    reader = _open(path, workers or os.cpu_count() or 1, fileobj)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
               desc=f"index {os.path.basename(name)}",
               disable=None if progress is None else not progress)
    try:
        members: List[Member] = []
        small: Dict[str, bytes] = {}
        try:
            stream = InOrder(reader)
            tar = tarfile.open(fileobj=stream, mode="r:")
            _list_members(tar, name, keep, nested, members, small,
                          lambda at: bar.update(min(at, total) - bar.n))
            end = tar.offset
            stream.seek(end)
            marker = stream.read(BLOCK)
            while stream.read(4 << 20):  # to the end: completes the index, checks the CRC-32
                pass
            length = stream.tell()
        except tarfile.TarError as exc:
            raise TarIndexError(f"{name}: damaged tar inside the gzip after {len(members)} members: "
                                f"{_describe(exc)}") from None
        except (RuntimeError, ValueError, EOFError, OSError) as exc:
            raise TarIndexError(f"{name}: damaged or truncated gzip data after {len(members)} "
                                f"members ({_describe(exc)}); download or copy it again") from None
        if end + BLOCK > length or marker != bytes(BLOCK):
            raise TarIndexError(f"{name}: truncated: the tar inside ends at byte {length:,} without "
                                f"its end-of-archive marker (after {len(members)} members); "
                                f"download or copy it again")
        out = io.BytesIO()
        import rapidgzip

        reader.export_index(out, rapidgzip.IndexFormat.GZTOOL)
        bar.update(total - bar.n)
        return GzipTarIndex(members, out.getvalue(), length, small)
    finally:
        bar.close()
        reader.close()
        if fileobj is not None:
            fileobj.close()


def _cache_paths(path: str, nested: bool = False) -> Optional[Dict[str, str]]:
    base = cache_file(path, INDEX_FORMAT + (" nested" if nested else ""))
    if base is None:
        return None
    stem = base[:-len(".tsv.gz")]
    return {"members": stem + ".gz-members.tsv.gz", "seek": stem + ".gz-seek.gztool",
            "small": stem + ".gz-small.tar"}


def _load(paths: Dict[str, str]) -> Optional[GzipTarIndex]:
    try:
        members: List[Member] = []
        with gzip.open(paths["members"], "rt", encoding="utf-8", newline="\n") as f:
            if f.readline().rstrip("\n") != INDEX_FORMAT:
                return None
            length = int(f.readline())
            for line in f:
                name, offset, size = line.rstrip("\n").split("\t")
                members.append(Member(name, int(offset), int(size)))
        with open(paths["seek"], "rb") as f:
            seek_points = f.read()
        small = {}
        with tarfile.open(paths["small"]) as tar:
            for info in tar:
                if info.isfile():
                    small[info.name] = tar.extractfile(info).read()
        return GzipTarIndex(members, seek_points, length, small, paths["seek"])
    except (OSError, ValueError, EOFError, tarfile.TarError, zlib.error):  # damaged: re-index
        return None


def _save(paths: Dict[str, str], index: GzipTarIndex) -> None:
    if any("\t" in m.name or "\n" in m.name for m in index.members):
        return
    tmp = {k: f"{v}.tmp-{os.getpid()}" for k, v in paths.items()}
    try:
        os.makedirs(os.path.dirname(paths["members"]), exist_ok=True)
        with gzip.open(tmp["members"], "wt", encoding="utf-8", newline="\n", compresslevel=3) as f:
            f.write(f"{INDEX_FORMAT}\n{index.length}\n")
            f.writelines(f"{m.name}\t{m.offset}\t{m.size}\n" for m in index.members)
        with open(tmp["seek"], "wb") as f:
            f.write(index.seek_points)
        with tarfile.open(tmp["small"], "w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in index.small.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for key in ("seek", "small", "members"):  # members last: it marks the set complete
            os.replace(tmp[key], paths[key])
    except OSError:
        for t in tmp.values():
            try:
                os.remove(t)
            except OSError:
                pass


def index_targz(path: str, keep: Optional[Callable[[str, int], bool]] = None, cache: bool = True,
                progress: Optional[bool] = None, log: Callable[[str], None] = None,
                window=None, nested: Optional[Callable[[str], bool]] = None) -> GzipTarIndex:
    """The GzipTarIndex of the .tar.gz at ``path``: from the cache when present, else by
    ``build_index`` (then cached). ``keep`` and ``nested`` decide which small members are
    kept and which inner tars are listed; they are part of what is cached, so callers must
    use one rule per archive (a nested index is cached apart). window: see build_index (the
    cache is then keyed by the outer file). Raises TarIndexError (see build_index)."""
    paths = (_cache_paths(window[0] if window else path, nested is not None)
             if cache else None)
    if paths is not None and os.path.isfile(paths["members"]):
        found = _load(paths)
        if found is not None:
            return found
    if log is not None:
        log(f"indexing {path} (one pass over the whole file; cached for later runs)")
    index = build_index(path, keep, progress=progress, window=window, nested=nested)
    if paths is not None:
        _save(paths, index)
        if os.path.isfile(paths["members"]):
            index = index._replace(seek_file=paths["seek"])
    return index


INLINE_SEEK_POINTS = 4 << 20  # larger indexes travel to cluster workers as a cache path
_SHARED: Dict[tuple, "GzipTarReader"] = {}
_SHARED_LOCK = threading.Lock()


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:32]


def shared_reader(path: str, window, digest: str, seek_file: Optional[str],
                  seek_points: Optional[bytes]) -> "GzipTarReader":
    """The process's one GzipTarReader for this archive (how a pickled reader is rebuilt on a
    cluster worker: once per process, not once per task). The seek points come inline (small
    indexes) or from ``seek_file`` (the cache, which must then be readable on the worker).
    Raises OSError naming the files when they are not."""
    key = (path, window, digest)
    with _SHARED_LOCK:
        reader = _SHARED.get(key)
        if reader is None:
            if seek_points is None:
                try:
                    with open(seek_file, "rb") as f:
                        seek_points = f.read()
                except (OSError, TypeError):
                    raise OSError(f"{path}: this worker cannot read the cached .tar.gz index "
                                  f"{seek_file}: set {CACHE_ENV} to a folder the workers share") from None
                if _digest(seek_points) != digest:
                    raise OSError(f"{path}: the cached index {seek_file} on this worker is not the "
                                  f"one the build uses (stale cache?)")
            reader = GzipTarReader(path, seek_points, window, seek_file)
            _SHARED[key] = reader
    return reader


class GzipTarReader:
    """Positioned reads of the uncompressed tar inside a .tar.gz, one rapidgzip reader per
    thread (created on a thread's first read, importing the seek points; a reader whose thread
    has ended is handed to the next new thread, so each live thread costs one index import).

    ``read(offset, size)`` returns exactly ``size`` bytes at ``offset`` of the uncompressed tar;
    raises OSError naming the file when the data cannot be decoded, and ArchiveChangedError
    when the .tar.gz changed (size, mtime) since the reader was made or is short. Pickled for
    cluster workers as the path plus the seek points (or, when large, the cache file holding
    them), rebuilt once per worker process (``shared_reader``).
    """

    def __init__(self, path: str, seek_points: bytes, window=None, seek_file: Optional[str] = None):
        self.path, self.seek_points, self.window, self.seek_file = path, seek_points, window, seek_file
        self.identity = file_identity(os.stat(path))  # a .tar.gz changing under us: an error
        self._local = threading.local()
        self._lock = threading.Lock()
        self._readers: list = []  # [(owning thread, rapidgzip reader)]

    def _reader(self):
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            return reader
        me = threading.current_thread()
        with self._lock:
            for i, (owner, candidate) in enumerate(self._readers):
                if not owner.is_alive():
                    self._readers[i] = (me, candidate)
                    reader = candidate
                    break
        if reader is None:
            _, fileobj = _window_of(self.path, self.window)
            reader = _open(self.path, 1, fileobj)
            reader.import_index(io.BytesIO(self.seek_points))
            with self._lock:
                self._readers.append((me, reader))
        self._local.reader = reader
        return reader

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset`` of the uncompressed tar (OSError otherwise)."""
        check_unchanged(self.path, self.identity, os.stat(self.path))
        reader = self._reader()
        try:
            reader.seek(offset)
            data = reader.read(size)
        except (RuntimeError, ValueError) as exc:
            raise OSError(f"{self.path}: cannot decode bytes {offset}..{offset + size} of the "
                          f"tar: {_describe(exc)}") from None
        if len(data) != size:
            raise archive_changed(self.path, f"short read at byte {offset:,} of the tar "
                                             f"({len(data)} of {size} bytes)")
        return data

    def close(self) -> None:
        """Close every thread's reader."""
        with self._lock:
            for _, reader in self._readers:
                reader.close()
            self._readers.clear()
        self._local = threading.local()

    def __reduce__(self):
        inline = self.seek_points if (len(self.seek_points) <= INLINE_SEEK_POINTS
                                      or self.seek_file is None) else None
        return (shared_reader, (self.path, self.window, _digest(self.seek_points), self.seek_file,
                                inline))
