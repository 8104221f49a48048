import numpy as np
import pytest

from survey_seg.sampling import (
    PIXEL_FWHM,
    bin_window_arrays,
    binned_position,
    binning_factor,
    expand_to_native,
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
