import numpy as np
import pandas as pd
import pytest

from survey_seg import cluster
from survey_seg.cluster import ClusterSpec, dask_client, resolve_kind
from survey_seg.errors import InputError
from survey_seg.pipeline import RunConfig, run_survey


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    with pytest.raises(InputError, match=r"no.*GPU|GPU.*none"):
        resolve_kind(ClusterSpec(kind="cuda"))


def test_cuda_without_dask_cuda_names_the_extra(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    monkeypatch.setattr(cluster, "_has_dask_cuda", lambda: False)
    with pytest.raises(InputError, match=r"survey-seg\[gpu\]"):
        resolve_kind(ClusterSpec(kind="cuda"))


def test_auto_picks_cuda_only_with_gpus_and_dask_cuda(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    assert resolve_kind(ClusterSpec()) == "local"
    monkeypatch.setattr(cluster, "gpu_count", lambda: 1)
    monkeypatch.setattr(cluster, "_has_dask_cuda", lambda: True)
    assert resolve_kind(ClusterSpec()) == "cuda"
    monkeypatch.setattr(cluster, "_has_dask_cuda", lambda: False)
    assert resolve_kind(ClusterSpec()) == "local"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "slurmish"}, "unknown cluster kind"),
        ({"kind": "address"}, "scheduler address"),
        ({"n_workers": 0}, "--workers"),
        ({"n_workers": True}, "--workers"),
        ({"threads_per_worker": 0}, "threads per worker"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(InputError, match=message):
        ClusterSpec(**kwargs)


def test_unreachable_scheduler_is_a_clear_error():
    spec = ClusterSpec(kind="address", address="tcp://127.0.0.1:9", connect_timeout="2s")
    with pytest.raises(InputError, match="could not reach the dask scheduler"):
        with dask_client(spec):
            pass


def test_two_process_local_cluster_gives_the_serial_catalog(small_simulation, tmp_path):
    _, mosaic = small_simulation
    config = RunConfig(tile_size=128, halo=64, method="classical")
    run_survey(mosaic, tmp_path / "serial", config)
    with dask_client(ClusterSpec(kind="local", n_workers=2)) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2
        threads = client.run(lambda: __import__("os").environ["OMP_NUM_THREADS"])
        assert set(threads.values()) == {"1"}
        assert "127.0.0.1" in client.dashboard_link
        summary = run_survey(mosaic, tmp_path / "dask", config, client=client)
    assert summary.n_screened == 16
    for name in ("sources.parquet", "clumps.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "dask" / name), pd.read_parquet(tmp_path / "serial" / name)
        )
    tiles = pd.read_parquet(tmp_path / "dask" / "tiles.parquet")
    assert (tiles["status"] == "done").all()
    assert np.all(tiles["seconds"] > 0)
