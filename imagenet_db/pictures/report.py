"""The HTML report of an OUTDIR or of one database (``imagenet-db report``).

One self-contained page (no file or network access needed: CSS inline, pictures embedded
as ``data:`` URIs) describing every Datum database found (OUTDIR: each LMDB/LevelDB folder in
it; or the one DB given), each in six sections:

* overview: backend, datums, encoded/raw, image sizes (channels x height x width), bytes per
  datum (mean, min, max), files on disk, first and last key;
* classes: a bar chart of datums per label (matplotlib, Agg backend), the 10 smallest and
  largest classes with their names, the labels of synset_words.txt that have no datum;
* mean image: the stored mean (OUTDIR/imagenet_mean.binaryproto for the train database,
  else the database's own ``imagenet_db.mean.npy``), else computed from the database
  (``compute_db_mean``), shown as a picture with its per-channel mean_value (B, G, R);
* samples: a contact sheet of ``count`` datums spread over the database (``pictures.sheet``);
* skipped images: ``DB.skipped.tsv`` (reasons counted, the first 50 listed);
* completion record: the settings and counts of ``DB/imagenet_db.json`` (a Caffe-made
  database has none; that is said).

Sizes, labels and bytes come from one pass over the datums' wire bytes (nothing decoded but
the samples; for raw LMDB datums only the pages around each datum's pixels are read). The
page carries ``<meta name="generator" content="imagenet-db report">``: create_imagenet
replaces a report of its own without --overwrite, never another file.
"""
import base64
import datetime
import html
import io
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db import __version__
from imagenet_db.engine import buildstate as B
from imagenet_db.engine.files import write_file_atomic
from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS
from imagenet_db.outputs.datum import parse_datum
from imagenet_db.readers import detect_datum_backend
from imagenet_db.readers.datumreader import DatumDB
from imagenet_db.outputs.meanfile import channel_means, read_mean
from imagenet_db.outputs.wire import datum_fields
from imagenet_db.pictures.sheet import (DEFAULT_COUNT, choose_positions, contact_sheet,
                                        encode_png, find_class_file, read_class_names)

REPORT_NAME = "report.html"
GENERATOR = "imagenet-db report"
MEAN_FILE = "imagenet_mean.binaryproto"
SECTIONS = ("overview", "classes", "mean", "samples", "skipped", "settings")
LISTED_SKIPS = 50
SHEET_TILE = 112
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:22px}
h2{font-size:19px;border-bottom:2px solid #3b6ea5;padding-bottom:4px;margin-top:36px}
h3{font-size:16px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:13px;vertical-align:top}th{background:#f2f4f7}
td.n{text-align:right;font-variant-numeric:tabular-nums}
img{display:block;margin:6px 0;max-width:100%}.note{color:#666;font-size:13px}
.pair{display:flex;gap:36px;flex-wrap:wrap}
"""


@dataclass
class DbStats:
    """What one pass over a database's datums finds (``scan``)."""
    entries: int = 0
    encoded: int = 0
    float_datums: int = 0
    shapes: Counter = field(default_factory=Counter)      # (C, H, W) -> datums; encoded
    unknown_shape: int = 0                                 # encoded without a stored shape
    labels: Counter = field(default_factory=Counter)
    value_bytes: int = 0
    min_bytes: int = 0
    max_bytes: int = 0
    annotated: int = 0   # AnnotatedDatums (SSD's, --format ssd): their datum labels are -1,
    with_boxes: int = 0  # not counted in ``labels``
    boxes: int = 0


def _count_boxes(stats: DbStats, boxes: np.ndarray, datum):
    """Count an AnnotatedDatum's boxes into ``stats``; returns its Datum's bytes."""
    stats.annotated += 1
    stats.with_boxes += len(boxes) > 0
    stats.boxes += len(boxes)
    return datum


def scan(db: DatumDB) -> DbStats:
    """Count datums, encoded ones, sizes (channels, height, width as stored), labels and value
    bytes of ``db`` in one pass over the wire bytes (protobuf only for float datums)."""
    stats = DbStats()
    sizes = []
    for key, value in db.items(buffers=True):
        sizes.append(len(value))
        annotated = db.annotated(key, value)
        if annotated is not None:
            value = _count_boxes(stats, annotated[1], annotated[0])
        fields = datum_fields(value)
        if fields is None:
            datum = parse_datum(bytes(value), bytes(key[:60]).decode("utf-8", "replace"),
                                db.path)
            stats.float_datums += 1
            shape, label, encoded = (datum.channels, datum.height, datum.width), datum.label, \
                datum.encoded
        else:
            shape, label, encoded = (fields.channels, fields.height, fields.width), \
                fields.label, fields.encoded
        stats.entries += 1
        stats.encoded += bool(encoded)
        if annotated is None:
            stats.labels[label] += 1
        if encoded and not any(shape):
            stats.unknown_shape += 1  # Caffe leaves channels/height/width out of encoded datums
        else:
            stats.shapes[shape] += 1
    if sizes:
        array = np.asarray(sizes, dtype=np.int64)
        stats.value_bytes, stats.min_bytes, stats.max_bytes = \
            int(array.sum()), int(array.min()), int(array.max())
    return stats


def find_databases(target: str) -> Tuple[str, List[str]]:
    """(folder with the aux files, database paths) for an OUTDIR (every LMDB/LevelDB directly
    in it, sorted) or a database path. Raises ImagenetDbError when there is none."""
    target = os.path.normpath(target)
    if not os.path.isdir(target):
        raise ImagenetDbError(f"{target}: no such directory")
    if detect_datum_backend(target):
        return os.path.dirname(os.path.abspath(target)), [target]
    found = [os.path.join(target, name) for name in sorted(os.listdir(target))
             if os.path.isdir(os.path.join(target, name))
             and detect_datum_backend(os.path.join(target, name))]
    if not found:
        raise ImagenetDbError(f"{target}: neither a database (LMDB/LevelDB) nor a folder holding "
                              f"one")
    return target, found


def default_report_path(target: str) -> str:
    """OUTDIR/report.html for a folder of databases; <DB name>.report.html in the current
    directory for a database (nothing is written next to someone else's database)."""
    target = os.path.normpath(target)
    if detect_datum_backend(target):
        return os.path.basename(os.path.abspath(target)) + ".report.html"
    return os.path.join(target, REPORT_NAME)


def is_report(path: str) -> bool:
    """True when ``path`` is a page written by this module (its generator tag)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


# ---------------------------------------------------------------- HTML pieces
def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(rows, header: Sequence[str] = (), numeric: Sequence[int] = ()) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = "".join(f"<td class='n'>{_e(v)}</td>" if i in numeric else f"<td>{_e(v)}</td>"
                        for i, v in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _anchor(db_path: str) -> str:
    """The id of a database's heading: 'db-' + its folder name, other characters as '-'."""
    name = os.path.basename(os.path.normpath(db_path))
    return "db-" + "".join(ch if ch.isalnum() else "-" for ch in name)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(alt: str, mime: str, data: bytes, width: Optional[int] = None) -> str:
    size = f" width='{width}'" if width else ""
    return f"<img alt='{_e(alt)}'{size} src='{_data_uri(mime, data)}'>"


def histogram_png(labels: Counter, classes: int) -> bytes:
    """PNG of a bar chart of datums per label 0..max(classes, largest label + 1) - 1."""
    from matplotlib.figure import Figure  # Agg canvas; imported here (slow to import)

    size = max([classes] + [label + 1 for label in labels if label >= 0] or [1])
    counts = np.zeros(size, dtype=np.int64)
    for label, count in labels.items():
        if 0 <= label < size:
            counts[label] = count
    figure = Figure(figsize=(10, 2.8), dpi=100)
    figure.subplots_adjust(left=0.07, right=0.99, bottom=0.17, top=0.89)
    axes = figure.add_subplot()
    if size <= 100:
        axes.bar(np.arange(size), counts, width=0.8, color="#3b6ea5")
    else:  # one filled step outline (a single artist: 1,000 bars take seconds to draw)
        axes.stairs(counts, np.arange(size + 1) - 0.5, fill=True, color="#3b6ea5")
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(0, max(1, int(counts.max())) * 1.05)
    axes.set_xlabel("label")
    axes.set_ylabel("datums")
    axes.set_title(f"datums per class ({size} labels)")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _mean_for(db_path: str, folder: str, stats: DbStats, log,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[Optional[np.ndarray], str]:
    """The mean image to show and where it comes from."""
    candidates = []
    if "train" in os.path.basename(db_path):
        candidates.append(os.path.join(folder, MEAN_FILE))
    manifest = B.read_manifest(db_path) or {}
    if manifest.get("mean_file"):
        candidates.append(os.path.join(db_path, manifest["mean_file"]))
    shapes = set(stats.shapes)
    for path in candidates:
        if os.path.isfile(path):
            try:
                mean = read_mean(path)
            except (ImagenetDbError, OSError, ValueError):
                continue
            if not shapes or mean.shape[0] in {c for c, _, _ in shapes}:  # (or a centre crop)
                return mean, f"stored in {path}"
    if len(shapes) > 1 or stats.unknown_shape and shapes:
        return None, "not computed: the datums differ in size"
    from imagenet_db.observers.mean import OversizedDatumError, compute_db_mean
    log(f"report: computing the mean of {db_path} (no mean stored for it)")
    try:
        mean, count = compute_db_mean(db_path, max_pixels=max_pixels)
    except OversizedDatumError as exc:
        return None, f"not computed: {exc}"
    return mean, f"computed from the {count:,} datums (no stored mean)"


def _mean_png(mean: np.ndarray) -> bytes:
    pixels = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    return encode_png(pixels[0] if pixels.shape[0] == 1 else
                      cv2.merge(list(pixels[:3])))


def _skipped_html(db_path: str) -> str:
    path = os.path.normpath(db_path) + ".skipped.tsv"
    manifest = B.read_manifest(db_path)
    if not os.path.isfile(path):
        if manifest is None:
            return ("<p>not recorded (no completion record: the database was not made by "
                    "imagenet-db)</p>")
        return f"<p>none: all {manifest.get('records', '?')} images of the list were stored</p>"
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for line in f:
            relpath, _, reason = line.rstrip("\n").rpartition("\t")
            rows.append((relpath, reason))
    reasons = Counter(reason.split(":")[0].strip() for _, reason in rows)
    return (f"<p>{len(rows):,} {'image' if len(rows) == 1 else 'images'} skipped (listed in "
            f"{_e(path)})</p>"
            + _table(reasons.most_common(), ("reason", "images"), (1,))
            + _table(rows[:LISTED_SKIPS], ("image", "reason"))
            + (f"<p class='note'>... and {len(rows) - LISTED_SKIPS:,} more</p>"
               if len(rows) > LISTED_SKIPS else ""))


def _settings_html(db_path: str) -> str:
    manifest = B.read_manifest(db_path)
    if manifest is None:
        return (f"<p>no completion record ({B.MANIFEST_NAME}): not made by imagenet-db (for "
                f"example by Caffe's convert_imageset), so its settings are not known</p>")
    return _table(sorted(B._flatten(manifest).items()), ("setting", "value"))


def _shapes_text(stats: DbStats, sampled: Counter) -> str:
    parts = [f"{c}x{h}x{w} ({n:,})" for (c, h, w), n in stats.shapes.most_common(5)]
    if len(stats.shapes) > 5:
        parts.append(f"and {len(stats.shapes) - 5} more sizes")
    if stats.unknown_shape:
        seen = ", ".join(f"{c}x{h}x{w} ({n})" for (c, h, w), n in sampled.most_common(5))
        parts.append(f"{stats.unknown_shape:,} encoded datums without a stored size; decoded "
                     f"samples: {seen or 'none'}")
    return ", ".join(parts) or "-"


def _sampled_shapes(tiles) -> Counter:
    """(channels, height, width) counts of the sample tiles that decoded (nothing is decoded
    again: the sheet's ``Tile.shape``)."""
    return Counter(tile.shape for tile in tiles if tile.problem is None)


def _overview_parts(db_path: str, anchor: str, backend: str, stats: DbStats, sampled: Counter,
                    keys: Tuple[str, str]) -> List[str]:
    """The overview section: backend, counts, sizes, bytes per datum, disk, first/last key."""
    disk = sum(os.path.getsize(os.path.join(db_path, f)) for f in os.listdir(db_path)
               if os.path.isfile(os.path.join(db_path, f)))
    mean_bytes = (f"{stats.value_bytes / stats.entries:,.0f}, {stats.min_bytes:,}, "
                  f"{stats.max_bytes:,}") if stats.entries else "-"
    return [f"<section id='{anchor}-overview'><h3>Overview</h3>",
            _table([("path", os.path.abspath(db_path)), ("backend", backend),
                    ("datums", f"{stats.entries:,}"),
                    ("encoded / raw", f"{stats.encoded:,} / {stats.entries - stats.encoded:,}"
                     + (f" ({stats.float_datums:,} float)" if stats.float_datums else "")),
                    ("image sizes (channels x height x width)", _shapes_text(stats, sampled)),
                    ("bytes per datum (mean, min, max)", mean_bytes),
                    ("files on disk", f"{disk / 1e6:,.1f} MB"),
                    *([("AnnotatedDatums: images with boxes, boxes",
                        f"{stats.with_boxes:,} of {stats.annotated:,}, {stats.boxes:,}")]
                      if stats.annotated else []),
                    ("first key", keys[0]), ("last key", keys[1])]),
            "</section>"]


def _classes_parts(anchor: str, stats: DbStats, class_names: Sequence[str]) -> List[str]:
    """The classes section: labels used, the histogram, the 10 smallest and largest classes,
    the classes of ``class_names`` without datums."""
    ranked = sorted(stats.labels.items(), key=lambda item: (item[1], item[0]))
    label_name = (lambda label: class_names[label] if 0 <= label < len(class_names) else "")
    missing = [label for label in range(len(class_names)) if label not in stats.labels]
    parts = [f"<section id='{anchor}-classes'><h3>Classes</h3>",
             f"<p>{len(stats.labels):,} labels used"
             + (f" of the {len(class_names):,} classes of synset_words.txt" if class_names else "")
             + "</p>"]
    if stats.labels:
        parts.append(_img("datums per class", "image/png",
                          histogram_png(stats.labels, len(class_names))))
        parts.append("<div class='pair'><div><b>smallest classes</b>"
                     + _table([(lb, label_name(lb), n) for lb, n in ranked[:10]],
                              ("label", "class", "datums"), (0, 2))
                     + "</div><div><b>largest classes</b>"
                     + _table([(lb, label_name(lb), n) for lb, n in ranked[::-1][:10]],
                              ("label", "class", "datums"), (0, 2)) + "</div></div>")
    if missing:
        shown = ", ".join(f"{lb} {label_name(lb)}" for lb in missing[:20])
        parts.append(f"<p>{len(missing):,} classes without datums: {_e(shown)}"
                     f"{' ...' if len(missing) > 20 else ''}</p>")
    parts.append("</section>")
    return parts


def _mean_parts(db_path: str, folder: str, anchor: str, stats: DbStats, log,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> List[str]:
    """The mean image section: the picture of the mean (``_mean_for``) and its mean_value."""
    parts = [f"<section id='{anchor}-mean'><h3>Mean image</h3>"]
    mean, source = _mean_for(db_path, folder, stats, log, max_pixels) if stats.entries \
        else (None, "empty")
    if mean is None:
        parts.append(f"<p>{_e(source)}</p>")
    else:
        values = channel_means(mean)
        names = ["B", "G", "R", "A"][:len(values)] if len(values) > 1 else ["gray"]
        parts += [f"<p class='note'>{_e(source)}; (channels, height, width) = "
                  f"{_e(tuple(mean.shape))}</p>",
                  _img("mean image", "image/png", _mean_png(mean)),
                  _table([[f"{v:.4f}" for v in values]], names, range(len(values))),
                  "<p class='note'>per-channel mean_value, in the order of transform_param's "
                  "mean_value entries</p>"]
    parts.append("</section>")
    return parts


def db_section(db_path: str, folder: str, class_names: Sequence[str], count: int, log,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The HTML of one database's six sections (encoded datums over ``max_pixels`` are not
    decoded: an empty tile, or an error from the mean)."""
    started = time.monotonic()
    name = os.path.basename(os.path.normpath(db_path))
    anchor = _anchor(db_path)
    with DatumDB(db_path) as db:
        stats = scan(db)
        positions = choose_positions(db, count) if stats.entries else []
        sheet, tiles = contact_sheet(db, positions, class_names, tile=SHEET_TILE,
                                     max_pixels=max_pixels)
        sampled = _sampled_shapes(tiles)
        first_key = db.key(0).decode("utf-8", "replace") if stats.entries else "-"
        last_key = db.key(-1).decode("utf-8", "replace") if stats.entries else "-"
        backend = db.backend
    parts = [f"<h2 id='{anchor}'>{_e(name)}</h2>",
             *_overview_parts(db_path, anchor, backend, stats, sampled, (first_key, last_key)),
             *_classes_parts(anchor, stats, class_names),
             *_mean_parts(db_path, folder, anchor, stats, log, max_pixels)]
    ok, jpeg = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 90])
    parts += [f"<section id='{anchor}-samples'><h3>Samples</h3>",
              f"<p class='note'>{len(positions)} of {stats.entries:,} datums, spread evenly over "
              f"the key order (imagenet-db show {_e(db_path)} draws the same)</p>",
              _img("sample sheet", "image/jpeg", jpeg.tobytes()), "</section>",
              f"<section id='{anchor}-skipped'><h3>Skipped images</h3>",
              _skipped_html(db_path), "</section>",
              f"<section id='{anchor}-settings'><h3>Completion record</h3>",
              _settings_html(db_path), "</section>",
              f"<p class='note'>{time.monotonic() - started:.1f} s to read</p>"]
    return "\n".join(parts)


def render_report(target: str, class_file: Optional[str] = None, count: int = DEFAULT_COUNT,
                  log=lambda text: None, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The HTML page (a str) describing ``target`` (OUTDIR or DB; see the module docstring).
    class_file: synset_words.txt / synsets.txt for class names (default: the one beside the
    databases, if any). max_pixels: encoded datums whose header declares more pixels are not
    decoded (the builds' --max_pixels; 0 = no cap). Raises ImagenetDbError for a target
    without databases or a mean to compute over a datum above the cap, DatabaseError for one
    that cannot be read."""
    folder, databases = find_databases(target)
    class_file = class_file or find_class_file(databases[0])
    class_names = read_class_names(class_file) if class_file else []
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"imagenet-db report: {os.path.abspath(target)}"
    files = []
    for name in ("synsets.txt", "synset_words.txt", "train.txt", "val.txt", MEAN_FILE,
                 "imagenet_mean.npy", "imagenet_mean.png", "train_val.prototxt",
                 "solver.prototxt", "deploy.prototxt"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if name.endswith(".txt"):
                with open(path, "rb") as f:
                    what = f"{sum(1 for _ in f):,} lines"
            else:
                what = f"{os.path.getsize(path):,} bytes"
            files.append((name, what))
    body = [f"<h1>{_e(title)}</h1>",
            f"<p class='note'>made {_e(now)} by imagenet-db {_e(__version__)}; class names: "
            f"{_e(class_file or 'none found')}</p>",
            "<p>" + " &middot; ".join(f"<a href='#{_anchor(d)}'>{_e(os.path.basename(d))}</a>"
                                      for d in databases) + "</p>"]
    if files:
        body.append(_table(files, ("file in " + folder, "size")))
    for db_path in databases:
        body.append(db_section(db_path, folder, class_names, count, log, max_pixels))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
            f'<meta name="generator" content="{GENERATOR}">\n'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(target: str, out: Optional[str] = None, class_file: Optional[str] = None,
                 count: int = DEFAULT_COUNT, overwrite: bool = False,
                 log=lambda text: None, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Write the report of ``target`` to ``out`` (default ``default_report_path``), atomically,
    and return its path. An existing ``out`` is replaced only with ``overwrite`` or when it is
    a report written here before (ImagenetDbError otherwise). max_pixels: see render_report."""
    out = out or default_report_path(target)
    if os.path.exists(out) and not overwrite and not is_report(out):
        raise ImagenetDbError(f"{out} exists and is not an imagenet-db report; pass --overwrite "
                              f"to replace it")
    page = render_report(target, class_file, count, log, max_pixels)
    write_file_atomic(out, page.encode("utf-8"))
    return out
