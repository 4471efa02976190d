"""Caffe image list files: one ``relpath label`` per line (train.txt, val.txt).

Read as Caffe's ``convert_imageset`` reads them: the label is what follows the *last* space,
so paths may contain spaces. Stricter than Caffe (whose ``atoi`` turns garbage into label 0):
a line without a label, a label that is not ASCII digits ('+7', '1_000' and other scripts'
digits, which Python's int() would take, are refused), a negative or out-of-int32 label, a
path holding a line break, NUL or other control character (``imagenet_db.text``: lines end
at '\\n' only), or a path listed twice raises ListFileError naming the file and the
1-based line number. CRLF endings and a UTF-8 BOM
are accepted; blank lines are ignored; a list with no entries is an error.
``list_records`` makes the records of such a list under a root folder: the source of
``convert_imageset``.
"""
import codecs
import os
import re
from array import array
from typing import Callable, Iterable, List, Optional, Tuple

from imagenet_db.errors import ListFileError
from imagenet_db.sources.records import (FolderLoader, ListColumns, RecordColumns,
                                         first_repeat)
from imagenet_db.text import line_problem

INT32_MAX = 2**31 - 1
_LABEL = re.compile(r"-?[0-9]+\Z")  # what Caffe's list format means by a label


def parse_list_line(line: str, where: str) -> Tuple[str, int]:
    """Split one list line into (relpath, label). ``where`` ("file:line") prefixes errors."""
    pos = line.rfind(" ")
    if pos <= 0:
        raise ListFileError(f"{where}: expected 'relpath label', got {line!r}")
    relpath, label_text = line[:pos], line[pos + 1:]
    problem = line_problem(relpath)
    if problem:  # the one set refused wherever names are taken in (imagenet_db.text)
        raise ListFileError(f"{where}: the path {relpath!r} holds {problem}, which a list "
                            f"file line cannot hold: rename the file")
    if not _LABEL.match(label_text):  # not int(): it also takes '+7', '1_000', other digits
        raise ListFileError(f"{where}: label {label_text!r} is not an integer (ASCII digits)")
    label = int(label_text)
    if not 0 <= label <= INT32_MAX:
        raise ListFileError(f"{where}: label {label} is outside 0..{INT32_MAX}")
    return relpath, label


def read_list(path: str, check_path: Optional[Callable[[str], Optional[str]]] = None
              ) -> List[Tuple[str, int]]:
    """Read a Caffe list file into [(relpath, label), ...] in file order.

    check_path: the output's own limit on a path (e.g. ``Output.record_problem``: LMDB's key
    size), returning why a path cannot be stored (or None); checked on every line, before any
    image is read. Raises ListFileError (file and line named) for malformed lines, duplicate
    paths, paths check_path refuses or an empty list, and for a file that cannot be read.
    ``read_list_columns`` reads the same into compact columns (for long lists).
    """
    columns = read_list_columns(path, check_path)
    return list(zip(columns.names(0, len(columns)), columns.labels.tolist()))


def read_list_columns(path: str, check_path: Optional[Callable[[str], Optional[str]]] = None
                      ) -> ListColumns:
    """``read_list`` into ``ListColumns`` (relpaths in one blob, int32 labels): ~50 bytes per
    line of an ImageNet list, read line by line; the same checks and errors, the first bad
    line (in file order) being the one reported. Duplicates are found by sorting hashes
    (``records.first_repeat``) after the lines are read."""
    columns, lines = ListColumns(), array("i")
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):  # binary: split on b'\n' only
                line = _decode_line(raw, number)
                if not line.strip():
                    continue
                try:
                    relpath, label = parse_list_line(line, f"{path}:{number}")
                    problem = check_path(relpath) if check_path else None
                    if problem:
                        raise ListFileError(f"{path}:{number}: {problem}")
                except ListFileError:
                    _refuse_repeats(path, columns, lines)  # an earlier line is reported first
                    raise
                columns.append(relpath, label)
                lines.append(number)
    except (OSError, UnicodeDecodeError) as exc:
        _refuse_repeats(path, columns, lines)
        raise ListFileError(f"{path}: cannot read list file: {exc}") from None
    if not lines:
        raise ListFileError(f"{path}: the list file has no entries")
    _refuse_repeats(path, columns, lines)
    return columns


def _decode_line(raw: bytes, number: int) -> str:
    """One line of a list file as text: UTF-8 (a BOM before line 1 dropped), without its
    '\n' and the '\r's before it (CRLF endings). Raises UnicodeDecodeError."""
    if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    return raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8")


def _refuse_repeats(path: str, columns: ListColumns, lines: array) -> None:
    """Raise ListFileError naming the first line that repeats an earlier line's path."""
    if len(lines) < 2:
        return
    repeat = first_repeat(columns.freeze())
    if repeat is not None:
        first, again = repeat
        raise ListFileError(f"{path}:{lines[again]}: {columns.relpath(again)!r} is listed "
                            f"again (first at line {lines[first]})")


def list_text(entries: Iterable[Tuple[str, int]]) -> str:
    """The text of a Caffe list file: 'relpath label\\n' per entry, in the given order."""
    return "".join(f"{relpath} {label}\n" for relpath, label in entries)


def write_list(path: str, entries: Iterable[Tuple[str, int]]) -> None:
    """Write [(relpath, label), ...] as a Caffe list file ('relpath label\\n', '/' separators),
    atomically (a temporary file renamed into place)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for relpath, label in entries:
            f.write(f"{relpath} {label}\n")
    os.replace(tmp, path)


def list_records(root: str, entries) -> RecordColumns:
    """Records for list entries ((relpath, label) pairs or ``ListColumns``) whose files live
    under ``root``; record i gets key number i (so shuffle ``entries`` first, as
    convert_imageset does, or see ``sources.records.RecordColumns``'s ``order``)."""
    if not isinstance(entries, ListColumns):
        entries = ListColumns.from_entries(entries)
    return RecordColumns(entries, FolderLoader(root))
