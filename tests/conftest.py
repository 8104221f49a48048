"""Shared fixtures: small seeded simulated mosaics written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation


@pytest.fixture(scope="session")
def small_simulation(tmp_path_factory):
    """A 512 x 512 simulated mosaic on disk, with its in-memory truth."""
    sim = simulate_mosaic(SimulationConfig(size=512, seed=7))
    directory = tmp_path_factory.mktemp("sim512")
    paths = write_simulation(sim, directory)
    return sim, Path(paths["mosaic"])
