"""``imagenet-db verify DB``: check a Caffe Datum database end to end.

Checks, in one pass over the database (datums are parsed and decoded on all cores):

* the completion record (``imagenet_db.json``): present and complete, its backend and entry
  count equal to what is found, entries + skipped = records of the list; a directory that
  holds an unfinished imagenet-db build is a problem. A database without any record (made
  by Caffe's convert_imageset, say) is checked all the same, with a note that its
  completeness cannot be known (a problem with ``require_manifest``);
* keys: Caffe's ``%08d_relpath`` form, record numbers strictly increasing (byte order =
  list order), no number used twice, all below the record count of the manifest;
* values: each parses as a Datum; raw datums hold channels*height*width bytes (or floats);
  encoded ones decode with OpenCV and match the channels/height/width stored beside them;
* one channels/height/width for all datums, unless the manifest says sizes vary (images kept
  their size, or a resize mode that keeps the aspect ratio: shorter_side, min_max_dim), or
  ``allow_mixed_sizes``: Caffe's data layer without crop_size and a whole-image mean need one
  size. When sizes vary, the range is reported, and a database whose mean was taken over a
  centre crop (``--mean_crop``) must not hold an image smaller than that crop (Caffe's
  crop_size would stop on it);
* labels: in 0..len(synsets)-1 when a synsets.txt is given, else at least >= 0;
* the mean stored by imagenet-db beside the datums has their shape (or, with a mean crop,
  channels x crop x crop);
* what the completion record can prove: the keys and labels equal those of the list the
  database was built from (``entries_sha256``: SHA-256 of 'key TAB label' of each stored
  record), and every stored byte is what was written (``entries_crc32_sum``: the sum of the
  CRC-32 of each key + value, see ``observers.checksum``);
* everything a reader would trip on: LevelDB is read with ``paranoid_checks`` and every block
  checksum verified (a damaged log is reported, not "recovered" by dropping data); an LMDB
  shorter than its meta page says, or with damaged pages, is reported. A damaged LMDB can
  kill its reader outright (SIGBUS when an entry points outside the file, as it would kill
  Caffe), so LMDBs are read in a child process and such a crash becomes a problem line too.
"""
import functools
import hashlib
import multiprocessing
import os
import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import lmdb
import numpy as np
from tqdm import tqdm

from imagenet_db.engine import buildstate as B
from imagenet_db.crc import CHECKSUM_FIELD, add_checksum
from imagenet_db.outputs.datum import datum_to_chw, entry_checksum
from imagenet_db.errors import DamagedDatabaseError, DatabaseError, ImagenetDbError
from imagenet_db.engine.executor import ordered_map
from imagenet_db.sources.labels import read_synsets
from imagenet_db.protos import Datum
from imagenet_db.outputs import OUTPUTS
from imagenet_db.outputs.batchfiles import LOG_NAME as BATCHES_LOG, STATE_NAME as BATCHES_STATE
from imagenet_db.readers import detect_datum_backend
from imagenet_db.readers.datumreader import DatumDB
from imagenet_db.readers.shardreaders import output_verify
from imagenet_db.outputs.folder import LOG_NAME as FILES_LOG
from imagenet_db.outputs.wire import datum_fields

KEY_PATTERN = re.compile(rb"^([0-9]{8,})_(.+)$", re.S)
MAX_LISTED = 20  # problems listed one by one; the rest are counted


@dataclass
class VerifyReport:
    """Result of verify_db. problems make the check fail; notes are information.
    shapes counts datums per (channels, height, width); labels counts datums per label."""
    path: str
    backend: str = "?"
    manifest: Optional[dict] = None
    entries: int = 0
    encoded: int = 0
    shapes: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    problems: List[str] = field(default_factory=list)
    problem_count: int = 0
    notes: List[str] = field(default_factory=list)
    unit: str = "datums"  # what entries counts: 'datums', or 'images' for the other formats

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        """Record a problem (a line of the report that makes verify fail)."""
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(text)

    def describe(self) -> str:
        """Multi-line human summary: counts, shapes, labels, notes, problems, verdict."""
        lines = [f"{self.path}: {self.backend}, {self.entries} datums "
                 f"({self.encoded} encoded, {self.entries - self.encoded} raw)"
                 if self.unit == "datums" else f"{self.path}: {self.backend}, {self.entries} "
                 f"{self.unit}"]
        if self.manifest:
            lines.append(f"  completion record: complete, {self.manifest.get('entries')} "
                         f"entries, {self.manifest.get('skipped', 0)} images skipped of "
                         f"{self.manifest.get('records', '?')}")
        shapes = ", ".join(f"{c}x{h}x{w} ({n})" for (c, h, w), n in self.shapes.most_common(5))
        if shapes:
            more = f" and {len(self.shapes) - 5} more" if len(self.shapes) > 5 else ""
            lines.append(f"  channels x height x width: {shapes}{more}")
        if self.labels:
            lines.append(f"  labels: {len(self.labels)} distinct, {min(self.labels)}.."
                         f"{max(self.labels)}")
        lines += [f"  note: {text}" for text in self.notes]
        lines += [f"  problem: {text}" for text in self.problems]
        if self.problem_count > len(self.problems):
            lines.append(f"  ... and {self.problem_count - len(self.problems)} more problems")
        lines.append("OK" if self.ok else f"FAILED: {self.problem_count} problem(s)")
        return "\n".join(lines)


def _check_entry(db: DatumDB, item: Tuple[bytes, bytes]):
    """_check_datum, plus the entry's CRC-32 (key + value) for the content checksum:
    (key, label, shape, encoded, problem, checksum)."""
    return (*_check_datum(db, item), entry_checksum(*item))


def _check_datum(db: DatumDB, item: Tuple[bytes, bytes]):
    """Parse (and, if encoded, decode) one entry. Returns (key, label, shape, encoded, problem).

    Raw datums are checked from their wire bytes (``outputs.wire.datum_fields``: every field
    walked, the pixel count checked, no copy); values it leaves aside (float_data, unknown
    fields, malformed bytes) are parsed by protobuf."""
    key, value = item
    name = key.decode("utf-8", "replace")
    fields = datum_fields(value)
    if fields is None:
        datum = Datum()
        try:
            datum.ParseFromString(value)
        except Exception:
            return key, None, None, False, f"{name}: value is not a Caffe Datum"
        try:
            pixels = datum_to_chw(datum, name)
        except ImagenetDbError as exc:
            return key, datum.label, None, datum.encoded, str(exc)
        fields, shape = datum, tuple(pixels.shape)
    elif fields.encoded:
        try:
            image, _ = db.decode(key, value)  # (H, W, C)
        except ImagenetDbError:
            return key, fields.label, None, True, (f"datum {name}: encoded image data cannot "
                                                   f"be decoded")
        shape = (image.shape[2], image.shape[0], image.shape[1])
    else:
        shape = (fields.channels, fields.height, fields.width)
        if fields.data_length != shape[0] * shape[1] * shape[2]:
            return key, fields.label, None, False, (
                f"datum {name}: {fields.data_length} values but channels*height*width = "
                f"{shape[0]}*{shape[1]}*{shape[2]} = {shape[0] * shape[1] * shape[2]}")
    label, encoded = fields.label, bool(fields.encoded)
    stored = (fields.channels, fields.height, fields.width)
    if encoded and any(stored) and stored != shape:
        return key, label, shape, True, (f"{name}: decodes to {shape} but the datum says "
                                         f"channels/height/width {stored}")
    if not encoded and 0 in shape:
        return key, label, shape, False, f"{name}: empty image {shape}"
    return key, label, shape, encoded, None


def _check_record(report: VerifyReport, path: str, require_manifest: bool) -> dict:
    """The completion record's presence and backend; returns the record ({} when none)."""
    report.manifest = B.read_manifest(path)
    if report.manifest is None:
        if os.path.exists(os.path.join(path, B.BUILD_RECORD_NAME)):
            report.problem(f"unfinished imagenet-db build: no completion record "
                           f"({B.MANIFEST_NAME}); finish it with --resume")
        elif require_manifest:
            report.problem(f"no completion record ({B.MANIFEST_NAME})")
        else:
            report.notes.append(f"no completion record ({B.MANIFEST_NAME}): not made by "
                                f"imagenet-db (e.g. by Caffe's convert_imageset); its entries "
                                f"are checked but whether it is complete cannot be known")
    if os.path.lexists(path + B.PARTIAL_SUFFIX):
        report.notes.append(f"{path}{B.PARTIAL_SUFFIX} holds a newer, unfinished build")
    manifest = report.manifest or {}
    if manifest and manifest.get("backend") not in (None, report.backend):
        report.problem(f"completion record says backend {manifest.get('backend')}, the files "
                       f"are {report.backend}")

    return manifest


def _scan(report: VerifyReport, db: DatumDB, entries, first, manifest: dict,
          num_labels: Optional[int],
          workers: Optional[int], progress: Optional[bool]) -> None:
    """Check every entry (parsed and decoded on ``workers`` threads) into ``report``."""
    path = report.path
    bar = tqdm(unit="datum", disable=None if progress is None else not progress,
               file=sys.stderr, desc=os.path.basename(path), dynamic_ncols=True)

    def all_entries():
        if first is not None:
            yield first
            yield from entries

    last_index, seen_bad_key = -1, False
    fingerprint, checksum_sum = hashlib.sha256(), 0
    try:
        check = functools.partial(_check_entry, db)
        for key, label, shape, encoded, problem, checksum in ordered_map(check, all_entries(),
                                                                         workers):
            bar.update(1)
            key = bytes(key)
            checksum_sum = add_checksum(checksum_sum, checksum)
            fingerprint.update(b"%s\t%d\n" % (key, -1 if label is None else label))
            report.entries += 1
            report.encoded += bool(encoded)
            name = key.decode("utf-8", "replace")
            match = KEY_PATTERN.match(key)
            if match is None:
                if not seen_bad_key:
                    report.problem(f"key {name[:80]!r} is not of Caffe's form '%08d_relpath'")
                seen_bad_key = True
            else:
                index = int(match.group(1))
                if index <= last_index:
                    report.problem(f"{name}: record number {index} is not above the previous "
                                   f"key's {last_index} (duplicate or out of order)")
                if manifest.get("records") is not None and index >= manifest["records"]:
                    report.problem(f"{name}: record number {index} is beyond the "
                                   f"{manifest['records']} records of the list")
                last_index = max(last_index, index)
            if problem:
                report.problem(problem)
            if shape is not None:
                report.shapes[shape] += 1
            if label is not None:
                report.labels[label] += 1
                if label < 0 or (num_labels is not None and label >= num_labels):
                    bound = f"0..{num_labels - 1} (synsets.txt)" if num_labels else ">= 0"
                    report.problem(f"{name}: label {label} is outside {bound}")
    except (ImagenetDbError, OSError) as exc:
        report.problem(f"reading stopped: {exc}")
        return
    except lmdb.Error as exc:
        report.problem(f"reading stopped: damaged LMDB: {exc}")
        return
    finally:
        bar.close()
        getattr(entries, "close", lambda: None)()  # a plyvel iterator holds a snapshot
    _check_fingerprints(report, manifest, fingerprint.hexdigest(), checksum_sum)


def _check_fingerprints(report: VerifyReport, manifest: dict, fingerprint: str,
                        checksum_sum: int) -> None:
    """The stored keys/labels and bytes against what the completion record proves."""
    if manifest.get("entries_sha256") not in (None, fingerprint):
        report.problem("the stored keys or labels differ from the list the database was built "
                       "from (entries_sha256 of the completion record): a key or a label "
                       "was changed")
    recorded = manifest.get(CHECKSUM_FIELD)
    if recorded is not None and recorded != f"{checksum_sum:016x}":
        report.problem("the stored bytes differ from those written at build time (content "
                       f"checksum {CHECKSUM_FIELD} of the completion record): the database "
                       "is damaged")



def _check_totals(report: VerifyReport, path: str, manifest: dict,
                  allow_mixed_sizes: bool) -> None:
    """Counts against the completion record, the stored mean, one size."""
    if manifest:
        if manifest.get("entries") != report.entries:
            where = "the database holds" if report.unit == "datums" else "found"
            report.problem(f"completion record says {manifest.get('entries')} entries, "
                           f"{where} {report.entries}")
        if None not in (manifest.get("records"), manifest.get("skipped")) and \
                manifest["entries"] + manifest["skipped"] != manifest["records"]:
            report.problem(f"completion record: {manifest['entries']} entries + "
                           f"{manifest['skipped']} skipped != {manifest['records']} records")
        mean_file = manifest.get("mean_file")
        if mean_file and report.shapes:
            try:
                mean_shape = tuple(np.load(os.path.join(path, mean_file), allow_pickle=False).shape)
            except (OSError, ValueError) as exc:
                report.problem(f"stored mean {mean_file} cannot be read: {exc}")
            else:
                crop = manifest.get("mean_crop")
                expected = ({(c, crop, crop) for c, _, _ in report.shapes} if crop
                            else set(report.shapes))
                if mean_shape not in expected:
                    report.problem(f"stored mean {mean_file} has shape {mean_shape}")
    if report.entries == 0:
        report.problem("the database is empty" if report.unit == "datums" else
                       f"{path}: no {report.unit}")
    crop = manifest.get("mean_crop") if manifest else None
    if crop and report.shapes:
        small = [(h, w) for _, h, w in report.shapes if h < crop or w < crop]
        if small:
            h, w = min(small)
            report.problem(f"{sum(n for (_, hh, ww), n in report.shapes.items() if hh < crop or ww < crop)} "
                           f"datum(s) smaller than the {crop}x{crop} mean crop (e.g. {w}x{h}): "
                           f"Caffe's crop_size {crop} would stop on them")
    if len(report.shapes) > 1 and report.unit == "datums":
        heights = [h for _, h, _ in report.shapes]
        widths = [w for _, _, w in report.shapes]
        text = (f"datums have {len(report.shapes)} different channels/height/width (width "
                f"{min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)}); Caffe's "
                f"data layer needs a crop_size and the mean a centre crop (--crop_size)")
        if (manifest and _sizes_may_vary(manifest.get("options", {}))) or allow_mixed_sizes:
            report.notes.append(text)
        else:
            report.problem(text)


def _sizes_may_vary(options: dict) -> bool:
    """True when a build with these stored TransformOptions stores images of different sizes:
    no resize, or a resize mode that keeps the aspect ratio (not a fixed-size one)."""
    from imagenet_db.imaging.resize import FIXED_SIZE_MODES

    fixed = options.get("resize_mode", "squash") in FIXED_SIZE_MODES
    return not (fixed and options.get("resize_height") and options.get("resize_width"))


def verify_db(path: str, backend: Optional[str] = None, synsets_path: Optional[str] = None,
              workers: Optional[int] = None, progress: Optional[bool] = None,
              require_manifest: bool = False, allow_mixed_sizes: bool = False,
              isolate: bool = True) -> VerifyReport:
    """Check the database at ``path`` (see the module docstring) and return a VerifyReport.

    backend: 'lmdb', 'leveldb' or None to detect. synsets_path: synsets.txt (or
    synset_words.txt) whose line count bounds the labels. workers: threads for parsing and
    decoding (None = all cores). isolate: read an LMDB in a child process, so that a damaged
    one that kills its reader (SIGBUS) is reported as a problem instead of ending this
    process. Raises DatabaseError when ``path`` cannot be opened as a database of that
    backend (not a database, wrong --backend), ImagenetDbError for an unreadable synsets file.
    A damaged database is a problem of the report, not an exception.
    """
    path = os.path.normpath(path)
    found = OUTPUTS.get(backend or detect_datum_backend(path) or "")
    if isolate and found is not None and found.read_in_child:
        return _verify_in_child(path, backend, synsets_path, workers, progress,
                                require_manifest, allow_mixed_sizes)
    report = VerifyReport(path=path)
    if not os.path.isdir(path):
        raise DatabaseError(f"{path}: no such database directory")
    num_labels = None
    if synsets_path:
        try:
            num_labels = len(read_synsets(synsets_path))
        except OSError as exc:
            raise ImagenetDbError(f"{synsets_path}: cannot read: {exc.strerror}") from None
    report.backend = backend or detect_datum_backend(path) or "?"
    manifest = _check_record(report, path, require_manifest)
    try:
        db = DatumDB(path, backend)  # DatabaseError now for a path that is not such a database
    except DamagedDatabaseError as exc:
        report.problem(str(exc))
        return report
    try:
        entries = db.items()
        first = next(entries, None)  # the first read: a damaged database may fail here
        _scan(report, db, entries, first, manifest, num_labels, workers, progress)
    except (DamagedDatabaseError, lmdb.Error) as exc:
        report.problem(f"{path}: damaged: {exc}" if isinstance(exc, lmdb.Error) else str(exc))
        return report
    finally:
        db.close()
    _check_totals(report, path, manifest, allow_mixed_sizes)
    return report


def other_formats() -> tuple:
    """The outputs checked by their own ``Output.verify`` (not Caffe Datum databases)."""
    return tuple(name for name, output in OUTPUTS.items() if not output.datum_database)


def accepted() -> str:
    """What verify accepts, from each output's ``verify_accepts``: 'an LMDB or LevelDB (Caffe
    Datum database), or the output of create_imagenet --format cuda-convnet2 (...), ...'."""
    databases = " or ".join(output.verify_accepts for output in OUTPUTS.values()
                            if output.datum_database)
    others = [f"{name} {OUTPUTS[name].verify_accepts}" for name in other_formats()]
    listed = ", ".join(others[:-1]) + " or " + others[-1] if len(others) > 1 else "".join(others)
    return (f"an {databases} (Caffe Datum database), or the output of create_imagenet "
            f"--format {listed}")

BUILD_FILES = (B.BUILD_RECORD_NAME, BATCHES_LOG, BATCHES_STATE, FILES_LOG)


def _unfinished(path: str) -> Optional[str]:
    """Why ``path`` is an unfinished imagenet-db build (a ``.partial`` folder, or build files
    without a completion record), or None."""
    if path.endswith(B.PARTIAL_SUFFIX) and os.path.isdir(path):
        return (f"{path}: unfinished imagenet-db build (a {B.PARTIAL_SUFFIX} folder); "
                f"{B.BUILT_RESUME_HINT}")
    if not os.path.isdir(path) and os.path.isdir(path + B.PARTIAL_SUFFIX):
        return (f"{path}: not built yet: {path}{B.PARTIAL_SUFFIX} holds an unfinished "
                f"imagenet-db build; {B.BUILT_RESUME_HINT}")
    found = [name for name in BUILD_FILES if os.path.isfile(os.path.join(path, name))]
    if found and B.read_manifest(path) is None:
        return (f"{path}: unfinished imagenet-db build ({', '.join(found)}, no completion "
                f"record {B.MANIFEST_NAME}); {B.BUILT_RESUME_HINT}")
    return None


def _own_format(path: str) -> Optional[str]:
    """The format its completion record names (``format``, else ``backend``) when that format
    is checked by its own ``Output.verify`` although its files look like a Datum database
    (SSD's AnnotatedDatum LMDB); else None."""
    manifest = B.read_manifest(path) if os.path.isdir(path) else None
    name = (manifest or {}).get("format") or (manifest or {}).get("backend")
    return name if name in other_formats() else None


def verify_output(path: str, backend: Optional[str] = None, synsets_path: Optional[str] = None,
                  workers: Optional[int] = None, progress: Optional[bool] = None,
                  require_manifest: bool = False,
                  allow_mixed_sizes: bool = False) -> VerifyReport:
    """``imagenet-db verify PATH``: check any output imagenet-db makes, chosen by detection.

    A Caffe Datum database (LMDB, LevelDB, or ``backend`` given) goes to ``verify_db`` (same
    arguments). An unfinished build (``PATH.partial``, or build files such as
    ``imagenet_db.batches.log`` without a completion record) is one problem line saying so.
    A finished cuda-convnet2, theano-alexnet or folder output (named by the ``format`` of its
    completion record, else by ``Output.detect``) is checked by its format's
    ``Output.verify`` (each problem one line naming the file), then its counts against the
    completion record (entries, entries + skipped = records). Raises DatabaseError, one line
    saying what verify accepts, when ``path`` is none of these.
    """
    path = os.path.normpath(path)
    own = _own_format(path)
    if backend or (own is None and detect_datum_backend(path)):
        return verify_db(path, backend, synsets_path, workers, progress,
                         require_manifest=require_manifest, allow_mixed_sizes=allow_mixed_sizes)
    unfinished = _unfinished(path)
    if not unfinished and not os.path.exists(path):
        raise DatabaseError(f"{path}: no such file or directory")
    if unfinished:
        report = VerifyReport(path=path, backend="unfinished build", unit="images")
        report.problem(unfinished)
        return report
    manifest = B.read_manifest(path) if os.path.isdir(path) else None
    name = own or (manifest or {}).get("format")
    if name not in other_formats():
        name = next((n for n in other_formats() if OUTPUTS[n].detect(path)), None)
    if name is None:
        raise DatabaseError(f"{path}: not an output verify knows; it accepts {accepted()}")
    report = VerifyReport(path=path, backend=name, manifest=manifest, unit="images")
    if manifest is None:
        report.problem(f"{path}: no completion record ({B.MANIFEST_NAME})")
        return report
    output_verify(OUTPUTS[name])(path, manifest, report)  # Output.verify, or the shards'
    _check_totals(report, path, manifest, allow_mixed_sizes)
    return report


def _verify_child(connection, args) -> None:
    """Run verify_db in this (child) process and send ('report', report) or ('error', exc)."""
    try:
        outcome = ("report", verify_db(*args, isolate=False))
    except ImagenetDbError as exc:
        outcome = ("error", exc)
    connection.send(outcome)
    connection.close()


def _verify_in_child(path: str, *args) -> VerifyReport:
    """verify_db in a child process; a child killed by a signal becomes a problem line."""
    try:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["imagenet_db.verify"])
    except ValueError:  # no forkserver on this platform
        context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_verify_child, args=(sender, (path, *args)),
                            name="imagenet-db-verify", daemon=True)
    child.start()
    sender.close()
    try:
        try:
            kind, value = receiver.recv()
        except EOFError:  # the child died without an answer
            kind, value = "died", None
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
        receiver.close()
    if kind == "error":
        raise value
    if kind == "report":
        return value
    report = VerifyReport(path=path, backend="lmdb")
    report.manifest = B.read_manifest(path)
    code = child.exitcode or 0
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    report.problem(f"reading the database killed the reader ({how}): data.mdb is damaged (a "
                   f"page or an entry points outside the file); Caffe would crash on it too")
    return report
