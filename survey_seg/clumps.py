"""Clump catalog from the clump heatmap: thresholding and peak finding inside hosts."""

from __future__ import annotations

import numpy as np

from survey_seg.blends import CLUMP_MIN_DISTANCE, find_centres
from survey_seg.measure import light_centres
from survey_seg.screen import ClumpCandidates

__all__ = ["clump_flux_fraction", "find_clumps"]


def find_clumps(
    heatmap: np.ndarray,
    sources: np.ndarray,
    flux_image: np.ndarray,
    *,
    threshold: float,
    min_distance: int = CLUMP_MIN_DISTANCE,
    min_offset: float = 0.0,
    centre_heatmap: np.ndarray | None = None,
    min_clump_to_centre: float | None = None,
) -> ClumpCandidates:
    """Peaks of the clump heatmap above ``threshold`` that lie inside a source.

    A clump is a knot off its host's centre, not its nucleus (Guo et al. 2015): a
    peak within ``min_offset`` of its host's light-weighted centre is dropped. (A
    knot that came out as a source of its own has its peak there: its clump row
    would say that the source is its own clump.) With ``min_clump_to_centre``, a
    peak where the clump probability is less than that many times the centre
    probability is an object's centre, not a knot off it, and is dropped too: a
    compact galaxy beside a clumpy one lights the clump head, but the centre head
    more.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(H, W)`` clump probabilities.
    sources : numpy.ndarray
        int32 source labels; a clump's host is the source under its peak.
    flux_image : numpy.ndarray
        Background-subtracted image, for the clumps' flux fractions.
    threshold : float
        Minimum peak probability.
    min_distance : int
        Minimum distance between clumps (pixels).
    min_offset : float
        Least distance (pixels) from the host's light-weighted centre (0: any).
    centre_heatmap : numpy.ndarray, optional
        ``(H, W)`` centre probabilities; needed with ``min_clump_to_centre``.
    min_clump_to_centre : float, optional
        Least ratio of clump to centre probability at a peak (None: any).

    Returns
    -------
    ClumpCandidates
    """
    if min_clump_to_centre is not None and centre_heatmap is None:
        raise ValueError("min_clump_to_centre needs the centre_heatmap to compare with")
    peaks = find_centres(heatmap, sources > 0, threshold=threshold, min_distance=min_distance)
    if min_clump_to_centre is not None:
        peaks &= heatmap >= min_clump_to_centre * centre_heatmap
    ys, xs = np.nonzero(peaks)
    if ys.size == 0:
        return ClumpCandidates.empty()
    hosts = sources[ys, xs].astype(np.int64)
    if min_offset > 0:
        centre_y, centre_x = light_centres(sources, flux_image, flux_image)
        off_centre = np.hypot(ys - centre_y[hosts - 1], xs - centre_x[hosts - 1]) >= min_offset
        ys, xs, hosts = ys[off_centre], xs[off_centre], hosts[off_centre]
        if ys.size == 0:
            return ClumpCandidates.empty()
    return ClumpCandidates(
        y=ys.astype(np.float64),
        x=xs.astype(np.float64),
        host_label=hosts,
        score=heatmap[ys, xs].astype(np.float64),
        flux_fraction=clump_flux_fraction(flux_image, sources, ys, xs, hosts),
    )


def clump_flux_fraction(
    flux_image: np.ndarray,
    sources: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    hosts: np.ndarray,
    *,
    radius: int = 2,
) -> np.ndarray:
    """Each clump's share of its host's light, within [0, 1].

    A clump's flux is the light above the host's local level (the median of the
    host's pixels in the 2-pixel ring around the clump's ``2 radius + 1`` box) in
    the pixels of its box that belong to the host. A pixel in the boxes of
    several clumps counts for the nearest one only, and no pixel gives more than
    its own positive flux; the host's light is the sum of its positive pixels. So
    the fractions of a host's clumps lie in [0, 1] and add up to at most 1.

    Parameters
    ----------
    flux_image : numpy.ndarray
        Background-subtracted image.
    sources : numpy.ndarray
        int source labels (0: background).
    ys, xs : numpy.ndarray
        Integer pixel positions of the clump peaks.
    hosts : numpy.ndarray
        Label of each clump's host source.
    radius : int
        Half side of a clump's box, pixels.

    Returns
    -------
    numpy.ndarray
        float64 flux fractions, one per clump.
    """
    ys, xs, hosts = (np.asarray(a, dtype=np.int64) for a in (ys, xs, hosts))
    if ys.size == 0:
        return np.zeros(0)
    flux = np.where(np.isfinite(flux_image), flux_image, 0.0).astype(np.float64)
    positive = np.maximum(flux, 0.0)
    boxes, owner = _nearest_clump_pixels(sources, ys, xs, hosts, radius)
    clump_flux = np.zeros(ys.size)
    for k, (pixel_y, pixel_x) in enumerate(boxes):
        level = _host_ring_level(flux, sources, ys[k], xs[k], hosts[k], radius)
        above = flux[pixel_y, pixel_x] - level
        owned = owner[pixel_y, pixel_x] == k
        clump_flux[k] = np.clip(above, 0.0, positive[pixel_y, pixel_x])[owned].sum()
    host_light = np.bincount(sources.ravel(), weights=positive.ravel())[hosts]
    fraction = np.divide(clump_flux, host_light, out=np.zeros(ys.size), where=host_light > 0)
    return np.clip(fraction, 0.0, 1.0)  # only rounding can leave [0, 1]


def _host_ring_level(
    flux: np.ndarray, sources: np.ndarray, y: int, x: int, host: int, radius: int
) -> float:
    """Median flux of the host's own pixels in the 2-pixel ring around a clump's box."""
    height, width = flux.shape
    outer = radius + 2
    y0, y1 = max(0, y - outer), min(height, y + outer + 1)
    x0, x1 = max(0, x - outer), min(width, x + outer + 1)
    grid_y, grid_x = np.mgrid[y0:y1, x0:x1]
    in_ring = np.maximum(abs(grid_y - y), abs(grid_x - x)) > radius
    in_ring &= sources[y0:y1, x0:x1] == host
    return float(np.median(flux[y0:y1, x0:x1][in_ring])) if in_ring.any() else 0.0


def _nearest_clump_pixels(
    sources: np.ndarray, ys: np.ndarray, xs: np.ndarray, hosts: np.ndarray, radius: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The host pixels in each clump's box, and which clump is nearest to each of them."""
    height, width = sources.shape
    nearest = np.full(sources.shape, np.inf)
    owner = np.full(sources.shape, -1, dtype=np.int64)
    boxes = []
    for k in range(ys.size):
        y0, y1 = max(0, ys[k] - radius), min(height, ys[k] + radius + 1)
        x0, x1 = max(0, xs[k] - radius), min(width, xs[k] + radius + 1)
        grid_y, grid_x = np.mgrid[y0:y1, x0:x1]
        inside = sources[y0:y1, x0:x1] == hosts[k]
        pixel_y, pixel_x = grid_y[inside], grid_x[inside]
        distance = np.hypot(pixel_y - ys[k], pixel_x - xs[k])
        closer = distance < nearest[pixel_y, pixel_x]
        nearest[pixel_y[closer], pixel_x[closer]] = distance[closer]
        owner[pixel_y[closer], pixel_x[closer]] = k
        boxes.append((pixel_y, pixel_x))
    return boxes, owner
