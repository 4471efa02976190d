"""verify catches corruption a reader would see: random damage to an LMDB's pages, a
changed key, a damaged LevelDB log or table block (and never "recovers" it by dropping data),
a damaged LMDB meta page (a one-line error for verify and mean).

Everything runs through the command line (``imagenet-db SUBCOMMAND``, tests/conftest.py: ``call``
in this process, ``run``/``start`` as a child process) on real files."""
import json
import random
import shutil
import subprocess
import sys

import plyvel

from conftest import REPO, call, child_env, convert_args, flip, one_line_error



VERIFY_MANY = (  # verify many databases in one child process: {path: [exit code, output]}
    "import contextlib, io, json, sys, traceback\n"
    "from imagenet_db import cli\n"
    "out = {}\n"
    "for path in sys.argv[1:]:\n"
    "    buf = io.StringIO()\n"
    "    try:\n"
    "        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
    "            code = cli.main(['verify', path])\n"
    "    except BaseException:\n"
    "        code = 'traceback'\n"
    "        buf.write(traceback.format_exc())\n"
    "    out[path] = [code, buf.getvalue()]\n"
    "print(json.dumps(out))\n"
)


def verify_many(paths):
    proc = subprocess.run([sys.executable, "-c", VERIFY_MANY, *map(str, paths)],
                          env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


READ_LMDB = (  # the SHA-256 of an LMDB's entries as a plain lmdb reader sees them
    "import hashlib, lmdb, sys\n"
    "env = lmdb.open(sys.argv[1], readonly=True, lock=False)\n"
    "digest = hashlib.sha256()\n"
    "with env.begin() as txn:\n"
    "    for key, value in txn.cursor():\n"
    "        digest.update(b'%d:%s%d:%s' % (len(key), key, len(value), value))\n"
    "print(digest.hexdigest())\n"
)


def read_all(path):
    """What a reader gets from an LMDB: a digest of its entries, an error, or a crash (a
    damaged LMDB can kill its reader with SIGBUS, so this runs in its own process)."""
    proc = subprocess.run([sys.executable, "-c", READ_LMDB, str(path)], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode < 0:
        return f"reader killed by signal {-proc.returncode}"
    return proc.stdout.strip() if proc.returncode == 0 else "unreadable"


LMDB_PAGE = 4096


def lmdb_tree_pages(data):
    """Page numbers of an LMDB's branch and leaf pages (mp_flags at byte 10 of each page)."""
    return [pg for pg in range(2, len(data) // LMDB_PAGE)
            if int.from_bytes(data[pg * LMDB_PAGE + 10:pg * LMDB_PAGE + 12], "little") & 3]


def test_verify_fails_on_every_lmdb_corruption_a_reader_would_see(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=32", "--resize_height=32"))
    assert rc == 0, err
    reference = read_all(db)
    original = (db / "data.mdb").read_bytes()
    rng = random.Random(13)
    offsets = [rng.randrange(2 * LMDB_PAGE, len(original) - 8) for _ in range(10)]
    offsets += [rng.choice(lmdb_tree_pages(original)) * LMDB_PAGE + rng.randrange(16, LMDB_PAGE - 8)
                for _ in range(6)]
    copies = {}
    for n, offset in enumerate(offsets):
        copy = tmp_path / f"c{n}"
        shutil.copytree(db, copy)
        damaged = bytearray(original)
        damaged[offset:offset + 8] = bytes(rng.randrange(256) for _ in range(8))
        (copy / "data.mdb").write_bytes(bytes(damaged))
        copies[str(copy)] = read_all(copy) != reference
    # a changed digit in a key's path: still a well-formed, well-ordered key
    key_copy = tmp_path / "key"
    shutil.copytree(db, key_copy)
    assert original.count(b"00000003_img_0003.jpg") == 1
    (key_copy / "data.mdb").write_bytes(original.replace(b"00000003_img_0003.jpg",
                                                         b"00000003_img_0008.jpg"))
    copies[str(key_copy)] = True
    results = verify_many([db, *copies])
    assert results[str(db)][0] == 0, results[str(db)][1]
    changed = [path for path, differs in copies.items() if differs]
    assert len(changed) >= 10
    for path in copies:
        code, text = results[path]
        assert code != "traceback" and "Traceback" not in text, text
        if path in changed:
            assert code == 1 and "FAILED" in text, (path, text)


def test_verify_checks_leveldb_checksums_and_never_loses_data(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--backend=leveldb", "--resize_width=32",
                                "--resize_height=32"))
    assert rc == 0, err
    # a damaged log (the batches written last): verify must say so, and not "recover" the
    # database by dropping the damaged batches (LevelDB's default open does exactly that)
    logged = tmp_path / "logged"
    shutil.copytree(db, logged)
    (log,) = logged.glob("*.log")
    flip(log)
    damaged_log = log.read_bytes()
    code, text = call("verify", logged)
    assert code == 1 and "Traceback" not in text, text
    assert log.exists() and log.read_bytes() == damaged_log  # the evidence is kept
    # a damaged table block: LevelDB's block checksum catches it
    plyvel.DB(str(db)).close()  # as a writer (or Caffe) opens it: the log moves into a table
    code, text = call("verify", db)
    assert code == 0, text
    (table,) = db.glob("*.ldb")
    flip(table)
    code, text = call("verify", db)
    assert code == 1 and "checksum" in text and "Traceback" not in text, text


def test_damaged_lmdb_meta_page_is_a_one_line_error(data, tmp_path):
    db = tmp_path / "db"
    rc, err = call(*convert_args(data, db, "--resize_width=16", "--resize_height=16"))
    assert rc == 0, err
    damaged = bytearray((db / "data.mdb").read_bytes())
    root_at = 16 + 4 + 4 + 8 + 8 + 48 + 40  # MDB_meta: main DB's md_root (after FREE_DBI)
    for meta in (0, 1):
        damaged[meta * LMDB_PAGE + root_at:meta * LMDB_PAGE + root_at + 8] = \
            (999_999).to_bytes(8, "little")
    (db / "data.mdb").write_bytes(bytes(damaged))
    rc, err = call("verify", db)
    assert rc == 1 and "Traceback" not in err, err
    rc, err = call("mean", db)
    assert rc == 1 and str(db) in one_line_error(err), err

