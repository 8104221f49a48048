"""``benchmarks/sky_noise.py``: the mesh's RMS beside SEP's and the pixel noise."""

from __future__ import annotations

import numpy as np
import pytest


def test_on_white_noise_the_three_estimates_agree_and_no_psf_is_measured(load_benchmark):
    sky_noise = load_benchmark("sky_noise")
    image = np.random.default_rng(2).normal(10.0, 2.0, (256, 320))
    row = sky_noise.sky_noise_row("noise", image)
    for key in ("rms", "rms_3_rounds", "sep_rms", "pixel_noise"):
        assert row[key] == pytest.approx(2.0, rel=0.03), key
    assert row["level"] == pytest.approx(10.0, abs=0.05)
    assert row["psf_fwhm_pix"] is None and row["psf_stars"] == 0
