"""TFRecord framing, shared by the writer (``outputs.tfrecord``) and the reader
(``readers.shardreaders``): ``uint64 length``, ``uint32 masked_crc32c(length)``, data,
``uint32 masked_crc32c(data)``, all little-endian. CRC-32C (Castagnoli) by the
``google-crc32c`` library, masked as TensorFlow's ``core/lib/hash/crc32c.h`` does:
``((crc >> 15) | (crc << 17)) + 0xa282ead8`` modulo 2^32.
"""
import struct

import google_crc32c

MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C of ``data`` (bytes-like), as an unsigned 32-bit int."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc(length)) + data +
            struct.pack("<I", masked_crc(data)))
