"""The state of a database build, kept inside ``DB.partial`` so that a build can be resumed.

A build of DB happens in the directory ``DB.partial``; besides the LMDB/LevelDB files it holds:

``imagenet_db.build.json``
    the build record, written before the first datum: everything that decides the database's
    bytes (tool and OpenCV versions, backend, transform options, --max_pixels, --check_size,
    whether the mean is computed, the number of records and the SHA-256 of the ordered
    (key, label) list, plus the caller's settings such as seed/shuffle/split). ``--resume``
    refuses to continue a build whose record differs, naming each difference.
``imagenet_db.skipped.tsv``
    one ``index TAB relpath TAB reason`` line per skipped image, fsync'ed when written (skips
    are rare), so skips already behind a committed transaction survive a crash.
``imagenet_db.mean_sum.npz``
    a checkpoint of the exact uint64 pixel sum (count, last index) taken right after a commit,
    at most every ``MEAN_CHECKPOINT_SECONDS``.
``imagenet_db.json``
    the completion record (manifest), written last: build record + counts. A directory without
    it is never treated as a finished database.

Resuming: the database itself is the authority on progress. Its last key gives the index k of
the last committed record (keys are ``%08d_relpath``); records up to k are done, whether
written or skipped. Skip lines with index > k are dropped (they are redone); the mean is the
checkpoint plus the datums committed after the checkpoint, read back from the database. So a
crash between a commit and any side file is harmless, and the resumed database has exactly the
keys and values of an uninterrupted build. The image files' contents are not fingerprinted
(that would mean reading them all): the list is.
"""
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db import __version__
from imagenet_db.outputs.datum import datum_to_chw
from imagenet_db.errors import DatabaseError
from imagenet_db.observers.mean import MeanAccumulator
from imagenet_db.protos import Datum
from imagenet_db.sources.base import Record

MANIFEST_NAME = "imagenet_db.json"
BUILD_RECORD_NAME = "imagenet_db.build.json"
SKIP_LOG_NAME = "imagenet_db.skipped.tsv"
MEAN_CHECKPOINT_NAME = "imagenet_db.mean_sum.npz"
MEAN_NAME = "imagenet_db.observers.mean.npy"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"
MEAN_CHECKPOINT_SECONDS = 30.0
RESUME_HINT = "run the same command again with --resume to continue"


def list_fingerprint(records: Sequence[Record]) -> str:
    """SHA-256 (hex) of the records' keys and labels in order: 'key TAB label LF' each."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(b"%s\t%d\n" % (record.key, record.label))
    return digest.hexdigest()


def key_index(key: bytes, where: str = "") -> int:
    """The record index of a Caffe key ``%08d_relpath``. Raises DatabaseError for other keys."""
    digits, sep, _ = key.partition(b"_")
    if not sep or not digits.isdigit():
        raise DatabaseError(f"{where}key {key[:60]!r} is not of Caffe's form '%08d_relpath'")
    return int(digits)


def build_identity(records: Sequence[Record], backend: str, options: dict, max_pixels: int,
                   check_size: bool, compute_mean: bool, settings: Optional[dict]) -> dict:
    """The build record: every fact that decides the database's keys and values (see module doc).
    options: the TransformOptions fields. settings: the caller's extra facts (compared too)."""
    return {
        "tool": "imagenet-db", "version": __version__, "opencv": cv2.__version__,
        "backend": backend, "options": dict(options), "max_pixels": int(max_pixels),
        "check_size": bool(check_size), "compute_mean": bool(compute_mean),
        "records": len(records), "list_sha256": list_fingerprint(records),
        **(settings or {}),
    }


def _flatten(obj: dict, prefix: str = "") -> Dict[str, object]:
    out = {}
    for name, value in obj.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def identity_differences(wanted: dict, found: dict) -> List[str]:
    """Human-readable differences between this run's build record and a stored one, such as
    "options.resize_width: 64 there, 32 now" (fields of ``found`` that are not part of the
    record, such as a manifest's counts, are ignored)."""
    flat_found = _flatten(found)
    out = []
    for name, value in _flatten(wanted).items():
        if name not in flat_found:
            out.append(f"{name}: not recorded there, {value!r} now")
        elif flat_found[name] != value:
            if name == "list_sha256":
                out.append("the list (its keys or labels) has changed")
            else:
                out.append(f"{name}: {flat_found[name]!r} there, {value!r} now")
    return out


def fsync_dir(path: str) -> None:
    """fsync a directory so that renames in it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file renamed into place."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str, names: Optional[Sequence[str]] = None) -> None:
    """Delete ``NAME.tmp-PID*`` files left in ``folder`` by killed processes (PID not alive),
    for the given file names (None: any name). Temporaries of running processes are kept."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        name, sep, rest = entry.partition(".tmp-")
        pid = rest.split(".")[0]
        if sep and pid.isdigit() and (names is None or name in names) \
                and not _pid_alive(int(pid)):
            remove_path(os.path.join(folder, entry))


def write_json_atomic(path: str, obj: dict) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see write_file_atomic)."""
    write_file_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode("utf-8") + b"\n")


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``; None when the file does not exist. Raises DatabaseError
    for a file that is not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DatabaseError(f"{path}: unreadable build record: {exc}") from None
    if not isinstance(obj, dict):
        raise DatabaseError(f"{path}: not a build record")
    return obj


def read_manifest(db_dir: str) -> Optional[dict]:
    """The completion record of a database directory, or None when there is none (an unfinished
    build, or a database not made by imagenet-db)."""
    manifest = read_json(os.path.join(db_dir, MANIFEST_NAME))
    if manifest is not None and manifest.get("complete") is not True:
        return None
    return manifest


def has_database_files(path: str) -> bool:
    """True when ``path`` holds LMDB (data.mdb) or LevelDB (CURRENT) files."""
    return any(os.path.exists(os.path.join(path, name)) for name in ("data.mdb", "CURRENT"))


def plan_output(db_path: str, identity: dict, overwrite: bool, resume: bool) -> str:
    """Decide what a build of ``db_path`` has to do, or refuse. Returns one of:

    'build'   start from nothing (a stale DB.partial is discarded only with ``overwrite``);
    'resume'  continue DB.partial (``resume`` and its build record equals ``identity``);
    'publish' DB.partial is complete, only its rename to DB is missing (``resume``);
    'done'    DB is complete and was built with ``identity`` (``resume``, no ``overwrite``).

    Raises DatabaseError, naming the path and what to do, when an existing output would be
    replaced without ``overwrite`` or a resume finds other settings, another list, or a
    directory it did not make.
    """
    build = db_path + PARTIAL_SUFFIX
    parent = os.path.dirname(db_path) or "."
    if not os.path.isdir(parent):
        raise DatabaseError(f"{parent}: output directory does not exist")
    db_exists, partial_exists = os.path.lexists(db_path), os.path.lexists(build)

    def refuse_if_different(found: dict, where: str) -> None:
        diffs = identity_differences(identity, found)
        if diffs:
            raise DatabaseError(f"{where} was built with other settings or input; "
                                f"--resume refused: {'; '.join(diffs)}. Pass --overwrite "
                                f"(without --resume) to rebuild from scratch")

    if resume and partial_exists:
        manifest = read_manifest(build)
        if manifest is not None:
            refuse_if_different(manifest, build)
            if db_exists and not overwrite:
                raise DatabaseError(f"{build} is a complete replacement for {db_path}, which "
                                    f"exists; pass --overwrite --resume to swap it in")
            return "publish"
        record = read_json(os.path.join(build, BUILD_RECORD_NAME))
        if record is None:
            if has_database_files(build):
                raise DatabaseError(f"{build} has no build record (not made by this tool?); "
                                    f"pass --overwrite to discard it")
            return "build"  # the previous run died before writing anything
        refuse_if_different(record, build)
        return "resume"
    if db_exists and not overwrite:
        if not resume:
            raise DatabaseError(f"{db_path} already exists; pass --overwrite to replace it "
                                f"(or --resume to accept it when it is a finished build with "
                                f"the same settings)")
        manifest = read_manifest(db_path) if os.path.isdir(db_path) else None
        if manifest is None:
            raise DatabaseError(f"{db_path} exists but has no completion record "
                                f"({MANIFEST_NAME}): not a finished imagenet-db build; pass "
                                f"--overwrite to replace it")
        refuse_if_different(manifest, db_path)
        return "done"
    if partial_exists and not overwrite:
        raise DatabaseError(f"{build} holds an unfinished build; pass --resume to continue it "
                            f"or --overwrite to discard it")
    return "build"


def start_build(build: str, identity: dict) -> None:
    """Create an empty build directory holding only the build record (a stale one is removed)."""
    remove_path(build)
    os.mkdir(build)
    write_json_atomic(os.path.join(build, BUILD_RECORD_NAME), identity)


def remove_path(path: str) -> None:
    """Remove a file or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def publish(build: str, db_path: str) -> None:
    """Move a finished build to ``db_path``. An old database there is first renamed to
    ``DB.replaced`` and deleted only after the new one is in place, so at every moment one
    complete database exists (a crash in between leaves DB.replaced to delete by hand)."""
    old = db_path + REPLACED_SUFFIX
    remove_path(old)
    if os.path.lexists(db_path):
        os.rename(db_path, old)
    os.rename(build, db_path)
    fsync_dir(os.path.dirname(db_path) or ".")
    remove_path(old)


class SkipLog:
    """The skipped images of a build (``imagenet_db.skipped.tsv`` in the build directory).

    Each skip is appended as 'index TAB relpath TAB reason' and fsync'ed at once, so it is on
    disk before the transaction of any later datum commits.
    """

    def __init__(self, build: str):
        self.path = os.path.join(build, SKIP_LOG_NAME)
        self._file = None

    def restore(self, upto_index: int) -> List[Tuple[int, str, str]]:
        """Keep the skips with index <= ``upto_index`` (the rest will be redone), rewrite the log
        with them and return them as (index, relpath, reason) in index order."""
        if not os.path.exists(self.path):
            return []
        kept = [entry for entry in read_skip_log(self.path) if entry[0] <= upto_index]
        write_file_atomic(self.path, "".join(f"{i}\t{p}\t{r}\n" for i, p, r in kept)
                          .encode("utf-8"))
        return kept

    def add(self, index: int, relpath: str, reason: str) -> None:
        """Append one skipped image (index, relpath, reason) to the log, fsync'ed."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        reason = " ".join(reason.split())  # one line, no tabs
        self._file.write(f"{index}\t{relpath}\t{reason}\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the log file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_skip_log(path: str) -> List[Tuple[int, str, str]]:
    """(index, relpath, reason) entries of a build's skip log; [] when there is none. A last
    line cut short by a crash (no newline) is ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.split("\n")[:-1]:
        index, _, rest = line.partition("\t")
        relpath, _, reason = rest.rpartition("\t")
        if index.isdigit() and relpath:
            entries.append((int(index), relpath, reason))
    return sorted(entries)


def save_mean_checkpoint(build: str, acc: MeanAccumulator, last_index: int) -> None:
    """Checkpoint the exact pixel sum of all records up to ``last_index`` (all committed)."""
    if acc.total is None:
        return
    path = os.path.join(build, MEAN_CHECKPOINT_NAME)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    with open(tmp, "wb") as f:
        np.savez(f, total=acc.total, count=np.int64(acc.count), last_index=np.int64(last_index),
                 first_key=np.array(acc.first_key or ""))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_mean_checkpoint(build: str, upto_index: int) -> Tuple[MeanAccumulator, int]:
    """The checkpointed accumulator and its last index; a fresh one and -1 when there is no
    usable checkpoint (none, unreadable, or beyond ``upto_index``)."""
    acc = MeanAccumulator()
    try:
        with np.load(os.path.join(build, MEAN_CHECKPOINT_NAME)) as z:
            last_index = int(z["last_index"])
            if last_index <= upto_index:
                acc.total, acc.count = z["total"].copy(), int(z["count"])
                acc.first_key = str(z["first_key"]) or None
                return acc, last_index
    except (OSError, ValueError, KeyError):
        pass
    return MeanAccumulator(), -1


@dataclass
class Progress:
    """Where a resumed build stands. next_position: first record (list position) to do;
    written: datums in the database; skipped: (index, relpath, reason) so far; acc: mean sum
    of the written datums (None when no mean is computed); first_shape: (C, H, W) of the first
    datum (for --check_size); reread: datums read back to rebuild the mean."""
    next_position: int = 0
    written: int = 0
    skipped: List[Tuple[int, str, str]] = field(default_factory=list)
    acc: Optional[MeanAccumulator] = None
    first_shape: Optional[tuple] = None
    reread: int = 0


def _parse_datum(value: bytes, key: bytes, where: str) -> Datum:
    datum = Datum()
    try:
        datum.ParseFromString(value)
    except Exception:
        raise DatabaseError(f"{where}: value of key {key[:60]!r} is not a Caffe Datum") from None
    return datum


def restore_progress(build: str, records: Sequence[Record], writer, compute_mean: bool,
                     check_size: bool) -> Progress:
    """Rebuild the state of an interrupted build from its directory and open ``writer``.

    Checks that the database's last key is the key of a record of this list (else raises
    DatabaseError: the partial database does not belong to this list).
    """
    progress = Progress(acc=MeanAccumulator() if compute_mean else None)
    last_key = writer.last_key
    last_index = -1
    if last_key is not None:
        last_index = key_index(last_key, f"{build}: ")
        if last_index >= len(records) or records[last_index].key != last_key:
            raise DatabaseError(f"{build}: its last key {last_key[:60]!r} is not in the list; "
                                f"the partial database belongs to another list")
        progress.written = writer.entries()
    log = SkipLog(build)
    progress.skipped = log.restore(last_index)
    if progress.written + len(progress.skipped) != last_index + 1:
        raise DatabaseError(f"{build}: {progress.written} datums and {len(progress.skipped)} "
                            f"skips do not account for records 0..{last_index}; the partial "
                            f"build is damaged, pass --overwrite to start again")
    progress.next_position = last_index + 1
    if progress.written and check_size:
        key, value = next(iter(writer.items()))
        datum = _parse_datum(value, key, build)
        progress.first_shape = (datum.channels, datum.height, datum.width)
    if progress.written and compute_mean:
        acc, done = load_mean_checkpoint(build, last_index)
        if done + 1 <= last_index:
            for key, value in writer.items(records[done + 1].key):
                name = key.decode("utf-8", "replace")
                acc.add(datum_to_chw(_parse_datum(value, key, build), name), name)
                progress.reread += 1
                if key == last_key:
                    break
        progress.acc = acc
    return progress
