import numpy as np
import pytest

from survey_seg.clumps import find_clumps


def test_clumps_need_a_host_and_report_their_flux_fraction():
    shape = (40, 40)
    sources = np.zeros(shape, np.int32)
    sources[5:35, 5:35] = 1
    flux = np.zeros(shape, np.float32)
    flux[5:35, 5:35] = 1.0  # flat host of 900
    flux[20, 12] += 45.0  # a point-like clump: 5 % of the host
    heat = np.zeros(shape, np.float32)
    heat[20, 12] = 0.9
    heat[2, 2] = 0.95  # outside every source
    heat[28, 28] = 0.2  # below threshold
    clumps = find_clumps(heat, sources, flux, threshold=0.35)
    assert clumps.y.tolist() == [20.0] and clumps.x.tolist() == [12.0]
    assert clumps.host_label.tolist() == [1]
    assert clumps.score.tolist() == pytest.approx([0.9])
    assert clumps.flux_fraction[0] == pytest.approx(45.0 / 945.0, rel=1e-3)


def test_no_clumps():
    clumps = find_clumps(
        np.zeros((8, 8)), np.ones((8, 8), np.int32), np.zeros((8, 8)), threshold=0.5
    )
    assert clumps.y.size == 0
