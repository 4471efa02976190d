"""Wire bytes of Datum and BlobProto against bytes derived by hand from Caffe's caffe.proto."""
import struct

import numpy as np

from imagenet_db.outputs.datum import datum_to_chw, datum_to_image, encoded_datum, image_to_datum
from imagenet_db.outputs.meanfile import mean_to_blobproto, read_mean, write_mean
from imagenet_db.protos import BlobProto, Datum


def test_raw_datum_wire_bytes_match_caffe_layout():
    # 2x1 image, 3 channels; pixel (h, w) has B=10h+1, G=10h+2, R=10h+3
    image = np.array([[[1, 2, 3]], [[11, 12, 13]]], dtype=np.uint8)  # (H=2, W=1, C=3)
    wire = image_to_datum(image, label=300).SerializeToString()
    expected = (b"\x08\x03"            # channels = 3
                b"\x10\x02"            # height = 2
                b"\x18\x01"            # width = 1
                b"\x22\x06"            # data, 6 bytes: planar CHW, B plane then G then R
                b"\x01\x0b" b"\x02\x0c" b"\x03\x0d"
                b"\x28\xac\x02"        # label = 300 (varint)
                b"\x38\x00")           # encoded = false, set explicitly as CVMatToDatum does
    assert wire == expected


def test_label_zero_and_encoded_false_are_still_written():
    wire = image_to_datum(np.zeros((1, 1), np.uint8), label=0).SerializeToString()
    assert wire == b"\x08\x01\x10\x01\x18\x01\x22\x01\x00\x28\x00\x38\x00"


def test_encoded_datum_wire_bytes():
    wire = encoded_datum(b"JPEGDATA", 7, shape=(3, 4, 5)).SerializeToString()
    assert wire == b"\x08\x03\x10\x04\x18\x05\x22\x08JPEGDATA\x28\x07\x38\x01"
    # without a shape: exactly Caffe's ReadFileToDatum (data, label, encoded)
    assert encoded_datum(b"AB", 1).SerializeToString() == b"\x22\x02AB\x28\x01\x38\x01"


def test_datum_round_trip_gives_hwc_bgr_back():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    datum = Datum()
    datum.ParseFromString(image_to_datum(image, 3).SerializeToString())
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 5, 7, 3)
    np.testing.assert_array_equal(datum_to_chw(datum), image.transpose(2, 0, 1))
    np.testing.assert_array_equal(datum_to_image(datum), image)


def test_blobproto_wire_bytes_match_compute_image_mean_layout():
    mean = np.array([[[1.0, 2.0]]], dtype=np.float32)  # C=1, H=1, W=2
    wire = mean_to_blobproto(mean).SerializeToString()
    expected = (b"\x08\x01\x10\x01\x18\x01\x20\x02"   # num=1 channels=1 height=1 width=2
                b"\x2a\x08" + struct.pack("<2f", 1.0, 2.0))  # data, packed float
    assert wire == expected


def test_mean_file_round_trip_binaryproto_and_npy(tmp_path):
    mean = np.arange(24, dtype=np.float32).reshape(3, 2, 4) / 7
    for name in ("m.binaryproto", "m.npy"):
        write_mean(str(tmp_path / name), mean)
        np.testing.assert_array_equal(read_mean(str(tmp_path / name)), mean)
    npy = np.load(tmp_path / "m.npy")
    assert npy.dtype == np.float32 and npy.shape == (3, 2, 4)


def test_read_mean_accepts_shape_form_blobproto(tmp_path):
    blob = BlobProto()
    blob.shape.dim.extend([1, 1, 2, 2])
    blob.data.extend([1, 2, 3, 4])
    (tmp_path / "s.binaryproto").write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(read_mean(str(tmp_path / "s.binaryproto")),
                                  np.array([[[1, 2], [3, 4]]], np.float32))
