"""The loop of a sharded output (WebDataset, TFRecord): one task per shard on the executor.

``convert_shards`` is ``pipeline.convert`` for the formats of ``outputs.shards``: the same
plan (build, resume, publish, done; the build record, ``DB.partial``, the lock, the final
rename, ``DB.skipped.tsv``), but no record passes through this process. The format plans the
shards (contiguous slices of the list); each shard is one task (``outputs.shards.ShardJob``,
wrapping ``pipeline.RecordJob``) run by a local worker thread or a Dask worker, which writes
the shard and its index and returns a small ``ShardResult``. Here the results are logged
(``imagenet_db.shards.log``, for ``--resume``) in shard order; at the end the format writes its
side files (``_info.json``), then the completion record lists every shard (name, split, count,
SHA-256, bytes, index), and the box counts summed over the shards (``boxes``, when the
SOURCE had annotations), and the build is renamed into place.

On a Dask cluster the output folder must be a path every worker and this client can see (a
shared filesystem), as the SOURCE already must be. Ctrl-C/SIGTERM stops after the running
shards (a worker thread finishes its shard; a Dask worker's shard is finished or dropped), logs
what is done and exits 130/143; ``--resume`` rebuilds only the shards not logged.
"""
import os
import sys
import time
from typing import Iterable, List, Sequence

from tqdm import tqdm

from imagenet_db.engine import buildstate as B
from imagenet_db.engine.executor import ClusterError, ordered_map
from imagenet_db.engine.files import write_json_atomic
from imagenet_db.engine.graceful import GracefulStop
from imagenet_db.engine.lock import OutputLock, lock_path_for
from imagenet_db.engine.skips import SkipList
from imagenet_db.errors import BuildInterrupted, DatabaseError, SkippedImageError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs import output_class
from imagenet_db.outputs.shards import (ShardJob, ShardLog, ShardResult, box_totals,
                                        check_keys, read_shard_log, remove_temporaries)
from imagenet_db.pipeline import ConvertSummary, Recorded, RecordJob, output_path, plan_build

SKIPPED_NAME = B.SKIP_LOG_NAME  # index TAB relpath TAB reason, kept in the finished output


def _summary_of_finished(db_path: str, action: str) -> ConvertSummary:
    manifest = B.read_manifest(db_path) or {}
    skipped = SkipList(B.read_skip_log(os.path.join(db_path, SKIPPED_NAME)))
    B.write_skip_report(db_path, skipped)
    return ConvertSummary(db_path=db_path, written=int(manifest.get("entries", 0)),
                          skipped=skipped, action=action)


def _run_shards(job: ShardJob, todo: Iterable, build, done: dict, bar) -> GracefulStop:
    """Run the shard tasks; log each finished one (in shard order) into ``done``."""
    stop = GracefulStop()
    slots = getattr(build.executor, "threads", 0) or build.workers or os.cpu_count() or 1
    results = ordered_map(job, todo, build.workers, window=2 * slots + 2,
                          executor=build.executor, chunk=1, stop=lambda: stop.requested)
    log = ShardLog(job.folder)
    try:
        with stop:
            for result in results:
                log.add(result)
                done[result.name] = result
                bar.update(result.count + len(result.skipped))
                for _, relpath, reason in result.skipped:
                    bar.write(f"skipped {relpath}: {reason}", file=sys.stderr)
                if build.strict and result.skipped:
                    _, relpath, reason = result.skipped[0]
                    raise SkippedImageError(f"{relpath}: {reason} (--strict)")
                if stop.requested:
                    break
    except ClusterError as exc:
        raise ClusterError(f"{exc}; the finished shards are kept in {job.folder}: "
                           f"{B.RESUME_HINT}") from None
    except OSError as exc:
        raise DatabaseError(f"{exc.filename or job.folder}: {exc.strerror or exc}; the "
                            f"finished shards are kept in {job.folder}: {B.RESUME_HINT}") \
            from None
    finally:
        results.close()
        log.close()
    return stop


def _publish(build_dir: str, db_path: str, fmt, specs, done: dict, identity: dict,
             options: dict) -> List[ShardResult]:
    """Side files, skip log, completion record, rename: the finished output."""
    results = [done[spec.name] for spec in specs]
    skipped = sorted(skip for result in results for skip in result.skipped)
    shards = []
    for spec, result in zip(specs, results):
        shards.append({**result.to_json(), "index": spec.index_name})
        del shards[-1]["skipped"]
        shards[-1].pop("boxes", None)
    manifest = {**identity, "complete": True, "format": fmt.name,
                "entries": sum(r.count for r in results), "skipped": len(skipped),
                "shards": shards}
    boxes = box_totals(results)
    if boxes:
        manifest["boxes"] = boxes
    try:
        manifest.update(fmt.finish(build_dir, results, options))
        if skipped:
            with open(os.path.join(build_dir, SKIPPED_NAME), "w", encoding="utf-8") as f:
                f.writelines(f"{i}\t{p}\t{r}\n" for i, p, r in skipped)
        write_json_atomic(os.path.join(build_dir, B.MANIFEST_NAME), manifest)
        for name in (B.BUILD_RECORD_NAME, "imagenet_db.shards.log"):
            os.remove(os.path.join(build_dir, name))
        B.publish(build_dir, db_path)
        B.write_skip_report(db_path, [(p, r) for _, p, r in skipped])
    except OSError as exc:
        raise DatabaseError(f"{build_dir}: cannot finish the build: {exc.strerror or exc}; "
                            f"{B.RESUME_HINT}") from None
    return results


def convert_shards(records: Sequence, db_path: str, backend: str,
                   transform: TransformOptions = TransformOptions(),
                   build: B.BuildOptions = B.BuildOptions(), observers: Sequence = (),
                   recorded: Recorded = Recorded()) -> ConvertSummary:
    """Build the sharded output ``backend`` (an ``outputs.OUTPUTS`` name whose class is an
    ``outputs.shards.ShardFormat``: 'webdataset', 'tfrecord') of ``records`` at ``db_path``:
    ``pipeline.convert``'s arguments, errors and guarantees (the output at its final name is
    complete; ``build.resume`` keeps finished shards). observers: none (no record passes
    through this process; a mean is not computed). recorded: the settings and the format's
    output options (splits, synsets, shard sizes...: ``outputs.shards.shard_stages``),
    recorded and compared on resume (``info`` is not recorded). Returns the ConvertSummary
    (``results['shards']``: the ShardResults in order)."""
    if observers:
        raise DatabaseError(f"{backend} shards are written by the workers: no observer can "
                            f"see the records")
    fmt, db_path = output_class(backend), output_path(db_path)
    settings, options = recorded.settings, dict(recorded.output_options or {})
    check_keys(records, options["splits"])
    with OutputLock(lock_path_for(db_path), f"{db_path} is being built"):
        identity, action = plan_build(records, db_path, backend, transform, build, (),
                                      settings, options)
        build_dir = db_path + B.PARTIAL_SUFFIX
        if action in ("done", "publish"):
            if action == "publish":
                B.publish(build_dir, db_path)
            return _summary_of_finished(db_path, action)
        if action == "build":
            B.start_build(build_dir, identity)
        remove_temporaries(build_dir)
        return _build(records, db_path, fmt, transform, build, identity, options)


def _build(records, db_path, fmt, transform, build, identity, options) -> ConvertSummary:
    build_dir = db_path + B.PARTIAL_SUFFIX
    start = time.perf_counter()
    specs = fmt.plan(records, options)
    done = read_shard_log(build_dir)
    done = {name: result for name, result in done.items()
            if name in {spec.name for spec in specs}}
    todo = ((spec, list(records[spec.start:spec.stop]))  # made as sent: one shard's Records
            for spec in specs if spec.name not in done)
    summary = ConvertSummary(db_path=db_path, action="resume" if done else "build",
                             resumed_at=sum(r.count + len(r.skipped) for r in done.values()))
    job = ShardJob(RecordJob(transform, build.max_pixels, fmt, False), fmt, build_dir, options)
    bar = tqdm(total=len(records), initial=summary.resumed_at, unit="img", file=sys.stderr,
               disable=None if build.progress is None else not build.progress,
               desc=os.path.basename(db_path), dynamic_ncols=True)
    try:
        stop = _run_shards(job, todo, build, done, bar)
    finally:
        bar.close()
    finished = [done[spec.name] for spec in specs if spec.name in done]
    summary.written = sum(r.count for r in finished)
    summary.skipped = SkipList(skip for result in finished for skip in result.skipped)
    if len(finished) != len(specs):
        raise BuildInterrupted(f"interrupted: {len(finished)} of {len(specs)} shards are "
                               f"finished in {build_dir}; {B.RESUME_HINT}", stop.signum)
    summary.results["shards"] = _publish(build_dir, db_path, fmt, specs, done, identity,
                                         options)
    boxes = box_totals(summary.results["shards"])
    if boxes:
        summary.results["boxes"] = boxes
    summary.seconds = time.perf_counter() - start
    return summary
