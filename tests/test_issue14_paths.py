"""Correctness of the issue 14 paths (writer thread, chunked hand-off, encoded pass-through
without decode, compact pickling for Dask): each must give the same bytes as the plain path.
Timing lives in benchmarks/benchmark.py, not here."""
import hashlib
import pickle

import cv2
import numpy as np
import pytest

from imagenet_db.engine.executor import ordered_map
from imagenet_db.engine.writer import WriterThread
from imagenet_db.errors import DatabaseError, ShapeMismatchError
from imagenet_db.imaging.headers import check_image_bytes, decoded_shape
from imagenet_db.imaging.transform import ImageSkipped, TransformOptions, transform_image
from imagenet_db.observers.base import Observer
from imagenet_db.outputs.base import Encoded
from imagenet_db.outputs.datum import encode_datum, encoded_datum
from imagenet_db.outputs.lmdb import LmdbWriter
from imagenet_db.outputs.wire import encoded_datum_bytes, raw_datum_buffer
from imagenet_db.sources.base import Record
from imagenet_db.testing import photos


@pytest.fixture(scope="module")
def odd():
    return photos.odd_images()


@pytest.fixture(scope="module")
def jpegs():
    rng = np.random.default_rng(14)
    return [photos.imagenet_like_jpeg(rng) for _ in range(6)]


# ---------------------------------------------------------------- encoded pass-through
@pytest.mark.parametrize("label", [0, 5, 1000, -1, 2**31 - 1])
@pytest.mark.parametrize("shape", [None, (3, 375, 500), (1, 1, 1)])
def test_encoded_datum_wire_bytes_match_protobuf(label, shape):
    data = bytes(range(256)) * 3
    assert encoded_datum_bytes(data, label, shape) == \
        encoded_datum(data, label, shape).SerializeToString()


def _gray_jpeg_turned():
    """A 1-channel 320x240 JPEG with EXIF Orientation 6 (made with Pillow)."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray((np.arange(240 * 320) % 251).astype(np.uint8).reshape(240, 320)).save(
        buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_decoded_shape_agrees_with_opencv(odd, jpegs):
    """Where the headers give a shape, a decode gives the same one (EXIF turns included);
    for --gray only 1-channel JPEGs are stored as they are."""
    files = dict(odd, gray_turned=_gray_jpeg_turned(),
                 **{f"photo{i}": data for i, data in enumerate(jpegs)})
    told = 0
    for name, data in files.items():
        if check_image_bytes(data):
            continue  # skipped before any transform
        for is_color in (True, False):
            shape = decoded_shape(data, is_color)
            if shape is None:
                continue
            told += 1
            image = cv2.imdecode(np.frombuffer(data, np.uint8),
                                 cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
            assert image is not None, name
            assert shape == ((3,) if is_color else (1,)) + image.shape[:2], (name, is_color)
    assert told >= len(jpegs) + 4  # the photos, gray (both ways), cmyk, exif_rotated, ...
    assert decoded_shape(odd["exif_rotated"], True) == (3, 320, 240)
    assert decoded_shape(files["gray_turned"], False) == (1, 320, 240)
    assert decoded_shape(odd["png_named_jpeg"], True) is None
    assert decoded_shape(odd["cmyk"], False) is None


@pytest.mark.parametrize("is_color", [True, False])
def test_passthrough_without_decode_stores_what_the_decoding_path_stores(odd, jpegs, is_color):
    files = dict(odd, **{f"photo{i}": data for i, data in enumerate(jpegs)})
    options = TransformOptions(encoded=True, is_color=is_color)
    for name, data in files.items():
        if check_image_bytes(data):
            continue
        record = Record(7, f"{name}.JPEG", 3, None)
        try:
            decoded = transform_image(data, record.relpath, options, want_pixels=True)
        except ImageSkipped:
            continue
        fast = transform_image(data, record.relpath, options)
        assert fast.shape == decoded.shape, name
        assert bytes(encode_datum(record, fast).value) == \
            bytes(encode_datum(record, decoded).value), name


# ---------------------------------------------------------------- pickling for Dask
def test_encoded_pickles_raw_pixels_once(jpegs):
    image = cv2.resize(cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR),
                       (256, 256))
    value, pixels = raw_datum_buffer(image, 9)
    assert pixels.ctypes.data % 64 == 0
    encoded = Encoded(value, pixels, (3, 256, 256), "k")
    blob = pickle.dumps(encoded, protocol=5)
    assert len(value) < len(blob) < len(value) + 1000  # not twice the pixels
    back = pickle.loads(blob)
    assert bytes(back.value) == bytes(value)
    assert np.shares_memory(back.pixels, back.value)
    assert np.array_equal(back.pixels, image.transpose(2, 0, 1))


# ---------------------------------------------------------------- chunked hand-off
def _square_or_fail(x):
    if x == 37:
        raise ValueError("item 37")
    return x * x


@pytest.mark.parametrize("workers,chunk,window", [(1, None, None), (2, None, None),
                                                  (3, 5, 7), (2, 1, 1), (2, 64, 8)])
def test_ordered_map_keeps_order_and_raises_at_the_item(workers, chunk, window):
    got = []
    with pytest.raises(ValueError, match="item 37"):
        for value in ordered_map(_square_or_fail, range(100), workers, window=window,
                                 chunk=chunk):
            got.append(value)
    assert got == [x * x for x in range(37)]
    assert list(ordered_map(abs, range(-50, 50), workers, window=window, chunk=chunk)) == \
        [abs(x) for x in range(-50, 50)]


# ---------------------------------------------------------------- the writer thread
def _datums(jpegs, count):
    images = [cv2.resize(cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), (32, 24))
              for d in jpegs]
    out = []
    for i in range(count):
        value, pixels = raw_datum_buffer(images[i % len(images)], i % 10)
        out.append((Record(i, f"img_{i}.JPEG", i % 10, None),
                    Encoded(value, pixels, (3, 24, 32), f"{i:08d}_img_{i}.JPEG")))
    return out


class _Recorder(Observer):
    """Records what it sees; raises at record ``fail_at``."""

    def __init__(self, fail_at=None):
        self.added, self.commits, self.fail_at = [], [], fail_at

    def add(self, record, encoded):
        if record.index == self.fail_at:
            raise ShapeMismatchError(f"record {record.index} is odd")
        self.added.append(record.index)

    def committed(self, build, last_index):
        self.commits.append(last_index)


def _lmdb_bytes(path):
    return hashlib.sha256((path / "data.mdb").read_bytes()).hexdigest()


def test_writer_thread_writes_the_same_file_and_commits(tmp_path, jpegs):
    items = _datums(jpegs, 60)
    direct = LmdbWriter(str(tmp_path / "direct"), batch_size=7)
    for record, encoded in items:
        direct.add(record, encoded)
    direct.close()
    watcher = _Recorder()
    threaded = WriterThread(LmdbWriter(str(tmp_path / "thread"), batch_size=7), [watcher],
                            str(tmp_path), max_bytes=10_000)  # a small queue: add() must wait
    for record, encoded in items:
        threaded.add(record, encoded)
    threaded.close()
    assert _lmdb_bytes(tmp_path / "thread") == _lmdb_bytes(tmp_path / "direct")
    assert watcher.added == list(range(60))
    assert watcher.commits == list(range(6, 60, 7))  # after each commit, with its last record


def test_writer_thread_error_stops_there_and_close_keeps_the_records_before(tmp_path, jpegs):
    items = _datums(jpegs, 40)
    writer = WriterThread(LmdbWriter(str(tmp_path / "db"), batch_size=100),
                          [_Recorder(fail_at=25)], str(tmp_path))
    with pytest.raises(ShapeMismatchError, match="record 25"):
        for record, encoded in items:
            writer.add(record, encoded)
        writer.close()  # the error may surface here if the thread was slower than the adds
    writer.close()  # as the pipeline does for --check_size: commit the good ones
    check = LmdbWriter(str(tmp_path / "db"))
    assert check.entries() == 25 and check.last_key == b"00000024_img_24.JPEG"
    check.abort()


def test_writer_thread_abort_and_a_failing_output(tmp_path, jpegs):
    items = _datums(jpegs, 30)
    writer = WriterThread(LmdbWriter(str(tmp_path / "db"), batch_size=10), [], str(tmp_path))
    for record, encoded in items[:25]:
        writer.add(record, encoded)
    writer.abort()  # whole transactions only: what was committed stays, the rest is dropped
    check = LmdbWriter(str(tmp_path / "db"))
    assert check.entries() in (0, 10, 20)
    check.abort()

    out_of_order = WriterThread(LmdbWriter(str(tmp_path / "db2")), [], str(tmp_path))
    out_of_order.add(*items[5])
    with pytest.raises(DatabaseError, match="is not after"):
        out_of_order.add(*items[3])
        out_of_order.close()
    out_of_order.abort()


def test_writer_thread_stop_commits_what_was_stored_and_drops_the_queue(tmp_path, jpegs):
    items = _datums(jpegs, 200)
    slow = _Recorder()
    slow.add = lambda record, encoded: __import__("time").sleep(0.002)  # a slow observer
    writer = WriterThread(LmdbWriter(str(tmp_path / "db"), batch_size=1000), [slow],
                          str(tmp_path))
    for record, encoded in items:
        writer.add(record, encoded)
    writer.close(interrupted=lambda: writer.written >= 20)  # Ctrl-C during the final drain
    assert 0 < writer.written < 200 and writer.last_index == writer.written - 1
    check = LmdbWriter(str(tmp_path / "db"))
    assert check.entries() == writer.written  # all of it committed, nothing after it
    check.abort()


# ---------------------------------------------------------------- cheap checks, same verdicts
def test_grey_edge_corner_shortcut_agrees_with_the_full_edge_scan():
    """_grey_edge looks at the corners first; on small images where 128 is common it must say
    exactly what scanning the four edges says (including 1-pixel-wide and gray images)."""
    from imagenet_db.imaging.decode import _grey_edge

    def full_scan(image):
        return any(bool((edge == 128).all()) for edge in (image[0], image[-1], image[:, 0],
                                                           image[:, -1]))
    rng = np.random.default_rng(3)
    verdicts = set()
    for trial in range(4000):
        height, width = rng.integers(1, 6, 2)
        shape = (height, width, 3) if trial % 2 else (height, width)
        image = rng.choice(np.array([128, 127], np.uint8), size=shape, p=[0.85, 0.15])
        assert _grey_edge(image) == full_scan(image), image
        verdicts.add(full_scan(image))
    assert verdicts == {True, False}


def test_fast_crc32_gives_zlibs_values():
    import zlib

    from imagenet_db.crc import crc32
    data = np.random.default_rng(4).integers(0, 256, 197_000, dtype=np.uint8).tobytes()
    for start in (0, 1, 0xFFFFFFFF, zlib.crc32(b"00000001_a.JPEG")):
        assert crc32(data, start) == zlib.crc32(data, start)
    assert crc32(memoryview(data)[5:]) == zlib.crc32(data[5:])


def test_lmdb_writer_leaves_committed_pages_out_of_the_page_cache(tmp_path):
    """After durable commits the written pages are dropped from the page cache (a 150 GB build
    must not evict everything else); measured with util-linux's fincore. Without fsync per
    commit (sync_commits=False) the pages stay, which shows the measurement can tell."""
    import shutil
    import subprocess
    if shutil.which("fincore") is None:
        pytest.skip("util-linux's fincore is not installed")
    image = np.random.default_rng(5).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    value = bytes(raw_datum_buffer(image, 1)[0])

    def resident_share(sync_commits):
        path = tmp_path / f"db_{sync_commits}"
        writer = LmdbWriter(str(path), batch_size=10, sync_commits=sync_commits)
        for i in range(60):
            writer.put(b"%08d_x.JPEG" % i, value)
        writer.close()
        data = path / "data.mdb"
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(data)],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0]) / data.stat().st_size

    assert resident_share(True) < 0.2
    assert resident_share(False) > 0.8
