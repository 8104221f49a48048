"""The PSF measured from the stars of an image: star selection, Moffat fits, per region.

Pure numpy and scipy on in-memory arrays; :mod:`survey_seg.store` reads the
cutouts. The stars are chosen as PSFEx and SExtractor's ``CLASS_STAR`` choose
them, on the stellar locus of size against flux:

1. detection: peaks of the background-subtracted image binned 2 x 2 and
   smoothed by Gaussians of 1, 2 and 4 pix, of S/N above :data:`MIN_SNR`, not
   within 2 pix of a pixel without data or saturated (the ``saturation`` level,
   else a maximum that 5 pixels share);
2. size: adaptive (Gaussian-weighted) second moments of each peak;
3. locus: the densest narrow peak of the log sizes, the smallest one that holds
   a fair share of the candidates: galaxies are larger and spread out, cosmic
   rays and hot pixels sharper than any PSF (:data:`MIN_SIZE`), blends and
   trails elongated. Found over the mosaic, and in each region rich in
   candidates (the PSF may vary);
4. isolation: among every detection above :data:`DETECT_SNR` on the image
   smoothed for the locus' PSF, no neighbour within 2 FWHM; a neighbour's light
   is masked in the fit stamp where it exceeds :data:`CONTAMINATION` of the
   star's peak, and the star rejected when that reaches its core; no pixel
   without data or saturated in the stamp;
5. fit: an elliptical Moffat (FWHM, beta, ellipticity and position angle,
   centre, amplitude, local background) by Levenberg-Marquardt
   (:func:`scipy.optimize.least_squares`), weighted by the inverse variance and
   integrated over the pixels by Gauss-Legendre quadrature (4 x 4 to 2 x 2
   points a pixel; wide stars on pixels binned to 4-8 per FWHM): undersampled
   stars are fitted without bias. A star of an undersampled locus
   (:data:`UNDERSAMPLED_FWHM`) whose free fit runs away is fitted for its width
   alone (round, beta :data:`UNDERSAMPLED_BETA`). At most :data:`MAX_FIT_STARS`
   per region, those of highest S/N;
6. combination: the fits that share the PSF's shape and pile up at the low
   edge of the widths (:func:`_stellar`), their median FWHM per region of a grid
   of up to 3 x 3, and for the mosaic the median of the regions' values (a
   region with fewer than ``min_stars`` stars takes the mosaic's value).

With fewer than ``min_stars`` (:data:`MIN_STARS`) stars the estimate is not
usable (:attr:`PSFEstimate.usable`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

from survey_seg.background import cell_statistics, finish_mesh

__all__ = [
    "MAX_REGIONS",
    "MIN_STARS",
    "RESOLUTION_FLOOR_PIX",
    "SIGMA_PER_FWHM",
    "Cutout",
    "PSFEstimate",
    "PSFRegion",
    "estimate_psf",
    "estimate_psf_cutouts",
    "region_boxes",
    "region_grid",
    "resolution_pix",
]

MIN_STARS = 5
"""Fewest fitted stars for a usable estimate, of the mosaic or of a region."""
MAX_REGIONS = 3
"""Most regions along each axis of the mosaic with a PSF of their own."""
REGION_MIN_SIDE = 512
"""A region is at least this many pixels on a side (smaller mosaics have fewer regions)."""
DETECT_SNR = 5.0
"""Peaks of the smoothed image above this S/N are detections (and neighbours)."""
MIN_SNR = 15.0
"""Matched-filter S/N of a star for the locus and the fit."""
MIN_SIZE = 0.45
"""Adaptive-moment sigma (pix) below which a peak is a cosmic ray or a hot pixel: a
pixel-integrated PSF of 1 pix FWHM measures about 0.5."""
MAX_MOMENT_ELLIPTICITY = 0.5
"""Candidates more elongated than this (moment ellipticity) are trails or blends."""
CONTAMINATION = 0.01
"""A neighbour's light is masked in a star's stamp where it exceeds this fraction of the
star's peak; a star whose core (1.25 FWHM) that reaches is rejected."""
SATURATION_FRACTION = 0.9
"""A star with a pixel at or above this fraction of the saturation level is rejected."""
MAX_FIT_STARS = 25
"""Most stars fitted per region (those of highest S/N), fewer on a grid of many regions
(:data:`FIT_BUDGET` over all of them, at least ``min_stars + 3`` each)."""
FIT_BUDGET = 72
"""Stars fitted in all, shared by the regions: it bounds the time of the estimate."""
UNDERSAMPLED_FWHM = 1.5
"""A locus narrower than this (FWHM, pix) is undersampled: a star's core falls on a few
pixels, too few to tell beta and shape from the width, and in a crowded field the free
fit runs away (beta to 1, the width to nothing: a spike plus its neighbours' light). A
star whose free fit fails is refitted round with beta :data:`UNDERSAMPLED_BETA`; its
width counts, its beta and shape do not."""
UNDERSAMPLED_BETA = 2.5
"""Moffat index of those fits: seeing-limited PSFs measure 2 to 4.8 (Trujillo et al. 2001)."""
SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
"""A Gaussian's standard deviation over its FWHM."""
RESOLUTION_FLOOR_PIX = 2.0
"""Smallest resolution element in pixels. Two objects closer than about two pixels
are one peak whatever the PSF (Nyquist), so with an undersampled PSF (SDSS: 0.5-0.8
pix FWHM) the sizes, separations, spacings and match radii that are given "in FWHM"
are in units of :func:`resolution_pix` instead."""
_BACKGROUND_CELL = 64
_MOMENT_HALF = 24
_MAX_CANDIDATES = 300
_DETECT_SCALES = (1.0, 2.0, 4.0)
_FIT_RADIUS_FWHM = 2.5


def resolution_pix(psf_fwhm_pix: float) -> float:
    """The resolution element: the PSF FWHM, at least :data:`RESOLUTION_FLOOR_PIX`."""
    return max(float(psf_fwhm_pix), RESOLUTION_FLOOR_PIX)


@dataclass(frozen=True)
class Cutout:
    """Pixels of a part of the mosaic to look for stars in.

    Attributes
    ----------
    image : numpy.ndarray
        2-D image, NaN where there is no data.
    origin : tuple of int
        Mosaic ``(y, x)`` of pixel ``(0, 0)``.
    variance : numpy.ndarray or None
        Per-pixel variance of ``image``; None: the sky noise estimated from the pixels.
    bad : numpy.ndarray or None
        Boolean, True where a pixel is flagged bad (treated as no data).
    """

    image: np.ndarray
    origin: tuple[int, int] = (0, 0)
    variance: np.ndarray | None = None
    bad: np.ndarray | None = None


@dataclass(frozen=True)
class PSFRegion:
    """The PSF FWHM of one region of the mosaic.

    Attributes
    ----------
    row, col : int
        Place of the region in the grid.
    box : tuple of int
        ``(y0, y1, x0, x1)``: the mosaic rows and columns it covers.
    fwhm_pix : float or None
        Median FWHM of its stars, or the mosaic's when it has fewer than
        ``min_stars``.
    n_stars : int
        Its stars that count (fitted, and chosen as stars).
    measured : bool
        Whether ``fwhm_pix`` is its own (else the mosaic's).
    """

    row: int
    col: int
    box: tuple[int, int, int, int]
    fwhm_pix: float | None
    n_stars: int
    measured: bool

    def to_record(self) -> dict[str, object]:
        """The region as a JSON-serialisable dict."""
        return {
            "row": self.row,
            "col": self.col,
            "box": list(self.box),
            "fwhm_pix": self.fwhm_pix,
            "n_stars": self.n_stars,
            "measured": self.measured,
        }


@dataclass(frozen=True)
class PSFEstimate:
    """The PSF measured from the stars of a mosaic.

    Attributes
    ----------
    fwhm_pix : float or None
        FWHM of the stars' Moffat fits (geometric mean of the major and minor
        axes), pixels: the median of the regions' medians, or of all the stars
        when no region has ``min_stars``; None when fewer than ``min_stars``
        stars count.
    beta : float or None
        Median Moffat index; None also when fewer than ``min_stars`` stars measure
        it (the others' fits are width-only: an undersampled PSF,
        :data:`UNDERSAMPLED_FWHM`).
    ellipticity : float or None
        ``1 - b/a`` of the median shape; None as ``beta``.
    position_angle_deg : float or None
        Angle of the major axis from the +x (column) axis towards +y, degrees in
        ``[0, 180)``.
    n_stars : int
        Stars that count: selected, fitted, and sharing the PSF's width and shape.
    scatter_pix : float or None
        Robust scatter (1.4826 median absolute deviation) of their FWHM about
        their region's value.
    regions : tuple of PSFRegion
        The FWHM on the grid of regions, in raster order (empty when not usable).
    min_stars : int
        Fewest stars of a usable estimate.
    """

    fwhm_pix: float | None
    beta: float | None
    ellipticity: float | None
    position_angle_deg: float | None
    n_stars: int
    scatter_pix: float | None
    regions: tuple[PSFRegion, ...] = ()
    min_stars: int = MIN_STARS

    @property
    def usable(self) -> bool:
        """Whether enough stars were fitted for ``fwhm_pix`` to be used."""
        return self.fwhm_pix is not None and self.n_stars >= self.min_stars

    def to_record(self) -> dict[str, object]:
        """The estimate as a JSON-serialisable dict (manifest, store attributes)."""
        return {
            "fwhm_pix": self.fwhm_pix,
            "beta": self.beta,
            "ellipticity": self.ellipticity,
            "position_angle_deg": self.position_angle_deg,
            "n_stars": self.n_stars,
            "scatter_pix": self.scatter_pix,
            "min_stars": self.min_stars,
            "regions": [region.to_record() for region in self.regions],
        }


def region_grid(shape: tuple[int, int]) -> tuple[int, int]:
    """Regions along each axis of a mosaic of ``shape``: one per 512 pixels, 1 to 3.

    Parameters
    ----------
    shape : tuple of int
        Mosaic shape ``(ny, nx)``.

    Returns
    -------
    tuple of int
        ``(n_rows, n_cols)``.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape {shape!r} is not the shape of a 2-D image; give (ny, nx) > 0")
    rows, cols = (min(MAX_REGIONS, max(1, int(n) // REGION_MIN_SIDE)) for n in shape)
    return rows, cols


def region_boxes(
    shape: tuple[int, int], grid: tuple[int, int]
) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """The regions of a mosaic: ``(row, col, (y0, y1, x0, x1))`` in raster order.

    Parameters
    ----------
    shape : tuple of int
        Mosaic shape ``(ny, nx)``.
    grid : tuple of int
        ``(n_rows, n_cols)``, each at least 1.

    Returns
    -------
    list of tuple
    """
    if len(grid) != 2 or min(grid) < 1 or grid[0] > shape[0] or grid[1] > shape[1]:
        raise ValueError(f"grid {grid!r} must be 1 to {shape} regions along each axis")
    y_edges, x_edges = (_edges(n, k) for n, k in zip(shape, grid, strict=True))
    return [
        (row, col, (y_edges[row], y_edges[row + 1], x_edges[col], x_edges[col + 1]))
        for row in range(grid[0])
        for col in range(grid[1])
    ]


def estimate_psf(
    image: np.ndarray,
    variance: np.ndarray | None = None,
    *,
    bad: np.ndarray | None = None,
    saturation: float | None = None,
    grid: tuple[int, int] | None = None,
    min_stars: int = MIN_STARS,
) -> PSFEstimate:
    """Measure the PSF of a whole image from its bright, isolated, unsaturated stars.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image, NaN where there is no data.
    variance : numpy.ndarray, optional
        Its per-pixel variance (default: the sky noise estimated from the pixels).
    bad : numpy.ndarray, optional
        Boolean, True where a pixel is flagged bad.
    saturation : float, optional
        Saturation level (``SATURATE``); without it, a maximum that at least 5
        pixels share (a clipped image) is taken for one.
    grid : tuple of int, optional
        Regions along each axis (default :func:`region_grid`).
    min_stars : int
        Fewest stars of a usable estimate, of the image or of a region.

    Returns
    -------
    PSFEstimate
        Not :attr:`~PSFEstimate.usable` with fewer than ``min_stars`` stars.
    """
    image = np.asarray(image)
    cutout = Cutout(image, (0, 0), variance, bad)
    return estimate_psf_cutouts(
        [cutout], image.shape, saturation=saturation, grid=grid, min_stars=min_stars
    )


def estimate_psf_cutouts(
    cutouts: Sequence[Cutout],
    shape: tuple[int, int],
    *,
    saturation: float | None = None,
    grid: tuple[int, int] | None = None,
    min_stars: int = MIN_STARS,
) -> PSFEstimate:
    """Measure the PSF of a mosaic from cutouts of it (the whole image, or one per region).

    The stellar locus is found over all cutouts together, and in each region with
    at least ``4 min_stars`` candidates; each star counts in the region of the
    grid that holds its centre.

    Parameters
    ----------
    cutouts : sequence of Cutout
        Parts of the mosaic, at their mosaic origin.
    shape : tuple of int
        Mosaic shape ``(ny, nx)``.
    saturation : float, optional
        Saturation level (see :func:`estimate_psf`).
    grid : tuple of int, optional
        Regions along each axis (default :func:`region_grid` of ``shape``).
    min_stars : int
        Fewest stars of a usable estimate, of the mosaic or of a region.

    Returns
    -------
    PSFEstimate
    """
    if not cutouts:
        raise ValueError("no cutout to measure the PSF on; give at least one")
    if min_stars < 1:
        raise ValueError(f"min_stars={min_stars!r}; give at least 1")
    if saturation is not None and not saturation > 0:
        raise ValueError(f"saturation={saturation!r}; give a positive level or None")
    grid = region_grid(shape) if grid is None else grid
    boxes = region_boxes(shape, grid)
    for cutout in cutouts:
        _check_cutout(cutout)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        prepared = [_prepare(cutout, saturation, grid, shape) for cutout in cutouts]
        log_sizes = np.log(np.concatenate([p.sizes for p in prepared]))
        regions = np.concatenate([p.regions for p in prepared])
        overall = _locus(log_sizes, min_stars)
        if overall is None:
            return _unusable(0, min_stars)
        # a region rich in candidates has a locus of its own: the PSF may vary
        loci = [
            (_locus(log_sizes[regions == index], min_stars) or overall)
            if np.count_nonzero(regions == index) >= 4 * min_stars
            else overall
            for index in range(len(boxes))
        ]
        cap = int(np.clip(FIT_BUDGET // len(boxes), min_stars + 3, max(MAX_FIT_STARS, min_stars)))
        stars = np.concatenate([_fit_cutout(p, loci, grid, shape, cap) for p in prepared])
    return _combine(stars, boxes, grid, shape, min_stars)


# --------------------------------------------------------------------------- selection


@dataclass
class _Prepared:
    """A cutout with its background, noise, detection maps and candidate sizes."""

    origin: tuple[int, int]
    work: np.ndarray
    """Background-subtracted image (float32), 0 where there is no data."""
    valid: np.ndarray
    sigma: np.ndarray
    """Noise sigma of each pixel (float32)."""
    saturated: np.ndarray
    detections: list[tuple[float, int, np.ndarray]]
    """``(sigma, factor, snr)``: S/N maps of the image binned by ``factor`` and smoothed
    by a Gaussian of ``sigma`` pix (in unbinned pixels)."""
    sizes: np.ndarray
    """Adaptive-moment sigma of each candidate (pix)."""
    candidates: np.ndarray
    """``(n, 2)`` refined positions (cutout y, x) of the candidates."""
    regions: np.ndarray
    """Raster index of the region of the mosaic that holds each candidate."""


def _check_cutout(cutout: Cutout) -> None:
    if cutout.image.ndim != 2:
        raise ValueError(f"a cutout image is {cutout.image.ndim}-D; give 2-D images")
    for name in ("variance", "bad"):
        plane = getattr(cutout, name)
        if plane is not None and plane.shape != cutout.image.shape:
            raise ValueError(
                f"a cutout's {name} has shape {plane.shape}, its image {cutout.image.shape}; "
                "give planes of the image's shape"
            )


def _prepare(
    cutout: Cutout, saturation: float | None, grid: tuple[int, int], shape: tuple[int, int]
) -> _Prepared:
    """Background, noise, detection maps and the adaptive sizes of the bright peaks."""
    raw = np.asarray(cutout.image, dtype=np.float32)
    valid = np.isfinite(raw)
    if cutout.bad is not None:
        valid &= ~np.asarray(cutout.bad, dtype=bool)
    level, sigma = _background(raw, valid)
    if cutout.variance is not None:
        variance = np.asarray(cutout.variance, dtype=np.float32)
        usable = np.isfinite(variance) & (variance > 0)
        sigma = np.where(usable, np.sqrt(np.where(usable, variance, 1.0)), sigma)
        valid &= usable  # a variance that is not positive: no data, as at ingest
    if saturation is None:
        saturation = _plateau_level(raw, valid)
    saturated = np.zeros(raw.shape, dtype=bool)
    if saturation is not None:
        saturated = valid & (raw >= SATURATION_FRACTION * saturation)
    work = np.where(valid, raw - level, np.float32(0.0))
    detections = _detection_maps(work, sigma)
    ys, xs = _bright_peaks(work, detections, ~valid | saturated)
    size, ellipticity, dy, dx = _adaptive_moments(work, ys, xs)
    keep = np.isfinite(size) & (ellipticity <= MAX_MOMENT_ELLIPTICITY)
    positions = np.column_stack([ys + dy, xs + dx])[keep]
    regions = np.array(
        [_region_of(y + cutout.origin[0], x + cutout.origin[1], grid, shape) for y, x in positions],
        dtype=np.intp,
    )
    return _Prepared(
        cutout.origin, work, valid, sigma, saturated, detections, size[keep], positions, regions
    )


def _background(raw: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky level and noise sigma (float32) from a mesh of sigma-clipped cells.

    The cell statistics of cells of 64 pix use every second to fourth pixel
    along each axis (every pixel of a cutout under 512 pix): the noise of a
    pixel, at a fraction of the cost.
    """
    step = int(np.clip(min(raw.shape) // 256, 1, 4))
    cell = min(_BACKGROUND_CELL, max(8, min(raw.shape))) // step
    sample = np.where(valid, raw, np.float32(np.nan))[::step, ::step]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level, rms, _ = cell_statistics(sample, cell)
    if not (np.isfinite(level) & np.isfinite(rms)).any():
        return np.zeros(raw.shape, np.float32), np.ones(raw.shape, np.float32)
    mesh = finish_mesh(level, rms, cell * step)
    positive = mesh.rms[mesh.rms > 0]
    rms = np.maximum(mesh.rms, positive.min() if positive.size else 1.0)
    level = _upsample(mesh.level, mesh.cell_size, raw.shape)
    return level, _upsample(rms, mesh.cell_size, raw.shape)


def _upsample(mesh: np.ndarray, cell: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation between cell centres (float32), by products of matrices.

    The same as :func:`survey_seg.background.interpolate_mesh` from the origin.
    """
    rows = _interpolation_matrix(shape[0], cell, mesh.shape[0])
    cols = _interpolation_matrix(shape[1], cell, mesh.shape[1])
    return rows @ mesh.astype(np.float32) @ cols.T


def _interpolation_matrix(n: int, cell: int, n_cells: int) -> np.ndarray:
    """``(n, n_cells)`` weights of the cell centres at each of ``n`` pixels along an axis."""
    position = np.clip((np.arange(n) + 0.5) / cell - 0.5, 0.0, n_cells - 1.0)
    lower = np.minimum(np.floor(position).astype(np.intp), max(n_cells - 2, 0))
    fraction = (position - lower).astype(np.float32)
    matrix = np.zeros((n, n_cells), dtype=np.float32)
    matrix[np.arange(n), lower] = 1.0 - fraction
    if n_cells > 1:
        matrix[np.arange(n), lower + 1] += fraction
    return matrix


def _plateau_level(raw: np.ndarray, valid: np.ndarray) -> float | None:
    """The image's maximum when at least 5 pixels share it (a clipped image), else None."""
    values = raw[valid]
    if values.size == 0:
        return None
    top = float(values.max())
    return top if top > 0 and int(np.count_nonzero(values == top)) >= 5 else None


def _detection_maps(work: np.ndarray, sigma: np.ndarray) -> list[tuple[float, int, np.ndarray]]:
    """S/N maps of the image binned 2 x 2 and smoothed by Gaussians of 1, 2 and 4 pix.

    Stars of any width are found near their matched-filter S/N, on a quarter of
    the pixels (all of them in a cutout under 16 pix).
    """
    if min(work.shape) < 16:
        return [(1.0, 1, _matched_snr(work, sigma, 1.0))]
    binned = _bin2(work)
    binned_sigma = np.sqrt(_bin2(sigma * sigma)) / np.float32(2.0)
    return [(s, 2, _matched_snr(binned, binned_sigma, s / 2)) for s in _DETECT_SCALES]


def _bin2(values: np.ndarray) -> np.ndarray:
    """Mean of each 2 x 2 block (an odd last row or column is dropped)."""
    ny, nx = (n // 2 * 2 for n in values.shape)
    total = values[0:ny:2, 0:nx:2] + values[1:ny:2, 0:nx:2]
    total += values[0:ny:2, 1:nx:2]
    total += values[1:ny:2, 1:nx:2]
    return total * np.float32(0.25)


def _matched_snr(work: np.ndarray, sigma: np.ndarray, scale: float) -> np.ndarray:
    """S/N of ``work`` smoothed by a Gaussian of ``scale`` pix (the noise per pixel kept)."""
    smooth = ndimage.gaussian_filter(work, scale, truncate=3.0)
    # the smoothed noise of a pixel of noise s: s times the kernel's quadratic norm
    return smooth * np.float32(2.0 * math.sqrt(math.pi) * scale) / sigma


def _local_maxima(
    values: np.ndarray, above: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels where ``above`` holds that are the maximum of their ``size`` x ``size`` box.

    Compared only at those pixels, nearest neighbours first, dropping a pixel at
    its first larger neighbour (most fail at once); ties broken in raster order.
    """
    ys, xs = np.nonzero(above)
    half = size // 2
    if ys.size == 0 or half == 0:
        return ys, xs
    padded = np.pad(values, half, constant_values=-np.inf)
    offsets = sorted(
        ((dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1) if dy or dx),
        key=lambda o: o[0] ** 2 + o[1] ** 2,
    )
    py, px = ys + half, xs + half
    centre = padded[py, px]
    for dy, dx in offsets:
        other = padded[py + dy, px + dx]
        earlier = dy < 0 or (dy == 0 and dx < 0)
        is_max = centre > other if earlier else centre >= other
        py, px, centre = py[is_max], px[is_max], centre[is_max]
    return py - half, px - half


def _bright_peaks(
    work: np.ndarray, detections: list[tuple[float, int, np.ndarray]], spoiled: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks above :data:`MIN_SNR` on any detection map, brightest first.

    A peak of a binned map is placed on the brightest pixel of its block; peaks
    within 2 pix of a ``spoiled`` pixel (no data, saturated) are dropped; of
    peaks within 3 pix of each other the one of highest S/N is kept, and at
    most :data:`_MAX_CANDIDATES` of them.
    """
    ys, xs, snrs = [], [], []
    for scale, factor, snr in detections:
        size = 2 * math.ceil(1.5 * scale / factor) + 1
        y, x = _local_maxima(snr, snr > MIN_SNR, size)
        peak = snr[y, x]
        if factor > 1:
            y, x = _brightest_in_block(work, y, x, factor)
        ok = ~_near(spoiled, y, x, 2)
        ys.append(y[ok])
        xs.append(x[ok])
        snrs.append(peak[ok])
    y, x, snr = (np.concatenate(values) for values in (ys, xs, snrs))
    order = np.argsort(-snr, kind="stable")
    y, x = y[order], x[order]
    kept = np.ones(y.size, dtype=bool)
    if y.size > 1:
        tree = cKDTree(np.column_stack([y, x]))
        for i, j in sorted(tree.query_pairs(r=3.0)):
            if kept[i]:
                kept[j] = False
    kept = np.flatnonzero(kept)[:_MAX_CANDIDATES]
    return y[kept], x[kept]


def _near(flags: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int) -> np.ndarray:
    """Whether ``flags`` holds within the box of half-side ``radius`` around each pixel."""
    padded = np.pad(flags, radius, constant_values=False)
    found = np.zeros(ys.size, dtype=bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            found |= padded[ys + dy, xs + dx]
    return found


def _brightest_in_block(
    fine: np.ndarray, ys: np.ndarray, xs: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pixel of ``fine`` of highest value in each ``factor`` x ``factor`` block."""
    best_y, best_x = ys * factor, xs * factor
    best = fine[best_y, best_x]
    for dy in range(factor):
        for dx in range(factor):
            y, x = ys * factor + dy, xs * factor + dx
            better = fine[y, x] > best
            best_y, best_x = np.where(better, y, best_y), np.where(better, x, best_x)
            best = np.maximum(best, fine[y, x])
    return best_y, best_x


def _adaptive_moments(
    work: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive (Gaussian-weighted) moments of the peaks ``(ys, xs)``, vectorised.

    Measured on stamps of half-side 8, then those that outgrow them on the image
    binned 2 x 2, on stamps of half-side 12 (24 pix: sizes up to 8 pix, a FWHM of
    about 18). Returns the sigma ``s`` (NaN where it does not converge within
    the stamp), the moment ellipticity and the centroid offsets ``dy, dx`` from
    the peaks.
    """
    result = _moments_on_stamps(work, ys, xs, _MOMENT_HALF // 3)
    large = np.flatnonzero(~np.isfinite(result[0]))
    if large.size and min(work.shape) >= 2:
        binned = _bin2(work)
        by = np.minimum(ys[large] // 2, binned.shape[0] - 1)
        bx = np.minimum(xs[large] // 2, binned.shape[1] - 1)
        size, ellipticity, dy, dx = _moments_on_stamps(binned, by, bx, _MOMENT_HALF // 2)
        # a binned pixel adds (4 - 1) / 12 pix² to the variance of a pixel-integrated star
        result[0][large] = np.sqrt(np.maximum(4.0 * size**2 - 0.25, 0.01))
        result[1][large] = ellipticity
        result[2][large] = 2.0 * (by + dy) + 0.5 - ys[large]
        result[3][large] = 2.0 * (bx + dx) + 0.5 - xs[large]
    return result


def _moments_on_stamps(
    work: np.ndarray, ys: np.ndarray, xs: np.ndarray, half: int, n_iter: int = 25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_adaptive_moments` on stamps of half-side ``half``.

    The weight's sigma ``w`` is iterated to the sigma ``s`` of the Gaussian that
    would give the weighted moments ``Mxx + Myy`` (``w = s``, at least 1 pix):
    its fixed point is the sigma of a Gaussian source. ``s`` is NaN where it
    reaches ``half / 3``.
    """
    n = ys.size
    if n == 0:
        empty = np.empty(0)
        return empty, empty, empty, empty
    padded = np.pad(work, half)
    offsets = np.arange(-half, half + 1)
    stamps = padded[
        (ys[:, None] + half + offsets)[:, :, None], (xs[:, None] + half + offsets)[:, None, :]
    ].astype(np.float64)
    yy = offsets[None, :, None].astype(np.float64)
    xx = offsets[None, None, :].astype(np.float64)
    y0 = np.zeros(n)
    x0 = np.zeros(n)
    s = w = np.full(n, 1.5)
    ceiling = half / 3.0
    for _ in range(n_iter):
        ry = yy - y0[:, None, None]
        rx = xx - x0[:, None, None]
        weighted = stamps * np.exp(-(ry * ry + rx * rx) / (2.0 * w[:, None, None] ** 2))
        flux = weighted.sum(axis=(1, 2))
        good = flux > 0
        flux = np.where(good, flux, 1.0)
        cy = (weighted * ry).sum(axis=(1, 2)) / flux
        cx = (weighted * rx).sum(axis=(1, 2)) / flux
        myy = (weighted * ry * ry).sum(axis=(1, 2)) / flux - cy * cy
        mxx = (weighted * rx * rx).sum(axis=(1, 2)) / flux - cx * cx
        mxy = (weighted * ry * rx).sum(axis=(1, 2)) / flux - cy * cx
        y0 = np.clip(y0 + np.where(good, cy, 0.0), -2.0, 2.0)
        x0 = np.clip(x0 + np.where(good, cx, 0.0), -2.0, 2.0)
        trace = np.maximum(mxx + myy, 1e-4)
        # a weight of sigma w measures m = s² w² / (s² + w²) per axis on a Gaussian of
        # sigma s: invert it. w never drops below 1 pix: narrower weights collapse onto
        # the peak pixel of an undersampled star.
        m = np.minimum(0.5 * trace, 0.9 * w * w)
        previous = s
        s = np.where(good, np.clip(np.sqrt(m * w * w / (w * w - m)), 0.1, ceiling), 1.5)
        w = np.maximum(s, 1.0)
        moved = np.abs(s - previous) + np.abs(cy) + np.abs(cx)
        if moved.max() < 1e-3:
            break
    ellipticity = np.sqrt((mxx - myy) ** 2 + 4.0 * mxy * mxy) / trace
    s = np.where(good & (s < 0.99 * ceiling), s, np.nan)
    return s, ellipticity, y0, x0


def _locus(log_size: np.ndarray, min_stars: int) -> tuple[float, float] | None:
    """Centre and half-width (natural log of the size) of the stellar locus, or None.

    The locus is the peak of the density of the log sizes (Gaussian kernel of 0.05)
    at the smallest size among those at least 0.2 times as high as the highest
    and worth 2.5 candidates: stars pile up in a narrow peak, galaxies spread
    over larger sizes (a few stars below many compact galaxies still win, and
    then count too few). Its half-width is 3 robust sigma of the sizes within
    0.25 of it, 0.08 to 0.25.
    """
    log_size = log_size[np.isfinite(log_size) & (log_size >= math.log(MIN_SIZE))]
    if log_size.size < min_stars:
        return None
    bandwidth = 0.05
    axis = np.arange(log_size.min() - 0.2, log_size.max() + 0.2, 0.01)
    density = np.zeros(axis.size)
    for start in range(0, log_size.size, 256):
        chunk = log_size[start : start + 256]
        density += np.exp(-0.5 * ((axis[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    is_peak = (density >= np.roll(density, 1)) & (density >= np.roll(density, -1))
    is_peak &= density >= max(0.2 * density.max(), min(min_stars, 2.5))
    centre = float(axis[np.flatnonzero(is_peak)[0]])
    near = log_size[np.abs(log_size - centre) <= 0.25]
    median = float(np.median(near))
    spread = 1.4826 * float(np.median(np.abs(near - median)))
    return median, float(np.clip(3.0 * spread, 0.08, 0.25))


# --------------------------------------------------------------------------- fit


def _fit_cutout(
    p: _Prepared,
    loci: list[tuple[float, float]],
    grid: tuple[int, int],
    shape: tuple[int, int],
    cap: int,
) -> np.ndarray:
    """Fit the isolated locus stars of a cutout; rows of :data:`_STAR_COLUMNS`.

    Each candidate is judged by the locus of its region (``loci``, in raster
    order). At most ``cap`` stars per region, those of highest S/N first; at most
    ``2 cap`` tries.
    """
    counts: dict[str, dict[int, int]] = {"fitted": {}, "tried": {}}
    maps: dict[tuple[int, float], tuple[int, np.ndarray]] = {}
    rows = []
    for locus in dict.fromkeys(loci):
        centre, half_width = locus
        ours = np.array([loci[region] == locus for region in p.regions], dtype=bool)
        ours &= np.abs(np.log(p.sizes) - centre) <= half_width
        if ours.any():
            rows.append(_fit_locus(p, p.candidates[ours], centre, grid, shape, cap, counts, maps))
    return np.concatenate(rows) if rows else np.empty((0, len(_STAR_COLUMNS)))


def _fit_locus(
    p: _Prepared,
    positions: np.ndarray,
    centre: float,
    grid: tuple[int, int],
    shape: tuple[int, int],
    cap: int,
    counts: dict[str, dict[int, int]],
    maps: dict[tuple[int, float], tuple[int, np.ndarray]],
) -> np.ndarray:
    """:func:`_fit_cutout` of the candidates at ``positions`` of a locus at ``centre``.

    ``counts`` holds the stars fitted and tried per region so far; ``maps`` the
    neighbour detection maps made so far, by smoothing.
    """
    # adaptive sigma of a pixel-integrated PSF: its own plus a pixel's 1/12
    fwhm0 = math.sqrt(max(math.exp(2 * centre) - 1.0 / 12.0, 0.1)) / SIGMA_PER_FWHM
    # wide stars are fitted on pixels binned by `factor`, 4 to 8 binned pixels FWHM
    factor = max(1, int(fwhm0 // 4))
    half = max(5, math.ceil(_FIT_RADIUS_FWHM * fwhm0 / factor))
    side = (2 * half + 1) * factor
    binning, snr = _neighbour_map(p, fwhm0, maps)
    window = 2 * max(1, math.ceil(fwhm0 / 2 / binning)) + 1
    reach = math.ceil((side / math.sqrt(2) + 4.0 * fwhm0) / binning)
    wanted = np.zeros(snr.shape, dtype=bool)  # near a candidate: neighbours that matter
    for y, x in positions / binning:
        wanted[max(0, round(y) - reach) : round(y) + reach + 1,
               max(0, round(x) - reach) : round(x) + reach + 1] = True  # fmt: skip
    peak_y, peak_x = _local_maxima(snr, wanted & (snr > DETECT_SNR), window)
    if peak_y.size == 0:
        return np.empty((0, len(_STAR_COLUMNS)))
    peak_snr = snr[peak_y, peak_x]
    # block centres in cutout pixels
    peak_yx = np.column_stack([peak_y, peak_x]) * binning + (binning - 1) / 2
    tree = cKDTree(peak_yx)
    distance, nearest = tree.query(positions, k=1)
    own = distance <= max(1.5, 0.5 * fwhm0, binning)
    ny, nx = p.work.shape
    chosen = []
    for (y, x), index in zip(positions[own], nearest[own], strict=True):
        y0, x0 = round(y) - side // 2, round(x) - side // 2
        if y0 < 0 or x0 < 0 or y0 + side > ny or x0 + side > nx:
            continue  # the stamp would leave the cutout
        box = np.s_[y0 : y0 + side, x0 : x0 + side]
        if peak_snr[index] < MIN_SNR or not p.valid[box].all() or p.saturated[box].any():
            continue
        around = tree.query_ball_point((y, x), r=side / math.sqrt(2) + 3.0 * fwhm0)
        others = np.array([j for j in around if j != index], dtype=np.intp)
        keep = _neighbour_mask(
            peak_yx[others] - (y0, x0), peak_snr[others] / peak_snr[index], (y - y0, x - x0),
            side, fwhm0,
        )  # fmt: skip
        if keep is not None:
            chosen.append((peak_snr[index], y0, x0, box, keep))
    n_sub = 2 if factor > 1 or fwhm0 >= 2.5 else 3 if fwhm0 >= 1.0 else 4
    fitted, tried = counts["fitted"], counts["tried"]
    rows = []
    for star_snr, y0, x0, box, keep in sorted(chosen, key=lambda c: -c[0]):
        # the stamp's centre, in mosaic pixels
        cy, cx = p.origin[0] + y0 + (side - 1) / 2, p.origin[1] + x0 + (side - 1) / 2
        region = _region_of(cy, cx, grid, shape)
        if fitted.get(region, 0) >= cap or tried.get(region, 0) >= 2 * cap:
            continue
        tried[region] = tried.get(region, 0) + 1
        data = _binned(p.work[box].astype(np.float64), factor)
        variance = _binned(p.sigma[box].astype(np.float64) ** 2, factor)
        usable = _binned(keep.astype(np.float64), factor) == 1.0
        weight = np.where(usable, factor / np.sqrt(variance), 0.0)
        fit = _fit_moffat(data, weight, fwhm0 / factor, n_sub)
        if fit is None and fwhm0 < UNDERSAMPLED_FWHM:
            fit = _fit_moffat(data, weight, fwhm0 / factor, n_sub, width_only=True)
        if fit is None:
            continue
        fitted[region] = fitted.get(region, 0) + 1
        fwhm, beta, e1, e2, dy, dx = fit
        rows.append((cy + factor * dy, cx + factor * dx, factor * fwhm, beta, e1, e2, star_snr))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(_STAR_COLUMNS))


def _neighbour_map(
    p: _Prepared, fwhm0: float, maps: dict[tuple[int, float], tuple[int, np.ndarray]]
) -> tuple[int, np.ndarray]:
    """``(binning, snr)``: the detection map smoothed nearest to a PSF of ``fwhm0``.

    Unbinned, smoothed for this PSF, for narrow stars (a neighbour 2 FWHM away
    must not move by a pixel); else the nearest of the cutout's binned maps.
    ``maps`` keeps those made, by binning and smoothing.
    """
    if fwhm0 >= 4.0:
        _, binning, snr = min(
            p.detections, key=lambda d: abs(math.log(d[0] / (fwhm0 * SIGMA_PER_FWHM)))
        )
        return binning, snr
    scale = round(max(fwhm0 * SIGMA_PER_FWHM, 0.7), 1)
    if (1, scale) not in maps:
        maps[1, scale] = (1, _matched_snr(p.work, p.sigma, scale))
    return maps[1, scale]


def _binned(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block of a square stamp."""
    if factor == 1:
        return values
    n = values.shape[0] // factor
    return values.reshape(n, factor, n, factor).mean(axis=(1, 3))


def _neighbour_mask(
    neighbours: np.ndarray, ratio: np.ndarray, star: tuple[float, float], side: int, fwhm: float
) -> np.ndarray | None:
    """Pixels of a star's stamp free of its neighbours' light, or None when it is crowded.

    A neighbour ``ratio`` times as bright as the star is masked where its light
    (a Moffat of beta 3) exceeds :data:`CONTAMINATION` of the star's peak. The star
    is crowded when a neighbour lies within 2 FWHM of it, when such a mask reaches
    within 1.25 FWHM of it, or when half of the stamp is masked. ``neighbours`` and
    ``star`` are ``(y, x)`` in the stamp, of side ``side``.
    """
    keep = np.ones((side, side), dtype=bool)
    if neighbours.size == 0:
        return keep
    distance = np.hypot(neighbours[:, 0] - star[0], neighbours[:, 1] - star[1])
    # (1 + (r / alpha)²)^-3 = CONTAMINATION / ratio, alpha ~ fwhm for beta 3
    level = np.cbrt(np.maximum(ratio, 0.0) / CONTAMINATION)
    radius = fwhm * np.sqrt(np.maximum(level - 1.0, 0.0))
    if (distance < 2.0 * fwhm).any() or (distance - radius < 1.25 * fwhm).any():
        return None
    yy, xx = np.ogrid[:side, :side]
    for (ny, nx), r in zip(neighbours, radius, strict=True):
        if r > 0:
            keep &= (yy - ny) ** 2 + (xx - nx) ** 2 > r * r
    return keep if keep.mean() >= 0.5 else None


_STAR_COLUMNS = ("y", "x", "fwhm", "beta", "e1", "e2", "snr")


def _region_of(y: float, x: float, grid: tuple[int, int], shape: tuple[int, int]) -> int:
    """Raster index of the region holding mosaic pixel ``(y, x)``."""
    row = int(np.searchsorted(_edges(shape[0], grid[0])[1:-1], y, side="right"))
    col = int(np.searchsorted(_edges(shape[1], grid[1])[1:-1], x, side="right"))
    return row * grid[1] + col


def _edges(n: int, k: int) -> list[int]:
    return [round(i * n / k) for i in range(k + 1)]


@lru_cache(maxsize=16)
def _subgrid(half: int, n_sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the stamp centre of each pixel's ``n_sub`` x ``n_sub`` Gauss-Legendre points."""
    side = 2 * half + 1
    nodes, _ = np.polynomial.legendre.leggauss(n_sub)
    points = (np.arange(side)[:, None] - half + 0.5 * nodes[None, :]).ravel()
    yy, xx = np.meshgrid(points, points, indexing="ij")
    return yy, xx


@lru_cache(maxsize=8)
def _pixel_weights(n_sub: int) -> np.ndarray:
    """Gauss-Legendre weights of a pixel's ``n_sub`` x ``n_sub`` points, summing to 1."""
    _, weights = np.polynomial.legendre.leggauss(n_sub)
    return np.outer(weights, weights)[None, :, None, :] / 4.0


def _bin(values: np.ndarray, side: int, n_sub: int) -> np.ndarray:
    """The pixel-integrated value per unit area of values on :func:`_subgrid`."""
    if n_sub == 1:
        return values
    cells = values.reshape(*values.shape[:-2], side, n_sub, side, n_sub)
    return (cells * _pixel_weights(n_sub)).sum(axis=(-3, -1))


_MAX_E = 0.9
"""Largest shape ``|e|`` of a fit (axis ratio 0.23)."""


def _moffat(
    theta: np.ndarray, half: int, n_sub: int, jacobian: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel-integrated elliptical Moffat plus background on a stamp, and its Jacobian.

    ``theta``: amplitude (central surface brightness), centre ``yc, xc`` (from the
    stamp centre), ``ln fwhm``, ``ln(beta - 1)``, shape ``g1, g2`` and background;
    unbounded, so that Levenberg-Marquardt needs no bounds. The profile is ``(1 +
    Q / alpha²)^-beta`` with ``Q = d^T M d``, ``M = [[1 - e1, -e2], [-e2, 1 + e1]] /
    sqrt(1 - e1² - e2²)`` (determinant 1: the FWHM is the geometric mean of the
    major and minor FWHM) and ``e = 0.9 g / sqrt(1 + |g|²)``.
    """
    amp, yc, xc, log_fwhm, log_beta1, g1, g2, bkg = theta
    fwhm, beta = math.exp(log_fwhm), 1.0 + math.exp(log_beta1)
    e1, e2, de_dg = _shape(g1, g2)
    yy, xx = _subgrid(half, n_sub)
    side = 2 * half + 1
    dy = yy - yc
    dx = xx - xc
    root = math.sqrt(1.0 - e1 * e1 - e2 * e2)
    a11, a22, a12 = (1.0 - e1) / root, (1.0 + e1) / root, -e2 / root
    dx2, dy2, dxy = dx * dx, dy * dy, dx * dy
    q = a11 * dx2 + 2.0 * a12 * dxy + a22 * dy2
    c = 2.0 ** (1.0 / beta) - 1.0
    alpha2 = fwhm * fwhm / (4.0 * c)
    log_u = np.log1p(q / alpha2)
    profile = np.exp(-beta * log_u)
    model = amp * _bin(profile, side, n_sub) + bkg
    if not jacobian:
        return model, None
    # d profile / d Q, and the derivatives of Q by e1 and e2
    dp_dq = (-beta / alpha2) * profile / (1.0 + q / alpha2)
    cube = root**3
    dq_de1 = (
        (-1.0 / root + (1.0 - e1) * e1 / cube) * dx2
        - 2.0 * (e2 * e1 / cube) * dxy
        + (1.0 / root + (1.0 + e1) * e1 / cube) * dy2
    )
    dq_de2 = (
        ((1.0 - e1) * e2 / cube) * dx2
        - 2.0 * (1.0 / root + e2 * e2 / cube) * dxy
        + ((1.0 + e1) * e2 / cube) * dy2
    )
    # alpha ~ fwhm: d/d ln fwhm of the profile is -2 Q dp_dq; alpha also moves with beta
    dq_term = -2.0 * q * dp_dq
    dlog_alpha_dbeta = 2.0 ** (1.0 / beta) * math.log(2.0) / (2.0 * c * beta * beta)
    columns = np.stack(
        [
            profile,
            amp * dp_dq * (-2.0 * (a12 * dx + a22 * dy)),
            amp * dp_dq * (-2.0 * (a11 * dx + a12 * dy)),
            amp * dq_term,
            amp * (beta - 1.0) * (-log_u * profile + dq_term * dlog_alpha_dbeta),
            amp * dp_dq * (dq_de1 * de_dg[0, 0] + dq_de2 * de_dg[1, 0]),
            amp * dp_dq * (dq_de1 * de_dg[0, 1] + dq_de2 * de_dg[1, 1]),
        ]
    )
    binned = _bin(columns, side, n_sub)
    return model, np.concatenate([binned, np.ones((1, side, side))], axis=0)


def _shape(g1: float, g2: float) -> tuple[float, float, np.ndarray]:
    """``e1, e2`` of the unbounded ``g1, g2`` (``|e| < 0.9``) and ``d e_i / d g_j``."""
    w = math.sqrt(1.0 + g1 * g1 + g2 * g2)
    k = _MAX_E / w**3
    de_dg = np.array([[k * (w * w - g1 * g1), -k * g1 * g2], [-k * g1 * g2, k * (w * w - g2 * g2)]])
    return _MAX_E * g1 / w, _MAX_E * g2 / w, de_dg


def _fit_moffat(
    data: np.ndarray, weight: np.ndarray, fwhm0: float, n_sub: int, width_only: bool = False
) -> tuple[float, float, float, float, float, float] | None:
    """Fit a stamp with :func:`_moffat`; ``(fwhm, beta, e1, e2, dy, dx)`` or None.

    ``weight`` is the inverse noise sigma of each pixel (0: left out).
    ``width_only`` fits a round Moffat of beta :data:`UNDERSAMPLED_BETA` (width,
    centre, amplitude and background), and returns NaN for its beta and shape.
    None when the fit fails, or its centre, FWHM or beta runs away (off the
    stamp's centre pixel by more than ``max(2, fwhm0 / 2)``, outside 0.3 to
    ``4 fwhm0 + 2`` pix, above 20).
    """
    half = data.shape[0] // 2
    edge = np.concatenate([data[0], data[-1], data[1:-1, 0], data[1:-1, -1]])
    bkg0 = float(np.median(edge))
    log_beta1 = math.log(UNDERSAMPLED_BETA - 1.0 if width_only else 2.0)
    theta0 = np.array([1.0, 0.0, 0.0, math.log(fwhm0), log_beta1, 0.0, 0.0, 0.0])
    unit, _ = _moffat(theta0, half, n_sub, jacobian=False)
    amp0 = float(np.sum(unit * (data - bkg0)) / np.sum(unit * unit))
    if not amp0 > 0:
        return None
    theta0[0], theta0[7] = amp0, bkg0
    free = np.array([0, 1, 2, 3, 7]) if width_only else np.arange(theta0.size)
    flat_data = data.ravel()
    flat_weight = weight.ravel()

    def full(free_theta: np.ndarray) -> np.ndarray:
        theta = theta0.copy()
        theta[free] = free_theta
        return theta

    def residuals(free_theta: np.ndarray) -> np.ndarray:
        model, _ = _moffat(full(free_theta), half, n_sub, jacobian=False)
        return (model.ravel() - flat_data) * flat_weight

    def jac(free_theta: np.ndarray) -> np.ndarray:
        _, derivatives = _moffat(full(free_theta), half, n_sub, jacobian=True)
        return derivatives[free].reshape(free.size, -1).T * flat_weight[:, None]

    try:
        result = optimize.least_squares(
            residuals, theta0[free], jac=jac, method="lm", x_scale="jac", max_nfev=50
        )
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(result.x)):
        return None
    amp, yc, xc, log_fwhm, log_beta1, g1, g2, _ = full(result.x)
    if abs(log_fwhm) > 5 or abs(log_beta1) > 5:
        return None
    fitted_fwhm, fitted_beta = math.exp(log_fwhm), 1.0 + math.exp(log_beta1)
    e1, e2, _ = _shape(g1, g2)
    shift = max(2.0, 0.5 * fwhm0)
    runaway = abs(yc) > shift or abs(xc) > shift or not 0.3 < fitted_fwhm < 4.0 * fwhm0 + 2.0
    if result.status <= 0 or runaway or fitted_beta > 20.0 or not amp > 0:
        return None
    if width_only:
        fitted_beta = e1 = e2 = math.nan
    return fitted_fwhm, fitted_beta, e1, e2, float(yc), float(xc)


# --------------------------------------------------------------------------- combination


def _stellar(stars: np.ndarray) -> np.ndarray:
    """Boolean: the fits that belong to the PSF, not to compact galaxies or blends.

    Stars share one shape: a fit whose ``e1`` or ``e2`` lies more than 4 robust
    sigma from the median (0.05 to 0.15: galaxies, each of its own shape, do not
    pass for stars) is left out. Their FWHM pile up
    at the low edge of the fitted widths (a galaxy is the PSF convolved with
    something): the peak of the density of ``ln fwhm`` (Silverman's bandwidth) is
    found, and the fits within 3 robust sigma of it kept, the sigma measured
    below the peak, where no galaxy lies (floor: 2 %).
    """
    keep = np.ones(len(stars), dtype=bool)
    if len(stars) < 3:
        return keep
    for column in (4, 5):
        shape = stars[:, column]
        measured = np.isfinite(shape)  # not the width-only fits of undersampled stars
        if measured.any():
            median = np.median(shape[measured])
            spread = 1.4826 * np.median(np.abs(shape[measured] - median))
            near = np.abs(shape - median) <= np.clip(4.0 * spread, 0.05, 0.15)
            keep &= ~measured | near
    logs = np.log(stars[:, 2])
    chosen = logs[keep]
    if chosen.size < 3:
        return keep
    spread = 1.4826 * float(np.median(np.abs(chosen - np.median(chosen))))
    bandwidth = float(np.clip(0.9 * spread * chosen.size**-0.2, 0.01, 0.2))
    axis = np.arange(chosen.min(), chosen.max() + 0.005, 0.005)
    density = np.exp(-0.5 * ((axis[:, None] - chosen[None, :]) / bandwidth) ** 2).sum(axis=1)
    mode = float(axis[np.argmax(density)])
    below = chosen[chosen <= mode]
    sigma = max(1.4826 * float(np.median(mode - below)), 0.02)
    return keep & (np.abs(logs - mode) <= 3.0 * sigma)


def _combine(
    stars: np.ndarray,
    boxes: list[tuple[int, int, tuple[int, int, int, int]]],
    grid: tuple[int, int],
    shape: tuple[int, int],
    min_stars: int,
) -> PSFEstimate:
    """The mosaic's and the regions' FWHM, and the median beta and shape, of the stars.

    The stars of a region with at least ``3 min_stars`` fits are chosen by
    :func:`_stellar` among them, the others among all the mosaic's; a region
    with ``min_stars`` chosen has the median of their FWHM, the others the
    mosaic's: the median of those regions' values (each region counts once, so
    a PSF that varies gives a value between), or of all chosen stars when no
    region has enough. The scatter is about each star's region value.
    """
    if len(stars) == 0:
        return _unusable(0, min_stars)
    where = np.array([_region_of(y, x, grid, shape) for y, x in stars[:, :2]], dtype=int)
    chosen = _stellar(stars)
    region_values: dict[int, float] = {}
    for index in range(len(boxes)):
        own = np.flatnonzero(where == index)
        if own.size >= 3 * min_stars:  # enough for a choice of its own: the PSF may vary
            chosen[own] = _stellar(stars[own])
        if np.count_nonzero(chosen[own]) >= min_stars:
            region_values[index] = float(np.median(stars[own[chosen[own]], 2]))
    kept, kept_where = stars[chosen], where[chosen]
    if len(kept) < min_stars:
        return _unusable(len(kept), min_stars)
    overall = (
        float(np.median(list(region_values.values())))
        if region_values
        else float(np.median(kept[:, 2]))
    )
    reference = np.array([region_values.get(index, overall) for index in kept_where])
    scatter = 1.4826 * float(np.median(np.abs(kept[:, 2] - reference)))
    ellipticity = angle = None
    shaped = kept[np.isfinite(kept[:, 4])]  # the width-only fits have no shape
    if len(shaped) >= min_stars:
        e1, e2 = float(np.median(shaped[:, 4])), float(np.median(shaped[:, 5]))
        e = min(math.hypot(e1, e2), 0.99)
        ellipticity = _round(1.0 - math.sqrt((1.0 - e) / (1.0 + e)))
        angle = round(math.degrees(0.5 * math.atan2(e2, e1)) % 180.0, 1)
    betas = kept[np.isfinite(kept[:, 3]), 3]
    regions = tuple(
        PSFRegion(
            row,
            col,
            box,
            _round(region_values.get(index, overall)),
            int(np.count_nonzero(kept_where == index)),
            index in region_values,
        )
        for index, (row, col, box) in enumerate(boxes)
    )
    return PSFEstimate(
        fwhm_pix=_round(overall),
        beta=_round(float(np.median(betas))) if betas.size >= min_stars else None,
        ellipticity=ellipticity,
        position_angle_deg=angle,
        n_stars=len(kept),
        scatter_pix=_round(scatter),
        regions=regions,
        min_stars=min_stars,
    )


def _round(value: float) -> float:
    """Four significant digits: stable in result keys, well below the measurement error."""
    return float(f"{value:.4g}")


def _unusable(n_stars: int, min_stars: int) -> PSFEstimate:
    return PSFEstimate(None, None, None, None, n_stars, None, (), min_stars)
