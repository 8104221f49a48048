"""Faults injected into real processes: the run survives them and loses nothing."""

import errno
import json
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from survey_seg.errors import OutputError
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


# --------------------------------------------------------------------------- full disk


def _fill_disk_after(writes: int, error_number: int) -> None:
    """In this process, make every output write after the first ``writes`` fail."""
    import errno as errno_module

    from survey_seg import store

    original = store.__dict__.get("_original_atomic_write_bytes", store.atomic_write_bytes)
    store._original_atomic_write_bytes = original
    budget = [writes]

    def write(path, data):
        if budget[0] <= 0:
            raise OSError(error_number, os.strerror(error_number), str(path))
        budget[0] -= 1
        original(path, data)

    assert error_number in (errno_module.ENOSPC, errno_module.EROFS)
    store.atomic_write_bytes = write


def _free_disk() -> None:
    from survey_seg import store

    store.atomic_write_bytes = store.__dict__.pop(
        "_original_atomic_write_bytes", store.atomic_write_bytes
    )


def _finished_records(out) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((out / "tiles").glob("*.json"))}


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EROFS])
def test_disk_full_on_the_workers_stops_the_run_then_resume_gives_the_clean_outputs(
    small_simulation, clean_run, tmp_path, error_number
):
    """Workers (real processes) whose disk fills after a few tiles: one clear error,
    the tiles finished before it intact, no temporary file left, and ``--resume``
    once there is space again gives the clean run's outputs."""
    from distributed import Client, LocalCluster

    _, mosaic = small_simulation
    out = tmp_path / "out"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(_fill_disk_after, 6, error_number)  # 3 writes per tile: 2 tiles each
        with pytest.raises(OutputError) as caught:
            run_survey(mosaic, out, CONFIG, client=client)
        message = str(caught.value)
        assert "\n" not in message and os.strerror(error_number) in message
        assert "cannot write to the output directory" in message and "--resume" in message
        finished = _finished_records(out)
        assert 0 < len(finished) < 16
        assert all(json.loads(record)["status"] == "done" for record in finished.values())
        assert not list(out.rglob("*.tmp")) and not (out / "run.lock").exists()
        client.run(_free_disk)
        summary = run_survey(mosaic, out, CONFIG, client=client, resume=True)
    assert summary.n_skipped == len(finished) and summary.n_failed == 0
    _assert_same_outputs(out, clean_run)
    # the tiles finished before the disk filled were not redone
    assert {k: v for k, v in _finished_records(out).items() if k in finished} == finished


def _slow_writes(seconds: float) -> None:
    """In this process, make every output write take ``seconds`` longer."""
    from survey_seg import store

    original = store.atomic_write_bytes

    def write(path, data):
        time.sleep(seconds)
        original(path, data)

    store.atomic_write_bytes = write


def test_a_stopped_run_returns_only_after_its_tiles_in_flight_are_done(small_simulation, tmp_path):
    """Cancelling does not stop a running dask task: a tile in flight on another
    worker when the disk fills must not write after the run has stopped and
    released its lock."""
    from distributed import Client, LocalCluster

    _, mosaic = small_simulation
    out = tmp_path / "out"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        full, slow = client.scheduler_info()["workers"]
        client.run(_fill_disk_after, 0, errno.ENOSPC, workers=[full])
        client.run(_slow_writes, 0.5, workers=[slow])
        with pytest.raises(OutputError):
            run_survey(mosaic, out, CONFIG, client=client)
        finished = _finished_records(out)
        time.sleep(2.0)  # longer than a slow tile's three writes
        assert _finished_records(out) == finished
        assert not list(out.rglob("*.tmp")) and not (out / "run.lock").exists()


def test_disk_full_at_the_merge_keeps_the_earlier_catalogs(small_simulation, tmp_path):
    """A region rerun whose merge hits a full disk leaves the earlier global outputs
    byte for byte as they were."""
    from survey_seg.pipeline import execute_run, plan_rerun

    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, CONFIG)
    earlier = {
        name: (out / name).read_bytes()
        for name in ("sources.parquet", "clumps.parquet", "tiles.parquet", "manifest.json")
    }
    plan = plan_rerun(out, "tiles:5,6")
    _fill_disk_after(6 + 1, errno.ENOSPC)  # the two tiles and the running manifest
    try:
        with pytest.raises(OutputError, match="No space left on device"):
            execute_run(plan)
    finally:
        _free_disk()
    for name, data in earlier.items():
        if name != "manifest.json":  # the manifest says a run started
            assert (out / name).read_bytes() == data, name
    assert not list(out.rglob("*.tmp")) and not (out / "run.lock").exists()
    assert execute_run(plan_rerun(out, "tiles:5,6")).n_screened == 2


# --------------------------------------------------------------------------- failing tile


def _poison_tile(tile_index: int, attempts_log: str) -> None:
    """In this process, make screening of one tile raise (and log each attempt)."""
    from survey_seg import pipeline

    original = pipeline.__dict__.get("_original_screen_tile", pipeline.screen_tile)
    pipeline._original_screen_tile = original

    def screen(window, tile, *args, **kwargs):
        if tile.index == tile_index:
            with open(attempts_log, "a") as log:
                log.write(f"{os.getpid()}\n")
            raise RuntimeError(f"poisoned tile {tile_index}")
        return original(window, tile, *args, **kwargs)

    pipeline.screen_tile = screen


def _cure_tile() -> None:
    from survey_seg import pipeline

    pipeline.screen_tile = pipeline.__dict__.pop("_original_screen_tile", pipeline.screen_tile)


def test_failing_tile_is_retried_recorded_and_rerun_alone(small_simulation, clean_run, tmp_path):
    """A tile whose screening raises on the workers: retried, then recorded as failed
    with its reason while the other tiles finish; a resume screens only that tile."""
    from distributed import Client, LocalCluster

    from survey_seg.pipeline import TILE_RETRIES

    _, mosaic = small_simulation
    out, attempts = tmp_path / "out", tmp_path / "attempts.log"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(_poison_tile, 5, str(attempts))
        summary = run_survey(mosaic, out, CONFIG, client=client)
        assert summary.n_failed == 1 and summary.n_screened == 15
        assert len(attempts.read_text().split()) == TILE_RETRIES + 1
        tiles = pd.read_parquet(out / "tiles.parquet").set_index("tile_id")
        assert tiles.loc[5, "status"] == "failed"
        assert tiles.loc[5, "error"] == "RuntimeError: poisoned tile 5"
        assert (tiles.drop(index=5)["status"] == "done").all()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "partial"
        client.run(_cure_tile)
        resumed = run_survey(mosaic, out, CONFIG, client=client, resume=True)
    assert (resumed.n_screened, resumed.n_skipped, resumed.n_failed) == (1, 15, 0)
    _assert_same_outputs(out, clean_run)
    assert (pd.read_parquet(out / "tiles.parquet")["status"] == "done").all()
