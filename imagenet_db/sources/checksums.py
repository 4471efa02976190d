"""``--verify``'s helpers: the MD5 of a distribution's files against the values published
with them. Each distribution module keeps its own table of file names and MD5s beside its
parser and calls ``verify_files`` from its ``verify`` (``sources.verify_source`` dispatches).

Off by default: it reads every byte (~147 GB for the real ILSVRC2012 archives, a few minutes
per 10 GB at disk speed), with a tqdm progress bar in bytes.
"""
import hashlib
import os
import sys
from typing import Callable, Dict, Optional, Sequence

from tqdm import tqdm

from imagenet_db.errors import ImagenetDbError

CHUNK = 4 << 20  # 4 MiB reads


class ChecksumError(ImagenetDbError):
    """A file's MD5 differs from the published one; the message names the file."""


def md5_file(path: str, progress: Optional[bool] = None) -> str:
    """Hex MD5 of the file at ``path``, read in 4 MiB chunks (hashlib releases the GIL).
    progress: tqdm bar in bytes (None = only on a terminal). Raises ImagenetDbError if the
    file cannot be read."""
    digest = hashlib.md5()
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True,
                                         unit_divisor=1024, file=sys.stderr,
                                         desc=f"md5 {os.path.basename(path)}",
                                         disable=None if progress is None else not progress) as bar:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        raise ImagenetDbError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def verify_files(paths: Sequence[str], expected: Dict[str, str], dataset: str,
                 progress: Optional[bool] = None, log: Callable[[str], None] = print) -> None:
    """Check the MD5 of each file in ``paths`` against ``expected`` (file name -> hex MD5,
    the table a distribution module keeps beside its parser), logging one line per file.
    Every file is checked; raises ChecksumError naming each mismatching file with the
    expected and actual digests (``dataset`` names the distribution in that message)."""
    bad = []
    for path in paths:
        name = os.path.basename(path)
        actual = md5_file(path, progress)
        want = expected.get(name)
        if want is None:
            log(f"{path}: md5 {actual} (no published value to compare)")
        elif actual != want.lower():
            bad.append(f"{path}: MD5 {actual} differs from the published {want}")
        else:
            log(f"{path}: MD5 {actual} OK")
    if bad:
        raise ChecksumError("; ".join(bad) + " (corrupt or incomplete download, or not the "
                            f"{dataset} file)")
