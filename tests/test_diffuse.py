import numpy as np
import pytest
from scipy import ndimage

from survey_seg.diffuse import DiffuseConfig, diffuse_sources
from survey_seg.noise import gaussian_kernel_norm

SHAPE = (160, 160)
FWHM = 1.8


def _exponential(total_snr_per_pixel: float, scale: float, y=80.0, x=80.0) -> np.ndarray:
    """Per-pixel S/N of an exponential disk whose central pixel has this S/N."""
    yy, xx = np.indices(SHAPE)
    return total_snr_per_pixel * np.exp(-np.hypot(yy - y, xx - x) / scale)


def _star(peak_snr: float, y: float, x: float) -> np.ndarray:
    yy, xx = np.indices(SHAPE)
    sigma = FWHM / 2.355
    return peak_snr * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))


def _significance(snr: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(snr, 0.7, truncate=4.0) / gaussian_kernel_norm(0.7)


def _disk(center, radius) -> np.ndarray:
    yy, xx = np.indices(SHAPE)
    return np.hypot(yy - center[0], xx - center[1]) <= radius


def _run(snr, sources, footprints=None, excluded=None):
    footprints = sources.copy() if footprints is None else footprints
    excluded = np.zeros(SHAPE, dtype=bool) if excluded is None else excluded
    return diffuse_sources(
        sources,
        footprints,
        snr,
        _significance(snr),
        excluded,
        psf_fwhm_pix=FWHM,
        significance_sigma=0.7,
        config=DiffuseConfig(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_faint_large_galaxy_below_the_noise_in_every_pixel_is_one_source(seed):
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    snr = noise + _exponential(0.8, 12.0)
    sources, footprints = _run(snr, np.zeros(SHAPE, dtype=np.int32))
    assert sources.max() == 1
    assert footprints.max() == 1
    assert sources[80, 80] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_its_noise_bumps_join_it_and_a_bright_star_on_it_stays_apart(seed):
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    star = (70.0, 95.0)
    snr = noise + _exponential(0.8, 12.0) + _star(40.0, *star)
    bumps = [(80, 80), (85, 75), (76, 74)]
    sources = np.zeros(SHAPE, dtype=np.int32)
    for label, centre in enumerate([*bumps, star], start=1):
        sources[_disk(centre, 2.5)] = label
    result, _ = _run(snr, sources)
    assert result.max() == 2
    assert len({int(result[b]) for b in bumps}) == 1
    assert result[int(star[0]), int(star[1])] != result[bumps[0]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pure_noise_gives_no_diffuse_source(seed):
    snr = np.random.default_rng(seed).normal(size=SHAPE)
    sources = np.zeros(SHAPE, dtype=np.int32)
    result, footprints = _run(snr, sources)
    assert result.max() == 0
    assert footprints.max() == 0


def test_the_wings_of_a_bright_star_beyond_its_footprint_are_its_own():
    noise = np.random.default_rng(4).normal(size=SHAPE)
    yy, xx = np.indices(SHAPE)
    moffat = 3000.0 * (1 + (np.hypot(yy - 80, xx - 80) / 2.0) ** 2) ** -2.0  # wide wings
    snr = noise + moffat
    sources = (moffat > 1.0).astype(np.int32)  # the footprint ends at about the noise
    result, _ = _run(snr, sources)
    np.testing.assert_array_equal(result, sources)


def test_a_piece_on_the_outskirts_of_a_detected_galaxy_joins_it():
    noise = np.random.default_rng(5).normal(size=SHAPE)
    snr = noise + _exponential(6.0, 10.0)
    sources = _disk((80, 80), 12).astype(np.int32)  # the body, cut at a bright isophote
    sources[_disk((80, 104), 2.5)] = 2  # a noise bump in the outskirts
    result, footprints = _run(snr, sources, footprints=np.where(sources > 0, sources, 0))
    assert result.max() == 1
    assert footprints.max() == 1


def test_light_on_excluded_pixels_is_no_source():
    noise = np.random.default_rng(6).normal(size=SHAPE)
    trail = np.zeros(SHAPE, dtype=bool)
    trail[76:84, :] = True
    snr = noise + np.where(trail, 1.5, 0.0)
    sources = np.zeros(SHAPE, dtype=np.int32)
    assert _run(snr, sources)[0].max() > 0  # seen as diffuse light when not excluded
    assert _run(snr, sources, excluded=trail)[0].max() == 0


def test_psf_must_be_positive():
    with pytest.raises(ValueError, match="psf_fwhm_pix"):
        diffuse_sources(
            np.zeros(SHAPE, np.int32),
            np.zeros(SHAPE, np.int32),
            np.zeros(SHAPE),
            np.zeros(SHAPE),
            np.zeros(SHAPE, bool),
            psf_fwhm_pix=0.0,
            significance_sigma=0.7,
        )
