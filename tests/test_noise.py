import numpy as np
import pytest
from scipy import ndimage

from survey_seg.noise import image_noise_correlation


def test_image_noise_correlation_is_one_for_white_noise_and_more_for_drizzled():
    rng = np.random.default_rng(4)
    shape = (384, 384)
    background = np.full(shape, 10.0)
    variance = np.full(shape, 0.04)
    white = background + rng.normal(0.0, 0.2, shape)
    kernel = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5])
    drizzled = background + ndimage.convolve(
        rng.normal(0.0, 0.2, shape), kernel / np.sqrt(np.sum(kernel**2))
    )
    assert image_noise_correlation(white, variance, background, 1.8) == pytest.approx(1.0, abs=0.05)
    assert image_noise_correlation(drizzled, variance, background, 1.8) == pytest.approx(
        1.95, abs=0.1
    )
    # pixels without data or flagged take no part
    holed = drizzled.copy()
    holed[:40] = np.nan
    flagged = np.ones(shape, bool)
    flagged[-40:] = False
    ratio = image_noise_correlation(holed, variance, background, 1.8, flagged)
    assert ratio == pytest.approx(1.95, abs=0.1)
