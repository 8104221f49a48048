"""The checklist of ``benchmarks/quality.py``: targets, and their errors over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def quality(load_benchmark):
    return load_benchmark("quality")


def _rows(quality, purities, shifted_purities, sep_blend=0.5):
    """Per-seed rows where every metric meets its target except as given."""
    good = {
        metric: (0.0 if metric in quality.LOWER_IS_BETTER else 0.99) for metric in quality.METRICS
    }
    rows = []
    for simulator, values in (("nominal", purities), ("shifted", shifted_purities)):
        for seed, purity in enumerate(values):
            rows.append({"simulator": simulator, "seed": seed, "method": "unet", **good,
                         "purity": purity, "blend_recall": 0.9})  # fmt: skip
            rows.append({"simulator": simulator, "seed": seed, "method": "sep", **good,
                         "blend_recall": sep_blend})  # fmt: skip
    return rows


def test_standard_error_is_the_scatter_over_root_count(quality):
    values = np.array([0.9, 0.92, 0.94, 0.96])
    assert quality.standard_error(values) == pytest.approx(np.std(values, ddof=1) / 2.0)
    assert math.isnan(quality.standard_error(np.array([0.9, np.nan])))


def test_checklist_gives_each_target_its_error_and_distance(quality):
    purities = [0.93, 0.94, 0.95, 0.94]
    rows = _rows(quality, purities, [p - 0.01 for p in purities])
    items = {
        item["check"]: item for item in quality.checklist(quality.summarise(rows, {}), "unet", rows)
    }
    purity = items["purity >= 0.95"]
    assert purity["status"] == "FAIL"
    error = np.std(purities, ddof=1) / 2.0
    assert purity["error"] == pytest.approx(error)
    assert purity["sigmas"] == pytest.approx((np.mean(purities) - 0.95) / error)
    # the shift is the same on every seed: paired, it has no scatter
    shift = items["purity worse by <= 0.05 on shift"]
    assert shift["status"] == "PASS"
    assert shift["value"] == pytest.approx(-0.01)
    assert shift["error"] == pytest.approx(0.0, abs=1e-12)
    assert items["blend_recall - sep's >= 0.25"]["value"] == pytest.approx(0.4)
    assert items["completeness >= 0.95"]["status"] == "PASS"
    assert "sigma" in quality.format_item(purity)


def test_checklist_without_rows_has_no_errors(quality):
    rows = _rows(quality, [0.96, 0.97], [0.96, 0.97])
    items = quality.checklist(quality.summarise(rows, {}), "unet")
    assert all(math.isnan(item["error"]) for item in items)
    assert all(item["status"] == "PASS" for item in items)
