"""``--verify``: MD5 of the ILSVRC2012 archives against the values published with them.

Off by default: it reads every byte (~147 GB for the real archives, a few minutes per
10 GB at disk speed), with a tqdm progress bar in bytes. The published MD5s are those
listed on the ILSVRC2012 download page (and checked by torchvision's ImageNet dataset).
"""
import hashlib
import os
import sys
from typing import Callable, Dict, Optional

from tqdm import tqdm

from imagenet_db.sources.ilsvrc2012 import DEVKIT_TGZ, TRAIN_TAR, VAL_TAR, ArchivePaths, find_archives
from imagenet_db.errors import ImagenetDbError

PUBLISHED_MD5: Dict[str, str] = {
    TRAIN_TAR: "1d675b47d978889d74fa0da5fadfb00e",
    VAL_TAR: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT_TGZ: "fa75699e90414af021442c21a62c3abf",
}
CHUNK = 4 << 20  # 4 MiB reads


class ChecksumError(ImagenetDbError):
    """An archive's MD5 differs from the published one; the message names the file."""


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


def verify_archives(paths: ArchivePaths, expected: Optional[Dict[str, str]] = None,
                    progress: Optional[bool] = None, log: Callable[[str], None] = print) -> None:
    """Check the MD5 of each archive against ``expected`` (file name -> hex MD5; default:
    PUBLISHED_MD5). Every file is checked; raises ChecksumError naming each mismatching
    file with the expected and actual digests."""
    expected = PUBLISHED_MD5 if expected is None else expected
    bad = []
    for path in paths.all():
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
                            "ILSVRC2012 file)")


def verify_source(source: str, progress: Optional[bool] = None,
                  log: Callable[[str], None] = print) -> None:
    """``--verify`` for a SOURCE folder: verify_archives on its ILSVRC2012 archives.
    Raises ImagenetDbError when SOURCE holds no archives (an extracted tree has no published
    checksums), ChecksumError on a mismatch."""
    paths = find_archives(source)
    if paths is None:
        raise ImagenetDbError(f"{source}: --verify checks the ILSVRC2012 archives "
                              f"({TRAIN_TAR}, ...), and this folder holds none")
    verify_archives(paths, progress=progress, log=log)
