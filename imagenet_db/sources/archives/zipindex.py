"""A .zip read in place: every member is one positioned read (os.pread) of its stored bytes,
inflated with zlib when deflated, CRC-checked.

``zipfile`` reads the central directory (names, local-header offsets, sizes, method, CRC).
A member's data starts after its 30-byte local header, its name and its local extra field,
whose length may differ from the central directory's: ``read`` fetches the local header and
the data in one ``os.pread`` of the expected length and a second one only if the local extra
field is longer than expected. zlib releases the GIL while inflating, so the worker threads
read members in parallel.
"""
import os
import struct
import zipfile
import zlib
from typing import Dict, NamedTuple, Optional, Tuple

from imagenet_db.crc import crc32
from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.archives.tarindex import check_unchanged, file_identity

LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature .. name length, extra length (30 bytes)
LOCAL_SIGNATURE = b"PK\x03\x04"
SLACK = 64  # extra bytes read in case the local extra field is longer than the central one


class ZipIndexError(ImagenetDbError):
    """The zip is unreadable, truncated or holds a member we cannot read in place."""


class ZipMember(NamedTuple):
    """One regular file of a zip, from its central directory entry."""
    name: str
    header_offset: int
    name_length: int  # bytes of the name in the local header
    extra_length: int  # central directory's extra length (the local one is usually equal)
    compressed_size: int
    size: int
    method: int
    crc: int


def index_zip(path: str) -> Dict[str, ZipMember]:
    """{name: ZipMember} of the regular files in the zip at ``path`` (directories skipped).
    Raises ZipIndexError naming the file when it is missing, truncated (no end of central
    directory), or holds an encrypted member or one compressed other than stored/deflate."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except zipfile.BadZipFile as exc:
        raise ZipIndexError(f"{path}: not a readable zip (truncated download?): {exc}") from None
    except OSError as exc:
        raise ZipIndexError(f"{path}: cannot read: {exc.strerror or exc}") from None
    members = {}
    size = os.path.getsize(path)
    for info in infos:
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise ZipIndexError(f"{path}: member {info.filename} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ZipIndexError(f"{path}: member {info.filename} uses compression method "
                                f"{info.compress_type}; only stored and deflate are read in place")
        if info.header_offset + 30 + info.compress_size > size:
            raise ZipIndexError(f"{path}: member {info.filename} lies past the end of the file "
                                f"(truncated?)")
        raw_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        members[info.filename] = ZipMember(info.filename, info.header_offset, len(raw_name),
                                           len(info.extra), info.compress_size, info.file_size,
                                           info.compress_type, info.CRC)
    return members


class ZipReader:
    """Positioned reads of zip members from one shared file descriptor (thread-safe). Like
    ``tarindex.TarReader``, it remembers the file's size and mtime (``identity``, also on
    cluster workers) and raises ArchiveChangedError when the zip changes under it."""

    def __init__(self, path: str, identity: Optional[Tuple[int, int]] = None):
        self.path = path
        self._file = open(path, "rb")
        self._fd = self._file.fileno()
        self.identity = identity or file_identity(os.fstat(self._fd))

    def read(self, m: ZipMember) -> bytes:
        """The member's uncompressed bytes. Raises OSError naming the zip and member when the
        local header is not where the central directory says, the data is short (truncated),
        does not inflate, or its size or CRC-32 differ from the directory's."""
        check_unchanged(self.path, self.identity, os.fstat(self._fd))
        want = 30 + m.name_length + m.extra_length + m.compressed_size
        buf = os.pread(self._fd, want + SLACK, m.header_offset)
        if len(buf) < 30:
            raise OSError(f"{self.path}: {m.name}: short read (truncated zip)")
        sig, _, _, _, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack_from(buf)
        if sig != LOCAL_SIGNATURE:
            raise OSError(f"{self.path}: {m.name}: no local header at byte {m.header_offset}")
        start = 30 + name_len + extra_len
        data = buf[start:start + m.compressed_size]
        if len(data) < m.compressed_size:
            data += os.pread(self._fd, m.compressed_size - len(data), m.header_offset + start + len(data))
        if len(data) != m.compressed_size:
            raise OSError(f"{self.path}: {m.name}: short read (truncated zip)")
        if m.method == zipfile.ZIP_DEFLATED:
            try:
                data = zlib.decompress(data, -15, m.size or 1)
            except zlib.error as exc:
                raise OSError(f"{self.path}: {m.name}: damaged deflate data: {exc}") from None
        if len(data) != m.size or crc32(data) != m.crc:
            raise OSError(f"{self.path}: {m.name}: CRC-32 or size mismatch (damaged zip)")
        return data

    def data_range(self, m: ZipMember):
        """(offset, length) of a STORED member's bytes in the zip file (for reading an archive
        stored inside the zip in place)."""
        head = os.pread(self._fd, 30, m.header_offset)
        name_len, extra_len = LOCAL_HEADER.unpack_from(head)[9:]
        return m.header_offset + 30 + name_len + extra_len, m.compressed_size

    def close(self) -> None:
        """Close the zip file."""
        self._file.close()

    def __getstate__(self):
        return {"path": self.path, "identity": self.identity}

    def __setstate__(self, state):
        self.__init__(state["path"], tuple(state["identity"]))
