"""The conversion pipeline: records -> transform (on all cores) -> database sink (+ mean).

``convert`` is the Python API behind ``convert_imageset`` and each database of
``create_imagenet``. The database is built beside its final name (``DB.partial``) and renamed
into place only when it is complete, together with a completion record (``imagenet_db.json``
inside the database directory): a database at its final name is always a finished one.
An existing database is never replaced unless ``overwrite=True``; then the new one is built
beside it and swapped in at the end, so a failed rebuild leaves the old one intact.
An interrupted build (crash, kill, Ctrl-C, disk full) is continued with ``resume=True`` from
its last committed transaction; ``imagenet_db.engine.buildstate`` describes how.
"""
import functools
import io
import os
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from imagenet_db.engine import buildstate as B
from imagenet_db.engine.buildstate import MANIFEST_NAME, PARTIAL_SUFFIX  # noqa: F401 (public names)
from imagenet_db.errors import (BuildInterrupted, DatabaseError, ImagenetDbError,
                                ShapeMismatchError, SkippedImageError)
from imagenet_db.engine.executor import default_workers, ordered_map
from imagenet_db.engine.graceful import GracefulStop
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS, check_image_bytes, describe_undecodable
from imagenet_db.outputs.lmdb import open_writer
from imagenet_db.sources.base import Record
from imagenet_db.imaging.transform import TransformOptions, Transformed, transform_image

DEFAULT_TXN_SIZE = 1000


@dataclass
class ConvertSummary:
    """What a conversion did. written/skipped counts; skipped lists (relpath, reason);
    seconds is wall time; mean is the (C, H, W) float32 mean when it was computed.
    resumed_at: records already done when a resumed build started (0 for a fresh build);
    action: 'build', 'resume', 'publish' or 'done' (see buildstate.plan_output)."""
    db_path: str
    written: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    mean: Optional[np.ndarray] = None
    mean_count: int = 0
    resumed_at: int = 0
    action: str = "build"

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


def _load_and_transform(record: Record, options: TransformOptions, max_pixels: int) -> Transformed:
    try:
        data = record.load()
    except OSError as exc:
        return Transformed(None, f"cannot read file: {exc.strerror or exc}")
    problem = check_image_bytes(data, max_pixels)
    if problem:
        return Transformed(None, problem)
    result = transform_image(data, record.relpath, record.label, options)
    if result.value is None and (not data or result.error.startswith("cannot decode")):
        result.error = describe_undecodable(data)
    return result


def skip_report_path(db_path: str) -> str:
    """Where the skip report of ``db_path`` goes: ``DB.skipped.tsv`` beside the database."""
    return os.path.normpath(db_path) + ".skipped.tsv"


def write_skip_report(db_path: str, skipped: Sequence[Tuple[str, str]]) -> Optional[str]:
    """Write ``DB.skipped.tsv`` (relpath TAB reason per line) beside the database, atomically;
    remove a stale one when nothing was skipped. Returns the report's path or None."""
    report = skip_report_path(db_path)
    if not skipped:
        B.remove_path(report)
        return None
    B.write_file_atomic(report, "".join(f"{relpath}\t{reason}\n" for relpath, reason in skipped)
                        .encode("utf-8"))
    return report


def _finished_summary(db_path: str, action: str) -> ConvertSummary:
    """The summary of an already complete database, from its manifest and skip log."""
    manifest = B.read_manifest(db_path) or {}
    skipped = [(p, r) for _, p, r in B.read_skip_log(os.path.join(db_path, B.SKIP_LOG_NAME))]
    summary = ConvertSummary(db_path=db_path, written=int(manifest.get("entries", 0)),
                             skipped=skipped, action=action)
    mean_path = os.path.join(db_path, B.MEAN_NAME)
    if os.path.isfile(mean_path):
        summary.mean = np.load(mean_path)
        summary.mean_count = int(manifest.get("mean_count", summary.written))
    write_skip_report(db_path, skipped)
    return summary


def _interrupted_message(build: str, done: int, total: int) -> str:
    return (f"interrupted: {done} of {total} images are committed in {build}; "
            f"{B.RESUME_HINT}")


def convert(records: Sequence[Record], db_path: str, backend: str = "lmdb",
            options: TransformOptions = TransformOptions(), workers: Optional[int] = None,
            check_size: bool = False, compute_mean: bool = False, overwrite: bool = False,
            progress: Optional[bool] = None, settings: Optional[dict] = None,
            resume: bool = False, strict: bool = False, txn_size: int = DEFAULT_TXN_SIZE,
            max_pixels: int = DEFAULT_MAX_PIXELS, info: Optional[dict] = None,
            executor=None) -> ConvertSummary:
    """Convert images to a Caffe Datum database, as Caffe's convert_imageset (plus the mean).

    records: in database order (already shuffled); record i must have index i (its key number).
    db_path: the LMDB/LevelDB directory to create. backend: 'lmdb' or 'leveldb'.
    options: decode/resize/encode settings. workers: threads (None = all cores); the output
    bytes do not depend on it. check_size: fail (ShapeMismatchError) when a datum's size
    differs from the first one's, as --check_size. compute_mean: accumulate the mean of the
    stored pixels on the fly (returned in the summary and kept as imagenet_db.observers.mean.npy in the
    database directory; equal to compute_image_mean on the DB).
    progress: tqdm bar (None = only on a terminal). settings: extra facts that decide the
    output (seed, split...), recorded and compared on resume. info: extra facts recorded only.
    resume: continue an interrupted build of the same records and settings (or accept a
    finished one). strict: raise SkippedImageError at the first skipped image.
    txn_size: datums per committed transaction (a crash loses at most one transaction).
    max_pixels: skip JPEG/PNG files whose header declares more pixels (0 = no cap).
    executor: a concurrent.futures Executor to run the transform on instead of local threads
    (e.g. ``executor.dask_executor`` for a cluster); the database is the same.

    Unreadable/undecodable/corrupt/oversized images are skipped, counted and listed in
    ``DB.skipped.tsv``. Raises DatabaseError (existing output, resume refused, disk full...),
    ShapeMismatchError, SkippedImageError, BuildInterrupted (SIGINT/SIGTERM: work committed).
    On any error the final path is untouched and the work committed so far stays in
    ``DB.partial`` for ``resume``.
    """
    workers = default_workers() if workers is None else workers
    db_path = os.path.normpath(db_path)
    if any(record.index != position for position, record in enumerate(records)):
        raise ValueError("records must be numbered 0..n-1 in list order")
    if compute_mean:
        options = TransformOptions(**{**options.__dict__, "want_pixels": True})
    stored_options = {k: v for k, v in options.__dict__.items() if k != "want_pixels"}
    identity = B.build_identity(records, backend, stored_options, max_pixels, check_size,
                                compute_mean, settings)
    action = B.plan_output(db_path, identity, overwrite, resume)
    build = db_path + PARTIAL_SUFFIX
    try:
        if action == "done":
            return _finished_summary(db_path, action)
        if action == "publish":
            B.publish(build, db_path)
            return _finished_summary(db_path, action)
        if action == "build":
            B.start_build(build, identity)
        B.remove_stale_temporaries(build)
        B.remove_stale_temporaries(os.path.dirname(db_path) or ".",
                                   [os.path.basename(skip_report_path(db_path))])
    except OSError as exc:
        raise DatabaseError(f"{build}: cannot prepare the build: {exc.strerror or exc}") from None

    summary = ConvertSummary(db_path=db_path, action=action)
    start = time.perf_counter()
    writer = open_writer(backend, build, batch_size=max(1, txn_size))
    try:
        state = B.restore_progress(build, records, writer, compute_mean, check_size)
    except BaseException:
        writer.abort()
        raise
    summary.written, summary.resumed_at = state.written, state.next_position
    summary.skipped = [(relpath, reason) for _, relpath, reason in state.skipped]
    if strict and summary.skipped:
        writer.abort()
        relpath, reason = summary.skipped[0]
        raise SkippedImageError(f"{relpath}: {reason} (skipped earlier in this build; --strict)")
    acc, first_shape = state.acc, state.first_shape
    skip_log = B.SkipLog(build)
    last_checkpoint = time.monotonic()
    todo = records[state.next_position:]
    bar = tqdm(total=len(records), initial=state.next_position, unit="img",
               disable=None if progress is None else not progress, file=sys.stderr,
               desc=os.path.basename(db_path), dynamic_ncols=True)
    work = functools.partial(_load_and_transform, options=options, max_pixels=max_pixels)
    results = ordered_map(work, todo, workers, executor=executor)
    stop = GracefulStop()
    try:
        with stop:
            for record, result in zip(todo, results):
                if stop.requested:
                    break
                bar.update(1)
                if result.value is None:
                    skip_log.add(record.index, record.relpath, result.error)
                    summary.skipped.append((record.relpath, result.error))
                    bar.write(f"skipped {record.relpath}: {result.error}", file=sys.stderr)
                    if strict:
                        raise SkippedImageError(f"{record.relpath}: {result.error} (--strict); "
                                                f"fix the file, then {B.RESUME_HINT}")
                    continue
                if check_size:
                    if first_shape is None:
                        first_shape = result.shape
                    elif result.shape != first_shape:
                        raise ShapeMismatchError(
                            f"{record.relpath}: image size (channels, height, width) "
                            f"{result.shape} differs from the first image's {first_shape} "
                            f"(--check_size)")
                key = record.key
                if acc is not None:  # before the put: a size mismatch stops before the datum
                    acc.add(result.pixels, key.decode("utf-8", "replace"))
                writer.put(key, result.value)
                summary.written += 1
                if (acc is not None and writer.pending_puts == 0
                        and time.monotonic() - last_checkpoint >= B.MEAN_CHECKPOINT_SECONDS):
                    B.save_mean_checkpoint(build, acc, record.index)  # all added are committed
                    last_checkpoint = time.monotonic()
        results.close()
        writer.close()
    except (ImagenetDbError, OSError) as exc:
        results.close()
        bar.close()
        skip_log.close()
        if isinstance(exc, (DatabaseError, OSError)):  # the writer failed: keep what is committed
            writer.abort()
            detail = str(exc)
            if isinstance(exc, OSError) and exc.strerror:
                detail = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
            raise DatabaseError(f"{detail}\nthe work committed so far is kept in {build}; "
                                f"free space or fix the cause, then {B.RESUME_HINT}") from None
        writer.close()  # a bad image under --strict/--check_size: commit the good ones
        raise
    except BaseException:
        results.close()
        bar.close()
        skip_log.close()
        writer.abort()
        raise
    bar.close()
    skip_log.close()
    done = summary.written + len(summary.skipped)
    if stop.requested:
        raise BuildInterrupted(_interrupted_message(build, done, len(records)), stop.signum)
    if done != len(records):
        raise DatabaseError(f"{build}: {summary.written} datums + {len(summary.skipped)} skipped "
                            f"!= {len(records)} records; pass --overwrite to rebuild")
    summary.seconds = time.perf_counter() - start
    manifest = {**identity, "complete": True, "entries": summary.written,
                "skipped": len(summary.skipped), **(info or {})}
    try:
        if acc is not None and acc.count:
            summary.mean, summary.mean_count = acc.mean(), acc.count
            buf = io.BytesIO()
            np.save(buf, summary.mean)
            B.write_file_atomic(os.path.join(build, B.MEAN_NAME), buf.getvalue())
            manifest.update(mean_count=acc.count, mean_file=B.MEAN_NAME)
        B.remove_path(os.path.join(build, B.MEAN_CHECKPOINT_NAME))
        B.write_json_atomic(os.path.join(build, MANIFEST_NAME), manifest)
        B.remove_path(os.path.join(build, B.BUILD_RECORD_NAME))
        B.publish(build, db_path)
        write_skip_report(db_path, summary.skipped)
    except OSError as exc:
        raise DatabaseError(f"{build}: cannot finish the build: {exc.strerror or exc}; "
                            f"{B.RESUME_HINT}") from None
    return summary
