"""The transform on a real (local) Dask cluster gives the same databases as local threads
(a failing cluster: tests/test_cluster_failures.py)."""
import pytest

from conftest import read_lmdb
from imagenet_db.testing import archives as fixture_archives
from imagenet_db.testing.archives import ArchiveSpec
from imagenet_db.cli import create_imagenet_main
from imagenet_db.engine.executor import dask_executor
from imagenet_db.engine.buildstate import BuildOptions
from imagenet_db.imaging.transform import TransformOptions
from imagenet_db.recipes.imagenet import create_imagenet

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0")  # no fixed port
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_tree_and_archives_on_dask_equal_local_build(sample_copy, tmp_path, scheduler):
    assert create_imagenet_main([str(sample_copy), str(tmp_path / "local"), "--resize=24x24"]) == 0
    assert create_imagenet_main([str(sample_copy), str(tmp_path / "dask"), "--resize=24x24",
                                 f"--dask_scheduler={scheduler}"]) == 0
    for name in ("ilsvrc12_train_lmdb", "ilsvrc12_val_lmdb"):
        assert read_lmdb(tmp_path / "dask" / name) == read_lmdb(tmp_path / "local" / name)
    assert ((tmp_path / "dask" / "imagenet_mean.binaryproto").read_bytes()
            == (tmp_path / "local" / "imagenet_mean.binaryproto").read_bytes())

    arch = tmp_path / "arch"
    fixture_archives.write_archives(arch, ArchiveSpec(["n01440764", "n01751748", "n02119789"],
                                                      train_per_class=3, val_count=4))
    opts = TransformOptions(16, 16)
    create_imagenet(str(arch), str(tmp_path / "a_local"), opts, log=lambda _: None)
    with dask_executor(scheduler) as executor:
        create_imagenet(str(arch), str(tmp_path / "a_dask"), opts,
                        build=BuildOptions(executor=executor), log=lambda _: None)
    assert read_lmdb(tmp_path / "a_dask" / "ilsvrc12_train_lmdb") == \
        read_lmdb(tmp_path / "a_local" / "ilsvrc12_train_lmdb")


def test_targz_and_zip_sources_on_dask_equal_local_build(tmp_path, scheduler, monkeypatch):
    """Cluster workers unpickle the .tar.gz reader (seek points) and the zip reader and read
    the same bytes as local threads."""
    from imagenet_db.testing import clsloc

    monkeypatch.setenv("IMAGENET_DB_TAR_INDEX_CACHE", str(tmp_path / "idx"))
    base = clsloc.write_base(tmp_path / "base", ArchiveSpec(
        wnids=["n01440764", "n01751748", "n02119789"], train_per_class=3, val_count=4))
    clsloc.write_ilsvrc2015(tmp_path / "c15", base)
    clsloc.write_kaggle(tmp_path / "k", base, form="zip")
    opts = TransformOptions(16, 16)
    create_imagenet(str(tmp_path / "base" / "ilsvrc2012"), str(tmp_path / "ref"), opts,
                    log=lambda _: None)
    for name in ("c15", "k"):
        with dask_executor(scheduler) as executor:
            create_imagenet(str(tmp_path / name), str(tmp_path / f"{name}_dask"), opts,
                            build=BuildOptions(executor=executor), log=lambda _: None)
        for db in ("ilsvrc12_train_lmdb", "ilsvrc12_val_lmdb"):
            assert read_lmdb(tmp_path / f"{name}_dask" / db) == read_lmdb(tmp_path / "ref" / db)
