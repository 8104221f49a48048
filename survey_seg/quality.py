"""Data quality from the network's output: artefact planes and tile verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from survey_seg.masks import ARTEFACT_BITS, MaskBit
from survey_seg.measure import label_maximum_position, measure_segments
from survey_seg.psf import SIGMA_PER_FWHM

__all__ = [
    "BAD_COLUMN_MIN_RUN",
    "GHOST_MIN_RADIUS_FWHM",
    "NETWORK_ARTEFACT_BITS",
    "PIXEL_NOISE_MIN_COLUMN_RUN",
    "TRAIL_PIXEL_SNR",
    "artefact_planes",
    "column_gaps",
    "column_runs",
    "cosmic_ray_contrast_for_psf",
    "cosmic_ray_median_size",
    "cosmic_ray_pixels",
    "flagged_fraction",
    "ghosts_off_objects",
    "lit_within",
    "long_trails",
    "minor_axis_limit_for_psf",
    "regions_off",
    "round_ghosts",
    "sharp_cosmic_rays",
    "sharper_than_psf",
    "star_neighbour_ratio",
    "tile_verdict",
    "with_pixel_noise_artefacts",
]

BAD_COLUMN_MIN_RUN = 31
"""Pixels down one column beyond any cosmic ray's track (the simulator's reach 15)."""
PIXEL_NOISE_MIN_COLUMN_RUN = 3
"""A bad column seen only in one pixel's noise holds a run of this many BAD pixels
down it: noise correlated by a 3 x 3 kernel makes vertical pairs (on validation
mosaics 801-802 in correlated noise, runs of 2 kept BAD recall 0.900 / 0.978 at
precision 0.905 / 0.926, runs of 3 0.899 / 0.972 at 0.937 / 0.948)."""
TRAIL_PIXEL_SNR = 4.0
"""S/N of a 3 x 3 mean above which a native pixel of a binned STREAK block is the trail's."""
NETWORK_ARTEFACT_BITS = (MaskBit.CR, MaskBit.STREAK, MaskBit.GHOST, MaskBit.BAD, MaskBit.SAT)
"""Mask plane of each channel of the network's artefact head."""
_STAR_CONTRAST_MARGIN = 2.0  # cosmic-ray contrast limit over a star's own (undersampled PSFs)


SAT_NETWORK_MIN_LEVEL = 0.5
"""Where the saturation level is known, the network's SAT pixels need a pixel at this
fraction of it or more among their 3x3 neighbours: a pixel far below the level is not
saturated (on validation mosaics 801-804 the network's false SAT pixels are star cores
at 1 % of it, S/N about 200; SAT pixel precision 0.71-0.80 without this rule)."""


def artefact_planes(
    artefact_probability: np.ndarray,
    valid: np.ndarray,
    image: np.ndarray,
    saturation: float | None,
    *,
    threshold: float | Sequence[float],
    saturation_fraction: float = 0.98,
) -> np.ndarray:
    """uint32 artefact planes of a window.

    Parameters
    ----------
    artefact_probability : numpy.ndarray
        ``(5, H, W)`` probabilities, channels as :data:`NETWORK_ARTEFACT_BITS`.
    valid : numpy.ndarray
        Boolean valid-pixel mask; the rest is NO_DATA (and nothing else).
    image : numpy.ndarray
        The raw image, for the saturation level.
    saturation : float or None
        ``SATURATE``; pixels at or above ``saturation_fraction`` of it are SAT
        whatever the network says, and the network's SAT pixels are kept only
        next to (3x3) a pixel at :data:`SAT_NETWORK_MIN_LEVEL` of it or more.
    threshold : float or sequence of float
        Probability above which a plane is set: one for all, or one per channel.
    saturation_fraction : float
        See ``saturation``.

    Returns
    -------
    numpy.ndarray

    Notes
    -----
    A bad column's pixels between two long runs of BAD pixels down it
    (:func:`column_gaps`) are BAD too: the network loses a hot or dead column
    where an object's light outshines it (on validation mosaic 803, 95 % of a
    column flagged and its pixels across two galaxies not), and the column's
    light there is no object's.
    """
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (len(NETWORK_ARTEFACT_BITS),))
    planes = np.zeros(valid.shape, dtype=np.uint32)
    for channel, bit in enumerate(NETWORK_ARTEFACT_BITS):
        planes[artefact_probability[channel] > thresholds[channel]] |= np.uint32(bit)
    bad = np.uint32(MaskBit.BAD)
    planes[column_gaps((planes & bad) != 0)] |= bad  # a bad column under an object's light
    if saturation:
        sat = np.uint32(MaskBit.SAT)
        with np.errstate(invalid="ignore"):
            # no pixel near the level: the network took a bright core for a saturated one
            near_level = ndimage.maximum_filter(np.nan_to_num(image, nan=-np.inf), size=3) >= (
                SAT_NETWORK_MIN_LEVEL * saturation
            )
            planes[~near_level] &= ~sat
            planes[valid & (image >= saturation_fraction * saturation)] |= sat
    planes[~valid] = np.uint32(MaskBit.NO_DATA)
    return planes


GHOST_MAX_OBJECT_FRACTION = 0.5
"""A GHOST region with more than this fraction of its pixels on objects is their light."""
GHOST_MIN_WIDTH = 3
"""GHOST regions narrower than this (pixels) are lines, not ghosts (opened away)."""
GHOST_MIN_PROFILE_CORRELATION = -0.5
"""A GHOST region whose light falls away from the objects beside it is their wings: its
Spearman correlation of (smoothed) light with distance to the nearest object pixel is
below this. Measured with the rule off on validation mosaics 801-804: the true ghosts
give -0.27 to +0.05, the false regions that the object fraction keeps -0.55 to -0.97,
and on SDSS r (no ghost) the large galaxies' outer disks and the bright stars' halos
-0.58 to -0.97."""
GHOST_PROFILE_SMOOTHING = 1.5
"""Gaussian sigma (pixels) of the light whose profile :data:`GHOST_MIN_PROFILE_CORRELATION`
tests: the noise of single pixels would flatten it."""


def ghosts_off_objects(
    artefacts: np.ndarray,
    objects: np.ndarray,
    image: np.ndarray | None = None,
    *,
    max_object_fraction: float = GHOST_MAX_OBJECT_FRACTION,
    min_width: int = GHOST_MIN_WIDTH,
    min_profile_correlation: float = GHOST_MIN_PROFILE_CORRELATION,
) -> np.ndarray:
    """The GHOST plane where it is a ghost, not an object's outskirts.

    An optical ghost is a smooth, out-of-focus reflection tens of pixels across,
    detached from the objects (its light does not rise toward any of them); the
    network's GHOST channel also fires on the faint wings of large galaxies and
    bright stars, beyond their footprints. Three rules undo that: the plane is
    opened by a ``min_width`` square (a one- or two-pixel line is a column or a
    trail's edge, never a ghost); a connected GHOST region that lies mostly (more
    than ``max_object_fraction`` of its pixels) on object footprints is dropped;
    and, given the ``image``, so is a region whose light falls away from the
    objects (rank correlation of its smoothed light with the distance to the
    nearest object pixel below ``min_profile_correlation``): the wings of the
    object it surrounds or leans on. Measured on validation mosaics 801-804 (with
    the rules off, regions of 9 pixels or more): the true ghosts have at most
    1.4 % of their pixels on objects and profile correlations of -0.27 to +0.05;
    GHOST pixel precision 0.68-0.98 with the first two rules, 0.98-0.99 with all
    three, recall unchanged; on SDSS r the flagged pixels fall from 6,679 to 32.

    Parameters
    ----------
    artefacts : numpy.ndarray
        uint32 :class:`~survey_seg.masks.MaskBit` planes.
    objects : numpy.ndarray
        Boolean: pixels of a source's footprint.
    image : numpy.ndarray, optional
        The window's light (sky subtracted), for the profile rule; without it the
        rule is skipped.
    max_object_fraction : float
        Largest fraction of a ghost region's pixels that objects may hold.
    min_width : int
        Side of the opening square.
    min_profile_correlation : float
        Lowest rank correlation of light with distance to the objects.

    Returns
    -------
    numpy.ndarray
        ``artefacts`` with the GHOST bit cleared where these rules drop it.
    """
    bit = np.uint32(MaskBit.GHOST)
    ghost = (artefacts & bit) != 0
    if not ghost.any():
        return artefacts
    if min_width > 1:
        ghost = ndimage.binary_opening(ghost, structure=np.ones((min_width, min_width), bool))
    labels, n = ndimage.label(ghost)
    if n:
        index = np.arange(1, n + 1)
        on_objects = ndimage.mean(objects.astype(np.float64), labels, index)
        keep = np.zeros(n + 1, dtype=bool)
        keep[1:] = np.asarray(on_objects) <= max_object_fraction
        if image is not None and objects.any():
            falloff = _profile_correlations(labels, n, objects, image)
            keep[1:] &= falloff >= min_profile_correlation
        ghost = keep[labels]
    return _with_plane(artefacts, bit, ghost)


def _profile_correlations(
    labels: np.ndarray, n: int, objects: np.ndarray, image: np.ndarray
) -> np.ndarray:
    """Each region's Spearman correlation of smoothed light with distance to the objects.

    0 where either is constant over the region (nothing to rank).
    """
    from scipy.stats import spearmanr

    light = ndimage.gaussian_filter(
        np.nan_to_num(image.astype(np.float64, copy=False)), GHOST_PROFILE_SMOOTHING
    )
    distance = ndimage.distance_transform_edt(~objects)
    correlation = np.zeros(n)
    for i, region in enumerate(ndimage.find_objects(labels)):
        if region is None:
            continue
        inside = labels[region] == i + 1
        d, v = distance[region][inside], light[region][inside]
        if np.ptp(d) > 0 and np.ptp(v) > 0:
            correlation[i] = spearmanr(d, v).statistic
    return correlation


GHOST_MIN_AXIS_RATIO = 0.2
"""A GHOST region whose RMS minor axis is under this fraction of its major is a trail's
wing, not a ghost (:func:`round_ghosts`). On the native pixels of validation mosaics
801-802 under PSFs of 5.4 and 9 pix, regions of 100 pixels or more: the trails' wings
0.01-0.16, the true ghosts 0.25-0.98."""
GHOST_MIN_RADIUS_FWHM = 1.5
"""A ghost region holds at least a disk of this radius in PSF FWHM (:func:`round_ghosts`)."""


def round_ghosts(
    artefacts: np.ndarray,
    min_axis_ratio: float = GHOST_MIN_AXIS_RATIO,
    min_area: float = 0.0,
) -> np.ndarray:
    """The GHOST plane where its regions are round and wide, as an out-of-focus reflection is.

    A ghost is an image of the pupil: a disk or a ring many PSF widths across,
    cut at most by the objects on it. Seen on the native pixels of a wide PSF,
    the network's GHOST channel also fires along the faint wings of a satellite
    trail, a band a few PSF widths wide and hundreds of pixels long, and in
    specks. A connected GHOST region whose RMS minor axis
    (:func:`~survey_seg.measure.measure_segments`, every pixel weighing the same)
    is under ``min_axis_ratio`` of its major, or whose area is under
    ``min_area``, is cleared. On validation mosaic 802 under a 9-pix PSF, the
    trail's wings held 23,000 of the 24,000 false GHOST pixels, in regions of
    axis ratio 0.01-0.16; the true ghosts' regions are 0.86.

    Parameters
    ----------
    artefacts : numpy.ndarray
        uint32 :class:`~survey_seg.masks.MaskBit` planes.
    min_axis_ratio : float
        Least ratio of RMS minor to major axis of a region kept.
    min_area : float
        Least area (pixels) of a region kept: on the native pixels of a wide PSF,
        a disk of :data:`GHOST_MIN_RADIUS_FWHM` PSF FWHM.

    Returns
    -------
    numpy.ndarray
        ``artefacts`` with the GHOST bit cleared on elongated or small regions.
    """
    bit = np.uint32(MaskBit.GHOST)
    ghost = (artefacts & bit) != 0
    if not ghost.any():
        return artefacts
    labels, major, minor, area = _region_axes(ghost)
    keep = np.zeros(len(area) + 1, dtype=bool)
    keep[1:] = (minor >= min_axis_ratio * major) & (area >= min_area)
    return _with_plane(artefacts, bit, keep[labels])


def regions_off(plane: np.ndarray, other: np.ndarray, max_fraction: float = 0.5) -> np.ndarray:
    """The connected regions of ``plane`` that lie mostly off ``other``.

    Parameters
    ----------
    plane, other : numpy.ndarray
        Boolean images of the same shape.
    max_fraction : float
        Largest fraction of a region's pixels (8-connected) that may be on ``other``.

    Returns
    -------
    numpy.ndarray
        Boolean: ``plane`` without its regions mostly on ``other``.
    """
    labels, n = ndimage.label(plane, structure=np.ones((3, 3), bool))
    if not n:
        return plane
    on_other = np.bincount(labels.ravel(), weights=other.ravel(), minlength=n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)
    keep = on_other <= max_fraction * area
    keep[0] = False
    return keep[labels]


TRAIL_MIN_LENGTH_FWHM = 4.0
"""A STREAK region shorter than this many PSF FWHM is not a trail (:func:`long_trails`)."""


def long_trails(artefacts: np.ndarray, psf_fwhm_pix: float) -> np.ndarray:
    """The STREAK plane where it is a trail: regions at least a few PSF widths long.

    A satellite or meteor trail crosses the whole window, and a piece of one cut
    by a source is still many PSF widths long; the network's STREAK channel also
    fires on a bright star beside a neighbour, or on its spikes, in small blobs
    (on Spitzer IRAC, 1,800 regions of median area 3 pixels and 1.1 % of the
    pixels). A connected STREAK region (8-connected) whose full length, four times
    its pixels' RMS major axis (:func:`~survey_seg.measure.measure_segments`), is below
    :data:`TRAIL_MIN_LENGTH_FWHM` PSF widths is cleared. On validation mosaic 801
    the shortest true trail piece is 7.5 pix long (4.2 FWHM): STREAK precision
    0.921 -> 0.962 without a true pixel lost.

    Parameters
    ----------
    artefacts : numpy.ndarray
        uint32 :class:`~survey_seg.masks.MaskBit` planes.
    psf_fwhm_pix : float
        The PSF FWHM (pix) of the pixels the planes are on.

    Returns
    -------
    numpy.ndarray
        ``artefacts`` with the STREAK bit cleared on short regions.
    """
    bit = np.uint32(MaskBit.STREAK)
    streak = (artefacts & bit) != 0
    if not streak.any():
        return artefacts
    labels, rms_major, _, area = _region_axes(streak)
    length = 4.0 * rms_major
    keep = np.zeros(len(area) + 1, dtype=bool)
    keep[1:] = length >= TRAIL_MIN_LENGTH_FWHM * psf_fwhm_pix
    return _with_plane(artefacts, bit, keep[labels])


def _region_axes(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 8-connected regions of ``plane``: their labels, RMS major and minor axes, areas.

    Axes (every pixel weighing the same) and areas are per region ``1 .. n``.
    """
    labels, n = ndimage.label(plane, structure=np.ones((3, 3), bool))
    unit = np.ones(plane.shape, np.float32)
    shapes = measure_segments(labels, unit, unit, unit, np.zeros(plane.shape, np.uint32))
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, shapes.a, shapes.b, area


def _with_plane(artefacts: np.ndarray, bit: np.uint32, plane: np.ndarray) -> np.ndarray:
    """``artefacts`` with plane ``bit`` set where ``plane`` is and cleared elsewhere."""
    cleared = artefacts & ~bit
    return np.where(plane, cleared | bit, cleared).astype(np.uint32)


def flagged_fraction(core_planes: np.ndarray) -> float:
    """Fraction of a tile core's pixels that are unusable: NO_DATA or any artefact plane."""
    if core_planes.size == 0:
        return 0.0
    return float(np.mean((core_planes & np.uint32(ARTEFACT_BITS | MaskBit.NO_DATA)) != 0))


def tile_verdict(
    core_planes: np.ndarray, *, inspect_fraction: float, reject_fraction: float
) -> str:
    """``reject``, ``inspect`` or ``accept`` from the core's :func:`flagged_fraction`."""
    worst = flagged_fraction(core_planes)
    if worst > reject_fraction:
        return "reject"
    if worst > inspect_fraction:
        return "inspect"
    return "accept"


def minor_axis_limit_for_psf(
    limit: float, psf_fwhm_pix: float | None, nominal_psf_fwhm_pix: float
) -> float:
    """A minor-axis limit tuned at one PSF width, for another.

    A star's RMS minor axis grows as ``sqrt(sigma_psf**2 + 1/12)`` (the PSF's
    Gaussian sigma and the pixel's own RMS width), and the limit with it: at SDSS's
    0.7 pix FWHM a star is as narrow as a cosmic ray at Euclid's 1.8 pix, which the
    limit of 1.8 pix would flag.

    Parameters
    ----------
    limit : float
        The limit (pix) at ``nominal_psf_fwhm_pix``.
    psf_fwhm_pix : float or None
        PSF FWHM of the mosaic (pix); None keeps ``limit``.
    nominal_psf_fwhm_pix : float
        PSF FWHM the limit was tuned at (pix).

    Returns
    -------
    float
    """
    if psf_fwhm_pix is None:
        return float(limit)
    if not psf_fwhm_pix > 0:
        raise ValueError(f"psf_fwhm_pix={psf_fwhm_pix!r}; give the PSF FWHM in pixels (> 0)")

    def star_minor_axis(fwhm: float) -> float:
        return math.sqrt((fwhm * SIGMA_PER_FWHM) ** 2 + 1.0 / 12.0)

    return float(limit * star_minor_axis(psf_fwhm_pix) / star_minor_axis(nominal_psf_fwhm_pix))


def cosmic_ray_pixels(
    flux: np.ndarray,
    sigma: np.ndarray,
    usable: np.ndarray,
    *,
    significance: float,
    contrast: float,
    fine_contrast: float,
    min_neighbour_ratio: float = 0.0,
    median_size: int = 3,
) -> np.ndarray:
    """LA Cosmic-style sharp outliers: far above the 3x3 median and sharper than the PSF.

    A pixel is a cosmic-ray core when its excess over the 3x3 median is above
    ``significance`` and ``contrast`` times its noise and ``fine_contrast`` times
    the fine structure (the 3x3 median minus its 7x7 median: what a PSF-convolved
    source leaves there); its 8 neighbours above 3 sigma join it. A region so
    found is a cosmic ray only when its brightest pixel is a core too: beside
    the core of an undersampled star the fine structure is near zero, so that a
    wing pixel passes the test that the star's own core fails. Nor is it one when
    the two side neighbours of its brightest pixel along each axis hold, within
    three times their noise, at least ``min_neighbour_ratio`` of its light each
    (:func:`star_neighbour_ratio`: the least that a star of the PSF gives them,
    centred on a pixel; across a track they hold nothing): the contrast test
    alone takes an undersampled star a little off a pixel centre, or on a pixel
    corner, for a cosmic ray. On the SDSS g image, 53 of the 80 cosmic-ray
    regions left without a source were objects that the r and i images show at
    the same place (``benchmarks/crossband.py``).

    Parameters
    ----------
    flux, sigma : numpy.ndarray
        Background-subtracted image and its noise (0 where unusable).
    usable : numpy.ndarray
        Boolean: pixels that may be flagged (valid and not saturated).
    significance, contrast, fine_contrast : float
        The three limits above (van Dokkum 2001's sigma limit and ``f_lim``).
    min_neighbour_ratio : float
        See above (0: no neighbour test).
    median_size : int
        Odd side of the local median (3 above); the fine structure's outer median
        is ``2 median_size + 1`` wide (7). Under a PSF wider than that side no star
        stands out of it, while a track's pixels stop lifting it: in a 3 x 3
        window a track two pixels wide is the median itself
        (:func:`cosmic_ray_median_size`).

    Returns
    -------
    numpy.ndarray
        Boolean cosmic-ray pixels.
    """
    from scipy import ndimage

    local_median = ndimage.median_filter(flux, size=median_size)
    fine = local_median - ndimage.median_filter(local_median, size=2 * median_size + 1)
    excess = flux - local_median
    core = (
        (excess > significance * sigma)
        & (excess > contrast * sigma)
        & (excess > fine_contrast * fine)
        & usable
    )
    if not core.any():
        return core
    eight = np.ones((3, 3), bool)
    grown = ndimage.binary_dilation(core, structure=eight)
    regions, n = ndimage.label(core | (grown & usable & (flux > 3.0 * sigma)), structure=eight)
    ys, xs = label_maximum_position(flux, regions, np.arange(1, n + 1))
    sharp_peak = np.zeros(n + 1, dtype=bool)
    sharp_peak[1:] = core[ys, xs]
    if min_neighbour_ratio > 0:  # a star's light spills into its neighbours, a hit's does not
        padded = np.pad(flux, 1)
        along_y = (padded[ys, xs + 1] + padded[ys + 2, xs + 1]) / 2.0
        along_x = (padded[ys + 1, xs] + padded[ys + 1, xs + 2]) / 2.0
        # the poorer axis: across a track, its neighbours hold nothing
        sides = np.minimum(along_y, along_x)
        # within three times the noise of a mean of two pixels (3 / sqrt(2) sigma)
        star_like = sides + 2.1 * sigma[ys, xs] >= min_neighbour_ratio * flux[ys, xs]
        sharp_peak[1:] &= ~star_like
    return sharp_peak[regions]


def column_runs(pixels: np.ndarray, min_length: int = BAD_COLUMN_MIN_RUN) -> np.ndarray:
    """The pixels of ``pixels`` in runs of at least ``min_length`` down one column.

    A cosmic ray crosses a few pixels at some angle; a run that long down a single
    detector column is a hot bad column, which the sharpness test of
    :func:`cosmic_ray_pixels` takes for a track.
    """
    if min_length < 1:
        raise ValueError(f"min_length={min_length!r}; give a run length of at least 1 pixel")
    if pixels.shape[0] < min_length:
        return np.zeros_like(pixels, dtype=bool)
    column = np.ones((min_length, 1), dtype=bool)
    return ndimage.binary_opening(pixels, structure=column)


def column_gaps(pixels: np.ndarray, min_run: int = BAD_COLUMN_MIN_RUN) -> np.ndarray:
    """The pixels of each column between two runs of ``pixels`` at least ``min_run`` long.

    Two long runs down one detector column are one defect (:func:`column_runs`),
    and what lies between them belongs to it.

    Parameters
    ----------
    pixels : numpy.ndarray
        Boolean ``(H, W)`` plane (a BAD plane).
    min_run : int
        Least length (pixels) of a run down a column.

    Returns
    -------
    numpy.ndarray
        Boolean: each column's pixels from its first long run to its last, in the
        columns with two or more (none elsewhere).
    """
    pixels = np.asarray(pixels, dtype=bool)
    gaps = np.zeros_like(pixels)
    columns = np.flatnonzero(pixels.sum(axis=0) >= 2 * min_run)  # room for two runs
    if not columns.size:  # most windows: no work
        return gaps
    runs = column_runs(pixels[:, columns], min_run)
    above = np.maximum.accumulate(runs, axis=0)
    below = np.maximum.accumulate(runs[::-1], axis=0)[::-1]
    gaps[:, columns] = above & below
    return gaps


def lit_within(
    regions: np.ndarray,
    flux: np.ndarray,
    sigma: np.ndarray,
    *,
    min_snr: float = TRAIL_PIXEL_SNR,
    box: int = 3,
) -> np.ndarray:
    """Each region of ``regions`` cut down to its pixels that hold light.

    A binned screening flags a satellite trail block by block, so the trail comes
    back with a margin of up to ``binning - 1`` pixels of sky on each side. Within
    each connected region, the pixels whose ``box`` x ``box`` mean is above
    ``min_snr`` times its noise (a trail 3 sigma high gives 9 on its crest) are
    kept; a region without such a pixel stays whole.

    Parameters
    ----------
    regions : numpy.ndarray
        Boolean flagged pixels.
    flux, sigma : numpy.ndarray
        Background-subtracted image and its noise (0 where unusable).
    min_snr : float
        Least S/N of the box mean.
    box : int
        Side of the box.

    Returns
    -------
    numpy.ndarray
        Boolean: the kept pixels of ``regions``.
    """
    if not regions.any():
        return regions
    snr = np.where(sigma > 0, flux / np.where(sigma > 0, sigma, 1.0), 0.0)
    return _cut_down(regions, ndimage.uniform_filter(snr, size=box) * box > min_snr)


def _cut_down(regions: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Each 8-connected region of ``regions`` cut to its ``chosen`` pixels; whole without any."""
    chosen = chosen & regions
    labels, n = ndimage.label(regions, structure=np.ones((3, 3), bool))
    has_chosen = np.zeros(n + 1, dtype=bool)
    has_chosen[1:] = np.asarray(ndimage.maximum(chosen, labels, np.arange(1, n + 1)), dtype=bool)
    return chosen | (regions & ~has_chosen[labels])


def cosmic_ray_median_size(psf_fwhm_pix: float | None) -> int:
    """The local median's side for :func:`cosmic_ray_pixels` under a PSF.

    LA Cosmic's 3 x 3, or 5 x 5 under a PSF of 5 pix FWHM or more (None: 3). In a
    3 x 3 window a track two pixels wide is the median itself, so its pixels do
    not stand out of it; in a 5 x 5 one it fills at most 10 of 25 pixels. A star
    of that PSF is smooth across the window, so its core does not stand out
    either. A wider window would not find more tracks, and its median costs more
    (the fine structure's outer median is ``2 side + 1`` wide). With the 3 x 3
    median at PSF 5.4 pix, the simulated tracks were found at a pixel recall of
    0.45 (validation mosaic 802), with the 5 x 5 one at 0.98.
    """
    if psf_fwhm_pix is None or psf_fwhm_pix < 5.0:
        return 3
    return 5


def star_neighbour_ratio(psf_fwhm_pix: float) -> float:
    """What each side neighbour of a star's brightest pixel holds of its light, at least.

    The star centred on a pixel gives its side neighbours the least (a star off
    centre gives more to one side, a star on a pixel corner shares its light among
    four pixels): a pixel-integrated Gaussian of FWHM ``psf_fwhm_pix``. A cosmic
    ray's neighbours hold nothing of its light.
    """
    if not psf_fwhm_pix > 0:
        raise ValueError(f"psf_fwhm_pix={psf_fwhm_pix!r}; give the PSF FWHM in pixels (> 0)")
    from scipy import special

    scale = psf_fwhm_pix * SIGMA_PER_FWHM * math.sqrt(2.0)
    centre = special.erf(0.5 / scale)
    side = 0.5 * (special.erf(1.5 / scale) - centre)
    return float(side / centre)


CR_STAR_CONTRAST_MARGIN = 3.0
"""A cosmic-ray region of the network is kept when its sharpest pixel has more than
this many times the LA Cosmic contrast of a star of the PSF (:func:`sharp_cosmic_rays`)."""


def sharp_cosmic_rays(
    artefacts: np.ndarray,
    flux: np.ndarray,
    psf_fwhm_pix: float | None,
    peaks: np.ndarray,
    *,
    margin: float = CR_STAR_CONTRAST_MARGIN,
) -> np.ndarray:
    """The CR plane where it is sharper than a star: the network's hits on star cores undone.

    The network's CR channel marks the cores of real stars when their PSF is
    sharper than the ones it was trained on (Spitzer IRAC, 1.6 pix FWHM with a
    sharp core: 1.1 % of the pixels, one star in four). A cosmic ray is sharper
    than any PSF: a connected CR region that holds a source's peak (a star's core,
    or a cosmic ray the segmentation took for a source) is kept when one of its
    brightest pixel has an LA Cosmic contrast (excess over the 3x3 median over the
    fine structure, as :func:`cosmic_ray_pixels`) above ``margin`` times a star's
    (:func:`cosmic_ray_contrast_for_psf`), or when it is longer than a star's core
    (``2 FWHM + 1`` pixels: a track, whose pixels lift their own 3x3 median), and
    cleared otherwise; a region holding no source peak stays. On validation mosaic
    801: CR pixel recall 0.983 without the rule, 0.982 with it (0.965 when every
    region is tested, not only those on a peak), precision 0.920 to 0.934; on
    Spitzer the CR pixels fall from 1.1 % to 0.2 %.

    Parameters
    ----------
    artefacts : numpy.ndarray
        uint32 :class:`~survey_seg.masks.MaskBit` planes.
    flux : numpy.ndarray
        Background-subtracted image (0 where unusable).
    psf_fwhm_pix : float or None
        The PSF FWHM in the image's pixels; None: the rule is not applied.
    peaks : numpy.ndarray
        Boolean: the sources' peak pixels; only regions holding one are tested.
    margin : float
        Factor over a star's contrast.

    Returns
    -------
    numpy.ndarray
        ``artefacts`` with the CR bit cleared on regions no sharper than a star.
    """
    bit = np.uint32(MaskBit.CR)
    cosmic = (artefacts & bit) != 0
    if psf_fwhm_pix is None or not (cosmic & peaks).any():
        return artefacts  # no region on a source's peak: nothing to test (most windows)
    median3 = ndimage.median_filter(flux, size=3)
    fine = median3 - ndimage.median_filter(median3, size=7)
    excess = flux - median3
    star = cosmic_ray_contrast_for_psf(1.0, psf_fwhm_pix, margin=1.0)
    labels, n = ndimage.label(cosmic, structure=np.ones((3, 3), bool))
    index = np.arange(1, n + 1)
    has_peak = np.asarray(ndimage.maximum(peaks, labels, index), dtype=bool)
    y, x = label_maximum_position(flux, labels, index)  # a cosmic ray: its brightest pixel
    is_sharp = (excess[y, x] > 0) & (excess[y, x] > margin * star * np.maximum(fine[y, x], 0.0))
    extent = np.array([max(s.stop - s.start for s in box) for box in ndimage.find_objects(labels)])
    is_track = extent > 2.0 * psf_fwhm_pix + 1.0  # longer than a star's core
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = ~has_peak | is_sharp | is_track
    kept = keep[labels]
    return np.where(cosmic & ~kept, artefacts & ~bit, artefacts).astype(np.uint32)


def cosmic_ray_contrast_for_psf(
    contrast: float, psf_fwhm_pix: float | None, margin: float = _STAR_CONTRAST_MARGIN
) -> float:
    """LA Cosmic's contrast limit ``f_lim`` for a PSF: no star passes it.

    A pixel is a cosmic ray when its excess over the 3x3 median is more than
    ``f_lim`` times the fine structure (3x3 median minus its 7x7 median). A well
    sampled star has a contrast near 1 (1.1 at FWHM 1.8 pix), but an undersampled
    one puts most of its light in one pixel (19 at FWHM 0.7 pix, 105 at 0.5), and
    a bright one would pass any fixed limit. The limit is the larger of
    ``contrast`` and ``margin`` times the contrast of a star of the PSF centred on
    a pixel (its sharpest), whatever its flux; a cosmic ray's fine structure is
    near zero, its contrast far higher.

    Parameters
    ----------
    contrast : float
        The limit for a well-sampled PSF.
    psf_fwhm_pix : float or None
        PSF FWHM (pix), Gaussian; None keeps ``contrast``.
    margin : float
        Factor over the star's own contrast.

    Returns
    -------
    float
    """
    if psf_fwhm_pix is None:
        return float(contrast)
    if not psf_fwhm_pix > 0:
        raise ValueError(f"psf_fwhm_pix={psf_fwhm_pix!r}; give the PSF FWHM in pixels (> 0)")
    from scipy import ndimage, special

    sigma = psf_fwhm_pix * SIGMA_PER_FWHM
    edges = np.arange(-10.5, 11.0) / (sigma * math.sqrt(2.0))
    profile = 0.5 * np.diff(special.erf(edges))  # pixel-integrated, centred on pixel 10
    star = np.outer(profile, profile)
    median3 = ndimage.median_filter(star, size=3)
    fine = median3 - ndimage.median_filter(median3, size=7)
    star_contrast = (star[10, 10] - median3[10, 10]) / max(fine[10, 10], 1e-12 * star[10, 10])
    return float(max(contrast, margin * star_contrast))


def sharper_than_psf(
    minor_axis: np.ndarray, snr: np.ndarray, *, max_minor_axis: float, min_snr: float
) -> np.ndarray:
    """Segments too narrow for light that passed through the optics: cosmic rays.

    Parameters
    ----------
    minor_axis : numpy.ndarray
        RMS minor axis of each segment (pix).
    snr : numpy.ndarray
        S/N of each segment; faint segments are narrow by noise alone.
    max_minor_axis : float
        A PSF-convolved source is never narrower than this (about 0.72 pix for a
        FWHM of 1.8 pix, where stars measure 0.9).
    min_snr : float
        Only segments brighter than this are judged.

    Returns
    -------
    numpy.ndarray
        Boolean per segment.
    """
    with np.errstate(invalid="ignore"):
        return (np.asarray(minor_axis) < max_minor_axis) & (np.asarray(snr) > min_snr)


def with_pixel_noise_artefacts(
    artefact_probability: np.ndarray,
    pixel_noise_probability: np.ndarray,
    threshold: float | Sequence[float],
    *,
    min_ghost_area: float = 0.0,
) -> np.ndarray:
    """Artefact probabilities with the GHOST and BAD channels of a pass in one pixel's noise.

    Parameters
    ----------
    artefact_probability : numpy.ndarray
        ``(5, H, W)`` artefact head of the pass in the noise of the PSF's scale
        (channels as :data:`~survey_seg.quality.NETWORK_ARTEFACT_BITS`).
    pixel_noise_probability : numpy.ndarray
        The same head of the pass in one pixel's noise.
    threshold : float or sequence of float
        The model's artefact thresholds, one for all channels or one per channel.
    min_ghost_area : float
        Least area (pixels) of a region of the second pass's GHOST channel taken
        (a ghost is many PSF widths across; :data:`GHOST_MIN_RADIUS_FWHM`).

    Returns
    -------
    numpy.ndarray
        ``artefact_probability`` with the GHOST channel of
        ``pixel_noise_probability`` on its regions (8-connected, above the
        threshold) of at least ``min_ghost_area`` pixels and 0 elsewhere (the
        first pass's ghosts in correlated noise are its least precise: GHOST
        precision 0.90 against 0.98 on validation mosaics 801-804), and its BAD
        channel on the runs down a column of at least
        :data:`PIXEL_NOISE_MIN_COLUMN_RUN` pixels (:func:`column_runs`). Seen in one
        pixel's noise, correlated noise has specks that the channels take for hot
        pixels and short columns (on validation mosaics 801-802, 1,200 false BAD
        pixels each, in 900 specks) and for small ghosts (on the Spitzer and SDSS
        r images drizzle-correlated, blobs of 4-35 pixels on empty sky and a
        galaxy's outskirts). A lone hot pixel is still flagged where the first
        pass flags it, and where the second pass's BAD channel is taken, the larger
        of the two passes' probabilities is. The trail channel stays the first
        pass's: in one pixel's noise it fires along the noise's streaks too. So
        does the cosmic-ray channel: in one pixel's noise it also marks the cores
        of real stars (on the Spitzer and SDSS r images drizzle-correlated, 301
        and 79 new pixels, most on stars, against a CR recall of 0.926 -> 0.981
        on the simulated correlated sky).
    """
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (len(NETWORK_ARTEFACT_BITS),))
    combined = artefact_probability.copy()
    ghost = NETWORK_ARTEFACT_BITS.index(MaskBit.GHOST)
    regions, _ = ndimage.label(
        pixel_noise_probability[ghost] > thresholds[ghost], structure=np.ones((3, 3), bool)
    )
    wide = np.bincount(regions.ravel()) >= min_ghost_area
    wide[0] = False
    combined[ghost] = np.where(wide[regions], pixel_noise_probability[ghost], 0.0)
    bad = NETWORK_ARTEFACT_BITS.index(MaskBit.BAD)
    in_column = column_runs(
        pixel_noise_probability[bad] > thresholds[bad], PIXEL_NOISE_MIN_COLUMN_RUN
    )
    strongest = np.maximum(artefact_probability[bad], pixel_noise_probability[bad])
    combined[bad] = np.where(in_column, strongest, combined[bad])
    return combined
