"""Correctness of the fast paths (issue 5): they must give the same bytes / numbers as the
plain ones. Timing lives in benchmarks/benchmark.py, not here."""
import os

import cv2
import lmdb
import numpy as np
import pytest

from imagenet_db.testing import photos as fixtures
from imagenet_db.outputs.datum import hwc_to_chw_bytes
from imagenet_db.errors import ShapeMismatchError
from imagenet_db.imaging.fastdecode import decode_reduced, reduction_for
from imagenet_db.imaging.headers import jpeg_size
from imagenet_db.engine.heap import keep_freed_heap
from imagenet_db.observers.mean import compute_db_mean
from imagenet_db.pipeline import convert
from imagenet_db.protos import Datum
from imagenet_db.readers import iterate_db
from imagenet_db.outputs.leveldb import LevelDbWriter
from imagenet_db.outputs.lmdb import LmdbWriter
from imagenet_db.sources.listfile import list_records
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.imaging.transform import ImageSkipped, TransformOptions, transform_image
from imagenet_db.observers.mean import MeanObserver
from imagenet_db.outputs.datum import encode_datum
from imagenet_db.sources.base import Record

QUIET = BuildOptions(progress=False)


def datum_bytes(data, relpath, label, options):
    """The serialized Datum the pipeline stores for one image file."""
    image = transform_image(data, relpath, options)
    return bytes(encode_datum(Record(0, relpath, label, None), image).value)
from imagenet_db.outputs.wire import locate_raw_pixels, raw_datum_buffer, varint


def decode(data, flags=cv2.IMREAD_COLOR):
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def caffe_datum_bytes(image, label):
    """What Caffe's CVMatToDatum + SerializeToString give, via the protobuf classes."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    return Datum(channels=channels, height=image.shape[0], width=image.shape[1],
                 data=hwc_to_chw_bytes(image), label=label, encoded=False).SerializeToString()


@pytest.fixture(scope="module")
def jpegs():
    rng = np.random.default_rng(55)
    return [fixtures.imagenet_like_jpeg(rng) for _ in range(6)]


@pytest.fixture(scope="module")
def odd():
    return fixtures.odd_images()


# ---------------------------------------------------------------- Datum wire bytes
@pytest.mark.parametrize("label", [0, 1, 127, 128, 999, 16384, 2**31 - 1, -1, -(2**31)])
def test_raw_datum_buffer_matches_protobuf_for_labels(jpegs, label):
    image = cv2.resize(decode(jpegs[0]), (256, 256))
    value, pixels = raw_datum_buffer(image, label)
    assert bytes(value) == caffe_datum_bytes(image, label)
    assert np.array_equal(pixels, image.transpose(2, 0, 1))


@pytest.mark.parametrize("shape", [(256, 256, 3), (375, 500, 3), (1, 1, 3), (7, 300, 3),
                                   (240, 320), (240, 320, 1), (33, 17, 4), (128, 200, 2)])
def test_raw_datum_buffer_matches_protobuf_for_shapes(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    value, pixels = raw_datum_buffer(image, 42)
    assert bytes(value) == caffe_datum_bytes(image, 42)
    parsed = Datum.FromString(bytes(value))
    channels = 1 if image.ndim == 2 else shape[2]
    assert (parsed.channels, parsed.height, parsed.width) == (channels, shape[0], shape[1])
    assert pixels.shape == (channels, shape[0], shape[1])


def test_raw_datum_buffer_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        raw_datum_buffer(np.zeros((4, 4, 3), np.float32), 0)


def test_varint_matches_protobuf_int32_encoding():
    for value in (0, 1, 150, 300, 2**31 - 1, -1, -150):
        # a Datum with only a label set is tag 0x28 followed by the label's varint
        assert Datum(label=value).SerializeToString() == b"\x28" + varint(value)


def test_transform_default_path_is_byte_identical_to_caffe(jpegs, odd):
    options = TransformOptions(resize_height=256, resize_width=256)
    for data in jpegs + [odd["grayscale"], odd["progressive"], odd["cmyk"], odd["exif_rotated"]]:
        expected = caffe_datum_bytes(cv2.resize(decode(data), (256, 256)), 7)
        assert datum_bytes(data, "x.JPEG", 7, options) == expected
    gray = TransformOptions(resize_height=64, resize_width=48, is_color=False)
    expected = caffe_datum_bytes(cv2.resize(decode(jpegs[1], cv2.IMREAD_GRAYSCALE), (48, 64)), 3)
    assert datum_bytes(jpegs[1], "x.JPEG", 3, gray) == expected


def test_locate_raw_pixels_agrees_with_protobuf(jpegs):
    image = cv2.resize(decode(jpegs[2]), (40, 30))
    value = caffe_datum_bytes(image, 5)
    shape, offset, length = locate_raw_pixels(value)
    datum = Datum.FromString(value)
    assert shape == (datum.channels, datum.height, datum.width) == (3, 30, 40)
    assert value[offset:offset + length] == datum.data
    # memoryview input, as LMDB gives with buffers=True
    assert locate_raw_pixels(memoryview(value)) == (shape, offset, length)
    # fields in another order and repeated: protobuf's last-one-wins merge rules
    late = Datum(label=1, data=b"\x00" * 6).SerializeToString() + value
    shape2, offset2, length2 = locate_raw_pixels(late)
    merged = Datum.FromString(late)
    assert shape2 == (merged.channels, merged.height, merged.width)
    assert late[offset2:offset2 + length2] == merged.data


def test_locate_raw_pixels_refuses_what_it_cannot_read_in_place():
    raw = Datum(channels=1, height=2, width=2, data=b"abcd", label=0, encoded=False)
    assert locate_raw_pixels(raw.SerializeToString()) == ((1, 2, 2), 8, 4)
    encoded = Datum(data=b"\xff\xd8jpeg", label=0, encoded=True).SerializeToString()
    floats = Datum(channels=1, height=1, width=2, float_data=[0.5, 1.5]).SerializeToString()
    no_data = Datum(channels=1, height=1, width=1, label=3).SerializeToString()
    unknown = raw.SerializeToString() + b"\x48\x01"  # field 9, varint: not a Datum field
    truncated = raw.SerializeToString()[:10]
    for value in (encoded, floats, no_data, unknown, truncated, b"\xff\xff\xff"):
        assert locate_raw_pixels(value) is None


# ---------------------------------------------------------------- --fast_decode
def test_jpeg_size_reads_the_frame_header(jpegs, odd):
    for data in jpegs + [odd["grayscale"], odd["progressive"], odd["cmyk"], odd["one_pixel"]]:
        image = decode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        assert jpeg_size(data) == (image.shape[1], image.shape[0])
    assert jpeg_size(odd["exif_rotated"]) == (320, 240)  # stored size, before the rotation
    for data in (odd["png_named_jpeg"], odd["text"], odd["zero_bytes"], b"\xff\xd8\xff"):
        assert jpeg_size(data) is None


def test_reduction_for_needs_half_the_source_on_both_sides():
    assert reduction_for((500, 375), (256, 256)) == 1
    assert reduction_for((1024, 768), (256, 256)) == 2
    assert reduction_for((1024, 1024), (256, 256)) == 4
    assert reduction_for((4000, 3000), (256, 256)) == 8
    assert reduction_for((4000, 500), (256, 256)) == 1


def test_fast_decode_shape_and_closeness():
    rng = np.random.default_rng(9)
    big = fixtures.imagenet_like_jpeg(rng, size=(1024, 768))
    reduced = decode_reduced(big, True, lambda w, h: (256, 256))
    assert reduced.shape == (384, 512, 3)
    exact = transform_image(big, "a.JPEG", TransformOptions(256, 256))
    fast = transform_image(big, "a.JPEG", TransformOptions(256, 256, fast_decode=True))
    assert fast.shape == exact.shape == (3, 256, 256)
    a = exact.pixels.astype(np.int16).ravel()
    b = fast.pixels.astype(np.int16).ravel()
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4


def test_fast_decode_falls_back_to_the_exact_path(jpegs, odd):
    # ImageNet-sized JPEG to 256x256: no reduction applies, output byte-identical
    exact = datum_bytes(jpegs[0], "a.JPEG", 2, TransformOptions(256, 256))
    fast = datum_bytes(jpegs[0], "a.JPEG", 2, TransformOptions(256, 256, fast_decode=True))
    assert fast == exact
    # EXIF rotation makes the reduced image too narrow: decoded at full size instead
    assert decode_reduced(odd["exif_rotated"], True, lambda w, h: (150, 100)) is None
    rotated = datum_bytes(odd["exif_rotated"], "r.JPEG", 0, TransformOptions(100, 150, fast_decode=True))
    assert rotated == caffe_datum_bytes(cv2.resize(decode(odd["exif_rotated"]), (150, 100)), 0)
    # PNG bytes and broken files: same results as without the flag
    assert decode_reduced(odd["png_named_jpeg"], True, lambda w, h: (16, 16)) is None
    with pytest.raises(ImageSkipped):
        transform_image(odd["truncated"], "t.JPEG", TransformOptions(32, 32, fast_decode=True))


# ---------------------------------------------------------------- mean
def exact_mean(db):
    total, count = None, 0
    for _, value in iterate_db(db):
        datum = Datum.FromString(value)
        pixels = np.frombuffer(datum.data, np.uint8).astype(np.uint64)
        total = pixels if total is None else total + pixels
        count += 1
    shape = (datum.channels, datum.height, datum.width)
    return (total.astype(np.float64) / count).astype(np.float32).reshape(shape), count


def write_raw_db(path, images, backend="lmdb"):
    writer = LmdbWriter(path) if backend == "lmdb" else LevelDbWriter(path)
    for i, image in enumerate(images):
        writer.put(b"%08d_x" % i, raw_datum_buffer(image, i % 10)[0])
    writer.close()


def test_mean_is_exact_past_the_uint16_partial_sums(tmp_path):
    # 600 images > 2 x 257: partial sums are folded several times; all-255 pixels overflow
    # any accumulator narrower than needed
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(600)]
    images[::3] = [np.full((5, 4, 3), 255, np.uint8)] * 200
    db = str(tmp_path / "db")
    write_raw_db(db, images)
    expected, count = exact_mean(db)
    for workers in (1, 2, 3):
        mean, n = compute_db_mean(db, workers=workers)
        assert n == count == 600
        assert np.array_equal(mean, expected)
    full = str(tmp_path / "full")
    write_raw_db(full, [np.full((2, 2, 3), 255, np.uint8)] * 520)
    assert np.array_equal(compute_db_mean(full, workers=2)[0], np.full((3, 2, 2), 255, np.float32))


def test_mean_leveldb_and_encoded_datums(tmp_path, jpegs):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(20)]
    write_raw_db(str(tmp_path / "ldb"), images, backend="leveldb")
    write_raw_db(str(tmp_path / "lmdb"), images)
    assert np.array_equal(compute_db_mean(str(tmp_path / "ldb"))[0],
                          compute_db_mean(str(tmp_path / "lmdb"))[0])
    # encoded datums: decoded with OpenCV, summed exactly like raw ones
    root = tmp_path / "img"
    root.mkdir()
    for i, data in enumerate(jpegs):
        (root / f"{i}.jpg").write_bytes(data)
    records = list_records(str(root), [(f"{i}.jpg", i) for i in range(len(jpegs))])
    opts = TransformOptions(32, 48)
    convert(records, str(tmp_path / "raw"), transform=opts, build=QUIET)
    convert(records, str(tmp_path / "enc"), transform=TransformOptions(32, 48, encoded=True,
                                                                        encode_type="png"),
            build=QUIET)
    assert np.array_equal(compute_db_mean(str(tmp_path / "enc"), workers=2)[0],
                          compute_db_mean(str(tmp_path / "raw"), workers=2)[0])


def test_mean_shape_mismatch_names_the_first_odd_datum_in_key_order(tmp_path):
    images = [np.zeros((4, 4, 3), np.uint8)] * 30
    images[13] = images[16] = np.zeros((4, 5, 3), np.uint8)
    db = str(tmp_path / "db")
    write_raw_db(db, images)
    for workers in (1, 2):
        with pytest.raises(ShapeMismatchError, match="datum 00000013_x .* first datum 00000000_x"):
            compute_db_mean(db, workers=workers)


def test_mean_of_pipeline_output_matches_on_the_fly_mean(tmp_path, jpegs):
    root = tmp_path / "img"
    root.mkdir()
    for i, data in enumerate(jpegs):
        (root / f"{i}.JPEG").write_bytes(data)
    records = list_records(str(root), [(f"{i}.JPEG", i) for i in range(len(jpegs))])
    summary = convert(records, str(tmp_path / "db"), transform=TransformOptions(64, 64),
                      build=BuildOptions(workers=2, progress=False), observers=[MeanObserver()])
    mean, count = compute_db_mean(str(tmp_path / "db"))
    assert count == len(jpegs)
    assert np.array_equal(mean, summary.mean)
    assert np.array_equal(mean, exact_mean(str(tmp_path / "db"))[0])


# ---------------------------------------------------------------- writer and database layout
def test_pipeline_output_is_independent_of_workers_and_caffe_identical(tmp_path, jpegs):
    root = tmp_path / "img"
    root.mkdir()
    for i, data in enumerate(jpegs):
        (root / f"{i}.JPEG").write_bytes(data)
    entries = [(f"{i}.JPEG", i) for i in range(len(jpegs))]
    dbs = []
    for workers in (1, 2, 3):
        dbs.append(str(tmp_path / f"db{workers}"))
        convert(list_records(str(root), entries), dbs[-1], transform=TransformOptions(256, 256),
                build=BuildOptions(workers=workers, progress=False))
    contents = [list(iterate_db(db)) for db in dbs]
    assert contents[0] == contents[1] == contents[2]
    for (key, value), (relpath, label), data in zip(contents[0], entries, jpegs):
        assert key == b"%08d_%s" % (label, relpath.encode())
        assert value == caffe_datum_bytes(cv2.resize(decode(data), (256, 256)), label)


def test_lmdb_file_is_within_5_percent_of_the_payload(tmp_path):
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    db = str(tmp_path / "db")
    writer = LmdbWriter(db, batch_size=7)  # several commits
    payload = 0
    for i in range(60):
        key, value = b"%08d_n01440764/n01440764_%d.JPEG" % (i, i), raw_datum_buffer(images[i % 4], i)[0]
        writer.put(key, value)
        payload += len(key) + len(value)
    writer.close()
    size = os.path.getsize(os.path.join(db, "data.mdb"))
    assert payload < size <= 1.05 * payload


def test_lmdb_writer_durability_modes(tmp_path):
    """No sync; fsync in each commit; commits flushed by a background thread (issue 23: the
    environment commits with MDB_NOSYNC and the thread calls env.sync)."""
    for sync, background in ((False, False), (True, False), (True, True)):
        db = str(tmp_path / f"db{sync}{background}")
        writer = LmdbWriter(db, batch_size=2, sync_commits=sync, background_sync=background)
        assert writer.env.flags()["sync"] is (sync and not background)
        assert (writer._syncer is not None) is background
        for i in range(5):
            writer.put(b"%08d" % i, bytearray(b"v%d" % i))
        writer.close()
        env = lmdb.open(db, readonly=True, lock=False)
        with env.begin() as txn:
            assert [(k, v) for k, v in txn.cursor()] == [(b"%08d" % i, b"v%d" % i) for i in range(5)]
        env.close()


def test_keep_freed_heap_applies_on_glibc():
    import platform
    assert keep_freed_heap() is (platform.libc_ver()[0] == "glibc")
    assert keep_freed_heap() is keep_freed_heap()  # once per process, same answer


# ================================================================ writer thread, chunked hand-off,
# encoded pass-through without decode, compact pickling for Dask: the same bytes as the plain path
# (from test_issue14_paths.py; its imports here keep this section apart from the ones above)
import hashlib  # noqa: E402
import pickle  # noqa: E402

from imagenet_db.engine.executor import ordered_map  # noqa: E402
from imagenet_db.engine.writer import WriterThread  # noqa: E402
from imagenet_db.errors import DatabaseError  # noqa: E402
from imagenet_db.imaging.headers import check_image_bytes, decoded_shape  # noqa: E402
from imagenet_db.observers.base import Observer  # noqa: E402
from imagenet_db.outputs.base import Encoded  # noqa: E402
from imagenet_db.outputs.datum import encoded_datum  # noqa: E402
from imagenet_db.outputs.wire import encoded_datum_bytes  # noqa: E402


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
