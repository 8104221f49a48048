"""Blend segmentation from the network's dense output: footprints, then instances.

Footprints are the connected regions where the network sees an object (single
or overlapping); each peak of the centre heatmap inside a footprint seeds one
source, and a watershed of the S/N image shares the footprint's pixels among
them. A deblended source's position is its centre peak, refined to sub-pixel:
the flux centroid of a segment cut out of a blend is pulled towards the cut.
Pure numpy; every step is local.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from survey_seg.measure import label_maximum, label_maximum_position, relabel_in_raster_order

__all__ = ["deblended_centres", "find_centres", "split_instances"]

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def find_centres(
    heatmap: np.ndarray, inside: np.ndarray, *, threshold: float, min_distance: int
) -> np.ndarray:
    """Local maxima of a centre heatmap above ``threshold`` inside ``inside``.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(H, W)`` centre probabilities.
    inside : numpy.ndarray
        Boolean mask where centres may lie.
    threshold : float
        Minimum peak value.
    min_distance : int
        Peaks closer than this (Chebyshev, pixels) to a higher one are dropped.

    Returns
    -------
    numpy.ndarray
        Boolean peak mask (plateaus keep one pixel, the first in raster order).
    """
    size = 2 * int(min_distance) + 1
    peaks = (heatmap == ndimage.maximum_filter(heatmap, size=size)) & (heatmap > threshold) & inside
    labels, n = ndimage.label(peaks, structure=EIGHT_CONNECTED)
    if n and n != peaks.sum():  # flat-topped peaks: keep one pixel of each
        flat = labels.ravel()
        inside = np.flatnonzero(flat)
        first = np.full(n + 1, flat.size, dtype=np.int64)
        np.minimum.at(first, flat[inside], inside)
        peaks = np.zeros_like(peaks)
        peaks.flat[first[1:]] = True
    return peaks


def split_instances(
    object_probability: np.ndarray,
    overlap_probability: np.ndarray,
    centres: np.ndarray,
    elevation: np.ndarray,
    *,
    object_threshold: float,
    min_area: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Footprints and source instances from the network's object and centre maps.

    Parameters
    ----------
    object_probability : numpy.ndarray
        Probability that a pixel belongs to any object (single or overlap).
    overlap_probability : numpy.ndarray
        Probability that two or more objects overlap at a pixel.
    centres : numpy.ndarray
        Boolean centre peaks (:func:`find_centres`).
    elevation : numpy.ndarray
        Image whose maxima the watershed floods from (e.g. smoothed S/N).
    object_threshold : float
        Footprints are the connected pixels with ``object_probability`` above it.
    min_area : int
        Footprints smaller than this are dropped; larger ones without a centre
        get one at their ``elevation`` maximum.

    Returns
    -------
    sources, footprints : numpy.ndarray
        int32 labels, numbered in raster order of their first pixel.
    blend_probability : numpy.ndarray
        Per source ``1 .. n``: the largest overlap probability in the source.
    """
    footprints, n = ndimage.label(object_probability > object_threshold, structure=EIGHT_CONNECTED)
    if n == 0:
        empty = np.zeros(object_probability.shape, dtype=np.int32)
        return empty, empty, np.zeros(0)
    area = np.bincount(footprints.ravel())
    too_small = area < min_area
    too_small[0] = False
    footprints[too_small[footprints]] = 0
    markers, n_markers = ndimage.label(centres & (footprints > 0), structure=EIGHT_CONNECTED)
    seeded = np.zeros(area.size, dtype=bool)
    seeded[footprints[markers > 0]] = True
    lacking = np.flatnonzero(~seeded & ~too_small)
    lacking = lacking[lacking > 0]
    if lacking.size:
        ys, xs = label_maximum_position(elevation, footprints, lacking)
        markers[ys, xs] = n_markers + np.arange(1, lacking.size + 1)
    sources = watershed(-elevation, markers, mask=footprints > 0, connectivity=2)
    # a child smaller than a footprint may be is a sliver (often a cosmic-ray hit on a
    # wing): give its pixels back to its neighbours
    child_area = np.bincount(sources.ravel())
    child_footprint = np.zeros(child_area.size, dtype=np.int64)
    child_footprint[sources.ravel()] = footprints.ravel()
    is_sliver = child_area < min_area
    is_sliver[0] = False
    keeps_a_child = np.zeros(int(footprints.max()) + 1, dtype=bool)
    keeps_a_child[child_footprint[~is_sliver][1:]] = True
    slivers = np.flatnonzero(is_sliver & keeps_a_child[child_footprint])
    if slivers.size:
        markers[np.isin(markers, slivers)] = 0
        sources = watershed(-elevation, markers, mask=footprints > 0, connectivity=2)
    sources, footprints = relabel_in_raster_order(sources), relabel_in_raster_order(footprints)
    n_sources = int(sources.max())
    blend_probability = label_maximum(overlap_probability, sources, np.arange(1, n_sources + 1))
    return sources, footprints, blend_probability


def deblended_centres(
    heatmap: np.ndarray, sources: np.ndarray, footprints: np.ndarray
) -> np.ndarray:
    """Sub-pixel centre of each source that shares its footprint with others.

    A watershed cuts a blend along the valley between its members, so the flux
    centroid of each piece is pulled towards the cut (on simulated blends its
    median error is 0.22 px, against 0.16 px here). The centre heatmap's peak in
    the source, moved to the heatmap-weighted mean of its 3 x 3 neighbourhood,
    does not depend on the cut. Sources alone in their footprint keep their
    centroid (NaN here), which is as good for them.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(H, W)`` centre probabilities.
    sources : numpy.ndarray
        int source labels ``1 .. n`` (0 for background).
    footprints : numpy.ndarray
        int footprint labels; a footprint holding several sources is a blend.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64 window positions ``(y, x)`` per source label, NaN for
        sources alone in their footprint.
    """
    n = int(sources.max()) if sources.size else 0
    centres = np.full((n, 2), np.nan)
    if n == 0:
        return centres
    ys, xs = label_maximum_position(heatmap, sources, np.arange(1, n + 1))
    footprint = footprints[ys, xs]
    members = np.bincount(footprint, minlength=int(footprints.max()) + 1)
    blended = np.flatnonzero((members[footprint] > 1) & (footprint > 0))
    if blended.size == 0:
        return centres
    padded = np.pad(np.clip(heatmap, 0.0, None).astype(np.float64), 1)
    step = np.arange(-1, 2)
    rows = ys[blended, None, None] + 1 + step[None, :, None]
    cols = xs[blended, None, None] + 1 + step[None, None, :]
    weights = padded[rows, cols]  # (k, 3, 3) around each peak
    total = weights.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    centres[blended, 0] = ys[blended] + (weights.sum(axis=2) @ step) / safe
    centres[blended, 1] = xs[blended] + (weights.sum(axis=1) @ step) / safe
    return centres
