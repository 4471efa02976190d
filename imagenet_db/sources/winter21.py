"""ImageNet winter 2021, the whole of it, as a SOURCE: ``winter21_whole.tar.gz`` read in place.

    SOURCE/winter21_whole.tar.gz   (~1.1 TB) a gzip-compressed tar of 19,167 per-synset tars
                                   winter21_whole/n00004475.tar, ... (nXXXXXXXX_N.JPEG inside)
    SOURCE/words.txt               optional: ImageNet's 'wnid<TAB>gloss' table

Read with the same indexed gzip access as the CLS-LOC tarball (``gzindex``): one pass
decompresses the file once, listing the outer members *and* the members of every synset tar
inside (``nested``), and records the seek points; all of it is cached per user, so the pass
happens once. Each image is then a positioned read of the uncompressed tar. A gzip stream that
ends early, damaged data and a synset tar that is not a tar are one-line errors naming the
file (and member). Labels, relpaths, skips and words: ``wholeimagenet``.
"""
import sys
from typing import Callable, Dict, List, Optional

from imagenet_db.sources.archives.containers import TarGzContainer
from imagenet_db.sources.archives.gzindex import index_targz
from imagenet_db.sources.archives.tarindex import Member
from imagenet_db.sources.base import Dataset
from imagenet_db.sources.checksums import verify_files
from imagenet_db.sources import wholeimagenet as W

NAME = "winter21"
ARCHIVE = "winter21_whole.tar.gz"
TOP = "winter21_whole/"
LOOKS_FOR = f"the whole ImageNet of winter 2021: {ARCHIVE} ({TOP}n00004475.tar, ...)"
# --verify: the MD5 image-net.org publishes for the download
PUBLISHED_MD5: Dict[str, str] = {ARCHIVE: "ab313ce03179fd803a401b02c651c0a2"}
VERIFIES = f"the winter21 archive ({ARCHIVE})"


def detect(source: str) -> bool:
    """True when ``source`` holds winter21_whole.tar.gz."""
    return W.one_archive(source, ARCHIVE) is not None


def _is_synset_tar(name: str) -> bool:
    return name.endswith(".tar")


def _groups(path: str, members: List[Member], skipped: W.Skipped) -> Dict[str, list]:
    """{wnid: synset_files} from the nested index (an outer synset tar, then its members
    named '<outer>/<inner>')."""
    groups: Dict[str, list] = {}
    outer, wnid, files = None, "", []  # the synset tar being grouped, its wnid, its members
    for m in members + [Member("", 0, 0)]:  # a sentinel closes the last group
        if outer is not None and m.name.startswith(outer + "/"):
            files.append((m.name[len(outer) + 1:], m.size, m))
            continue
        if outer is not None:
            groups[wnid] = W.synset_files(files, f"{path}: member {outer}", skipped)
        if not m.name:
            break
        clean = m.name[2:] if m.name.startswith("./") else m.name
        wnid = W.synset_of(clean[len(TOP):] if clean.startswith(TOP) else clean, ".tar", path)
        if wnid in groups:
            raise W.WholeImagenetError(f"{path}: member {m.name} occurs twice")
        outer, files = m.name, []
    return groups


def open_dataset(source: str, log: Optional[Callable[[str], None]] = None) -> Dataset:
    """The whole ImageNet in ``source``/winter21_whole.tar.gz (see module docstring); ``log``
    gets the one line said before the (long, once) index pass, default stderr. Raises
    TarIndexError naming the file for gzip data that is damaged or ends early, a synset tar
    that is not a whole tar; WholeImagenetError for a member that is not a synset tar, one
    twice, a member outside its synset."""
    path = W.one_archive(source, ARCHIVE)
    index = index_targz(path, nested=_is_synset_tar,
                        log=log or (lambda text: print(text, file=sys.stderr)))
    skipped = W.Skipped()
    groups = _groups(path, index.members, skipped)

    def container(files: Dict[str, Member]) -> TarGzContainer:
        located = [Member(rel, m.offset, m.size) for rel, m in files.items()]
        return TarGzContainer(path, index._replace(members=located, small={}))

    return W.whole_dataset(groups, container, source, skipped)


def verify(source: str, progress: Optional[bool] = None,
           log: Callable[[str], None] = print) -> None:
    """``--verify``: the archive's MD5 against image-net.org's (``PUBLISHED_MD5``; reads all
    ~1.1 TB). Raises ChecksumError on a mismatch."""
    verify_files([W.one_archive(source, ARCHIVE)], PUBLISHED_MD5, "winter21", progress, log)
