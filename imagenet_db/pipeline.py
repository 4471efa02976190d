"""The pipeline loop: records -> (load, check, transform, encode on all cores) -> output, in order.

``convert`` is the Python API behind ``convert_imageset`` and each database of
``create_imagenet``. Per record, on a worker thread (or a Dask worker): read the bytes,
check the header (``imaging.headers``), transform (``imaging.transform``) and encode for
the output (``Output.encode``). On the calling thread, in list order: the observers see the
record (the mean, --check_size), then the output stores it, both on the writing thread
(``engine.writer``) so that commits do not hold up the hand-off; skipped images go to the skip
log instead.

The output is built beside its final name (``DB.partial``) and renamed into place only when
it is complete, together with a completion record (``imagenet_db.json`` inside the output
directory): an output at its final name is always a finished one. ``engine.buildstate``
decides what a build has to do (build, resume, publish, done) and refuses to replace what
exists without ``overwrite``. An interrupted build (crash, kill, Ctrl-C, disk full) continues
with ``resume=True`` from its last committed transaction.
"""
import errno
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Sequence, Set, Tuple, Type

import numpy as np
from tqdm import tqdm

from imagenet_db.engine import buildstate as B
from imagenet_db.engine.buildstate import (DEFAULT_TXN_SIZE, MANIFEST_NAME,  # noqa: F401
                                           PARTIAL_SUFFIX, BuildOptions)
from imagenet_db.engine.executor import ClusterError, ordered_map
from imagenet_db.engine.files import remove_path, remove_stale_temporaries, write_json_atomic
from imagenet_db.engine.graceful import GracefulStop
from imagenet_db.engine.lock import OutputLock, lock_path_for
from imagenet_db.engine.writer import WriterThread
from imagenet_db.errors import BuildInterrupted, DatabaseError, ImagenetDbError, SkippedImageError
from imagenet_db.imaging.headers import check_image_bytes, describe_undecodable
from imagenet_db.imaging.transform import ImageSkipped, TransformOptions, transform_image
from imagenet_db.observers.checksum import ContentChecksum
from imagenet_db.observers.sizecheck import SizeCheck
from imagenet_db.outputs import OUTPUTS, output_class
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.packed import PackedResults
from imagenet_db.engine.skips import SkipList
from imagenet_db.sources.base import Record
from imagenet_db.sources.records import record_entries


@dataclass(frozen=True)
class Recorded:
    """What a build records beside its inputs, in the build record (``imagenet_db.json``).

    settings: extra facts that decide the output (seed, shuffle, split...), compared on
    --resume. output_options: keyword arguments of the output's constructor (e.g. the splits
    of a batch output), recorded and compared like ``settings``. info: facts recorded only
    (e.g. the list file's path). All JSON-able dicts (None = none)."""
    settings: Optional[dict] = None
    output_options: Optional[dict] = None
    info: Optional[dict] = None


@dataclass
class ConvertSummary:
    """What a conversion did. written/skipped counts; skipped lists (relpath, reason);
    seconds is wall time; results: what the observers give back (e.g. 'mean', a (C, H, W)
    float32 array, and 'mean_count'). resumed_at: records already done when a resumed build
    started (0 for a fresh build); action: 'build', 'resume', 'publish' or 'done'. ``skipped``
    is a ``SkipList`` (compact; reads as a list of (relpath, reason))."""
    db_path: str
    written: int = 0
    skipped: SkipList = field(default_factory=SkipList)
    seconds: float = 0.0
    resumed_at: int = 0
    action: str = "build"
    results: Dict[str, object] = field(default_factory=dict)

    @property
    def mean(self) -> Optional[np.ndarray]:
        """The (C, H, W) float32 mean when a mean observer computed it, else None."""
        return self.results.get("mean")

    @property
    def mean_count(self) -> int:
        """Images in the mean (0 when none was computed)."""
        return int(self.results.get("mean_count", 0))

    @property
    def images_per_second(self) -> float:
        """Images (written + skipped) processed per second of wall time in this run."""
        done = self.written + len(self.skipped) - self.resumed_at
        return done / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        """One-line human summary."""
        if self.action in ("done", "publish"):
            return (f"{self.db_path}: complete ({self.written} datums, skipped "
                    f"{len(self.skipped)}); nothing left to do")
        resumed = f", resumed after {self.resumed_at} images" if self.resumed_at else ""
        return (f"{self.db_path}: wrote {self.written} datums, skipped {len(self.skipped)}"
                f"{resumed}, {self.seconds:.1f} s ({self.images_per_second:.0f} images/s)")


@dataclass(frozen=True)
class RecordJob:
    """The work done for one record on a worker: load, check, transform, encode.

    Returns the output's ``Encoded`` value, or a str saying why the image is skipped.
    Picklable (for a Dask cluster): options, the output class and plain values only.
    ``pack``: how a task's results travel back from a worker process or a Dask worker (one
    buffer, ``outputs.packed``; see ``engine.executor.ordered_map``).
    """
    options: TransformOptions
    max_pixels: int
    output: Type[Output]
    want_pixels: bool
    pack = staticmethod(PackedResults.of)  # a class attribute, not a field

    def __call__(self, record: Record):
        try:
            data = record.load()
        except OSError as exc:
            return f"cannot read file: {exc.strerror or exc}"
        problem = check_image_bytes(data, self.max_pixels)
        if problem:
            return problem
        stored = self.output.encode_file(record, data, self.options)
        if stored is not None:  # kept as it is (e.g. a folder copy): no decode
            return stored
        try:
            image = transform_image(data, record.relpath, self.options, self.want_pixels,
                                    record.boxes)
        except ImageSkipped as exc:
            reason = str(exc)
            return describe_undecodable(data) if not data or reason.startswith("cannot decode") \
                else reason
        return self.output.encode(record, image)


def all_observers(build: BuildOptions, observers: Sequence) -> list:
    """The observers of a build: --check_size's guard (first), then the caller's, then the
    content checksum kept in the completion record (``observers.checksum``)."""
    return ([SizeCheck()] if build.check_size else []) + list(observers) + [ContentChecksum()]


def plan_build(records: Sequence[Record], db_path: str, backend: str,
               transform: TransformOptions, build: BuildOptions, observers: Sequence,
               settings: Optional[dict] = None,
               output_options: Optional[dict] = None) -> Tuple[dict, str]:
    """(build record, action) for building ``db_path`` from ``records`` with the caller's
    ``observers``: see ``buildstate.plan_output`` for the actions; raises DatabaseError when
    refused. ``convert`` calls it; recipes call it first to refuse before any work.
    output_options: the output constructor's options, recorded with the settings."""
    return _plan_build(records, db_path, backend, transform, build, observers, settings,
                       _as_json(output_options))


def _as_json(output_options: Optional[dict]) -> dict:
    """``output_options`` as JSON gives them back (lists, not tuples), so that a resume
    compares them equal to the recorded ones."""
    return json.loads(json.dumps(output_options or {}))


def _plan_build(records, db_path, backend, transform, build, observers, settings,
                output_options: dict) -> Tuple[dict, str]:
    """plan_build with ``output_options`` already as JSON gives them back (``_as_json``)."""
    if output_options:
        settings = {**(settings or {}), "output_options": output_options}
    observed = {}
    for observer in all_observers(build, observers):
        observed.update(observer.identity())
    identity = B.build_identity(records, backend, transform.record(), build, observed, settings)
    return identity, B.plan_output(output_path(db_path), identity, build.overwrite,
                                   build.resume, RegisteredOutputs())


class RegisteredOutputs:
    """``engine.buildstate.OutputFiles`` answered from ``outputs.OUTPUTS``: what --overwrite
    may delete in an existing output, by the output its record names."""

    @staticmethod
    def is_database(backend: str) -> bool:
        """True for a Datum database output ('lmdb', 'leveldb': ``Output.datum_database``)."""
        output = OUTPUTS.get(backend)
        return output is not None and output.datum_database

    @staticmethod
    def made_files(path: str, record: dict) -> Optional[Set[str]]:
        """``Output.made_files`` of the record's output; None for an output not registered
        here (made by another version: left as this tool's)."""
        output = OUTPUTS.get(str(record.get("backend")))
        return None if output is None else output.made_files(path, record)


def _finished_summary(db_path: str, action: str, observers: Sequence) -> ConvertSummary:
    """The summary of an already complete output, from its manifest and skip log."""
    manifest = B.read_manifest(db_path) or {}
    skipped = SkipList(B.read_skip_log(os.path.join(db_path, B.SKIP_LOG_NAME)))
    summary = ConvertSummary(db_path=db_path, written=int(manifest.get("entries", 0)),
                             skipped=skipped, action=action)
    for observer in observers:
        observer.finished(db_path, manifest)
        summary.results.update(observer.results())
    B.write_skip_report(db_path, skipped)
    return summary


def _restore(build_dir: str, records, output: Output, observers, strict: bool,
             summary: ConvertSummary) -> int:
    """Where an (interrupted) build stands: the next record position; fills ``summary``."""
    done = output.resume_position(records)
    summary.written = output.entries() if done else 0
    summary.skipped = B.SkipLog(build_dir).restore(done - 1)
    if summary.written + len(summary.skipped) != done:
        raise DatabaseError(f"{build_dir}: {summary.written} datums and {len(summary.skipped)} "
                            f"skips do not account for records 0..{done - 1}; the partial "
                            f"build is damaged, pass --overwrite to start again")
    for observer in observers:
        observer.restore(build_dir, output, done)
    if strict and summary.skipped:
        relpath, reason = summary.skipped[0]
        raise SkippedImageError(f"{relpath}: {reason} (skipped earlier in this build; --strict)")
    summary.resumed_at = done
    return done


@dataclass
class _Build:
    """One build in progress: where it is written, by what, for whom."""
    build_dir: str
    output: Output
    observers: list
    options: BuildOptions
    summary: ConvertSummary


def _write_all(todo, results, run: _Build, writer: WriterThread, bar,
               stop: GracefulStop) -> None:
    """The loop: each result in list order to the writing thread (observers, then the output),
    or to the skip log and the summary's skips."""
    summary = run.summary
    skip_log = B.SkipLog(run.build_dir)
    try:
        for record, result in zip(todo, results):
            if stop.requested:
                break
            bar.update(1)
            if not isinstance(result, Encoded):
                skip_log.add(record.index, record.relpath, result)
                summary.skipped.add(record.index, record.relpath, result)
                bar.write(f"skipped {record.relpath}: {result}", file=sys.stderr)
                if run.options.strict:
                    raise SkippedImageError(f"{record.relpath}: {result} (--strict); "
                                            f"fix the file, then {B.RESUME_HINT}")
                continue
            skip_log.sync()  # the skips before it are durable before it can be committed
            writer.add(record, result)
            summary.written += 1
    finally:
        skip_log.close()


def _disk_error(exc: Exception, build_dir: str) -> DatabaseError:
    detail = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        if exc.errno == errno.ENOSPC:  # the same words as the database's own disk-full error
            detail += " (disk full)"
    return DatabaseError(f"{detail}\nthe work committed so far is kept in {build_dir}; "
                         f"free space or fix the cause, then {B.RESUME_HINT}")


def _run(records, todo, run: _Build, transform: TransformOptions) -> GracefulStop:
    """Run the workers and the loop; commit what is done on any stop (see convert)."""
    output, observers, build, build_dir = run.output, run.observers, run.options, run.build_dir
    want_pixels = any(observer.needs_pixels for observer in observers)
    job = RecordJob(transform, build.max_pixels, type(output), want_pixels)
    stop = GracefulStop()
    results = ordered_map(job, todo, build.workers, executor=build.executor,
                          stop=lambda: stop.requested, size=result_bytes)
    bar = tqdm(total=len(records), initial=len(records) - len(todo), unit="img",
               disable=None if build.progress is None else not build.progress,
               file=sys.stderr, desc=os.path.basename(run.summary.db_path), dynamic_ncols=True)
    writer = WriterThread(output, observers, build_dir)
    written_before = run.summary.written
    try:
        with stop:  # a signal during the final drain still stops cleanly, after one commit
            _write_all(todo, results, run, writer, bar, stop)
            results.close()
            if stop.requested:
                writer.stop()
            writer.close(interrupted=lambda: stop.requested)
        if stop.requested:  # count what is committed: the records up to the last one stored
            last = writer.last_index if writer.last_index is not None else \
                len(records) - len(todo) - 1
            run.summary.written = written_before + writer.written
            run.summary.skipped.keep_upto(last)
    except (ImagenetDbError, OSError) as exc:
        results.close()
        if isinstance(exc, (DatabaseError, OSError)):  # the writer failed: keep what is committed
            writer.abort()
            raise _disk_error(exc, build_dir) from None
        writer.close()  # a bad image, a failed cluster...: commit the good ones
        if isinstance(exc, ClusterError):
            raise ClusterError(f"{exc}; the work committed so far is kept in {build_dir}: "
                               f"{B.RESUME_HINT}{exc.resume_where}") from None
        raise
    except BaseException:
        results.close()
        writer.abort()
        raise
    finally:
        bar.close()
    return stop


def result_bytes(result) -> int:
    """Bytes a worker's result holds (an Encoded's stored value and pixels; a skip reason's
    text): what ``ordered_map`` keeps in flight is capped by it."""
    if not isinstance(result, Encoded):
        return len(result) if isinstance(result, str) else 0
    value = result.value
    stored = value.nbytes if isinstance(value, (np.ndarray, memoryview)) else len(value)
    return stored + (result.pixels.nbytes if result.pixels is not None else 0)  # (or a view)


def _written_records(records: Sequence[Record], summary: ConvertSummary
                     ) -> Iterator[Tuple[int, str, int]]:
    """(index, relpath, label) of the records that were stored (all but the skipped ones), in
    order; walks the skips' ascending indices beside the records (no set of names)."""
    skipped = iter(summary.skipped.indices())
    next_skip = next(skipped, None)
    for entry in record_entries(records):
        if entry[0] == next_skip:
            next_skip = next(skipped, None)
            continue
        yield entry


def _publish(build_dir: str, records: Sequence[Record], summary: ConvertSummary,
             identity: dict, observers, info: Optional[dict], output: Output) -> None:
    """The output's and observers' last files, the completion record (with the fingerprint
    of the stored keys and labels, ``entries_sha256``, which ``verify`` recomputes), then the
    rename into place, then the skip report beside it."""
    manifest = {**identity, "complete": True, "entries": summary.written,
                "skipped": len(summary.skipped),
                "entries_sha256": B.list_fingerprint(_written_records(records, summary)),
                **(info or {})}
    try:
        finished = output.finish()
        manifest.update(finished)
        summary.results.update(finished)
        for observer in observers:
            manifest.update(observer.finish(build_dir))
            summary.results.update(observer.results())
        write_json_atomic(os.path.join(build_dir, MANIFEST_NAME), manifest)
        remove_path(os.path.join(build_dir, B.BUILD_RECORD_NAME))
        B.publish(build_dir, summary.db_path)
        B.write_skip_report(summary.db_path, summary.skipped)
    except OSError as exc:
        raise DatabaseError(f"{build_dir}: cannot finish the build: {exc.strerror or exc}; "
                            f"{B.RESUME_HINT}") from None


def _start(db_path: str, build_dir: str, action: str, identity: dict) -> None:
    try:
        if action == "publish":  # a kill after the completion record can leave the build
            remove_path(os.path.join(build_dir, B.BUILD_RECORD_NAME))  # record: not published
            B.publish(build_dir, db_path)
            return
        if action == "build":
            B.start_build(build_dir, identity)
        remove_stale_temporaries(build_dir)
        remove_stale_temporaries(os.path.dirname(db_path) or ".",
                                 [os.path.basename(B.skip_report_path(db_path))])
    except OSError as exc:
        raise DatabaseError(f"{build_dir}: cannot prepare the build: "
                            f"{exc.strerror or exc}") from None


def convert(records: Sequence[Record], db_path: str, backend: str = "lmdb",
            transform: TransformOptions = TransformOptions(),
            build: BuildOptions = BuildOptions(), observers: Sequence = (),
            recorded: Recorded = Recorded()) -> ConvertSummary:
    """Convert images to an output (a Caffe Datum LMDB/LevelDB...), as Caffe's convert_imageset.

    records: in output order (already shuffled); record i must have index i (its key number).
    db_path: the directory to create. backend: a name in ``outputs.OUTPUTS`` ('lmdb',
    'leveldb'). transform: decode/resize/encode settings. build: overwrite/resume/strict/
    txn_size/max_pixels/check_size/workers/progress/executor (``BuildOptions``); the output
    does not depend on workers or executor. observers: e.g. ``observers.mean.MeanObserver()``
    (its mean is returned in the summary's results and kept as imagenet_db.mean.npy in the
    output directory; equal to compute_image_mean on it). recorded: the settings (compared on
    resume), the output's constructor options (compared too) and info (recorded only), see
    ``Recorded``.

    Unreadable/undecodable/corrupt/oversized images are skipped, counted and listed in
    ``DB.skipped.tsv``. Raises DatabaseError (existing output, resume refused, disk full...),
    OutputBusyError (another live process is building ``db_path``: it holds ``DB.lock``, see
    ``engine.lock``), ShapeMismatchError, SkippedImageError, BuildInterrupted (SIGINT/SIGTERM:
    work committed). On any error the final path is untouched and the work committed so far
    stays in ``DB.partial`` for ``resume``.
    """
    db_path = output_path(db_path)
    if any(index != position for position, (index, _, _) in enumerate(record_entries(records))):
        raise ValueError("records must be numbered 0..n-1 in list order")
    output_options = _as_json(recorded.output_options)
    parent = os.path.dirname(db_path) or "."
    if not os.path.isdir(parent):
        raise DatabaseError(f"{parent}: output directory does not exist")
    with OutputLock(lock_path_for(db_path), f"{db_path} is being built"):
        return _convert_locked(records, db_path, backend, transform, build, observers,
                               recorded.settings, recorded.info, output_options)


def output_path(path: str) -> str:
    """``path`` normalized; absolute when it names the current folder or a parent ('.',
    '..'), so that ``DB.partial`` and ``DB.lock`` are siblings of the output, not files
    named '..partial' inside it."""
    path = os.path.normpath(path)
    if os.path.basename(path) in ("", ".", ".."):
        path = os.path.abspath(path)
    return path


def _check_records(records: Sequence[Record], output: Type[Output]) -> None:
    """Refuse, before any work, a record the output format cannot store (e.g. a key over
    LMDB's size limit), naming it."""
    for index, relpath, _ in record_entries(records):
        problem = output.record_problem(relpath, index)
        if problem:
            raise DatabaseError(f"record {index} ({relpath[:80]!r}): {problem}")


def _convert_locked(records, db_path, backend, transform, build, observers, settings,
                    info, output_options) -> ConvertSummary:
    """convert() with the output's lock held (one build per output)."""
    _check_records(records, output_class(backend))
    identity, action = _plan_build(records, db_path, backend, transform, build, observers,
                                   settings, output_options)
    observers = all_observers(build, observers)
    build_dir = db_path + PARTIAL_SUFFIX
    if action != "done":
        _start(db_path, build_dir, action, identity)
    if action in ("done", "publish"):
        return _finished_summary(db_path, action, observers)
    summary = ConvertSummary(db_path=db_path, action=action)
    start = time.perf_counter()
    output = output_class(backend)(build_dir, batch_size=max(1, build.txn_size),
                                   **output_options)
    try:
        done = _restore(build_dir, records, output, observers, build.strict, summary)
    except BaseException:
        output.abort()
        raise
    stop = _run(records, records[done:], _Build(build_dir, output, observers, build, summary),
                transform)
    finished = summary.written + len(summary.skipped)
    if stop.requested:
        raise BuildInterrupted(f"interrupted: {finished} of {len(records)} images are committed "
                               f"in {build_dir}; {B.RESUME_HINT}", stop.signum)
    if finished != len(records):
        raise DatabaseError(f"{build_dir}: {summary.written} datums + {len(summary.skipped)} "
                            f"skipped != {len(records)} records; pass --overwrite to rebuild")
    summary.seconds = time.perf_counter() - start
    _publish(build_dir, records, summary, identity, observers, info, output)
    return summary
