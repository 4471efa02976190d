"""The format and declared size of an image file, from its first bytes, for every format OpenCV
decodes: what ``--max_pixels`` is checked against before anything is decoded.

A decoder allocates what the header declares before it looks at the data (a 35-byte GIF that
declares 30000x30000 pixels costs ~7 GB in OpenCV's GIF decoder), so the size must come from
the same field the decoder trusts. ``image_format`` names the format the way OpenCV's own
signature checks would pick a decoder; ``declared_size`` reads (width, height) for it:

==========  ================================================================================
JPEG        the frame header (SOFn), ITU-T T.81 B.2.2
PNG         IHDR (the first chunk)
GIF         the logical screen and the first image descriptor (the larger of the two)
BMP         BITMAPCOREHEADER (16-bit sizes) or BITMAPINFOHEADER and later (32-bit; height
            negative for top-down images)
TIFF        ImageWidth/ImageLength of the first IFD (OpenCV decodes the first page); BigTIFF too
WebP        VP8 (lossy) frame header, VP8L (lossless) header, or VP8X canvas
JPEG 2000   the codestream's SIZ marker (Xsiz - XOsiz, Ysiz - YOsiz), in a raw .j2k or in the
            jp2c box of a .jp2 (the decoder sizes by the codestream, not the ihdr box)
PNM         P1..P6 width and height tokens (comments skipped); PAM (P7) WIDTH/HEIGHT lines;
            PFM (PF, Pf)
Sun raster  width and height of the 32-byte header
HDR         Radiance: the resolution line after the header ("-Y H +X W" and the other orders)
AVIF        the largest 'ispe' property in meta/iprp/ipco (ISO/IEC 23008-12)
OpenEXR     the dataWindow attribute (box2i)
==========  ================================================================================

Signatures and field layouts are those of the formats' specifications. Anything malformed
gives None (then ``imaging.headers`` refuses to decode the file under a pixel cap).
"""
import struct
from typing import Callable, Dict, Iterator, List, Optional, Tuple

Size = Tuple[int, int]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
J2K_SIGNATURE = b"\xff\x4f\xff\x51"  # SOC then SIZ
_HEADER_LIMIT = 1 << 16  # text headers (PNM comments, HDR) longer than this are not sized


def _is_pnm(data: bytes) -> bool:
    return len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace()


def _is_avif(data: bytes) -> bool:
    if data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[:4], "big")
    brands = data[8:12] + data[16:max(16, min(size, 64))]
    return any(brands[i:i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


_FORMATS: List[Tuple[Callable[[bytes], bool], str]] = [  # in OpenCV's order of checks
    (lambda d: d[:3] == b"\xff\xd8\xff", "JPEG"),
    (lambda d: d[:8] == PNG_SIGNATURE, "PNG"),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF"),
    (lambda d: d[:2] == b"BM", "BMP"),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF"),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "WebP"),
    (lambda d: d[:12] == JP2_SIGNATURE or d[:4] == J2K_SIGNATURE, "JPEG 2000"),
    (_is_pnm, "PNM"),
    (lambda d: d[:2] == b"P7" and d[2:3].isspace(), "PAM"),
    (lambda d: d[:2] in (b"PF", b"Pf") and d[2:3].isspace(), "PFM"),
    (lambda d: d[:4] == b"\x59\xa6\x6a\x95", "Sun raster"),
    (lambda d: d[:10] == b"#?RADIANCE" or d[:6] == b"#?RGBE", "HDR"),
    (_is_avif, "AVIF"),
    (lambda d: d[:4] == b"\x76\x2f\x31\x01", "OpenEXR"),
]


def image_format(data: bytes) -> Optional[str]:
    """The image format named by the file's first bytes ('JPEG', 'PNG', 'GIF', 'BMP', 'TIFF',
    'WebP', 'JPEG 2000', 'PNM', 'PAM', 'PFM', 'Sun raster', 'HDR', 'AVIF', 'OpenEXR'),
    whatever the file is called; None when no known signature matches."""
    for test, name in _FORMATS:
        if test(data):
            return name
    return None


def _u16(data: bytes, at: int, order: str) -> int:
    return int.from_bytes(data[at:at + 2], order)


def _u32(data: bytes, at: int, order: str) -> int:
    return int.from_bytes(data[at:at + 4], order)


# JPEG markers (ITU-T T.81 annex B): SOFn carry the frame size (all of C0..CF but DHT=C4,
# JPG=C8, DAC=CC); TEM, RSTn and SOI stand alone (no length field); SOS starts the scan data
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
JPEG_SOS = 0xDA


def jpeg_segments(data: bytes) -> Iterator[Tuple[int, Optional[bytes], int]]:
    """The marker segments of a JPEG after SOI, up to and including the first SOS (start of
    scan), as (marker, payload, declared payload length): payload is None for a standalone
    marker, and shorter than declared when the file ends inside the segment (then it is the
    last one). Stops early at bytes that are not a marker or a length below 2; yields nothing
    when ``data`` is not a JPEG. Reads only the headers, never the entropy-coded data."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            yield marker, None, 0
            pos += 2
            continue
        length = _u16(data, pos + 2, "big")
        if length < 2:
            return
        yield marker, data[pos + 4:pos + 2 + length], length - 2
        if marker == JPEG_SOS:
            return
        pos += 2 + length


def jpeg_size(data: bytes) -> Optional[Size]:
    """(width, height) from the first frame header (SOFn) reached by walking the marker
    segments that precede it; None when ``data`` is not a JPEG or the header is cut short."""
    for marker, payload, declared in jpeg_segments(data):
        if marker == JPEG_SOS:
            return None
        if marker in JPEG_SOF_MARKERS:
            if len(payload) < 5 or declared < 5:
                return None
            width, height = _u16(payload, 3, "big"), _u16(payload, 1, "big")
            return (width, height) if width and height else None
    return None


def png_size(data: bytes) -> Optional[Size]:
    """(width, height) from IHDR; None when ``data`` is not a PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return _u32(data, 16, "big"), _u32(data, 20, "big")


def gif_size(data: bytes) -> Optional[Size]:
    """The logical screen, grown to the first frame when that is larger."""
    if len(data) < 13:
        return None
    width, height = _u16(data, 6, "little"), _u16(data, 8, "little")
    pos, flags = 13, data[10]
    if flags & 0x80:  # global colour table
        pos += 3 * (2 << (flags & 7))
    while pos < len(data):
        if data[pos] == 0x21:  # extension: label, then data sub-blocks up to a 0 length
            pos += 2
            while pos < len(data) and data[pos]:
                pos += data[pos] + 1
            pos += 1
        elif data[pos] == 0x2C and pos + 9 <= len(data):  # image descriptor
            left, top, frame_w, frame_h = struct.unpack_from("<HHHH", data, pos + 1)
            width, height = max(width, left + frame_w), max(height, top + frame_h)
            break
        else:
            break
    return width, height


def bmp_size(data: bytes) -> Optional[Size]:
    """From the DIB header: 16-bit sizes in a 12-byte core header, else signed 32-bit."""
    if len(data) < 26:
        return None
    if _u32(data, 14, "little") == 12:
        return _u16(data, 18, "little"), _u16(data, 20, "little")
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)


def tiff_size(data: bytes) -> Optional[Size]:
    """ImageWidth (256) and ImageLength (257) of the first IFD (classic or BigTIFF)."""
    order = "little" if data[:2] == b"II" else "big"
    big = _u16(data, 2, order) == 43
    try:
        if big:
            offset = int.from_bytes(data[8:16], order)
            count, at, entry = int.from_bytes(data[offset:offset + 8], order), offset + 8, 20
        else:
            offset = _u32(data, 4, order)
            count, at, entry = _u16(data, offset, order), offset + 2, 12
    except (IndexError, ValueError):
        return None
    found = {}
    for i in range(min(count, 4096)):
        pos = at + i * entry
        if pos + entry > len(data):
            return None
        tag, kind = _u16(data, pos, order), _u16(data, pos + 2, order)
        if tag in (256, 257):
            value_at = pos + (12 if big else 8)
            widths = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8
            if kind not in widths:
                return None
            found[tag] = int.from_bytes(data[value_at:value_at + widths[kind]], order)
            if len(found) == 2:
                return found[256], found[257]
    return None


def webp_size(data: bytes) -> Optional[Size]:
    """From the first chunk: VP8 frame header, VP8L header, or the VP8X canvas."""
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a" and len(data) >= 30:
        return _u16(data, 26, "little") & 0x3FFF, _u16(data, 28, "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _u32(data, 21, "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _j2k_siz(data: bytes, at: int) -> Optional[Size]:
    if data[at:at + 4] != J2K_SIGNATURE or len(data) < at + 24:
        return None
    x, y, x0, y0 = struct.unpack_from(">IIII", data, at + 8)
    return (x - x0, y - y0) if x > x0 and y > y0 else None


def _boxes(data: bytes, start: int, end: int):
    """(type, content start, content end) of the ISO/JP2 boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind, head = _u32(data, pos, "big"), data[pos + 4:pos + 8], 8
        if size == 1:
            if pos + 16 > end:
                return
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head:
            return
        yield kind, pos + head, min(pos + size, end)
        pos += size


def jpeg2000_size(data: bytes) -> Optional[Size]:
    """From the codestream's SIZ marker (a raw codestream, or a JP2's jp2c box)."""
    if data[:4] == J2K_SIGNATURE:
        return _j2k_siz(data, 0)
    for kind, start, _ in _boxes(data, 0, len(data)):
        if kind == b"jp2c":
            return _j2k_siz(data, start)
    return None


def _header_tokens(data: bytes, start: int, count: int) -> Optional[List[int]]:
    """``count`` whitespace-separated integers after ``start``, '#' comments skipped."""
    text = data[start:_HEADER_LIMIT]
    values: List[int] = []
    for line in text.split(b"\n"):
        for token in line.split(b"#", 1)[0].split():
            if not token.isdigit():
                return None
            values.append(int(token))
            if len(values) == count:
                return values
    return None


def pnm_size(data: bytes) -> Optional[Size]:
    """P1..P6 and PF/Pf: the width and height tokens after the magic number."""
    values = _header_tokens(data, 2, 2)
    return (values[0], values[1]) if values else None


def pam_size(data: bytes) -> Optional[Size]:
    """P7: the WIDTH and HEIGHT header lines (before ENDHDR)."""
    found = {}
    for line in data[3:_HEADER_LIMIT].split(b"\n"):
        words = line.split(b"#", 1)[0].split()
        if words[:1] == [b"ENDHDR"]:
            break
        if len(words) == 2 and words[0] in (b"WIDTH", b"HEIGHT") and words[1].isdigit():
            found[words[0]] = int(words[1])
    if len(found) != 2:
        return None
    return found[b"WIDTH"], found[b"HEIGHT"]


def sun_raster_size(data: bytes) -> Optional[Size]:
    """Width and height (big-endian 32-bit) of the Sun raster header."""
    return (_u32(data, 4, "big"), _u32(data, 8, "big")) if len(data) >= 12 else None


def hdr_size(data: bytes) -> Optional[Size]:
    """The resolution line that follows the header's empty line: '-Y H +X W' (or another
    order of the axes)."""
    head, sep, rest = data[:_HEADER_LIMIT].partition(b"\n\n")
    words = rest.split(b"\n", 1)[0].split()
    if not sep or len(words) != 4:
        return None
    sizes = {}
    for axis, value in ((words[0], words[1]), (words[2], words[3])):
        if axis[1:] not in (b"X", b"Y") or axis[:1] not in (b"+", b"-") or not value.isdigit():
            return None
        sizes[axis[1:]] = int(value)
    return (sizes[b"X"], sizes[b"Y"]) if len(sizes) == 2 else None


def avif_size(data: bytes) -> Optional[Size]:
    """The largest image spatial extent ('ispe') among the item properties."""
    best = None
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"meta":
            continue
        for kind2, start2, end2 in _boxes(data, start + 4, end):  # meta is a full box
            if kind2 != b"iprp":
                continue
            for kind3, start3, end3 in _boxes(data, start2, end2):
                if kind3 != b"ipco":
                    continue
                for kind4, start4, end4 in _boxes(data, start3, end3):
                    if kind4 == b"ispe" and end4 - start4 >= 12:
                        size = (_u32(data, start4 + 4, "big"), _u32(data, start4 + 8, "big"))
                        if best is None or size[0] * size[1] > best[0] * best[1]:
                            best = size
    return best


def exr_size(data: bytes) -> Optional[Size]:
    """From the dataWindow attribute: (xMax - xMin + 1, yMax - yMin + 1)."""
    pos, end = 8, min(len(data), _HEADER_LIMIT)
    while pos < end and data[pos]:
        name_end = data.find(b"\0", pos, end)
        type_end = data.find(b"\0", name_end + 1, end)
        if name_end < 0 or type_end < 0 or type_end + 5 > end:
            return None
        size = _u32(data, type_end + 1, "little")
        value = type_end + 5
        if data[pos:name_end] == b"dataWindow" and size == 16 and value + 16 <= len(data):
            x0, y0, x1, y1 = struct.unpack_from("<iiii", data, value)
            return (x1 - x0 + 1, y1 - y0 + 1) if x1 >= x0 and y1 >= y0 else None
        pos = value + size
    return None


_SIZERS: Dict[str, Callable[[bytes], Optional[Size]]] = {
    "JPEG": jpeg_size, "PNG": png_size, "GIF": gif_size, "BMP": bmp_size, "TIFF": tiff_size,
    "WebP": webp_size, "JPEG 2000": jpeg2000_size, "PNM": pnm_size, "PAM": pam_size,
    "PFM": pnm_size, "Sun raster": sun_raster_size, "HDR": hdr_size, "AVIF": avif_size,
    "OpenEXR": exr_size,
}


def declared_size(data: bytes) -> Tuple[Optional[str], Optional[Size]]:
    """(format, (width, height)) as the file's header declares them; (None, None) for an
    unknown format, (format, None) when the header cannot be read (cut short, malformed)."""
    name = image_format(data)
    if name is None:
        return None, None
    try:
        return name, _SIZERS[name](data)
    except (IndexError, ValueError, struct.error):
        return name, None
