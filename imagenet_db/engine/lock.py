"""One build per output: an OS lock held by the process that writes an output, for its life.

Two builds of the same database would corrupt it (one deleting the other's ``DB.partial``,
or both appending to one LMDB), so every command that writes an output first takes an
exclusive ``fcntl.flock`` on a lock file and keeps it until it has finished (or failed):

* a database ``DB`` (convert_imageset, each database of create_imagenet): ``DB.lock`` beside it;
* a mean file ``OUT`` (compute_image_mean): ``OUT.lock`` beside it;
* a folder filled by several steps that the user may share with other files (create_imagenet's
  OUTDIR, extract's DEST): ``FOLDER/.imagenet_db.lock`` inside it.

The lock file holds the owner's PID, so a second build is refused with "... is being built by
process PID". The kernel releases an flock when its process dies, however it dies (SIGKILL,
power loss aside), so a killed build never leaves a stale lock: the next build (or
``--resume``) simply takes it. The owner deletes the lock file when it is done. flock works on
local filesystems and on NFSv4 (Linux emulates it with byte-range locks there).
"""
import fcntl
import os
from typing import Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.text import is_ascii_number

LOCK_SUFFIX = ".lock"
FOLDER_LOCK_NAME = ".imagenet_db.lock"


class OutputBusyError(ImagenetDbError):
    """Another live process holds the output's lock; the message names it and its PID."""


def lock_path_for(output: str) -> str:
    """The lock file of an output file or database directory: ``OUTPUT.lock`` beside it."""
    return os.path.abspath(output) + LOCK_SUFFIX


def folder_lock_path(folder: str) -> str:
    """The lock file of a shared output folder: ``FOLDER/.imagenet_db.lock`` inside it."""
    return os.path.join(folder, FOLDER_LOCK_NAME)


class OutputLock:
    """Context manager holding an exclusive flock on ``path`` (created if missing).

    what: how the output is named in the refusal, e.g. "out/ilsvrc12_train_lmdb is being built".
    Raises OutputBusyError ("{what} by process PID; ...") when another process holds it, and
    ImagenetDbError when the lock file cannot be created (e.g. a read-only folder).
    """

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        """Take the lock (without waiting); see the class docstring for the errors."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise ImagenetDbError(f"{self.path}: cannot create the lock file: "
                                      f"{exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                who = f"process {owner}" if is_ascii_number(owner) else "another process"
                raise OutputBusyError(f"{self.what} by {who} (lock {self.path}); wait for it "
                                      f"to finish or stop it, then run again") from None
            # the previous owner deletes the file when done: make sure ours is still the one
            # at the path, else a third process could lock a new file meanwhile
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file and drop the lock (deleting first, while still holding it)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
