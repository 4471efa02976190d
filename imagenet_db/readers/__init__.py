"""Readers: Caffe Datum databases (LMDB, LevelDB) read back, read-only and lock-free.

Each backend is a module with ``detect(path) -> bool`` (its marker file) and
``iterate(path)`` (key, value) in key order, registered in ``READERS`` by the name the
commands use (``--backend``). Nothing is written next to the database: ``lmdbreader`` opens
LMDB with ``lock=False``, ``leveldbreader`` reads LevelDB through a private snapshot.
``datumreader.DatumDB`` reads datums by position (public as ``imagenet_db.reader.DatumDB``).

The detection of a database and its one-line errors live here only (``detect_datum_backend``,
``check_database``); every reader (DatumDB, ``iterate_db``, verify, the mean, the report)
goes through them. To add a backend: a reader module here plus one ``READERS`` line, beside
its writer (an ``outputs.datumdb.DatumWriter`` in ``outputs.OUTPUTS``).
"""
import os
from types import ModuleType
from typing import Dict, Iterator, Optional, Tuple

from imagenet_db.errors import DatabaseError
from imagenet_db.readers import leveldbreader, lmdbreader

READERS: Dict[str, ModuleType] = {"lmdb": lmdbreader, "leveldb": leveldbreader}


def detect_datum_backend(path: str) -> Optional[str]:
    """The backend whose marker file ``path`` holds ('lmdb': data.mdb, 'leveldb': CURRENT),
    else None."""
    return next((name for name, reader in READERS.items() if reader.detect(path)), None)


def check_database(path: str, backend: Optional[str] = None) -> str:
    """The backend of the Datum database at ``path`` ('lmdb' or 'leveldb'), checked against
    ``backend`` when given. Raises DatabaseError naming ``path`` when ``backend`` is unknown,
    ``path`` is not a directory, is neither an LMDB nor a LevelDB, or is not of ``backend``."""
    if backend is not None and backend not in READERS:
        raise DatabaseError(f"unknown backend {backend!r}; expected one of {', '.join(READERS)}")
    if not os.path.isdir(path):
        raise DatabaseError(f"{path}: no such database directory")
    found = detect_datum_backend(path)
    if found is None or (backend is not None and found != backend):
        what = f"a {found} database" if found else "neither an LMDB nor a LevelDB database"
        raise DatabaseError(f"{path}: is {what}" + (f", not {backend}" if backend else ""))
    return found


def iterate_db(path: str, backend: Optional[str] = None) -> Iterator[Tuple[bytes, bytes]]:
    """Yield (key, value) pairs (bytes) of an existing LMDB or LevelDB in key order, read-only
    and lock-free. backend: 'lmdb', 'leveldb', or None to detect from the files. Raises
    DatabaseError (``check_database``) when ``path`` is not a database of that backend."""
    yield from READERS[check_database(path, backend)].iterate(path)
