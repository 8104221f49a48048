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


def test_a_clump_at_its_hosts_centre_is_its_nucleus_and_is_dropped():
    shape = (40, 60)
    sources = np.zeros(shape, np.int32)
    sources[5:35, 5:35] = 1  # a flat host, centre (19.5, 19.5), with a knot off it
    sources[15:22, 45:52] = 2  # a compact source: a knot split off as a source
    flux = np.zeros(shape, np.float32)
    flux[5:35, 5:35] = 1.0
    flux[20, 12] += 45.0
    flux[18, 48] = 30.0
    heat = np.zeros(shape, np.float32)
    heat[20, 12] = heat[18, 48] = 0.9
    every = find_clumps(heat, sources, flux, threshold=0.35)
    assert every.host_label.tolist() == [2, 1]
    off_centre = find_clumps(heat, sources, flux, threshold=0.35, min_offset=2.0)
    assert off_centre.host_label.tolist() == [1] and off_centre.x.tolist() == [12.0]
    assert off_centre.flux_fraction[0] == pytest.approx(every.flux_fraction[1])
    nothing_left = find_clumps(heat, sources, flux, threshold=0.35, min_offset=20.0)
    assert nothing_left.y.size == 0


def test_a_peak_the_centre_head_is_surer_of_is_an_objects_centre_not_a_clump():
    shape = (40, 60)
    sources = np.zeros(shape, np.int32)
    sources[5:35, 5:35] = 1  # a clumpy host
    sources[15:22, 45:52] = 2  # a compact galaxy beside it
    flux = np.zeros(shape, np.float32)
    flux[5:35, 5:35] = 1.0
    flux[20, 12] += 45.0
    flux[18, 48] = 30.0
    heat = np.zeros(shape, np.float32)
    heat[20, 12], heat[18, 48] = 0.6, 0.45
    centre = np.zeros(shape, np.float32)
    centre[20, 12], centre[18, 48] = 0.2, 0.4  # the knot is no centre; the galaxy is one
    every = find_clumps(heat, sources, flux, threshold=0.35)
    assert every.host_label.tolist() == [2, 1]
    knots = find_clumps(
        heat, sources, flux, threshold=0.35, centre_heatmap=centre, min_clump_to_centre=1.5
    )
    assert knots.host_label.tolist() == [1] and knots.x.tolist() == [12.0]
    assert knots.flux_fraction[0] == pytest.approx(every.flux_fraction[1])
    with pytest.raises(ValueError, match="centre_heatmap"):
        find_clumps(heat, sources, flux, threshold=0.35, min_clump_to_centre=1.5)


def test_no_clumps():
    clumps = find_clumps(
        np.zeros((8, 8)), np.ones((8, 8), np.int32), np.zeros((8, 8)), threshold=0.5
    )
    assert clumps.y.size == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_higher_threshold_keeps_exactly_the_higher_scoring_clumps(seed):
    """Threshold tuning screens once at the lowest threshold and filters by score."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    heat = ndimage.gaussian_filter(rng.random((64, 64)), 1.5).astype(np.float32)
    heat = (heat - heat.min()) / (heat.max() - heat.min())
    heat[10:12, 10:12] = 0.8  # a flat-topped peak
    sources = np.ones((64, 64), np.int32)
    flux = rng.random((64, 64)).astype(np.float32)
    low = find_clumps(heat, sources, flux, threshold=0.2)
    assert (low.score > 0.75).sum() >= 2 and (low.score < 0.5).sum() >= 2
    for threshold in (0.5, 0.6, 0.75):
        high = find_clumps(heat, sources, flux, threshold=threshold)
        kept = low.score > threshold
        assert high.y.tolist() == low.y[kept].tolist()
        assert high.x.tolist() == low.x[kept].tolist()


def test_flux_fractions_of_overlapping_clumps_lie_in_0_1_and_add_up_to_at_most_1():
    """A small host dominated by two touching clumps, with a bright neighbour beside it:
    the old 5x5 boxes counted the shared pixels twice and the neighbour's light, and
    gave fractions above 1 (as on real SDSS images)."""
    rng = np.random.default_rng(5)
    shape = (30, 30)
    sources = np.zeros(shape, np.int32)
    sources[10:20, 10:20] = 1  # the host
    sources[10:20, 20:24] = 2  # a bright neighbour touching it
    flux = rng.normal(0.0, 0.3, shape)
    flux[10:20, 10:20] += 0.5
    flux[10:20, 20:24] += 200.0
    yy, xx = np.mgrid[:30, :30]
    for y, x in ((14, 17), (15, 19)):  # two knots 2 px apart, near the neighbour
        flux += 60.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)
    heat = np.zeros(shape)
    heat[14, 17] = heat[15, 19] = 0.9
    clumps = find_clumps(heat, sources, flux, threshold=0.5, min_distance=1)
    assert clumps.y.size == 2
    assert np.all(clumps.flux_fraction >= 0) and np.all(clumps.flux_fraction <= 1)
    assert clumps.flux_fraction.sum() <= 1.0
    assert clumps.flux_fraction.min() > 0.1  # each knot carries much of the host's light
