import numpy as np
import pandas as pd
import pytest
import yaml

from survey_seg import cluster
from survey_seg.cli import main
from survey_seg.cluster import ClusterSpec, check_spec_file_alone, dask_client, resolve_kind
from survey_seg.errors import InputError
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.security import write_tls_certificates
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

TLS = {"tls_ca_file": "/tls/ca.pem", "tls_cert": "/tls/cert.pem", "tls_key": "/tls/key.pem"}


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
        ({"kind": "local", "tls_ca_file": "/tls/ca.pem"}, "without tls_cert; add tls_cert"),
        ({"kind": "local", "tls_cert": "/tls/cert.pem"}, "need tls_ca_file"),
        ({"kind": "local", "tls_key": "/tls/key.pem"}, "need tls_ca_file"),
        ({"kind": "address", "address": "tcp://h:8786", **TLS}, "not a TLS address.*tls://"),
        ({"kind": "slurm", "options": {"protocol": "tcp://"}, **TLS}, "clash.*remove them"),
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


def test_spec_security_is_none_without_tls_and_checks_the_files_with_it():
    assert ClusterSpec(kind="local").security() is None
    spec = ClusterSpec(kind="local", **TLS)
    assert spec.tls
    with pytest.raises(InputError, match=r"TLS file /tls/ca\.pem does not exist"):
        spec.security()


@pytest.fixture(scope="module")
def mosaic_256(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sim256")
    return write_simulation(simulate_mosaic(SimulationConfig(size=256, seed=3)), directory)[
        "mosaic"
    ]


def _run(mosaic, out, *options) -> list[str]:
    return ["run", str(mosaic), "--out", str(out), "--method", "classical", "--tile-size", "128",
            "--halo", "64", "--no-progress", *map(str, options)]  # fmt: skip


def test_run_on_a_tls_cluster_spec(mosaic_256, tmp_path, capsys):
    files = write_tls_certificates(tmp_path / "tls")
    spec = tmp_path / "tls-local.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"kind": "local", "n_workers": 1, "tls_ca_file": str(files["ca_file"]),
             "tls_cert": str(files["cert"]), "tls_key": str(files["key"])}
        )
    )  # fmt: skip
    assert main(_run(mosaic_256, tmp_path / "out", "--cluster-spec", spec)) == 0
    assert "screened 4 tiles (0 already done, 0 failed)" in capsys.readouterr().out
    tiles = pd.read_parquet(tmp_path / "out" / "tiles.parquet")
    assert (tiles["status"] == "done").all()


def test_spec_file_alone_names_every_clashing_option_and_ignores_unset_ones():
    check_spec_file_alone("--cluster-spec", {"--workers": None, "--scheduler": None})
    with pytest.raises(InputError, match=r"^--cluster-spec and --workers and --scheduler both"):
        check_spec_file_alone("--cluster-spec", {"--workers": 4, "--scheduler": "h:8786"})


@pytest.mark.parametrize(
    "clash",
    [["--workers", "2"], ["--cluster", "auto"], ["--scheduler", "tls://h:8786"]],
)
def test_cluster_spec_with_other_cluster_options_is_a_usage_error(
    mosaic_256, tmp_path, capsys, clash
):
    status = main(_run(mosaic_256, tmp_path / "out", "--cluster-spec", "spec.yaml", *clash))
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("survey-seg: error: --cluster-spec and ") and err.count("\n") == 1
    assert clash[0] in err
    assert not (tmp_path / "out").exists()
