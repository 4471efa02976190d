"""Exceptions that imagenet-db raises for bad input; the CLI turns them into one-line messages."""


class ImagenetDbError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback."""


class ListFileError(ImagenetDbError):
    """A list file line is malformed; the message names the file and the 1-based line number."""


class DatabaseError(ImagenetDbError):
    """A database cannot be opened, created, or has inconsistent contents."""


class DamagedDatabaseError(DatabaseError):
    """A database opens (or nearly) but its files are damaged: a truncated data.mdb, a page or
    block that fails LMDB's or LevelDB's checks. ``verify`` reports it as a problem."""


class ShapeMismatchError(ImagenetDbError):
    """Datums of differing channels/height/width where one size is required (mean, --check_size)."""


class SkippedImageError(ImagenetDbError):
    """An image was skipped (unreadable, undecodable, corrupt, too large) under --strict."""


class BuildInterrupted(KeyboardInterrupt):
    """A build stopped by SIGINT/SIGTERM after committing its work; ``signum`` is the signal.
    The message says how much is committed and how to resume. (A KeyboardInterrupt, so code
    that handles Ctrl-C keeps working.)"""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
