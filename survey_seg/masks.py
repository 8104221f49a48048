"""Bit-mask planes of the uint32 ``mask`` array, named after LSST and Euclid VIS.

Each plane is one bit of :class:`MaskBit`; a pixel carries the bitwise OR of
every plane that applies to it.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "ARTEFACT_BITS",
    "ARTEFACT_CLASSES",
    "ARTEFACT_CLASS_BITS",
    "DESCRIPTIONS",
    "MASK_DTYPE",
    "MaskBit",
    "describe_bits",
    "has_bit",
]

MASK_DTYPE = np.dtype(np.uint32)


class MaskBit(enum.IntFlag):
    """Mask planes; the value of each member is ``1 << bit``.

    See :data:`DESCRIPTIONS` for the meaning of each plane.
    """

    NO_DATA = 1 << 0
    BAD = 1 << 1
    SAT = 1 << 2
    CR = 1 << 3
    STREAK = 1 << 4
    GHOST = 1 << 5
    EDGE = 1 << 6
    DETECTED = 1 << 7
    BLENDED = 1 << 8
    CLUMP = 1 << 9
    REJECTED = 1 << 10


ARTEFACT_CLASS_BITS: dict[str, MaskBit] = {
    "cosmic_ray": MaskBit.CR,
    "satellite_trail": MaskBit.STREAK,
    "ghost": MaskBit.GHOST,
    "bad_column": MaskBit.BAD,
    "saturation": MaskBit.SAT,
    "missing_data": MaskBit.NO_DATA,
}
"""The data-quality classes of the Euclid-style screening and the plane marking each."""

ARTEFACT_CLASSES: tuple[str, ...] = tuple(ARTEFACT_CLASS_BITS)
"""Names of the data-quality classes, in order."""

DESCRIPTIONS: dict[str, str] = {
    "NO_DATA": "no valid input pixel (NaN, zero weight, outside the footprint)",
    "BAD": "bad column, cluster or hot pixel",
    "SAT": "saturated, with its bleed trail",
    "CR": "cosmic ray",
    "STREAK": "satellite or asteroid trail",
    "GHOST": "optical ghost or scattered light",
    "EDGE": "within a halo width of the mosaic edge",
    "DETECTED": "inside a source footprint",
    "BLENDED": "inside the footprint of a source that overlaps another",
    "CLUMP": "inside a detected clump",
    "REJECTED": "the tile was rejected by quality screening",
}
"""What each plane means, by name."""


ARTEFACT_BITS = MaskBit.BAD | MaskBit.SAT | MaskBit.CR | MaskBit.STREAK | MaskBit.GHOST
"""Planes that mark instrumental artefacts (not astrophysical sources)."""


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
        bit.name: {
            "bit": int(bit).bit_length() - 1,
            "value": int(bit),
            "doc": DESCRIPTIONS[bit.name],
        }
        for bit in MaskBit
    }
