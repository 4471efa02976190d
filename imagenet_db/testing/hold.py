"""Hold a build at a chosen image, whatever the machine's speed (for failure tests).

A failure test (kill a worker, lose the scheduler, SIGTERM, a second build refused) needs the
build to be mid-way when it acts. Waiting for "N records written" and then freezing the build
races the build on a loaded machine: it may finish first. :class:`HeldImage` instead replaces
one image file by a named pipe (FIFO). Whoever reads that image (a thread, a worker process,
a Dask worker on this machine) blocks in ``open()`` until the test calls :meth:`release`,
which feeds the pipe the image's real bytes. Everything listed before the held image can be
written; nothing after it can, so the build cannot end while the image is held.
"""
import os
import shutil
import threading
from pathlib import Path


def hardlinked_copy(src, dst) -> Path:
    """A copy of the folder ``src`` at ``dst`` whose files are hard links (cheap, same bytes),
    so that a test may replace one file without touching a shared fixture."""
    shutil.copytree(src, dst, copy_function=os.link)
    return Path(dst)


class HeldImage:
    """The image file at ``path`` replaced by a FIFO until :meth:`release` or :meth:`restore`.

    ``path`` must be a file the test owns (see :func:`hardlinked_copy`); its bytes are kept.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.data = self.path.read_bytes()
        self.path.unlink()
        os.mkfifo(self.path)

    def release(self) -> None:
        """Let the reader go on: write the real bytes into the pipe from a daemon thread
        (opening a FIFO for writing blocks until its reader opens it)."""
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        with open(self.path, "wb") as pipe:
            pipe.write(self.data)

    def restore(self) -> None:
        """Put the real file back at ``path`` (atomically), e.g. before a ``--resume`` once the
        held build is gone; a reader already blocked on the pipe stays blocked."""
        tmp = self.path.with_name(self.path.name + ".restore")
        tmp.write_bytes(self.data)
        os.replace(tmp, self.path)
