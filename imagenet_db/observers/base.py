"""The observer interface: something that watches the records as they are written.

The pipeline calls, for every observer of a build:

``restore(build, output, done)``  once, before writing: catch up with the records < ``done``
                                   that an interrupted build already committed (``output.stored``);
                                   returns how many stored records it read back;
``add(record, encoded)``          for each record, in list order, before the output stores it
                                   (raising ImagenetDbError stops the build before that record);
``committed(build, last_index)``  after each commit (e.g. to checkpoint);
``finish(build)``                 at the end, inside the build directory; returns entries for
                                   the completion record;
``finished(db_path, manifest)``   instead of all that, when the output was already complete;
``results()``                     what the caller gets back (e.g. {'mean': ..., 'mean_count': ...}).

``needs_pixels``: the observer reads ``encoded.pixels`` ((C, H, W) uint8 as a reader decodes
them), so encoded outputs must produce them. ``identity()``: facts that change the output and
go into the build record (compared on --resume).

To add an observer (e.g. a contact sheet): write ``observers/<name>.py`` with a subclass of
``Observer`` and pass an instance to ``pipeline.convert(observers=[...])``.
"""


class Observer:
    """Base class with do-nothing defaults; see the module docstring."""
    name = "observer"
    needs_pixels = False

    def identity(self) -> dict:
        """Facts this observer adds to the build record (compared on --resume)."""
        return {}

    def restore(self, build: str, output, done: int) -> int:
        """Catch up with the records < ``done`` already committed; returns how many were read."""
        return 0

    def add(self, record, encoded) -> None:
        """See one record (``outputs.base.Encoded``) before it is stored; may raise to stop."""

    def committed(self, build: str, last_index: int) -> None:
        """Called after a commit whose last record has index ``last_index``."""

    def finish(self, build: str) -> dict:
        """At the end, inside the build directory; returns completion-record entries."""
        return {}

    def finished(self, db_path: str, manifest: dict) -> None:
        """Instead of a build: take the results of an already complete output."""

    def results(self) -> dict:
        """What the caller gets back in ``ConvertSummary.results``."""
        return {}
