"""The Prefect flows, run against one local Prefect API started for this module."""

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
from prefect import flow, task
from pydantic import ValidationError

from flows.common import (
    DASK_LOG_LEVEL_VARIABLE,
    ClusterParameters,
    prefect_api,
    quiet_dask_logs,
    retry_unless_user_error,
    screen_batch_task,
)
from flows.reprocess import ReprocessParameters, reprocess_survey
from flows.rerun_region import RerunParameters, rerun_region
from survey_seg.errors import InputError, OutputError

LOCAL2 = ClusterParameters(kind="local", workers=2)


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_api() as url:
        yield url


@pytest.fixture(scope="module")
def reprocessed(small_simulation, prefect_server, tmp_path_factory):
    _, mosaic = small_simulation
    out = tmp_path_factory.mktemp("flow") / "out"
    parameters = ReprocessParameters(
        mosaics=[mosaic], out_dir=out, tile_size=128, halo=64, method="classical",
        batch_size=5, cluster=LOCAL2,
    )  # fmt: skip
    [summary] = reprocess_survey(parameters)
    return out, summary


def _files(directory):
    return {
        p.relative_to(directory): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_reprocess_flow_runs_end_to_end_on_two_workers(reprocessed):
    out, summary = reprocessed
    assert summary.n_screened == 16 and summary.n_failed == 0
    sources = pd.read_parquet(out / "sources.parquet")
    assert len(sources) == summary.n_sources > 0
    assert (out / "report.html").exists()
    assert (pd.read_parquet(out / "tiles.parquet")["status"] == "done").all()


def test_region_rerun_touches_exactly_the_tiles_meeting_the_region(reprocessed, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reprocessed[0], out)
    tiles = pd.read_parquet(out / "tiles.parquet")
    sources = pd.read_parquet(out / "sources.parquet")
    before = _files(out / "masks.zarr")
    # a cone around the corner shared by tiles 5, 6, 9 and 10 (pixel 256, 256)
    from survey_seg.store import MosaicStore

    ra, dec = MosaicStore(out / "mosaic.zarr").wcs.pixel_to_world_values(255.5, 255.5)
    summary = rerun_region(
        RerunParameters(out_dir=out, region=f"cone:{ra},{dec},0.0005", cluster=LOCAL2,
                        report=False)
    )  # fmt: skip
    assert summary.n_screened == 4
    after_tiles = pd.read_parquet(out / "tiles.parquet")
    rerun = after_tiles.loc[after_tiles["run_id"] != tiles["run_id"], "tile_id"].tolist()
    assert rerun == [5, 6, 9, 10]
    # rows of the other tiles, and the pixels of their shards, are byte for byte as before
    after_sources = pd.read_parquet(out / "sources.parquet")
    others = ~sources["tile_id"].isin(rerun)
    pd.testing.assert_frame_equal(
        after_sources[~after_sources["tile_id"].isin(rerun)].reset_index(drop=True),
        sources[others].reset_index(drop=True),
    )
    after = _files(out / "masks.zarr")
    rerun_shards = {f"{t // 4}/{t % 4}" for t in rerun}
    for path, digest in before.items():
        shard = "/".join(path.parts[-2:])
        if "/c/" in f"/{path.as_posix()}" and shard not in rerun_shards:
            assert after[path] == digest, path


def test_flow_on_a_real_scheduler_and_workers_matches_the_local_cluster(
    small_simulation, reprocessed, prefect_server, tmp_path
):
    _, mosaic = small_simulation
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    processes = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"])]  # fmt: skip
    try:
        for _ in range(2):
            processes.append(
                subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                  "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"])
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        parameters = ReprocessParameters(
            mosaics=[mosaic], out_dir=tmp_path / "out", tile_size=128, halo=64,
            method="classical", batch_size=8,
            cluster=ClusterParameters(kind="address", address=address),
        )  # fmt: skip
        [summary] = reprocess_survey(parameters)
    finally:
        for process in processes[::-1]:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    assert summary.n_screened == 16
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "sources.parquet"),
        pd.read_parquet(reprocessed[0] / "sources.parquet"),
    )


def test_bad_parameters_are_rejected_before_any_tile_runs(small_simulation, tmp_path):
    _, mosaic = small_simulation
    with pytest.raises(ValidationError, match="does not exist"):
        ReprocessParameters(mosaics=[tmp_path / "missing.fits"], out_dir=tmp_path / "o")
    with pytest.raises(ValidationError, match="accepted forms"):
        ReprocessParameters(mosaics=[mosaic], out_dir=tmp_path / "o", region="cone:1")
    with pytest.raises(ValidationError, match="exclude each other"):
        ReprocessParameters(mosaics=[mosaic], out_dir=tmp_path / "o", resume=True, force=True)
    with pytest.raises(ValidationError, match="extra"):
        ReprocessParameters(mosaics=[mosaic], out_dir=tmp_path / "o", tile_sise=64)
    with pytest.raises(ValidationError, match="no manifest"):
        RerunParameters(out_dir=tmp_path, region="tiles:1")


def test_library_errors_stop_the_flow_before_outputs_are_touched(
    small_simulation, prefect_server, tmp_path
):
    _, mosaic = small_simulation
    parameters = ReprocessParameters(
        mosaics=[mosaic], out_dir=tmp_path / "out", tile_size=4096, method="classical",
        cluster=LOCAL2,
    )  # fmt: skip
    started = time.perf_counter()
    with pytest.raises(InputError, match="larger than the image"):
        reprocess_survey(parameters)
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "out").exists()


def test_command_line_prints_one_line_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flows.reprocess", str(tmp_path / "none.fits"), "--out",
         str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("module", ["flows.reprocess", "flows.rerun_region"])
def test_flows_run_from_any_directory(module, tmp_path):
    """`python -m flows.reprocess --help` failed outside the repository root: the flows
    were not installed with the package."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"python -m {module}" in result.stdout


def test_the_flow_and_the_command_line_take_the_same_run_options(small_simulation, tmp_path):
    """--psf-fwhm, --precision, --flips (and the zero point) were missing from the flows:
    both now build their options from survey_seg.config."""
    import dataclasses

    from survey_seg.cli import _parser
    from survey_seg.config import OUTPUT_OPTIONS, RUN_OPTIONS, RunConfig

    run_parser = _parser()._subparsers._group_actions[0].choices["run"]
    cli_flags = {flag for action in run_parser._actions for flag in action.option_strings}
    help_text = subprocess.run(
        [sys.executable, "-m", "flows.reprocess", "--help"], capture_output=True, text=True,
        timeout=120,
    ).stdout  # fmt: skip
    for option in (*RUN_OPTIONS, *OUTPUT_OPTIONS):
        assert option.flag in cli_flags
        assert option.flag in help_text
    names = {option.field for option in RUN_OPTIONS} | {o.name for o in OUTPUT_OPTIONS}
    assert names <= set(ReprocessParameters.model_fields)
    assert {"psf_fwhm", "precision", "flips", "zero_point"} <= names
    assert {f.name for f in dataclasses.fields(RunConfig)} - names == {
        "background_cell", "fits_copies", "injection_catalog", "injection_psf_fwhm",
        "injection_psf_beta", "injection_gain", "negate",
    }  # fmt: skip
    _, mosaic = small_simulation
    given = ReprocessParameters(
        mosaics=[mosaic], out_dir=tmp_path, flips=4, precision="float32", psf_fwhm=3.5,
        zero_point=22.5,
    )  # fmt: skip
    assert given.run_config() == RunConfig(
        flips=4, precision="float32", psf_fwhm=3.5, zero_point=22.5
    )
    with pytest.raises(ValidationError, match=r"(?s)flips.*1, 2 or 4"):
        ReprocessParameters(mosaics=[mosaic], out_dir=tmp_path, flips=3)
    with pytest.raises(ValidationError, match=r"--psf-fwhm 0\.0 is not a PSF width"):
        ReprocessParameters(mosaics=[mosaic], out_dir=tmp_path, method="classical", psf_fwhm=0)


@pytest.mark.parametrize(("asked", "level"), [(None, logging.WARNING), ("info", logging.INFO)])
def test_dask_prints_warnings_not_info_under_prefect_unless_asked(monkeypatch, asked, level):
    distributed_logger = logging.getLogger("distributed")
    monkeypatch.setattr(distributed_logger, "level", distributed_logger.level)  # restored after
    monkeypatch.setenv(DASK_LOG_LEVEL_VARIABLE, "unset below, restored after")
    monkeypatch.delenv(DASK_LOG_LEVEL_VARIABLE)
    if asked is not None:
        monkeypatch.setenv(DASK_LOG_LEVEL_VARIABLE, asked)
    quiet_dask_logs()
    assert logging.getLogger("distributed.scheduler").getEffectiveLevel() == level
    assert os.environ[DASK_LOG_LEVEL_VARIABLE] == (asked or "warning")  # for spawned workers


def test_a_bad_dask_log_level_names_the_variable(monkeypatch):
    monkeypatch.setenv(DASK_LOG_LEVEL_VARIABLE, "loud")
    with pytest.raises(InputError, match=f"{DASK_LOG_LEVEL_VARIABLE}='loud' is not a logging"):
        quiet_dask_logs()


@pytest.mark.parametrize(
    ("error", "attempts"), [(OutputError("disk full"), 1), (OSError("reset"), 3)]
)
def test_batches_retry_transient_failures_but_not_errors_the_user_must_fix(
    prefect_server, error, attempts
):
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_user_error)
    def failing_batch():
        calls.append(1)
        raise error

    @flow
    def one_batch():
        failing_batch()

    with pytest.raises(type(error), match=str(error)):
        one_batch()
    assert len(calls) == attempts
    assert screen_batch_task.retry_condition_fn is retry_unless_user_error


@pytest.mark.filterwarnings("ignore:no source was detected")  # the negated mosaic's run
def test_reprocess_flow_with_inject_writes_an_injection_run(small_simulation, prefect_server,
                                                            tmp_path):  # fmt: skip
    import json

    from survey_seg.injection import INJECTION_DIR, INJECTION_JSON

    _, mosaic = small_simulation
    out = tmp_path / "out"
    options = {"mosaics": [mosaic], "out_dir": out, "inject": True}
    with pytest.raises(ValidationError, match="drop region or inject"):
        ReprocessParameters(**options, region="tiles:0")
    with pytest.raises(ValidationError, match="greater than 0"):
        ReprocessParameters(**options, inject_density=0)
    parameters = ReprocessParameters(
        **options, tile_size=256, halo=64, method="classical", cluster=LOCAL2, report=False,
        inject_seed=4, inject_density=100.0,
    )  # fmt: skip
    [summary] = reprocess_survey(parameters)
    assert summary.n_failed == 0
    written = json.loads((out / INJECTION_DIR / INJECTION_JSON).read_text())
    assert written["seed"] == 4 and written["density_per_mpix"] == 100.0
    assert written["n_injected"] > 0 and written["completeness"] is not None
    assert (written["gain"], written["gain_from"]) == (1500.0, "GAIN")  # the simulation's, in adu
    assert (out / INJECTION_DIR / "negative" / "sources.parquet").is_file()
    with pytest.raises(ValidationError, match="holds an earlier injection run"):
        ReprocessParameters(**options, resume=True)
    # clean discards the earlier injection run with the earlier screening
    (out / INJECTION_DIR / "stale.txt").write_text("from the earlier run")
    again = parameters.model_copy(update={"clean": True, "inject_seed": 5, "inject_gain": 9.0})
    reprocess_survey(again)
    written = json.loads((out / INJECTION_DIR / INJECTION_JSON).read_text())
    assert (written["seed"], written["gain"], written["gain_from"]) == (5, 9.0, "--gain")
    assert not (out / INJECTION_DIR / "stale.txt").exists()


def test_several_mosaics_are_screened_as_one_survey_and_rerun_by_region(prefect_server, tmp_path):
    """The flow's survey: OUT/mosaics/<name>/, is_primary, the HATS survey catalog; then
    ``rerun_region`` on it."""
    import pyarrow.dataset as pads

    from survey_seg.simulate import SimulationConfig
    from survey_seg.simulate_survey import SurveySimulationConfig, simulate_survey, write_survey
    from survey_seg.survey import MosaicFootprint
    from survey_seg.survey_run import read_survey_manifest
    from survey_seg.tiling import make_tile_grid, parse_region, select_tiles

    survey = simulate_survey(
        SurveySimulationConfig(seed=2, simulation=SimulationConfig(galaxy_density=400.0))
    )
    paths = write_survey(survey, tmp_path / "sim")
    mosaics = [paths[name] for name in "abcd"]
    out = tmp_path / "survey"
    parameters = ReprocessParameters(
        mosaics=mosaics, out_dir=out, tile_size=128, method="classical", report=False,
        cluster=LOCAL2,
    )  # fmt: skip
    summaries = reprocess_survey(parameters)
    assert len(summaries) == len(mosaics)
    assert (out / "survey.json").is_file() and (out / "quality_map.fits").is_file()
    primary = []
    for name in "abcd":
        sources = pd.read_parquet(out / "mosaics" / name / "sources.parquet")
        primary.append(sources[sources["is_primary"]])
    catalog = pads.dataset(out / "catalogs" / "sources" / "dataset").to_table().to_pandas()
    assert len(catalog) == sum(len(p) for p in primary) > 0
    with pytest.raises(ValidationError, match="distinct file names"):
        ReprocessParameters(mosaics=[mosaics[0], mosaics[0]], out_dir=tmp_path / "again")
    # rerun_region on the survey: the region's tiles of every mosaic, the products updated
    with pytest.raises(ValidationError, match="reprocess_survey"):
        RerunParameters(out_dir=out, region="cone:0,0,1", mosaic=mosaics[0])
    footprints = {
        m["name"]: MosaicFootprint.from_record(m["footprint"])
        for m in read_survey_manifest(out)["mosaics"]
    }
    ra = sum(f.center[0] for f in footprints.values()) / 4
    dec = sum(f.center[1] for f in footprints.values()) / 4
    region = f"cone:{ra},{dec},0.002"
    before = {name: pd.read_parquet(out / "mosaics" / name / "tiles.parquet") for name in "abcd"}
    survey = rerun_region(RerunParameters(out_dir=out, region=region, cluster=LOCAL2, report=False))
    assert survey.ok and set(survey.mosaics) == set("abcd")
    for name, footprint in footprints.items():
        tiles = pd.read_parquet(out / "mosaics" / name / "tiles.parquet")
        rerun = set(tiles["tile_id"][tiles["run_id"] == survey.run_id])
        grid = make_tile_grid(footprint.shape, tile_size=128, halo=64, wcs=footprint.wcs)
        assert rerun == {tile.index for tile in select_tiles(grid, parse_region(region))}
        kept = ~tiles["tile_id"].isin(rerun)
        pd.testing.assert_frame_equal(
            tiles[kept].reset_index(drop=True), before[name][kept].reset_index(drop=True)
        )
