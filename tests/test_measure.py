import numpy as np
import pytest
from scipy import ndimage

from survey_seg.measure import (
    label_maximum,
    label_maximum_position,
    light_centres,
    measure_segments,
    relabel_in_raster_order,
    segment_snr,
)


def _gaussian(shape, x0, y0, sigma_x, sigma_y, angle_deg, flux):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    t = np.radians(angle_deg)
    u = (xx - x0) * np.cos(t) + (yy - y0) * np.sin(t)
    v = -(xx - x0) * np.sin(t) + (yy - y0) * np.cos(t)
    image = np.exp(-0.5 * (u**2 / sigma_x**2 + v**2 / sigma_y**2))
    return flux * image / image.sum()


def test_gaussian_moments_match_the_truth():
    image = _gaussian((64, 64), 30.3, 28.7, 4.0, 2.0, 30.0, 1000.0)
    labels = (image > 1e-6).astype(np.int32)
    m = measure_segments(
        labels, image, np.ones_like(image), image, np.zeros(image.shape, np.uint32)
    )
    assert m.x_peak[0] + m.dx[0] == pytest.approx(30.3, abs=1e-3)
    assert m.y_peak[0] + m.dy[0] == pytest.approx(28.7, abs=1e-3)
    assert m.flux[0] == pytest.approx(1000.0, rel=1e-4)
    assert m.flux_err[0] == pytest.approx(np.sqrt(labels.sum()))
    assert m.a[0] == pytest.approx(4.0, rel=1e-2)
    assert m.b[0] == pytest.approx(2.0, rel=1e-2)
    assert m.theta[0] == pytest.approx(30.0, abs=0.5)
    assert m.area[0] == labels.sum()


def test_translation_gives_bit_identical_measurements():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(80, 80)) + _gaussian((80, 80), 40, 41, 3, 2, 10, 500)
    labels = np.zeros(image.shape, np.int32)
    labels[30:52, 28:50] = 1
    labels[5:9, 5:12] = 2
    mask = np.zeros(image.shape, np.uint32)
    mask[6, 6] = 8
    a = measure_segments(labels, image, np.abs(image), image, mask)
    shifted = measure_segments(
        np.pad(labels, ((7, 0), (13, 0))),
        np.pad(image, ((7, 0), (13, 0))),
        np.pad(np.abs(image), ((7, 0), (13, 0))),
        np.pad(image, ((7, 0), (13, 0))),
        np.pad(mask, ((7, 0), (13, 0))),
    )
    for name in ("dx", "dy", "flux", "flux_err", "area", "a", "b", "theta", "flags"):
        np.testing.assert_array_equal(getattr(a, name), getattr(shifted, name), err_msg=name)
    np.testing.assert_array_equal(a.x_peak + 13, shifted.x_peak)
    np.testing.assert_array_equal(a.flags, [0, 8])


def test_no_segments_gives_empty_measurements():
    m = measure_segments(
        np.zeros((5, 5), np.int32), np.zeros((5, 5)), np.ones((5, 5)), np.zeros((5, 5)),
        np.zeros((5, 5), np.uint32),
    )  # fmt: skip
    assert m.labels.size == 0 and m.flux.size == 0


def test_negative_segment_falls_back_to_unweighted_centroid():
    image = -np.ones((10, 10))
    labels = np.zeros((10, 10), np.int32)
    labels[2:5, 3:8] = 1
    m = measure_segments(labels, image, np.ones_like(image), image, np.zeros((10, 10), np.uint32))
    assert m.x_peak[0] + m.dx[0] == pytest.approx(5.0)
    assert m.y_peak[0] + m.dy[0] == pytest.approx(3.0)


def test_light_centres_are_the_catalog_centres_and_mark_absent_labels():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(60, 60)) + _gaussian((60, 60), 20.4, 30.2, 3, 2, 0, 400)
    image[40:50, 40:50] = -1.0  # dark segment: its pixels' centre
    labels = np.zeros(image.shape, np.int32)
    labels[10:50, 10:30] = 1
    labels[40:50, 40:50] = 3
    y, x = light_centres(labels, image, image)
    m = measure_segments(
        np.where(labels == 3, 2, labels), image, np.ones_like(image), image,
        np.zeros(image.shape, np.uint32),
    )  # fmt: skip
    assert (y[0], x[0]) == (m.y_peak[0] + m.dy[0], m.x_peak[0] + m.dx[0])
    assert (y[2], x[2]) == (44.5, 44.5)
    assert np.isnan(y[1]) and np.isnan(x[1])


@pytest.mark.parametrize("seed", range(5))
def test_label_maxima_agree_with_scipy(seed):
    rng = np.random.default_rng(seed)
    labels, n = ndimage.label(rng.random((40, 50)) > 0.6)
    values = rng.normal(size=labels.shape)
    index = np.arange(1, n + 1)
    assert np.array_equal(
        label_maximum(values, labels, index), ndimage.maximum(values, labels, index)
    )
    y, x = label_maximum_position(values, labels, index)
    expected = np.array(ndimage.maximum_position(values, labels, index))
    assert np.array_equal(np.stack([y, x], axis=1), expected)


def test_label_maximum_position_breaks_ties_in_raster_order_and_marks_absent_labels():
    labels = np.array([[1, 1, 0], [1, 1, 3]])
    values = np.array([[0.0, 2.0, 9.0], [2.0, 1.0, 5.0]])
    y, x = label_maximum_position(values, labels, np.array([1, 2, 3]))
    assert y.tolist() == [0, -1, 1] and x.tolist() == [1, -1, 2]


def test_relabel_in_raster_order_numbers_by_first_pixel():
    labels = np.array([[0, 7, 7], [4, 0, 2], [4, 9, 2]])
    assert relabel_in_raster_order(labels).tolist() == [[0, 1, 1], [2, 0, 3], [2, 4, 3]]


def test_segment_snr_is_the_catalog_flux_over_its_error():
    rng = np.random.default_rng(6)
    image = rng.normal(0.0, 1.0, (64, 64))
    image[10:14, 10:14] += 5.0
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[8:16, 8:16] = 1
    labels[40:44, 30:50] = 2
    labels[60:, 60:] = 3
    variance = np.full((64, 64), 2.0)
    variance[60:, 60:] = 0.0  # no variance: no S/N
    image[41, 31] = np.nan  # non-finite pixels count as zero, as measured
    m = measure_segments(labels, image, variance, image, np.zeros((64, 64), np.uint32))
    snr = segment_snr(labels, image, variance)
    np.testing.assert_allclose(snr[:2], (m.flux / m.flux_err)[:2])
    assert snr[0] > 5 and np.isnan(snr[2])
