"""Bit-mask planes of the uint32 ``mask`` array, named after LSST and Euclid VIS.

Each plane is one bit of :class:`MaskBit`; a pixel carries the bitwise OR of
every plane that applies to it.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["ARTEFACT_BITS", "MASK_DTYPE", "MaskBit", "describe_bits", "has_bit"]

MASK_DTYPE = np.dtype(np.uint32)


class MaskBit(enum.IntFlag):
    """Mask planes; the value of each member is ``1 << bit``."""

    NO_DATA = 1 << 0
    """No valid input pixel (NaN, zero weight, outside the footprint)."""
    BAD = 1 << 1
    """Bad column, cluster or hot pixel."""
    SAT = 1 << 2
    """Saturated, with its bleed trail."""
    CR = 1 << 3
    """Cosmic ray."""
    STREAK = 1 << 4
    """Satellite or asteroid trail."""
    GHOST = 1 << 5
    """Optical ghost or scattered light."""
    EDGE = 1 << 6
    """Within a halo width of the mosaic edge."""
    DETECTED = 1 << 7
    """Inside a source footprint."""
    BLENDED = 1 << 8
    """Inside the footprint of a source that overlaps another."""
    CLUMP = 1 << 9
    """Inside a detected clump."""
    REJECTED = 1 << 10
    """The tile was rejected by quality screening."""


ARTEFACT_BITS = MaskBit.BAD | MaskBit.SAT | MaskBit.CR | MaskBit.STREAK | MaskBit.GHOST
"""Planes that mark instrumental artefacts (not astrophysical sources)."""

DESCRIPTIONS = {bit.name: (bit.__doc__ or "").strip() for bit in MaskBit}


def has_bit(mask: np.ndarray, bit: MaskBit) -> np.ndarray:
    """Return a boolean array, True where ``mask`` has any plane of ``bit`` set.

    Parameters
    ----------
    mask : numpy.ndarray
        Integer mask array.
    bit : MaskBit
        One plane or an OR of planes.

    Returns
    -------
    numpy.ndarray
        Boolean array of the shape of ``mask``.
    """
    return (np.asarray(mask) & np.uint32(int(bit))) != 0


def describe_bits() -> dict[str, dict[str, object]]:
    """Return ``{name: {"bit": n, "value": 1 << n, "doc": text}}`` for every plane.

    Stored in the attributes of output masks so a reader needs no code to decode them.
    """
    return {
        bit.name: {"bit": int(bit).bit_length() - 1, "value": int(bit), "doc": DESCRIPTIONS[bit.name]}
        for bit in MaskBit
    }
