"""Read any Caffe Datum database (LMDB or LevelDB, made by imagenet-db or by Caffe) from Python.

    from imagenet_db.reader import DatumDB
    db = DatumDB("out/ilsvrc12_train_lmdb")          # or channel_order="RGB", layout="CHW"
    image, label = db[0]                              # (256, 256, 3) uint8 BGR, int
    for image, label in db: ...                       # key order, one cursor

See ``DatumDB`` (in ``imagenet_db.readers.datumreader``) for the details: positions, threads,
worker processes, read-only and lock-free opening; ``check_database`` is in ``imagenet_db.readers``.
"""
from imagenet_db.readers import check_database
from imagenet_db.readers.datumreader import DatumDB, KeyList

__all__ = ["DatumDB", "KeyList", "check_database"]
