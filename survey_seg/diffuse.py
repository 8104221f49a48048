"""Diffuse sources: faint large galaxies that no PSF-scale detection sees whole.

A galaxy whose light is spread over a half-light radius of many PSF widths can
carry a high total S/N and still lie below the noise in every pixel: the network,
which sees objects on the PSF's scale, finds nothing there, or a few noise bumps
on it that it takes for compact sources (each a source of its own: the galaxy
is shattered). Smoothed on its own scale, the same light is significant.

:func:`diffuse_sources` looks for it in the light that the sources do not
explain: the S/N outside every source, smoothed by a Gaussian several PSF widths
wide, where it is significant and above the smoothed light of the sources
themselves (the wings of a bright star beyond its footprint are its own light,
not a diffuse object). The faint compact sources inside a region (the noise
bumps) are pieces: next to an extended source (a galaxy's body) the region is
that galaxy's outskirts, and its pieces join the galaxy; elsewhere the region
with its pieces is a source of its own. Significant sources (a star or a
compact galaxy seen through the light) and extended ones stay as they are.
Pure numpy; every step is local.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from survey_seg.blends import EIGHT_CONNECTED
from survey_seg.measure import label_maximum, label_maximum_position, relabel_in_raster_order
from survey_seg.noise import gaussian_kernel_norm

__all__ = ["DiffuseConfig", "diffuse_sources"]


@dataclass(frozen=True)
class DiffuseConfig:
    """How diffuse light is found, in units of the PSF FWHM and of the noise.

    Attributes
    ----------
    smoothing_fwhm : float
        Gaussian sigma of the smoothing, in PSF FWHMs: the scale of the objects
        looked for (a galaxy's half-light radius of a few PSF widths and more).
    min_significance : float
        Smoothed S/N (unit noise after smoothing) that the diffuse light must
        exceed.
    min_area_fwhm2 : float
        Smallest region of diffuse light, in squared PSF FWHMs. A source at least
        this large is extended (a galaxy's body, not a star or a noise bump): a
        region within the smoothing sigma of one is its outskirts, so that the
        region's pieces join it and no diffuse source is made.
    max_piece_snr : float
        A compact source whose peak lies in a region is a piece of it (a noise
        bump) when it stands less than this far out of the light around it: the
        largest of its pixels' significance minus the mean S/N of the pixels
        around outside every source, smoothed alike.
    max_pixel_snr : float
        Per-pixel S/N at which the unexplained light is clipped: diffuse light is
        faint in every pixel, so that a few bright pixels left outside the
        sources (a cosmic ray's edge, a star's core) cannot make a region.
    """

    smoothing_fwhm: float = 3.0
    min_significance: float = 6.0
    min_area_fwhm2: float = 10.0
    max_piece_snr: float = 5.0
    max_pixel_snr: float = 3.0


def diffuse_sources(
    sources: np.ndarray,
    footprints: np.ndarray,
    snr: np.ndarray,
    significance: np.ndarray,
    excluded: np.ndarray,
    *,
    psf_fwhm_pix: float,
    significance_sigma: float,
    config: DiffuseConfig = DiffuseConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Add the diffuse sources of a window, each with the noise bumps it holds.

    Parameters
    ----------
    sources, footprints : numpy.ndarray
        int labels of the sources found on the PSF's scale (0: sky).
    snr : numpy.ndarray
        Per-pixel S/N (flux over noise sigma; 0 where there is no data).
    significance : numpy.ndarray
        The S/N smoothed on the PSF's scale to unit noise: where a source's peak
        is, and how far it stands out of the diffuse light.
    excluded : numpy.ndarray
        Boolean: pixels whose light is no object's (artefacts: a trail or a
        ghost is diffuse light too); with two pixels around them.
    psf_fwhm_pix : float
        PSF FWHM in pixels of these arrays.
    significance_sigma : float
        Gaussian sigma (pixels) with which ``significance`` was smoothed.
    config : DiffuseConfig
        Scales and thresholds.

    Returns
    -------
    sources, footprints : numpy.ndarray
        int32 labels, numbered in raster order; a diffuse source is a footprint
        of its own, and a piece that joins a source joins its footprint.
    """
    if not psf_fwhm_pix > 0:
        raise ValueError(f"psf_fwhm_pix={psf_fwhm_pix!r}; give the PSF FWHM in pixels (> 0)")
    excluded = ndimage.binary_dilation(excluded, EIGHT_CONNECTED, iterations=2)
    snr = np.where(excluded, 0.0, snr)
    clipped = np.clip(snr, -config.max_pixel_snr, config.max_pixel_snr)
    sigma = config.smoothing_fwhm * psf_fwhm_pix
    norm = gaussian_kernel_norm(sigma)
    faint = _faint_sources(
        sources, clipped, significance, (sigma, significance_sigma), config.max_piece_snr
    )
    bright = (sources > 0) & ~faint[sources]
    # the light that no bright source explains (the faint ones' included), smoothed to
    # unit noise, where the bright sources' own light smoothed alike is fainter
    unexplained = ndimage.gaussian_filter(np.where(bright, 0.0, clipped), sigma, truncate=4.0)
    explained = ndimage.gaussian_filter(np.where(bright, snr, 0.0), sigma, truncate=4.0)
    diffuse = (unexplained > config.min_significance * norm) & (unexplained > explained)
    min_area = config.min_area_fwhm2 * psf_fwhm_pix**2
    regions = _large_regions(diffuse, min_area)
    if not regions.any():
        return sources, footprints
    return _join_pieces(sources, footprints, significance, faint, regions, min_area, sigma)


def _faint_sources(
    sources: np.ndarray,
    clipped: np.ndarray,
    significance: np.ndarray,
    sigmas: tuple[float, float],
    max_piece_snr: float,
) -> np.ndarray:
    """Per label ``0 .. n``: the source stands less than ``max_piece_snr`` out of the light around.

    The light around is the mean clipped S/N of the pixels outside every source
    within the first of ``sigmas``; it is smoothed as ``significance`` was (the
    second) and taken from it, and a source's excess is the largest of its pixels'.
    """
    sigma, significance_sigma = sigmas
    n = int(sources.max())
    outside = (sources == 0).astype(np.float64)
    around = ndimage.gaussian_filter(clipped * outside, sigma, truncate=4.0)
    weight = ndimage.gaussian_filter(outside, sigma, truncate=4.0)
    pedestal = around / np.maximum(weight, 1e-3)
    filtered = ndimage.gaussian_filter(pedestal, significance_sigma, truncate=4.0)
    excess = significance - filtered / gaussian_kernel_norm(significance_sigma)
    faint = label_maximum(excess, sources, np.arange(n + 1)) < max_piece_snr
    faint[0] = False
    return faint


def _large_regions(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Connected regions (8-connected) of ``mask`` of at least ``min_area`` pixels."""
    regions, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if n == 0:
        return regions
    area = np.bincount(regions.ravel(), minlength=n + 1)
    small = area < min_area
    small[0] = False
    regions[small[regions]] = 0
    return relabel_in_raster_order(regions)


def _join_pieces(
    sources: np.ndarray,
    footprints: np.ndarray,
    significance: np.ndarray,
    faint: np.ndarray,
    regions: np.ndarray,
    min_area: float,
    reach: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each region joins its pieces to the galaxy it surrounds, or becomes a source.

    A region surrounds the extended source (a galaxy's body, not a star) with
    the highest peak within ``reach`` pixels of it.
    """
    n_sources, n_regions = int(sources.max()), int(regions.max())
    ys, xs = label_maximum_position(significance, sources, np.arange(1, n_sources + 1))
    region_of = np.zeros(n_sources + 1, dtype=np.int64)
    present = ys >= 0
    region_of[1:][present] = regions[ys[present], xs[present]]
    # a piece is compact: a faint source as large as a region is a galaxy of its own
    extended = np.bincount(sources.ravel(), minlength=n_sources + 1) >= min_area
    piece = (region_of > 0) & faint & ~extended
    kept = (sources > 0) & ~piece[sources]
    # a region around an extended source (a galaxy's body) is its outskirts
    peak = np.full(n_sources + 1, -np.inf)
    peak[1:][present] = significance[ys[present], xs[present]]
    radius = int(np.ceil(reach))
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= reach
    reached = ndimage.grey_dilation(regions, footprint=disk)
    holder = kept & extended[sources] & (reached > 0)
    anchor = np.zeros(n_regions + 1, dtype=np.int64)
    best = np.full(n_regions + 1, -np.inf)
    for region, label in set(zip(reached[holder].tolist(), sources[holder].tolist(), strict=True)):
        if peak[label] > best[region]:
            best[region], anchor[region] = peak[label], label
    n_footprints = int(footprints.max())
    footprint_of = np.zeros(n_sources + 1, dtype=np.int64)
    footprint_of[sources.ravel()] = footprints.ravel()
    # where each piece goes: the source its region surrounds, or the region's own new source
    target = np.where(anchor > 0, anchor, n_sources + np.arange(n_regions + 1))
    target_footprint = np.where(
        anchor > 0, footprint_of[anchor], n_footprints + np.arange(n_regions + 1)
    )
    new_sources = np.where(kept, sources, 0)
    new_footprints = np.where(kept, footprints, 0)
    is_piece = piece[sources]
    new_sources[is_piece] = target[region_of[sources[is_piece]]]
    new_footprints[is_piece] = target_footprint[region_of[sources[is_piece]]]
    open_sky = (regions > 0) & ~kept & ~is_piece & (anchor[regions] == 0)
    new_sources[open_sky] = n_sources + regions[open_sky]
    new_footprints[open_sky] = n_footprints + regions[open_sky]
    return (
        relabel_in_raster_order(new_sources.astype(np.int32)),
        relabel_in_raster_order(new_footprints.astype(np.int32)),
    )
