"""Score a source catalog against a simulation's truth.

Detections and truth objects are matched one to one, nearest pairs first,
within a radius. Completeness counts truth objects above S/N 10; purity counts
detections that match some truth object; blend recall counts close pairs of
truth objects (both above S/N 10, closer than 1.5 arcsec) whose two members
are both matched, each to its own detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["CatalogScore", "match_positions", "score_catalog"]


@dataclass(frozen=True)
class CatalogScore:
    """Quality of a catalog against the truth."""

    completeness: float
    """Fraction of truth objects with S/N > ``min_snr`` that are matched."""
    purity: float
    """Fraction of detections matched to a truth object."""
    blend_recall: float
    """Fraction of close truth pairs whose members are both matched, distinctly."""
    n_truth: int
    """Truth objects above ``min_snr``."""
    n_detected: int
    """Detections scored."""
    n_close_pairs: int
    """Close truth pairs above ``min_snr``."""


def match_positions(
    detected_xy: np.ndarray, truth_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching, closest pairs first.

    Parameters
    ----------
    detected_xy, truth_xy : numpy.ndarray
        ``(n, 2)`` positions in pixels.
    radius : float
        Largest match distance in pixels.

    Returns
    -------
    detected_match, truth_match : numpy.ndarray
        For each detection the index of its truth object (-1 if none), and for
        each truth object the index of its detection (-1 if none).
    """
    detected_match = np.full(len(detected_xy), -1, dtype=np.int64)
    truth_match = np.full(len(truth_xy), -1, dtype=np.int64)
    if len(detected_xy) == 0 or len(truth_xy) == 0:
        return detected_match, truth_match
    distances = cKDTree(detected_xy).sparse_distance_matrix(
        cKDTree(truth_xy), radius, output_type="ndarray"
    )
    order = np.lexsort((distances["j"], distances["i"], distances["v"]))
    for i, j in zip(distances["i"][order], distances["j"][order], strict=True):
        if detected_match[i] < 0 and truth_match[j] < 0:
            detected_match[i] = j
            truth_match[j] = i
    return detected_match, truth_match


def score_catalog(
    detected: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    pixel_scale_arcsec: float = 0.1,
    match_radius_arcsec: float = 0.4,
    pair_separation_arcsec: float = 1.5,
    min_snr: float = 10.0,
) -> CatalogScore:
    """Completeness, purity and blend recall of ``detected`` against ``truth``.

    Parameters
    ----------
    detected : pandas.DataFrame
        Catalog with ``x`` and ``y`` (mosaic pixels).
    truth : pandas.DataFrame
        Truth catalog with ``x``, ``y`` and ``snr``.
    pixel_scale_arcsec : float
        Pixel scale.
    match_radius_arcsec : float
        Match radius.
    pair_separation_arcsec : float
        Truth pairs closer than this are close pairs.
    min_snr : float
        Truth objects below this S/N do not count towards completeness or pairs.

    Returns
    -------
    CatalogScore
    """
    radius = match_radius_arcsec / pixel_scale_arcsec
    detected_xy = detected[["x", "y"]].to_numpy(dtype=float)
    truth_xy = truth[["x", "y"]].to_numpy(dtype=float)
    detected_match, truth_match = match_positions(detected_xy, truth_xy, radius)
    bright = truth["snr"].to_numpy() > min_snr
    n_bright = int(bright.sum())
    completeness = float(np.mean(truth_match[bright] >= 0)) if n_bright else float("nan")
    purity = float(np.mean(detected_match >= 0)) if len(detected_xy) else float("nan")

    bright_xy = truth_xy[bright]
    bright_match = truth_match[bright]
    pairs = (
        cKDTree(bright_xy).query_pairs(
            pair_separation_arcsec / pixel_scale_arcsec, output_type="ndarray"
        )
        if n_bright > 1
        else np.zeros((0, 2), dtype=int)
    )
    if len(pairs):
        both = (bright_match[pairs[:, 0]] >= 0) & (bright_match[pairs[:, 1]] >= 0)
        blend_recall = float(np.mean(both))
    else:
        blend_recall = float("nan")
    return CatalogScore(
        completeness=completeness,
        purity=purity,
        blend_recall=blend_recall,
        n_truth=n_bright,
        n_detected=len(detected_xy),
        n_close_pairs=len(pairs),
    )
