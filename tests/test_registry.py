"""The registries drive everything: an output format registered in ``outputs.OUTPUTS`` (with its
``FormatSpec``) is a ``create_imagenet --format`` with its own flags, stages, folder and label
order, and a Datum database output is a ``--backend`` choice; each resize mode's declared
params are flags and ``TransformOptions`` fields. Real builds of a small real Output class,
no mocks."""
import os
import subprocess
import sys

import numpy as np
import pytest

from imagenet_db.cli.convert import CONVERT_BOOLS, convert_parser
from imagenet_db.cli.create import create_imagenet_main, create_parser
from imagenet_db.cli.flags import normalize_gflags, resize_bools, transform_options
from imagenet_db.errors import DatabaseError
from imagenet_db.imaging.resize import RESIZE_MODES, mode_params
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.outputs import OUTPUTS, backends, format_specs
from imagenet_db.outputs.base import Encoded, Output
from imagenet_db.outputs.lmdb import LmdbWriter
from imagenet_db.outputs.spec import FormatOption, FormatSpec, Stage
from imagenet_db.testing.photos import write_extracted_tree

WNIDS = ["n01440764", "n01443537", "n01484850"]


class NpyFilesOutput(Output):
    """One ``<prefix><index>.npy`` file per record: its (C, H, W) uint8 pixels, BGR."""
    name = "npy-files"
    description = "one .npy file per image (a test format)"
    verify_accepts = "(*.npy files)"

    def __init__(self, path: str, batch_size: int = 1, prefix: str = "img"):
        self.path, self.prefix, self.added = path, prefix, 0
        os.makedirs(path, exist_ok=True)

    @classmethod
    def encode(cls, record, image) -> Encoded:
        pixels = image.pixels.reshape(image.pixels.shape[:2] + (-1,)).transpose(2, 0, 1)
        return Encoded(np.ascontiguousarray(pixels), None, image.shape, record.relpath)

    @classmethod
    def detect(cls, path: str) -> bool:
        return any(name.endswith(".npy") for name in os.listdir(path))

    def _file(self, index: int) -> str:
        return os.path.join(self.path, f"{self.prefix}{index:08d}.npy")

    @property
    def pending(self) -> int:
        return 0

    def add(self, record, encoded: Encoded) -> None:
        np.save(self._file(record.index), encoded.value)
        self.added += 1

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def resume_position(self, records) -> int:
        if any(name.endswith(".npy") for name in os.listdir(self.path)):
            raise DatabaseError(f"{self.path}: npy-files builds do not resume")
        return 0

    def entries(self) -> int:
        return self.added

    def stored(self, start: int = 0):
        for index in range(start, self.added):
            yield index, str(index), np.load(self._file(index))


def npy_stages(found, out, recipe, want_mean):
    """One output a split, ``npy_<split>``, records in list order, the --npy_prefix option."""
    return found, [Stage(name, os.path.join(out, NPY_FORMAT.folder.format(split=name)),
                         NpyFilesOutput.name, split.records(False, 0), {"split": name},
                         {"prefix": recipe.option("npy_prefix")})
                   for name, split in found.splits.items()]


NPY_FORMAT = FormatSpec(
    name="npy-files", summary="one .npy a picture", folder="npy_{split}",
    default_transform=lambda options=None: TransformOptions(resize_width=8, resize_height=6),
    stages=npy_stages, label_order="1-based",
    options=(FormatOption("npy_prefix", "npy-files: file name prefix", default="img",
                          metavar="TEXT"),
             FormatOption("npy_strict", "npy-files: a flag other formats refuse", kind="bool",
                          default=False, only_for_owner=True)))
NpyFilesOutput.format_spec = NPY_FORMAT


class LmdbCopyWriter(LmdbWriter):
    """A second Caffe Datum LMDB output (another registry name), for the --backend choices."""
    name = "lmdb-copy"


@pytest.fixture
def registered(monkeypatch):
    """NpyFilesOutput and LmdbCopyWriter registered for the test, removed after it."""
    monkeypatch.setitem(OUTPUTS, NpyFilesOutput.name, NpyFilesOutput)
    monkeypatch.setitem(OUTPUTS, LmdbCopyWriter.name, LmdbCopyWriter)


def _help(parser) -> str:
    return " ".join(parser.format_help().split())


def test_a_registered_format_is_a_create_choice_with_its_flags(registered):
    parser = create_parser()
    assert "npy-files" in parser._option_string_actions["--format"].choices
    text = _help(parser)
    assert "one .npy a picture" in text
    assert "--npy_prefix TEXT npy-files: file name prefix" in text
    assert "--npy_strict, --no-npy_strict npy-files: a flag other formats refuse" in text
    args = parser.parse_args(["S", "O", "--format", "npy-files", "--npy_prefix", "p"])
    assert (args.output_format, args.npy_prefix, args.npy_strict) == ("npy-files", "p", False)
    assert "npy-files" in format_specs() and "npy-files" not in backends()


def test_without_registration_the_format_is_unknown():
    assert "npy-files" not in format_specs()
    with pytest.raises(SystemExit):
        create_parser().parse_args(["S", "O", "--format", "npy-files"])


def test_a_registered_datum_database_is_a_backend_choice(registered):
    assert backends() == ("lmdb", "leveldb", "lmdb-copy")
    assert "lmdb-copy" in convert_parser()._option_string_actions["--backend"].choices
    assert "lmdb-copy" in create_parser()._option_string_actions["--backend"].choices
    assert "lmdb-copy" not in format_specs()  # a backend of the 'caffe' format


def test_create_builds_a_registered_format_from_its_declaration(registered, tmp_path, capsys):
    listed = write_extracted_tree(tmp_path / "src", WNIDS, 2, 1, seed=3)
    out = tmp_path / "out"
    code = create_imagenet_main([str(tmp_path / "src"), str(out), "--format", "npy-files",
                                 "--npy_prefix", "pic", "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    for split, items in listed.items():  # the declared folder, option and transform
        files = sorted(os.listdir(out / f"npy_{split}"))
        pictures = [name for name in files if name.endswith(".npy")]
        assert pictures == [f"pic{i:08d}.npy" for i in range(len(items))]
        assert np.load(out / f"npy_{split}" / pictures[0]).shape == (3, 6, 8)
    # the declared label order: Caffe's (ASCII order of the wnids) + 1, in the aux files too
    train = (out / "train.txt").read_text().split("\n")[:-1]
    assert sorted({int(line.rsplit(" ", 1)[1]) for line in train}) == [1, 2, 3]
    assert train[0] == f"{min(rel for rel, _ in listed['train'])} 1"  # n01440764: Caffe's 0


def test_a_formats_own_flag_is_refused_with_another_format(registered, tmp_path, capsys):
    code = create_imagenet_main([str(tmp_path), str(tmp_path / "out"), "--npy_strict"])
    assert code == 1
    assert capsys.readouterr().err == "error: --npy_strict applies to --format npy-files only\n"
    assert not (tmp_path / "out").exists()


def test_resize_modes_declare_their_flags_and_fields():
    declared = [param.name for _, param in mode_params()]
    assert declared == ["shorter_side", "only_shrink", "min_dim", "max_dim", "miil_size",
                        "miil_short_edge"]
    fields = list(TransformOptions.__dataclass_fields__)
    assert fields[fields.index("resize_mode") + 1:fields.index("interpolation")] == declared
    text = _help(convert_parser())
    for mode in RESIZE_MODES.values():
        for param in getattr(mode, "PARAMS", ()):
            assert f"--{param.name}" in text and " ".join(param.help.split()) in text


def test_a_declared_mode_flag_picks_its_mode_and_is_refused_with_another(tmp_path):
    argv = normalize_gflags(["R/", "L", "D", "-min_dim=300", "--only_shrink=false"],
                            CONVERT_BOOLS + resize_bools())  # a declared bool speaks gflags
    options = transform_options(convert_parser().parse_args(argv), 0, 0)
    assert (options.resize_mode, options.min_dim) == ("min_max_dim", 300)
    run = subprocess.run([sys.executable, "-c",
                          "import sys; from imagenet_db.cli import main; "
                          "sys.exit(main(sys.argv[1:]))", "convert", str(tmp_path), "L",
                          str(tmp_path / "db"), "--resize_mode=crop", "--only_shrink",
                          "--resize_width=4", "--resize_height=4"],
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (1, "error: --only_shrink goes with --shorter_side\n")
