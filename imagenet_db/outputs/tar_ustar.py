"""Deterministic POSIX ustar members, written and read back (WebDataset shards).

Every member is a regular file with fixed metadata, so that a rebuild gives byte-identical
tars: mode 0644, uid/gid 0, user/group names empty, mtime 0 (1970-01-01), type '0'. The
layout is POSIX.1-1988 ustar (``magic 'ustar\\0'``, version ``'00'``): a 512-byte header, the
data, zero padding to a multiple of 512; the archive ends with two zero blocks. Names up to
100 bytes (ASCII) go in the name field; WebDataset keys are short (``n01440764_10026.jpg``).

``read_members`` parses such a tar (any ustar or GNU tar of regular files) with every byte
checked: header checksums, sizes within the file, zero padding, the two-block end, and
nothing but zeros after it.
"""
from typing import List, NamedTuple

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
MTIME = 0
MODE = 0o644
MAX_NAME = 100


class TarDamaged(ValueError):
    """A tar whose bytes are not a well-formed archive; the text says where and why."""


class Member(NamedTuple):
    """One regular file in a tar: name, offset of its data (a multiple of 512), size."""
    name: str
    offset: int
    size: int


def _octal(value: int, width: int) -> bytes:
    """``value`` as zero-padded octal digits + NUL, ``width`` bytes in all."""
    return b"%0*o\0" % (width - 1, value)


def _template() -> bytes:
    header = bytearray(BLOCK)
    header[100:108] = _octal(MODE, 8)
    header[108:116] = _octal(0, 8)        # uid
    header[116:124] = _octal(0, 8)        # gid
    header[136:148] = _octal(MTIME, 12)
    header[148:156] = b" " * 8            # the checksum field counts as spaces
    header[156:157] = b"0"                # regular file
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    return bytes(header)


_TEMPLATE = _template()  # name (0:100) and size (124:136) left zero
_TEMPLATE_SUM = sum(_TEMPLATE)


def member_header(name: str, size: int) -> bytes:
    """The 512-byte ustar header of a regular file ``name`` (ASCII, at most 100 bytes) of
    ``size`` bytes, with the fixed metadata of the module docstring. Raises ValueError for a
    name that does not fit."""
    raw = name.encode("ascii")
    if not raw or len(raw) > MAX_NAME:
        raise ValueError(f"tar member name {name!r} must be 1..{MAX_NAME} ASCII bytes")
    size_field = _octal(size, 12)
    checksum = _TEMPLATE_SUM + sum(raw) + sum(size_field)
    return b"".join((raw, bytes(MAX_NAME - len(raw)), _TEMPLATE[100:124], size_field,
                     _TEMPLATE[136:148], b"%06o\0 " % checksum, _TEMPLATE[156:]))


def padding(size: int) -> bytes:
    """Zero bytes that bring ``size`` bytes of data up to a multiple of 512."""
    return bytes(-size % BLOCK)


def member_bytes(name: str, data: bytes) -> bytes:
    """Header + data + padding of one member."""
    return member_header(name, len(data)) + data + padding(len(data))


def _field(header: bytes, start: int, end: int) -> int:
    text = header[start:end].split(b"\0", 1)[0].strip()
    if not text or any(c not in b"01234567" for c in text):
        raise ValueError(f"bad octal field {header[start:end]!r}")
    return int(text, 8)


def _parse_header(header: bytes, at: int, total: int) -> Member:
    try:
        checksum, size = _field(header, 148, 156), _field(header, 124, 136)
    except ValueError as exc:
        raise TarDamaged(f"header at byte {at}: {exc}") from None
    if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
        raise TarDamaged(f"header at byte {at}: checksum does not match")
    if header[156:157] not in (b"0", b"\0"):
        raise TarDamaged(f"header at byte {at}: not a regular file (type {header[156:157]!r})")
    try:
        name = header[:100].split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise TarDamaged(f"header at byte {at}: member name is not ASCII") from None
    if at + BLOCK + size + (-size % BLOCK) > total:
        raise TarDamaged(f"member {name} at byte {at}: {size} bytes run past the end of the "
                         f"file ({total} bytes): truncated")
    return Member(name, at + BLOCK, size)


def read_members(data: bytes) -> List[Member]:
    """The members of the tar ``data`` (bytes-like), in order. Raises TarDamaged naming the
    byte offset for a damaged header, a member cut short, a missing end of archive, or
    non-zero bytes after it."""
    members, at, total = [], 0, len(data)
    view = memoryview(data)
    while True:
        if at + BLOCK > total:
            raise TarDamaged(f"no end-of-archive blocks (file ends at byte {total}): truncated")
        header = bytes(view[at:at + BLOCK])
        if header == bytes(BLOCK):
            if bytes(view[at:at + 2 * BLOCK]) != END_OF_ARCHIVE or any(view[at:]):
                raise TarDamaged(f"end of archive at byte {at} is not two zero blocks "
                                 f"followed by zeros only")
            return members
        member = _parse_header(header, at, total)
        members.append(member)
        at = member.offset + member.size + (-member.size % BLOCK)
        if any(view[member.offset + member.size:at]):
            raise TarDamaged(f"member {member.name}: its padding (bytes "
                             f"{member.offset + member.size}..{at - 1}) is not zeros")
