"""Data quality from the network's output: artefact planes and tile verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from survey_seg.masks import ARTEFACT_BITS, MaskBit

__all__ = [
    "NETWORK_ARTEFACT_BITS",
    "artefact_planes",
    "flagged_fraction",
    "sharper_than_psf",
    "tile_verdict",
]

NETWORK_ARTEFACT_BITS = (MaskBit.CR, MaskBit.STREAK, MaskBit.GHOST, MaskBit.BAD, MaskBit.SAT)
"""Mask plane of each channel of the network's artefact head."""


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
        whatever the network says.
    threshold : float or sequence of float
        Probability above which a plane is set: one for all, or one per channel.
    saturation_fraction : float
        See ``saturation``.

    Returns
    -------
    numpy.ndarray
    """
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=float), (len(NETWORK_ARTEFACT_BITS),))
    planes = np.zeros(valid.shape, dtype=np.uint32)
    for channel, bit in enumerate(NETWORK_ARTEFACT_BITS):
        planes[artefact_probability[channel] > thresholds[channel]] |= np.uint32(bit)
    if saturation:
        with np.errstate(invalid="ignore"):
            planes[valid & (image >= saturation_fraction * saturation)] |= np.uint32(MaskBit.SAT)
    planes[~valid] = np.uint32(MaskBit.NO_DATA)
    return planes


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
