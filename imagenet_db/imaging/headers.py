"""Cheap checks of image file bytes made before decoding: size cap and JPEG structure.

Two problems OpenCV does not report well are caught here, from the headers and markers only
(no pixel is decoded; a few tens of microseconds per file):

* **Huge images.** An image whose header declares more than ``max_pixels`` pixels (width x
  height; default ``DEFAULT_MAX_PIXELS`` = 100 megapixels, about 300 MB once decoded to BGR,
  far above any camera photo) is skipped before it is decoded, in every format OpenCV decodes
  (JPEG, PNG, GIF, BMP, TIFF, WebP, JPEG 2000, PNM/PAM/PFM, Sun raster, HDR, AVIF, OpenEXR:
  sizes read by ``imaging.sizes``), so one bad file (a 35-byte GIF declaring 30000x30000)
  cannot make every worker allocate gigabytes: peak memory stays near workers x max_pixels x
  3 bytes (a few times more for 16-bit and float formats). Under a cap, a file whose size
  cannot be read from its header, or of no known format, is not decoded either. With no cap
  (0) only OpenCV's own limit applies (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30 pixels).
* **Broken JPEG streams.** libjpeg decodes a JPEG whose entropy-coded data holds stray markers
  "successfully": it prints "Corrupt JPEG data: ..." on stderr (without the file name) and
  fills the rest of the image with one colour. Caffe stores that garbage. imagenet-db walks the
  marker structure (segments, scans, restart markers) and skips a JPEG whose structure is
  broken (a stray or malformed marker segment, restart markers out of sequence, a missing
  end-of-image marker, a segment running past the end of the file). This is a deliberate
  deviation from Caffe, affecting only broken files. What libjpeg tolerates without damage
  is accepted: extraneous bytes between segments (skipped, as libjpeg does) and data after
  the end-of-image marker (some cameras append trailers).

``decoded_shape`` reads, for ``--encoded`` builds that store files as they are, the size and
channels a decode would give from a JPEG's headers (frame header, EXIF orientation), so that
such files need no decode at all.

Structure follows ITU-T T.81 (the JPEG standard), annex B, and the PNG specification (IHDR);
EXIF orientation: the TIFF 6.0 IFD layout and the EXIF 2.3 Orientation tag (0x0112).
"""
import struct
from typing import Optional, Tuple

import numpy as np

from imagenet_db.imaging.sizes import (JPEG_SOF_MARKERS, JPEG_SOS, JPEG_STANDALONE,  # noqa: F401
                                       PNG_SIGNATURE, declared_size, image_format, jpeg_segments,
                                       jpeg_size, png_size)

DEFAULT_MAX_PIXELS = 100_000_000

_SOF_MARKERS, _STANDALONE = JPEG_SOF_MARKERS, JPEG_STANDALONE
_RST_MARKERS = range(0xD0, 0xD8)

def sniff_format(data: bytes) -> Optional[str]:
    """The image format named by the file's first bytes (see ``imaging.sizes.image_format``),
    whatever the file is called; None when no known signature matches."""
    return image_format(data)


png_dimensions = png_size  # (width, height) from a PNG's IHDR, None when not a PNG


def _check_dht(payload: bytes) -> bool:
    """True when a DHT payload is a sequence of well-formed Huffman tables (T.81 B.2.4.2)."""
    pos = 0
    while pos < len(payload):
        if pos + 17 > len(payload) or payload[pos] >> 4 > 1 or payload[pos] & 15 > 3:
            return False
        pos += 17 + sum(payload[pos + 1:pos + 17])
    return pos == len(payload)


def _check_dqt(payload: bytes) -> bool:
    """True when a DQT payload is a sequence of 8- or 16-bit quantization tables (B.2.4.1)."""
    pos = 0
    while pos < len(payload):
        precision, table = payload[pos] >> 4, payload[pos] & 15
        if precision > 1 or table > 3:
            return False
        pos += 1 + 64 * (precision + 1)
    return pos == len(payload)


_NO_EOI = "truncated: the file ends before the end-of-image marker"


class _MarkerWalk:
    """What ``jpeg_structure`` has read so far: the frame size (width, height), the restart
    interval (DRI), the scans seen, and the offsets of every marker (``_marker_offsets``,
    found at the first scan)."""
    __slots__ = ("dims", "restart_interval", "scans", "markers")

    def __init__(self) -> None:
        self.dims: Optional[Tuple[int, int]] = None
        self.restart_interval = 0
        self.scans = 0
        self.markers: Optional[np.ndarray] = None


def jpeg_structure(data: bytes) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """Walk a JPEG's markers. Returns ((width, height) or None, problem or None).

    ``problem`` describes the first structural error ("truncated: ..." or "corrupt: ...",
    with the byte offset); ``(width, height)`` comes from the frame header (SOFn) when one was
    read. Not a JPEG (no SOI marker): (None, None).
    """
    if data[:2] != b"\xff\xd8":
        return None, None
    walk = _MarkerWalk()
    pos = 2
    while True:
        problem, marker, at, end = _next_segment(data, pos)
        if problem:
            return walk.dims, problem
        if marker == 0xD9:  # EOI
            if not walk.scans:
                return walk.dims, "corrupt: end-of-image marker before any image data"
            return walk.dims, None
        problem, end = _read_segment(data, marker, at, data[at + 4:end], end, walk)
        if problem:
            return walk.dims, problem
        pos = end


def _next_segment(data: bytes, pos: int) -> Tuple[Optional[str], int, int, int]:
    """The marker segment at or after ``pos``, past extraneous bytes (libjpeg skips them with
    a warning, so do we) and fill bytes (0xFF), and where it ends by its length field; a
    marker that stands alone (RSTn, TEM, SOI, 0x00) is stray here. Returns (problem or None,
    marker byte, offset of the 0xFF before it, end offset); the payload is
    ``data[at + 4:end]``. EOI (0xD9) has no length: its end is ``at + 2``."""
    size = len(data)
    if pos >= size:
        return _NO_EOI, 0, pos, pos
    if data[pos] != 0xFF:
        pos = data.find(b"\xff", pos)
        if pos < 0:
            return _NO_EOI, 0, pos, pos
    while pos < size and data[pos] == 0xFF:  # fill bytes may precede a marker
        pos += 1
    if pos >= size:
        return "truncated: the file ends inside a marker", 0, pos, pos
    marker, at = data[pos], pos - 1
    pos += 1
    if marker == 0xD9:
        return None, marker, at, pos
    if marker in _RST_MARKERS or marker in (0x00, 0x01, 0xD8):
        return f"corrupt: stray marker 0xFF{marker:02X} at byte {at}", marker, at, pos
    if pos + 2 > size:
        return f"truncated: marker 0xFF{marker:02X} at byte {at} has no length", marker, at, pos
    length = int.from_bytes(data[pos:pos + 2], "big")
    if length < 2:
        return (f"corrupt: marker 0xFF{marker:02X} at byte {at} has length {length}", marker,
                at, pos)
    if pos + length > size:
        return (f"truncated: segment 0xFF{marker:02X} at byte {at} runs past the end of the "
                f"file"), marker, at, pos
    return None, marker, at, pos + length


def _read_segment(data: bytes, marker: int, at: int, payload: bytes, end: int,
                  walk: _MarkerWalk) -> Tuple[Optional[str], int]:
    """Check one segment's payload (T.81 B.2: SOFn, DHT, DQT, DRI, SOS; others are passed
    over) and note in ``walk`` what it sets. A scan header also skips the scan's
    entropy-coded data. Returns (problem or None, offset where the next marker is looked for)."""
    if marker in _SOF_MARKERS:
        return _read_frame_header(payload, at, walk), end
    if marker == 0xC4 and not _check_dht(payload):
        return f"corrupt: malformed Huffman table segment at byte {at}", end
    if marker == 0xDB and not _check_dqt(payload):
        return f"corrupt: malformed quantization table segment at byte {at}", end
    if marker == 0xDD:
        if len(payload) != 2:
            return f"corrupt: malformed restart interval segment at byte {at}", end
        walk.restart_interval = int.from_bytes(payload, "big")
    elif marker == 0xDA:
        if walk.dims is None:
            return f"corrupt: scan at byte {at} before any frame header", end
        if not payload or len(payload) != 4 + 2 * payload[0]:
            return f"corrupt: malformed scan header at byte {at}", end
        walk.scans += 1
        if walk.markers is None:
            walk.markers = _marker_offsets(data)
        return _skip_entropy_data(data, walk.markers, end, walk.restart_interval)
    return None, end


def _read_frame_header(payload: bytes, at: int, walk: _MarkerWalk) -> Optional[str]:
    """Check a frame header (SOFn, T.81 B.2.2) and note its (width, height) in ``walk``.
    Returns the problem, or None."""
    if len(payload) < 6 or len(payload) != 6 + 3 * payload[5]:
        return f"corrupt: malformed frame header at byte {at}"
    height = int.from_bytes(payload[1:3], "big")
    width = int.from_bytes(payload[3:5], "big")
    if width == 0 or height == 0:
        return f"corrupt: frame header at byte {at} gives size {width}x{height}"
    walk.dims = (width, height)
    return None


def _marker_offsets(data: bytes) -> np.ndarray:
    """Sorted offsets of the 0xFF bytes followed by a byte other than 0x00 (stuffing) or 0xFF
    (fill), i.e. where markers are, found with numpy (a Python loop would cost ~1 ms/file)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    following = arr[ff + 1]
    return ff[(following != 0x00) & (following != 0xFF)]


def _skip_entropy_data(data: bytes, markers: np.ndarray, pos: int,
                       restart_interval: int) -> Tuple[Optional[str], int]:
    """Skip one scan's entropy-coded data from ``pos``: stuffed 0xFF00 bytes and restart
    markers (which must cycle RST0..RST7 and need a restart interval). ``markers`` is
    ``_marker_offsets(data)``. Returns (problem, offset of the marker that ends the scan)."""
    expected = 0
    index = int(np.searchsorted(markers, pos))
    while True:
        if index >= len(markers):
            return "truncated: image data ends without an end-of-image marker", len(data)
        at = int(markers[index])
        marker = data[at + 1]
        if marker not in _RST_MARKERS:
            return None, at
        if not restart_interval:
            return (f"corrupt: restart marker 0xFF{marker:02X} at byte {at} but no restart "
                    f"interval was defined"), at
        if marker != 0xD0 + expected:
            return (f"corrupt: restart marker 0xFF{marker:02X} at byte {at} out of sequence "
                    f"(expected 0xFF{0xD0 + expected:02X})"), at
        expected = (expected + 1) % 8
        index += 1


def _exif_orientation(payload: bytes) -> Optional[int]:
    """Orientation (1..8) from an APP1 payload starting 'Exif\\0\\0' (its IFD0, tag 0x0112,
    one SHORT); 1 when the tag is absent; None when the block cannot be read."""
    tiff = payload[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    magic, ifd = struct.unpack(order + "HI", tiff[2:8])
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for at in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if at + 12 > len(tiff):
            return None
        tag, kind, number = struct.unpack(order + "HHI", tiff[at:at + 8])
        if tag == 0x0112:
            if kind != 3 or number != 1:  # SHORT, one value
                return None
            return struct.unpack(order + "H", tiff[at + 8:at + 10])[0]
    return 1


def _jpeg_frame(data: bytes) -> Optional[Tuple[int, int, int, int]]:
    """(width, height, components, EXIF orientation) from the segments before the first scan,
    or None for anything but a plain 8-bit frame with at most one readable EXIF block."""
    orientation, exif_blocks, frame = 1, 0, None
    for marker, payload, declared in jpeg_segments(data):
        if payload is None or len(payload) != declared:  # standalone marker, or cut short
            return None
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            exif_blocks += 1
            orientation = _exif_orientation(payload)
            if orientation is None or exif_blocks > 1:
                return None
        elif marker in _SOF_MARKERS:
            if frame is not None or len(payload) < 6:
                return None
            frame = (int.from_bytes(payload[3:5], "big"), int.from_bytes(payload[1:3], "big"),
                     payload[5], payload[0])
        elif marker == JPEG_SOS:
            if frame is None or frame[3] != 8:  # 12-bit JPEGs: let the decoder judge
                return None
            return frame[0], frame[1], frame[2], orientation
    return None


def decoded_shape(data: bytes, is_color: bool) -> Optional[Tuple[int, int, int]]:
    """(channels, height, width) that ``cv2.imdecode`` (IMREAD_COLOR, or IMREAD_GRAYSCALE when
    not ``is_color``) would return for a JPEG, read from its headers only, or None when only a
    decode can tell.

    As OpenCV: colour decodes give 3 channels whatever the file holds (1-channel gray,
    3-channel YCbCr, 4-channel CMYK/YCCK); EXIF orientations 5..8 swap width and height (the
    image is turned), 2..4 do not. For ``is_color=False`` only 1-channel JPEGs give a shape
    (a colour file is re-encoded as gray, which needs its pixels). None for non-JPEGs, 12-bit
    JPEGs, unreadable or repeated EXIF blocks, and frames of 0 pixels. The caller must have
    checked the file with ``check_image_bytes`` (stray markers, truncation).
    """
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    width, height, components, orientation = frame
    if components not in (1, 3, 4) or not 1 <= orientation <= 8 or not width or not height:
        return None
    if not is_color and components != 1:
        return None
    if orientation >= 5:
        width, height = height, width
    return (3 if is_color else 1), height, width


def check_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Optional[str]:
    """Why an image file must be skipped before decoding, or None when it may be decoded.

    data: the file's bytes. max_pixels: cap on width*height as the header declares them, for
    every format OpenCV decodes (``imaging.sizes``; 0 = no cap). Under a cap, a file whose
    size cannot be read from its header, or whose format is unknown, is not handed to a
    decoder either. Returns a reason such as "corrupt JPEG: stray marker ... at byte 1234" or
    "GIF image is 30000x30000 = 900000000 pixels, above the cap of 100000000 (--max_pixels)".
    An empty file returns None: the decoder reports it.
    """
    if data[:2] == b"\xff\xd8":
        dims, problem = jpeg_structure(data)  # the frame header, as libjpeg reaches it
        if problem:
            return f"{problem.split(':')[0]} JPEG:{problem.split(':', 1)[1]}"
        name = "JPEG"
    elif max_pixels and data:
        name, dims = declared_size(data)
    if not max_pixels or not data:
        return None
    if name is None:
        return describe_undecodable(data)
    if dims is None:
        return (f"cannot read the image size from this {name} file's header; not decoded "
                f"under the --max_pixels cap (damaged header?)")
    if dims[0] * dims[1] > max_pixels:
        return (f"{name} image is {dims[0]}x{dims[1]} = {dims[0] * dims[1]} pixels, above the "
                f"cap of {max_pixels} (--max_pixels)")
    return None


def describe_undecodable(data: bytes) -> str:
    """A skip reason for bytes that OpenCV could not decode, naming what they look like."""
    if not data:
        return "empty file (0 bytes)"
    found = sniff_format(data)
    if found:
        return f"cannot decode image data ({found} file that OpenCV cannot read)"
    return f"not an image file (unknown format; starts with {data[:12]!r})"
