"""imagenet_db.reader.DatumDB on real databases: LMDB and LevelDB, raw and encoded, colour and
gray, made by convert_imageset from real-photo JPEGs (and one written the way Caffe writes
encoded datums); positions, random order, threads, two processes at once, read-only."""
import hashlib
import multiprocessing
import os
import pickle
import tempfile
import threading

import cv2
import lmdb
import numpy as np
import pytest

from imagenet_db.cli import main
from imagenet_db.errors import DatabaseError
from imagenet_db.readers import check_database, detect_datum_backend, iterate_db, leveldbreader
from imagenet_db.protos import Datum
from imagenet_db.reader import DatumDB
from imagenet_db.testing.photos import write_corpus

from conftest import read_lmdb

WIDTH, HEIGHT = 40, 30  # not square: a swapped height/width shows
KINDS = [(backend, encoded, gray) for backend in ("lmdb", "leveldb")
         for encoded in (False, True) for gray in (False, True)]


def kind_id(kind):
    backend, encoded, gray = kind
    return f"{backend}-{'encoded' if encoded else 'raw'}-{'gray' if gray else 'colour'}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 ImageNet-like JPEGs (real photos) and a list file with labels 0..3, shuffled keys."""
    root = tmp_path_factory.mktemp("corpus")
    paths = write_corpus(root / "images", 12, seed=3)
    listfile = root / "list.txt"
    listfile.write_text("".join(f"{p.name} {i % 4}\n" for i, p in enumerate(paths)))
    return root


@pytest.fixture(scope="module")
def databases(corpus):
    """{kind: database path} for every backend x raw/encoded x colour/gray."""
    out = {}
    for kind in KINDS:
        backend, encoded, gray = kind
        db = corpus / kind_id(kind)
        argv = ["convert", f"--backend={backend}", f"--resize_width={WIDTH}",
                f"--resize_height={HEIGHT}", "--shuffle", "--no-progress",
                str(corpus / "images") + "/", str(corpus / "list.txt"), str(db)]
        argv += ["--encoded"] * encoded + ["--gray"] * gray
        assert main(argv) == 0
        out[kind] = str(db)
    return out


def stored_pairs(path):
    """(key, value) pairs in key order read without imagenet-db's readers (a copy for LevelDB,
    since plyvel rewrites the database it opens)."""
    if os.path.exists(os.path.join(path, "data.mdb")):
        return read_lmdb(path)
    import shutil

    import plyvel
    copy = tempfile.mkdtemp()
    shutil.copytree(path, copy, dirs_exist_ok=True)
    db = plyvel.DB(copy)
    pairs = list(db.iterator())
    db.close()
    shutil.rmtree(copy)
    return pairs


def reference_image(value):
    """(H, W, C) BGR image and label of a serialized Datum, decoded the plain way."""
    datum = Datum()
    datum.ParseFromString(value)
    if datum.encoded:
        flag = {3: cv2.IMREAD_COLOR, 1: cv2.IMREAD_GRAYSCALE}.get(datum.channels,
                                                                  cv2.IMREAD_ANYCOLOR)
        image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
        image = image[:, :, None] if image.ndim == 2 else image
    else:
        chw = np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height,
                                                          datum.width)
        image = chw.transpose(1, 2, 0)
    return image, datum.label


def tree_state(path):
    """Name -> (size, mtime_ns, sha256) of every file in ``path``."""
    state = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        with open(full, "rb") as f:
            state[name] = (os.stat(full).st_size, os.stat(full).st_mtime_ns,
                           hashlib.sha256(f.read()).hexdigest())
    return state


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_every_datum_in_every_layout(databases, kind):
    backend, encoded, gray = kind
    pairs = stored_pairs(databases[kind])
    views = {(order, layout): DatumDB(databases[kind], channel_order=order, layout=layout)
             for order in ("BGR", "RGB") for layout in ("HWC", "CHW")}
    db = views["BGR", "HWC"]
    assert db.backend == backend and len(db) == len(pairs) == 12
    assert list(db.keys) == [key for key, _ in pairs]
    channels = 1 if gray else 3
    for i, (key, value) in enumerate(pairs):
        expected, label = reference_image(value)
        image, got_label = db[i]
        assert image.shape == (HEIGHT, WIDTH, channels) and image.dtype == np.uint8
        assert np.array_equal(image, expected) and got_label == label
        assert db.key(i) == key and db.datum(i).label == label
        rgb = expected[:, :, ::-1] if channels == 3 else expected
        assert np.array_equal(views["RGB", "HWC"][i][0], rgb)
        assert np.array_equal(views["BGR", "CHW"][i][0], expected.transpose(2, 0, 1))
        assert np.array_equal(views["RGB", "CHW"][i][0], rgb.transpose(2, 0, 1))
    assert list(db.labels()) == [reference_image(v)[1] for _, v in pairs]
    if not gray:  # the photos are in colour: BGR and RGB really differ
        assert not np.array_equal(db[0][0], views["RGB", "HWC"][0][0])
    for view in views.values():
        view.close()


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_random_access_order_matches_iteration(databases, backend):
    db = DatumDB(databases[backend, False, False])
    in_order = list(db)  # one cursor, key order
    for i in np.random.default_rng(5).permutation(len(db)):
        image, label = db[int(i)]
        assert np.array_equal(image, in_order[i][0]) and label == in_order[i][1]
    assert np.array_equal(db[-1][0], in_order[-1][0]) and db.key(-12) == db.key(0)
    assert db.keys[2:4] == [db.key(2), db.key(3)]
    db.close()


def test_position_out_of_range_is_index_error(databases):
    db = DatumDB(databases["lmdb", False, False])
    for bad in (12, -13, 10**9):
        with pytest.raises(IndexError, match="out of range"):
            db[bad]
    with pytest.raises(IndexError):
        db.key(12)
    with pytest.raises(TypeError):
        db["0"]
    assert sum(1 for _ in db) == 12  # iteration stops by itself (no IndexError leaks)
    db.close()


def test_one_database_detection_for_every_reader(tmp_path, databases):
    """DatumDB and iterate_db go through readers.check_database: the same one-line error for
    the same bad path, and the same backend for a good one."""
    (tmp_path / "folder").mkdir()
    lmdb_db = databases["lmdb", False, False]
    for path, backend in [(str(tmp_path / "folder"), None), (str(tmp_path / "missing"), None),
                          (lmdb_db, "leveldb"), (lmdb_db, "nosuch")]:
        with pytest.raises(DatabaseError) as by_datumdb:
            DatumDB(path, backend)
        with pytest.raises(DatabaseError) as by_iterate:
            next(iterate_db(path, backend))
        assert str(by_datumdb.value) == str(by_iterate.value) == str(
            pytest.raises(DatabaseError, check_database, path, backend).value)
    assert check_database(lmdb_db) == detect_datum_backend(lmdb_db) == "lmdb"
    assert [key for key, _ in iterate_db(lmdb_db)] == list(DatumDB(lmdb_db).keys)


def test_path_that_is_not_a_database(tmp_path, databases):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.txt").write_text("x")
    with pytest.raises(DatabaseError, match=r"folder: is neither an LMDB nor a LevelDB"):
        DatumDB(str(tmp_path / "folder"))
    with pytest.raises(DatabaseError, match="no such database directory"):
        DatumDB(str(tmp_path / "missing"))
    with pytest.raises(DatabaseError, match="is a lmdb database, not leveldb"):
        DatumDB(databases["lmdb", False, False], backend="leveldb")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.mdb").write_bytes(b"not an lmdb" * 100)
    with pytest.raises(DatabaseError, match="broken: cannot open as LMDB"):
        len(DatumDB(str(tmp_path / "broken")))
    with pytest.raises(ValueError):
        DatumDB(databases["lmdb", False, False], channel_order="RGBA")


def test_nothing_is_written_next_to_the_database(tmp_path, databases, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # an LMDB without lock.mdb (as on read-only media, or copied): none appears
    lonely = tmp_path / "lmdb_copy"
    lonely.mkdir()
    (lonely / "data.mdb").write_bytes(open(os.path.join(databases["lmdb", True, False],
                                                        "data.mdb"), "rb").read())
    # the LevelDB as convert_imageset left it: datums still in its .log files
    leveldb = databases["leveldb", False, False]
    assert any(name.endswith(".log") and os.path.getsize(os.path.join(leveldb, name))
               for name in os.listdir(leveldb))
    before = {path: tree_state(path) for path in (str(lonely), leveldb)}
    for path in before:
        db = DatumDB(path)
        assert len(db) == 12 and db[5][0].size and db.labels().size == 12
        db.close()
    assert {path: tree_state(path) for path in before} == before
    assert os.listdir(tmp_path / "tmp") == []  # the LevelDB view and snapshot are gone


def _read_all(db, order, barrier, queue):
    barrier.wait(timeout=60)  # both processes read at the same time
    queue.put([(int(i), hashlib.sha256(db[int(i)][0].tobytes()).hexdigest(), db[int(i)][1])
               for i in order])


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_two_processes_at_once(databases, backend, method):
    images = [reference_image(value) for _, value in stored_pairs(databases[backend, True, False])]
    order = np.random.default_rng(7).permutation(len(images))
    expected = [(int(i), hashlib.sha256(np.ascontiguousarray(images[i][0]).tobytes()).hexdigest(),
                 images[i][1]) for i in order]
    db = DatumDB(databases[backend, True, False])
    assert db[int(order[0])][1] == expected[0][2]  # open in the parent when the workers start
    context = multiprocessing.get_context(method)
    barrier, queue = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_read_all, args=(db, order, barrier, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert results == [expected, expected]
    assert np.array_equal(db[3][0], images[3][0])  # and still reads after they are gone
    db.close()
    leveldbreader.remove_stale()  # the workers' views (they end with os._exit)


def test_threads_share_one_database(databases):
    db = DatumDB(databases["lmdb", False, True], layout="CHW")
    expected = [image for image, _ in db]
    failures = []

    def read(seed):
        for i in np.random.default_rng(seed).integers(0, len(db), 200):
            if not np.array_equal(db[int(i)][0], expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    copy = pickle.loads(pickle.dumps(db))  # carries the key list; opens on first use
    assert len(copy) == len(db) and np.array_equal(copy[4][0], expected[4])
    db.close()
    copy.close()


def test_caffe_style_encoded_and_float_datums(tmp_path, corpus):
    """Caffe's encoded datums have no channels/height/width: decoded as stored (gray JPEG ->
    one channel, colour -> BGR); a float_data datum comes back as float32."""
    photo = cv2.imread(str(sorted((corpus / "images").iterdir())[0]))
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    values = [Datum(data=cv2.imencode(".jpg", photo)[1].tobytes(), label=7, encoded=True),
              Datum(data=cv2.imencode(".png", gray)[1].tobytes(), label=2, encoded=True),
              Datum(channels=1, height=2, width=3, float_data=[0.5, 1, 2, 3, 4, 5], label=1)]
    env = lmdb.open(str(tmp_path / "caffe_lmdb"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, datum in enumerate(values):
            txn.put(b"%08d_x%d" % (i, i), datum.SerializeToString())
    env.close()
    db = DatumDB(str(tmp_path / "caffe_lmdb"))
    colour, label = db[0]
    assert label == 7 and np.array_equal(colour, cv2.imdecode(
        np.frombuffer(values[0].data, np.uint8), cv2.IMREAD_COLOR))
    assert np.array_equal(db[1][0][:, :, 0], gray) and db[1][1] == 2
    floats, label = db[2]
    assert floats.dtype == np.float32 and floats.shape == (2, 3, 1) and label == 1
    assert floats[0, 0, 0] == 0.5 and floats[1, 2, 0] == 5
    assert list(db.labels()) == [7, 2, 1]
    db.close()
