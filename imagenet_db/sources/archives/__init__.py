"""Archive access: members of tars, .tar.gz and .zip files read in place, without extraction.

``tarindex`` (tar headers -> member offsets, nested tars too, cached; ``TarReader`` reads by
``os.pread``), ``gzindex`` (a .tar.gz's members and rapidgzip seek points, cached),
``zipindex`` (a .zip's central directory; members read by ``os.pread`` + zlib, CRC-checked)
and ``containers``: the one interface distributions read through (``Container``: ``has``,
``files``, ``dirs``, ``read``, ``loader``) over a folder, a tar, a .tar.gz or a .zip.
Knows nothing of ImageNet: names and checks of members belong to the distribution modules.
"""
