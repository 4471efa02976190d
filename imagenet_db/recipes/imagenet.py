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
from typing import Callable, Dict, List, Optional, Tuple

from imagenet_db.engine.buildstate import BuildOptions, tool_record
from imagenet_db.engine.files import remove_stale_temporaries, write_file_atomic
from imagenet_db.engine.lock import OutputLock, folder_lock_path
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.observers.boxcount import BoxCount
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.outputs.meanfile import channel_means, mean_picture, read_mean, write_mean
from imagenet_db.pictures.report import REPORT_NAME, is_report, write_report
from imagenet_db.pipeline import ConvertSummary, Recorded, convert, plan_build
from imagenet_db.pipeline_shards import convert_shards
from imagenet_db.outputs import datum_formats, format_spec
from imagenet_db.outputs.caffe import CAFFE
from imagenet_db.recipes.formats import (RecipeOptions, Stage, default_transform, plan,
                                         stage_observers)
from imagenet_db.sources.boxes import boxes_csv_text
from imagenet_db.sources import labels as L
from imagenet_db.sources import load_dataset
from imagenet_db.sources.base import Dataset
from imagenet_db.sources.selection import ClassSelection
from imagenet_db.sources import verify_source
from imagenet_db.sources.listfile import list_text

DEFAULT_TRANSFORM = CAFFE.default_transform(None)  # create_imagenet.sh: squash to 256x256


def write_aux(found: Dataset, outdir: str) -> List[str]:
    """Write Caffe's aux files into ``outdir``: synsets.txt, synset_words.txt (if words are
    known), train.txt, val.txt (sorted 'relpath label' lines). Returns the paths written."""
    os.makedirs(outdir, exist_ok=True)
    outputs = aux_outputs(found, outdir)
    for path, data in outputs.items():
        write_file_atomic(path, data)
    return list(outputs)


def write_labels(source: str, outdir: str, log=print, drop_blacklist: bool = False,
                 allow_empty_classes: bool = False,
                 selection: ClassSelection = ClassSelection()) -> List[str]:
    """Only the aux files (synsets.txt, synset_words.txt, train.txt, val.txt, and
    dropped_classes.txt with a class minimum) for ``source`` (archives: from the devkits,
    annotations and archive indexes, no image is read; or an extracted tree).
    drop_blacklist: leave out the devkit's blacklisted validation images
    (``base.drop_val_blacklist``). selection: classes kept and val split made from train
    (``sources.selection``). Returns the paths written. Raises ImagenetDbError subclasses
    naming the bad file."""
    found = load_dataset(source, drop_blacklist, log, allow_empty_classes, selection)
    written = write_aux(found, outdir)
    for path in written:
        log(f"wrote {path}")
    return written


DROPPED_CLASSES = "dropped_classes.txt"


def aux_outputs(found: Dataset, outdir: str) -> Dict[str, bytes]:
    """The aux files ``write_aux`` writes into ``outdir``, as {path: UTF-8 bytes}, rendered in
    memory (nothing in ``outdir`` is touched): synsets.txt, synset_words.txt (words known),
    <split>.txt, and DROPPED_CLASSES ('n00005787 5' lines: the classes --min_class_images
    left out, with their image counts, in wnid order) when a minimum was asked."""
    texts = {"synsets.txt": L.synsets_text(found.synsets)}
    if found.words:
        texts["synset_words.txt"] = L.synset_words_text(found.synsets, found.words)
    for name, split in found.splits.items():
        texts[f"{name}.txt"] = list_text(split.entries)
    if found.dropped_classes is not None:  # --min_class_images: 'wnid images' per line
        texts[DROPPED_CLASSES] = "".join(f"{w} {n}\n" for w, n in found.dropped_classes)
    texts.update(found.extra_files)
    return {os.path.join(outdir, name): text.encode("utf-8") for name, text in texts.items()}


BOXES_CSV = "boxes.csv"


def _boxes_csv(found: Dataset, log) -> bytes:
    """The bytes of ``boxes.csv`` (``sources.boxes.boxes_csv_text``); boxes left out for want
    of a size are said in a note."""
    text, unsized = boxes_csv_text(found.splits)
    if unsized:
        log(f"note: {BOXES_CSV}: left out {unsized} boxes of LOC CSV rows without an XML (no "
            f"image size to divide by)")
    return text.encode("ascii")


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


def _refuse_mixed_formats(outdir: str, stages: List[Stage], changed: List[str],
                          output_format: str) -> None:
    """Refuse, even with --overwrite, to rewrite the label files ``changed`` (synsets.txt,
    train.txt...) of an OUTDIR holding another format's output (finished or partial): they
    belong to it (cuda-convnet2 numbers classes in the devkit's order, folder names val
    files by wnid), and its readers (report, show) would caption every image wrongly.
    Outputs of the same format (by the ``format`` setting of their record) are replaced as
    usual."""
    ours = stages[0].settings.get("format") if stages else None
    for entry in sorted(os.listdir(outdir)):
        path = os.path.join(outdir, entry)
        record = tool_record(path) if os.path.isdir(path) else None
        if record is None or record.get("format") == ours:
            continue
        theirs = record.get("format") or f"Caffe {record.get('backend')}"
        raise ImagenetDbError(
            f"{outdir} holds {path}, a {theirs} output whose label files "
            f"({', '.join(changed)}) --format {output_format} would rewrite: formats are not "
            f"mixed in one OUTDIR, even with --overwrite; use another OUTDIR, or move "
            f"{entry} (and its label files) away")


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
                               stage_observers(stage), stage.settings, stage.output_options)
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


def _checked_plan(found: Dataset, outdir: str, transform: TransformOptions,
                  recipe: RecipeOptions, log) -> Tuple[Dataset, List[Stage]]:
    """The recipe's stages after checking the options that depend on each other."""
    if recipe.mean_crop < 0:
        raise ImagenetDbError(f"--mean_crop must be >= 0, not {recipe.mean_crop}")
    datums = format_spec(recipe.output_format).datum_databases
    if recipe.prototxt and not datums:
        raise ImagenetDbError(f"--prototxt writes Caffe prototxts: --format "
                              f"{' / '.join(datum_formats())} only")
    want_mean = transform.fixed_size or bool(recipe.mean_crop)
    if datums and not want_mean:
        log("note: the images keep differing sizes, so no mean is computed; pass --mean_crop N "
            "(e.g. 224) for the mean of their centre NxN windows")
    labelled, stages = plan(found, outdir, transform, recipe, want_mean)
    for note in labelled.notes[len(found.notes):]:  # what the format's stages found
        log(f"note: {note}")
    return labelled, stages


def _report_path(outdir: str, recipe: RecipeOptions) -> Optional[str]:
    """OUTDIR/report.html when a report is written (formats of Datum databases only: it reads
    them)."""
    if recipe.report and format_spec(recipe.output_format).datum_databases:
        return os.path.join(outdir, REPORT_NAME)
    return None


def _check_extras(outdir: str, recipe: RecipeOptions, overwrite: bool) -> None:
    """Refuse up front to replace a report or prototxt of the user's."""
    report_path = _report_path(outdir, recipe)
    if report_path and os.path.exists(report_path) and not is_report(report_path) \
            and not overwrite:
        raise ImagenetDbError(f"{report_path} exists and is not an imagenet-db report; pass "
                              f"--overwrite to replace it (or --no-report)")
    if recipe.prototxt:
        from imagenet_db.recipes.prototxt import check_prototxt_targets

        check_prototxt_targets(outdir, overwrite)


def _write_extras(outdir: str, found: Dataset, transform: TransformOptions,
                  recipe: RecipeOptions, summaries: Dict[str, ConvertSummary],
                  build: BuildOptions, log) -> None:
    """After the databases: the prototxts and the report (when asked for)."""
    if recipe.prototxt:
        from imagenet_db.recipes.prototxt import write_prototxts

        for path in write_prototxts(outdir, found, transform, recipe.backend, summaries,
                                    recipe.mean_crop, build.overwrite):
            log(f"wrote {path}")
    report_path = _report_path(outdir, recipe)
    if report_path:
        started = time.monotonic()
        write_report(outdir, report_path, log=log)
        log(f"wrote {report_path} ({time.monotonic() - started:.1f} s; imagenet-db report)")


def _log_summary(summary: ConvertSummary, log: Callable[[str], None]) -> None:
    """A stage's summary, its notes (e.g. a split with no batch), box counts and skip report."""
    log(summary.describe())
    for note in summary.results.get("notes", ()):
        log(f"note: {note}")
    if "boxes" in summary.results:
        log(f"{summary.db_path}: {BoxCount.describe(summary.results['boxes'])}")
    if summary.skipped:
        log(f"skipped images are listed in {summary.db_path}.skipped.tsv")


def create_imagenet(source: str, outdir: str, transform: Optional[TransformOptions] = None,
                    recipe: RecipeOptions = RecipeOptions(), build: BuildOptions = BuildOptions(),
                    log: Callable[[str], None] = print) -> Dict[str, ConvertSummary]:
    """Build ImageNet training data for one framework from ``source`` into ``outdir``.

    recipe: what to make (``formats.RecipeOptions``: format, backend, seed, mean_crop,
    prototxt, report, val_layout, batch_images, drop_blacklist, allow_empty_classes,
    verify); what each format writes, its labels and record order: ``recipes.formats``.
    transform: decode/resize/encode settings (default: the format's,
    ``formats.default_transform``: for caffe a squash to 256x256, bilinear, raw datums, as
    Caffe's create_imagenet.sh with RESIZE=true). caffe: the mean of the train DB is written
    as imagenet_mean.binaryproto, .npy and .png and its per-channel values logged; when images
    keep their sizes (0x0) or come out at varying sizes (shorter_side, min_max_dim) it is only
    computed with ``recipe.mean_crop``. build: overwrite/resume/strict/txn_size/max_pixels/
    workers/progress/executor, as for ``pipeline.convert``. log: where progress lines go.
    Returns {stage name: summary} ('train', 'val'; or the format's name for the one-directory
    batch formats). Raises ImagenetDbError for bad input (a ChecksumError for a mismatch under
    ``recipe.verify``), and refuses (before doing any work) to replace existing outputs
    unless ``build.overwrite``; OutputBusyError while another create_imagenet runs in
    ``outdir`` (it holds ``OUTDIR/.imagenet_db.lock``) or another build writes one of its
    outputs.
    """
    transform = transform or default_transform(recipe.output_format)
    if recipe.verify:
        verify_source(source, progress=build.progress, log=log)
    found = load_dataset(source, recipe.drop_blacklist, log, recipe.allow_empty_classes,
                         recipe.selection)
    os.makedirs(outdir, exist_ok=True)
    with OutputLock(folder_lock_path(outdir), f"{outdir} is being built by create_imagenet"):
        labelled, stages = _checked_plan(found, outdir, transform, recipe, log)
        mean_paths = [os.path.join(outdir, "imagenet_mean" + ext)
                      for ext in (".binaryproto", ".npy", ".png")]
        aux = aux_outputs(labelled, outdir)
        if recipe.boxes_csv:
            aux[os.path.join(outdir, BOXES_CSV)] = _boxes_csv(found, log)
        _check_extras(outdir, recipe, build.overwrite)
        changed = [os.path.basename(p) for p, data in aux.items() if _same_file(p, data) is False]
        if changed:
            _refuse_mixed_formats(outdir, stages, changed, recipe.output_format)
        _preflight(stages, aux, mean_paths, transform, build)
        remove_stale_temporaries(outdir, [os.path.basename(p) for p in list(aux) + mean_paths])
        _aux_stage(aux, log)
        summaries = {}
        build_stage = convert_shards if format_spec(recipe.output_format).sharded else convert
        for stage in stages:
            summary = build_stage(stage.records, stage.db_path, stage.backend, transform, build,
                                  stage_observers(stage),
                                  Recorded(stage.settings, stage.output_options))
            _log_summary(summary, log)
            summaries[stage.name] = summary
            if stage.want_mean:
                _mean_stage(summary, mean_paths, build.overwrite, stage.backend, log,
                            recipe.mean_crop)
        _write_extras(outdir, found, transform, recipe, summaries, build, log)
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
