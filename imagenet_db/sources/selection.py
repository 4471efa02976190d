"""Which classes to keep, and a validation split made from the training images (the whole
ImageNet has none): ``--min_class_images`` and ``--val_per_class``.

Applied by ``sources.load_dataset`` to any distribution, after its labels are made:

1. ``min_class_images N``: a class with fewer than N training images is dropped (all its
   images, in every split); the others are labelled again 0..K-1 in ASCII wnid order
   (Caffe's rule). The dropped classes are kept in ``Dataset.dropped_classes`` as
   [(wnid, images)], written as ``dropped_classes.txt`` beside the outputs.
2. ``val_per_class N``: the first N training images of each kept class, in ASCII file-name
   order (byte order: MIIL's ``ls | head -n 50`` depends on the locale; this does not), leave
   train and make the ``val`` split (relpaths unchanged: ``<wnid>/<file>``). A class with N
   images or fewer then has none left to train on: an error naming it. A SOURCE that has a
   val split already is refused (one line).

ImageNet-21K-P (``recipes.presets``) is min_class_images 501 ("more than 500") and
val_per_class 50.
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Tuple

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources import labels as L
from imagenet_db.sources.base import Dataset, Split


@dataclass(frozen=True)
class ClassSelection:
    """min_class_images: drop classes with fewer training images (0: keep all).
    val_per_class: move the first N training images of each class to a new val split (0: no
    split). Both count images (ints >= 0)."""
    min_class_images: int = 0
    val_per_class: int = 0

    def __post_init__(self):
        for name in ("min_class_images", "val_per_class"):
            if getattr(self, name) < 0:
                raise ImagenetDbError(f"--{name} must be >= 0, not {getattr(self, name)}")

    @property
    def active(self) -> bool:
        """True when it changes anything."""
        return bool(self.min_class_images or self.val_per_class)


def _class_counts(dataset: Dataset) -> Dict[str, int]:
    counts = {wnid: 0 for wnid in dataset.synsets}
    for _, label in dataset.splits["train"].entries:
        counts[dataset.synsets[label]] += 1
    return counts


def drop_small_classes(dataset: Dataset, minimum: int) -> Dataset:
    """``dataset`` without the classes that have fewer than ``minimum`` training images,
    relabelled in ASCII order; ``dropped_classes`` = [(wnid, training images)] in wnid order,
    and a note. Raises ImagenetDbError when no class is left."""
    counts = _class_counts(dataset)
    kept = L.caffe_synsets(w for w, n in counts.items() if n >= minimum)
    if not kept:
        raise ImagenetDbError(f"--min_class_images {minimum}: no class has that many training "
                              f"images (the most is {max(counts.values(), default=0)})")
    new = L.label_map(kept)
    splits = {}
    for name, split in dataset.splits.items():
        entries = [(rel, new[dataset.synsets[label]]) for rel, label in split.entries
                   if dataset.synsets[label] in new]
        splits[name] = Split(split.name, entries, split.loader)
    dropped = [(w, counts[w]) for w in sorted(counts) if w not in new]
    note = (f"--min_class_images {minimum}: kept {len(kept):,} classes, dropped "
            f"{len(dropped):,} with fewer images (listed in dropped_classes.txt)")
    return replace(dataset, synsets=kept, splits=splits,
                   words={w: t for w, t in dataset.words.items() if w in new},
                   notes=dataset.notes + [note], dropped_classes=dropped)


def split_val(dataset: Dataset, per_class: int, where: str) -> Dataset:
    """``dataset`` with the first ``per_class`` training images of each class (ASCII relpath
    order) moved to a new ``val`` split. Raises ImagenetDbError naming ``where`` when it has
    a val split already, and naming the first class left without training images."""
    if "val" in dataset.splits:
        raise ImagenetDbError(f"{where}: --val_per_class makes a val split from the training "
                              f"images, but this SOURCE has one already")
    train = dataset.splits["train"]
    taken: Dict[int, int] = {}
    val: List[Tuple[str, int]] = []
    rest: List[Tuple[str, int]] = []
    for relpath, label in sorted(train.entries):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            val.append((relpath, label))
        else:
            rest.append((relpath, label))
    left = {label for _, label in rest}
    empty = [w for label, w in enumerate(dataset.synsets) if label not in left]
    if empty:
        raise ImagenetDbError(f"--val_per_class {per_class}: class {empty[0]} has only "
                              f"{taken.get(dataset.synsets.index(empty[0]), 0)} images, none "
                              f"would be left to train on ({len(empty)} such class(es)); drop "
                              f"them with --min_class_images {per_class + 1}")
    splits = dict(dataset.splits)
    splits["train"] = Split("train", rest, train.loader)
    splits["val"] = Split("val", val, train.loader)
    note = f"--val_per_class {per_class}: {len(val):,} val and {len(rest):,} train images"
    return replace(dataset, splits=splits, notes=dataset.notes + [note])


def select(dataset: Dataset, selection: ClassSelection, where: str) -> Dataset:
    """Apply ``selection`` to ``dataset`` (module docstring): first the class minimum, then
    the val split. ``where`` (the SOURCE) names it in errors."""
    if selection.min_class_images:
        dataset = drop_small_classes(dataset, selection.min_class_images)
    if selection.val_per_class:
        dataset = split_val(dataset, selection.val_per_class, where)
    return dataset
