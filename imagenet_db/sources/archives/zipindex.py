"""A .zip read in place: every member is one positioned read (os.pread) of its stored bytes,
inflated with zlib when deflated, CRC-checked.

What is checked (a failure is a ZipIndexError naming the zip and the member, never a skipped
image): no member name occurs twice; each member's local header is where the central directory
says and carries the same name; its data inflates to exactly the size the central directory
declares (the declared size is a hard limit on inflation: more output is damage, so a member
that lies about its size cannot fill memory) and has the declared CRC-32. A member declared
larger than MAX_MEMBER_BYTES (256 MiB; ImageNet's largest files are a few MB) is refused
before anything is read or inflated: OSError naming the limit, so an image is skipped and
reported, and a metadata file read with ``Container.read`` is an error.

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
MAX_MEMBER_BYTES = 256 << 20  # larger members are refused before inflating (see above)


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
    directory), or holds a name twice, an encrypted member or one compressed other than
    stored/deflate."""
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
        if info.filename in members:
            raise ZipIndexError(f"{path}: member {info.filename} occurs twice in the central "
                                f"directory (a damaged or crafted zip): which copy is meant "
                                f"cannot be known; download the zip again")
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
        """The member's uncompressed bytes (exactly ``m.size``). Raises OSError naming the zip
        and member when it is declared larger than MAX_MEMBER_BYTES (nothing read), and
        ZipIndexError naming them when the zip is damaged: the local header is not where the
        central directory says or names another member, the data is short, does not inflate,
        inflates to more or fewer bytes than declared, or its CRC-32 differs."""
        check_unchanged(self.path, self.identity, os.fstat(self._fd))
        declared = max(m.size, m.compressed_size)
        if declared > MAX_MEMBER_BYTES:
            raise OSError(f"{self.path}: {m.name}: a zip member of {declared:,} "
                          f"bytes, over the limit of {MAX_MEMBER_BYTES:,} bytes for one member "
                          f"(zipindex.MAX_MEMBER_BYTES); not read")
        data = self._stored_bytes(m)
        if m.method == zipfile.ZIP_DEFLATED:
            data = self._inflate(m, data)
        if len(data) != m.size or crc32(data) != m.crc:
            raise self._damaged(m, "its CRC-32 or size differs from the central directory's")
        return data

    def _damaged(self, m: ZipMember, what: str) -> "ZipIndexError":
        return ZipIndexError(f"{self.path}: member {m.name}: {what} (a damaged zip); download "
                             f"or copy the zip again")

    def _stored_bytes(self, m: ZipMember) -> bytes:
        """The member's bytes as stored (compressed), after a local header checked to be the
        member's own."""
        want = 30 + m.name_length + m.extra_length + m.compressed_size
        buf = os.pread(self._fd, want + SLACK, m.header_offset)
        if len(buf) < 30 + m.name_length:
            raise self._damaged(m, "short read (truncated zip)")
        start = self._data_start(m, buf)
        data = buf[start:start + m.compressed_size]
        if len(data) < m.compressed_size:
            data += os.pread(self._fd, m.compressed_size - len(data), m.header_offset + start + len(data))
        if len(data) != m.compressed_size:
            raise self._damaged(m, "short read (truncated zip)")
        return data

    def _data_start(self, m: ZipMember, head: bytes) -> int:
        """Where the data starts after the local header at the start of ``head`` (which holds
        at least the header and the name), checked to be this member's."""
        sig, _, flags, _, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack_from(head)
        if sig != LOCAL_SIGNATURE:
            raise self._damaged(m, f"no local header at byte {m.header_offset:,}")
        local = bytes(head[30:30 + name_len]).decode("utf-8" if flags & 0x800 else "cp437",
                                                     "replace").split("\0", 1)[0]
        if local != m.name:
            raise self._damaged(m, f"the local header at byte {m.header_offset:,} is that of "
                                   f"{local!r}")
        return 30 + name_len + extra_len

    def _inflate(self, m: ZipMember, data: bytes) -> bytes:
        """Inflate at most m.size + 1 bytes: the declared size bounds the memory used."""
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, m.size + 1)
        except zlib.error as exc:
            raise self._damaged(m, f"damaged deflate data: {exc}") from None
        if len(out) > m.size:
            raise self._damaged(m, f"it inflates to more than the {m.size:,} bytes its central "
                                   f"directory declares")
        if not inflater.eof or inflater.unused_data:
            raise self._damaged(m, "its deflate data does not end where the central directory "
                                   "says")
        return out

    def data_range(self, m: ZipMember):
        """(offset, length) of a STORED member's bytes in the zip file (for reading an archive
        stored inside the zip in place). Raises ZipIndexError when its local header is not
        where the central directory says."""
        head = os.pread(self._fd, 30 + m.name_length, m.header_offset)
        if len(head) < 30 + m.name_length:
            raise self._damaged(m, "short read (truncated zip)")
        return m.header_offset + self._data_start(m, head), m.compressed_size

    def close(self) -> None:
        """Close the zip file."""
        self._file.close()

    def __getstate__(self):
        return {"path": self.path, "identity": self.identity}

    def __setstate__(self, state):
        self.__init__(state["path"], tuple(state["identity"]))
