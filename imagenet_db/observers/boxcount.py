"""Counts the boxes a box-carrying output stores (``Encoded.boxes``): images, annotated
images, boxes stored and boxes the resize dropped (they fell outside a crop).

Completion record field ``boxes``: {"images", "with_boxes", "boxes", "dropped_by_resize"}.
A resumed build recounts the records committed before it from the output (``stored_boxes``:
boxes per stored record); boxes dropped by the resize in an earlier run are not stored
anywhere, so ``dropped_by_resize`` then counts this run's only (``dropped_counted_from``
says from which record).
"""
from imagenet_db.observers.base import Observer

MANIFEST_FIELD = "boxes"


class BoxCount(Observer):
    """See the module docstring."""
    name = "boxcount"

    def __init__(self):
        self.images = self.with_boxes = self.boxes = self.dropped = 0
        self.dropped_from = 0

    def restore(self, build: str, output, done: int) -> int:
        """Recount the boxes of the records < ``done`` from ``output.stored_boxes()``."""
        read = 0
        if done:
            for index, count in output.stored_boxes(0):
                if index >= done:
                    break
                self._count(count, 0)
                read += 1
            self.dropped_from = done
        return read

    def _count(self, stored: int, dropped: int) -> None:
        self.images += 1
        self.with_boxes += stored > 0
        self.boxes += stored
        self.dropped += dropped

    def add(self, record, encoded) -> None:
        if encoded.boxes is not None:
            self._count(*encoded.boxes)

    def finish(self, build: str) -> dict:
        return {MANIFEST_FIELD: self.results()[MANIFEST_FIELD]}

    def finished(self, db_path: str, manifest: dict) -> None:
        counts = manifest.get(MANIFEST_FIELD) or {}
        self.images, self.with_boxes = counts.get("images", 0), counts.get("with_boxes", 0)
        self.boxes, self.dropped = counts.get("boxes", 0), counts.get("dropped_by_resize", 0)
        self.dropped_from = counts.get("dropped_counted_from", 0)

    def results(self) -> dict:
        counts = {"images": self.images, "with_boxes": self.with_boxes, "boxes": self.boxes,
                  "dropped_by_resize": self.dropped}
        if self.dropped_from:
            counts["dropped_counted_from"] = self.dropped_from
        return {MANIFEST_FIELD: counts}

    @staticmethod
    def describe(counts: dict) -> str:
        """One line for the log: 'N images (M with boxes), B boxes; D dropped by the resize'."""
        return (f"{counts['images']:,} images ({counts['with_boxes']:,} with boxes), "
                f"{counts['boxes']:,} boxes; {counts['dropped_by_resize']:,} dropped by the "
                f"resize (outside the crop)")
