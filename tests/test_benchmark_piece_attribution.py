"""``benchmarks/piece_attribution.py`` on a small simulated mosaic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation


@pytest.fixture(scope="module")
def piece_attribution(load_benchmark):
    benchmarks = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, benchmarks)  # it reads benchmarks/injection.py beside it
    try:
        yield load_benchmark("piece_attribution")
    finally:
        sys.path.remove(benchmarks)


def test_candidates_are_counted_once_each_way(piece_attribution, tmp_path):
    sim = simulate_mosaic(SimulationConfig(size=512, seed=21, star_density=8000.0))
    mosaic = Path(write_simulation(sim, tmp_path / "sim")["mosaic"])
    row = piece_attribution.check_image(mosaic, tmp_path / "work", seed=2, radius=1.0)
    assert (row["image"], row["seed"]) == ("mosaic", 2)
    assert row["candidates"] > 0  # sources of mostly injected light that match no object
    for suffix in ("", "_3x3"):
        assert row[f"real_on_plain{suffix}"] <= row["on_plain"] <= row["candidates"]
        assert row[f"real_elsewhere{suffix}"] <= row["candidates"] - row["on_plain"]
