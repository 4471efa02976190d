"""Stopping a build cleanly on Ctrl-C (SIGINT) or SIGTERM.

Inside ``with GracefulStop() as stop:`` the first SIGINT/SIGTERM only sets ``stop.signum``;
the build loop checks it between images, commits what it has and raises BuildInterrupted.
A second signal interrupts at once (KeyboardInterrupt); what was committed stays resumable.
Handlers are installed only in the main thread (Python delivers signals there) and the old
ones are restored on exit.
"""
import signal
import threading
from typing import Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager turning the first SIGINT/SIGTERM into a stop request (``signum``)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        """True once SIGINT/SIGTERM was received inside the block."""
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
