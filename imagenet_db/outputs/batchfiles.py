"""What the batch-file outputs share (cuda-convnet2 pickles, Theano AlexNet hickle files).

**One directory for every split.** The frameworks read train and val from one folder (and
cuda-convnet2 numbers the validation batches after the training ones), so such an output
gets the records of all splits as one list, split after split (train, shuffled, then val,
sorted), with ``splits=[(name, record count), ...]`` saying where each split starts.

**Units.** Each split's stored images are cut, in order, into units of ``unit_size`` images
(a cuda-convnet2 sub-batch pickle of 1,024, a Theano batch of 256); a split's last unit may
be short. A unit is written as its file(s) at the final name when it is full, and also by
``commit``/``close`` while still open (then rewritten as it grows). Files are written through
a temporary name the frameworks never read (``.NAME.tmp-PID``: a dot name, and not ending in
``.hkl``) and renamed into place after an fsync.

**Truth on disk**, inside the output directory:

``imagenet_db.batches.log``
    one line per stored image, in storage order: ``index TAB label TAB relpath``; appended
    (and fsync'ed) after the unit files holding those images are in place. It is also the map
    from a position in the batches back to the image (kept in the finished output).
``imagenet_db.batches.state.npz``
    replaced atomically after each append: the log's committed length, the running sums a
    format keeps (e.g. the mean of the training images) and whether ``finish()`` has begun.

Everything else follows from the log: which units exist, which one is still open, which record
comes next (the one after the last logged index; images skipped before it stay skipped,
nothing after it is lost or stored twice). When an output is reopened, the log is cut back to
the committed length, unit files the log does not account for (renamed into place before a
crash, ahead of the state) are deleted, and the open unit's images are read back from its
file so that it can be completed. ``finish()`` (after the last record, before the completion
record) writes what only a finished output has (cuda-convnet2's batches.meta; Theano's label
files and mean) and is safe to run twice; one that deletes unit files (Theano's incomplete last
batches) calls ``begin_finish`` first, so that a build killed there is reopened without reading
them back.
"""
import io
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from imagenet_db.engine.files import remove_stale_temporaries, write_file_atomic
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.spec import FormatOption, Stage
from imagenet_db.sources.base import Dataset, Record, Split

LOG_NAME = "imagenet_db.batches.log"
STATE_NAME = "imagenet_db.batches.state.npz"

Entry = Tuple[int, int, str]  # (record index, label, relpath)


@dataclass
class Unit:
    """One unit of a split: split number, unit number within the split (from 0), the entries
    of its images, and ``final`` (no image will join it: it is full or its split has ended)."""
    split: int
    number: int
    entries: List[Entry]
    final: bool


def temporary_path(final: str, folder: Optional[str] = None) -> str:
    """``.NAME.tmp-PID`` for ``final``, in ``folder`` (default: beside it; same file system).
    The pipeline's and this module's stale-temporary cleanup recognise the name."""
    here, name = os.path.split(final)
    return os.path.join(here if folder is None else folder, f".{name}.tmp-{os.getpid()}")


def write_file_via(final: str, data: bytes, tmp_folder: Optional[str] = None) -> None:
    """Write ``data`` to ``final`` through a synced temporary in ``tmp_folder`` (default:
    beside it), renamed into place; the folder of ``final`` is synced."""
    write_file_atomic(final, data, temporary_path(final, tmp_folder))


def sync_file(path: str) -> None:
    """fsync a file another library wrote (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StatsEncoded(Encoded):
    """An Encoded with per-image statistics computed on the worker (format specific)."""
    stats: object = None


class BatchOutput(Output):
    """Base of the batch-file outputs (see the module docstring).

    path: the output directory (created). splits: [(name, record count)] in record order.
    batch_size: the pipeline's txn_size; ignored (units are the commit points: every full unit
    is committed at once, the open one by commit/close).
    read_only: open a finished output to check it (``verify``): nothing is created, cut back
    or deleted, the log is read whole.
    Subclasses set ``unit_size`` and implement unit_paths, existing_unit_files, write_unit,
    read_unit_values, unit_pixels and finish; ``add`` takes the encoded value of one image;
    for ``verify``, check_unit_file and check_side_files.
    """
    unit_size = 1

    def __init__(self, path: str, splits: Sequence[Tuple[str, int]] = (), batch_size: int = 0,
                 read_only: bool = False):
        if not splits:
            raise ValueError(f"{type(self).__name__} needs splits=[(name, record count), ...]")
        self.path = path
        self.splits = [(str(name), int(count)) for name, count in splits]
        self.starts = np.cumsum([0] + [count for _, count in self.splits]).tolist()
        self.read_only = read_only
        if not read_only:
            os.makedirs(path, exist_ok=True)
        self.log_path = os.path.join(path, LOG_NAME)
        self.state_path = os.path.join(path, STATE_NAME)
        self.logged: List[Entry] = []
        self.split_counts = [0] * len(self.splits)  # logged images per split
        self.log_bytes = 0
        self.finishing = False  # finish() has begun (see begin_finish)
        self.sums: Dict[str, np.ndarray] = {}
        self._pending: List[Entry] = []  # images of the open unit not yet logged
        self.values: list = []  # values of the open unit's images (logged and pending)
        self._load()
        if not read_only:
            self._reopen()

    # ------------------------------------------------------------------ layout
    def split_of(self, index: int) -> int:
        """Number of the split that record ``index`` belongs to."""
        for number in range(len(self.splits)):
            if index < self.starts[number + 1]:
                return number
        raise DatabaseError(f"{self.path}: record {index} is beyond the {self.starts[-1]} "
                            f"records of the splits")

    def layout(self, entries: Sequence[Entry], complete: bool = False) -> List[Unit]:
        """The units holding ``entries`` (stored images, in order). A split's last unit is
        final when it is full, when a later split has images, or when ``complete``."""
        by_split: Dict[int, List[Entry]] = {}
        for entry in entries:
            by_split.setdefault(self.split_of(entry[0]), []).append(entry)
        last_split = max(by_split) if by_split else -1
        units = []
        for split, items in sorted(by_split.items()):
            for number, start in enumerate(range(0, len(items), self.unit_size)):
                chunk = items[start:start + self.unit_size]
                final = len(chunk) == self.unit_size or split < last_split or complete
                units.append(Unit(split, number, chunk, final))
        return units

    def split_entries(self, split: int) -> List[Entry]:
        """The logged entries of ``split``, in order."""
        start = sum(self.split_counts[:split])
        return self.logged[start:start + self.split_counts[split]]

    # ------------------------------------------------------------------ state on disk
    def _load(self) -> None:
        try:
            with np.load(self.state_path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                self.sums = {k[4:]: z[k].copy() for k in z.files if k.startswith("sum_")}
        except FileNotFoundError:
            header = {"log_bytes": 0}
        except (OSError, ValueError, KeyError) as exc:
            raise DatabaseError(f"{self.state_path}: unreadable build state ({exc}); pass "
                                f"--overwrite to start again") from None
        self.log_bytes = int(header["log_bytes"])
        self.finishing = bool(header.get("finishing", False))
        if not self.read_only:
            with open(self.log_path, "ab") as f:  # cut what was appended after the last state
                f.truncate(self.log_bytes)
        entries = []
        with open(self.log_path, encoding="utf-8", newline="\n") as f:
            for number, line in enumerate(f, start=1):
                index, label, relpath = line.rstrip("\n").split("\t", 2)
                entries.append((int(index), int(label), relpath))
        self._remember(entries)

    def _remember(self, entries: Sequence[Entry]) -> None:
        self.logged.extend(entries)
        for entry in entries:
            self.split_counts[self.split_of(entry[0])] += 1

    def _save_state(self) -> None:
        buf = io.BytesIO()
        header = {"log_bytes": self.log_bytes, "finishing": self.finishing}
        np.savez(buf, header=np.array(json.dumps(header)),
                 **{f"sum_{k}": v for k, v in self.sums.items()})
        write_file_via(self.state_path, buf.getvalue())

    def _append_log(self, entries: Sequence[Entry]) -> None:
        data = "".join(f"{i}\t{label}\t{relpath}\n" for i, label, relpath in entries)
        raw = data.encode("utf-8")
        with open(self.log_path, "ab") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        self.log_bytes += len(raw)
        self._remember(entries)

    def _reopen(self) -> None:
        """Delete unit files the log does not account for; read back the open unit."""
        remove_stale_temporaries(self.path)
        units = self.layout(self.logged)
        keep = {path for unit in units for path in self.unit_paths(unit)}
        for path in self.existing_unit_files():
            if path not in keep:
                os.remove(path)
        if units and not units[-1].final and not self.finishing:
            self.values = self.read_unit_values(units[-1])

    # ------------------------------------------------------------------ Output interface
    @property
    def pending(self) -> int:
        """Images added since the last commit."""
        return len(self._pending)

    def resume_position(self, records: Sequence) -> int:
        """1 + the index of the last stored image (0 when none); DatabaseError when that
        image is not the record of this list at that index (another list)."""
        if len(records) != self.starts[-1]:
            raise DatabaseError(f"{self.path}: {len(records)} records but the splits hold "
                                f"{self.starts[-1]}")
        if not self.logged:
            return 0
        index, label, relpath = self.logged[-1]
        if index >= len(records) or (records[index].relpath, records[index].label) != \
                (relpath, label):
            raise DatabaseError(f"{self.path}: its last image {relpath!r} (record {index}) is "
                                f"not in the list; the partial output belongs to another list")
        return index + 1

    def entries(self) -> int:
        """Images stored (committed)."""
        return len(self.logged)

    def begin(self, record) -> None:
        """Check the order of ``record`` and, when it starts a new split, finish the last unit
        of the previous split (``add`` calls it first)."""
        last = self._pending[-1][0] if self._pending else \
            (self.logged[-1][0] if self.logged else -1)
        if self.finishing:
            raise DatabaseError(f"{self.path}: record {record.index} after the output was "
                                f"finished; pass --overwrite to start again")
        if record.index <= last:
            raise DatabaseError(f"{self.path}: record {record.index} after {last}: records "
                                f"must come in list order")
        if last >= 0 and self.split_of(record.index) != self.split_of(last):
            self.commit()  # the last unit of the previous split is final now
            self.values = []

    def append(self, record, value) -> None:
        """Add one image's value to the open unit; commit the unit when it is full."""
        self._pending.append((record.index, int(record.label), record.relpath))
        self.values.append(value)
        if len(self.values) == self.unit_size:
            self.commit()
            self.values = []

    def add(self, record, encoded: Encoded) -> None:
        """Store one image (records in list order)."""
        self.begin(record)
        self.append(record, encoded.value)

    def _open_unit(self) -> Optional[Unit]:
        """The unit the pending images belong to (without a pass over the log)."""
        if not self._pending:
            return None
        split = self.split_of(self._pending[0][0])
        logged = self.split_counts[split]
        in_unit = logged % self.unit_size
        entries = (self.logged[len(self.logged) - in_unit:] if in_unit else []) + self._pending
        return Unit(split, logged // self.unit_size, entries, len(entries) == self.unit_size)

    def commit(self) -> None:
        """Write the open unit (every image added so far) and log its new images."""
        unit = self._open_unit()
        if unit is None:
            return
        self.write_unit(unit, self.values)
        self._append_log(self._pending)
        self._pending = []
        self.committed_unit(unit)
        self._save_state()

    def close(self) -> None:
        """Commit (the build may go on later: nothing is finalised here, see finish)."""
        self.commit()

    def abort(self) -> None:
        """Drop the images added since the last commit."""
        if self._pending:
            del self.values[len(self.values) - len(self._pending):]
        self._pending = []
        self.aborted()

    def stored(self, start: int = 0) -> Iterator[Tuple[int, str, np.ndarray]]:
        """Committed images with index >= ``start``: (index, relpath, (C, H, W) pixels)."""
        for unit in self.layout(self.logged):
            if unit.entries[-1][0] < start:
                continue
            for entry, pixels in zip(unit.entries, self.unit_pixels(unit)):
                if entry[0] >= start:
                    yield entry[0], entry[2], pixels

    def begin_finish(self) -> None:
        """Record in the state that finish() has begun, before it deletes unit files: a build
        killed in finish() is then reopened without reading its open unit back (that file may
        be gone; no image joins it after the last record) and finish() runs again."""
        if not self.finishing:
            self.finishing = True
            self._save_state()

    # ------------------------------------------------------------------ verify
    @classmethod
    def verify(cls, path: str, manifest: dict, report) -> None:
        """Check the finished output at ``path`` against its completion record ``manifest``
        (``imagenet-db verify``): the log read whole, every unit file it implies present and
        loading as the framework loads it with the images and labels the log says, no unit
        file the log does not account for, the side files (check_side_files), labels in
        0..synsets-1, and the log's images and labels against ``entries_sha256``. Problems go
        to ``report`` (a ``verify.VerifyReport``), one line each, naming the file."""
        log = os.path.join(path, LOG_NAME)
        try:
            output = cls(path, **manifest.get("output_options", {}), read_only=True)
        except (DatabaseError, OSError, ValueError, TypeError) as exc:
            report.problem(f"{log}: cannot be read ({exc})")
            return
        output.check_files(manifest, report)

    def check_files(self, manifest: dict, report) -> None:
        """The checks of ``verify`` on this (read-only) output."""
        from imagenet_db.engine.buildstate import list_fingerprint
        from imagenet_db.sources.base import Record

        log = os.path.join(self.path, LOG_NAME)
        report.entries = len(self.logged)
        synsets = manifest.get("synsets")
        for _, label, relpath in self.logged:
            report.labels[label] += 1
            if label < 0 or (synsets and label >= synsets):
                report.problem(f"{log}: {relpath}: label {label} is outside 0..{synsets - 1}")
        fingerprint = list_fingerprint([Record(i, r, label, None) for i, label, r in self.logged])
        if manifest.get("entries_sha256") not in (None, fingerprint):
            report.problem(f"{log}: the logged images or labels differ from those the "
                           f"completion record was written with (entries_sha256)")
        expected = set()
        for unit in self.layout(self.logged, complete=True):
            for path in self.unit_paths(unit) if self.unit_kept(unit) else ():
                expected.add(path)
                if not os.path.isfile(path):
                    report.problem(f"{path}: missing (holds {len(unit.entries)} images of "
                                   f"the log)")
                    continue
                problem = self.check_unit_file(unit, path, report)
                if problem:
                    report.problem(f"{path}: {problem}")
        for path in sorted(set(self.existing_unit_files()) - expected):
            report.problem(f"{path}: not part of the output (its images are not in {LOG_NAME})")
        self.check_side_files(manifest, report)

    @classmethod
    def made_files(cls, path: str, manifest: dict) -> Set[str]:
        """The unit files of every unit the log holds (``unit_kept`` ones) and the side files
        (``side_files``), relative to ``path``; what ``--overwrite`` may delete besides the
        log and state. Raises DatabaseError when the log cannot be read."""
        try:
            output = cls(path, **manifest.get("output_options", {}), read_only=True)
        except (DatabaseError, OSError, ValueError, TypeError) as exc:
            raise DatabaseError(f"{os.path.join(path, LOG_NAME)}: cannot be read ({exc})") \
                from None
        made = {os.path.relpath(unit_path, path).replace(os.sep, "/")
                for unit in output.layout(output.logged, complete=True) if output.unit_kept(unit)
                for unit_path in output.unit_paths(unit)}
        return made | set(output.side_files())

    def side_files(self) -> List[str]:
        """The files of a finished output besides its units (e.g. batches.meta), relative to
        its directory, '/'-separated."""
        return []

    def unit_kept(self, unit: Unit) -> bool:
        """True when a finished output keeps ``unit``'s files (all do, by default)."""
        return True

    def check_unit_file(self, unit: Unit, path: str, report) -> Optional[str]:
        """Load the unit file ``path`` as the framework does and compare it with ``unit``'s
        entries; count its images' (C, H, W) in ``report.shapes``. Returns a problem or None."""
        raise NotImplementedError

    def check_side_files(self, manifest: dict, report) -> None:
        """Check the files besides the units (batches.meta, labels/, misc/) into ``report``."""

    # ------------------------------------------------------------------ for subclasses
    def unit_paths(self, unit: Unit) -> List[str]:
        """Final paths of ``unit``'s files."""
        raise NotImplementedError

    def existing_unit_files(self) -> List[str]:
        """Every unit file of this format now in the directory."""
        raise NotImplementedError

    def write_unit(self, unit: Unit, values: list) -> None:
        """Write ``unit``'s files from the values of its images (atomically)."""
        raise NotImplementedError

    def read_unit_values(self, unit: Unit) -> list:
        """The values of ``unit``'s images, read back from its file (the first
        len(unit.entries): the file may hold more, written before a crash)."""
        raise NotImplementedError

    def unit_pixels(self, unit: Unit) -> Iterator[np.ndarray]:
        """(C, H, W) uint8 pixels of ``unit``'s images as the framework reads them."""
        raise NotImplementedError

    def committed_unit(self, unit: Unit) -> None:
        """After ``unit`` was written and logged, before the state is saved (update sums)."""

    def aborted(self) -> None:
        """After pending images were dropped."""

    def finish(self) -> dict:
        """After the last record: write what only a finished output has; returns facts for
        the completion record. Must be safe to run twice."""
        return {}


def split_records(split: Split, order: List[Tuple[str, int]], start: int) -> List[Record]:
    """Records of ``split``'s (relpath, label) ``order``, numbered from ``start``."""
    return [Record(start + i, relpath, label, split.loader(relpath))
            for i, (relpath, label) in enumerate(order)]


def batch_stage(found: Dataset, out: str, spec, train_order: Callable[[list], list],
                options: dict, settings: dict) -> Tuple[Dataset, List[Stage]]:
    """The one stage of a batch format ``spec`` (its ``FormatSpec``): every split's records
    in one list, split after split (train in ``train_order(entries)``, the others sorted),
    the split sizes added to the output ``options`` as ``splits``; ``settings`` (seed...) get
    the synset count, the format and its label order. The folder is ``spec.folder``."""
    records, splits = [], []
    for name, split in found.splits.items():
        order = train_order(split.entries) if name == "train" else sorted(split.entries)
        records += split_records(split, order, len(records))
        splits.append((name, len(order)))
    settings = {**settings, "synsets": len(found.synsets), "format": spec.name,
                "label_order": spec.label_order}
    return found, [Stage(spec.name, os.path.join(out, spec.folder), spec.name, records,
                         settings, {**options, "splits": splits})]


BATCH_IMAGES = FormatOption(
    "batch_images", "images per batch: cuda-convnet2 3072 (3 sub-batch files of N/3), "
                    "theano-alexnet 256 (halves of N/2); default: upstream's",
    type=int, metavar="N")


def colour_only(name: str, transform) -> None:
    """Refuse --gray and --encoded for the batch format ``name`` (ImagenetDbError)."""
    if not transform.is_color or transform.encoded:
        raise ImagenetDbError(f"{name} stores colour images it encodes itself: --gray and "
                              f"--encoded do not apply")
