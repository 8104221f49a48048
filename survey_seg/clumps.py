"""Clump catalog from the clump heatmap: thresholding and peak finding inside hosts."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from survey_seg.blends import find_centres
from survey_seg.screen import ClumpCandidates

__all__ = ["clump_flux_fraction", "find_clumps"]


def find_clumps(
    heatmap: np.ndarray,
    sources: np.ndarray,
    flux_image: np.ndarray,
    *,
    threshold: float,
    min_distance: int = 2,
) -> ClumpCandidates:
    """Peaks of the clump heatmap above ``threshold`` that lie inside a source.

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

    Returns
    -------
    ClumpCandidates
    """
    peaks = find_centres(heatmap, sources > 0, threshold=threshold, min_distance=min_distance)
    ys, xs = np.nonzero(peaks)
    if ys.size == 0:
        return ClumpCandidates.empty()
    hosts = sources[ys, xs].astype(np.int64)
    return ClumpCandidates(
        y=ys.astype(np.float64),
        x=xs.astype(np.float64),
        host_label=hosts,
        score=heatmap[ys, xs].astype(np.float64),
        flux_fraction=clump_flux_fraction(flux_image, sources, ys, xs, hosts),
    )


def clump_flux_fraction(
    flux_image: np.ndarray, sources: np.ndarray, ys: np.ndarray, xs: np.ndarray, hosts: np.ndarray
) -> np.ndarray:
    """Flux in a 5x5 box above the mean of the surrounding 9x9 ring, over the host flux."""
    box5 = ndimage.uniform_filter(flux_image, size=5) * 25.0
    box9 = ndimage.uniform_filter(flux_image, size=9) * 81.0
    ring_mean = (box9 - box5) / (81.0 - 25.0)
    excess = box5[ys, xs] - 25.0 * ring_mean[ys, xs]
    host_flux = np.bincount(sources.ravel(), weights=flux_image.ravel())
    return excess / np.maximum(host_flux[hosts], 1e-12)
