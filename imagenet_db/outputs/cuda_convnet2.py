"""cuda-convnet2 batches: the layout of cuda-convnet2's ``make-data/make-data.py``.

What its loader (``convdata.ImageDataProvider``, ``python_util/data.py``) reads from one
directory (``--data-path``)::

    data_batch_0/data_batch_0.0 .. data_batch_0.2       training batches 0, 1, ... (3,072 images
    ...                                                 each, in sub-batch pickles of 1,024; the
    data_batch_417/data_batch_417.0                     last batch is shorter, fewer sub-files)
    data_batch_1000/data_batch_1000.0 ..                validation, from ceil(train batches /
                                                        1000) * 1000 (ImageNet: 1000..1016)
    batches.meta
    imagenet_db.batches.log                             ours: index, label, relpath per image

Each sub-batch file is a pickle (protocol 2, in Python 2's form, see ``outputs.py2pickle``) of
``{'data': [JPEG, ...], 'labels': [[label], ...]}`` — the labels are one-element lists, as
make-data writes them and as the loader needs (it picks ``l[randint(len(l))]``). Each JPEG is
the transformed image (``imaging.resize.cuda_convnet2``: shorter side 256, centre 256x256 crop)
encoded by OpenCV at quality 95 (make-data's ``JPEG_QUALITY``). Python 3 reads a sub-batch with
``pickle.load(f, encoding='latin1')`` (JPEGs come back as ``str``: ``s.encode('latin1')`` is the
file) or ``encoding='bytes'``; Python 2's cPickle (the loader) as make-data's.

``batches.meta`` (same pickle form): ``batch_size`` 3072, ``num_vis`` 196608 (256 * 256 * 3),
``label_names`` (index = label), and, computed here from the stored training images as the
loader decodes them (RGB, 0..255) instead of make-data's shipped ``input_meta``:

- ``data_mean``: float32 (3 * 256 * 256, 1): the mean image as planes R, G, B, element
  c * 65536 + y * 256 + x (the loader reshapes it to (3, 256, 256) and crops its centre);
- ``color_pca``: a tuple (float64 (3,) standard deviations along the principal axes = square
  roots of the eigenvalues, ascending; float64 (3, 3) eigenvectors as columns, rows R, G, B) of
  the population covariance of the R, G, B values of all pixels — what the loader's PCA
  lighting noise uses (``noise = dot(randn(n, 3) * stdevs, vectors.T)``).

Both are exact: integer sums of the pixels (staged in uint16) and of every pixel's outer
product (``image_gram``, computed on the worker threads). With ``--cuda_convnet2_uncropped``
images keep their aspect (shorter side 256) and both are taken over the centre 256x256.

Labels (``FORMAT.label_order``, applied by the recipe): the devkit's order, ILSVRC2012_ID - 1
(kit fox n02119789 = 0), not Caffe's. Train is shuffled (seeded), val in file order
(``stages``).
"""
import math
import os
import pickle
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from imagenet_db.errors import DatabaseError, ImagenetDbError
from imagenet_db.imaging.decode import decode_image
from imagenet_db.imaging.headers import check_image_bytes
from imagenet_db.outputs import py2pickle
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs.batchfiles import (BATCH_IMAGES, BatchOutput, StatsEncoded, Unit,
                                            batch_stage, colour_only, write_file_via)
from imagenet_db.outputs.spec import FormatOption, FormatSpec
from imagenet_db.sources.base import Dataset, shuffled

BATCH_SIZE = 3072      # make-data's OUTPUT_BATCH_SIZE
SUB_BATCH_SIZE = 1024  # make-data's OUTPUT_SUB_BATCH_SIZE
IMAGE_SIZE = 256       # make-data's OUTPUT_IMAGE_SIZE
JPEG_QUALITY = 95      # make-data's JPEG_QUALITY (pyext.h)
META_NAME = "batches.meta"


def val_first_batch(batches_before: int) -> int:
    """Number of the first validation batch: ``ceil(batches_before / 1000) * 1000``, as
    make-data numbers them (418 training batches -> 1000)."""
    return int(math.ceil(batches_before / 1000.0)) * 1000


def centre_square(pixels: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The centre size x size of an (H, W, C) image (offset (H - size) // 2, (W - size) // 2).
    Raises ImagenetDbError when the image is smaller."""
    height, width = pixels.shape[:2]
    if height < size or width < size:
        raise ImagenetDbError(f"image {width}x{height} is smaller than {size}x{size}")
    y, x = (height - size) // 2, (width - size) // 2
    return pixels[y:y + size, x:x + size]


def image_gram(rgb: np.ndarray) -> np.ndarray:
    """Sum over the pixels of an (H, W, 3) uint8 image of the outer product of its (R, G, B),
    as exact int64 (3, 3) (float64 is exact: each entry <= H*W*255^2 < 2^53)."""
    planar = rgb.reshape(-1, 3).T.astype(np.float64)
    return np.rint(planar @ planar.T).astype(np.int64)


class ColorStats:
    """Exact running sums over equally sized RGB images, for data_mean and color_pca.

    pixel_sum: uint64 (H, W, 3) (staged in a uint16 sum of at most 257 images: 257 * 255 =
    65535); gram: int64 (3, 3), the sum of every pixel's outer product; images: count.
    """
    STAGE = 257

    def __init__(self, size: int = IMAGE_SIZE):
        self.size = size
        self.pixel_sum = np.zeros((size, size, 3), np.uint64)
        self.gram = np.zeros((3, 3), np.int64)
        self.images = 0
        self._stage = np.zeros((size, size, 3), np.uint16)
        self._staged = 0

    def add(self, rgb: np.ndarray, gram: Optional[np.ndarray] = None) -> None:
        """Add one (size, size, 3) uint8 RGB image (with its image_gram, computed if None)."""
        np.add(self._stage, rgb, out=self._stage, casting="unsafe")
        self._staged += 1
        if self._staged == self.STAGE:
            self._fold()
        self.gram += image_gram(rgb) if gram is None else gram
        self.images += 1

    def _fold(self) -> None:
        if self._staged:
            np.add(self.pixel_sum, self._stage, out=self.pixel_sum, casting="unsafe")
            self._stage[:] = 0
            self._staged = 0

    def merge(self, other: "ColorStats") -> None:
        """Add ``other``'s sums to these."""
        other._fold()
        self._fold()
        self.pixel_sum += other.pixel_sum
        self.gram += other.gram
        self.images += other.images

    def arrays(self) -> dict:
        """The sums as named arrays (kept in the build state)."""
        self._fold()
        return {"pixel_sum": self.pixel_sum.copy(), "gram": self.gram.copy(),
                "images": np.array(self.images, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict, size: int = IMAGE_SIZE) -> "ColorStats":
        """The ColorStats of ``arrays()``' output (empty when absent)."""
        stats = cls(size)
        if "pixel_sum" in arrays:
            stats.pixel_sum = arrays["pixel_sum"].astype(np.uint64)
            stats.gram = arrays["gram"].astype(np.int64)
            stats.images = int(arrays["images"])
        return stats

    def data_mean(self) -> np.ndarray:
        """float32 (3 * size * size, 1): the mean image as planes R, G, B (cuda-convnet2's)."""
        self._fold()
        mean = self.pixel_sum.astype(np.float64) / self.images
        return mean.transpose(2, 0, 1).reshape(-1, 1).astype(np.float32)

    def covariance(self) -> np.ndarray:
        """float64 (3, 3) population covariance of the R, G, B values of all pixels."""
        self._fold()
        count = self.images * self.size * self.size
        mean = self.pixel_sum.reshape(-1, 3).sum(axis=0).astype(np.float64) / count
        return self.gram / count - np.outer(mean, mean)

    def color_pca(self) -> Tuple[np.ndarray, np.ndarray]:
        """(stdevs float64 (3,) ascending = sqrt of the covariance's eigenvalues, eigenvectors
        float64 (3, 3) as columns), cuda-convnet2's ``color_pca``."""
        values, vectors = np.linalg.eigh(self.covariance())
        return np.sqrt(np.clip(values, 0, None)), vectors


def read_pickle(path: str) -> dict:
    """A sub-batch or batches.meta file as Python 3 objects: str keys, JPEGs as bytes, arrays
    as numpy arrays (``py2pickle.load(encoding='bytes')``: only the format's types are built,
    nothing a crafted file names is run; keys decoded). Raises OSError, pickle.UnpicklingError,
    EOFError, ValueError; AttributeError when the file does not hold a dict."""
    obj = py2pickle.load(path, encoding="bytes")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


class CudaConvnet2Output(BatchOutput):
    """cuda-convnet2 batches of every split in one directory (module docstring), resumable.

    splits: [(name, record count)], train first: its batches are numbered from 0, each later
    split's from val_first_batch(batches before it). label_names: for batches.meta (index =
    label). stats_splits: names of the splits whose images make data_mean/color_pca
    ('train'). batch_size_images/sub_batch_size: 3072/1024 as make-data (smaller in tests).
    Images are 256x256 (or, uncropped, at least that: the statistics take the centre).
    """
    name = "cuda-convnet2"
    verify_accepts = "(batches.meta, data_batch_N/)"
    description = "cuda-convnet2 batches (make-data.py layout): pickled JPEG batches + batches.meta"

    def __init__(self, path: str, splits: Sequence[Tuple[str, int]] = (),
                 label_names: Sequence[str] = (), stats_splits: Sequence[str] = ("train",),
                 batch_size_images: int = BATCH_SIZE, sub_batch_size: int = SUB_BATCH_SIZE,
                 batch_size: int = 0, read_only: bool = False):
        if batch_size_images % sub_batch_size:
            raise ValueError("batch_size_images must be a multiple of sub_batch_size")
        self.unit_size, self.batch_images = sub_batch_size, batch_size_images
        self.per_batch = batch_size_images // sub_batch_size
        self.label_names, self.image_size = list(label_names), IMAGE_SIZE
        self._stats_names = tuple(stats_splits)
        self._pending_stats = ColorStats(IMAGE_SIZE)
        super().__init__(path, splits, read_only=read_only)
        self.stats_splits = {n for n, (name, _) in enumerate(self.splits)
                             if name in self._stats_names}
        self.stats = ColorStats.from_arrays(self.sums, IMAGE_SIZE)

    @classmethod
    def encode(cls, record, image) -> StatsEncoded:
        """JPEG (quality 95) of the transformed image, plus the centre square's RGB pixels and
        their image_gram (for batches.meta). image.pixels: (H, W, 3) BGR uint8."""
        if image.pixels is None or image.pixels.ndim != 3:
            raise ImagenetDbError(f"{record.relpath}: cuda-convnet2 stores colour pixels")
        ok, buf = cv2.imencode(".jpg", image.pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return "cannot encode image as JPEG"  # a skip reason
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # what the loader's libjpeg sees
        rgb = cv2.cvtColor(centre_square(decoded, IMAGE_SIZE), cv2.COLOR_BGR2RGB)
        return StatsEncoded(buf.tobytes(), None, image.shape, record.relpath,
                            stats=(rgb, image_gram(rgb)))

    @classmethod
    def detect(cls, path: str) -> bool:
        """True when ``path`` holds batches.meta."""
        return os.path.isfile(os.path.join(path, META_NAME))

    def first_batch(self, split: int) -> int:
        """Number of the first batch of ``split``: 0, then ceil(batches before / 1000) * 1000."""
        first = 0
        for earlier in range(split):
            batches = -(-self.split_counts[earlier] // self.batch_images)
            first = val_first_batch(first + batches)
        return first

    def unit_paths(self, unit: Unit) -> List[str]:
        batch = self.first_batch(unit.split) + unit.number // self.per_batch
        return [os.path.join(self.path, f"data_batch_{batch}",
                             f"data_batch_{batch}.{unit.number % self.per_batch}")]

    def existing_unit_files(self) -> List[str]:
        out = []
        for entry in os.listdir(self.path):
            folder = os.path.join(self.path, entry)
            if entry.startswith("data_batch_") and os.path.isdir(folder):
                out += [os.path.join(folder, name) for name in os.listdir(folder)]
        return out

    def write_unit(self, unit: Unit, values: list) -> None:
        (path,) = self.unit_paths(unit)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        payload = py2pickle.dumps({"data": values,
                                   "labels": [[label] for _, label, _ in unit.entries]})
        # the temporary goes to the output root: the loader reads every file in data_batch_N/
        write_file_via(path, payload, tmp_folder=self.path)

    def read_unit_values(self, unit: Unit) -> list:
        (path,) = self.unit_paths(unit)
        try:
            data = read_pickle(path)["data"]
        except (OSError, KeyError, pickle.UnpicklingError, EOFError, ValueError, TypeError,
                AttributeError) as exc:
            raise DatabaseError(f"{path}: unreadable batch file ({exc}); pass --overwrite to "
                                f"start again") from None
        return list(data[:len(unit.entries)])

    def unit_pixels(self, unit: Unit) -> Iterator[np.ndarray]:
        for jpeg in self.read_unit_values(unit):
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            yield np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))

    def check_unit_file(self, unit: Unit, path: str, report) -> Optional[str]:
        """As the loader reads it (``encoding='latin1'``, but with ``py2pickle.load``: only
        the format's types are built, a crafted global is refused, never run), a dict whose
        'data' are the log's images as JPEGs (each decodes to 3 channels, at least 256x256)
        and whose 'labels' are ``[[label], ...]`` of the log."""
        try:
            batch = py2pickle.load(path, encoding="latin1")
            data, labels = batch["data"], batch["labels"]
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
                AttributeError, IndexError) as exc:
            return (f"cannot be loaded as a cuda-convnet2 sub-batch pickle "
                    f"({type(exc).__name__}: {exc})")
        if len(data) != len(unit.entries):
            return f"holds {len(data)} images, the log says {len(unit.entries)}"
        if list(labels) != [[label] for _, label, _ in unit.entries]:
            return "its labels differ from the log's"
        for jpeg, (_, _, relpath) in zip(data, unit.entries):
            jpeg = jpeg.encode("latin1") if isinstance(jpeg, str) else jpeg
            image = None if check_image_bytes(jpeg) else decode_image(jpeg, True)
            if image is None:
                return f"image {relpath}: {check_image_bytes(jpeg) or 'JPEG cannot be decoded'}"
            if min(image.shape[:2]) < self.image_size:
                return (f"image {relpath} is {image.shape[1]}x{image.shape[0]}, smaller than "
                        f"{self.image_size}x{self.image_size}")
            report.shapes[(3, image.shape[0], image.shape[1])] += 1
        return None

    def side_files(self) -> List[str]:
        """batches.meta."""
        return [META_NAME]

    def check_side_files(self, manifest: dict, report) -> None:
        """batches.meta loads (latin1, ``py2pickle.load``: restricted) with this output's
        batch_size, num_vis, label_names, a float32 (num_vis, 1) data_mean and a ((3,), (3, 3))
        color_pca."""
        path = os.path.join(self.path, META_NAME)
        num_vis = self.image_size * self.image_size * 3
        try:
            meta = py2pickle.load(path, encoding="latin1")
            problem = None
            if (meta["batch_size"], meta["num_vis"]) != (self.batch_images, num_vis):
                problem = (f"batch_size {meta['batch_size']}, num_vis {meta['num_vis']}; "
                           f"expected {self.batch_images}, {num_vis}")
            elif list(meta["label_names"]) != self.label_names:
                problem = "its label_names differ from the completion record's"
            elif np.shape(meta["data_mean"]) != (num_vis, 1):
                problem = f"data_mean has shape {np.shape(meta['data_mean'])}"
            elif [np.shape(a) for a in meta["color_pca"]] != [(3,), (3, 3)]:
                problem = "color_pca is not ((3,), (3, 3))"
        except FileNotFoundError:
            problem = "missing"
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError,
                AttributeError, IndexError) as exc:
            problem = f"cannot be loaded ({type(exc).__name__}: {exc})"
        if problem:
            report.problem(f"{path}: {problem}")

    def add(self, record, encoded) -> None:
        """Store one image's JPEG; training images also go into data_mean/color_pca."""
        self.begin(record)
        if self.split_of(record.index) in self.stats_splits:
            rgb, gram = encoded.stats
            self._pending_stats.add(rgb, gram)
        self.append(record, bytes(encoded.value))

    def committed_unit(self, unit: Unit) -> None:
        self.stats.merge(self._pending_stats)
        self._pending_stats = ColorStats(self.image_size)
        self.sums = self.stats.arrays()

    def aborted(self) -> None:
        self._pending_stats = ColorStats(self.image_size)

    def batch_ranges(self) -> dict:
        """{split name: 'first-last'} batch numbers of the splits that have images."""
        out = {}
        for split, (name, _) in enumerate(self.splits):
            if self.split_counts[split]:
                first = self.first_batch(split)
                last = first + -(-self.split_counts[split] // self.batch_images) - 1
                out[name] = f"{first}-{last}"
        return out

    def finish(self) -> dict:
        """Write batches.meta; returns the batch ranges and image counts per split."""
        if not self.stats.images:
            raise ImagenetDbError(f"{self.path}: no training image was stored: data_mean and "
                                  f"color_pca are undefined")
        meta = {"data_mean": self.stats.data_mean(), "color_pca": self.stats.color_pca(),
                "batch_size": self.batch_images,
                "num_vis": self.image_size * self.image_size * 3,
                "label_names": list(self.label_names)}
        write_file_via(os.path.join(self.path, META_NAME), py2pickle.dumps(meta))
        return {"batch_ranges": self.batch_ranges(),
                "images": {name: self.split_counts[n] for n, (name, _) in enumerate(self.splits)},
                "mean_images": self.stats.images}


def default_transform(options=None) -> TransformOptions:
    """make-data's resize: resize mode convnet2 (shorter side 256 with C rounding, AREA/CUBIC
    by the scale, centre 256x256); with the option ``uncropped`` (``RecipeOptions.option``):
    shorter_side 256 with the same interpolation rule, no crop."""
    if options is not None and options.option("uncropped"):
        return TransformOptions(resize_mode="shorter_side", shorter_side=IMAGE_SIZE,
                                interpolation="auto")
    return TransformOptions(resize_height=IMAGE_SIZE, resize_width=IMAGE_SIZE,
                            resize_mode="convnet2", interpolation="auto")


def check_transform(transform: TransformOptions) -> None:
    """Refuse any transform but make-data's (``default_transform``), and --gray/--encoded."""
    crop = (transform.resize_mode == "convnet2" and transform.resize_width == IMAGE_SIZE
            and transform.resize_height == IMAGE_SIZE)
    keep = (transform.resize_mode == "shorter_side" and transform.shorter_side == IMAGE_SIZE
            and not transform.only_shrink)
    if not (crop or keep) or transform.interpolation != "auto":
        raise ImagenetDbError(f"cuda-convnet2 batches hold make-data's images: resize mode "
                              f"convnet2 at {IMAGE_SIZE}x{IMAGE_SIZE} (or shorter_side "
                              f"{IMAGE_SIZE}, uncropped) with interpolation auto")
    colour_only("cuda-convnet2", transform)


def stages(found: Dataset, out: str, recipe, want_mean: bool) -> Tuple[Dataset, list]:
    """One output holding train (shuffled with ``recipe.seed``, Python's order as make-data)
    then val (sorted), labels in the devkit's order (the dataset comes relabelled), the
    classes' words as ``label_names``; ``recipe.batch_images`` (None: 3072) must be a
    multiple of 3 (3 sub-batch files)."""
    options = {"label_names": [found.words.get(wnid, wnid) for wnid in found.synsets]}
    batch_images = recipe.batch_images
    if batch_images is not None:
        if batch_images <= 0 or batch_images % 3:
            raise ImagenetDbError(f"cuda-convnet2 batches hold 3 sub-batches: "
                                  f"--batch_images {batch_images} is not a multiple of 3")
        options.update(batch_size_images=batch_images, sub_batch_size=batch_images // 3)
    seed = recipe.seed
    return batch_stage(found, out, FORMAT, lambda entries: shuffled(entries, seed), options,
                       {"seed": seed})


FORMAT = FormatSpec(
    name="cuda-convnet2", summary="cuda-convnet2 batches", folder="ilsvrc12_cuda_convnet2",
    default_transform=default_transform, check_transform=check_transform, stages=stages,
    label_order="devkit",
    options=(FormatOption("uncropped", "cuda-convnet2: keep the aspect ratio (shorter side 256, "
                                       "no centre crop; make-data's CROP_TO_SQUARE=False)",
                          kind="bool", default=False, only_for_owner=True),
             BATCH_IMAGES),
    own_resize="cuda-convnet2 uses make-data's resize (shorter side 256, centre crop; "
               "--uncropped): no resize flags")
CudaConvnet2Output.format_spec = FORMAT
