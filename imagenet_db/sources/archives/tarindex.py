"""Indexes of tar archives: where each member's bytes lie, so images are read straight out of
the tar (nested tars included) with one positioned read each, never extracted to disk.

An uncompressed (ustar/GNU/pax) tar stores each member's data contiguously after its 512-byte
header, so a member is fully described by (byte offset of its data, size). The headers are
parsed with the standard library's ``tarfile``; for a tar inside a tar (ILSVRC2012's train
archive holds one ``n01440764.tar`` per synset) the inner offsets are shifted by the outer
member's data offset, giving offsets into the one outer file. Reading a member is then a
single ``os.pread`` on a shared file descriptor: thread-safe, and it releases the GIL.

Index cache: parsing ~1.3M headers with ``tarfile`` costs ~20 us each (~25 s of CPU for the
real train archive, plus the disk reads), so an index is saved, gzipped, in the per-user cache
(``$XDG_CACHE_HOME/imagenet-db/tar-index``, default ``~/.cache``) under a key made of the
archive's real path, size, mtime and inode: any change to the file makes a new index. Set
``IMAGENET_DB_TAR_INDEX_CACHE=off`` to disable it (or to a folder to move it). A cache that
cannot be read (damaged, cut short) or written is ignored, and a damaged one is replaced by
the fresh index; loading the cached train index takes ~2 s.

Sparse members (GNU tar --sparse) store their data in pieces; they are refused
(TarIndexError naming the member) rather than read as if contiguous. ImageNet's tars have none.

Truncation: ``tarfile`` treats a file that simply stops as the end of the archive, so a
truncated download would silently lose members. ``index_tar`` therefore requires every
member's data to end inside the file and the end-of-archive marker (a zero 512-byte block,
POSIX asks for two) to follow the last member; otherwise it raises TarIndexError.
"""
import gzip
import hashlib
import os
import tarfile
import time
import zlib
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Tuple

from imagenet_db.errors import ImagenetDbError

BLOCK = 512


class TarIndexError(ImagenetDbError):
    """A tar archive is unreadable, truncated or not laid out as expected; the message names
    the file (and the member)."""


class Member(NamedTuple):
    """One regular file in a tar: name as stored (inner name for nested tars), byte offset of
    its data from the start of the outermost file, and size in bytes. (A tuple: ~1.3M of
    them are held for the real train archive.)"""
    name: str
    offset: int
    size: int


def _check_end_marker(fileobj: BinaryIO, tar: tarfile.TarFile, length: int, what: str) -> None:
    """Require a zero block where ``tar`` stopped reading headers."""
    if tar.offset + BLOCK > length:
        raise TarIndexError(f"{what}: truncated: it ends at byte {length:,} without the "
                            f"end-of-archive marker (the last member ends at byte "
                            f"{tar.offset:,}); download or copy it again")
    fileobj.seek(tar.offset)
    block = fileobj.read(BLOCK)
    if block != bytes(BLOCK):
        raise TarIndexError(f"{what}: damaged: no valid tar header or end-of-archive marker "
                            f"at byte {tar.offset:,}")


def sparse_member(what: str, name: str) -> str:
    """The error for a GNU sparse member (its bytes are not stored in one piece, so it cannot
    be read by offset): refused rather than read wrong."""
    return (f"{what}: member {name!r} is a sparse file (made with tar --sparse): its bytes are "
            f"not stored in one piece, and imagenet-db reads members by offset; re-create the "
            f"tar without --sparse")


def _scan(fileobj: BinaryIO, length: int, what: str) -> Tuple[tarfile.TarFile, List[tarfile.TarInfo]]:
    """Open the tar in ``fileobj`` (``length`` bytes; positions relative to its own start)
    and list its members, checked to lie within the file; ``what`` names it in errors."""
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.TarError as exc:
        raise TarIndexError(f"{what}: not a readable (uncompressed) tar archive: {exc}") from None
    infos = []
    try:
        for info in tar:
            if info.isfile() and info.issparse():
                raise TarIndexError(sparse_member(what, info.name))
            if info.isfile() and info.offset_data + info.size > length:
                raise TarIndexError(
                    f"{what}: truncated: member {info.name!r} needs bytes up to "
                    f"{info.offset_data + info.size:,} but the archive has {length:,}")
            infos.append(info)
    except tarfile.TarError as exc:
        raise TarIndexError(f"{what}: damaged tar after {len(infos)} members: {exc}") from None
    _check_end_marker(fileobj, tar, length, what)
    return tar, infos


CACHE_ENV = "IMAGENET_DB_TAR_INDEX_CACHE"
CACHE_FORMAT = "imagenet-db tar index v1"


def cache_file(path: str, fmt: str = CACHE_FORMAT) -> Optional[str]:
    """Where the index of the archive at ``path`` is cached (None when caching is off or the
    file cannot be stat'ed). fmt: the index format's name, part of the key (the .tar.gz index
    of ``gzindex`` uses its own)."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    folder = setting or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "imagenet-db", "tar-index")
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{fmt}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(folder, f"{os.path.basename(path)}-{digest}.tsv.gz")


def _load_cache(path: str) -> Optional[Dict[str, List[Member]]]:
    cached = cache_file(path)
    if not cached or not os.path.isfile(cached):
        return None
    groups: Dict[str, List[Member]] = {}
    try:
        with gzip.open(cached, "rt", encoding="utf-8", newline="\n") as f:
            if f.readline().rstrip("\n") != CACHE_FORMAT:
                return None
            for line in f:
                outer, name, offset, size = line.rstrip("\n").split("\t")
                members = groups.setdefault(outer, [])
                if name:  # an empty name marks an outer member without files
                    members.append(Member(name, int(offset), int(size)))
    except (OSError, ValueError, EOFError, zlib.error):  # a damaged cache: indexed anew
        return None
    return groups


def _save_cache(path: str, groups: Dict[str, List[Member]]) -> None:
    cached = cache_file(path)
    names = [o for o in groups] + [m.name for ms in groups.values() for m in ms]
    if not cached or any("\t" in n or "\n" in n for n in names):
        return
    tmp = f"{cached}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        with gzip.open(tmp, "wt", encoding="utf-8", newline="\n", compresslevel=3) as f:
            f.write(CACHE_FORMAT + "\n")
            for outer, members in groups.items():
                if not members and outer:
                    f.write(f"{outer}\t\t0\t0\n")
                f.writelines(f"{outer}\t{m.name}\t{m.offset}\t{m.size}\n" for m in members)
        os.replace(tmp, cached)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass


def index_tar(path: str, cache: bool = True) -> List[Member]:
    """Regular-file members of the uncompressed tar at ``path``, in archive order.

    cache: use/save the per-user index cache (see module docstring).
    Raises TarIndexError naming ``path`` when it is missing, not a tar, damaged or truncated.
    """
    if cache:
        groups = _load_cache(path)
        if groups is not None and set(groups) <= {""}:
            return groups.get("", [])
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            infos = _scan(f, size, path)[1]
    except OSError as exc:
        raise TarIndexError(f"{path}: cannot read: {exc.strerror or exc}") from None
    members = [Member(i.name, i.offset_data, i.size) for i in infos if i.isfile()]
    if cache:
        _save_cache(path, {"": members})
    return members


def scan_tar(fileobj: BinaryIO, length: int, what: str) -> List[tarfile.TarInfo]:
    """The members of the uncompressed tar in ``fileobj`` (``length`` bytes, positions from
    its own start), each checked to end inside it, plus its end-of-archive marker. An empty
    stream (0 bytes) is a tar without members. Raises TarIndexError naming ``what`` for
    anything else that is not a whole tar."""
    return _scan(fileobj, length, what)[1] if length else []


def index_nested(path: str, cache: bool = True, empty_members: bool = False
                 ) -> Dict[str, List[Member]]:
    """Index a tar of tars (ILSVRC2012_img_train.tar): {outer member name: its members}.

    Every regular file of the outer tar must itself be a tar; the returned offsets are
    absolute byte offsets into ``path``. cache: use/save the per-user index cache.
    empty_members: a 0-byte outer member counts as a tar without members (fall11_whole.tar
    has such synset tars); else it is refused like any other non-tar.
    Raises TarIndexError naming the outer file and the inner tar for anything missing,
    damaged or truncated.
    """
    if cache:
        groups = _load_cache(path)
        if groups is not None and "" not in groups:
            return groups
    result: Dict[str, List[Member]] = {}
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            tar, outer = _scan(f, size, path)
            for info in outer:
                if not info.isfile():
                    continue
                if info.name in result:
                    raise TarIndexError(f"{path}: member {info.name} occurs twice")
                if empty_members and info.size == 0:
                    result[info.name] = []
                    continue
                _, inner = _scan(tar.extractfile(info), info.size, f"{path}: member {info.name}")
                result[info.name] = [Member(i.name, info.offset_data + i.offset_data, i.size)
                                     for i in inner if i.isfile()]
    except OSError as exc:
        raise TarIndexError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if cache:
        _save_cache(path, result)
    return result


class ArchiveChangedError(ImagenetDbError):
    """An archive changed (size or modification time) or got shorter than its index while it
    was being read: what is read from it can no longer be trusted to be what was indexed."""


def file_identity(st: os.stat_result) -> Tuple[int, int]:
    """What a reader remembers of an archive to notice it changing: (size, mtime in ns)."""
    return st.st_size, st.st_mtime_ns


def archive_changed(path: str, detail: str) -> ArchiveChangedError:
    """The error for an archive that changed under a running reader (see TarReader)."""
    return ArchiveChangedError(
        f"{path}: changed while it was being read ({detail}); what was read before is kept: "
        f"once the archive is whole again (the same file as when the run began), run the same "
        f"command again (a build with --resume)")


def check_unchanged(path: str, identity: Tuple[int, int], st: os.stat_result) -> None:
    """Raise ArchiveChangedError when ``st`` (a fresh stat of ``path``) differs from
    ``identity``."""
    if file_identity(st) != identity:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))
        raise archive_changed(path, f"now {st.st_size:,} bytes, modified {when}; it was "
                                    f"{identity[0]:,} bytes")


class TarReader:
    """Positioned reads from one archive file, shared by all worker threads.

    ``read(offset, size)`` returns exactly ``size`` bytes (os.pread). The file's size and
    modification time (ns) when the reader was opened are its ``identity``; a read from a file
    whose size or mtime has changed since, or that is shorter than the member, raises
    ArchiveChangedError naming the file: an archive truncated, rewritten or still being
    copied under a running build is an error, never a stream of skipped images. The identity
    travels with the reader to cluster workers (pickled), so they check the same.
    """

    def __init__(self, path: str, identity: Optional[Tuple[int, int]] = None):
        self.path = path
        self._file = open(path, "rb")
        self._fd = self._file.fileno()
        self.identity = identity or file_identity(os.fstat(self._fd))

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at byte ``offset`` of the archive. Raises ArchiveChangedError
        when the file's size or mtime differs from its identity or it is too short."""
        check_unchanged(self.path, self.identity, os.fstat(self._fd))
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise archive_changed(self.path, f"short read at byte {offset:,}: {len(data)} of "
                                             f"{size} bytes")
        return data

    def close(self) -> None:
        """Close the archive file."""
        self._file.close()

    def __getstate__(self):  # pickled as its path and identity (for cluster workers)
        return {"path": self.path, "identity": self.identity}

    def __setstate__(self, state):
        self.__init__(state["path"], tuple(state["identity"]))

    def __enter__(self) -> "TarReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MemberLoader:
    """Zero-argument callable returning one member's bytes (the Record.load of archive input).

    reader: anything with ``path`` and ``read(offset, size)`` (a TarReader, or a
    containers.GzipTarReader for a member of a .tar.gz, offsets then in the uncompressed tar).
    """

    __slots__ = ("reader", "offset", "size")

    def __init__(self, reader: TarReader, offset: int, size: int):
        self.reader, self.offset, self.size = reader, offset, size

    def __call__(self) -> bytes:
        return self.reader.read(self.offset, self.size)

    @property
    def sort_key(self):
        """(archive path, offset): orders loaders for sequential reading."""
        return (self.reader.path, self.offset)

    def __repr__(self) -> str:
        return f"MemberLoader({self.reader.path!r}, offset={self.offset}, size={self.size})"


def member_map(members: List[Member], where: Optional[str] = None) -> Dict[str, Member]:
    """{name: member}; raises TarIndexError when a name occurs twice (``where`` names the tar)."""
    by_name: Dict[str, Member] = {}
    for m in members:
        if m.name in by_name:
            raise TarIndexError(f"{where or 'tar'}: member {m.name!r} occurs twice")
        by_name[m.name] = m
    return by_name


class ReopeningTarReader:
    """Positioned reads from one archive file that is opened for each read (``os.open``,
    ``os.pread``, ``os.close``): for a folder of 21,841 synset tars, where one open file per
    tar would pass the process's file limit. Same checks as ``TarReader`` (identity taken
    when made: a changed or short file raises ArchiveChangedError); picklable as is."""

    __slots__ = ("path", "identity")

    def __init__(self, path: str, identity: Optional[Tuple[int, int]] = None):
        self.path = path
        self.identity = identity or file_identity(os.stat(path))

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at byte ``offset`` (see TarReader.read)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            check_unchanged(self.path, self.identity, os.fstat(fd))
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise archive_changed(self.path, f"short read at byte {offset:,}: {len(data)} of "
                                             f"{size} bytes")
        return data
