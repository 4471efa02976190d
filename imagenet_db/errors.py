"""Exceptions that imagenet-db raises for bad input; the CLI turns them into one-line messages."""


class ImagenetDbError(Exception):
    """Base class: a problem with the user's input or environment, reported without a traceback."""


class ListFileError(ImagenetDbError):
    """A list file line is malformed; the message names the file and the 1-based line number."""


class DatabaseError(ImagenetDbError):
    """A database cannot be opened, created, or has inconsistent contents."""


class ShapeMismatchError(ImagenetDbError):
    """Datums of differing channels/height/width where one size is required (mean, --check_size)."""
