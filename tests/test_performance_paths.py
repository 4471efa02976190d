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
