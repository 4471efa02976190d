"""``imagenet-db extract``: any SOURCE (the ILSVRC2012 archives, the ILSVRC2015 CLS-LOC .tar.gz,
Kaggle's zip, a tree) as a folder tree — ``create_imagenet --format folder`` with the files
copied as they are, always resumable.

Layout written under DEST (what the per-synset untar loop and ``valprep.sh`` produce, the
layout PyTorch's ImageFolder and Torch's imagenet loaders expect)::

    DEST/train/<wnid>/<wnid>_<n>.JPEG
    DEST/val/<wnid>/ILSVRC2012_val_%08d.JPEG     val_layout="folders" (default), or
    DEST/val/ILSVRC2012_val_%08d.JPEG            val_layout="flat" (Caffe's layout)
    DEST/synsets.txt, synset_words.txt, train.txt, val.txt   Caffe's aux files for that tree
    DEST/{train,val}/imagenet_db.json            completion records (counts, settings)

It is the folder output (``outputs.folder``) driven by the one pipeline: the same bad-image
handling (skipped, named, listed in ``DEST/train.skipped.tsv``), progress, all cores, and the
same resume (each split is built as ``DEST/train.partial`` and renamed when complete; running
the command again continues an interrupted run and keeps finished splits). Both layouts are
valid SOURCEs for ``create_imagenet``/``labels``. At the end every folder's image count is
checked against the source's lists.
"""
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

from imagenet_db.engine.buildstate import MANIFEST_NAME, BuildOptions, read_manifest
from imagenet_db.errors import ImagenetDbError
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.crc import CHECKSUM_FIELD
from imagenet_db.outputs.folder import files_checksum, listed_files
from imagenet_db.outputs.folder import FORMAT as FOLDER, VAL_LAYOUTS
from imagenet_db.recipes.formats import RecipeOptions
from imagenet_db.sources.selection import ClassSelection
from imagenet_db.sources.base import is_image_name

class ExtractError(ImagenetDbError):
    """Extraction cannot proceed or its result does not match the source."""


@dataclass
class ExtractSummary:
    """written: files of the splits built by this run (including what an interrupted earlier
    run of it wrote); kept: files of splits that were already complete; skipped: bad images;
    seconds: wall time; counts: image files per folder (relative to DEST), as listed."""
    dest: str
    written: int = 0
    kept: int = 0
    skipped: int = 0
    seconds: float = 0.0
    counts: Dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One-line human summary of the extraction."""
        rate = self.written / self.seconds if self.seconds else 0.0
        return (f"{self.dest}: wrote {self.written} files, kept {self.kept} already present, "
                f"skipped {self.skipped}, {self.seconds:.1f} s ({rate:.0f} files/s)")


def _count_images(folder: str) -> int:
    try:
        return sum(1 for e in os.scandir(folder)
                   if e.is_file() and is_image_name(e.name) and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def check_counts(dest: str, counts: Dict[str, int]) -> None:
    """Compare the image files in each folder of ``counts`` (relative to DEST) with the
    expected number. Raises ExtractError listing the first mismatches and what to do: move
    away the files it did not write (more images than expected: --overwrite deletes only its
    own files), else pass --overwrite to extract again."""
    bad, extra = [], False
    for folder, want in sorted(counts.items()):
        have = _count_images(os.path.join(dest, *folder.split("/")))
        if have != want:
            bad.append(f"{folder}: {have} images, expected {want}")
            extra |= have > want
    if bad:
        todo = ("move away the image files extract did not write" if extra else
                "pass --overwrite to extract again")
        raise ExtractError(f"{dest}: the tree does not match the source ({len(bad)} "
                           f"folder(s)): " + "; ".join(bad[:5]) + f"; {todo}")


def _stored_files(dest: str, name: str, result):
    """(index, relpath, label) of the files split ``name`` holds: its list less its skips."""
    return listed_files(os.path.join(dest, f"{name}.txt"),
                        [relpath for relpath, _ in result.skipped])


def _check_not_empty(dest: str, summaries) -> None:
    """No file listed for a split (and not skipped) may be empty: an empty file at an image's
    name (a copy cut short, a file truncated by hand) would pass the count check."""
    for name, result in summaries.items():
        for _, relpath, _ in _stored_files(dest, name, result):
            path = os.path.join(dest, name, *relpath.split("/"))
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise ExtractError(f"{path} is empty; pass --overwrite to extract again")


def _check_contents(dest: str, summaries) -> None:
    """Every split's files still hold what was written: the content checksum of its completion
    record (the sum of each file's CRC-32, ``outputs.folder.files_checksum``) recomputed from
    the files (reads them all). A file changed after the extraction, even at the same size,
    fails it."""
    for name, result in summaries.items():
        manifest = read_manifest(os.path.join(dest, name)) or {}
        recorded = manifest.get(CHECKSUM_FIELD)
        if recorded is None:
            continue  # extracted by an earlier version: nothing to compare with
        relpaths = [relpath for _, relpath, _ in _stored_files(dest, name, result)]
        try:
            total = files_checksum(os.path.join(dest, name), relpaths)
        except OSError as exc:
            raise ExtractError(f"{exc.filename}: {exc.strerror or exc}") from None
        if f"{total:016x}" != recorded:
            raise ExtractError(f"{os.path.join(dest, name)}: its files differ from what was "
                               f"extracted (content checksum of its {MANIFEST_NAME}): a file "
                               f"was changed since; pass --overwrite to extract again")


@dataclass(frozen=True)
class ExtractOptions:
    """What ``extract`` writes, besides the transform and how the build runs.

    val_layout: 'folders' (val/<wnid>/, as valprep.sh) or 'flat' (val/ + Caffe's val.txt).
    drop_blacklist: leave out the validation images the devkit blacklists (see
    ``base.drop_val_blacklist``). allow_empty_classes: keep a synset without training images
    as a label (else an error; see ``sources.load_dataset``). check_contents: also compare
    every file with the content checksum recorded when it was written (reads them all;
    ``--check_contents``, implied by ``--verify``). selection: classes kept and the val
    split made from train (``sources.selection``; --min_class_images, --val_per_class,
    --recipe).
    """
    val_layout: str = "folders"
    drop_blacklist: bool = False
    allow_empty_classes: bool = False
    check_contents: bool = False
    selection: ClassSelection = ClassSelection()


def extract(source: str, dest: str, transform: Optional[TransformOptions] = None,
            options: ExtractOptions = ExtractOptions(), build: BuildOptions = BuildOptions(),
            log: Callable[[str], None] = print) -> ExtractSummary:
    """Write ``source`` (any distribution: the ILSVRC2012 archives, an extracted tree) into
    ``dest`` as the folder layout above; files are copied byte for byte unless ``transform``
    asks for a resize (then re-encoded in their own format).

    options: the layout and checks (``ExtractOptions``: val_layout, drop_blacklist,
    allow_empty_classes, check_contents). build: how it runs (``BuildOptions``): overwrite
    rebuilds splits that exist (built beside them and swapped in when complete); workers:
    threads (None = all cores); progress: tqdm bar (None = only on a terminal); the other
    fields as for ``create_imagenet``; a run always resumes unless overwrite, and with
    ``build.resume`` too (an interrupted overwrite run continues). log: where progress lines
    go.
    Resumable: run it again after an interruption. Raises ImagenetDbError subclasses for a
    bad source, ExtractError for an unknown val_layout, a final count that differs from the
    source's lists, an empty file where an image was extracted or (check_contents) a file
    whose contents changed since it was written, OutputBusyError while another run writes
    DEST (``DEST/.imagenet_db.lock``).
    """
    from imagenet_db.recipes.imagenet import create_imagenet

    if options.val_layout not in VAL_LAYOUTS:
        raise ExtractError(f"val layout must be one of {', '.join(VAL_LAYOUTS)}, not "
                           f"{options.val_layout!r}")
    build = replace(build, resume=build.resume or not build.overwrite)
    recipe = RecipeOptions(output_format=FOLDER.name, val_layout=options.val_layout,
                           drop_blacklist=options.drop_blacklist,
                           allow_empty_classes=options.allow_empty_classes,
                           selection=options.selection)
    summaries = create_imagenet(source, dest, transform or FOLDER.default_transform(None), recipe,
                                build, log)
    summary = ExtractSummary(dest=dest)
    for result in summaries.values():
        if result.action in ("build", "resume"):
            summary.written += result.written
        else:
            summary.kept += result.written
        summary.skipped += len(result.skipped)
        summary.seconds += result.seconds
    counts: Dict[str, int] = {}
    for name in summaries:
        with open(os.path.join(dest, f"{name}.txt"), encoding="utf-8", newline="\n") as f:
            for line in f:
                relpath = line.rstrip("\n").rsplit(" ", 1)[0]
                folder = "/".join([name] + relpath.split("/")[:-1])
                counts[folder] = counts.get(folder, 0) + 1
    skipped = {}
    for name, result in summaries.items():
        for relpath, _ in result.skipped:
            folder = "/".join([name] + relpath.split("/")[:-1])
            skipped[folder] = skipped.get(folder, 0) + 1
    check_counts(dest, {k: v - skipped.get(k, 0) for k, v in counts.items()})
    _check_not_empty(dest, summaries)
    if options.check_contents:
        _check_contents(dest, summaries)
    summary.counts = counts
    return summary
