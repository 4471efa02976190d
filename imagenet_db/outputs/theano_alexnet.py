"""Theano AlexNet hickle batches: the layout of uoguelph-mlrg/theano_alexnet ``preprocessing/``.

What its ``train.py`` / ``train_2gpu.py`` read (``train_funcs.unpack_configs``: every
``*.hkl`` / ``*_0.hkl`` of a folder in sorted order, the label file sliced per batch, the mean
subtracted from each batch), in one directory (upstream's ``tar_root_dir``)::

    train_hkl_b256_b_256/0000.hkl ...        uint8 (3, 256, 256, 256): c01b = (channel, row,
                                             column, image in batch), channels R, G, B
    train_hkl_b256_b_128/0000_0.hkl, 0000_1.hkl   images [0:128] and [128:256] of batch 0000
    val_hkl_b256_b_256/, val_hkl_b256_b_128/ the same for val
    labels/train_labels.npy, val_labels.npy  int64, the label of every stored image in order
    labels/train_labels_0.npy, _1.npy, ...   the labels of the _0 / _1 halves (for 2 GPUs)
    misc/img_mean.npy                        float64 (3, 256, 256), R, G, B: mean of the
                                             training batches (exact integer sum / count)
    misc/shuffled_train_filenames.npy        the train relpaths in stored order (numpy str)
    misc/train.txt, misc/val.txt             Caffe-format lists ('relpath label', sorted) of
                                             the stored images
    imagenet_db.batches.log                  ours: index, label, relpath per stored image

Files are written with ``hickle.dump(array, path, mode='w')`` (readable by ``hickle.load``
and, as dataset ``/data``, by plain h5py). Each split's incomplete last batch is not written
(as upstream); its images keep their labels in ``<split>_labels.npy`` (upstream's file covers
every listed image; the split label files stop at the last full batch).
Labels are Caffe's (``FORMAT.label_order``); the train order is the sorted list shuffled with numpy's
legacy ``RandomState(seed).shuffle`` (``--seed 1`` gives upstream's ``np.random.seed(1)`` order),
val sorted by name. Upstream resizes with ``scipy.misc.imresize`` (PIL bilinear); here the
squash is OpenCV's bilinear, as Caffe's (a mean difference of ~2 grey levels).
"""
import io
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from imagenet_db.engine.files import remove_stale_temporaries
from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.outputs.base import Encoded
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs.batchfiles import (BATCH_IMAGES, BatchOutput, Unit, batch_stage,
                                             colour_only, sync_file, temporary_path,
                                             write_file_via)
from imagenet_db.outputs.spec import FormatSpec, caffe_squash
from imagenet_db.sources.base import Dataset
from imagenet_db.engine.files import fsync_dir

BATCH_SIZE = 256  # make_hkl.py's batch_size


def _hickle():
    try:
        import hickle
    except ImportError:  # pragma: no cover - hickle is a dependency
        raise ImagenetDbError("the theano-alexnet format needs hickle (pip install hickle)")
    return hickle


def read_hkl(path: str) -> np.ndarray:
    """The array of a batch file ``hickle.dump(array)`` wrote: its dataset ``/data`` read with
    h5py as plain numbers. hickle's own ``load`` is never used: it unpickles the type records a
    file carries (a crafted file runs code); here nothing stored is unpickled or run. Raises
    ValueError when ``/data`` is missing or not a numeric dataset, OSError when the file is not
    HDF5 or cannot be read."""
    import h5py

    with h5py.File(path, "r") as f:
        data = f.get("data")
        if not isinstance(data, h5py.Dataset) or data.dtype.kind not in "biuf" or \
                data.shape is None:
            raise ValueError("no numeric dataset /data (not a hickle array file)")
        return data[()]


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` through a synced temporary renamed into place."""
    buf = io.BytesIO()
    np.save(buf, array)
    write_file_via(path, buf.getvalue())


def _npy_problem(path: str, good, what: str) -> Optional[str]:
    """'PATH: problem' when the .npy file is missing, cannot be loaded, or ``good(array)`` is
    false (``what`` says why); None when it is fine."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, ValueError, EOFError) as exc:
        return f"{path}: cannot be loaded with numpy.load ({exc})"
    return None if good(array) else f"{path}: {what}"


class TheanoAlexnetOutput(BatchOutput):
    """Theano AlexNet hickle batches of every split in one directory (module docstring).

    splits: [(name, record count)], e.g. [('train', n), ('val', m)]. mean_splits /
    file_list_splits: names of the splits that get misc/img_mean.npy (their full batches) and
    misc/shuffled_<name>_filenames.npy ('train'). batch_images: 256 (smaller in tests).
    """
    name = "theano-alexnet"
    verify_accepts = "(labels/, misc/img_mean.npy, *_hkl_*/)"
    description = "Theano AlexNet hickle batches (c01b uint8, 256 per file, + 128 halves)"

    def __init__(self, path: str, splits: Sequence[Tuple[str, int]] = (),
                 mean_splits: Sequence[str] = ("train",),
                 file_list_splits: Sequence[str] = ("train",),
                 batch_images: int = BATCH_SIZE, batch_size: int = 0,
                 read_only: bool = False):
        if batch_images % 2:
            raise ValueError("batch_images must be even (two halves)")
        self.unit_size = batch_images
        self._mean_names, self._list_names = tuple(mean_splits), tuple(file_list_splits)
        self._batch_sum = None
        super().__init__(path, splits, read_only=read_only)

    @classmethod
    def encode(cls, record, image) -> Encoded:
        """The transformed image as (3, H, W) uint8, channels R, G, B (image.pixels: BGR)."""
        pixels = image.pixels
        if pixels is None or pixels.ndim != 3:
            raise ImagenetDbError(f"{record.relpath}: theano-alexnet stores colour pixels")
        chw = np.ascontiguousarray(pixels[:, :, ::-1].transpose(2, 0, 1))
        return Encoded(chw, None, image.shape, record.relpath)

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds misc/img_mean.npy and labels/."""
        return (os.path.isfile(os.path.join(path, "misc", "img_mean.npy"))
                and os.path.isdir(os.path.join(path, "labels")))

    def _dirs(self, split: int) -> Tuple[str, str]:
        name, size = self.splits[split][0], self.unit_size
        return (os.path.join(self.path, f"{name}_hkl_b{size}_b_{size}"),
                os.path.join(self.path, f"{name}_hkl_b{size}_b_{size // 2}"))

    def unit_paths(self, unit: Unit) -> List[str]:
        full_dir, half_dir = self._dirs(unit.split)
        paths = [os.path.join(full_dir, f"{unit.number:04d}.hkl")]
        if len(unit.entries) == self.unit_size:
            paths += [os.path.join(half_dir, f"{unit.number:04d}_{h}.hkl") for h in (0, 1)]
        return paths

    def existing_unit_files(self) -> List[str]:
        out = []
        for split in range(len(self.splits)):
            for folder in self._dirs(split):
                if os.path.isdir(folder):
                    if not self.read_only:
                        remove_stale_temporaries(folder)
                    out += [os.path.join(folder, name) for name in os.listdir(folder)
                            if name.endswith(".hkl")]
        return out

    def _dump(self, array: np.ndarray, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = temporary_path(path)  # '.0001.hkl.tmp-PID': not one of the loader's *.hkl
        try:
            _hickle().dump(array, tmp, mode="w")
            sync_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        fsync_dir(os.path.dirname(path))

    def write_unit(self, unit: Unit, values: list) -> None:
        batch = np.stack(values, axis=-1)  # c01b: (3, H, W, n)
        paths = self.unit_paths(unit)
        self._dump(batch, paths[0])
        if len(paths) == 3:
            half = self.unit_size // 2
            self._dump(batch[..., :half], paths[1])
            self._dump(batch[..., half:], paths[2])
            if self.splits[unit.split][0] in self._mean_names:
                self._batch_sum = batch.sum(axis=3, dtype=np.uint64)

    def read_unit_values(self, unit: Unit) -> list:
        path = self.unit_paths(unit)[0]
        try:
            batch = read_hkl(path)
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"{path}: unreadable batch file ({exc}); pass --overwrite to "
                                f"start again") from None
        return [np.ascontiguousarray(batch[..., i]) for i in range(len(unit.entries))]

    def unit_pixels(self, unit: Unit) -> Iterator[np.ndarray]:
        yield from self.read_unit_values(unit)

    def unit_kept(self, unit: Unit) -> bool:
        """Each split's incomplete last batch is not part of a finished output."""
        return len(unit.entries) == self.unit_size

    def check_unit_file(self, unit: Unit, path: str, report) -> Optional[str]:
        """What ``train.py`` loads (read with ``read_hkl``, never unpickled): uint8 c01b
        (3, H, W, n), n the batch size (its half for the _0/_1 files); the full file's images
        are counted."""
        try:
            batch = read_hkl(path)
        except Exception as exc:  # h5py raises many kinds for a damaged file
            return f"cannot be loaded as a hickle array ({type(exc).__name__}: {exc})"
        half = path.endswith(("_0.hkl", "_1.hkl"))
        n = self.unit_size // 2 if half else self.unit_size
        shape = getattr(batch, "shape", None)
        if getattr(batch, "dtype", None) != np.uint8 or shape is None or len(shape) != 4 or \
                shape[0] != 3 or shape[3] != n:
            return (f"holds {getattr(batch, 'dtype', type(batch).__name__)} {shape}, expected "
                    f"uint8 (3, H, W, {n})")
        if not half:
            report.shapes[tuple(shape[:3])] += n
        return None

    def side_files(self) -> List[str]:
        """labels/<split>_labels.npy (+ _0, _1), misc/<split>.txt, misc/img_mean.npy and
        misc/shuffled_<split>_filenames.npy, as ``finish`` writes them; and each split's two
        batch folders ('<name>/': a split without a full batch leaves them empty)."""
        names = [name for name, _ in self.splits]
        folders = [os.path.basename(folder) + "/" for split in range(len(self.splits))
                   for folder in self._dirs(split)]
        return folders + ([f"labels/{name}_labels{suffix}.npy" for name in names
                 for suffix in ("", "_0", "_1")] + [f"misc/{name}.txt" for name in names]
                + [f"misc/shuffled_{name}_filenames.npy" for name in self._list_names]
                + (["misc/img_mean.npy"] if self._mean_names else []))

    def check_side_files(self, manifest: dict, report) -> None:
        """labels/<split>_labels.npy (and _0/_1) equal to the log's labels, as finish wrote
        them; misc/img_mean.npy a float64 (3, H, W)."""
        half = self.unit_size // 2
        for split, (name, _) in enumerate(self.splits):
            labels = np.array([label for _, label, _ in self.split_entries(split)], np.int64)
            rows = labels[:len(labels) // self.unit_size * self.unit_size].reshape(-1, half)
            for suffix, want in (("", labels), ("_0", rows[0::2].ravel()),
                                 ("_1", rows[1::2].ravel())):
                path = os.path.join(self.path, "labels", f"{name}_labels{suffix}.npy")
                problem = _npy_problem(path, lambda a, want=want: np.array_equal(a, want),
                                       "differs from the labels of the log")
                if problem:
                    report.problem(problem)
        shapes = set(report.shapes) or {None}
        if self._mean_names:
            path = os.path.join(self.path, "misc", "img_mean.npy")
            problem = _npy_problem(path, lambda a: a.dtype == np.float64 and (
                None in shapes or a.shape in shapes), "is not a float64 (3, H, W) of the batches")
            if problem:
                report.problem(problem)

    def committed_unit(self, unit: Unit) -> None:
        if self._batch_sum is not None:
            total = self.sums.get("pixel_sum")
            self.sums["pixel_sum"] = self._batch_sum if total is None else total + self._batch_sum
            self.sums["images"] = np.array(int(self.sums.get("images", 0)) + self.unit_size,
                                           np.int64)
            self._batch_sum = None

    def _note_no_batch(self, split: int, images: int, facts: dict) -> None:
        """Add a note to ``facts['notes']`` saying that a split has no full batch: its batch
        folders hold no file (its incomplete batch was deleted, as upstream)."""
        name = self.splits[split][0]
        full, half = (os.path.basename(folder) for folder in self._dirs(split))
        facts.setdefault("notes", []).append(
            f"{name}: its {images} images are fewer than one batch of {self.unit_size}, so "
            f"{full}/ and {half}/ hold no batch file (their labels are in "
            f"labels/{name}_labels.npy; see --batch_images)")

    def finish(self) -> dict:
        """Delete each split's incomplete last batch (not part of the output, as upstream);
        write labels/ and misc/. Returns per split: batches, images, dropped; and ``notes``
        (lines the recipe prints) naming a split too small for one batch, which gets no
        batch folder."""
        # A build SIGKILLed here, after an incomplete batch was deleted, failed to resume
        # ("0001.hkl: unreadable batch file"): the state says finish has begun.
        self.begin_finish()
        for unit in self.layout(self.logged, complete=True):
            if len(unit.entries) < self.unit_size:
                for path in self.unit_paths(unit):
                    if os.path.exists(path):
                        os.remove(path)
        labels_dir, misc = os.path.join(self.path, "labels"), os.path.join(self.path, "misc")
        for folder in (labels_dir, misc):
            os.makedirs(folder, exist_ok=True)
            remove_stale_temporaries(folder)  # of a build killed here (they outlived resume)
        facts: dict = {}
        half = self.unit_size // 2
        for split, (name, _) in enumerate(self.splits):
            entries = self.split_entries(split)
            labels = np.array([label for _, label, _ in entries], dtype=np.int64)
            save_npy(os.path.join(labels_dir, f"{name}_labels.npy"), labels)
            batches = len(labels) // self.unit_size
            rows = labels[:batches * self.unit_size].reshape(-1, half)
            save_npy(os.path.join(labels_dir, f"{name}_labels_0.npy"), rows[0::2].ravel())
            save_npy(os.path.join(labels_dir, f"{name}_labels_1.npy"), rows[1::2].ravel())
            lines = "".join(f"{relpath} {label}\n" for relpath, label in
                            sorted((relpath, label) for _, label, relpath in entries))
            write_file_via(os.path.join(misc, f"{name}.txt"), lines.encode("utf-8"))
            if name in self._list_names:
                save_npy(os.path.join(misc, f"shuffled_{name}_filenames.npy"),
                         np.array([relpath for _, _, relpath in entries], dtype=str))
            facts[name] = {"batches": batches, "images": len(labels),
                           "dropped": len(labels) - batches * self.unit_size}
            if labels.size and not batches:  # said, not silent (the frameworks see no split)
                self._note_no_batch(split, labels.size, facts)
        if self._mean_names:
            count = int(self.sums.get("images", 0))
            if not count:
                raise ImagenetDbError(f"{self.path}: fewer than {self.unit_size} training "
                                      f"images were stored: no full batch, so no mean")
            save_npy(os.path.join(misc, "img_mean.npy"),
                     self.sums["pixel_sum"].astype(np.float64) / count)
            facts["mean_images"] = count
        fsync_dir(labels_dir)
        fsync_dir(misc)
        return facts


def numpy_shuffled(entries: list, seed: int) -> list:
    """``entries`` shuffled as numpy's legacy ``np.random.seed(seed); np.random.shuffle(x)``
    does (the same permutation for any list of that length; stable across numpy versions)."""
    order = list(range(len(entries)))
    np.random.RandomState(seed).shuffle(order)
    return [entries[i] for i in order]


def check_transform(transform: TransformOptions) -> None:
    """Colour images it encodes itself (no --gray, no --encoded), all of one size."""
    colour_only("theano-alexnet", transform)
    if not transform.fixed_size:
        raise ImagenetDbError("theano-alexnet batches need one image size (--resize WxH with a "
                              "fixed-size resize mode)")


def stages(found: Dataset, out: str, recipe, want_mean: bool) -> Tuple[Dataset, list]:
    """One output holding train (sorted, then shuffled with numpy's legacy
    ``RandomState(recipe.seed).shuffle``: ``--seed 1`` is upstream's order) then val (sorted),
    Caffe labels. ``recipe.batch_images`` (None: 256) must be even, and no more than the
    training images (else no batch and no mean would be written)."""
    batch_images, options = recipe.batch_images, {}
    if batch_images is not None:
        if batch_images <= 0 or batch_images % 2:
            raise ImagenetDbError(f"theano-alexnet batches are cut in two halves: "
                                  f"--batch_images {batch_images} is not even")
        options["batch_images"] = batch_images
    size = batch_images or BATCH_SIZE
    train = len(found.splits["train"].entries) if "train" in found.splits else 0
    if train < size:
        raise ImagenetDbError(f"{train} training images are fewer than one theano-alexnet "
                              f"batch of {size}: no batch would be written (see --batch_images)")
    seed = recipe.seed
    return batch_stage(found, out, FORMAT, lambda entries: numpy_shuffled(entries, seed),
                       options, {"seed": seed})


FORMAT = FormatSpec(
    name="theano-alexnet", summary="Theano AlexNet hickle batches",
    folder="ilsvrc12_theano_alexnet", default_transform=caffe_squash,
    check_transform=check_transform, stages=stages, options=(BATCH_IMAGES,))
TheanoAlexnetOutput.format_spec = FORMAT
