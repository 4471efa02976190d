"""Containers: a folder, a .tar, a .tar.gz, a .zip (or a .tar.gz stored in a .zip) seen the same
way: a set of '/'-separated member names, each readable by a zero-argument loader. Every
distribution reads its images through one (``Split.loader`` = ``container.loader``).

A distribution module asks a container for what it needs (``dirs(prefix)``, ``files(prefix)``,
``read(name)``, ``loader(name)``) without caring how it is stored. Folders are listed lazily,
one directory at a time (an extracted ImageNet has 1.3 M files); archives are indexed once
(.tar: ``tarindex``, .tar.gz: ``gzindex``, both cached; .zip: its central directory,
``zipindex``). Loaders are picklable (cluster workers reopen the archive at the same path) and
read on the worker threads: ``os.pread`` for tar members, ``os.pread`` + zlib for zip members,
a per-thread rapidgzip reader for .tar.gz members.
"""
import os
from typing import Callable, Dict, List, Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.base import FileLoader
from imagenet_db.sources.archives.tarindex import Member, MemberLoader, TarReader
from imagenet_db.sources.archives.gzindex import GzipTarIndex, GzipTarReader
from imagenet_db.sources.archives.zipindex import ZipReader, index_zip


class ContainerError(ImagenetDbError):
    """A member is missing or unreadable; the message names the container and the member."""


class Container:
    """What every container offers. ``path`` names it; ``where(name)`` names a member in
    messages (a file path, or 'archive:member')."""
    path: str

    def where(self, name: str) -> str:
        """How member ``name`` is named in messages."""
        return f"{self.path}:{name}"

    def has(self, name: str) -> bool:
        """True when the container holds the regular file ``name``."""
        raise NotImplementedError

    def files(self, prefix: str) -> List[str]:
        """Sorted names of the regular files directly in folder ``prefix`` ('' or ending in '/')."""
        raise NotImplementedError

    def dirs(self, prefix: str) -> List[str]:
        """Sorted names (no trailing '/') of the folders directly in ``prefix``."""
        raise NotImplementedError

    def loader(self, name: str) -> Callable[[], bytes]:
        """Zero-argument callable returning the bytes of member ``name`` (OSError if unreadable)."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``. Raises ContainerError naming it when missing/unreadable."""
        if not self.has(name):
            raise ContainerError(f"{self.where(name)}: no such file")
        try:
            return self.loader(name)()
        except OSError as exc:
            raise ContainerError(f"{self.where(name)}: cannot read: {exc.strerror or exc}") from None


class FolderContainer(Container):
    """An extracted folder."""

    def __init__(self, path: str):
        self.path = path

    def where(self, name: str) -> str:
        return os.path.join(self.path, *name.split("/")) if name else self.path

    def has(self, name: str) -> bool:
        return os.path.isfile(self.where(name))

    def _scan(self, prefix: str) -> list:
        try:
            return list(os.scandir(self.where(prefix.rstrip("/"))))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def files(self, prefix: str) -> List[str]:
        return sorted(prefix + e.name for e in self._scan(prefix) if e.is_file())

    def dirs(self, prefix: str) -> List[str]:
        return sorted(prefix + e.name for e in self._scan(prefix) if e.is_dir())

    def loader(self, name: str) -> Callable[[], bytes]:
        return FileLoader(self.where(name))


class _Listed(Container):
    """A container whose whole member list is known: {name: handle}; its folder listing is
    made on first use (a distribution that only reads members by name never needs it).
    Members with an offset and a size are read through ``self.reader``."""
    _files: Optional[Dict[str, List[str]]] = None
    reader = None

    def _set_members(self, members: Dict[str, object]) -> None:
        self._members = members

    def _listing(self) -> None:
        files: Dict[str, List[str]] = {}
        folders = set()
        for name in self._members:
            parent = name.rpartition("/")[0]
            files.setdefault(parent + "/" if parent else "", []).append(name)
            while parent and parent not in folders:
                folders.add(parent)
                parent = parent.rpartition("/")[0]
        dirs: Dict[str, List[str]] = {}
        for folder in folders:
            up = folder.rpartition("/")[0]
            dirs.setdefault(up + "/" if up else "", []).append(folder)
        self._files, self._dirs = files, dirs

    def has(self, name: str) -> bool:
        return name in self._members

    def files(self, prefix: str) -> List[str]:
        if self._files is None:
            self._listing()
        return sorted(self._files.get(prefix, []))

    def dirs(self, prefix: str) -> List[str]:
        if self._files is None:
            self._listing()
        return sorted(self._dirs.get(prefix, []))

    def loader(self, name: str) -> Callable[[], bytes]:
        m = self._members[name]
        return MemberLoader(self.reader, m.offset, m.size)


class TarContainer(_Listed):
    """A plain .tar read in place by offset (``tarindex.TarReader``: ``os.pread`` on one open
    file shared by all loaders). ``members``: name -> ``tarindex.Member``, under the names the
    distribution reads them by, after its own checks of the tar's index (``index_tar``,
    ``index_nested``: offsets into this file, nested tars included)."""

    def __init__(self, path: str, members: Dict[str, Member]):
        self.path = path
        self.reader = TarReader(path)
        self._set_members(members)


class LoadersContainer(_Listed):
    """Members whose loaders the distribution made itself, {name: zero-argument loader}
    (e.g. a folder of synset tars and synset folders, ``sources.synset_tars``)."""

    def __init__(self, path: str, loaders: Dict[str, Callable[[], bytes]]):
        self.path = path
        self._set_members(loaders)

    def loader(self, name: str) -> Callable[[], bytes]:
        return self._members[name]


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


class TarGzContainer(_Listed):
    """A .tar.gz (``index`` from ``gzindex.index_targz``); ``window``: (outer file, start,
    length) when it is stored inside another file. Small members kept by the index pass are
    served from memory. Raises ContainerError when a member name occurs twice."""

    def __init__(self, path: str, index: GzipTarIndex, window=None):
        self.path = path
        self.reader = GzipTarReader(window[0] if window else path, index.seek_points, window,
                                    index.seek_file)
        self._small = {_clean(k): v for k, v in index.small.items()}
        members = {}
        for m in index.members:
            if _clean(m.name) in members:
                raise ContainerError(f"{path}: member {m.name} occurs twice: which copy is meant "
                                     f"cannot be known; download or copy the archive again")
            members[_clean(m.name)] = m
        self._set_members(members)

    def loader(self, name: str) -> Callable[[], bytes]:
        if name in self._small:
            return _Bytes(self._small[name])
        return super().loader(name)


class _Bytes:
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __call__(self) -> bytes:
        return self.data


class ZipContainer(_Listed):
    """A .zip, read by positioned reads of its members."""

    def __init__(self, path: str):
        self.path = path
        self.reader = ZipReader(path)
        self._set_members(index_zip(path))

    def loader(self, name: str) -> Callable[[], bytes]:
        return ZipMemberLoader(self.reader, self._members[name])

    def member(self, name: str):
        """The zipindex.ZipMember of ``name``."""
        return self._members[name]


class ZipMemberLoader:
    """Loader of one zip member; ``sort_key`` orders loaders by position in the file."""
    __slots__ = ("reader", "member")

    def __init__(self, reader: ZipReader, member):
        self.reader, self.member = reader, member

    def __call__(self) -> bytes:
        return self.reader.read(self.member)

    @property
    def sort_key(self):
        """(zip path, local header offset): archive order."""
        return (self.reader.path, self.member.header_offset)

    def __repr__(self) -> str:
        return f"ZipMemberLoader({self.reader.path!r}, {self.member.name!r})"


def read_optional(container: Container, name: str) -> Optional[bytes]:
    """The bytes of ``name`` when the container has it, else None."""
    return container.read(name) if container.has(name) else None
