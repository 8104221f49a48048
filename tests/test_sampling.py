import numpy as np
import pytest

from survey_seg.sampling import (
    FOOTPRINT_SIGMA,
    PIXEL_FWHM,
    bin_window_arrays,
    binned_position,
    binning_factor,
    expand_to_native,
    isophote_segments,
    native_position,
    sample_to_native,
    sampled_fwhm,
    seen_psf_fwhm,
    upsample_window_arrays,
    upsampled_psf_fwhm,
    upsampled_to_native_position,
    upsampling_factor,
)


@pytest.mark.parametrize(
    ("psf", "factor"),
    [(None, 1), (0.6, 1), (1.8, 1), (2.6, 1), (2.8, 2), (5.4, 3), (9.0, 5), (21.6, 12)],
)
def test_binning_factor_is_the_nearest_integer_ratio_never_below_one(psf, factor):
    assert binning_factor(psf, 1.8) == factor


def test_binning_factor_refuses_a_width_that_is_not_positive():
    with pytest.raises(ValueError, match="widths in pixels"):
        binning_factor(0.0, 1.8)


def test_binned_means_and_the_variance_of_the_mean():
    rng = np.random.default_rng(1)
    image = rng.normal(10.0, 1.0, (6, 9))
    variance = rng.uniform(1.0, 2.0, (6, 9))
    background = np.full((6, 9), 3.0)
    binned, binned_variance, binned_background = bin_window_arrays(image, variance, background, 3)
    assert binned.shape == (2, 3) and binned.dtype == np.float32
    np.testing.assert_allclose(binned[1, 2], image[3:6, 6:9].mean(), rtol=1e-6)
    np.testing.assert_allclose(binned_variance[0, 1], variance[0:3, 3:6].sum() / 81, rtol=1e-6)
    np.testing.assert_allclose(binned_background, 3.0)


def test_a_block_mostly_without_data_is_no_data_and_a_ragged_edge_is_padded():
    image = np.ones((7, 7))
    variance = np.ones((7, 7))
    image[0:2, 0:3] = np.nan  # 6 of 9: no data
    image[3, 3] = np.nan  # 1 of 9: the others are averaged
    binned, binned_variance, _ = bin_window_arrays(image, variance, np.zeros((7, 7)), 3)
    assert binned.shape == (3, 3)
    assert np.isnan(binned[0, 0]) and binned_variance[0, 0] == 0.0
    assert binned[1, 1] == 1.0 and binned_variance[1, 1] == pytest.approx(1 / 8)
    assert np.isnan(binned[2, 2])  # the padded corner: one valid pixel of nine


def test_binning_in_aligned_windows_equals_binning_the_whole():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(24, 36))
    variance = np.ones_like(image)
    whole = bin_window_arrays(image, variance, np.zeros_like(image), 3)[0]
    part = bin_window_arrays(image[6:24, 12:36], variance[6:24, 12:36], image[6:24, 12:36], 3)[0]
    np.testing.assert_array_equal(part, whole[2:8, 4:12])


def test_products_map_back_to_the_native_pixels():
    labels = np.array([[0, 1], [2, 2]], dtype=np.int32)
    native = expand_to_native(labels, 3, (5, 6))
    assert native.shape == (5, 6) and native.dtype == np.int32
    assert (native[:3, 3:] == 1).all() and (native[3:, :] == 2).all()
    stack = expand_to_native(np.stack([labels, 2 * labels]), 2, (4, 4))
    assert stack.shape == (2, 4, 4) and (stack[1, 2:, :] == 4).all()
    # the centre of binned pixel 0 is the centre of its block
    np.testing.assert_allclose(native_position(np.array([0.0, 1.0]), 3), [1.0, 4.0])
    np.testing.assert_allclose(binned_position(np.array([1.0, 4.0, 0.0]), 3), [0.0, 1.0, -1 / 3])
    assert expand_to_native(labels, 1, (2, 2)) is labels


@pytest.mark.parametrize(
    ("psf", "factor"),
    [(None, 1), (1.8, 1), (1.4, 1), (1.2, 2), (0.75, 2), (0.67, 2), (0.51, 2), (0.2, 3)],
)
def test_upsampling_factor_compares_the_widths_the_pixels_record(psf, factor):
    # SDSS i's stars (0.51 pix) are 0.85 pix wide at the pixel centres: twice that is
    # the training stars' 1.92, where 0.51 pix alone would ask for 4
    assert upsampling_factor(psf, 1.8, 0.75) == factor


def test_sampled_width_adds_the_pixel_in_quadrature():
    assert sampled_fwhm(0.51) == pytest.approx(0.85, abs=0.01)
    assert sampled_fwhm(1.8) == pytest.approx(1.924, abs=0.001)
    assert sampled_fwhm(0.0) == pytest.approx(PIXEL_FWHM)


@pytest.mark.parametrize("psf", [0.51, 0.67, 0.75, 1.2])
def test_an_undersampled_psf_is_seen_inside_the_training_range(psf):
    """Upsampled by its factor, SDSS-like PSFs are seen 0.75-1.25 times the canonical
    1.8 pix, the PSF widths the network was trained on (1.2 pix: at the edge)."""
    factor = upsampling_factor(psf, 1.8, 0.75)
    assert 0.75 * 1.8 <= upsampled_psf_fwhm(psf, factor) <= 1.6 * 1.8
    assert upsampled_psf_fwhm(0.51, 2) == pytest.approx(1.56, abs=0.01)
    assert seen_psf_fwhm(psf, 1, factor) == upsampled_psf_fwhm(psf, factor)


def test_seen_psf_of_a_binned_or_native_window():
    assert seen_psf_fwhm(5.4, 3, 1) == pytest.approx(1.8)
    assert seen_psf_fwhm(1.8, 1, 1) == 1.8
    assert seen_psf_fwhm(None, 1, 1) is None


def test_upsampled_window_keeps_values_at_pixel_centres_and_the_snr_per_native_pixel():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(5, 7))
    image[2, 3] = np.nan
    variance = np.full((5, 7), 4.0)
    fine, fine_variance, fine_background = upsample_window_arrays(
        image, variance, np.ones((5, 7)), 3
    )
    assert fine.shape == (15, 21) and fine.dtype == np.float32
    centres = sample_to_native(fine, 3)
    finite = np.isfinite(image)
    np.testing.assert_allclose(centres[finite], image[finite], atol=1e-6)
    assert np.isnan(fine[6:9, 9:12]).all() and (fine_variance[6:9, 9:12] == 0).all()
    # nine fine pixels of variance 9 * 4, taken as independent, carry one native pixel's S/N
    assert fine_variance[0, 0] == pytest.approx(36.0)
    np.testing.assert_allclose(fine_background, 1.0)
    np.testing.assert_allclose(upsampled_to_native_position(np.array([1.0, 4.0]), 3), [0.0, 1.0])


def _star(shape, y, x, peak, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def test_binned_sources_are_cut_to_the_native_isophote():
    """Binned, two stars 30 px apart share one wide footprint (a blend); at the
    isophote of one sigma per native pixel each has its own, as the truth has."""
    shape = (40, 80)
    light = _star(shape, 20, 25, 20.0, 3.0) + _star(shape, 20, 55, 20.0, 3.0)
    sigma = np.ones(shape)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:35, 5:40], sources[5:35, 40:75] = 1, 2  # touching binned segments
    cut, footprints = isophote_segments(sources, light, sigma)
    assert set(np.unique(cut)) == {0, 1, 2}
    assert np.array_equal(cut > 0, (light >= FOOTPRINT_SIGMA) & (sources > 0))
    assert footprints[20, 25] != footprints[20, 55] and footprints.max() == 2
    # 15 px apart their light joins above the isophote: one footprint, a blend
    close = _star(shape, 20, 33, 20.0, 3.0) + _star(shape, 20, 48, 20.0, 3.0)
    _, joined = isophote_segments(sources, close, sigma)
    assert joined[20, 33] == joined[20, 48] > 0


def test_a_source_under_the_isophote_keeps_its_core():
    """Under a wide PSF a significant object may be under one sigma in every pixel:
    it keeps the pixels of at least half its peak light, it is not lost."""
    shape = (30, 30)
    light = _star(shape, 15, 15, 0.6, 4.0)
    sources = np.zeros(shape, dtype=np.int32)
    sources[3:27, 3:27] = 1
    cut, footprints = isophote_segments(sources, light, np.ones(shape))
    assert np.array_equal(cut == 1, (light >= 0.3) & (sources == 1))
    assert footprints.max() == 1
    dark = np.full(shape, -0.1)  # no light at all: it keeps every pixel
    assert np.array_equal(isophote_segments(sources, dark, np.ones(shape))[0], sources)
    # its core is found on the light given for it: noise on the lightly smoothed
    # light does not move it
    noisy = light + np.random.default_rng(0).normal(0.0, 0.3, shape)
    cut, _ = isophote_segments(sources, np.minimum(noisy, 0.9), np.ones(shape), core_light=light)
    assert np.array_equal(cut == 1, (light >= 0.3) & (sources == 1))
    # a pixel of unknown light (a cosmic ray) leaves its source, but a source of no
    # known light at all keeps its pixels
    unknown = light.copy()
    unknown[15, 15] = np.nan
    cut, _ = isophote_segments(sources, unknown, np.ones(shape))
    expected = (light >= 0.5 * np.nanmax(unknown)) & (sources == 1)
    expected[15, 15] = False
    assert np.array_equal(cut == 1, expected)
    nothing = np.full(shape, np.nan)
    assert np.array_equal(isophote_segments(sources, nothing, np.ones(shape))[0], sources)


def test_isophote_segments_wants_arrays_of_one_shape():
    with pytest.raises(ValueError, match="one window's shape"):
        isophote_segments(np.zeros((4, 4), int), np.zeros((4, 5)), np.ones((4, 4)))


def test_the_isophote_is_the_truth_footprints_level():
    from survey_seg.simulate import FOOTPRINT_SKY_SIGMA

    assert FOOTPRINT_SIGMA == FOOTPRINT_SKY_SIGMA
