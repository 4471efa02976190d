"""The ImageNet recipe: find the data, write Caffe's aux files, build both databases and the mean.

What Caffe's ``data/ilsvrc12/get_ilsvrc_aux.sh`` + ``examples/imagenet/create_imagenet.sh`` +
``make_imagenet_mean.sh`` do, in one call. SOURCE is either the folder holding the raw
ILSVRC2012 archives (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar,
ILSVRC2012_devkit_t12.tar.gz; read in place, see ``imagenet_db.sources.ilsvrc2012``) or an extracted
ImageNet:

    SOURCE/train/<wnid>/<any>.JPEG         one folder per synset (the class list)
    SOURCE/val/<wnid>/<any>.JPEG           validation in per-synset folders, or
    SOURCE/val/<name>.JPEG + SOURCE/val.txt  flat, with 'name label' lines where label is a
                                            wnid or a Caffe label (Caffe's val.txt)

Outputs in OUTDIR: synsets.txt, synset_words.txt (from the devkit, or SOURCE's), train.txt, val.txt
(Caffe format, paths sorted), ilsvrc12_{train,val}_{lmdb,leveldb} (shuffled, resized 256x256
by default), imagenet_mean.binaryproto and imagenet_mean.npy (mean of the train database,
computed while it is written).

Stages, each skipped when already finished (``resume``): aux files (kept when identical),
train DB, val DB (each resumed from its last transaction or kept when complete with the same
settings), mean files (from the train DB's stored mean, else recomputed from the DB). Before
any work, every output is checked: nothing existing is replaced without ``overwrite``.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from imagenet_db.engine import buildstate as B
from imagenet_db.sources import labels as L
from imagenet_db.sources.ilsvrc2012 import ArchivePaths, find_archives, index_archives, loader_for
from imagenet_db.sources.checksums import verify_source
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.headers import DEFAULT_MAX_PIXELS
from imagenet_db.sources.listfile import list_text
from imagenet_db.observers.mean import channel_means, compute_db_mean, read_mean, write_mean
from imagenet_db.pipeline import DEFAULT_TXN_SIZE, ConvertSummary, convert
from imagenet_db.sources.base import DEFAULT_SEED, FileLoader, Record, shuffled
from imagenet_db.imaging.transform import TransformOptions

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
    notes: List[str] = field(default_factory=list)


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


def scan_archives(paths: ArchivePaths) -> ImagenetSource:
    """ImageNet read in place from the raw ILSVRC2012 archives (see imagenet_db.sources.ilsvrc2012):
    relpaths, labels and words as Caffe's aux files; loaders read each image by its offset
    in the tar. Raises ImagenetDbError subclasses naming the bad file."""
    index = index_archives(paths)
    splits = {"train": Split("train", index.train_entries(), loader_for(paths.train, index.train)),
              "val": Split("val", index.val_entries(), loader_for(paths.val, index.val))}
    return ImagenetSource(index.synsets, splits, index.words, index.notes)


def locate(source: str) -> ImagenetSource:
    """Find ImageNet under ``source``: the raw archives when the folder holds any of them
    (all three are then required), else an extracted tree (see scan_extracted)."""
    if not os.path.isdir(source):
        raise ImagenetDbError(f"{source}: no such directory")
    paths = find_archives(source)
    if paths is not None:
        return scan_archives(paths)
    return scan_extracted(source)


def write_aux(found: ImagenetSource, outdir: str) -> List[str]:
    """Write Caffe's aux files into ``outdir``: synsets.txt, synset_words.txt (if words are
    known), train.txt, val.txt (sorted 'relpath label' lines). Returns the paths written."""
    os.makedirs(outdir, exist_ok=True)
    outputs = aux_outputs(found, outdir)
    for path, data in outputs.items():
        B.write_file_atomic(path, data)
    return list(outputs)


def write_labels(source: str, outdir: str, log=print) -> List[str]:
    """Only the aux files (synsets.txt, synset_words.txt, train.txt, val.txt) for ``source``
    (archives: from the devkit and the tar headers, no image is read; or an extracted tree).
    Returns the paths written. Raises ImagenetDbError subclasses naming the bad file."""
    found = locate(source)
    for note in found.notes:
        log(f"note: {note}")
    written = write_aux(found, outdir)
    for path in written:
        log(f"wrote {path}")
    return written
def aux_outputs(found: ImagenetSource, outdir: str) -> Dict[str, bytes]:
    """The aux files ``write_aux`` writes into ``outdir``, as {path: UTF-8 bytes}, rendered in
    memory (nothing in ``outdir`` is touched)."""
    texts = {"synsets.txt": L.synsets_text(found.synsets)}
    if found.words:
        texts["synset_words.txt"] = L.synset_words_text(found.synsets, found.words)
    for name, split in found.splits.items():
        texts[f"{name}.txt"] = list_text(split.entries)
    return {os.path.join(outdir, name): text.encode("utf-8") for name, text in texts.items()}


def _stored_options(options: TransformOptions) -> dict:
    return {k: v for k, v in options.__dict__.items() if k != "want_pixels"}


def _same_file(path: str, data: bytes) -> Optional[bool]:
    """True/False when ``path`` holds / does not hold ``data``; None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except FileNotFoundError:
        return None


def _same_mean(path: str, mean) -> Optional[bool]:
    if not os.path.exists(path):
        return None
    try:
        old = read_mean(path)
    except (ImagenetDbError, OSError, ValueError):
        return False
    return old.shape == mean.shape and bool((old == mean).all())


def create_imagenet(source: str, outdir: str, resize: Tuple[int, int] = (256, 256),
                    backend: str = "lmdb", encoded: bool = False, fast_decode: bool = False,
                    seed: int = DEFAULT_SEED,
                    workers: Optional[int] = None, overwrite: bool = False,
                    progress: Optional[bool] = None, verify: bool = False, executor=None,
                    log=print, resume: bool = False,
                    strict: bool = False, txn_size: int = DEFAULT_TXN_SIZE,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> Dict[str, ConvertSummary]:
    """Build Caffe's ImageNet training data from ``source`` into ``outdir``.

    resize: (width, height) in pixels, squashed with bilinear interpolation as Caffe's
    create_imagenet.sh (RESIZE=true: 256x256); (0, 0) keeps original sizes (then no mean).
    backend: 'lmdb' or 'leveldb'. encoded: store JPEG bytes instead of raw CHW BGR pixels.
    fast_decode: libjpeg's DCT-domain downscale for JPEGs at least twice the output size
    (faster, not byte-identical to Caffe; see imagenet_db.imaging.fastdecode).
    seed: shuffle seed (both databases are shuffled). workers: threads (None = all cores).
    executor: a concurrent.futures Executor (e.g. a Dask cluster's) to run the transform on.
    verify: for archive input, first check the archives' MD5 against the published values
    (reads every byte: ~147 GB for the real ones; ChecksumError on a mismatch).
    resume: skip finished stages and continue an interrupted one (see module doc). strict,
    txn_size, max_pixels: as for ``pipeline.convert``.
    Returns {'train': summary, 'val': summary}. Raises ImagenetDbError for bad input, and
    refuses (before doing any work) to replace existing outputs unless ``overwrite``.
    """
    if verify:
        verify_source(source, progress=progress, log=log)
    found = locate(source)
    for note in found.notes:
        log(f"note: {note}")
    os.makedirs(outdir, exist_ok=True)
    width, height = resize
    options = TransformOptions(resize_height=height, resize_width=width, encoded=encoded,
                               fast_decode=fast_decode)
    jobs = []
    for name, split in found.splits.items():
        db_path = os.path.normpath(os.path.join(outdir, f"ilsvrc12_{name}_{backend}"))
        want_mean = name == "train" and options.resizing
        records = split.records(True, seed)
        settings = {"split": name, "seed": seed, "shuffle": True, "synsets": len(found.synsets)}
        jobs.append((name, db_path, records, want_mean, settings))
    mean_paths = [os.path.join(outdir, "imagenet_mean" + ext) for ext in (".binaryproto", ".npy")]
    want_any_mean = any(job[3] for job in jobs)

    # preflight: refuse now rather than after hours of work
    aux = aux_outputs(found, outdir)
    for path, data in aux.items():
        if _same_file(path, data) is False and not overwrite:
            raise ImagenetDbError(f"{path} exists with other contents; pass --overwrite to "
                                  f"replace it")
    train_finished = False
    for name, db_path, records, want_mean, settings in jobs:
        identity = B.build_identity(records, backend, _stored_options(options), max_pixels,
                                    False, want_mean, settings)
        action = B.plan_output(db_path, identity, overwrite, resume)
        train_finished |= want_mean and action in ("done", "publish")
    if want_any_mean and not overwrite and not train_finished:
        for path in mean_paths:  # no run of this build can have written it yet
            if os.path.exists(path):
                raise ImagenetDbError(f"{path} already exists; pass --overwrite to replace it")

    B.remove_stale_temporaries(outdir, [os.path.basename(p) for p in list(aux) + mean_paths])
    for path, data in aux.items():
        if _same_file(path, data):
            log(f"{path}: up to date")
        else:
            B.write_file_atomic(path, data)
            log(f"wrote {path}")
    summaries = {}
    for name, db_path, records, want_mean, settings in jobs:
        summary = convert(records, db_path, backend, options, workers, compute_mean=want_mean,
                          overwrite=overwrite, progress=progress, settings=settings,
                          resume=resume, strict=strict, txn_size=txn_size, max_pixels=max_pixels,
                          executor=executor)
        log(summary.describe())
        if summary.skipped:
            log(f"skipped images are listed in {summary.db_path}.skipped.tsv")
        summaries[name] = summary
        if want_mean:
            _mean_stage(summary, mean_paths, overwrite, backend, log)
    return summaries


def _mean_stage(summary: ConvertSummary, mean_paths: List[str], overwrite: bool, backend: str,
                log) -> None:
    """Write imagenet_mean.binaryproto/.npy for the train database: the mean computed while it
    was written, or (when that is not at hand) recomputed from the database."""
    mean = summary.mean
    if mean is None:
        log(f"computing the mean of {summary.db_path}")
        mean, _ = compute_db_mean(summary.db_path, backend)
    stale = [path for path in mean_paths if not _same_mean(path, mean)]
    for path in stale:
        if os.path.exists(path) and not overwrite:
            raise DatabaseError(f"{path} exists and differs from the mean of {summary.db_path}; "
                                f"pass --overwrite to replace it")
    for path in stale:
        write_mean(path, mean)
        log(f"wrote {path}")
    if not stale:
        log(f"{mean_paths[0]} (+ .npy): up to date")
    values = ", ".join(f"{v:.4f}" for v in channel_means(mean))
    log(f"mean_value (B, G, R) for transform_param: {values}")
