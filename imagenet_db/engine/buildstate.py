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
    the mean observer's checkpoint (``observers.mean``).
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
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence, Set, Tuple

import cv2

from imagenet_db import __version__
from imagenet_db.engine.files import (fsync_dir, read_json, remove_path, write_file_atomic,
                                      write_json_atomic)
from imagenet_db.errors import DatabaseError
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS
from imagenet_db.engine.skips import SkipList
from imagenet_db.sources.base import Record
from imagenet_db.sources.records import record_entries
from imagenet_db.text import is_ascii_number

DEFAULT_TXN_SIZE = 1000  # datums per transaction, as Caffe's convert_imageset

MANIFEST_NAME = "imagenet_db.json"
BUILD_RECORD_NAME = "imagenet_db.build.json"
SKIP_LOG_NAME = "imagenet_db.skipped.tsv"
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"
RESUME_HINT = "run the same command again with --resume to continue"
BUILT_RESUME_HINT = "run the command that built it again with --resume to continue"


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs (the flags shared by convert_imageset and create_imagenet).

    overwrite: replace existing outputs (built beside them, swapped in when complete).
    resume: continue an interrupted build, or accept a finished one with the same settings.
    strict: raise SkippedImageError at the first image that has to be skipped.
    txn_size: records per committed transaction (a crash loses only uncommitted work: the
    transaction being written and at most 64 MiB queued behind it; --resume redoes it).
    max_pixels: skip image files whose header declares more pixels (0 = no cap).
    check_size: fail when an image's (C, H, W) differs from the first one's (--check_size).
    workers: threads (None = all cores); progress: tqdm bar (None = only on a terminal);
    executor: a concurrent.futures Executor (e.g. a Dask cluster's) instead of local threads.
    The last three never change the output.
    """
    overwrite: bool = False
    resume: bool = False
    strict: bool = False
    txn_size: int = DEFAULT_TXN_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    check_size: bool = False
    workers: Optional[int] = None
    progress: Optional[bool] = None
    executor: object = None


def list_fingerprint(records: Sequence[Record]) -> str:
    """SHA-256 (hex) of the records in order: '%08d_relpath TAB label LF' each (the Caffe key).
    records: Records, or an iterable of (index, relpath, label) (``record_entries``)."""
    digest = hashlib.sha256()
    entries = records if not isinstance(records, Sequence) else record_entries(records)
    for index, relpath, label in entries:
        digest.update(b"%08d_%s\t%d\n" % (index, relpath.encode("utf-8"), label))
    return digest.hexdigest()


def build_identity(records: Sequence[Record], backend: str, transform: dict, build: BuildOptions,
                   observed: dict, settings: Optional[dict]) -> dict:
    """The build record: every fact that decides the output's contents (see module doc).
    transform: the TransformOptions record. observed: the observers' identities (compute_mean,
    check_size). settings: the caller's extra facts (seed, split...; compared too)."""
    return {
        "tool": "imagenet-db", "version": __version__, "opencv": cv2.__version__,
        "backend": backend, "options": dict(transform), "max_pixels": int(build.max_pixels),
        "check_size": False, "compute_mean": False, **observed,
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


def read_manifest(db_dir: str) -> Optional[dict]:
    """The completion record of a database directory, or None when there is none (an unfinished
    build, or a database not made by imagenet-db)."""
    manifest = read_json(os.path.join(db_dir, MANIFEST_NAME))
    if manifest is not None and manifest.get("complete") is not True:
        return None
    return manifest


# What --overwrite may delete: the files of an LMDB (data.mdb, lock.mdb) or a LevelDB, and
# this tool's own records and temporaries (imagenet_db.*, NAME.tmp-PID...)
_DATABASE_FILE = re.compile(r"^(data\.mdb|lock\.mdb|CURRENT|LOCK|LOG|LOG\.old|MANIFEST-[0-9]+|"
                            r"[0-9]+\.(ldb|sst|log)|imagenet_db\..+|.+\.tmp-[0-9]+.*)$")
_TOOL_RECORD = re.compile(r"^imagenet_db\..+$")
_TEMPORARY = re.compile(r"^.+\.tmp-[0-9]+.*$")

class OutputFiles(Protocol):
    """What ``--overwrite`` asks about an existing output made by this tool; the engine knows
    no format, so the pipeline answers from ``outputs.OUTPUTS``."""

    def is_database(self, backend: str) -> bool:
        """True when the output named ``backend`` in a record is a Datum database (LMDB,
        LevelDB), whose files are known by their names."""

    def made_files(self, path: str, record: dict) -> Optional[Set[str]]:
        """The relpaths the finished output ``path`` of another format holds, by its
        completion record (``Output.made_files``); None when not known (all is this tool's)."""


class _NotListed:
    """``files`` without the lists of what other formats' outputs hold: those outputs count as
    this tool's whole (where nothing is to be deleted, e.g. a finished output being kept)."""

    def __init__(self, files: OutputFiles):
        self.is_database = files.is_database

    @staticmethod
    def made_files(path: str, record: dict) -> None:
        """None: not listed (see the class)."""
        return None


def foreign_entry(path: str, files: Optional[OutputFiles] = None) -> Optional[str]:
    """What stops ``--overwrite`` from replacing ``path``: ``path`` itself when it is not a
    directory (a user's file, a symlink), else the first entry in it (sorted) that is not a
    file of an LMDB/LevelDB or of this tool. For a finished output of another format (a
    folder tree, batch files) with this tool's completion record, the first file or folder
    (walked in sorted order) that is neither one of ``files.made_files(path, record)`` nor
    this tool's record or temporary; an unfinished one (build record only) is this tool's.
    Without ``files`` every output is judged as a database (the strictest). None when
    nothing stops it (or ``path`` does not exist)."""
    if not os.path.lexists(path):
        return None
    if os.path.islink(path) or not os.path.isdir(path):
        return path
    record = tool_record(path)
    if record is not None and files is not None \
            and not files.is_database(str(record.get("backend"))):
        made = files.made_files(path, record) if record.get("complete") is True else None
        return None if made is None else _first_not_made(path, made)
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if not _DATABASE_FILE.match(entry) or os.path.islink(full) or not os.path.isfile(full):
            return full
    return None


def _first_not_made(path: str, made: Set[str]) -> Optional[str]:
    """The first entry under ``path`` (sorted walk) that is not a file of ``made`` (relpaths;
    'name/' a folder) or a folder holding one, this tool's record (at the top) or a
    temporary; else None."""
    folders = {relpath.rstrip("/").rsplit("/", i)[0] for relpath in made
               for i in range(not relpath.endswith("/"), relpath.rstrip("/").count("/") + 1)}
    for folder, dirs, names in os.walk(path):
        rel = os.path.relpath(folder, path).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        dirs.sort()
        for name in sorted(names) + dirs:
            full = os.path.join(folder, name)
            if os.path.islink(full):
                return full
            if os.path.isdir(full):
                ours = prefix + name in folders
            else:
                ours = prefix + name in made or _TEMPORARY.match(name) or \
                    (not prefix and _TOOL_RECORD.match(name))
            if not ours:
                return full
    return None


def tool_record(path: str) -> Optional[dict]:
    """The completion record, else the build record, in the directory ``path`` when it is
    this tool's (``tool`` == 'imagenet-db'); None otherwise."""
    for name in (MANIFEST_NAME, BUILD_RECORD_NAME):
        try:
            record = read_json(os.path.join(path, name))
        except DatabaseError:
            record = None
        if record is not None and record.get("tool") == "imagenet-db":
            return record
    return None


def refuse_foreign(path: str, files: Optional[OutputFiles] = None) -> None:
    """Raise DatabaseError when ``path`` holds anything ``--overwrite`` must not delete
    (see foreign_entry), naming it: --overwrite only replaces what this tool made or a bare
    LMDB/LevelDB (as Caffe's convert_imageset makes them)."""
    foreign = foreign_entry(path, files)
    if foreign is not None:
        what = "is not a directory" if foreign == path else "holds"
        found = "" if foreign == path else f" {foreign}"
        raise DatabaseError(f"{path} {what}{found}, which is not part of a database: refusing "
                            f"to replace it even with --overwrite (it only replaces LMDB/LevelDB "
                            f"databases and what imagenet-db made); move it away or choose "
                            f"another output name")


def has_database_files(path: str) -> bool:
    """True when ``path`` holds LMDB (data.mdb) or LevelDB (CURRENT) files."""
    return any(os.path.exists(os.path.join(path, name)) for name in ("data.mdb", "CURRENT"))


def plan_output(db_path: str, identity: dict, overwrite: bool, resume: bool,
                files: Optional[OutputFiles] = None) -> str:
    """Decide what a build of ``db_path`` has to do, or refuse. Returns one of:

    'build'   start from nothing (a stale DB.partial is discarded only with ``overwrite``);
    'resume'  continue DB.partial (``resume`` and its build record equals ``identity``);
    'publish' DB.partial is complete, only its rename to DB is missing (``resume``);
    'done'    DB is complete and was built with ``identity`` (``resume``, no ``overwrite``).

    Raises DatabaseError, naming the path and what to do, when an existing output would be
    replaced without ``overwrite``, when ``db_path`` or ``DB.partial`` holds anything but a
    database and this tool's files (never replaced, even with ``overwrite``: see
    foreign_entry; ``files`` says which outputs are databases and what a finished output of
    another format holds), or
    when a resume finds other settings, another list, or a directory it did not make.
    """
    build = db_path + PARTIAL_SUFFIX
    parent = os.path.dirname(db_path) or "."
    if not os.path.isdir(parent):
        raise DatabaseError(f"{parent}: output directory does not exist")
    db_exists, partial_exists = os.path.lexists(db_path), os.path.lexists(build)
    if overwrite:  # what would be replaced must be ours (or a bare database)
        for path in (db_path, build):
            refuse_foreign(path, files)
    if resume and partial_exists:
        return _plan_partial(db_path, identity, overwrite, db_exists)
    if db_exists and not overwrite:
        return _plan_existing(db_path, identity, resume, files)
    if partial_exists and not overwrite:
        raise DatabaseError(f"{build} holds an unfinished build; pass --resume to continue it "
                            f"or --overwrite to discard it")
    return "build"


def _refuse_if_different(identity: dict, found: dict, where: str) -> None:
    """Raise DatabaseError when the build record ``found`` (of ``where``) is not ``identity``."""
    diffs = identity_differences(identity, found)
    if diffs:
        raise DatabaseError(f"{where} was built with other settings or input; "
                            f"--resume refused: {'; '.join(diffs)}. Pass --overwrite "
                            f"(without --resume) to rebuild from scratch")


def _plan_partial(db_path: str, identity: dict, overwrite: bool, db_exists: bool) -> str:
    """``plan_output`` under ``resume`` when DB.partial exists: 'publish' (it is complete),
    'resume' (its build record is ``identity``) or 'build' (nothing was written yet)."""
    build = db_path + PARTIAL_SUFFIX
    manifest = read_manifest(build)
    if manifest is not None:
        _refuse_if_different(identity, manifest, build)
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
    _refuse_if_different(identity, record, build)
    return "resume"


def _plan_existing(db_path: str, identity: dict, resume: bool,
                   files: Optional[OutputFiles]) -> str:
    """``plan_output`` when DB exists and is not to be overwritten: 'done' when it is a
    finished build of ``identity`` and ``resume`` accepts it; else DatabaseError."""
    refuse_foreign(db_path, files and _NotListed(files))  # nothing is deleted here
    if not resume:
        raise DatabaseError(f"{db_path} already exists; pass --overwrite to replace it "
                            f"(or --resume to accept it when it is a finished build with "
                            f"the same settings)")
    manifest = read_manifest(db_path) if os.path.isdir(db_path) else None
    if manifest is None:
        raise DatabaseError(f"{db_path} exists but has no completion record "
                            f"({MANIFEST_NAME}): not a finished imagenet-db build; pass "
                            f"--overwrite to replace it")
    _refuse_if_different(identity, manifest, db_path)
    return "done"


def start_build(build: str, identity: dict) -> None:
    """Create an empty build directory holding only the build record (a stale one is removed)."""
    remove_path(build)
    os.mkdir(build)
    write_json_atomic(os.path.join(build, BUILD_RECORD_NAME), identity)


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

    Each skip is appended as 'index TAB relpath TAB reason' and handed to the OS at once (a
    killed build keeps it); ``sync`` makes the skips so far durable, and the pipeline calls it
    before the next datum goes to the writer, so a skip is on disk before the transaction of
    any later datum commits: one fsync per run of consecutive skips, not one per skip (a list
    of a million missing files costs one fsync, not a million).
    """

    def __init__(self, build: str):
        self.path = os.path.join(build, SKIP_LOG_NAME)
        self._file = None
        self.dirty = False  # skips written but not fsync'ed yet

    def restore(self, upto_index: int) -> SkipList:
        """Keep the skips with index <= ``upto_index`` (the rest will be redone), rewrite the log
        with them and return them (a ``SkipList``, in index order)."""
        if not os.path.exists(self.path):
            return SkipList()
        kept = SkipList(entry for entry in read_skip_log(self.path) if entry[0] <= upto_index)
        write_file_atomic(self.path, "".join(f"{kept.index_of(i)}\t{p}\t{r}\n"
                                             for i, (p, r) in enumerate(kept)).encode("utf-8"))
        return kept

    def add(self, index: int, relpath: str, reason: str) -> None:
        """Append one skipped image (index, relpath, reason) to the log (flushed to the OS;
        durable at the next ``sync``)."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        reason = " ".join(reason.split())  # one line, no tabs
        self._file.write(f"{index}\t{relpath}\t{reason}\n")
        self._file.flush()
        self.dirty = True

    def sync(self) -> None:
        """fsync the skips added since the last sync (none: nothing to do)."""
        if self.dirty:
            os.fsync(self._file.fileno())
            self.dirty = False

    def close(self) -> None:
        """Make the skips durable and close the log file."""
        if self._file is not None:
            try:
                self.sync()
            finally:
                self._file.close()
                self._file = None


def skip_report_path(db_path: str) -> str:
    """Where the skip report of ``db_path`` goes: ``DB.skipped.tsv`` beside the database."""
    return os.path.normpath(db_path) + ".skipped.tsv"


def read_skip_report(db_path: str) -> List[Tuple[str, str]]:
    """(relpath, reason) of each line of ``DB.skipped.tsv``; [] when there is none (nothing
    was skipped). Raises OSError when it cannot be read."""
    try:
        with open(skip_report_path(db_path), encoding="utf-8", newline="\n") as f:
            return [tuple(line.rstrip("\n").rpartition("\t")[::2]) for line in f]
    except FileNotFoundError:
        return []


def write_skip_report(db_path: str, skipped: Sequence[Tuple[str, str]]) -> Optional[str]:
    """Write ``DB.skipped.tsv`` (relpath TAB reason per line) beside the database, atomically;
    remove a stale one when nothing was skipped. Returns the report's path or None."""
    report = skip_report_path(db_path)
    if not skipped:
        remove_path(report)
        return None
    write_file_atomic(report, "".join(f"{relpath}\t{reason}\n" for relpath, reason in skipped)
                      .encode("utf-8"))
    return report


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
        if is_ascii_number(index) and relpath:
            entries.append((int(index), relpath, reason))
    return sorted(entries)


