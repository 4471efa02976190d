"""Two text rules shared by every reader and writer of names, numbers and line files.

**ASCII numbers.** ImageNet's names and numbers (wnid ``n01440764``, ``ILSVRC2012_val_00000001``,
ILSVRC2012_IDs, labels) are ASCII, as the devkit and Caffe write them. Python's ``\\d``,
``str.isdigit`` and ``int()`` also take other scripts' digits (Arabic-Indic ``٠١``, so a
file ``ILSVRC2012_val_٠٠٠٠٠٠٠١.JPEG`` would be image 1), and ``int()`` takes ``+7``, `` 7``
and ``1_000``: names are matched with ``[0-9]`` (see ``WNID``) and a number is checked with
``is_ascii_number`` before ``int()``.

**One line discipline.** A value written one per line (synsets.txt, synset_words.txt, train.txt,
val.txt, the skip and build logs) never holds a character that some reader takes as a line
end: none of those ``str.splitlines()`` splits on (``\\n \\r \\v \\f \\x1c \\x1d \\x1e \\x85
\\u2028 \\u2029``), no NUL and no other C0/C1 control character (a tab is allowed: Caffe's list
format separates with a space). Such values are refused where they are taken in
(``line_problem``: wnids, words, file names); files are split on ``\\n`` only
(``split_lines``; an input file's CRLF line ends lose their ``\\r`` first), never with
``splitlines()``.
"""
import re
from typing import List, Optional

from imagenet_db.errors import ImagenetDbError

WNID = re.compile(r"n[0-9]{8}\Z")  # use with .match: 'n' and eight ASCII digits, nothing after
_NOT_ONE_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def is_ascii_number(text) -> bool:
    """True when ``text`` (str or bytes) is one or more ASCII digits 0-9 and nothing else."""
    return bool(text) and text.isascii() and text.isdigit()


def line_problem(value: str) -> Optional[str]:
    """What keeps ``value`` from being one line of a text file ('a line break', 'a NUL byte',
    'a control character (U+000C)'), or None when it can be."""
    found = _NOT_ONE_LINE.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\0":
        return "a NUL byte"
    if char in "\n\r":
        return "a line break"
    return f"a control character (U+{ord(char):04X})"


def split_lines(text: str, crlf: bool = False) -> List[str]:
    """The lines of a text file, split on ``\\n`` only; the newline ending the last line makes
    no empty line after it. crlf: also drop one ``\\r`` before each ``\\n`` (input files
    written on Windows)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines] if crlf else lines


def check_one_line(value: str, where: str, error=ImagenetDbError) -> str:
    """``value`` when ``line_problem`` finds nothing; else raises ``error`` (an
    ImagenetDbError class) naming ``where`` (file and line or entry) and the character."""
    problem = line_problem(value)
    if problem:
        raise error(f"{where}: {value!r} holds {problem}, which a file of one value per line "
                    f"cannot hold (every later line would shift): correct it, or download the "
                    f"file again")
    return value
