"""Shared fixtures: small seeded simulated mosaics written once per session."""

from __future__ import annotations

import importlib.util
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


@pytest.fixture
def write_model():
    """Write a seeded random U-Net and its model config; returns the config's path.

    ``write_model(directory, config=UNetConfig(...), name="tiny", seed=0, **entries)``:
    ``entries`` are added to (or replace) the config's entries.
    """
    import hashlib
    import json

    import torch

    from survey_seg.models.unet import ScreeningUNet, UNetConfig
    from survey_seg.train import DEFAULT_THRESHOLDS

    def write(directory: Path, *, config=None, name="tiny", seed=0, **entries) -> Path:
        config = config or UNetConfig(width=4, depth=2, stamp_size=16)
        torch.manual_seed(seed)
        weights = directory / f"{name}.pt"
        torch.save(ScreeningUNet(config).state_dict(), weights)
        spec = {
            "name": name,
            "weights": weights.name,
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "architecture": config.to_dict(),
            "thresholds": dict(DEFAULT_THRESHOLDS),
            "training": {},
            **entries,
        }
        path = directory / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    return write


@pytest.fixture
def assert_column_metadata():
    """Check that each field of a Parquet file carries its column's description and unit.

    ``assert_column_metadata(path, columns)`` with ``columns`` from ``survey_seg.catalog``.
    """
    import pyarrow.parquet as pq

    def check(path, columns) -> None:
        schema = pq.read_schema(path)
        for column in columns:
            metadata = schema.field(column.name).metadata
            assert metadata[b"description"] == column.description.encode(), column.name
            assert metadata.get(b"unit") == (column.unit.encode() or None), column.name

    return check


@pytest.fixture(scope="session")
def load_benchmark():
    """Load a script of ``benchmarks/`` by name (``"quality"``) as a module."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
