"""Survey geometry: mosaic footprints on the sky and the primary mosaic of a position.

Pure geometry, no file I/O. A survey is many mosaics that overlap; an object in
the overlap of two mosaics is detected in both, and the survey catalog must
report it once. The *primary rule* says which mosaic reports a sky position:

    The primary mosaic of a position is, among the mosaics whose footprint
    contains it, the one whose sky centre is nearest on the sky (great-circle
    distance); ties go to the mosaic whose name sorts first.

A mosaic's *footprint* is its pixel rectangle ``[-0.5, nx - 0.5) x [-0.5, ny -
0.5)`` (0-based pixel centres at integers) mapped to the sky through its WCS,
no-data pixels included; its *centre* is the sky position of pixel ``((nx - 1) /
2, (ny - 1) / 2)``. The rule needs only the footprints, so each mosaic evaluates
it alone (:func:`primary_mask`) and every position of the union of footprints
gets exactly one primary mosaic, however many mosaics meet there and whatever
their orientations and pixel scales: the mosaics' Voronoi cells on the sky,
each clipped to the footprints that contain its points. Positions outside every
footprint have none.

Typical use::

    footprints = [MosaicFootprint(name, info.wcs, info.shape) for name, info in mosaics]
    keep = primary_mask(sources["ra"], sources["dec"], footprints[0], footprints)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral
from typing import Any

import numpy as np
from astropy.wcs import WCS

from survey_seg.errors import InputError
from survey_seg.tiling import angular_separation, check_wcs, pixel_to_sky, sky_to_pixel

__all__ = [
    "PRIMARY_RULE",
    "MosaicFootprint",
    "neighbours",
    "primary_mask",
    "primary_mosaic",
]

PRIMARY_RULE = (
    "the primary mosaic of a sky position is, among the mosaics whose footprint (pixel "
    "rectangle through its WCS) contains it, the one whose centre is nearest on the sky "
    "(great-circle distance); ties go to the name that sorts first"
)
"""The primary rule in words, as the survey manifest records it."""


@dataclass(frozen=True, eq=False)
class MosaicFootprint:
    """The sky footprint of one mosaic of a survey.

    Attributes
    ----------
    name : str
        Unique name of the mosaic in the survey (its output directory's name).
    wcs : astropy.wcs.WCS
        Celestial WCS of the mosaic (0-based pixel coordinates as ``origin=0``).
    shape : tuple of int
        ``(ny, nx)`` of the mosaic.
    """

    name: str
    wcs: WCS = field(repr=False)
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(
                f"a mosaic footprint needs a non-empty name, got {self.name!r}; name each "
                "mosaic (e.g. by its file stem)"
            )
        if (
            not isinstance(self.shape, tuple | list)
            or len(self.shape) != 2
            or not all(isinstance(n, Integral) and not isinstance(n, bool) for n in self.shape)
            or min(self.shape) < 1
        ):
            raise InputError(
                f"mosaic {self.name!r}: shape must be (ny, nx), two positive integers, got "
                f"{self.shape!r}"
            )
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        check_wcs(self.wcs, self.shape)

    @cached_property
    def center(self) -> tuple[float, float]:
        """``(ra, dec)`` in degrees of the central pixel position ``((nx-1)/2, (ny-1)/2)``."""
        ny, nx = self.shape
        ra, dec = pixel_to_sky(self.wcs, np.array([(nx - 1) / 2.0]), np.array([(ny - 1) / 2.0]))
        return float(ra[0]), float(dec[0])

    @cached_property
    def radius(self) -> float:
        """Largest great-circle distance (degrees) from the centre to the footprint's edge."""
        ra, dec = self.boundary()
        return float(np.max(angular_separation(self.center[0], self.center[1], ra, dec)))

    def boundary(self, samples_per_side: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """``(ra, dec)`` of points along the footprint's edge, counter-clockwise in pixels.

        Parameters
        ----------
        samples_per_side : int
            Points per side of the pixel rectangle (its corners included once).

        Returns
        -------
        tuple of numpy.ndarray
        """
        if not isinstance(samples_per_side, Integral) or samples_per_side < 1:
            raise InputError(f"samples_per_side must be a positive integer, not {samples_per_side}")
        ny, nx = self.shape
        t = np.linspace(0.0, 1.0, int(samples_per_side), endpoint=False)
        x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
        along = np.full_like(t, 1.0)
        x = np.concatenate([x0 + t * (x1 - x0), x1 * along, x1 - t * (x1 - x0), x0 * along])
        y = np.concatenate([y0 * along, y0 + t * (y1 - y0), y1 * along, y1 - t * (y1 - y0)])
        return pixel_to_sky(self.wcs, x, y)

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """Whether each position lies in the footprint (half-open pixel rectangle).

        Parameters
        ----------
        ra, dec : array-like
            ICRS degrees.

        Returns
        -------
        numpy.ndarray of bool
            Of the broadcast shape of ``ra`` and ``dec``; False where the WCS cannot
            place the position (e.g. beyond the projection's hemisphere).
        """
        ra, dec = _positions(ra, dec)
        if not ra.size:
            return np.zeros(ra.shape, dtype=bool)
        x, y = sky_to_pixel(self.wcs, ra.ravel(), dec.ravel())
        ny, nx = self.shape
        with np.errstate(invalid="ignore"):
            inside = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        return inside.reshape(ra.shape)

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable record: name, shape, centre and the WCS's FITS keywords."""
        header = self.wcs.to_header(relax=True)
        return {
            "name": self.name,
            "shape": list(self.shape),
            "center": list(self.center),
            "wcs": {key: header[key] for key in header},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MosaicFootprint:
        """Rebuild a footprint from :meth:`to_record`'s dict."""
        import warnings

        from astropy.io import fits
        from astropy.wcs import FITSFixedWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(fits.Header(record["wcs"]), naxis=2)
            ny, nx = (int(n) for n in record["shape"])
            wcs.pixel_shape = (nx, ny)
            return cls(str(record["name"]), wcs, (ny, nx))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"a survey footprint record is unreadable ({error}); rerun the survey with --clean"
            ) from None


def _positions(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=float), np.asarray(dec, dtype=float))
    return ra, dec


def _check_footprints(footprints: Sequence[MosaicFootprint]) -> list[MosaicFootprint]:
    footprints = list(footprints)
    if not footprints:
        raise InputError("a survey needs at least one mosaic footprint; pass every mosaic's")
    for footprint in footprints:
        if not isinstance(footprint, MosaicFootprint):
            raise InputError(
                f"footprints must be MosaicFootprint objects, got {type(footprint).__name__}"
            )
    names = [footprint.name for footprint in footprints]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InputError(
            f"mosaic names must be unique in a survey, {duplicated} appear more than once; "
            "rename the files so that their stems differ"
        )
    return sorted(footprints, key=lambda footprint: footprint.name)


def neighbours(
    mosaic: MosaicFootprint, footprints: Sequence[MosaicFootprint]
) -> list[MosaicFootprint]:
    """The footprints that may overlap ``mosaic`` (itself included), sorted by name.

    Two footprints may overlap only when their centres are closer than the sum
    of their radii (:attr:`MosaicFootprint.radius`); the test is conservative.
    """
    footprints = _check_footprints(footprints)
    if not any(footprint.name == mosaic.name for footprint in footprints):
        raise InputError(
            f"mosaic {mosaic.name!r} is not among the survey's footprints; pass all of them"
        )
    ra0, dec0 = mosaic.center
    reach = np.array([mosaic.radius + footprint.radius for footprint in footprints])
    ra = np.array([footprint.center[0] for footprint in footprints])
    dec = np.array([footprint.center[1] for footprint in footprints])
    near = angular_separation(ra0, dec0, ra, dec) <= reach * (1.0 + 1e-9) + 1e-12
    return [footprint for footprint, keep in zip(footprints, near, strict=True) if keep]


def primary_mosaic(ra: Any, dec: Any, footprints: Sequence[MosaicFootprint]) -> np.ndarray:
    """The name of the primary mosaic of each position, ``""`` outside every footprint.

    Parameters
    ----------
    ra, dec : array-like
        ICRS degrees.
    footprints : sequence of MosaicFootprint
        Every mosaic of the survey (unique names).

    Returns
    -------
    numpy.ndarray of str
        Of the broadcast shape of ``ra`` and ``dec``.
    """
    footprints = _check_footprints(footprints)
    ra, dec = _positions(ra, dec)
    flat_ra, flat_dec = ra.ravel(), dec.ravel()
    best = np.full(flat_ra.shape, np.inf)
    names = np.full(flat_ra.shape, "", dtype=object)
    for footprint in footprints:  # sorted by name: a tie keeps the earlier name
        inside = footprint.contains(flat_ra, flat_dec)
        distance = np.full(flat_ra.shape, np.inf)
        distance[inside] = angular_separation(*footprint.center, flat_ra[inside], flat_dec[inside])
        nearer = inside & (distance < best)
        best[nearer] = distance[nearer]
        names[nearer] = footprint.name
    return names.astype(str).reshape(ra.shape)


def primary_mask(
    ra: Any, dec: Any, mosaic: MosaicFootprint, footprints: Sequence[MosaicFootprint]
) -> np.ndarray:
    """Whether ``mosaic`` is the primary mosaic of each position (the primary rule).

    Only the footprints that may overlap ``mosaic`` are evaluated
    (:func:`neighbours`), so the cost does not grow with the survey; the answer
    is that of :func:`primary_mosaic` over all of them.

    Parameters
    ----------
    ra, dec : array-like
        ICRS degrees, e.g. the positions of the mosaic's catalog.
    mosaic : MosaicFootprint
        The mosaic asking; one of ``footprints``.
    footprints : sequence of MosaicFootprint
        Every mosaic of the survey (unique names).

    Returns
    -------
    numpy.ndarray of bool
    """
    if not isinstance(mosaic, MosaicFootprint):
        raise InputError(f"mosaic must be a MosaicFootprint, got {type(mosaic).__name__}")
    nearby = neighbours(mosaic, footprints)
    return primary_mosaic(ra, dec, nearby) == mosaic.name
