"""Files written so that a crash never leaves a half-written one under its final name.

Every output file goes through a synced temporary (``NAME.tmp-PID``) renamed into place, and
the directory is synced so the rename itself is durable. Temporaries of killed processes are
removed by ``remove_stale_temporaries``.
"""
import json
import os
import shutil
from typing import Optional, Sequence

from imagenet_db.errors import DatabaseError
from imagenet_db.text import is_ascii_number


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


def write_file_atomic(path: str, data: bytes, tmp: Optional[str] = None) -> None:
    """Write ``data`` to ``path`` through a synced temporary file renamed into place, then sync
    the folder. tmp: the temporary's path (default ``NAME.tmp-PID`` beside ``path``)."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}"
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


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (also one of another user)."""
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
        if sep and is_ascii_number(pid) and (names is None or name in names) \
                and not pid_alive(int(pid)):
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


def remove_path(path: str) -> None:
    """Remove a file or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):

        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
