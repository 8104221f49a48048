"""deploy/: the Prefect deployments, the cluster specs and the Kubernetes manifest, all in TLS."""

import argparse
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from survey_seg.cluster import ClusterSpec, build_batch_cluster
from survey_seg.errors import InputError
from survey_seg.security import dask_security, write_tls_certificates

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "dask-cluster.yaml"
SPECS = ["cpu", "gpu", "slurm", "kubernetes"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return write_tls_certificates(tmp_path_factory.mktemp("tls"))


def _with_files(spec: ClusterSpec, files) -> ClusterSpec:
    """``spec`` with its TLS paths pointed at ``files``."""
    return dataclasses.replace(
        spec, tls_ca_file=str(files["ca_file"]), tls_cert=str(files["cert"]),
        tls_key=str(files["key"]),
    )  # fmt: skip


def test_prefect_yaml_loads_with_prefects_own_loader():
    import prefect
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.flows import load_flow_from_entrypoint
    from rich.console import Console

    assert prefect.__version__.startswith("3.")
    deployments, actions = _load_deploy_configs_and_actions(
        DEPLOY / "prefect.yaml", console=Console()
    )
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) == {"weekly-reprocess", "rerun-region"}
    assert by_name["weekly-reprocess"]["schedules"][0]["cron"] == "0 3 * * 1"
    assert by_name["rerun-region"]["schedules"] == []
    assert "pull" in actions
    from flows.reprocess import ReprocessParameters
    from flows.rerun_region import RerunParameters

    models = {"weekly-reprocess": ReprocessParameters, "rerun-region": RerunParameters}
    root = DEPLOY.parent
    for name, deployment in by_name.items():
        path, function = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{root / path}:{function}")
        assert flow.name in {"reprocess-survey", "rerun-region"}
        parameters = deployment["parameters"]["parameters"]
        assert set(parameters) <= set(models[name].model_fields), name


def test_prefect_deployments_use_the_tls_cluster_spec(monkeypatch):
    from flows.common import ClusterParameters

    monkeypatch.chdir(DEPLOY.parent)  # the deployments run from the repository root
    config = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        cluster = ClusterParameters(**deployment["parameters"]["parameters"]["cluster"])
        assert cluster.spec() == ClusterSpec.from_file(DEPLOY / "clusters" / "kubernetes.yaml")
        assert cluster.spec().tls, deployment["name"]


@pytest.mark.parametrize("name", SPECS)
def test_cluster_specs_load_with_tls(name, tls_files):
    spec = ClusterSpec.from_file(DEPLOY / "clusters" / f"{name}.yaml")
    assert spec.kind == {"cpu": "local", "gpu": "cuda", "kubernetes": "address"}.get(name, name)
    assert spec.dashboard_address.startswith("127.0.0.1") or name in ("slurm", "kubernetes")
    assert spec.tls
    for path in (spec.tls_ca_file, spec.tls_cert, spec.tls_key):
        assert Path(path).is_absolute(), path
    assert _with_files(spec, tls_files).security().require_encryption


def test_slurm_spec_builds_a_tls_job_script_with_a_gpu(tmp_path, monkeypatch, tls_files):
    monkeypatch.chdir(tmp_path)  # dask-jobqueue creates its log directory here
    spec = _with_files(ClusterSpec.from_file(DEPLOY / "clusters" / "slurm.yaml"), tls_files)
    cluster = build_batch_cluster("slurm", spec)
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script
    assert f" {cluster.scheduler_address} " in script
    for option, role in (("ca-file", "ca_file"), ("cert", "cert"), ("key", "key")):
        assert f"--tls-{option} {tls_files[role]}" in script


def test_kubernetes_spec_with_tls_names_the_manifest_to_apply():
    with pytest.raises(
        InputError, match=r"apply deploy/kubernetes/dask-cluster\.yaml with kubectl"
    ):
        ClusterSpec(kind="kubernetes", tls_ca_file="/tls/ca.pem", tls_cert="/tls/cert.pem")


def test_kubernetes_manifest_matches_the_operators_resource_layout():
    from dask_kubernetes import operator

    ours = yaml.safe_load(MANIFEST.read_text())
    reference = operator.make_cluster_spec(
        name="survey-seg", image="ghcr.io/survey-seg/survey-seg:latest", n_workers=4,
        resources={"limits": {"nvidia.com/gpu": 1}},
    )  # fmt: skip

    def shape(node):
        if isinstance(node, dict):
            return {k: shape(v) for k, v in node.items() if k not in ("env", "args")}
        if isinstance(node, list):
            return [shape(v) for v in node[:1]]
        return type(node).__name__

    assert ours["apiVersion"] == reference["apiVersion"] and ours["kind"] == reference["kind"]
    worker = ours["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert set(shape(reference["spec"])) <= set(shape(ours["spec"]))
    assert set(shape(reference["spec"]["scheduler"])) <= set(shape(ours["spec"]["scheduler"]))


def test_spec_files_with_unknown_keys_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: local\nworkerz: 3\n")
    with pytest.raises(InputError, match="unknown keys"):
        ClusterSpec.from_file(bad)


def _containers(manifest) -> dict:
    return {role: manifest["spec"][role]["spec"] for role in ("scheduler", "worker")}


def test_kubernetes_manifest_runs_dask_in_tls_with_the_secret_mounted():
    manifest = yaml.safe_load(MANIFEST.read_text())
    pods = _containers(manifest)
    scheduler_args = pods["scheduler"]["containers"][0]["args"]
    worker_args = pods["worker"]["containers"][0]["args"]
    assert scheduler_args[:2] == ["dask", "scheduler"] and worker_args[:2] == ["dask", "worker"]
    assert "--protocol tls" in " ".join(scheduler_args)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    address = f"tls://{name}-scheduler.{namespace}.svc.cluster.local:8786"
    assert worker_args[2] == address
    assert ClusterSpec.from_file(DEPLOY / "clusters" / "kubernetes.yaml").address == address
    for role, pod in pods.items():
        [volume] = [v for v in pod["volumes"] if v["secret"]["secretName"] == "survey-seg-dask-tls"]
        [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True, role
        args = pod["containers"][0]["args"]
        for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            path = Path(args[args.index(option) + 1])
            assert path.parent == Path(mount["mountPath"]), (role, option)
    probe = pods["scheduler"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["port"] == "http-dashboard"


def test_kubernetes_manifest_commands_start_a_tls_cluster(tls_files, tmp_path):
    """The manifest's own scheduler and worker commands, with the operator's tcp:// address set."""
    pods = _containers(yaml.safe_load(MANIFEST.read_text()))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = f"127.0.0.1:{port}"

    def local(args: list[str]) -> list[str]:
        mount = pods["scheduler"]["containers"][0]["volumeMounts"][0]["mountPath"]
        args = [a.replace(mount, str(tls_files["ca_file"].parent)) for a in args]
        args = [a.replace("$(DASK_WORKER_NAME)", "w1").replace("0.0.0.0", "127.0.0.1")
                for a in args]  # fmt: skip
        args = [f"tls://{host}" if a.startswith("tls://") else a for a in args]
        return [sys.executable, "-m", "dask", *args[1:]]

    scheduler = local(pods["scheduler"]["containers"][0]["args"])
    worker = local(pods["worker"]["containers"][0]["args"])
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": f"tcp://{host}"}  # what the operator sets
    log = (tmp_path / "dask.log").open("w")
    processes = [
        subprocess.Popen([*scheduler, "--port", str(port), "--no-dashboard"], stderr=log),
        subprocess.Popen([*worker, "--no-dashboard"], env=env, stderr=log),
    ]
    try:
        from distributed import Client

        security = dask_security(tls_files["ca_file"], tls_files["cert"], tls_files["key"])
        with Client(f"tls://{host}", security=security, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
            [address] = client.scheduler_info()["workers"]
            assert address.startswith("tls://")
            assert client.submit(lambda: 41 + 1).result() == 42
    finally:
        for process in processes[::-1]:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()


def test_flow_cluster_parameters_take_a_spec_file_alone(tmp_path):
    from pydantic import ValidationError

    from flows.common import ClusterParameters, add_cluster_arguments

    spec_file = str(DEPLOY / "clusters" / "slurm.yaml")
    parameters = ClusterParameters(spec_file=spec_file)
    assert parameters.spec().kind == "slurm" and parameters.spec().tls
    with pytest.raises(ValidationError, match=r"spec_file .* and workers both say where"):
        ClusterParameters(spec_file=spec_file, workers=2)
    (tmp_path / "bad.yaml").write_text("kind: local\nworkerz: 3\n")
    with pytest.raises(ValidationError, match="unknown keys"):
        ClusterParameters(spec_file=str(tmp_path / "bad.yaml"))
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    from_args = ClusterParameters.from_args(parser.parse_args(["--cluster-spec", spec_file]))
    assert from_args == parameters
    with pytest.raises(ValidationError, match="and kind both say where"):
        ClusterParameters.from_args(
            parser.parse_args(["--cluster-spec", spec_file, "--cluster", "local"])
        )
    assert ClusterParameters.from_args(parser.parse_args(["--workers", "3"])).spec().n_workers == 3
