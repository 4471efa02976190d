"""The ImageNet recipe: find the data, write Caffe's aux files, build both databases and the mean.

What Caffe's ``data/ilsvrc12/get_ilsvrc_aux.sh`` + ``examples/imagenet/create_imagenet.sh`` +
``make_imagenet_mean.sh`` do, in one call. SOURCE is an extracted ImageNet:

    SOURCE/train/<wnid>/<any>.JPEG         one folder per synset (the class list)
    SOURCE/val/<wnid>/<any>.JPEG           validation in per-synset folders, or
    SOURCE/val/<name>.JPEG + SOURCE/val.txt  flat, with 'name label' lines where label is a
                                            wnid or a Caffe label (Caffe's val.txt)

Outputs in OUTDIR: synsets.txt, synset_words.txt (when SOURCE has one), train.txt, val.txt
(Caffe format, paths sorted), ilsvrc12_{train,val}_{lmdb,leveldb} (shuffled, resized 256x256
by default), imagenet_mean.binaryproto and imagenet_mean.npy (mean of the train database,
computed while it is written).
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from imagenet_db import labels as L
from imagenet_db.errors import ImagenetDbError
from imagenet_db.listfile import write_list
from imagenet_db.mean import channel_means, write_mean
from imagenet_db.pipeline import ConvertSummary, convert
from imagenet_db.sources import DEFAULT_SEED, FileLoader, Record, shuffled
from imagenet_db.transform import TransformOptions

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class Split:
    """One split (train or val): sorted [(relpath, label)] and how to load a relpath's bytes."""
    name: str
    entries: List[Tuple[str, int]]
    loader: Callable[[str], Callable[[], bytes]]

    def records(self, shuffle: bool, seed: int) -> List[Record]:
        """Records in database order (shuffled with ``seed`` when ``shuffle``)."""
        order = shuffled(self.entries, seed) if shuffle else self.entries
        return [Record(i, relpath, label, self.loader(relpath))
                for i, (relpath, label) in enumerate(order)]


@dataclass
class ImagenetSource:
    """A located ImageNet: synsets in Caffe label order, optional words, and the splits."""
    synsets: List[str]
    splits: Dict[str, Split]
    words: Dict[str, str] = field(default_factory=dict)


def _image_files(folder: str) -> List[str]:
    return sorted(name for name in os.listdir(folder)
                  if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(folder, name)))


def _file_loader(root: str) -> Callable[[str], Callable[[], bytes]]:
    return lambda relpath: FileLoader(os.path.join(root, relpath))


def _wnid_folders(root: str) -> List[str]:
    return sorted(name for name in os.listdir(root)
                  if L.is_wnid(name) and os.path.isdir(os.path.join(root, name)))


def scan_extracted(source: str) -> ImagenetSource:
    """Locate an extracted ImageNet under ``source`` (layout in the module docstring).

    Raises ImagenetDbError when train/ or its wnid folders are missing, when a flat val/ has no
    label file, or when a val label line is malformed or names an unknown synset.
    """
    train_root = os.path.join(source, "train")
    if not os.path.isdir(train_root):
        raise ImagenetDbError(f"{source}: no train/ folder (expected train/<wnid>/*.JPEG)")
    synsets = L.caffe_synsets(_wnid_folders(train_root))
    if not synsets:
        raise ImagenetDbError(f"{train_root}: no synset folders named like n01440764")
    labels = L.label_map(synsets)
    train = [(f"{wnid}/{name}", labels[wnid]) for wnid in synsets
             for name in _image_files(os.path.join(train_root, wnid))]
    splits = {"train": Split("train", train, _file_loader(train_root))}

    val_root = os.path.join(source, "val")
    if os.path.isdir(val_root):
        folders = _wnid_folders(val_root)
        if folders:
            val = [(f"{wnid}/{name}", L.parse_label_token(wnid, labels, os.path.join(val_root, wnid)))
                   for wnid in folders for name in _image_files(os.path.join(val_root, wnid))]
        else:
            val = _read_val_labels(source, labels)
        splits["val"] = Split("val", sorted(val), _file_loader(val_root))
    words = L.optional_words(os.path.join(source, "synset_words.txt"))
    return ImagenetSource(synsets, splits, words)


def _read_val_labels(source: str, labels: Dict[str, int]) -> List[Tuple[str, int]]:
    for name in ("val.txt", os.path.join("val", "val.txt")):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            break
    else:
        raise ImagenetDbError(f"{source}: val/ is flat but there is no val.txt "
                              f"('ILSVRC2012_val_00000001.JPEG <wnid or label>' per line)")
    entries = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            relpath, _, token = line.rpartition(" ")
            if not relpath:
                raise ImagenetDbError(f"{path}:{number}: expected 'file label', got {line!r}")
            entries.append((relpath, L.parse_label_token(token, labels, f"{path}:{number}")))
    return entries


def locate(source: str) -> ImagenetSource:
    """Find ImageNet under ``source``: an extracted tree (see scan_extracted)."""
    if not os.path.isdir(source):
        raise ImagenetDbError(f"{source}: no such directory")
    return scan_extracted(source)


def write_aux(found: ImagenetSource, outdir: str) -> List[str]:
    """Write Caffe's aux files into ``outdir``: synsets.txt, synset_words.txt (if words are
    known), train.txt, val.txt (sorted 'relpath label' lines). Returns the paths written."""
    os.makedirs(outdir, exist_ok=True)
    written = [os.path.join(outdir, "synsets.txt")]
    L.write_synsets(written[0], found.synsets)
    if found.words:
        written.append(os.path.join(outdir, "synset_words.txt"))
        L.write_synset_words(written[-1], found.synsets, found.words)
    for name, split in found.splits.items():
        written.append(os.path.join(outdir, f"{name}.txt"))
        write_list(written[-1], split.entries)
    return written


def create_imagenet(source: str, outdir: str, resize: Tuple[int, int] = (256, 256),
                    backend: str = "lmdb", encoded: bool = False, fast_decode: bool = False,
                    seed: int = DEFAULT_SEED,
                    workers: Optional[int] = None, overwrite: bool = False,
                    progress: Optional[bool] = None, log=print) -> Dict[str, ConvertSummary]:
    """Build Caffe's ImageNet training data from ``source`` into ``outdir``.

    resize: (width, height) in pixels, squashed with bilinear interpolation as Caffe's
    create_imagenet.sh (RESIZE=true: 256x256); (0, 0) keeps original sizes (then no mean).
    backend: 'lmdb' or 'leveldb'. encoded: store JPEG bytes instead of raw CHW BGR pixels.
    fast_decode: libjpeg's DCT-domain downscale for JPEGs at least twice the output size
    (faster, not byte-identical to Caffe; see imagenet_db.fastdecode).
    seed: shuffle seed (both databases are shuffled). workers: threads (None = all cores).
    Returns {'train': summary, 'val': summary}. Raises ImagenetDbError for bad input, and
    refuses to replace existing outputs unless ``overwrite``.
    """
    found = locate(source)
    os.makedirs(outdir, exist_ok=True)
    for path in write_aux(found, outdir):
        log(f"wrote {path}")
    width, height = resize
    options = TransformOptions(resize_height=height, resize_width=width, encoded=encoded,
                               fast_decode=fast_decode)
    summaries = {}
    for name, split in found.splits.items():
        db_path = os.path.join(outdir, f"ilsvrc12_{name}_{backend}")
        want_mean = name == "train" and options.resizing
        summary = convert(split.records(True, seed), db_path, backend, options, workers,
                          compute_mean=want_mean, overwrite=overwrite, progress=progress,
                          settings={"split": name, "seed": seed, "shuffle": True,
                                    "synsets": len(found.synsets)})
        log(summary.describe())
        summaries[name] = summary
        if want_mean and summary.mean is not None:
            for ext in (".binaryproto", ".npy"):
                write_mean(os.path.join(outdir, "imagenet_mean" + ext), summary.mean)
            values = ", ".join(f"{v:.4f}" for v in channel_means(summary.mean))
            log(f"wrote {os.path.join(outdir, 'imagenet_mean.binaryproto')} (+ .npy); "
                f"mean_value (B, G, R) = {values}")
    return summaries
