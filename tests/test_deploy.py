"""deploy/: the Prefect deployments and every cluster spec load with the libraries' loaders."""

from pathlib import Path

import pytest

from survey_seg.cluster import ClusterSpec, build_batch_cluster
from survey_seg.errors import InputError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


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


@pytest.mark.parametrize("name", ["cpu", "gpu", "slurm", "kubernetes"])
def test_cluster_specs_load(name):
    spec = ClusterSpec.from_file(DEPLOY / "clusters" / f"{name}.yaml")
    assert spec.kind == {"cpu": "local", "gpu": "cuda"}.get(name, name)
    assert spec.dashboard_address.startswith("127.0.0.1") or name in ("slurm", "kubernetes")


def test_slurm_spec_builds_a_job_script_with_a_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dask-jobqueue creates its log directory here
    spec = ClusterSpec.from_file(DEPLOY / "clusters" / "slurm.yaml")
    cluster = build_batch_cluster("slurm", spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script


def test_kubernetes_spec_matches_the_operators_resource_layout():
    from dask_kubernetes import operator

    spec = ClusterSpec.from_file(DEPLOY / "clusters" / "kubernetes.yaml")
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

    ours = spec.options
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
