"""The ImageNet recipe: find the data, write Caffe's aux files, build both databases and the mean.

What Caffe's ``data/ilsvrc12/get_ilsvrc_aux.sh`` + ``examples/imagenet/create_imagenet.sh`` +
``make_imagenet_mean.sh`` do, in one call. SOURCE is any distribution ``sources`` detects
(the raw ILSVRC2012 archives, the ILSVRC2015 CLS-LOC .tar.gz or Kaggle's zip read in place, or
an extracted tree of any of them).

Outputs in OUTDIR: synsets.txt, synset_words.txt (when words are known), train.txt, val.txt
(Caffe format, paths sorted), ilsvrc12_{train,val}_{lmdb,leveldb} (shuffled, resized 256x256
by default), imagenet_mean.binaryproto and imagenet_mean.npy (mean of the train database,
computed while it is written), report.html (``imagenet-db report`` of OUTDIR; opt out with
``report=False`` / --no-report).

Stages, each skipped when already finished (``resume``): aux files (kept when identical),
train DB, val DB (each resumed from its last transaction or kept when complete with the same
settings), mean files (from the train DB's stored mean, else recomputed from the DB). Before
any work, every output is checked: nothing existing is replaced without ``overwrite``.
"""
import os
import time
from typing import Callable, Dict, List, Optional

from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.engine.files import remove_stale_temporaries, write_file_atomic
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.outputs.meanfile import channel_means, mean_picture, read_mean, write_mean
from imagenet_db.pictures.report import REPORT_NAME, is_report, write_report
from imagenet_db.pipeline import ConvertSummary, convert, plan_build
from imagenet_db.recipes.formats import Stage, default_transform, plan
from imagenet_db.sources import labels as L
from imagenet_db.sources import load_dataset
from imagenet_db.sources.base import DEFAULT_SEED, Dataset
from imagenet_db.sources.checksums import verify_source
from imagenet_db.sources.listfile import list_text

DEFAULT_TRANSFORM = default_transform("caffe")  # create_imagenet.sh: squash to 256x256


def write_aux(found: Dataset, outdir: str) -> List[str]:
    """Write Caffe's aux files into ``outdir``: synsets.txt, synset_words.txt (if words are
    known), train.txt, val.txt (sorted 'relpath label' lines). Returns the paths written."""
    os.makedirs(outdir, exist_ok=True)
    outputs = aux_outputs(found, outdir)
    for path, data in outputs.items():
        write_file_atomic(path, data)
    return list(outputs)


def write_labels(source: str, outdir: str, log=print, drop_blacklist: bool = False) -> List[str]:
    """Only the aux files (synsets.txt, synset_words.txt, train.txt, val.txt) for ``source``
    (archives: from the devkits, annotations and archive indexes, no image is read; or an
    extracted tree). drop_blacklist: leave out the devkit's blacklisted validation images
    (``base.drop_val_blacklist``). Returns the paths written. Raises ImagenetDbError
    subclasses naming the bad file."""
    found = load_dataset(source, drop_blacklist, log)
    written = write_aux(found, outdir)
    for path in written:
        log(f"wrote {path}")
    return written
def aux_outputs(found: Dataset, outdir: str) -> Dict[str, bytes]:
    """The aux files ``write_aux`` writes into ``outdir``, as {path: UTF-8 bytes}, rendered in
    memory (nothing in ``outdir`` is touched)."""
    texts = {"synsets.txt": L.synsets_text(found.synsets)}
    if found.words:
        texts["synset_words.txt"] = L.synset_words_text(found.synsets, found.words)
    for name, split in found.splits.items():
        texts[f"{name}.txt"] = list_text(split.entries)
    return {os.path.join(outdir, name): text.encode("utf-8") for name, text in texts.items()}


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
    if path.lower().endswith(".png"):
        import cv2

        return _same_file(path, cv2.imencode(".png", mean_picture(mean))[1].tobytes())
    try:
        old = read_mean(path)
    except (ImagenetDbError, OSError, ValueError):
        return False
    return old.shape == mean.shape and bool((old == mean).all())


def _preflight(stages: List[Stage], aux: Dict[str, bytes], mean_paths: List[str],
               transform: TransformOptions, build: BuildOptions) -> None:
    """Refuse now, before hours of work, anything that would replace an output unasked."""
    for path, data in aux.items():
        if _same_file(path, data) is False and not build.overwrite:
            raise ImagenetDbError(f"{path} exists with other contents; pass --overwrite to "
                                  f"replace it")
    train_finished = False
    for stage in stages:
        _, action = plan_build(stage.records, stage.db_path, stage.backend, transform, build,
                               stage.observers(), stage.settings, stage.output_options)
        train_finished |= stage.want_mean and action in ("done", "publish")
    if any(stage.want_mean for stage in stages) and not build.overwrite and not train_finished:
        for path in mean_paths:  # no run of this build can have written it yet
            if os.path.exists(path):
                raise ImagenetDbError(f"{path} already exists; pass --overwrite to replace it")


def _aux_stage(aux: Dict[str, bytes], log) -> None:
    for path, data in aux.items():
        if _same_file(path, data):
            log(f"{path}: up to date")
        else:
            write_file_atomic(path, data)
            log(f"wrote {path}")


def create_imagenet(source: str, outdir: str, transform: Optional[TransformOptions] = None,
                    backend: str = "lmdb", seed: int = DEFAULT_SEED,
                    build: BuildOptions = BuildOptions(), verify: bool = False,
                    log: Callable[[str], None] = print, mean_crop: int = 0,
                    prototxt: bool = False, drop_blacklist: bool = False,
                    output_format: str = "caffe", val_layout: str = "folders",
                    batch_images: Optional[int] = None,
                    report: bool = True) -> Dict[str, ConvertSummary]:
    """Build ImageNet training data for one framework from ``source`` into ``outdir``.

    output_format: 'caffe' (default: Caffe's LMDB/LevelDB of ``backend`` + the mean),
    'cuda-convnet2', 'theano-alexnet' or 'folder'; what each writes, its labels and record
    order: ``recipes.formats``. transform: decode/resize/encode settings (default: the
    format's, ``formats.default_transform``: for caffe a squash to 256x256, bilinear, raw
    datums, as Caffe's create_imagenet.sh with RESIZE=true). caffe: when images keep their
    sizes (0x0) or come out at varying sizes (shorter_side, min_max_dim) the mean is only
    computed with ``mean_crop``. backend: 'lmdb' or 'leveldb'.
    mean_crop: take the mean over the centre mean_crop x mean_crop window of every train image
    (needed for varying sizes; e.g. 224 for a shorter_side 256 build); 0 = whole images.
    The mean is written as imagenet_mean.binaryproto, .npy and .png (a picture), and its
    per-channel values are logged. prototxt: also write Caffe train_val/solver/deploy
    prototxts filled with OUTDIR's paths, the class count and the backend
    (``recipes.prototxt.write_prototxts``; caffe format only).
    seed: shuffle seed of the training images (and, for caffe, of val). val_layout: folder
    format only, 'folders' (val/<wnid>/) or 'flat'. batch_images: images per batch of the
    batch formats (None: upstream's 3072 / 256; see ``formats.plan``). build: overwrite/
    resume/strict/txn_size/max_pixels/workers/progress/executor, as for ``pipeline.convert``.
    verify: for archive input, first check the archives' MD5 against the published values
    (reads every byte: ~147 GB for the real ones; ChecksumError on a mismatch).
    log: where progress lines go. drop_blacklist: leave out the validation images the
    2014/2015 devkit blacklists (``--drop_val_blacklist``; off by default: the classification
    task keeps all 50,000). report (caffe): at the end, write OUTDIR/report.html (the page of
    ``imagenet-db report``: counts, sizes, class histogram, mean image, samples, skips,
    settings); an existing report.html that is not an imagenet-db report is refused up front
    unless ``build.overwrite``. Returns {stage name: summary} ('train', 'val'; or the format's
    name for the one-directory batch formats). Raises ImagenetDbError for bad input, and
    refuses (before doing any work) to replace existing outputs unless ``build.overwrite``.
    """
    transform = transform or default_transform(output_format)
    if verify:
        verify_source(source, progress=build.progress, log=log)
    found = load_dataset(source, drop_blacklist, log)
    os.makedirs(outdir, exist_ok=True)
    if mean_crop < 0:
        raise ImagenetDbError(f"--mean_crop must be >= 0, not {mean_crop}")
    if prototxt and output_format != "caffe":
        raise ImagenetDbError("--prototxt writes Caffe prototxts: --format caffe only")
    want_mean = transform.fixed_size or bool(mean_crop)
    if output_format == "caffe" and not want_mean:
        log("note: the images keep differing sizes, so no mean is computed; pass --mean_crop N "
            "(e.g. 224) for the mean of their centre NxN windows")
    labelled, stages = plan(output_format, found, outdir, backend, seed, transform, val_layout,
                            batch_images, want_mean, mean_crop)
    mean_paths = [os.path.join(outdir, "imagenet_mean" + ext)
                  for ext in (".binaryproto", ".npy", ".png")]
    aux = aux_outputs(labelled, outdir)
    report = report and output_format == "caffe"  # the report reads Datum databases
    report_path = os.path.join(outdir, REPORT_NAME)
    if report and os.path.exists(report_path) and not is_report(report_path) \
            and not build.overwrite:
        raise ImagenetDbError(f"{report_path} exists and is not an imagenet-db report; pass "
                              f"--overwrite to replace it (or --no-report)")
    _preflight(stages, aux, mean_paths, transform, build)
    if prototxt:
        from imagenet_db.recipes.prototxt import check_prototxt_targets

        check_prototxt_targets(outdir, build.overwrite)
    remove_stale_temporaries(outdir, [os.path.basename(p) for p in list(aux) + mean_paths])
    _aux_stage(aux, log)
    summaries = {}
    for stage in stages:
        summary = convert(stage.records, stage.db_path, stage.backend, transform, build,
                          stage.observers(), stage.settings,
                          output_options=stage.output_options)
        log(summary.describe())
        if summary.skipped:
            log(f"skipped images are listed in {summary.db_path}.skipped.tsv")
        summaries[stage.name] = summary
        if stage.want_mean:
            _mean_stage(summary, mean_paths, build.overwrite, stage.backend, log, mean_crop)
    if prototxt:
        from imagenet_db.recipes.prototxt import write_prototxts

        for path in write_prototxts(outdir, found, transform, backend, summaries, mean_crop,
                                    build.overwrite):
            log(f"wrote {path}")
    if report:
        started = time.monotonic()
        write_report(outdir, report_path, log=log)
        log(f"wrote {report_path} ({time.monotonic() - started:.1f} s; imagenet-db report)")
    return summaries


def _mean_stage(summary: ConvertSummary, mean_paths: List[str], overwrite: bool, backend: str,
                log, mean_crop: int = 0) -> None:
    """Write imagenet_mean.binaryproto/.npy/.png for the train database: the mean computed while
    it was written, or (when that is not at hand) recomputed from the database."""
    mean = summary.mean
    if mean is None:
        log(f"computing the mean of {summary.db_path}")
        mean, _ = compute_db_mean(summary.db_path, backend, crop=mean_crop or None)
        summary.results["mean"] = mean
    stale = [path for path in mean_paths if not _same_mean(path, mean)]
    for path in stale:
        if os.path.exists(path) and not overwrite:
            raise DatabaseError(f"{path} exists and differs from the mean of {summary.db_path}; "
                                f"pass --overwrite to replace it")
    for path in stale:
        write_mean(path, mean)
        log(f"wrote {path}")
    if not stale:
        log(f"{mean_paths[0]} (+ .npy, .png): up to date")
    values = ", ".join(f"{v:.4f}" for v in channel_means(mean))
    log(f"mean_value (B, G, R) for transform_param: {values}")
