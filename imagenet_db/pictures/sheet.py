"""Contact sheets: datums of a database side by side as one picture (``imagenet-db show``).

Each tile is one datum, decoded as Caffe's data layer sees it (raw CHW BGR pixels, or the
encoded file decoded with OpenCV), fitted into a ``tile`` x ``tile`` square with its aspect
ratio kept (area averaging when shrinking, bilinear when enlarging; ``tile=0`` keeps every
image at its stored size), centred on a dark background, and captioned with two lines: the
key (for Caffe's ``%08d_relpath`` keys: the number and the file name) and ``label class``,
the class being the first name of that label's line in synset_words.txt. Gray datums are
shown gray; colours are right (datums are BGR, as OpenCV writes PNGs). Captions are drawn
with OpenCV's Hershey font, which has ASCII only: accents are dropped, other characters
shown as '?'. A datum that cannot be decoded gets a captioned empty tile, not an error.
"""
import os
import unicodedata
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.engine.files import write_file_atomic
from imagenet_db.errors import ImagenetDbError
from imagenet_db.readers.sharddb import ShardDB, open_db
from imagenet_db.text import is_ascii_number
from imagenet_db.imaging.decode import decode_flag_for
from imagenet_db.imaging.fastdecode import decode_reduced
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS, check_image_bytes
from imagenet_db.imaging.sizes import declared_size
from imagenet_db.outputs.wire import datum_fields

BACKGROUND = (40, 40, 40)  # BGR
TEXT_COLOUR = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
PAD = 4
DEFAULT_TILE = 128
DEFAULT_COUNT = 64
MAX_TILE = 2048  # pixels a tile side at most (--tile)
MAX_SHEET_PIXELS = 100_000_000  # a sheet at most (300 MB of BGR): more is refused, not tried
CLASS_FILES = ("synset_words.txt", "synsets.txt")


@dataclass
class Tile:
    """Where datum ``position`` landed in a sheet: its image's top-left corner (x, y) and
    size (width, height) in sheet pixels; ``problem`` is set (and the tile empty) when the
    datum could not be decoded (or, encoded, is over the --max_pixels cap); ``shape`` is the
    datum's (channels, height, width) at full size."""
    position: int
    x: int
    y: int
    width: int
    height: int
    problem: Optional[str] = None
    shape: Optional[Tuple[int, int, int]] = None  # (C, H, W) the datum holds, when decoded


def read_class_names(path: str) -> List[str]:
    """Class names by label from a synset_words.txt ('n01440764 tench, Tinca tinca' lines: the
    first name, 'tench') or a synsets.txt (the wnid); label = line number from 0, as Caffe's
    synset_words.txt. Raises ImagenetDbError when the file cannot be read."""
    names = []
    try:
        with open(path, encoding="utf-8", newline="\n") as f:  # lines end at '\n' only
            for line in f:
                line = line.strip()
                if line:
                    wnid, _, words = line.partition(" ")
                    names.append(words.split(",")[0].strip() or wnid)
    except (OSError, UnicodeDecodeError) as exc:
        raise ImagenetDbError(f"{path}: cannot read class names: {exc}") from None
    return names


def find_class_file(db_path: str) -> Optional[str]:
    """synset_words.txt (else synsets.txt) in the folder holding the database, as
    create_imagenet writes them beside its databases; None when there is neither."""
    folder = os.path.dirname(os.path.abspath(db_path))
    for name in CLASS_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def ascii_text(text: str) -> str:
    """``text`` in the ASCII that OpenCV's Hershey fonts draw: accents dropped, '?' for the rest."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if 32 <= ord(ch) < 127:
            out.append(ch)
        elif not unicodedata.combining(ch):
            out.append("?")
    return "".join(out)


def fit_text(text: str, width: int, scale: float, keep_end: bool = False) -> str:
    """``text`` (made ASCII) shortened with '..' at its end (or, keep_end, its start) so that it
    is at most ``width`` pixels wide at font ``scale``."""
    text = ascii_text(text)

    def fits(candidate):
        return cv2.getTextSize(candidate, FONT, scale, 1)[0][0] <= width

    if fits(text):
        return text
    while text and not fits(".." + text if keep_end else text + ".."):
        text = text[1:] if keep_end else text[:-1]
    return ".." + text if keep_end else text + ".."


def short_key(key: bytes) -> str:
    """A key for a caption: Caffe's '%08d_relpath' as 'number file-name', others as they are."""
    text = bytes(key).decode("utf-8", "replace")
    number, sep, relpath = text.partition("_")
    if sep and is_ascii_number(number):
        return f"{number} {relpath.rsplit('/', 1)[-1]}"
    return text


def as_bgr(image: np.ndarray) -> np.ndarray:
    """An (H, W, C) datum image as (H, W, 3) uint8 BGR for display: gray repeated, a 4th
    channel dropped, float pixels rounded and clipped to 0..255."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 2:
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def fit_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """``image`` scaled so that its longer side is ``tile`` pixels (INTER_AREA when shrinking,
    INTER_LINEAR when enlarging), aspect kept; unchanged when tile <= 0 or it already fits
    exactly."""
    height, width = image.shape[:2]
    if tile <= 0 or max(height, width) == tile:
        return image
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, size, interpolation=interpolation)
    return scaled.reshape(scaled.shape[:2] + image.shape[2:])  # OpenCV drops a channel axis of 1


def _reduced_target(width: int, height: int, tile: int) -> Optional[Tuple[int, int]]:
    """The (width, height) fit_tile scales a width x height image to, when it shrinks it."""
    if tile <= 0 or max(width, height) <= tile:
        return None
    scale = tile / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(db, position: int, tile: int,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, int, Tuple[int, int, int]]:
    """(image, label, (C, H, W) of the datum) of datum ``position`` of ``db`` (a DatumDB in BGR,
    HWC), for a ``tile``-pixel tile. An encoded datum's header is checked first (the build's
    checks, ``imaging.headers``: declared width*height over ``max_pixels``, 0 = no cap, is an
    ImagenetDbError naming the datum, not a decode), and a JPEG is decoded at the largest
    libjpeg reduction (1/2, 1/4, 1/8; ``IMREAD_REDUCED_*``) that still covers the tile.
    Raw datums and other formats decode as ``db[position]``; shard samples (a ``ShardDB``)
    are JPEGs, checked and reduced the same way."""
    if isinstance(db, ShardDB):
        data, label, key = db.sample(position)
        image = _decode_checked(data, True, tile, max_pixels, f"{db.path}: sample {key!r}")
        return image, label, (image.shape[2], image.shape[0], image.shape[1])
    key, value = db.value(position)
    fields = datum_fields(value)
    image = None
    if fields is not None and fields.encoded:
        data = bytes(value[fields.data_offset:fields.data_offset + fields.data_length])
        is_color = decode_flag_for(fields.channels) != cv2.IMREAD_GRAYSCALE
        image = _decode_checked(data, is_color, tile, max_pixels,
                                f"{db.path}: datum {short_key(key)!r}", reduced_only=True)
    if image is None:
        image, label = db.decode(key, value)
        return image, label, (image.shape[2], image.shape[0], image.shape[1])
    width, height = declared_size(data)[1]
    if (image.shape[1] > image.shape[0]) != (width > height):
        width, height = height, width  # turned by its EXIF orientation, as decoded
    return image, fields.label, (image.shape[2], height, width)


def _decode_checked(data: bytes, is_color: bool, tile: int, max_pixels: int, where: str,
                    reduced_only: bool = False) -> Optional[np.ndarray]:
    """``data`` (encoded image bytes) decoded for a ``tile``-pixel tile, HWC BGR (or one
    channel): its header checked against ``max_pixels`` first (ImagenetDbError naming
    ``where``), a JPEG decoded at the largest libjpeg reduction that covers the tile. With
    ``reduced_only``, None when no reduced decode applies; else a full decode (ImagenetDbError
    when the bytes do not decode)."""
    problem = check_image_bytes(data, max_pixels)
    if problem:
        raise ImagenetDbError(f"{where}: {problem}; not decoded")
    image = decode_reduced(data, is_color, lambda w, h: _reduced_target(w, h, tile))
    if image is None and not reduced_only:
        image = cv2.imdecode(np.frombuffer(data, np.uint8),
                             cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ImagenetDbError(f"{where}: does not decode")
    if image is not None and image.ndim == 2:
        image = image[:, :, np.newaxis]
    return image


BOX_COLOUR = (0, 255, 0)  # BGR


def draw_boxes(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 BGR ``image`` with ``boxes`` drawn on it: (N, 6) float32
    [xmin, ymin, xmax, ymax, label, difficult] relative to the image (an AnnotatedDatum's),
    one-pixel green rectangles, difficult ones alike."""
    out = image.copy()
    height, width = image.shape[:2]
    for xmin, ymin, xmax, ymax in boxes[:, :4].astype(np.float64):
        if not np.isfinite([xmin, ymin, xmax, ymax]).all():
            continue
        corner = (int(round(xmin * width)), int(round(ymin * height)))
        other = (int(round(xmax * width)) - 1, int(round(ymax * height)) - 1)
        cv2.rectangle(out, corner, other, BOX_COLOUR, 1)
    return out


def box_caption(boxes: np.ndarray, class_names: Sequence[str]) -> str:
    """'2 boxes: 3 kit fox' (count, then the first box's label and its synsets.txt name;
    SSD's labels count from 1, 0 being the background)."""
    if not len(boxes):
        return "no boxes"
    label = int(boxes[0, 4])
    name = class_names[label - 1] if 1 <= label <= len(class_names) else ""
    return f"{len(boxes)} box{'es' if len(boxes) > 1 else ''}: {label} {name}".strip()


def spread_positions(count: int, total: int) -> List[int]:
    """``count`` positions spread evenly over 0..total-1 (first and last included; all of
    them when total <= count)."""
    if total <= count:
        return list(range(total))
    if count <= 1:
        return [0][:count]
    return sorted({int(round(i * (total - 1) / (count - 1))) for i in range(count)})


def choose_positions(db, count: int = DEFAULT_COUNT, label: Optional[int] = None) -> List[int]:
    """Positions of ``count`` datums spread evenly over the database (or over the datums of
    ``label``; their labels are read without decoding). Raises ImagenetDbError when no datum
    has that label."""
    if label is None:
        return spread_positions(count, len(db))
    matching = np.flatnonzero(db.labels() == label)
    if matching.size == 0:
        raise ImagenetDbError(f"{db.path}: no datum has label {label}")
    return [int(matching[i]) for i in spread_positions(count, int(matching.size))]


def _thumbnails(db, positions: Sequence[int], class_names: Sequence[str], tile: int,
                max_pixels: int) -> Tuple[list, dict]:
    """([(position, tile image or None, label or caption, problem or None)], {position: (C, H,
    W) as stored}) for ``contact_sheet``: an AnnotatedDatum's boxes drawn and captioned, an
    ImagenetDbError kept as the tile's problem."""
    decoded, shapes = [], {}
    for position in positions:
        try:
            image, label, shapes[position] = thumbnail(db, position, tile, max_pixels)
            image = as_bgr(fit_tile(image, tile))
            if isinstance(label, np.ndarray):  # an AnnotatedDatum: (image, boxes)
                image, label = draw_boxes(image, label), box_caption(label, class_names)
            decoded.append((position, image, label, None))
        except ImagenetDbError as exc:
            decoded.append((position, None, None, str(exc)))
    return decoded, shapes


def contact_sheet(db, positions: Sequence[int], class_names: Sequence[str] = (),
                  tile: int = DEFAULT_TILE, columns: int = 0, title: str = "",
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, List[Tile]]:
    """Draw the datums at ``positions`` of ``db`` (an ``imagenet_db.reader.DatumDB`` in BGR,
    HWC) as a grid: ``columns`` tiles a row (0: about square), each ``tile`` pixels (0: the
    largest stored size), captioned (module docstring); ``title`` on top (lines split at
    newlines, each shortened to fit). Each datum is read with ``thumbnail`` (an encoded one
    over ``max_pixels`` gets an empty tile saying so, never a decode).

    Returns (sheet, tiles): sheet an (H, W, 3) uint8 BGR image (for cv2.imwrite), tiles one
    ``Tile`` per position, in order. Raises ImagenetDbError when ``tile`` is outside
    0..MAX_TILE or the sheet would hold more than MAX_SHEET_PIXELS pixels.
    """
    if not 0 <= tile <= MAX_TILE:
        raise ImagenetDbError(f"the tile size must be in 0..{MAX_TILE} pixels, not {tile}")
    decoded, shapes = _thumbnails(db, positions, class_names, tile, max_pixels)
    sizes = [max(image.shape[:2]) for _, image, _, _ in decoded if image is not None]
    cell = tile if tile > 0 else max(sizes or [DEFAULT_TILE])
    count = max(1, len(decoded))
    columns = columns if columns > 0 else min(count, int(np.ceil(np.sqrt(count))))
    rows = -(-count // columns)
    scale = float(np.clip(cell / 300, 0.3, 0.6))
    line = cv2.getTextSize("Ag", FONT, scale, 1)[0][1] + 6
    caption = 2 * line + 2
    title_lines = title.split("\n") if title else []
    head = int(line * 1.3) * len(title_lines) + (line // 2 if title_lines else 0)
    height, width = head + rows * (cell + caption + PAD) + PAD, columns * (cell + PAD) + PAD
    if height * width > MAX_SHEET_PIXELS:
        raise ImagenetDbError(f"the sheet would be {width}x{height} pixels, over "
                              f"{MAX_SHEET_PIXELS:,}: show fewer datums or smaller tiles")
    sheet = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for k, text in enumerate(title_lines):
        cv2.putText(sheet, fit_text(text, sheet.shape[1] - 2 * PAD, scale * 1.2, keep_end=k == 0),
                    (PAD, int(line * 1.3) * (k + 1)), FONT, scale * 1.2, TEXT_COLOUR, 1,
                    cv2.LINE_AA)
    tiles = []
    for n, (position, image, label, problem) in enumerate(decoded):
        row, column = divmod(n, columns)
        x0, y0 = PAD + column * (cell + PAD), head + PAD + row * (cell + caption + PAD)
        if image is None:
            tiles.append(Tile(position, x0, y0, 0, 0, problem))
            lines = [short_key(db.key(position)), "cannot be decoded"]
        else:
            height, width = image.shape[:2]
            x, y = x0 + (cell - width) // 2, y0 + (cell - height) // 2
            sheet[y:y + height, x:x + width] = image
            tiles.append(Tile(position, x, y, width, height, shape=shapes[position]))
            if isinstance(label, str):
                lines = [short_key(db.key(position)), label]
            else:
                name = class_names[label] if 0 <= label < len(class_names) else ""
                lines = [short_key(db.key(position)), f"{label} {name}".strip()]
        for k, text in enumerate(lines):
            cv2.putText(sheet, fit_text(text, cell, scale, keep_end=k == 0),
                        (x0, y0 + cell + (k + 1) * line - 2), FONT, scale, TEXT_COLOUR, 1,
                        cv2.LINE_AA)
    return sheet, tiles


def encode_png(image: np.ndarray) -> bytes:
    """PNG file bytes of a BGR (or gray) uint8 image."""
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ImagenetDbError("OpenCV could not encode a PNG")
    return buf.tobytes()


@dataclass(frozen=True)
class SheetOptions:
    """What ``write_sheet`` draws (the flags of ``imagenet-db show``).

    out: the PNG to write (None: ``<DB name>.sheet.png`` in the current folder). count: datums
    shown (>= 1), spread over the key order. label: only datums with this label (None: any).
    synsets: class names file (synset_words.txt or synsets.txt; None: the one beside the
    database, if any). tile: tile size in pixels (0 = stored size). columns: tiles per row
    (0 = about square). backend: 'lmdb', 'leveldb' or None (detected). overwrite: replace an
    existing ``out``."""
    out: Optional[str] = None
    count: int = DEFAULT_COUNT
    label: Optional[int] = None
    synsets: Optional[str] = None
    tile: int = DEFAULT_TILE
    columns: int = 0
    backend: Optional[str] = None
    overwrite: bool = False


def write_sheet(db_path: str, options: SheetOptions = SheetOptions(),
                log: Callable[[str], None] = print) -> str:
    """Write the contact sheet of the Datum database ``db_path`` (or a finished webdataset /
    tfrecord output: ``readers.sharddb.open_db``; read-only) as a PNG and
    return its path; a datum that cannot be decoded is logged as 'note: ...' (its tile stays
    empty). Raises ImagenetDbError for a count below 1, a bad or empty database, a label no
    datum has, or an existing ``out`` without ``overwrite``."""
    if options.count < 1:
        raise ImagenetDbError("--count must be at least 1")
    out = options.out or os.path.basename(os.path.abspath(db_path)) + ".sheet.png"
    if os.path.exists(out) and not options.overwrite:
        raise ImagenetDbError(f"{out} already exists; pass --overwrite to replace it")
    label = options.label
    with open_db(db_path, options.backend) as db:  # a Datum DB, or WebDataset/TFRecord shards
        class_file = options.synsets or find_class_file(db_path)
        names = read_class_names(class_file) if class_file else []
        if len(db) == 0:
            raise ImagenetDbError(f"{db_path}: the database is empty")
        positions = choose_positions(db, options.count, label)
        which = f"label {label}" + (f" ({names[label]})" if 0 <= label < len(names) else "") \
            if label is not None else "spread over the key order"
        title = f"{db_path}\n{len(positions)} of {len(db):,} datums, {which}"
        sheet, tiles = contact_sheet(db, positions, names, options.tile, options.columns, title)
    write_file_atomic(out, encode_png(sheet))
    for t in tiles:
        if t.problem:
            log(f"note: {t.problem}")
    return out
