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


def test_the_other_skies_are_held_to_the_nominal_targets(quality):
    rows = _rows(quality, [0.96, 0.97], [0.96, 0.97])
    good = {m: (0.0 if m in quality.LOWER_IS_BETTER else 0.99) for m in quality.METRICS}
    for seed, purity in enumerate([0.90, 0.92]):
        rows.append({"simulator": "correlated", "seed": seed, "method": "unet", **good,
                     "purity": purity})  # fmt: skip
    items = {
        item["check"]: item for item in quality.checklist(quality.summarise(rows, {}), "unet", rows)
    }
    assert items["purity >= 0.95 (correlated)"]["status"] == "FAIL"
    assert items["purity >= 0.95 (correlated)"]["value"] == pytest.approx(0.91)
    assert items["completeness >= 0.95 (correlated)"]["status"] == "PASS"
    assert not any("(psf3)" in check for check in items)  # a sky not run is not checked
    assert quality.metric_prefixes(["nominal", "psf5"]) == [("nominal", ""), ("psf5", "psf5_")]


def test_the_skies_are_the_nominal_one_with_one_thing_changed(quality):
    nominal = quality.simulate("nominal", 3, 128).config
    assert quality.simulate("psf3", 3, 128).config.psf_fwhm_pix == 3 * nominal.psf_fwhm_pix
    correlated = quality.simulate("correlated", 3, 128).config
    assert correlated.noise_correlation == quality.NOISE_CORRELATION
    assert correlated.psf_fwhm_pix == nominal.psf_fwhm_pix
    kolmogorov = quality.simulate("kolmogorov", 3, 128).config
    assert kolmogorov.psf_model == "kolmogorov" and kolmogorov.psf_ellipticity > 0
    assert kolmogorov.psf_fwhm_pix == nominal.psf_fwhm_pix
    with pytest.raises(ValueError, match="unknown simulator"):
        quality.simulate("psf4", 3, 128)


def test_a_segment_shares_a_footprint_when_its_region_holds_another(quality):
    import numpy as np

    segmentation = np.zeros((6, 10), dtype=np.int32)
    segmentation[1:3, 1:3], segmentation[1:3, 3:5] = 1, 3  # one footprint, two segments
    segmentation[4:6, 7:9] = 4  # alone
    assert quality.shares_a_footprint(segmentation).tolist() == [False, True, False, True, False]
