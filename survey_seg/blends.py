"""Blend segmentation from the network's dense output: footprints, then instances.

Footprints are the connected regions where the network sees an object (single
or overlapping); each peak of the centre heatmap inside a footprint seeds one
source, and a watershed of the S/N image shares the footprint's pixels among
them. Pure numpy; every step is local.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from survey_seg.measure import label_maximum, label_maximum_position, relabel_in_raster_order

__all__ = ["find_centres", "split_instances"]

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
