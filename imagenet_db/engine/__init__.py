"""The engine: the machinery that runs a build, knowing no format, resize mode or distribution.

``executor`` runs the per-record work on all cores (threads, a Dask cluster, or worker
processes: ``processes``) and hands the results back in list order (``ordered_map``); ``writer`` is the writing thread (observers, then
``output.add``, commits off the workers' path); ``buildstate`` keeps what makes a build
resumable and refuses what it did not make (``BuildOptions``, the build record, ``DB.partial``,
publish by rename, the skip log and the skip report ``DB.skipped.tsv``); ``lock`` allows one
build per output (``fcntl.flock``); ``files`` writes files atomically (synced temporary,
rename, synced folder); ``graceful`` turns Ctrl-C/SIGTERM into a clean stop; ``heap`` tunes
glibc's malloc for large short-lived buffers; ``durable`` flushes commits in the background
(and marks unsynced builds with the boot id); ``skips`` holds a build's skips as columns.

It sits below ``outputs`` and ``observers``, which use its files, build state and heap
tuning; it takes outputs and observers as objects (``outputs.base.Output``,
``observers.base.Observer``) and imports neither. ``pipeline`` puts them together.
"""
