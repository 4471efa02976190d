"""ImageNet fall 2011, the whole of it, as a SOURCE: ``fall11_whole.tar`` read in place.

    SOURCE/fall11_whole.tar   (1.31 TB) a plain tar of 21,841 per-synset tars n00004475.tar,
                              ..., each holding nXXXXXXXX_N.JPEG files (14,197,122 images;
                              some synset tars are empty)
    SOURCE/words.txt          optional: ImageNet's 'wnid<TAB>gloss' table (else the shipped
                              one, ``wholeimagenet``)

The same shape as ILSVRC2012_img_train.tar, 21.8 times the members, and read the same way:
the outer tar and every inner tar's headers are indexed once (``tarindex.index_nested``,
cached per user; a 0-byte synset tar counts as empty), then each image is one ``os.pread`` at
its offset (a ``TarContainer``). Labels, relpaths, skips and words: ``wholeimagenet``; there
is only a ``train`` split (``--val_per_class`` makes a val split, ``--recipe imagenet21k-p``
MIIL's ImageNet-21K-P).
"""
from imagenet_db.sources.archives.containers import TarContainer
from imagenet_db.sources.archives.tarindex import index_nested
from imagenet_db.sources.base import Dataset
from imagenet_db.sources import wholeimagenet as W

NAME = "fall11"
ARCHIVE = "fall11_whole.tar"
LOOKS_FOR = f"the whole ImageNet of fall 2011: {ARCHIVE} (a tar of n00004475.tar, ...)"


def detect(source: str) -> bool:
    """True when ``source`` holds fall11_whole.tar (WholeImagenetError when it is not a
    regular file)."""
    return W.one_archive(source, ARCHIVE) is not None


def open_dataset(source: str) -> Dataset:
    """The whole ImageNet in ``source``/fall11_whole.tar (see module docstring). Raises
    TarIndexError naming the tar and the synset tar that is not a whole tar, and
    WholeImagenetError for an outer member that is not a synset tar, a synset tar twice, a
    member outside its synset (``wholeimagenet``)."""
    path = W.one_archive(source, ARCHIVE)
    skipped = W.Skipped()
    groups = {}
    for outer, members in index_nested(path, empty_members=True).items():
        wnid = W.synset_of(outer[2:] if outer.startswith("./") else outer, ".tar", path)
        if wnid in groups:
            raise W.WholeImagenetError(f"{path}: member {outer} occurs twice")
        groups[wnid] = W.synset_files(((m.name, m.size, m) for m in members),
                                      f"{path}: member {outer}", skipped)
    return W.whole_dataset(groups, lambda files: TarContainer(path, files), source, skipped)
