"""Tests of survey_seg.psf: star selection, pixel-integrated Moffat fits, regions."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from survey_seg.psf import (
    MIN_STARS,
    Cutout,
    PSFEstimate,
    estimate_psf,
    estimate_psf_cutouts,
    region_boxes,
    region_grid,
)

REAL = Path(__file__).parents[2] / "shared/data/real"


def _moffat_stamp(fwhm, beta, dy, dx, half, e1=0.0, e2=0.0):
    """Unit-flux elliptical Moffat integrated over the pixels (dense midpoint rule)."""
    n_sub = 12 if fwhm < 2 else 6 if fwhm < 4 else 3
    points = (np.arange((2 * half + 1) * n_sub) + 0.5) / n_sub - 0.5 - half
    yy, xx = np.meshgrid(points - dy, points - dx, indexing="ij")
    root = math.sqrt(1 - e1 * e1 - e2 * e2)
    q = ((1 - e1) * xx * xx - 2 * e2 * xx * yy + (1 + e1) * yy * yy) / root
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    profile = (1 + q / alpha**2) ** -beta * (beta - 1) / (math.pi * alpha**2)
    side = 2 * half + 1
    return profile.reshape(side, n_sub, side, n_sub).mean(axis=(1, 3))


def _render(
    shape=(512, 512),
    fwhm=3.0,
    beta=3.0,
    *,
    n_stars=80,
    n_galaxies=0,
    n_pairs=0,
    seed=0,
    flux=(3e2, 3e4),
    e1=0.0,
    e2=0.0,
):
    """Stars, exponential galaxies (convolved with the PSF) and close pairs on noise of 1."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    image = np.zeros(shape)
    half = math.ceil(6 * fwhm) + 2
    fluxes = np.exp(rng.uniform(*np.log(flux), n_stars + 2 * n_pairs))
    stars = [(rng.uniform(0, ny), rng.uniform(0, nx)) for _ in range(n_stars)]
    for _ in range(n_pairs):  # 1 to 2.5 FWHM apart
        y, x = rng.uniform(0, ny), rng.uniform(0, nx)
        r, t = rng.uniform(1.0, 2.5) * fwhm, rng.uniform(0, 2 * np.pi)
        stars += [(y, x), (y + r * math.sin(t), x + r * math.cos(t))]
    for (y, x), f in zip(stars, fluxes, strict=True):
        iy, ix = round(y), round(x)
        stamp = f * _moffat_stamp(fwhm, beta, y - iy, x - ix, half, e1, e2)
        y0, x0 = iy - half, ix - half
        ys = slice(max(0, y0), min(ny, iy + half + 1))
        xs = slice(max(0, x0), min(nx, ix + half + 1))
        image[ys, xs] += stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    if n_galaxies:
        galaxies = np.zeros(shape)
        yy, xx = np.mgrid[0:ny, 0:nx]
        for _ in range(n_galaxies):
            y, x = rng.uniform(0, ny), rng.uniform(0, nx)
            radius, q, t = rng.uniform(1.0, 6.0), rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
            box = np.s_[max(0, int(y) - 40) : int(y) + 40, max(0, int(x) - 40) : int(x) + 40]
            u = (xx[box] - x) * math.cos(t) + (yy[box] - y) * math.sin(t)
            v = -(xx[box] - x) * math.sin(t) + (yy[box] - y) * math.cos(t)
            profile = np.exp(-1.678 * np.hypot(u, v / q) / radius)
            galaxies[box] += math.exp(rng.uniform(*np.log(flux))) * profile / profile.sum()
        kernel = _moffat_stamp(fwhm, beta, 0.0, 0.0, half, e1, e2)
        image += signal.fftconvolve(galaxies, kernel, mode="same")
    return image + 100.0 + rng.normal(0.0, 1.0, shape)


def _crowded(fwhm, shape):
    """As many objects per PSF area as 120 stars, 150 galaxies and 40 pairs in 512² at 3 pix."""
    scale = max(1.0, fwhm / 3.0) ** 2 * (512 * 512) / (shape[0] * shape[1])
    return {
        "n_stars": int(120 / scale),
        "n_galaxies": int(150 / scale),
        "n_pairs": int(40 / scale),
    }


@pytest.mark.parametrize("fwhm", [1.5, 3.0, 8.0, 12.0])
@pytest.mark.parametrize("crowded", [False, True], ids=["sparse", "crowded"])
def test_recovers_the_fwhm_and_beta_of_moffat_psfs(fwhm, crowded):
    shape = (1024, 1024) if fwhm > 4 else (512, 512)
    scale = max(1.0, fwhm / 3.0) ** 2 * (512 * 512) / (shape[0] * shape[1])
    objects = _crowded(fwhm, shape) if crowded else {"n_stars": int(80 / scale)}
    image = _render(shape, fwhm, beta=2.5, seed=11, **objects)
    estimate = estimate_psf(image)
    assert estimate.usable and estimate.n_stars >= 10
    assert estimate.fwhm_pix == pytest.approx(fwhm, rel=0.05)
    assert estimate.beta == pytest.approx(2.5, rel=0.15)
    assert estimate.ellipticity < 0.05
    assert estimate.scatter_pix < 0.1 * fwhm


def test_undersampled_psf_is_fitted_integrated_over_the_pixels():
    # at 1.2 pix FWHM a Moffat fitted at the pixel centres comes out 21 % too wide
    # (1.45 pix); integrated over the pixels the fit gives 1.199-1.200
    image = _render((512, 512), 1.2, beta=3.0, seed=5, **_crowded(1.2, (512, 512)))
    estimate = estimate_psf(image)
    assert estimate.n_stars >= 10
    assert estimate.fwhm_pix == pytest.approx(1.2, rel=0.02)
    assert estimate.beta == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_psf_narrower_than_a_pixel_is_measured_from_its_width_alone(seed):
    # at 0.5 pix FWHM and a peak S/N of 60-180 the free Moffat fits of most stars run
    # away (beta to 1, the width to nothing): without the width-only refit 3 of these
    # 4 images gave no estimate; their beta and shape say nothing and are left out
    image = _render((256, 256), 0.5, beta=2.5, n_stars=30, seed=seed, flux=(100, 300))
    estimate = estimate_psf(image)
    assert estimate.usable and estimate.n_stars >= 6
    assert estimate.fwhm_pix == pytest.approx(0.5, rel=0.06)


def test_too_few_stars_give_an_unusable_estimate():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, (256, 256))
    empty = estimate_psf(noise)
    assert isinstance(empty, PSFEstimate)
    assert not empty.usable and empty.fwhm_pix is None and empty.n_stars == 0
    assert empty.regions == ()
    three = _render((256, 256), 2.0, n_stars=3, seed=2, flux=(5e3, 2e4))
    few = estimate_psf(three)
    assert not few.usable and few.n_stars <= 3 and few.fwhm_pix is None
    record = few.to_record()
    assert record["fwhm_pix"] is None and record["min_stars"] == MIN_STARS
    # the same stars make a usable estimate when fewer are asked for
    assert estimate_psf(three, min_stars=2).fwhm_pix == pytest.approx(2.0, rel=0.05)


def test_cosmic_rays_saturated_stars_and_missing_data_are_not_taken_for_stars():
    rng = np.random.default_rng(8)
    image = _render((512, 512), 2.5, seed=8, n_stars=60)
    # cosmic rays brighter than every star: single pixels and two-pixel tracks
    for _ in range(150):
        y, x = rng.integers(5, 507, 2)
        image[y, x] += rng.uniform(500, 5000)
        if rng.random() < 0.5:
            image[y, x + 1] += rng.uniform(500, 5000)
    # bright stars clipped at 2000: flat tops, wider than the PSF
    bright = _render((512, 512), 2.5, seed=9, n_stars=25, flux=(1e5, 1e6)) - 100.0
    bright -= np.random.default_rng(9).normal(0.0, 1.0, bright.shape)  # its noise, again
    image = np.minimum(image + bright, 2000.0)
    image[200:260, :] = np.nan  # a band without data
    for saturation in (2000.0, None):  # the level, or found as the clipped maximum
        estimate = estimate_psf(image, saturation=saturation)
        assert estimate.fwhm_pix == pytest.approx(2.5, rel=0.05), saturation
        assert estimate.beta == pytest.approx(3.0, rel=0.15)


def test_variance_and_bad_pixels_are_used():
    image = _render((384, 384), 2.0, seed=4, n_stars=60)
    variance = np.ones_like(image)
    bad = np.zeros(image.shape, bool)
    bad[:, :192] = True  # half flagged: its stars are left out
    variance[:192, :] = 0.0  # a quarter more without data (variance 0)
    estimate = estimate_psf(image, variance, bad=bad, min_stars=3)
    assert estimate.fwhm_pix == pytest.approx(2.0, rel=0.05)
    everything = estimate_psf(image, variance=np.ones_like(image))
    assert estimate.n_stars < everything.n_stars
    with pytest.raises(ValueError, match="shape"):
        estimate_psf(image, variance[:10])


def test_psf_varying_across_the_mosaic_is_measured_per_region():
    left = _render((768, 512), 2.0, seed=3, n_stars=120)
    right = _render((768, 512), 2.6, seed=4, n_stars=120)
    estimate = estimate_psf(np.concatenate([left, right], axis=1), grid=(1, 2))
    first, second = estimate.regions
    assert first.box == (0, 768, 0, 512) and second.box == (0, 768, 512, 1024)
    assert first.measured and second.measured
    assert first.fwhm_pix == pytest.approx(2.0, rel=0.03)
    assert second.fwhm_pix == pytest.approx(2.6, rel=0.03)
    assert first.n_stars + second.n_stars == estimate.n_stars
    assert 2.0 < estimate.fwhm_pix < 2.6  # between the regions
    # a region with too few stars takes the mosaic's value
    sparse = np.concatenate([left, _render((768, 512), 2.6, seed=4, n_stars=2)], axis=1)
    lonely = estimate_psf(sparse, grid=(1, 2)).regions[1]
    assert not lonely.measured and lonely.fwhm_pix == pytest.approx(2.0, rel=0.03)


def test_elliptical_psf_gives_its_ellipticity_and_angle():
    # e = 0.2 at 2 theta = 90 deg: major axis at 45 deg, axis ratio sqrt(0.8 / 1.2)
    image = _render((512, 512), 3.0, seed=6, n_stars=80, e1=0.0, e2=0.2)
    estimate = estimate_psf(image)
    assert estimate.fwhm_pix == pytest.approx(3.0, rel=0.03)
    assert estimate.ellipticity == pytest.approx(1 - math.sqrt(0.8 / 1.2), abs=0.02)
    assert estimate.position_angle_deg == pytest.approx(45.0, abs=3.0)


def test_cutouts_are_placed_at_their_mosaic_origin():
    image = _render((1024, 1024), 2.0, seed=12, n_stars=240)
    whole = estimate_psf(image, grid=(2, 2))
    cutouts = [
        Cutout(image[y : y + 400, x : x + 400], (y, x)) for y in (56, 568) for x in (56, 568)
    ]
    parts = estimate_psf_cutouts(cutouts, image.shape, grid=(2, 2))
    assert [r.measured for r in parts.regions] == [True] * 4
    assert parts.fwhm_pix == pytest.approx(whole.fwhm_pix, rel=0.01)
    assert [r.n_stars for r in parts.regions] == pytest.approx(
        [r.n_stars for r in whole.regions], abs=8
    )


def test_region_grid_and_boxes():
    assert region_grid((496, 682)) == (1, 1)
    assert region_grid((1040, 1392)) == (2, 2)
    assert region_grid((20000, 700)) == (3, 1)
    boxes = region_boxes((100, 90), (2, 3))
    assert boxes[0] == (0, 0, (0, 50, 0, 30)) and boxes[-1] == (1, 2, (50, 100, 60, 90))
    with pytest.raises(ValueError, match="grid"):
        region_boxes((100, 90), (0, 1))
    with pytest.raises(ValueError, match="2-D"):
        estimate_psf(np.zeros((3, 4, 5)))


def test_a_2048_mosaic_is_measured_in_about_a_second():
    image = _render((2048, 2048), 2.0, seed=13, n_stars=400).astype(np.float32)
    start = time.process_time()
    estimate = estimate_psf(image)
    seconds = time.process_time() - start
    assert len(estimate.regions) == 9 and all(r.measured for r in estimate.regions)
    assert estimate.fwhm_pix == pytest.approx(2.0, rel=0.02)
    assert seconds < 2.0  # about 0.5 s of CPU on one core


def _real_image_psf(name: str) -> PSFEstimate:
    """The PSF estimate of a real image of ``shared/data/real`` (the test skips without it)."""
    from astropy.io import fits

    path = REAL / name
    if not path.exists():
        pytest.skip(f"no real image {name}")
    return estimate_psf(fits.getdata(path).astype(np.float32))


def test_sdss_r_image_gives_an_undersampled_psf():
    estimate = _real_image_psf("reprojected_sdss_r.fits")
    # the stars' cores are 1-2 pixels: about 0.95 pix FWHM fitted at the pixel centres
    # (as photutils' fit_fwhm finds), 0.67 pix integrated over the pixels
    assert estimate.usable and estimate.n_stars >= 15
    assert 0.45 < estimate.fwhm_pix < 1.2
    assert estimate.scatter_pix < 0.25 * estimate.fwhm_pix


def test_crowded_2mass_image_gives_a_psf_narrower_than_a_pixel():
    estimate = _real_image_psf("gc_2mass_k.fits")
    # 2MASS K seeing of 2.5-3 arcsec on 5 arcsec pixels; the free fits of 41 of 50
    # stars ran away in this crowded field, and the estimate was not usable
    assert estimate.usable and estimate.n_stars >= 10
    assert 0.4 < estimate.fwhm_pix < 0.65
    assert estimate.scatter_pix < 0.25 * estimate.fwhm_pix
    # fewer than 5 stars measure a beta or a shape (one free fit ran to beta 1.1)
    assert estimate.beta is None and estimate.ellipticity is None
