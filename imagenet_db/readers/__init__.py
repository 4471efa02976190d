"""Readers: Caffe Datum databases (LMDB, LevelDB) read back, read-only and lock-free."""
