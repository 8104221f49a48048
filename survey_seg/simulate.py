"""Synthetic Euclid-VIS-like survey mosaics with exact ground truth.

Everything here is deterministic by seed: the same :class:`SimulationConfig` gives
bit-identical arrays and tables.

Conventions
-----------
- Arrays are indexed ``[y, x]``. Catalog ``x``, ``y`` are 0-based pixel coordinates of
  the mosaic; the centre of pixel ``[j, i]`` is at ``(x, y) = (i, j)`` and the pixel
  covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``.
- ``ra``, ``dec`` are ICRS degrees from the TAN WCS of :func:`mosaic_wcs` with
  origin 0 (``wcs.all_pix2world(x, y, 0)``).
- Fluxes are in ADU; ``mag = zero_point - 2.5 log10(flux)``.
- Position angles are in degrees, counter-clockwise from the +x axis towards +y.
- Half-light radii are along the semi-major axis, in pixels.

Noise model and depth
---------------------
Every pixel gets Gaussian noise of variance ``sky_sigma**2 + max(signal, 0) / gain``
where ``signal`` is the noiseless astrophysical light above the sky (sources, ghosts,
satellite trails). The default ``sky_sigma = 0.01`` ADU puts a small galaxy
(half-light radius 0.15 arcsec, exponential) of magnitude 25.5 (flux 0.63 ADU) at an
optimal matched-filter S/N of about 10 with the default PSF. The default sky level
(0.12 ADU per pixel, about 22.3 mag per square arcsec) and ``gain = 1200`` e-/ADU make
``sky_sigma`` the Poisson noise of the sky itself, as in a deep stack.

Rendering
---------
Galaxies are elliptical Sersic profiles (``b_n`` from Ciotti & Bertin 1999), truncated
at 5-8 half-light radii, integrated over each pixel by subpixel sampling (3x, or 5x for
half-light radii under 3 px, and 25x on the central 5 x 5 pixels where the profile is
steepest) with the profile centred on a pixel, then convolved per stamp
(``scipy.signal.fftconvolve``) with the pixel-integrated PSF shifted by the subpixel
offset of the galaxy, and scaled so that the stamp sums to exactly the requested flux.
Carrying the subpixel offset in the PSF keeps the centroid unbiased (to ~1e-3 px) even
for cuspy, unresolved profiles. Stars and clumps are the pixel-integrated PSF (Moffat
or Gaussian) at their subpixel position, on a stamp large enough that the truncated
wing is below a tenth of ``sky_sigma``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage, signal, sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.special import expit

from survey_seg.files import atomic_path
from survey_seg.masks import ARTEFACT_CLASS_BITS, ARTEFACT_CLASSES, MASK_DTYPE, MaskBit
from survey_seg.psf import SIGMA_PER_FWHM

__all__ = [
    "ARTEFACT_CLASSES",
    "ARTEFACT_CLASS_BITS",
    "SIMULATOR_VERSION",
    "SimulatedMosaic",
    "SimulationConfig",
    "mosaic_wcs",
    "noise_kernel",
    "simulate_mosaic",
    "write_simulation",
]

SIMULATOR_VERSION: str = "3"
"""Bumped whenever the same seed would give different pixels or tables."""

REFERENCE_AREA: int = 2048 * 2048
"""Area (pixels) to which the artefact counts of :class:`SimulationConfig` refer."""


SOURCE_COLUMNS: tuple[str, ...] = (
    "id",
    "x",
    "y",
    "ra",
    "dec",
    "flux",
    "mag",
    "kind",
    "sersic_n",
    "r_half_pix",
    "axis_ratio",
    "position_angle_deg",
    "blend_group",
    "n_neighbours_1p5arcsec",
    "n_clumps",
    "saturated",
    "snr",
    "profile",
)
"""Columns of :attr:`SimulatedMosaic.truth_sources`, in order. ``profile`` is how a
galaxy was drawn: ``sersic`` (here, a clumpy host too), ``bulge_disk`` or ``knotty``
(by GalSim); ``point`` for a star."""

CLUMP_COLUMNS: tuple[str, ...] = ("id", "host_id", "x", "y", "ra", "dec", "flux")
"""Columns of :attr:`SimulatedMosaic.truth_clumps`, in order."""

BLEND_LINK_ARCSEC: float = 1.5
"""Linking length of the truth blend groups and neighbour counts."""

FOOTPRINT_SKY_SIGMA: float = 1.0
"""Noiseless light (in sky sigma) above which a pixel belongs to an object's footprint
in ``truth_segmentation`` and ``truth_overlap``."""

_PSF_MODELS = ("moffat", "gaussian", "kolmogorov")
_MAX_PSF_ELLIPTICITY = 0.5
_GALAXY_MAX_HALF = 160  # largest galaxy stamp half-width before convolution (px)
_POINT_MAX_HALF = 100  # largest star / clump stamp half-width (px)
_CLUMP_FRACTION_RANGE = (0.02, 0.15)  # clump flux / smooth host flux
_CLUMP_MIN_SEPARATION = 3.0  # px between clumps
_CLUMP_MIN_OFFSET = 2.0  # px from the host centre
_CLUMP_REACH = 1.5  # clumps lie within this many half-light radii of the centre
_CLUMPY_HOST_R_HALF_PIX = (8.0, 15.0)
_BULGE_R_HALF_FRACTION = 0.4  # bulge half-light radius / disk half-light radius (GalSim galaxies)
_CLUMPY_HOST_SERSIC = (0.5, 1.5)
LARGE_CLUMP_FRACTION_RANGE = (0.08, 0.15)
"""Flux of a large clumpy galaxy's clump over its smooth light: at least the 8 % of the
host's light by which Guo et al. (2015) define a star-forming clump."""
_LARGE_CLUMP_COUNT = (1, 4)
_GHOST_MASK_SIGMA = 0.5  # GHOST bit where the ghost adds more than this (sky sigma)

# Random streams of the mosaic, one per component, so that changing one component
# leaves the others' draws unchanged.
_STREAM_GALAXIES = 1
_STREAM_STARS = 2
_STREAM_BACKGROUND = 3
_STREAM_NOISE = 4
_STREAM_COSMIC_RAYS = 5
_STREAM_TRAILS = 6
_STREAM_BAD_COLUMNS = 7
_STREAM_HOT_PIXELS = 8
_STREAM_NAN = 9
_STREAM_GHOSTS = 10
_STREAM_LARGE = 11


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulated mosaic; every default is Euclid-VIS-like.

    Artefact counts are expected numbers per ``2048 x 2048`` pixels and scale with the
    mosaic area; a non-integer expectation is rounded up or down at random so that the
    mean count is exact.

    Attributes
    ----------
    size : int
        The mosaic is ``size x size`` pixels unless ``ny`` or ``nx`` are given.
    ny, nx : int or None
        Number of rows and columns, overriding ``size`` for that axis.
    seed : int
        Seed of every random draw of :func:`simulate_mosaic`.
    pixel_scale_arcsec : float
        Pixel scale (arcsec per pixel).
    psf_fwhm_pix : float
        PSF full width at half maximum (pixels).
    psf_model : str
        ``"moffat"``, ``"gaussian"`` or ``"kolmogorov"`` (GalSim's long-exposure
        atmospheric PSF, whose wings fall as ``r**(-11/3)``).
    psf_beta : float
        Moffat index ``beta`` (ignored for the other PSFs).
    psf_ellipticity : float
        Ellipticity ``(a**2 - b**2) / (a**2 + b**2)`` of the PSF, in ``[0, 0.5)``
        (a shear of the round profile; ``psf_fwhm_pix`` is the round one's).
    psf_angle_deg : float
        Position angle of the PSF's major axis (degrees from the x axis).
    sky_sigma : float
        Background noise per pixel (ADU).
    noise_correlation : float
        Weight of a pixel's side neighbours in the kernel that correlates the noise,
        as drizzling or resampling does (the corners get its square, the pixel 1):
        0 (the default) is white noise; 0.5 is the 3 x 3 drizzle-like kernel of
        ``tests/test_network.py``. The kernel has unit norm, so the per-pixel
        variance stays ``variance``, and the truth S/N is that of the matched filter
        in the correlated noise.
    sky_level : float
        Mean sky background per pixel (ADU); the image is not sky-subtracted.
    sky_gradient_sigma : float
        Peak-to-peak amplitude of the smooth sky gradient across the mosaic, in units
        of ``sky_sigma``.
    zero_point : float
        Photometric zero point (MAGZERO): ``mag = zero_point - 2.5 log10(flux)``.
    saturation : float
        Saturation level (SATURATE, ADU); brighter pixels are clipped and bleed.
    gain : float
        Gain (e-/ADU) of the source Poisson noise: variance ``signal / gain``.
    galaxy_density : float
        Galaxies per million pixels.
    blend_fraction : float
        Fraction of galaxies placed as companions of another galaxy.
    blend_separation_arcsec : tuple of float
        Range of companion separations (arcsec).
    clumpy_fraction : float
        Probability that a galaxy brighter than ``clumpy_mag_limit`` is made a clumpy
        star-forming galaxy (Sersic index 0.5-1.5, half-light radius at least 8 px,
        1-6 clumps).
    galsim_fraction : float
        Probability that a galaxy that is not clumpy is drawn with GalSim instead, as
        a bulge + disk (de Vaucouleurs bulge of 0.2-0.6 of the light and 0.3-0.5 of
        the disk's half-light radius) or a knotty irregular (an exponential disk with
        20-60 % of its light in 10-40 GalSim ``RandomKnots``), half of each: galaxies
        whose knots and arms must stay one object. 0 (the default) leaves the
        random streams, hence every earlier simulation, unchanged.
    clumpy_mag_limit : float
        Only galaxies brighter than this may become clumpy.
    star_density : float
        Stars per million pixels.
    mag_range : tuple of float
        Galaxy magnitude range; counts rise as ``dN/dm ∝ 10**(mag_slope * m)``.
    mag_slope : float
        Logarithmic slope of the galaxy number counts.
    star_mag_range : tuple of float
        Star magnitude range; reaches bright enough for some stars to saturate.
    star_mag_slope : float
        Logarithmic slope of the star number counts.
    sersic_n_range : tuple of float
        Range of galaxy Sersic indices (uniform).
    r_half_range_arcsec : tuple of float
        Range of galaxy half-light radii (arcsec); the median radius shrinks with
        magnitude (0.5 arcsec at mag 20, 0.1 arcsec at mag 26).
    n_cosmic_rays : float
        Cosmic rays per 2048^2 (single pixels or tracks 1-2 px wide, 1-15 px long).
    n_satellite_trails : float
        Satellite trails per 2048^2 (straight, across the whole mosaic, 2-4 px wide).
    n_bad_columns : float
        Bad columns per 2048^2 (whole or partial, hot or dead).
    n_hot_pixels : float
        Hot pixels per 2048^2.
    n_chip_gaps : float
        Rectangular NaN chip gaps per 2048^2 (10-40 px wide).
    n_holes : float
        Irregular NaN holes per 2048^2 (radius 8-30 px).
    n_ghosts : float
        Optical ghosts per 2048^2, next to the brightest stars.
    large_galaxy_density : float
        Large galaxies per million pixels, drawn in addition to the others from a
        stream of their own (0, the default, leaves every earlier simulation
        unchanged): a third Sersic (index in ``sersic_n_range``), a third GalSim
        bulge + disk, a third GalSim knotty irregular, axis ratio 0.2-1 (down to
        nearly edge-on), half-light radius log-uniform in ``large_r_half_fwhm``.
    large_r_half_fwhm : tuple of float
        Range of the large galaxies' half-light radii, in PSF FWHM.
    large_mag_range : tuple of float
        Range (uniform) of the large galaxies' magnitudes: from bright ones with
        extended wings to ones below the noise in every pixel.
    large_clumpy_fraction : float
        Probability that a large galaxy is a clumpy star-forming one instead: a
        smooth disk-like Sersic host (index 0.5-1.5) with 1-4 clumps off its centre,
        each 8-15 % of the host's smooth light (:data:`LARGE_CLUMP_FRACTION_RANGE`),
        which are rows of ``truth_clumps``. GalSim's knots of a knotty galaxy, each
        a few per cent of its light at most, are not clumps. 0 (the default) leaves
        every earlier simulation unchanged.
    ra_center, dec_center : float
        Sky position (ICRS deg) of the mosaic centre.
    """

    size: int = 2048
    ny: int | None = None
    nx: int | None = None
    seed: int = 0
    pixel_scale_arcsec: float = 0.1
    psf_fwhm_pix: float = 1.8
    psf_model: str = "moffat"
    psf_beta: float = 3.0
    psf_ellipticity: float = 0.0
    psf_angle_deg: float = 0.0
    sky_sigma: float = 0.009
    noise_correlation: float = 0.0
    sky_level: float = 0.12
    sky_gradient_sigma: float = 3.0
    zero_point: float = 25.0
    saturation: float = 200.0
    gain: float = 1500.0
    galaxy_density: float = 180.0
    blend_fraction: float = 0.4
    blend_separation_arcsec: tuple[float, float] = (0.3, 1.5)
    clumpy_fraction: float = 0.15
    galsim_fraction: float = 0.0
    clumpy_mag_limit: float = 23.0
    star_density: float = 15.0
    mag_range: tuple[float, float] = (19.0, 26.0)
    mag_slope: float = 0.3
    star_mag_range: tuple[float, float] = (15.0, 24.0)
    star_mag_slope: float = 0.1
    sersic_n_range: tuple[float, float] = (0.5, 4.0)
    r_half_range_arcsec: tuple[float, float] = (0.08, 1.5)
    n_cosmic_rays: float = 300.0
    n_satellite_trails: float = 1.0
    n_bad_columns: float = 4.0
    n_hot_pixels: float = 100.0
    n_chip_gaps: float = 1.0
    n_holes: float = 2.0
    n_ghosts: float = 2.0
    large_galaxy_density: float = 0.0
    large_r_half_fwhm: tuple[float, float] = (4.0, 20.0)
    large_mag_range: tuple[float, float] = (16.0, 23.5)
    large_clumpy_fraction: float = 0.0
    ra_center: float = 150.1
    dec_center: float = 2.2

    def __post_init__(self) -> None:
        _check_int("size", self.size, minimum=64)
        for name in ("ny", "nx"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=64)
        _check_int("seed", self.seed, minimum=0)
        for name in (
            "pixel_scale_arcsec",
            "psf_fwhm_pix",
            "sky_sigma",
            "saturation",
            "gain",
        ):
            _check_float(name, getattr(self, name), positive=True)
        if self.psf_fwhm_pix < 0.5 or self.psf_fwhm_pix > 20:
            raise ValueError(
                f"psf_fwhm_pix={self.psf_fwhm_pix!r} is outside [0.5, 20] pixels; "
                "give a PSF FWHM in pixels within that range."
            )
        if self.psf_model not in _PSF_MODELS:
            raise ValueError(f"psf_model={self.psf_model!r} is unknown; use one of {_PSF_MODELS}.")
        _check_float("psf_beta", self.psf_beta)
        if self.psf_beta <= 1.0:
            raise ValueError(
                f"psf_beta={self.psf_beta!r} gives a Moffat of infinite flux; use beta > 1."
            )
        _check_float("psf_ellipticity", self.psf_ellipticity)
        _check_float("psf_angle_deg", self.psf_angle_deg)
        if not 0.0 <= self.psf_ellipticity < _MAX_PSF_ELLIPTICITY:
            raise ValueError(
                f"psf_ellipticity={self.psf_ellipticity!r} is outside [0, "
                f"{_MAX_PSF_ELLIPTICITY}); give the (a^2 - b^2) / (a^2 + b^2) of the PSF."
            )
        for name in (
            "sky_level",
            "sky_gradient_sigma",
            "zero_point",
            "mag_slope",
            "star_mag_slope",
            "clumpy_mag_limit",
        ):
            _check_float(name, getattr(self, name))
        if self.sky_gradient_sigma < 0:
            raise ValueError(
                f"sky_gradient_sigma={self.sky_gradient_sigma!r} is negative; "
                "give a peak-to-peak amplitude >= 0."
            )
        for name in (
            "noise_correlation",
            "blend_fraction",
            "clumpy_fraction",
            "galsim_fraction",
            "large_clumpy_fraction",
        ):
            value = getattr(self, name)
            _check_float(name, value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} is not a fraction; give a value in [0, 1].")
        for name in (
            "galaxy_density",
            "star_density",
            "n_cosmic_rays",
            "n_satellite_trails",
            "n_bad_columns",
            "n_hot_pixels",
            "n_chip_gaps",
            "n_holes",
            "n_ghosts",
            "large_galaxy_density",
        ):
            _check_float(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is negative; give a count or density >= 0."
                )
        _check_range("mag_range", self.mag_range)
        _check_range("star_mag_range", self.star_mag_range)
        _check_range("blend_separation_arcsec", self.blend_separation_arcsec, positive=True)
        _check_range("r_half_range_arcsec", self.r_half_range_arcsec, positive=True)
        _check_range("large_r_half_fwhm", self.large_r_half_fwhm, positive=True)
        _check_range("large_mag_range", self.large_mag_range)
        _check_range("sersic_n_range", self.sersic_n_range, positive=True)
        if self.sersic_n_range[0] < 0.3 or self.sersic_n_range[1] > 8.0:
            raise ValueError(
                f"sersic_n_range={self.sersic_n_range!r} leaves [0.3, 8]; "
                "the Ciotti & Bertin b_n approximation is only used within that range."
            )
        _check_float("ra_center", self.ra_center)
        _check_float("dec_center", self.dec_center)
        if not -90.0 <= self.dec_center <= 90.0:
            raise ValueError(f"dec_center={self.dec_center!r} is not in [-90, 90] degrees.")

    @property
    def shape(self) -> tuple[int, int]:
        """Mosaic shape ``(ny, nx)`` in pixels."""
        ny = self.size if self.ny is None else self.ny
        nx = self.size if self.nx is None else self.nx
        return (int(ny), int(nx))


def _check_int(name: str, value: object, *, minimum: int) -> None:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}={value!r} is not an integer; give an int >= {minimum}.")
    if value < minimum:
        raise ValueError(f"{name}={value!r} is too small; give an int >= {minimum}.")


def _check_float(name: str, value: object, *, positive: bool = False) -> None:
    """Raise unless ``value`` is a finite real number (and > 0 if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}={value!r} is not a number; give a finite float.")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}={value!r} is not finite; give a finite float.")
    if positive and value <= 0:
        raise ValueError(f"{name}={value!r} must be positive; give a value > 0.")


def _check_range(name: str, value: object, *, positive: bool = False) -> None:
    """Raise unless ``value`` is a ``(low, high)`` pair of finite numbers, low <= high."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name}={value!r} is not a (low, high) pair; give two numbers.")
    for item in value:
        _check_float(name, item, positive=positive)
    if value[0] > value[1]:
        raise ValueError(f"{name}={value!r} has low > high; give (low, high) with low <= high.")


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------


@dataclass
class SimulatedMosaic:
    """A simulated mosaic with its ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(ny, nx)`` image in ADU, sky background included, NaN in the
        NO_DATA regions.
    variance : numpy.ndarray
        float32 ``(ny, nx)``: the variance of the noise that was added,
        ``sky_sigma**2 + max(signal, 0) / gain``; NaN where ``image`` is NaN.
        Saturated pixels are clipped to the saturation level after the noise.
    wcs : astropy.wcs.WCS
        Celestial TAN WCS of the mosaic (see :func:`mosaic_wcs`).
    header : astropy.io.fits.Header
        WCS keywords plus SATURATE, MAGZERO, GAIN, PIXSCALE, BUNIT, SIMVERS, SIMSEED.
    truth_sources : pandas.DataFrame
        One row per galaxy and star; see :data:`SOURCE_COLUMNS` and the module notes.
        ``x``, ``y`` are the profile centre (for a clumpy galaxy, the centre of the
        smooth host). ``flux`` is the total flux including clumps. ``snr`` is the
        optimal matched-filter S/N of the isolated noiseless object,
        ``sqrt(sum(m**2 / (sky_sigma**2 + m / gain)))`` over its rendered stamp ``m``.
        ``blend_group`` is the smallest id of the friends-of-friends group linked at
        1.5 arcsec; ``n_neighbours_1p5arcsec`` counts the other objects within
        1.5 arcsec. ``saturated`` is True when the pixel at the centre is saturated.
    truth_clumps : pandas.DataFrame
        One row per clump: ``id``, ``host_id``, ``x``, ``y``, ``ra``, ``dec``, ``flux``.
    truth_mask : numpy.ndarray
        uint32 ``(ny, nx)`` :class:`~survey_seg.masks.MaskBit` planes of the artefacts:
        NO_DATA, BAD, SAT, CR, STREAK, GHOST. NO_DATA pixels carry no other plane.
    config : SimulationConfig
        The configuration that made it.
    truth_segmentation : numpy.ndarray or None
        int32 ``(ny, nx)``: the truth ``id`` of the object whose noiseless light is
        brightest at each pixel, among those above :data:`FOOTPRINT_SKY_SIGMA` sky
        sigma there; 0 elsewhere. A clumpy galaxy and its clumps are one object.
    truth_overlap : numpy.ndarray or None
        bool ``(ny, nx)``: two or more objects are above that level at the pixel.
    """

    image: np.ndarray
    variance: np.ndarray
    wcs: WCS
    header: fits.Header
    truth_sources: pd.DataFrame
    truth_clumps: pd.DataFrame
    truth_mask: np.ndarray
    config: SimulationConfig = field(default_factory=SimulationConfig)
    truth_segmentation: np.ndarray | None = None
    truth_overlap: np.ndarray | None = None


def mosaic_wcs(
    shape: tuple[int, int],
    *,
    pixel_scale_arcsec: float = 0.1,
    ra_center: float = 150.1,
    dec_center: float = 2.2,
) -> WCS:
    """Return the celestial TAN WCS of a simulated mosaic.

    North is up (+y) and East is left (-x). The centre of the mosaic, 0-based pixel
    ``((nx - 1) / 2, (ny - 1) / 2)``, maps to ``(ra_center, dec_center)``.

    Parameters
    ----------
    shape : tuple of int
        Mosaic shape ``(ny, nx)`` in pixels.
    pixel_scale_arcsec : float
        Pixel scale (arcsec per pixel).
    ra_center, dec_center : float
        ICRS coordinates (deg) of the mosaic centre.

    Returns
    -------
    astropy.wcs.WCS
        Two-axis ``RA---TAN`` / ``DEC--TAN`` WCS with ``RADESYS = 'ICRS'``.
    """
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in shape)
        or min(shape) < 1
    ):
        raise ValueError(f"shape={shape!r} is not (ny, nx); give two positive integers.")
    _check_float("pixel_scale_arcsec", pixel_scale_arcsec, positive=True)
    _check_float("ra_center", ra_center)
    _check_float("dec_center", dec_center)
    if not -90.0 <= dec_center <= 90.0:
        raise ValueError(f"dec_center={dec_center!r} is not in [-90, 90] degrees.")
    ny, nx = (int(s) for s in shape)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.wcs.crval = [float(ra_center) % 360.0, float(dec_center)]
    scale = float(pixel_scale_arcsec) / 3600.0
    wcs.wcs.cdelt = [-scale, scale]
    wcs.wcs.radesys = "ICRS"
    wcs.pixel_shape = (nx, ny)
    wcs.wcs.set()
    return wcs


def _make_header(config: SimulationConfig, wcs: WCS) -> fits.Header:
    """Build the image header: WCS plus photometric and provenance keywords."""
    header = wcs.to_header()
    header["BUNIT"] = ("adu", "pixel unit")
    header["MAGZERO"] = (float(config.zero_point), "mag = MAGZERO - 2.5 log10(flux [adu])")
    header["SATURATE"] = (float(config.saturation), "[adu] saturation level")
    header["GAIN"] = (float(config.gain), "[e-/adu] gain of the source Poisson noise")
    header["PIXSCALE"] = (float(config.pixel_scale_arcsec), "[arcsec/pix] pixel scale")
    header["SKYSIG"] = (float(config.sky_sigma), "[adu] sky noise per pixel")
    if config.noise_correlation:
        header["NOISECOR"] = (float(config.noise_correlation), "neighbour weight, noise kernel")
    header["PSFFWHM"] = (float(config.psf_fwhm_pix), "[pix] PSF FWHM")
    if not _optics(config).closed_form:
        header["PSFMODEL"] = (config.psf_model, "PSF profile (GalSim)")
        header["PSFELL"] = (float(config.psf_ellipticity), "PSF ellipticity")
        header["PSFANGLE"] = (float(config.psf_angle_deg), "[deg] PSF major axis angle")
    header["SIMVERS"] = (SIMULATOR_VERSION, "survey_seg.simulate version")
    header["SIMSEED"] = (int(config.seed), "simulation seed")
    return header


# --------------------------------------------------------------------------------------
# PSF and profiles
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Optics:
    """PSF description shared by every renderer.

    A round Moffat or Gaussian has a closed form, which the point renderer samples;
    any other PSF (Kolmogorov, elliptical) is drawn by GalSim (:meth:`galsim_psf`).
    """

    fwhm: float
    model: str
    beta: float
    ellipticity: float = 0.0
    angle_deg: float = 0.0

    @property
    def closed_form(self) -> bool:
        """Whether the PSF is a round Moffat or Gaussian (:meth:`profile` holds)."""
        return self.model in ("moffat", "gaussian") and not self.ellipticity

    def galsim_psf(self):
        """The PSF as a unit-flux GalSim profile (pixel scale 1)."""
        import galsim

        if self.model == "moffat":
            psf = galsim.Moffat(beta=self.beta, fwhm=self.fwhm)
        elif self.model == "kolmogorov":
            psf = galsim.Kolmogorov(fwhm=self.fwhm)
        else:
            psf = galsim.Gaussian(fwhm=self.fwhm)
        if self.ellipticity:
            psf = psf.shear(e=self.ellipticity, beta=self.angle_deg * galsim.degrees)
        return psf

    @property
    def scale(self) -> float:
        """Moffat ``alpha`` or Gaussian ``sigma`` (pixels)."""
        if self.model == "moffat":
            return self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        return self.fwhm * SIGMA_PER_FWHM

    @property
    def peak_density(self) -> float:
        """Central surface density of the unit-flux PSF (per pixel area)."""
        if self.model == "moffat":
            return (self.beta - 1.0) / (math.pi * self.scale**2)
        return 1.0 / (2.0 * math.pi * self.scale**2)

    def profile(self, r2: np.ndarray) -> np.ndarray:
        """Return the PSF (peak 1) at squared radius ``r2`` (pixels squared)."""
        if self.model == "moffat":
            return (1.0 + r2 / self.scale**2) ** (-self.beta)
        return np.exp(-0.5 * r2 / self.scale**2)

    def radius_below(self, level: float) -> float:
        """Radius where the unit-flux surface density drops to ``level`` (pixels).

        Along the major axis for a PSF without a closed form: the last radius, on a
        quarter-pixel grid out to :data:`_POINT_MAX_HALF`, where it is above ``level``.
        """
        if not self.closed_form:
            return _radius_below(self, level)
        ratio = self.peak_density / level
        if ratio <= 1.0:
            return 0.0
        if self.model == "moffat":
            return self.scale * math.sqrt(ratio ** (1.0 / self.beta) - 1.0)
        return self.scale * math.sqrt(2.0 * math.log(ratio))

    @property
    def kernel_half(self) -> int:
        """Half-width of the pixel convolution kernel (pixels)."""
        return max(3, math.ceil(6.0 * self.fwhm))


def _optics(config: SimulationConfig) -> _Optics:
    """Return the PSF description of ``config``."""
    return _Optics(
        float(config.psf_fwhm_pix),
        config.psf_model,
        float(config.psf_beta),
        float(config.psf_ellipticity),
        float(config.psf_angle_deg),
    )


@functools.lru_cache(maxsize=64)
def _radius_below(optics: _Optics, level: float) -> float:
    """:meth:`_Optics.radius_below` of a PSF that GalSim evaluates."""
    import galsim

    psf = optics.galsim_psf()
    radii = np.arange(0.0, _POINT_MAX_HALF, 0.25)
    angle = math.radians(optics.angle_deg)
    density = np.array(
        [psf.xValue(galsim.PositionD(r * math.cos(angle), r * math.sin(angle))) for r in radii]
    )
    above = np.flatnonzero(density >= level)
    return float(radii[above[-1]]) if above.size else 0.0


def _subpixel_coords(half: int, oversample: int) -> np.ndarray:
    """Return subpixel-centre offsets from the central pixel of a ``2 half + 1`` stamp."""
    index = np.arange((2 * half + 1) * oversample, dtype=np.float64)
    return (index + 0.5) / oversample - 0.5 - half


def _bin(array: np.ndarray, oversample: int) -> np.ndarray:
    """Average ``oversample x oversample`` blocks of a square oversampled array."""
    n = array.shape[0] // oversample
    return array.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


def _render_point(
    optics: _Optics, flux: float, dx: float, dy: float, half: int, *, oversample: int = 5
) -> np.ndarray:
    """Render a point source (the pixel-integrated PSF) on a ``2 half + 1`` stamp.

    The source sits at ``(half + dx, half + dy)`` in stamp pixels; the stamp sums to
    ``flux``. A PSF without a closed form is drawn by GalSim, pixel included.
    """
    if not optics.closed_form:
        import galsim

        image = galsim.ImageD(2 * half + 1, 2 * half + 1, scale=1.0)
        optics.galsim_psf().drawImage(image, offset=(dx, dy), method="auto")
        stamp = np.maximum(image.array, 0.0)
        return stamp * (flux / stamp.sum())
    coords = _subpixel_coords(half, oversample)
    u = coords - dx
    v = coords - dy
    stamp = _bin(optics.profile(u[np.newaxis, :] ** 2 + v[:, np.newaxis] ** 2), oversample)
    return stamp * (flux / stamp.sum())


def _point_half(optics: _Optics, flux: float, sky_sigma: float) -> int:
    """Stamp half-width of a point source: its wing drops below 0.1 sky sigma there."""
    radius = optics.radius_below(0.1 * sky_sigma / max(flux, 1e-30))
    return int(min(max(math.ceil(radius) + 1, math.ceil(4.0 * optics.fwhm)), _POINT_MAX_HALF))


def _sersic_b(n: float) -> float:
    """Return ``b_n`` of a Sersic profile (Ciotti & Bertin 1999 asymptotic series)."""
    return (
        2.0 * n
        - 1.0 / 3.0
        + 4.0 / (405.0 * n)
        + 46.0 / (25515.0 * n**2)
        + 131.0 / (1148175.0 * n**3)
        - 2194697.0 / (30690717750.0 * n**4)
    )


def _sersic_eval(
    u: np.ndarray,
    v: np.ndarray,
    n: float,
    r_half: float,
    q: float,
    pa_deg: float,
    truncate: float,
) -> np.ndarray:
    """Evaluate an elliptical Sersic profile (arbitrary normalisation) at offsets u, v.

    The profile is zero beyond ``truncate`` half-light radii (elliptical radius).
    """
    theta = math.radians(pa_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    major = u * cos + v * sin
    minor = (v * cos - u * sin) / q
    r = np.sqrt(major**2 + minor**2) / r_half
    return np.where(r <= truncate, np.exp(-_sersic_b(n) * r ** (1.0 / n)), 0.0)


def _galaxy_extent(n: float, r_half: float, fwhm: float) -> tuple[int, float]:
    """Stamp half-width and truncation radius (in half-light radii) of a galaxy.

    The profile is truncated at 5 (n <= 1.5) to 8 (n >= 4) half-light radii,
    symmetrically about its centre so that the centroid is unbiased; the stamp covers
    the truncated profile and at least 4 PSF FWHM on each side.
    """
    reach = min(max(5.0 + 1.2 * (n - 1.5), 5.0), 8.0)
    half = min(math.ceil(max(reach * r_half + 0.5, 4.0 * fwhm)), _GALAXY_MAX_HALF)
    return int(half), min(reach, (half - 0.5) / r_half)


def _sersic_stamp(
    n: float,
    r_half: float,
    q: float,
    pa_deg: float,
    dx: float,
    dy: float,
    half: int,
    truncate: float,
) -> np.ndarray:
    """Pixel-integrated, truncated Sersic profile on a ``2 half + 1`` stamp, summing to one.

    The centre sits at ``(half + dx, half + dy)``. The whole stamp is sampled 3x (5x
    for half-light radii under 3 px) and the central 5 x 5 pixels 25x.
    """
    shape = (n, r_half, q, pa_deg, truncate)
    oversample = 5 if r_half < 3.0 else 3
    coords = _subpixel_coords(half, oversample)
    stamp = _bin(
        _sersic_eval(coords[np.newaxis, :] - dx, coords[:, np.newaxis] - dy, *shape),
        oversample,
    )
    core = min(2, half)
    fine = _subpixel_coords(core, 25)
    block = slice(half - core, half + core + 1)
    stamp[block, block] = _bin(
        _sersic_eval(fine[np.newaxis, :] - dx, fine[:, np.newaxis] - dy, *shape), 25
    )
    return stamp / stamp.sum()


# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------


@dataclass
class _Source:
    """One object to render; galaxy shape fields are NaN for stars.

    ``clumps`` holds ``(k, 3)`` rows: clump offset dx, dy (px) from the centre and the
    clump flux (ADU); ``flux`` is the total including the clumps.
    """

    kind: str
    x: float
    y: float
    flux: float
    sersic_n: float = math.nan
    r_half: float = math.nan
    q: float = math.nan
    pa_deg: float = math.nan
    clumps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    profile: str = "sersic"
    """``sersic`` (rendered here), or ``bulge_disk`` or ``knotty`` (drawn by GalSim)."""
    bulge_fraction: float = math.nan
    n_knots: int = 0
    knot_fraction: float = math.nan
    galsim_seed: int = 0


def _split_position(x: float, y: float) -> tuple[int, int, float, float]:
    """Return the nearest pixel ``(cx, cy)`` and the offset ``(dx, dy)`` from it."""
    cx = math.floor(x + 0.5)
    cy = math.floor(y + 0.5)
    return cx, cy, x - cx, y - cy


def _render_source(
    source: _Source, optics: _Optics, sky_sigma: float
) -> tuple[np.ndarray, int, int]:
    """Render one noiseless object.

    Returns
    -------
    stamp : numpy.ndarray
        float64 stamp that sums to ``source.flux`` (clumps included).
    y0, x0 : int
        Mosaic pixel of the stamp's ``[0, 0]`` element.
    """
    cx, cy, dx, dy = _split_position(source.x, source.y)
    if source.kind == "star":
        half = _point_half(optics, source.flux, sky_sigma)
        return _render_point(optics, source.flux, dx, dy, half), cy - half, cx - half
    if source.profile != "sersic":
        return _render_galsim(source, optics, cx, cy, dx, dy)
    smooth_flux = source.flux - float(source.clumps[:, 2].sum())
    half, truncate = _galaxy_extent(source.sersic_n, source.r_half, optics.fwhm)
    # The intrinsic profile is centred on a pixel (so its pixel binning is symmetric and
    # leaves the centroid alone) and the subpixel offset is carried by the PSF kernel.
    intrinsic = _sersic_stamp(
        source.sersic_n, source.r_half, source.q, source.pa_deg, 0.0, 0.0, half, truncate
    )
    kernel = _render_point(optics, 1.0, dx, dy, optics.kernel_half)
    stamp = signal.fftconvolve(intrinsic, kernel, mode="full")
    np.maximum(stamp, 0.0, out=stamp)
    stamp *= smooth_flux / stamp.sum()
    full_half = half + optics.kernel_half
    y0, x0 = cy - full_half, cx - full_half
    for cdx, cdy, cflux in source.clumps:
        px, py, pdx, pdy = _split_position(source.x + cdx, source.y + cdy)
        phalf = _point_half(optics, cflux, sky_sigma)
        _paste(
            stamp, _render_point(optics, cflux, pdx, pdy, phalf), py - phalf - y0, px - phalf - x0
        )
    return stamp, y0, x0


def _render_galsim(
    source: _Source, optics: _Optics, cx: int, cy: int, dx: float, dy: float
) -> tuple[np.ndarray, int, int]:
    """Draw a bulge + disk or knotty galaxy with GalSim through the PSF (pixel included)."""
    import galsim

    disk = galsim.Exponential(half_light_radius=source.r_half)
    if source.profile == "bulge_disk":
        bulge = galsim.DeVaucouleurs(half_light_radius=_BULGE_R_HALF_FRACTION * source.r_half)
        galaxy = source.bulge_fraction * bulge + (1.0 - source.bulge_fraction) * disk
    else:
        knots = galsim.RandomKnots(
            npoints=source.n_knots,
            half_light_radius=source.r_half,
            rng=galsim.BaseDeviate(source.galsim_seed),
        )
        galaxy = (1.0 - source.knot_fraction) * disk + source.knot_fraction * knots
    shear = galsim.Shear(q=source.q, beta=source.pa_deg * galsim.degrees)
    galaxy = galaxy.shear(shear).withFlux(source.flux)
    psf = optics.galsim_psf()
    half = _galaxy_extent(1.0, source.r_half, optics.fwhm)[0] + optics.kernel_half
    image = galsim.ImageD(2 * half + 1, 2 * half + 1, scale=1.0)
    galsim.Convolve(galaxy, psf).drawImage(image, offset=(dx, dy), method="auto")
    stamp = np.maximum(image.array, 0.0)
    stamp *= source.flux / stamp.sum()
    return stamp, cy - half, cx - half


def _overlap(
    shape: tuple[int, ...], stamp_shape: tuple[int, ...], y0: int, x0: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Return (canvas, stamp) slices of the overlap of a stamp placed at ``(y0, x0)``."""
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + stamp_shape[0], shape[0]), min(x0 + stamp_shape[1], shape[1])
    if ya >= yb or xa >= xb:
        return None
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def _paste(canvas: np.ndarray, stamp: np.ndarray, y0: int, x0: int) -> None:
    """Add ``stamp`` to ``canvas`` with its ``[0, 0]`` at ``(y0, x0)``, clipped."""
    overlap = _overlap(canvas.shape, stamp.shape, y0, x0)
    if overlap is not None:
        canvas[overlap[0]] += stamp[overlap[1]]


def _matched_snr(
    stamp: np.ndarray, sky_sigma: float, gain: float, noise_kernel: np.ndarray | None = None
) -> float:
    """Matched-filter S/N of a noiseless stamp: sky noise plus its own Poisson.

    The filter weighs each pixel by its signal over its variance (optimal for white
    noise). In noise correlated by ``noise_kernel`` (:func:`noise_kernel`) the
    filtered noise is the weighted noise convolved with the kernel.
    """
    model = np.maximum(stamp, 0.0)
    variance = sky_sigma**2 + model / gain
    if noise_kernel is None:
        return float(np.sqrt(np.sum(model**2 / variance)))
    weighted_sigma = model / np.sqrt(variance)
    filtered_noise = np.sqrt(np.sum(signal.fftconvolve(weighted_sigma, noise_kernel) ** 2))
    return float(np.sum(model**2 / variance) / filtered_noise)


def noise_kernel(noise_correlation: float) -> np.ndarray | None:
    """The unit-norm 3 x 3 kernel that correlates the noise (None: white noise).

    Side neighbours weigh ``noise_correlation``, corners its square, the pixel 1:
    the outer product of ``(c, 1, c)``, as a drizzle or a bilinear resampling
    spreads each input pixel's noise.
    """
    if noise_correlation == 0:
        return None
    row = np.array([noise_correlation, 1.0, noise_correlation])
    kernel = np.outer(row, row)
    return kernel / np.sqrt(np.sum(kernel**2))


def _count(rng: np.random.Generator, expected: float) -> int:
    """Round ``expected`` up or down at random so that the mean is exact."""
    whole = math.floor(expected)
    return int(whole + (rng.random() < expected - whole))


def _sample_mags(
    rng: np.random.Generator, count: int, mag_range: tuple[float, float], slope: float
) -> np.ndarray:
    """Draw magnitudes with ``dN/dm ∝ 10**(slope m)`` over ``mag_range``."""
    lo, hi = (float(m) for m in mag_range)
    u = rng.random(count)
    if hi == lo or slope == 0:
        return lo + (hi - lo) * u
    span = 10.0 ** (slope * (hi - lo)) - 1.0
    return lo + np.log10(1.0 + u * span) / slope


def _mag_to_flux(mag: np.ndarray | float, zero_point: float) -> np.ndarray | float:
    """Convert magnitude to flux (ADU)."""
    return 10.0 ** (-0.4 * (np.asarray(mag) - zero_point))


def _draw_galaxy_shapes(
    rng: np.random.Generator, mags: np.ndarray, config: SimulationConfig
) -> dict[str, np.ndarray]:
    """Draw Sersic index, half-light radius (px), axis ratio and position angle."""
    count = len(mags)
    lo, hi = config.r_half_range_arcsec
    log_r = math.log10(0.5) - 0.117 * (mags - 20.0) + rng.normal(0.0, 0.15, count)
    return {
        "sersic_n": rng.uniform(*config.sersic_n_range, count),
        "r_half": np.clip(10.0**log_r, lo, hi) / config.pixel_scale_arcsec,
        "q": rng.uniform(0.3, 1.0, count),
        "pa_deg": rng.uniform(0.0, 180.0, count),
    }


def _draw_clumps(
    rng: np.random.Generator,
    r_half: float,
    q: float,
    pa_deg: float,
    smooth_flux: float,
    *,
    count_range: tuple[int, int] = (1, 6),
    fraction_range: tuple[float, float] = _CLUMP_FRACTION_RANGE,
) -> np.ndarray:
    """Draw clumps of a host: ``(k, 3)`` rows of offset dx, dy (px) and flux (ADU).

    Clumps lie inside the ellipse of 1.5 half-light radii, at least 3 px apart and
    2 px from the centre; each holds a share of the smooth host flux drawn from
    ``fraction_range`` (default 2-15 %).
    """
    wanted = int(rng.integers(count_range[0], count_range[1] + 1))
    theta = math.radians(pa_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    placed: list[tuple[float, float]] = []
    for _ in range(200):
        if len(placed) >= wanted:
            break
        rho = _CLUMP_REACH * r_half * math.sqrt(rng.random())
        phi = rng.uniform(0.0, 2.0 * math.pi)
        a, b = rho * math.cos(phi), rho * math.sin(phi) * q
        dx, dy = a * cos - b * sin, a * sin + b * cos
        if math.hypot(dx, dy) < _CLUMP_MIN_OFFSET:
            continue
        if all(math.hypot(dx - px, dy - py) >= _CLUMP_MIN_SEPARATION for px, py in placed):
            placed.append((dx, dy))
    fractions = rng.uniform(*fraction_range, len(placed))
    clumps = np.zeros((len(placed), 3))
    if placed:
        clumps[:, :2] = placed
        clumps[:, 2] = fractions * smooth_flux
    return clumps


def _make_clumpy(
    rng: np.random.Generator,
    flux: float,
    r_half_max: float,
    *,
    count_range: tuple[int, int] = (1, 6),
) -> dict[str, object]:
    """Draw a clumpy star-forming galaxy of total flux ``flux``: shape and clumps."""
    n = rng.uniform(*_CLUMPY_HOST_SERSIC)
    r_half = rng.uniform(_CLUMPY_HOST_R_HALF_PIX[0], max(r_half_max, _CLUMPY_HOST_R_HALF_PIX[0]))
    q = rng.uniform(0.5, 1.0)
    pa = rng.uniform(0.0, 180.0)
    clumps = _draw_clumps(rng, r_half, q, pa, 1.0, count_range=count_range)
    smooth = flux / (1.0 + clumps[:, 2].sum())
    clumps[:, 2] *= smooth
    return {"sersic_n": n, "r_half": r_half, "q": q, "pa_deg": pa, "clumps": clumps}


def _draw_mosaic_galaxies(
    rng: np.random.Generator, config: SimulationConfig, shape: tuple[int, int]
) -> list[_Source]:
    """Draw the galaxies of a mosaic: counts, shapes, blends and clumpy hosts."""
    ny, nx = shape
    count = _count(rng, config.galaxy_density * ny * nx / 1e6)
    if count == 0:
        return []
    mags = _sample_mags(rng, count, config.mag_range, config.mag_slope)
    flux = _mag_to_flux(mags, config.zero_point)
    shapes = _draw_galaxy_shapes(rng, mags, config)
    n_companions = min(round(config.blend_fraction * count), count - 1)
    x = np.empty(count)
    y = np.empty(count)
    n_free = count - n_companions
    x[:n_free] = rng.uniform(0.0, nx - 1.0, n_free)
    y[:n_free] = rng.uniform(0.0, ny - 1.0, n_free)
    sep_lo, sep_hi = (s / config.pixel_scale_arcsec for s in config.blend_separation_arcsec)
    for i in range(n_free, count):
        host = int(rng.integers(0, i))
        for _ in range(20):
            sep = rng.uniform(sep_lo, sep_hi)
            phi = rng.uniform(0.0, 2.0 * math.pi)
            xi, yi = x[host] + sep * math.cos(phi), y[host] + sep * math.sin(phi)
            if 0.0 <= xi <= nx - 1.0 and 0.0 <= yi <= ny - 1.0:
                break
        x[i] = min(max(xi, 0.0), nx - 1.0)
        y[i] = min(max(yi, 0.0), ny - 1.0)
    # each eligible galaxy is clumpy with probability clumpy_fraction: a rounded count
    # (round(0.5 * 1) == 0) left small scenes, such as training scenes, without any
    eligible = np.flatnonzero(mags <= config.clumpy_mag_limit)
    clumpy = set(eligible[rng.random(len(eligible)) < config.clumpy_fraction].tolist())
    r_half_max = max(config.r_half_range_arcsec[1] / config.pixel_scale_arcsec, 8.0)
    r_half_max = min(r_half_max, _CLUMPY_HOST_R_HALF_PIX[1])
    galsim_drawn = set()
    if config.galsim_fraction > 0:  # no draw at 0: earlier simulations stay bit-identical
        galsim_drawn = set(np.flatnonzero(rng.random(count) < config.galsim_fraction).tolist())
    galaxies = []
    for i in range(count):
        params: dict[str, object] = {
            "sersic_n": float(shapes["sersic_n"][i]),
            "r_half": float(shapes["r_half"][i]),
            "q": float(shapes["q"][i]),
            "pa_deg": float(shapes["pa_deg"][i]),
        }
        if i in clumpy:
            params = _make_clumpy(rng, float(flux[i]), r_half_max)
        elif i in galsim_drawn:
            params.update(_galsim_profile(rng))
        galaxies.append(_Source("galaxy", float(x[i]), float(y[i]), float(flux[i]), **params))
    return galaxies


def _draw_large_galaxies(
    rng: np.random.Generator, config: SimulationConfig, shape: tuple[int, int]
) -> list[_Source]:
    """Draw the large galaxies of a mosaic (``config.large_galaxy_density``)."""
    ny, nx = shape
    count = _count(rng, config.large_galaxy_density * ny * nx / 1e6)
    log_r = np.log(np.asarray(config.large_r_half_fwhm) * config.psf_fwhm_pix)
    galaxies = []
    for _ in range(count):
        mag = rng.uniform(*config.large_mag_range)
        params: dict[str, object] = {
            "sersic_n": float(rng.uniform(*config.sersic_n_range)),
            "r_half": float(np.exp(rng.uniform(*log_r))),
            "q": float(rng.uniform(0.2, 1.0)),
            "pa_deg": float(rng.uniform(0.0, 180.0)),
        }
        if rng.random() < 2.0 / 3.0:  # GalSim: bulge + disk or knotty, half of each
            params.update(_galsim_profile(rng))
        x, y = rng.uniform(0.0, nx - 1.0), rng.uniform(0.0, ny - 1.0)
        flux = float(_mag_to_flux(mag, config.zero_point))
        # no draw at 0: simulations without clumpy large galaxies stay bit-identical
        if config.large_clumpy_fraction > 0 and rng.random() < config.large_clumpy_fraction:
            params = _make_large_clumpy(rng, params, flux)
        galaxies.append(_Source("galaxy", float(x), float(y), flux, **params))
    return galaxies


def _make_large_clumpy(
    rng: np.random.Generator, params: dict[str, object], flux: float
) -> dict[str, object]:
    """Turn a large galaxy into a clumpy star-forming one of total flux ``flux``.

    The host becomes a smooth disk-like Sersic profile (n 0.5-1.5) of the same size,
    axis ratio and angle, with 1-4 clumps (:func:`_draw_clumps`) of
    :data:`LARGE_CLUMP_FRACTION_RANGE` of its smooth light each.
    """
    r_half, q, pa = float(params["r_half"]), float(params["q"]), float(params["pa_deg"])
    clumps = _draw_clumps(
        rng, r_half, q, pa, 1.0,
        count_range=_LARGE_CLUMP_COUNT, fraction_range=LARGE_CLUMP_FRACTION_RANGE,
    )  # fmt: skip
    clumps[:, 2] *= flux / (1.0 + clumps[:, 2].sum())
    return {
        "sersic_n": float(rng.uniform(*_CLUMPY_HOST_SERSIC)),
        "r_half": r_half,
        "q": q,
        "pa_deg": pa,
        "clumps": clumps,
    }


def _galsim_profile(rng: np.random.Generator) -> dict[str, object]:
    """Profile parameters of a GalSim galaxy: bulge + disk or knotty, half of each."""
    if rng.random() < 0.5:
        return {"profile": "bulge_disk", "sersic_n": math.nan,
                "bulge_fraction": float(rng.uniform(0.2, 0.6))}  # fmt: skip
    return {
        "profile": "knotty",
        "sersic_n": 1.0,
        "n_knots": int(rng.integers(10, 41)),
        "knot_fraction": float(rng.uniform(0.2, 0.6)),
        "galsim_seed": int(rng.integers(1, 2**31 - 1)),
    }


def _draw_stars(
    rng: np.random.Generator,
    count: int,
    mag_range: tuple[float, float],
    config: SimulationConfig,
    shape: tuple[int, int],
) -> list[_Source]:
    """Draw ``count`` stars at uniform positions with rising number counts."""
    ny, nx = shape
    mags = _sample_mags(rng, count, mag_range, config.star_mag_slope)
    x = rng.uniform(0.0, nx - 1.0, count)
    y = rng.uniform(0.0, ny - 1.0, count)
    flux = _mag_to_flux(mags, config.zero_point)
    return [_Source("star", float(x[i]), float(y[i]), float(flux[i])) for i in range(count)]


# --------------------------------------------------------------------------------------
# sky, noise, saturation
# --------------------------------------------------------------------------------------


def _sky_background(
    rng: np.random.Generator, shape: tuple[int, int], level: float, amplitude: float
) -> np.ndarray:
    """Constant ``level`` plus a smooth linear + quadratic gradient.

    ``amplitude`` is the approximate peak-to-peak variation (ADU) across the array.
    """
    ny, nx = shape
    u = np.linspace(-1.0, 1.0, nx, dtype=np.float32)
    v = np.linspace(-1.0, 1.0, ny, dtype=np.float32)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    gx = np.float32(0.4 * amplitude * math.cos(phi))
    gy = np.float32(0.4 * amplitude * math.sin(phi))
    curve = np.float32(0.1 * amplitude * rng.uniform(-1.0, 1.0))
    row = gx * u + curve * u**2
    col = gy * v + curve * v**2
    return np.float32(level) + col[:, np.newaxis] + row[np.newaxis, :]


def _add_noise(
    rng: np.random.Generator,
    model: np.ndarray,
    background: np.ndarray | float,
    sky_sigma: float,
    gain: float,
    kernel: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image, variance)``: background + model + Gaussian noise, float32.

    The variance is ``sky_sigma**2 + max(model, 0) / gain``. With a unit-norm
    ``kernel`` the unit normal deviates are convolved with it before they are
    scaled by the noise sigma: correlated noise of the same per-pixel variance.
    """
    variance = np.maximum(model, 0.0).astype(np.float32, copy=False)
    variance *= np.float32(1.0 / gain)
    variance += np.float32(sky_sigma**2)
    image = rng.standard_normal(model.shape, dtype=np.float32)
    if kernel is not None:
        image = ndimage.convolve(image, kernel.astype(np.float32), mode="reflect")
    image *= np.sqrt(variance)
    image += model
    image += background
    return image, variance


def _saturation_footprint(noiseless: np.ndarray, saturation: float) -> np.ndarray:
    """Saturated pixels plus their bleed trails, from the noiseless image.

    In each column, the charge of a run of saturated pixels above the saturation level
    spills half up and half down the column, filling each pixel up to saturation.
    """
    footprint = noiseless > saturation
    columns = np.flatnonzero(footprint.any(axis=0))
    for x in columns:
        column = noiseless[:, x].astype(np.float64)
        above = footprint[:, x].copy()
        edges = np.diff(np.concatenate(([0], above.astype(np.int8), [0])))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        capacity = np.clip(saturation - column, 0.0, None)
        for start, stop in zip(starts, stops, strict=True):
            half_excess = 0.5 * float(np.sum(column[start:stop] - saturation))
            down = np.cumsum(capacity[stop:])
            n_down = min(int(np.searchsorted(down, half_excess)) + 1, len(down))
            footprint[stop : stop + n_down, x] = True
            up = np.cumsum(capacity[:start][::-1])
            n_up = min(int(np.searchsorted(up, half_excess)) + 1, len(up))
            footprint[start - n_up : start, x] = True
    return footprint


def _apply_saturation(
    image: np.ndarray, mask: np.ndarray, footprint: np.ndarray, saturation: float
) -> None:
    """Clip the footprint and every pixel at or above saturation to it; set SAT."""
    clipped = footprint | (image >= saturation)
    image[clipped] = saturation
    mask[clipped] |= np.uint32(MaskBit.SAT)


# --------------------------------------------------------------------------------------
# artefact painters (one per artefact kind; shared by mosaic and stamps)
# --------------------------------------------------------------------------------------


def _paint_cosmic_ray(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, sky_sigma: float
) -> None:
    """Add one cosmic ray: a single pixel or a sharp 1-2 px wide, 1-15 px long track."""
    ny, nx = image.shape
    y0, x0 = rng.uniform(0.0, ny - 1.0), rng.uniform(0.0, nx - 1.0)
    length = 0.0 if rng.random() < 0.3 else rng.uniform(1.0, 15.0)
    theta = rng.uniform(0.0, math.pi)
    width = int(rng.integers(1, 3))
    t = np.linspace(0.0, length, max(2, int(4 * length) + 1))
    xs = np.floor(x0 + t * math.cos(theta) + 0.5).astype(np.int64)
    ys = np.floor(y0 + t * math.sin(theta) + 0.5).astype(np.int64)
    if width == 2:
        mostly_x = abs(math.cos(theta)) >= abs(math.sin(theta))
        xs = np.concatenate((xs, xs if mostly_x else xs + 1))
        ys = np.concatenate((ys, ys + 1 if mostly_x else ys))
    pixels = np.unique(np.stack((ys, xs), axis=1), axis=0)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < ny) & (pixels[:, 1] >= 0) & (pixels[:, 1] < nx)
    pixels = pixels[inside]
    amplitude = rng.uniform(30.0, 300.0) * sky_sigma
    values = amplitude * rng.uniform(0.5, 1.0, len(pixels))
    image[pixels[:, 0], pixels[:, 1]] += values.astype(image.dtype)
    mask[pixels[:, 0], pixels[:, 1]] |= np.uint32(MaskBit.CR)


def _paint_hot_pixel(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, sky_sigma: float
) -> None:
    """Add one hot pixel (50-2000 sky sigma) and flag it BAD."""
    ny, nx = image.shape
    y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx))
    image[y, x] += np.float32(rng.uniform(50.0, 2000.0) * sky_sigma)
    mask[y, x] |= np.uint32(MaskBit.BAD)


def _paint_bad_column(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, sky_sigma: float
) -> None:
    """Make one column (whole, or a segment) hot (+10-50 sky sigma) or dead (0); BAD."""
    ny, nx = image.shape
    x = int(rng.integers(0, nx))
    if rng.random() < 0.5:
        y0, y1 = 0, ny
    else:
        length = int(rng.integers(max(1, ny // 5), max(2, (4 * ny) // 5)))
        y0 = int(rng.integers(0, ny - length + 1))
        y1 = y0 + length
    if rng.random() < 0.5:
        image[y0:y1, x] += np.float32(rng.uniform(10.0, 50.0) * sky_sigma)
    else:
        image[y0:y1, x] = 0.0
    mask[y0:y1, x] |= np.uint32(MaskBit.BAD)


def _paint_trail(
    rng: np.random.Generator,
    model: np.ndarray,
    mask: np.ndarray,
    sky_sigma: float,
    *,
    through: tuple[float, float] | None = None,
    min_width: float = 0.0,
) -> None:
    """Add a straight satellite trail across the array, 2-4 px wide, 3-15 sky sigma.

    The cross-section is flat with one-pixel linear edges; STREAK marks every pixel it
    touches. ``through`` is an optional ``(y, x)`` point on the trail. A trail is
    at least ``min_width`` wide (the PSF's FWHM: the telescope blurs a satellite's
    light as a star's).
    """
    ny, nx = model.shape
    if through is None:
        through = (rng.uniform(0.0, ny - 1.0), rng.uniform(0.0, nx - 1.0))
    y0, x0 = through
    theta = rng.uniform(0.0, math.pi)
    width = max(rng.uniform(2.0, 4.0), min_width)
    amplitude = rng.uniform(3.0, 15.0) * sky_sigma
    cos, sin = math.cos(theta), math.sin(theta)
    reach = 0.5 * width + 0.5
    if abs(cos) >= abs(sin):  # step along x, spread over rows
        along = np.arange(nx, dtype=np.float64)
        centre = y0 + (along - x0) * sin / cos
        slope = abs(cos)
    else:  # step along y, spread over columns
        along = np.arange(ny, dtype=np.float64)
        centre = x0 + (along - y0) * cos / sin
        slope = abs(sin)
    spread = math.ceil(reach / slope) + 1
    offsets = np.arange(-spread, spread + 1)
    across = np.floor(centre + 0.5)[np.newaxis, :] + offsets[:, np.newaxis]
    distance = np.abs(across - centre[np.newaxis, :]) * slope
    value = amplitude * np.clip(reach - distance, 0.0, 1.0)
    along_2d = np.broadcast_to(along[np.newaxis, :], across.shape)
    limit = ny if abs(cos) >= abs(sin) else nx
    keep = (value > 0) & (across >= 0) & (across < limit)
    a = across[keep].astype(np.int64)
    b = along_2d[keep].astype(np.int64)
    rows, cols = (a, b) if abs(cos) >= abs(sin) else (b, a)
    model[rows, cols] += value[keep].astype(model.dtype)
    mask[rows, cols] |= np.uint32(MaskBit.STREAK)


def _paint_ghost(
    rng: np.random.Generator,
    model: np.ndarray,
    mask: np.ndarray,
    sky_sigma: float,
    centre: tuple[float, float],
) -> None:
    """Add a smooth ghost centred at ``centre = (y, x)``.

    The ghost is a disk of radius 20-60 px and 1.5-5 sky sigma with a fainter middle
    and soft edges; GHOST marks the pixels where it adds more than 0.5 sky sigma.
    """
    ny, nx = model.shape
    radius = rng.uniform(20.0, 60.0)
    inner = radius * rng.uniform(0.3, 0.7)
    depth = rng.uniform(0.0, 0.6)
    amplitude = rng.uniform(1.5, 5.0) * sky_sigma
    edge = 1.5
    cy, cx = centre
    reach = radius + 8.0 * edge
    overlap = _overlap(
        (ny, nx),
        (2 * math.ceil(reach) + 1, 2 * math.ceil(reach) + 1),
        math.floor(cy) - math.ceil(reach),
        math.floor(cx) - math.ceil(reach),
    )
    if overlap is None:
        return
    region = overlap[0]
    yy = np.arange(region[0].start, region[0].stop, dtype=np.float64)[:, np.newaxis]
    xx = np.arange(region[1].start, region[1].stop, dtype=np.float64)[np.newaxis, :]
    r = np.hypot(yy - cy, xx - cx)
    light = amplitude * (expit((radius - r) / edge) - depth * expit((inner - r) / edge))
    model[region] += light.astype(model.dtype)
    mask[region][light > _GHOST_MASK_SIGMA * sky_sigma] |= np.uint32(MaskBit.GHOST)


def _nan_chip_gap(
    rng: np.random.Generator, missing: np.ndarray, width_range: tuple[int, int]
) -> None:
    """Mark a rectangular chip gap (vertical or horizontal strip) as missing."""
    ny, nx = missing.shape
    width = int(rng.integers(width_range[0], width_range[1] + 1))
    vertical = rng.random() < 0.5
    across, along = (nx, ny) if vertical else (ny, nx)
    start = int(rng.integers(0, max(1, across - width + 1)))
    length = round(along * rng.uniform(0.3, 1.0))
    offset = int(rng.integers(0, along - length + 1))
    if vertical:
        missing[offset : offset + length, start : start + width] = True
    else:
        missing[start : start + width, offset : offset + length] = True


def _nan_hole(
    rng: np.random.Generator, missing: np.ndarray, radius_range: tuple[float, float]
) -> None:
    """Mark an irregular hole (a union of 2-5 overlapping disks) as missing.

    The first disk is centred on a random point of the array, so the hole is never
    empty.
    """
    ny, nx = missing.shape
    cy, cx = rng.uniform(0.0, ny - 1.0), rng.uniform(0.0, nx - 1.0)
    radius = rng.uniform(*radius_range)
    for j in range(int(rng.integers(2, 6))):
        spread = 0.0 if j == 0 else 0.6
        py = cy + rng.uniform(-spread, spread) * radius
        px = cx + rng.uniform(-spread, spread) * radius
        r = radius * rng.uniform(0.4, 0.8)
        half = math.ceil(r) + 1
        overlap = _overlap(
            (ny, nx), (2 * half + 1, 2 * half + 1), round(py) - half, round(px) - half
        )
        if overlap is None:
            continue
        region = overlap[0]
        yy = np.arange(region[0].start, region[0].stop)[:, np.newaxis]
        xx = np.arange(region[1].start, region[1].stop)[np.newaxis, :]
        missing[region] |= (yy - py) ** 2 + (xx - px) ** 2 <= r**2


def _apply_missing(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray, missing: np.ndarray
) -> None:
    """Set image and variance to NaN and the mask to NO_DATA (only) where missing."""
    image[missing] = np.nan
    variance[missing] = np.nan
    mask[missing] = np.uint32(MaskBit.NO_DATA)


# --------------------------------------------------------------------------------------
# mosaic
# --------------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    """Return an independent generator for a tuple of non-negative integers."""
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _blend_groups(
    x: np.ndarray, y: np.ndarray, ids: np.ndarray, link: float
) -> tuple[np.ndarray, np.ndarray]:
    """Friends-of-friends groups (value: smallest id) and neighbour counts within link."""
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = cKDTree(np.column_stack((x, y))).query_pairs(link, output_type="ndarray")
    neighbours = np.bincount(pairs.ravel(), minlength=n).astype(np.int64)
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, labels = connected_components(graph, directed=False)
    smallest = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, labels, ids)
    return smallest[labels], neighbours


def _ghost_centres(
    rng: np.random.Generator, stars: list[_Source], count: int, shape: tuple[int, int]
) -> list[tuple[float, float]]:
    """Centres of ``count`` ghosts: 40-150 px from the brightest stars, toward the centre."""
    ny, nx = shape
    order = sorted(range(len(stars)), key=lambda i: -stars[i].flux)[:count]
    centres = []
    for i in order:
        star = stars[i]
        vy, vx = (ny - 1) / 2.0 - star.y, (nx - 1) / 2.0 - star.x
        norm = math.hypot(vy, vx)
        distance = rng.uniform(40.0, 150.0)
        if norm < 1.0:
            phi = rng.uniform(0.0, 2.0 * math.pi)
            vy, vx, norm = math.sin(phi), math.cos(phi), 1.0
        else:
            distance = min(distance, norm)
        centres.append((star.y + distance * vy / norm, star.x + distance * vx / norm))
    return centres


def simulate_mosaic(config: SimulationConfig | None = None) -> SimulatedMosaic:
    """Simulate a survey mosaic with its ground truth.

    Parameters
    ----------
    config : SimulationConfig, optional
        Parameters; the defaults give a 2048 x 2048 Euclid-VIS-like mosaic.

    Returns
    -------
    SimulatedMosaic
        Image, variance, WCS, header and the truth tables and mask.

    Notes
    -----
    The noiseless model is the sum of the rendered galaxies (with their clumps),
    stars, ghosts next to the brightest stars and satellite trails. Saturation and
    bleed trails are computed from the noiseless model plus the sky background.
    Gaussian noise of variance ``sky_sigma**2 + max(model, 0) / gain`` is added, then
    cosmic rays, hot pixels and bad columns (these do not change the variance), then
    saturated pixels are clipped, and finally the chip gaps and holes are set to NaN.
    """
    if config is None:
        config = SimulationConfig()
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config is a {type(config).__name__}; pass a SimulationConfig or None.")
    shape = config.shape
    ny, nx = shape
    seed = config.seed
    area = ny * nx / REFERENCE_AREA
    optics = _optics(config)
    correlation = noise_kernel(config.noise_correlation)
    wcs = mosaic_wcs(
        shape,
        pixel_scale_arcsec=config.pixel_scale_arcsec,
        ra_center=config.ra_center,
        dec_center=config.dec_center,
    )

    galaxies = _draw_mosaic_galaxies(_rng(seed, _STREAM_GALAXIES), config, shape)
    galaxies += _draw_large_galaxies(_rng(seed, _STREAM_LARGE), config, shape)
    star_rng = _rng(seed, _STREAM_STARS)
    n_stars = _count(star_rng, config.star_density * ny * nx / 1e6)
    stars = _draw_stars(star_rng, n_stars, config.star_mag_range, config, shape)
    sources = galaxies + stars

    model = np.zeros(shape, dtype=np.float32)
    snr = np.empty(len(sources))
    footprints = _FootprintTruth(shape, FOOTPRINT_SKY_SIGMA * config.sky_sigma)
    for i, source in enumerate(sources):
        stamp, y0, x0 = _render_source(source, optics, config.sky_sigma)
        _paste(model, stamp, y0, x0)
        footprints.add(i + 1, stamp, y0, x0)
        snr[i] = _matched_snr(stamp, config.sky_sigma, config.gain, correlation)

    mask = np.zeros(shape, dtype=MASK_DTYPE)
    ghost_rng = _rng(seed, _STREAM_GHOSTS)
    n_ghosts = _count(ghost_rng, config.n_ghosts * area)
    for centre in _ghost_centres(ghost_rng, stars, n_ghosts, shape):
        _paint_ghost(ghost_rng, model, mask, config.sky_sigma, centre)
    trail_rng = _rng(seed, _STREAM_TRAILS)
    for _ in range(_count(trail_rng, config.n_satellite_trails * area)):
        _paint_trail(trail_rng, model, mask, config.sky_sigma, min_width=optics.fwhm)

    background = _sky_background(
        _rng(seed, _STREAM_BACKGROUND),
        shape,
        config.sky_level,
        config.sky_gradient_sigma * config.sky_sigma,
    )
    model_plus_sky = model + background
    saturated = _saturation_footprint(model_plus_sky, config.saturation)
    del model_plus_sky
    image, variance = _add_noise(
        _rng(seed, _STREAM_NOISE), model, background, config.sky_sigma, config.gain, correlation
    )
    del model, background

    for stream, expected, painter in (
        (_STREAM_COSMIC_RAYS, config.n_cosmic_rays, _paint_cosmic_ray),
        (_STREAM_HOT_PIXELS, config.n_hot_pixels, _paint_hot_pixel),
        (_STREAM_BAD_COLUMNS, config.n_bad_columns, _paint_bad_column),
    ):
        rng = _rng(seed, stream)
        for _ in range(_count(rng, expected * area)):
            painter(rng, image, mask, config.sky_sigma)
    _apply_saturation(image, mask, saturated, config.saturation)

    nan_rng = _rng(seed, _STREAM_NAN)
    missing = np.zeros(shape, dtype=bool)
    for _ in range(_count(nan_rng, config.n_chip_gaps * area)):
        _nan_chip_gap(nan_rng, missing, (10, 40))
    for _ in range(_count(nan_rng, config.n_holes * area)):
        _nan_hole(nan_rng, missing, (8.0, 30.0))
    _apply_missing(image, variance, mask, missing)

    truth_sources, truth_clumps = _truth_tables(sources, snr, saturated, wcs, config)
    return SimulatedMosaic(
        image=image,
        variance=variance,
        wcs=wcs,
        header=_make_header(config, wcs),
        truth_sources=truth_sources,
        truth_clumps=truth_clumps,
        truth_mask=mask,
        config=config,
        truth_segmentation=footprints.segmentation,
        truth_overlap=footprints.count > 1,
    )


class _FootprintTruth:
    """Per-pixel dominant object and number of objects above a light level."""

    def __init__(self, shape: tuple[int, int], level: float) -> None:
        self.level = level
        self.segmentation = np.zeros(shape, dtype=np.int32)
        self.count = np.zeros(shape, dtype=np.uint8)
        self._brightest = np.zeros(shape, dtype=np.float32)

    def add(self, object_id: int, stamp: np.ndarray, y0: int, x0: int) -> None:
        overlap = _overlap(self.segmentation.shape, stamp.shape, y0, x0)
        if overlap is None:
            return
        canvas, part = overlap
        values = stamp[part]
        above = values > self.level
        brighter = above & (values > self._brightest[canvas])
        self.count[canvas] += above.astype(np.uint8)
        self.segmentation[canvas][brighter] = object_id
        self._brightest[canvas][brighter] = values[brighter]


def _truth_tables(
    sources: list[_Source],
    snr: np.ndarray,
    saturated: np.ndarray,
    wcs: WCS,
    config: SimulationConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the truth source and clump tables."""
    ny, nx = saturated.shape
    n = len(sources)
    ids = np.arange(1, n + 1, dtype=np.int64)
    x = np.array([s.x for s in sources], dtype=np.float64)
    y = np.array([s.y for s in sources], dtype=np.float64)
    flux = np.array([s.flux for s in sources], dtype=np.float64)
    ra, dec = wcs.all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    groups, neighbours = _blend_groups(x, y, ids, BLEND_LINK_ARCSEC / config.pixel_scale_arcsec)
    cx = np.clip(np.floor(x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(y + 0.5).astype(np.int64), 0, ny - 1)
    sources_table = pd.DataFrame(
        {
            "id": ids,
            "x": x,
            "y": y,
            "ra": np.asarray(ra, dtype=np.float64),
            "dec": np.asarray(dec, dtype=np.float64),
            "flux": flux,
            "mag": config.zero_point - 2.5 * np.log10(flux),
            "kind": pd.Series([s.kind for s in sources], dtype="str"),
            "sersic_n": np.array([s.sersic_n for s in sources], dtype=np.float64),
            "r_half_pix": np.array([s.r_half for s in sources], dtype=np.float64),
            "axis_ratio": np.array([s.q for s in sources], dtype=np.float64),
            "position_angle_deg": np.array([s.pa_deg for s in sources], dtype=np.float64),
            "blend_group": groups.astype(np.int64),
            "n_neighbours_1p5arcsec": neighbours.astype(np.int64),
            "n_clumps": np.array([len(s.clumps) for s in sources], dtype=np.int64),
            "saturated": saturated[cy, cx].astype(bool) if n else np.zeros(0, bool),
            "snr": snr.astype(np.float64),
            "profile": pd.Series(
                [s.profile if s.kind == "galaxy" else "point" for s in sources], dtype="str"
            ),
        },
        columns=list(SOURCE_COLUMNS),
    )
    host = np.concatenate(
        [np.full(len(s.clumps), i + 1, dtype=np.int64) for i, s in enumerate(sources)]
        + [np.zeros(0, np.int64)]
    )
    rows = np.concatenate([s.clumps for s in sources] + [np.zeros((0, 3))])
    clump_x = x[host - 1] + rows[:, 0] if len(host) else np.zeros(0)
    clump_y = y[host - 1] + rows[:, 1] if len(host) else np.zeros(0)
    if len(host):
        clump_ra, clump_dec = wcs.all_pix2world(clump_x, clump_y, 0)
    else:
        clump_ra, clump_dec = np.zeros(0), np.zeros(0)
    clumps_table = pd.DataFrame(
        {
            "id": np.arange(1, len(host) + 1, dtype=np.int64),
            "host_id": host,
            "x": clump_x.astype(np.float64),
            "y": clump_y.astype(np.float64),
            "ra": np.asarray(clump_ra, dtype=np.float64),
            "dec": np.asarray(clump_dec, dtype=np.float64),
            "flux": rows[:, 2].astype(np.float64),
        },
        columns=list(CLUMP_COLUMNS),
    )
    return sources_table, clumps_table


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def write_simulation(sim: SimulatedMosaic, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write a simulated mosaic and its truth to ``out_dir``.

    Files, each written atomically (a temporary name in ``out_dir``, then
    :func:`os.replace`):

    - ``mosaic.fits``: primary HDU with the float32 image and the full header, plus an
      ``EXTNAME='VARIANCE'`` float32 image HDU with the same WCS;
    - ``truth_sources.parquet`` and ``truth_clumps.parquet``;
    - ``truth_mask.fits``: the uint32 mask (stored as int32 with ``BZERO = 2**31``;
      ``astropy.io.fits.getdata(path, uint=True)`` reads it back as uint32) with the
      WCS header and the plane names in COMMENT cards.

    Parameters
    ----------
    sim : SimulatedMosaic
        The simulation to write.
    out_dir : str or os.PathLike
        Output directory, created if needed.

    Returns
    -------
    dict of str to pathlib.Path
        Keys ``"mosaic"``, ``"truth_sources"``, ``"truth_clumps"``, ``"truth_mask"``.
    """
    if not isinstance(sim, SimulatedMosaic):
        raise TypeError(f"sim is a {type(sim).__name__}; pass the SimulatedMosaic to write.")
    if not isinstance(out_dir, str | os.PathLike):
        raise ValueError(f"out_dir={out_dir!r} is not a path; give a directory path.")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"out_dir={str(directory)!r} is a file; give a directory path.")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "mosaic": directory / "mosaic.fits",
        "truth_sources": directory / "truth_sources.parquet",
        "truth_clumps": directory / "truth_clumps.parquet",
        "truth_mask": directory / "truth_mask.fits",
    }
    wcs_header = sim.wcs.to_header()

    primary = fits.PrimaryHDU(data=np.asarray(sim.image, dtype=np.float32), header=sim.header)
    variance_header = wcs_header.copy()
    variance_header["BUNIT"] = ("adu2", "variance of the image")
    variance_hdu = fits.ImageHDU(
        data=np.asarray(sim.variance, dtype=np.float32), header=variance_header, name="VARIANCE"
    )
    with atomic_path(paths["mosaic"]) as temporary:
        fits.HDUList([primary, variance_hdu]).writeto(temporary, overwrite=True)

    for key, table in (
        ("truth_sources", sim.truth_sources),
        ("truth_clumps", sim.truth_clumps),
    ):
        with atomic_path(paths[key]) as temporary:
            table.to_parquet(temporary, index=False)

    mask_header = wcs_header.copy()
    mask_header["SIMVERS"] = (SIMULATOR_VERSION, "survey_seg.simulate version")
    mask_header["SIMSEED"] = (int(sim.config.seed), "simulation seed")
    for bit in MaskBit:
        mask_header.add_comment(f"bit {int(bit).bit_length() - 1}: {bit.name}")
    mask_hdu = fits.PrimaryHDU(data=np.asarray(sim.truth_mask, dtype=np.uint32), header=mask_header)
    with atomic_path(paths["truth_mask"]) as temporary:
        mask_hdu.writeto(temporary, overwrite=True)
    return paths
