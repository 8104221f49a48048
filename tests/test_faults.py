"""Faults injected into real processes: the run survives them and loses nothing."""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.store import OutputStore

CONFIG = RunConfig(method="classical", tile_size=128, halo=64)


@pytest.fixture(scope="module")
def clean_run(small_simulation, tmp_path_factory):
    _, mosaic = small_simulation
    out = tmp_path_factory.mktemp("clean") / "out"
    run_survey(mosaic, out, CONFIG)
    return out


def _kill_when_a_tile_is_done(out, pid: int, killed: list[bool]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "tiles").is_dir() and any((out / "tiles").glob("*.json")):
            os.kill(pid, signal.SIGKILL)
            killed.append(True)
            return
        time.sleep(0.01)


def _assert_same_outputs(out, reference) -> None:
    """Equal catalogs and equal mask and segmentation pixels."""
    for name in ("sources.parquet", "clumps.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(out / name), pd.read_parquet(reference / name)
        )
    for after, before in zip(
        OutputStore(out).read_masks(), OutputStore(reference).read_masks(), strict=True
    ):
        np.testing.assert_array_equal(after, before)


def test_worker_killed_mid_run_gives_the_clean_outputs(small_simulation, clean_run, tmp_path):
    from distributed import Client, LocalCluster

    _, mosaic = small_simulation
    out = tmp_path / "out"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        victim = next(iter(client.run(os.getpid).values()))
        killed: list[bool] = []
        killer = threading.Thread(target=_kill_when_a_tile_is_done, args=(out, victim, killed))
        killer.start()
        summary = run_survey(mosaic, out, CONFIG, client=client)
        killer.join()
    assert killed and summary.n_failed == 0 and summary.n_screened == 16
    _assert_same_outputs(out, clean_run)


def test_driver_killed_mid_run_then_resume_gives_the_clean_outputs(
    small_simulation, clean_run, tmp_path
):
    import subprocess
    import sys

    _, mosaic = small_simulation
    out = tmp_path / "out"
    command = [sys.executable, "-m", "survey_seg.cli", "run", str(mosaic), "--out", str(out),
               "--method", "classical", "--tile-size", "128", "--halo", "64",
               "--cluster", "serial", "--no-progress"]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed: list[bool] = []
    _kill_when_a_tile_is_done(out, driver.pid, killed)
    assert driver.wait(timeout=60) == -signal.SIGKILL and killed
    assert (out / "run.lock").exists()  # left behind by the dead driver
    records = len(list((out / "tiles").glob("*.json")))
    assert 0 < records < 16  # killed mid-run
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"screened {16 - records} tiles ({records} already done, 0 failed)" in resumed.stdout
    _assert_same_outputs(out, clean_run)
    assert not (out / "run.lock").exists()
