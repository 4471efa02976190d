"""Named recipes (``--recipe NAME``): published preparations of a dataset, as a class
selection, a validation split and a resize. Registry: ``PRESETS``; to add one, add a
``Preset`` line.

``imagenet21k-p`` is MIIL's ImageNet-21K-P ("ImageNet-21K Pretraining for the Masses",
Ridnik et al., NeurIPS 2021 datasets track; Alibaba-MIIL/ImageNet21K,
``dataset_preprocessing/processing_script.sh``): keep the classes with more than 500 images
(their ``[ "$count" -gt "500" ]``), move the first 50 images of each to val (their
``ls | head -n 50``, here in byte order), and squash to 224x224 keeping images whose longer
side is under 224 (``resize.py``: resize mode ``miil``). ``imagenet21k-p-short-edge`` is their
other script: shorter side 256, bilinear (``resize_short_edge.py``). On fall11_whole.tar they
give 11,221 classes, 11,797,632 train and 561,052 val images; on winter21_whole.tar.gz 10,450,
11,060,223 and 522,500 (MIIL's published counts).
"""
from dataclasses import dataclass
from typing import Dict, Optional

from imagenet_db.errors import ImagenetDbError
from imagenet_db.sources.selection import ClassSelection


@dataclass(frozen=True)
class Preset:
    """One named recipe. more_than: keep classes with more than this many images.
    val_per_class: images of each class moved to val. miil_size, miil_short_edge: the
    resize (mode ``miil``, pixels). summary: one line for --help."""
    name: str
    summary: str
    more_than: int
    val_per_class: int
    miil_size: int
    miil_short_edge: bool = False

    def selection(self, min_class_images: Optional[int] = None,
                  val_per_class: Optional[int] = None) -> ClassSelection:
        """Its ClassSelection (``min_class_images`` = more_than + 1), each value replaced by
        the one given (not None: e.g. a scaled-down threshold for a small test set)."""
        return ClassSelection(
            self.more_than + 1 if min_class_images is None else min_class_images,
            self.val_per_class if val_per_class is None else val_per_class)


PRESETS: Dict[str, Preset] = {p.name: p for p in (
    Preset("imagenet21k-p", "MIIL's ImageNet-21K-P: classes with more than 500 images, 50 val "
                            "images each, squash to 224x224 (smaller images kept)", 500, 50, 224),
    Preset("imagenet21k-p-short-edge", "ImageNet-21K-P with its other resize: shorter side "
                                       "256, bilinear (smaller images kept)", 500, 50, 256, True),
)}


def preset(name: str) -> Preset:
    """The preset called ``name``; ImagenetDbError listing them for another name."""
    if name not in PRESETS:
        raise ImagenetDbError(f"unknown --recipe {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
