import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from survey_seg.masks import MaskBit, has_bit
from survey_seg.simulate import (
    CLUMP_COLUMNS,
    SIMULATOR_VERSION,
    SOURCE_COLUMNS,
    SimulatedMosaic,
    SimulationConfig,
    _optics,
    _render_source,
    _sersic_stamp,
    _Source,
    mosaic_wcs,
    noise_kernel,
    simulate_mosaic,
    write_simulation,
)

NO_ARTEFACTS = {
    "n_cosmic_rays": 0.0,
    "n_satellite_trails": 0.0,
    "n_bad_columns": 0.0,
    "n_hot_pixels": 0.0,
    "n_chip_gaps": 0.0,
    "n_holes": 0.0,
    "n_ghosts": 0.0,
}

# Per 2048^2; on 512^2 (1/16 of the area) every kind appears at least once.
MANY_ARTEFACTS = {
    "size": 512,
    "seed": 5,
    "star_density": 250.0,
    "n_cosmic_rays": 1600.0,
    "n_satellite_trails": 16.0,
    "n_bad_columns": 48.0,
    "n_hot_pixels": 800.0,
    "n_chip_gaps": 16.0,
    "n_holes": 32.0,
    "n_ghosts": 32.0,
}


@pytest.fixture(scope="module")
def small() -> SimulatedMosaic:
    return simulate_mosaic(SimulationConfig(size=256, seed=3))


@pytest.fixture(scope="module")
def artefacts() -> SimulatedMosaic:
    return simulate_mosaic(SimulationConfig(**MANY_ARTEFACTS))


@pytest.fixture(scope="module")
def clumpy() -> SimulatedMosaic:
    return simulate_mosaic(SimulationConfig(size=512, seed=2, clumpy_fraction=1.0))


def centroid(stamp: np.ndarray, y0: int, x0: int) -> tuple[float, float]:
    yy, xx = np.indices(stamp.shape)
    total = stamp.sum()
    return float((stamp * (yy + y0)).sum() / total), float((stamp * (xx + x0)).sum() / total)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_mosaic(small):
    again = simulate_mosaic(SimulationConfig(size=256, seed=3))
    np.testing.assert_array_equal(again.image, small.image)
    np.testing.assert_array_equal(again.variance, small.variance)
    np.testing.assert_array_equal(again.truth_mask, small.truth_mask)
    pd.testing.assert_frame_equal(again.truth_sources, small.truth_sources)
    pd.testing.assert_frame_equal(again.truth_clumps, small.truth_clumps)


def test_different_seed_gives_different_mosaic(small):
    other = simulate_mosaic(SimulationConfig(size=256, seed=4))
    assert not np.array_equal(other.image, small.image, equal_nan=True)
    assert not other.truth_sources[["x", "y"]].equals(small.truth_sources[["x", "y"]])


def test_output_types_and_header(small):
    ny, nx = small.image.shape
    assert (ny, nx) == (256, 256)
    assert small.image.dtype == np.float32
    assert small.variance.dtype == np.float32
    assert small.truth_mask.dtype == np.uint32
    assert list(small.truth_sources.columns) == list(SOURCE_COLUMNS)
    assert list(small.truth_clumps.columns) == list(CLUMP_COLUMNS)
    ts = small.truth_sources
    assert ts["id"].dtype == np.int64
    assert ts["blend_group"].dtype == np.int64
    assert ts["saturated"].dtype == bool
    np.testing.assert_array_equal(ts["id"], np.arange(1, len(ts) + 1))
    assert set(ts["kind"]) <= {"galaxy", "star"}
    stars = ts[ts["kind"] == "star"]
    assert stars[["sersic_n", "r_half_pix", "axis_ratio", "position_angle_deg"]].isna().all().all()
    header = small.header
    assert header["SATURATE"] == 200.0
    assert header["MAGZERO"] == 25.0
    assert header["PIXSCALE"] == 0.1
    assert header["SIMVERS"] == SIMULATOR_VERSION
    assert header["SIMSEED"] == 3
    assert header["RADESYS"] == "ICRS"
    assert {"GAIN", "BUNIT", "CTYPE1", "CRVAL1"} <= set(header)
    np.testing.assert_allclose(ts["mag"], 25.0 - 2.5 * np.log10(ts["flux"]))


def test_rectangular_shape():
    sim = simulate_mosaic(SimulationConfig(size=128, ny=96, nx=160, seed=1))
    assert sim.image.shape == (96, 160)
    assert sim.wcs.pixel_shape == (160, 96)


# ------------------------------------------------------------------ rendering accuracy


GALAXIES = [
    (0.5, 1.0, 1.0, 0.0),
    (1.0, 2.5, 0.6, 30.0),
    (2.5, 4.0, 0.4, 100.0),
    (4.0, 1.2, 0.8, 150.0),
    (4.0, 12.0, 0.5, 60.0),
]


@pytest.mark.parametrize(("n", "r_half", "q", "pa"), GALAXIES)
def test_galaxy_stamp_conserves_flux_and_centroid(n, r_half, q, pa):
    optics = _optics(SimulationConfig())
    source = _Source("galaxy", 40.3, 71.8, 123.4, sersic_n=n, r_half=r_half, q=q, pa_deg=pa)
    stamp, y0, x0 = _render_source(source, optics, 0.009)
    assert abs(stamp.sum() / 123.4 - 1.0) < 0.01
    assert stamp.min() >= 0.0
    cy, cx = centroid(stamp, y0, x0)
    assert abs(cy - 71.8) < 0.1
    assert abs(cx - 40.3) < 0.1
    # the peak pixel is the one holding the centre
    peak = np.unravel_index(np.argmax(stamp), stamp.shape)
    assert (peak[0] + y0, peak[1] + x0) == (72, 40)


@pytest.mark.parametrize("flux", [0.5, 50.0, 1e4])
def test_star_stamp_conserves_flux_and_centroid(flux):
    optics = _optics(SimulationConfig())
    source = _Source("star", 10.45, -3.2, flux)
    stamp, y0, x0 = _render_source(source, optics, 0.009)
    assert abs(stamp.sum() / flux - 1.0) < 0.01
    cy, cx = centroid(stamp, y0, x0)
    assert abs(cy + 3.2) < 0.05
    assert abs(cx - 10.45) < 0.05
    # the truncated wing is below a tenth of the sky noise
    edge = np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])
    assert edge.max() < 0.1 * 0.009


def test_gaussian_psf_star():
    config = SimulationConfig(psf_model="gaussian", psf_fwhm_pix=2.5)
    stamp, _, x0 = _render_source(_Source("star", 5.0, 5.0, 10.0), _optics(config), 0.009)
    assert abs(stamp.sum() - 10.0) < 1e-9
    # second moment of the pixel-integrated Gaussian: sigma**2 + 1/12
    marginal = stamp.sum(axis=0) / 10.0
    x = np.arange(stamp.shape[1]) + x0
    sigma = 2.5 / (2 * math.sqrt(2 * math.log(2)))
    assert (marginal * (x - 5.0) ** 2).sum() == pytest.approx(sigma**2 + 1 / 12, rel=0.01)


def _half_maximum_width(stamp: np.ndarray, axis_angle_deg: float) -> float:
    """Width at half maximum of a noiseless stamp along a direction (bilinear cut)."""
    from scipy import ndimage

    cy, cx = np.unravel_index(np.argmax(stamp), stamp.shape)
    t = np.arange(-15.0, 15.0, 0.01)
    angle = math.radians(axis_angle_deg)
    cut = ndimage.map_coordinates(
        stamp, [cy + t * math.sin(angle), cx + t * math.cos(angle)], order=3
    )
    above = t[cut >= 0.5 * cut.max()]
    return float(above[-1] - above[0])


@pytest.mark.parametrize("model", ["kolmogorov", "moffat"])
def test_galsim_psfs_have_the_asked_width_and_ellipticity(model):
    """A Kolmogorov or elliptical PSF, drawn by GalSim, has the FWHM and axis ratio asked."""
    round_star = SimulationConfig(psf_model=model, psf_fwhm_pix=6.0, psf_beta=2.5)
    stamp, _, _ = _render_source(_Source("star", 0.0, 0.0, 10.0), _optics(round_star), 0.009)
    assert stamp.sum() == pytest.approx(10.0)
    # sampled on pixels (a pixel's width widens it a little)
    assert _half_maximum_width(stamp, 0.0) == pytest.approx(6.0, rel=0.05)
    elliptical = replace(round_star, psf_ellipticity=0.2, psf_angle_deg=30.0)
    stamp, _, _ = _render_source(_Source("star", 0.0, 0.0, 10.0), _optics(elliptical), 0.009)
    major, minor = _half_maximum_width(stamp, 30.0), _half_maximum_width(stamp, 120.0)
    # e = (a^2 - b^2) / (a^2 + b^2) = 0.2 gives b / a = sqrt(2 / 3)
    assert minor / major == pytest.approx(math.sqrt(2 / 3), rel=0.04)
    edge = np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]])
    assert edge.max() < 0.1 * 0.009  # the stamp reaches the wing's 0.1 sigma


def test_a_kolmogorov_mosaic_is_measured_at_its_psf_and_says_so():
    from survey_seg.psf import estimate_psf

    config = SimulationConfig(size=512, seed=4, psf_model="kolmogorov", psf_fwhm_pix=3.0,
                              psf_ellipticity=0.1, star_density=200.0)  # fmt: skip
    sim = simulate_mosaic(config)
    assert sim.header["PSFMODEL"] == "kolmogorov" and sim.header["PSFELL"] == 0.1
    assert "PSFMODEL" not in simulate_mosaic(SimulationConfig(size=128)).header
    estimate = estimate_psf(sim.image, sim.variance, saturation=config.saturation)
    assert estimate.usable and estimate.fwhm_pix == pytest.approx(3.0, rel=0.15)


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0])
def test_sersic_half_light_radius(n):
    # Unconvolved, circular: half the light (of a stamp of 8 r_half) lies within r_half.
    r_half = 6.0
    stamp = _sersic_stamp(n, r_half, 1.0, 0.0, 0.0, 0.0, 48, 8.0)
    yy, xx = np.indices(stamp.shape) - 48
    inside = stamp[np.hypot(yy, xx) <= r_half].sum()
    assert abs(inside - 0.5) < 0.03


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(-0.5, 0.5),
    y=st.floats(-0.5, 0.5),
    n=st.floats(0.5, 4.0),
    r_half=st.floats(0.8, 6.0),
    q=st.floats(0.3, 1.0),
    pa=st.floats(0.0, 180.0),
)
def test_galaxy_rendering_property(x, y, n, r_half, q, pa):
    source = _Source("galaxy", 100 + x, 50 + y, 7.0, sersic_n=n, r_half=r_half, q=q, pa_deg=pa)
    stamp, y0, x0 = _render_source(source, _optics(SimulationConfig()), 0.009)
    assert abs(stamp.sum() - 7.0) < 0.07
    cy, cx = centroid(stamp, y0, x0)
    assert math.hypot(cy - source.y, cx - source.x) < 0.1


def test_mosaic_star_centroids_match_truth():
    # Isolated bright stars on a flat sky, no artefacts: array is indexed [y, x] and
    # pixel centres sit at integer coordinates.
    config = SimulationConfig(
        size=256,
        seed=7,
        galaxy_density=0.0,
        star_density=150.0,
        sky_gradient_sigma=0.0,
        **NO_ARTEFACTS,
    )
    sim = simulate_mosaic(config)
    stars = sim.truth_sources
    tree = cKDTree(stars[["x", "y"]].to_numpy())
    checked = 0
    for row in stars.itertuples():
        near = tree.query_ball_point([row.x, row.y], 12.0)
        if row.saturated or row.snr < 200 or len(near) > 1:
            continue
        cx, cy = round(row.x), round(row.y)
        if not (6 <= cx < 250 and 6 <= cy < 250):
            continue
        box = sim.image[cy - 6 : cy + 7, cx - 6 : cx + 7] - config.sky_level
        my, mx = centroid(box, cy - 6, cx - 6)
        assert abs(my - row.y) < 0.1
        assert abs(mx - row.x) < 0.1
        checked += 1
    assert checked >= 3


def test_noise_matches_variance():
    config = SimulationConfig(
        size=256,
        seed=8,
        galaxy_density=0.0,
        star_density=0.0,
        sky_gradient_sigma=0.0,
        **NO_ARTEFACTS,
    )
    sim = simulate_mosaic(config)
    np.testing.assert_allclose(sim.variance, config.sky_sigma**2, rtol=1e-6)
    residual = (sim.image - config.sky_level) / np.sqrt(sim.variance)
    assert abs(residual.mean()) < 0.02
    assert abs(residual.std() - 1.0) < 0.02
    assert not np.isnan(sim.image).any()


def test_correlated_noise_keeps_the_pixel_variance_and_correlates_neighbours():
    """The drizzle-like kernel (c, 1, c) x (c, 1, c), unit norm: per-pixel variance as
    white noise, neighbour correlation 2c / (1 + 2c^2) along rows and columns."""
    config = SimulationConfig(
        size=256, seed=8, galaxy_density=0.0, star_density=0.0, sky_gradient_sigma=0.0,
        noise_correlation=0.5, **NO_ARTEFACTS,
    )  # fmt: skip
    sim = simulate_mosaic(config)
    np.testing.assert_allclose(sim.variance, config.sky_sigma**2, rtol=1e-6)
    residual = (sim.image - config.sky_level) / np.sqrt(sim.variance)
    assert abs(residual.std() - 1.0) < 0.02
    expected = 2 * 0.5 / (1 + 2 * 0.5**2)
    along_rows = np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1]
    along_columns = np.corrcoef(residual[:-1].ravel(), residual[1:].ravel())[0, 1]
    assert along_rows == pytest.approx(expected, abs=0.02)
    assert along_columns == pytest.approx(expected, abs=0.02)
    assert sim.header["NOISECOR"] == 0.5
    assert "NOISECOR" not in simulate_mosaic(replace(config, noise_correlation=0.0)).header


def test_correlated_noise_lowers_the_truth_snr_as_a_matched_filter_measures_it():
    """The same scene in correlated noise: same pixels of light, lower S/N."""
    white = simulate_mosaic(SimulationConfig(size=256, seed=4, **NO_ARTEFACTS))
    correlated = simulate_mosaic(
        SimulationConfig(size=256, seed=4, noise_correlation=0.5, **NO_ARTEFACTS)
    )
    pd.testing.assert_frame_equal(
        white.truth_sources.drop(columns="snr"), correlated.truth_sources.drop(columns="snr")
    )
    ratio = white.truth_sources["snr"] / correlated.truth_sources["snr"]
    # a PSF-sized filter averages neighbours whose noise now moves together
    assert ratio.between(1.5, 3.0).all(), ratio.describe()
    # a point source: the filtered noise is the kernel-convolved weighted noise
    star = white.truth_sources.query("kind == 'star'").iloc[0]
    stamp = _render_source(
        _Source("star", 0.0, 0.0, float(star.flux)), _optics(white.config), white.config.sky_sigma
    )[0]
    weights = stamp / np.sqrt(white.config.sky_sigma**2 + stamp / white.config.gain)
    kernel = noise_kernel(0.5)
    filtered = np.sqrt(np.sum(ndimage.convolve(np.pad(weights, 2), kernel, mode="constant") ** 2))
    assert star.snr / ratio[star.name] == pytest.approx(np.sum(weights**2) / filtered, rel=1e-3)


def test_variance_includes_source_poisson(small):
    assert np.nanmin(small.variance) == pytest.approx(0.009**2, rel=1e-5)
    bright = small.truth_sources.sort_values("flux").iloc[-1]
    y, x = round(bright.y), round(bright.x)
    assert small.variance[y, x] > 2 * 0.009**2


def test_sky_background_is_smooth_and_varies():
    config = SimulationConfig(
        size=256, seed=9, galaxy_density=0.0, star_density=0.0, **NO_ARTEFACTS
    )
    sim = simulate_mosaic(config)
    blocks = sim.image.reshape(8, 32, 8, 32).mean(axis=(1, 3))
    spread = blocks.max() - blocks.min()
    assert 0.5 * config.sky_sigma < spread < 6 * config.sky_sigma
    assert abs(np.median(sim.image) - config.sky_level) < 2 * config.sky_sigma


# ------------------------------------------------------------------------ truth tables


def test_radec_is_wcs_of_xy(small):
    ts = small.truth_sources
    ra, dec = small.wcs.all_pix2world(ts["x"], ts["y"], 0)
    np.testing.assert_allclose(ts["ra"], ra, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ts["dec"], dec, rtol=0, atol=1e-10)
    ra2, dec2 = small.wcs.pixel_to_world_values(ts["x"], ts["y"])
    np.testing.assert_allclose(ts["ra"], ra2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ts["dec"], dec2, rtol=0, atol=1e-10)


def test_mosaic_wcs_centre_and_scale():
    wcs = mosaic_wcs((100, 200), pixel_scale_arcsec=0.1, ra_center=150.1, dec_center=2.2)
    ra, dec = wcs.all_pix2world([99.5], [49.5], 0)
    assert ra[0] == pytest.approx(150.1, abs=1e-12)
    assert dec[0] == pytest.approx(2.2, abs=1e-12)
    _, dec1 = wcs.all_pix2world([99.5, 99.5], [49.5, 59.5], 0)
    assert (dec1[1] - dec1[0]) * 3600 == pytest.approx(1.0, rel=1e-4)  # north is +y
    ra2, _ = wcs.all_pix2world([109.5], [49.5], 0)
    assert ra2[0] < 150.1  # east is -x
    assert wcs.wcs.ctype[0] == "RA---TAN"
    assert wcs.wcs.radesys == "ICRS"


def test_blend_fraction_at_defaults():
    sim = simulate_mosaic(SimulationConfig(size=1024, seed=0))
    ts = sim.truth_sources
    galaxies = ts[ts["kind"] == "galaxy"]
    assert 120 < len(galaxies) < 260  # 600-900 per 2048^2
    xy = galaxies[["x", "y"]].to_numpy()
    tree = cKDTree(xy)
    counts = np.array([len(p) - 1 for p in tree.query_ball_point(xy, 15.0)])
    assert (counts > 0).mean() >= 1 / 3
    assert (galaxies["n_neighbours_1p5arcsec"] > 0).mean() >= 1 / 3


def test_blend_groups_and_neighbour_counts(small):
    ts = small.truth_sources
    xy = ts[["x", "y"]].to_numpy()
    distance = np.hypot(*(xy[:, np.newaxis, :] - xy[np.newaxis, :, :]).transpose(2, 0, 1))
    linked = distance <= 15.0
    np.testing.assert_array_equal(ts["n_neighbours_1p5arcsec"], linked.sum(axis=1) - 1)
    n_groups, labels = connected_components(linked, directed=False)
    ids = ts["id"].to_numpy()
    expected = np.array([ids[labels == labels[i]].min() for i in range(len(ts))])
    np.testing.assert_array_equal(ts["blend_group"], expected)
    isolated = ts["n_neighbours_1p5arcsec"] == 0
    np.testing.assert_array_equal(ts.loc[isolated, "blend_group"], ts.loc[isolated, "id"])
    assert n_groups < len(ts)


def test_magnitude_counts_rise_to_faint_end():
    sim = simulate_mosaic(SimulationConfig(size=1024, seed=1))
    mags = sim.truth_sources.query("kind == 'galaxy'")["mag"]
    assert mags.min() >= 19.0
    assert mags.max() <= 26.0
    counts, _ = np.histogram(mags, bins=7, range=(19.0, 26.0))
    assert counts[-1] > counts[-2] > counts[-3] > counts[0]
    slope = np.polyfit(np.arange(19.5, 26.0, 1.0), np.log10(np.maximum(counts, 1)), 1)[0]
    assert 0.2 < slope < 0.4


def test_snr_rises_with_flux_and_faint_limit(artefacts):
    galaxies = artefacts.truth_sources.query("kind == 'galaxy'")
    assert (galaxies["snr"] > 0).all()
    bright = galaxies[galaxies["mag"] < 23]["snr"].median()
    faint = galaxies[galaxies["mag"] > 25]["snr"].median()
    assert bright > 5 * faint
    assert 4 < faint < 25


def test_clump_truth(clumpy):
    ts = clumpy.truth_sources.set_index("id")
    tc = clumpy.truth_clumps
    hosts = ts[ts["n_clumps"] > 0]
    assert len(hosts) >= 3
    assert len(tc) == hosts["n_clumps"].sum()
    np.testing.assert_array_equal(tc["id"], np.arange(1, len(tc) + 1))
    for host_id, group in tc.groupby("host_id"):
        host = ts.loc[host_id]
        assert host["kind"] == "galaxy"
        assert len(group) == host["n_clumps"]
        assert 1 <= len(group) <= 6
        assert 0.5 <= host["sersic_n"] <= 1.5
        assert host["r_half_pix"] >= 8.0
        offset = np.hypot(group["x"] - host["x"], group["y"] - host["y"])
        assert (offset <= 1.5 * host["r_half_pix"] + 0.01).all()
        smooth = host["flux"] - group["flux"].sum()
        fractions = group["flux"] / smooth
        assert ((fractions >= 0.02 - 1e-9) & (fractions <= 0.15 + 1e-9)).all()
        xy = group[["x", "y"]].to_numpy()
        if len(xy) > 1:
            sep = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
            assert sep[np.triu_indices(len(xy), 1)].min() >= 3.0 - 1e-9
    ra, dec = clumpy.wcs.all_pix2world(tc["x"], tc["y"], 0)
    np.testing.assert_allclose(tc["ra"], ra, atol=1e-10)
    np.testing.assert_allclose(tc["dec"], dec, atol=1e-10)
    # non-clumpy galaxies and stars have no clump rows
    assert set(tc["host_id"]) == set(hosts.index)


def test_small_scenes_get_clumpy_galaxies_at_the_configured_rate():
    # each bright galaxy is clumpy with probability clumpy_fraction, so scenes with a
    # single eligible galaxy get clumpy hosts too (a rounded count gave them none)
    eligible = clumpy_hosts = 0
    for seed in range(150):
        sim = simulate_mosaic(SimulationConfig(size=192, seed=seed, clumpy_fraction=0.2))
        galaxies = sim.truth_sources.query("kind == 'galaxy'")
        eligible += int((galaxies["mag"] <= sim.config.clumpy_mag_limit).sum())
        clumpy_hosts += int((galaxies["n_clumps"] > 0).sum())
    assert eligible >= 100
    assert 0.12 < clumpy_hosts / eligible < 0.3  # 0.04 with the rounded count


def test_clumps_are_visible_in_noiseless_render(clumpy):
    # a clump adds a local maximum on top of the smooth host
    ts = clumpy.truth_sources.set_index("id")
    tc = clumpy.truth_clumps
    host_id = tc["host_id"].iloc[0]
    host = ts.loc[host_id]
    rows = tc[tc["host_id"] == host_id]
    clumps = np.column_stack((rows["x"] - host["x"], rows["y"] - host["y"], rows["flux"]))
    params = {
        "sersic_n": host["sersic_n"],
        "r_half": host["r_half_pix"],
        "q": host["axis_ratio"],
        "pa_deg": host["position_angle_deg"],
    }
    source = _Source("galaxy", host["x"], host["y"], host["flux"], clumps=clumps, **params)
    stamp, y0, x0 = _render_source(source, _optics(clumpy.config), 0.009)
    assert stamp.sum() == pytest.approx(host["flux"], rel=1e-6)
    bare = _Source("galaxy", host["x"], host["y"], host["flux"] - rows["flux"].sum(), **params)
    smooth, _, _ = _render_source(bare, _optics(clumpy.config), 0.009)
    for cx, cy in rows[["x", "y"]].to_numpy():
        j, i = round(cy) - y0, round(cx) - x0
        assert stamp[j, i] > smooth[j, i]


# -------------------------------------------------------------------------- artefacts


@pytest.mark.parametrize("bit", ["NO_DATA", "BAD", "SAT", "CR", "STREAK", "GHOST"])
def test_each_artefact_is_flagged(artefacts, bit):
    assert has_bit(artefacts.truth_mask, MaskBit[bit]).sum() > 0


def test_no_data_is_exactly_nan(artefacts):
    nan = np.isnan(artefacts.image)
    no_data = has_bit(artefacts.truth_mask, MaskBit.NO_DATA)
    np.testing.assert_array_equal(nan, no_data)
    np.testing.assert_array_equal(np.isnan(artefacts.variance), nan)
    # NO_DATA pixels carry no other plane
    assert (artefacts.truth_mask[no_data] == int(MaskBit.NO_DATA)).all()
    # chip gaps are rectangles at least 10 px wide
    labels, _ = ndimage.label(no_data)
    widths = [
        min(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)
    ]
    assert max(widths) >= 10


def test_saturation_is_clipped_flagged_and_bleeds(artefacts):
    saturate = artefacts.header["SATURATE"]
    image = artefacts.image
    sat = has_bit(artefacts.truth_mask, MaskBit.SAT)
    finite = ~np.isnan(image)
    assert np.nanmax(image) <= saturate
    assert sat[finite & (image >= saturate)].all()
    np.testing.assert_array_equal(image[sat & finite], saturate)
    stars = artefacts.truth_sources.query("kind == 'star' and saturated")
    assert len(stars) >= 1
    # bleed trails run along columns: saturated regions are taller than wide
    labels, _ = ndimage.label(sat)
    shapes = [
        (s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)
    ]
    assert any(h > w + 2 for h, w in shapes)
    # every saturated star is inside a SAT region
    for row in stars.itertuples():
        assert sat[round(row.y), round(row.x)]


def test_cosmic_rays_are_sharp_and_bright(artefacts):
    sigma = artefacts.config.sky_sigma
    cr = has_bit(artefacts.truth_mask, MaskBit.CR) & ~has_bit(
        artefacts.truth_mask, MaskBit.SAT | MaskBit.NO_DATA
    )
    labels, n = ndimage.label(cr)
    assert n >= 50
    sizes = ndimage.sum(cr, labels, np.arange(1, n + 1))
    assert np.median(sizes) <= 32
    assert np.median(artefacts.image[cr] - artefacts.config.sky_level) > 10 * sigma


def test_trails_cross_the_mosaic(artefacts):
    streak = has_bit(artefacts.truth_mask, MaskBit.STREAK)
    labels, _ = ndimage.label(streak)
    longest = max(
        max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)
    )
    assert longest >= 256


def test_bad_columns_and_hot_pixels(artefacts):
    bad = has_bit(artefacts.truth_mask, MaskBit.BAD)
    per_column = bad.sum(axis=0)
    assert per_column.max() >= 512 // 5  # a column (segment) is flagged
    isolated = bad & (ndimage.uniform_filter(bad.astype(float), 3) * 9 < 1.5)
    assert isolated.sum() >= 20  # hot pixels


def test_ghosts_are_near_bright_stars(artefacts):
    ghost = has_bit(artefacts.truth_mask, MaskBit.GHOST)
    labels, n = ndimage.label(ghost)
    assert n >= 1
    stars = artefacts.truth_sources.query("kind == 'star'").sort_values("flux")
    brightest = stars.iloc[-n:]
    centres = ndimage.center_of_mass(ghost, labels, np.arange(1, n + 1))
    for cy, cx in centres:
        d = np.hypot(brightest["y"] - cy, brightest["x"] - cx)
        assert d.min() < 220


# ---------------------------------------------------------------------------- writing


def test_write_simulation_round_trip(small, tmp_path):
    out = tmp_path / "nested" / "sim"
    paths = write_simulation(small, out)
    assert set(paths) == {"mosaic", "truth_sources", "truth_clumps", "truth_mask"}
    assert all(Path(p).exists() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    with fits.open(paths["mosaic"]) as hdul:
        np.testing.assert_array_equal(hdul[0].data, small.image)
        assert hdul[0].data.dtype.kind == "f"
        assert hdul[0].header["SATURATE"] == small.header["SATURATE"]
        assert hdul[0].header["SIMSEED"] == 3
        wcs = WCS(hdul[0].header)
        assert wcs.wcs.compare(small.wcs.wcs, tolerance=1e-12)
        assert hdul["VARIANCE"].data.dtype.itemsize == 4
        np.testing.assert_array_equal(hdul["VARIANCE"].data, small.variance)
        assert WCS(hdul["VARIANCE"].header).wcs.compare(small.wcs.wcs, tolerance=1e-12)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth_sources"]), small.truth_sources)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth_clumps"]), small.truth_clumps)
    mask = fits.getdata(paths["truth_mask"], uint=True)
    assert mask.dtype == np.uint32
    np.testing.assert_array_equal(mask, small.truth_mask)
    assert WCS(fits.getheader(paths["truth_mask"])).wcs.compare(small.wcs.wcs, tolerance=1e-12)
    # writing again replaces the files in place
    write_simulation(small, out)
    assert len(list(out.iterdir())) == 4


def test_write_simulation_rejects_bad_arguments(small, tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="out_dir"):
        write_simulation(small, afile)
    with pytest.raises(TypeError, match="SimulatedMosaic"):
        write_simulation("not a sim", tmp_path)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 32}, "size"),
        ({"size": 100.0}, "size"),
        ({"ny": 10}, "ny"),
        ({"seed": -1}, "seed"),
        ({"pixel_scale_arcsec": 0.0}, "pixel_scale_arcsec"),
        ({"psf_fwhm_pix": -1.0}, "psf_fwhm_pix"),
        ({"psf_model": "airy"}, "psf_model"),
        ({"psf_beta": 1.0}, "psf_beta"),
        ({"psf_ellipticity": 0.6}, "psf_ellipticity"),
        ({"sky_sigma": 0.0}, "sky_sigma"),
        ({"sky_sigma": float("nan")}, "sky_sigma"),
        ({"gain": -2.0}, "gain"),
        ({"saturation": 0.0}, "saturation"),
        ({"blend_fraction": 1.5}, "blend_fraction"),
        ({"clumpy_fraction": -0.1}, "clumpy_fraction"),
        ({"galaxy_density": -1.0}, "galaxy_density"),
        ({"n_cosmic_rays": -3.0}, "n_cosmic_rays"),
        ({"mag_range": (26.0, 19.0)}, "mag_range"),
        ({"mag_range": (19.0,)}, "mag_range"),
        ({"r_half_range_arcsec": (0.0, 1.0)}, "r_half_range_arcsec"),
        ({"sersic_n_range": (0.1, 4.0)}, "sersic_n_range"),
        ({"dec_center": 95.0}, "dec_center"),
        ({"sky_gradient_sigma": -1.0}, "sky_gradient_sigma"),
        ({"large_galaxy_density": -1.0}, "large_galaxy_density"),
        ({"large_r_half_fwhm": (0.0, 4.0)}, "large_r_half_fwhm"),
        ({"large_mag_range": (23.0, 16.0)}, "large_mag_range"),
        ({"large_clumpy_fraction": 1.5}, "large_clumpy_fraction"),
        ({"noise_correlation": 1.2}, "noise_correlation"),
    ],
)
def test_invalid_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimulationConfig(**kwargs)


def test_large_galaxies_come_on_top_of_the_other_objects():
    base = SimulationConfig(size=256, seed=3, psf_fwhm_pix=2.0)
    before = simulate_mosaic(base).truth_sources
    with_large = simulate_mosaic(replace(base, large_galaxy_density=150.0))
    after = with_large.truth_sources
    # the other objects are drawn as without the large galaxies
    galaxies = (before["kind"] == "galaxy").sum()
    pd.testing.assert_frame_equal(
        after.iloc[:galaxies][["x", "y", "flux"]], before.iloc[:galaxies][["x", "y", "flux"]]
    )
    large = after.iloc[galaxies : len(after) - (before["kind"] == "star").sum()]
    assert len(large) >= 3
    radii = large["r_half_pix"].to_numpy()
    assert ((radii >= 4.0 * 2.0 - 1e-9) & (radii <= 20.0 * 2.0 + 1e-9)).all()
    assert large["mag"].between(16.0, 23.5).all()
    labels = with_large.truth_segmentation
    for _, row in large[large["snr"] > 300].iterrows():
        label = labels[round(row["y"]), round(row["x"])]
        assert label > 0
        # a bright large galaxy's footprint reaches beyond its half-light ellipse
        assert (labels == label).sum() > np.pi * row["r_half_pix"] ** 2 * row["axis_ratio"]


def test_clumpy_large_galaxies_hold_clumps_of_at_least_8_percent_of_their_light():
    base = SimulationConfig(size=256, seed=3, psf_fwhm_pix=2.0, large_galaxy_density=150.0)
    plain = simulate_mosaic(base)
    assert simulate_mosaic(replace(base, large_clumpy_fraction=0.0)).image.tobytes() == (
        plain.image.tobytes()
    )
    clumpy = simulate_mosaic(replace(base, large_clumpy_fraction=1.0))
    sources, clumps = clumpy.truth_sources.set_index("id"), clumpy.truth_clumps
    hosts = sources.loc[clumps["host_id"].unique()]
    large = hosts[hosts["r_half_pix"] >= 4.0 * 2.0 - 1e-9]
    assert len(large) >= 3
    for host_id, host in large.iterrows():
        own = clumps[clumps["host_id"] == host_id]
        assert 1 <= len(own) <= 4
        smooth = host["flux"] - own["flux"].sum()
        share = own["flux"] / smooth
        assert share.between(0.08 - 1e-9, 0.15 + 1e-9).all()
        # off the centre, within 1.5 half-light radii
        offset = np.hypot(own["x"] - host["x"], own["y"] - host["y"])
        assert (offset >= 2.0).all() and (offset <= 1.5 * host["r_half_pix"] + 1e-6).all()
    # a clump is part of its host, never an object of its own: on a bright host its
    # pixels are the host's
    labels = clumpy.truth_segmentation
    bright = large[large["snr"] > 300]
    assert len(bright)
    for host_id in bright.index:
        own = clumps[clumps["host_id"] == host_id]
        inside = own["y"].round().between(0, 255) & own["x"].round().between(0, 255)
        for _, clump in own[inside].iterrows():
            assert labels[round(clump["y"]), round(clump["x"])] == host_id


def test_invalid_public_arguments():
    with pytest.raises(TypeError, match="SimulationConfig"):
        simulate_mosaic({"size": 256})
    with pytest.raises(ValueError, match="shape"):
        mosaic_wcs((0, 10))
    with pytest.raises(ValueError, match="pixel_scale_arcsec"):
        mosaic_wcs((10, 10), pixel_scale_arcsec=-0.1)


def test_dense_truth_maps_are_consistent_with_the_catalog():
    sim = simulate_mosaic(SimulationConfig(size=256, seed=5))
    segmentation, overlap = sim.truth_segmentation, sim.truth_overlap
    assert segmentation.shape == overlap.shape == sim.image.shape
    ids = set(np.unique(segmentation)) - {0}
    assert ids <= set(sim.truth_sources["id"])
    # bright objects own the pixel at their centre
    bright = sim.truth_sources[sim.truth_sources["snr"] > 20]
    x = np.rint(bright["x"]).astype(int).clip(0, 255)
    y = np.rint(bright["y"]).astype(int).clip(0, 255)
    owned = segmentation[y, x] == bright["id"].to_numpy()
    assert owned.mean() > 0.9
    # overlaps happen, and only inside footprints
    assert overlap.any()
    assert not (overlap & (segmentation == 0)).any()
