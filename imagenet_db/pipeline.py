"""The conversion pipeline: records -> transform (on all cores) -> database sink (+ mean).

``convert`` is the Python API behind ``convert_imageset`` and each database of
``create_imagenet``. The database is built beside its final name (``DB.partial``) and renamed
into place only when it is complete, together with a completion record (``imagenet_db.json``
inside the database directory): a database at its final name is always a finished one.
An existing database is never replaced unless ``overwrite=True``; then the new one is built
beside it and swapped in at the end, so a failed rebuild leaves the old one intact.
"""
import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from imagenet_db import __version__
from imagenet_db.errors import DatabaseError, ShapeMismatchError
from imagenet_db.executor import default_workers, ordered_map
from imagenet_db.mean import MeanAccumulator
from imagenet_db.sinks import open_writer
from imagenet_db.sources import Record
from imagenet_db.transform import TransformOptions, Transformed, transform_image

MANIFEST_NAME = "imagenet_db.json"
PARTIAL_SUFFIX = ".partial"


@dataclass
class ConvertSummary:
    """What a conversion did. written/skipped counts; skipped lists (relpath, reason);
    seconds is wall time; mean is the (C, H, W) float32 mean when it was computed."""
    db_path: str
    written: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    mean: Optional[np.ndarray] = None
    mean_count: int = 0

    @property
    def images_per_second(self) -> float:
        return (self.written + len(self.skipped)) / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        """One-line human summary."""
        return (f"{self.db_path}: wrote {self.written} datums, skipped {len(self.skipped)}, "
                f"{self.seconds:.1f} s ({self.images_per_second:.0f} images/s)")


def _load_and_transform(record: Record, options: TransformOptions) -> Transformed:
    try:
        data = record.load()
    except OSError as exc:
        return Transformed(None, f"cannot read file: {exc.strerror or exc}")
    return transform_image(data, record.relpath, record.label, options)


def prepare_output(db_path: str, overwrite: bool) -> str:
    """Check that ``db_path`` may be written and return the build directory beside it.

    Raises DatabaseError when ``db_path`` exists and ``overwrite`` is False, or when a stale
    partial build is in the way and ``overwrite`` is False.
    """
    db_path = os.path.normpath(db_path)
    build = db_path + PARTIAL_SUFFIX
    if os.path.lexists(db_path) and not overwrite:
        raise DatabaseError(f"{db_path} already exists; pass --overwrite to replace it")
    if os.path.lexists(build):
        if not overwrite:
            raise DatabaseError(f"{build} holds an unfinished build; pass --overwrite to discard it")
        shutil.rmtree(build)
    parent = os.path.dirname(db_path) or "."
    if not os.path.isdir(parent):
        raise DatabaseError(f"{parent}: output directory does not exist")
    return build


def publish(build: str, db_path: str) -> None:
    """Move a finished build to ``db_path``, replacing an old database only after the new
    one is in place beside it."""
    old = None
    if os.path.lexists(db_path):
        old = f"{db_path}.old-{os.getpid()}"
        os.rename(db_path, old)
    os.rename(build, db_path)
    if old:
        shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)


def write_skip_report(db_path: str, skipped: Sequence[Tuple[str, str]]) -> Optional[str]:
    """Write ``DB.skipped.tsv`` (relpath TAB reason per line) beside the database; remove a stale
    one when nothing was skipped. Returns the report's path or None."""
    report = os.path.normpath(db_path) + ".skipped.tsv"
    if not skipped:
        if os.path.exists(report):
            os.remove(report)
        return None
    with open(report, "w", encoding="utf-8") as f:
        for relpath, reason in skipped:
            f.write(f"{relpath}\t{reason}\n")
    return report


def convert(records: Sequence[Record], db_path: str, backend: str = "lmdb",
            options: TransformOptions = TransformOptions(), workers: Optional[int] = None,
            check_size: bool = False, compute_mean: bool = False, overwrite: bool = False,
            progress: Optional[bool] = None, settings: Optional[dict] = None,
            executor=None) -> ConvertSummary:
    """Convert images to a Caffe Datum database, as Caffe's convert_imageset (plus the mean).

    records: in database order (already shuffled); record.index gives the key number.
    db_path: the LMDB/LevelDB directory to create. backend: 'lmdb' or 'leveldb'.
    options: decode/resize/encode settings. workers: threads (None = all cores); the output
    bytes do not depend on it. check_size: fail (ShapeMismatchError) when a datum's size
    differs from the first one's, as --check_size. compute_mean: accumulate the mean of the
    stored pixels on the fly (returned in the summary; equal to compute_image_mean on the DB).
    progress: tqdm bar (None = only on a terminal). settings: extra facts for the manifest.
    executor: a concurrent.futures Executor to run the transform on instead of local threads
    (e.g. ``executor.dask_executor`` for a cluster); the database is the same.

    Unreadable/undecodable images are skipped, counted and listed in ``DB.skipped.tsv``.
    Raises DatabaseError / ShapeMismatchError; on any error the partial build is left at
    ``DB.partial`` and the final path is untouched.
    """
    workers = default_workers() if workers is None else workers
    build = prepare_output(db_path, overwrite)
    if compute_mean:
        options = TransformOptions(**{**options.__dict__, "want_pixels": True})
    summary = ConvertSummary(db_path=os.path.normpath(db_path))
    acc = MeanAccumulator() if compute_mean else None
    first_shape = None
    start = time.perf_counter()
    writer = open_writer(backend, build)
    bar = tqdm(total=len(records), unit="img", disable=None if progress is None else not progress,
               file=sys.stderr, desc=os.path.basename(summary.db_path), dynamic_ncols=True)
    try:
        work = functools.partial(_load_and_transform, options=options)
        results = ordered_map(work, records, workers, executor=executor)
        for record, result in zip(records, results):
            bar.update(1)
            if result.value is None:
                summary.skipped.append((record.relpath, result.error))
                bar.write(f"skipped {record.relpath}: {result.error}", file=sys.stderr)
                continue
            if check_size:
                if first_shape is None:
                    first_shape = result.shape
                elif result.shape != first_shape:
                    raise ShapeMismatchError(
                        f"{record.relpath}: image size (channels, height, width) {result.shape} "
                        f"differs from the first image's {first_shape} (--check_size)")
            key = record.key
            writer.put(key, result.value)
            if acc is not None:
                acc.add(result.pixels, key.decode("utf-8", "replace"))
            summary.written += 1
        writer.close()
    except BaseException:
        bar.close()
        writer.abort()
        raise
    bar.close()
    summary.seconds = time.perf_counter() - start
    if acc is not None and acc.count:
        summary.mean, summary.mean_count = acc.mean(), acc.count
    manifest = {
        "tool": "imagenet-db", "version": __version__, "complete": True, "backend": backend,
        "entries": summary.written, "skipped": len(summary.skipped),
        "options": {k: v for k, v in options.__dict__.items() if k != "want_pixels"},
        **(settings or {}),
    }
    with open(os.path.join(build, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    publish(build, summary.db_path)
    write_skip_report(summary.db_path, summary.skipped)
    return summary
