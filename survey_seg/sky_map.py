"""HEALPix maps of a survey: which mosaic covers each sky pixel, written as FITS and MOC.

A survey's quality map is a partial HEALPix map (nested ordering, ICRS) at an
order chosen from the tile size (:func:`map_order_for`). A map pixel is
covered when its centre lies in the union of the mosaics' footprints; it then
takes the values of the primary mosaic there (:mod:`survey_seg.survey`), so
that each pixel has one source of truth, as each object has one catalog row.

Files follow the HEALPix FITS convention for partial maps (as ``healpy``'s
``write_map(partial=True)`` writes them): a ``BINTABLE`` with ``PIXTYPE =
'HEALPIX'``, ``ORDERING = 'NESTED'``, ``COORDSYS = 'C'``, ``NSIDE``,
``INDXSCHM = 'EXPLICIT'`` and ``OBJECT = 'PARTIAL'``, whose ``PIXEL`` column
names the pixel of each row. The accepted area is also written as a MOC
(IVOA Multi-Order Coverage map, FITS) with ``mocpy``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from survey_seg.errors import InputError
from survey_seg.files import atomic_path
from survey_seg.survey import MosaicFootprint, primary_mask

__all__ = [
    "MAX_MAP_ORDER",
    "CoveredPixels",
    "MapColumn",
    "covered_pixels",
    "map_order_for",
    "pixel_area_deg2",
    "write_healpix_map",
    "write_moc",
]

MAX_MAP_ORDER = 24
"""Finest map order (0.012 arcsec pixels): far below any tile."""
_HEALPIX_SIDE_DEG = float(np.degrees(np.sqrt(4.0 * np.pi / 12.0)))


@dataclass(frozen=True)
class CoveredPixels:
    """The map pixels whose centres lie in a survey's footprints.

    Attributes
    ----------
    order : int
        HEALPix order (nested).
    pixels : numpy.ndarray
        int64 pixel numbers, ascending.
    mosaic : numpy.ndarray
        str: the primary mosaic of each pixel's centre.
    ra, dec : numpy.ndarray
        The centres, ICRS degrees.
    """

    order: int
    pixels: np.ndarray
    mosaic: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


@dataclass(frozen=True)
class MapColumn:
    """One value column of a HEALPix map file."""

    name: str
    values: np.ndarray
    unit: str
    description: str


def pixel_area_deg2(order: int) -> float:
    """Area of a HEALPix pixel of ``order``, square degrees."""
    _check_order(order)
    return float(4.0 * np.pi * np.degrees(1.0) ** 2 / (12 * 4**order))


def map_order_for(tile_side_deg: float) -> int:
    """The coarsest order whose pixels are at most half a tile wide (at least 4 per tile).

    Parameters
    ----------
    tile_side_deg : float
        Sky size of the smallest tile core, degrees.

    Returns
    -------
    int
        In ``[0, MAX_MAP_ORDER]``.
    """
    if not np.isfinite(tile_side_deg) or tile_side_deg <= 0:
        raise InputError(f"tile_side_deg must be a positive size in degrees, not {tile_side_deg}")
    order = int(np.ceil(np.log2(_HEALPIX_SIDE_DEG / (tile_side_deg / 2.0))))
    return int(np.clip(order, 0, MAX_MAP_ORDER))


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int | np.integer):
        raise InputError(f"a HEALPix order must be an integer, not {order!r}")
    if not 0 <= order <= 29:
        raise InputError(f"a HEALPix order must be in [0, 29], not {order}")


def covered_pixels(footprints: Sequence[MosaicFootprint], order: int) -> CoveredPixels:
    """The pixels of ``order`` whose centres lie in a footprint, with their primary mosaic.

    Each mosaic looks at the pixels within its radius and keeps those of which
    it is primary (:func:`~survey_seg.survey.primary_mask`), so each covered
    pixel is found once.

    Parameters
    ----------
    footprints : sequence of MosaicFootprint
        Every mosaic of the survey.
    order : int
        HEALPix order of the map.

    Returns
    -------
    CoveredPixels
    """
    import astropy.units as u
    from astropy_healpix import HEALPix

    _check_order(order)
    healpix = HEALPix(nside=2**order, order="nested")
    margin = float(healpix.pixel_resolution.to_value(u.deg))
    found_pixels, found_names = [], []
    for footprint in footprints:
        ra0, dec0 = footprint.center
        candidates = healpix.cone_search_lonlat(
            ra0 * u.deg, dec0 * u.deg, (footprint.radius + margin) * u.deg
        )
        lon, lat = healpix.healpix_to_lonlat(candidates)
        ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
        mine = primary_mask(ra, dec, footprint, footprints)
        found_pixels.append(np.asarray(candidates, dtype=np.int64)[mine])
        found_names.append(np.full(int(mine.sum()), footprint.name, dtype=object))
    pixels = np.concatenate(found_pixels) if found_pixels else np.zeros(0, np.int64)
    names = np.concatenate(found_names) if found_names else np.zeros(0, object)
    order_of = np.argsort(pixels, kind="stable")
    pixels, names = pixels[order_of], names[order_of].astype(str)
    lon, lat = healpix.healpix_to_lonlat(pixels)
    return CoveredPixels(
        order=int(order),
        pixels=pixels,
        mosaic=names,
        ra=lon.to_value(u.deg),
        dec=lat.to_value(u.deg),
    )


def write_healpix_map(
    path: str | os.PathLike,
    order: int,
    pixels: np.ndarray,
    columns: Sequence[MapColumn],
    *,
    extname: str = "QUALITY",
) -> Path:
    """Write a partial HEALPix map (explicit indexing, nested, ICRS) atomically.

    Parameters
    ----------
    path : path-like
        The FITS file.
    order : int
        HEALPix order.
    pixels : numpy.ndarray
        Nested pixel numbers of the rows.
    columns : sequence of MapColumn
        Value columns, one value per pixel.
    extname : str
        Name of the table HDU.

    Returns
    -------
    pathlib.Path
    """
    _check_order(order)
    pixels = np.asarray(pixels, dtype=np.int64)
    for column in columns:
        if len(column.values) != len(pixels):
            raise InputError(
                f"map column {column.name} has {len(column.values)} values for "
                f"{len(pixels)} pixels; give one value per pixel"
            )
    formats = {"f": "E", "i": "J", "u": "J", "b": "L"}
    fits_columns = [fits.Column(name="PIXEL", format="K", array=pixels)]
    for column in columns:
        values = np.asarray(column.values)
        kind = formats.get(values.dtype.kind)
        if kind is None:
            raise InputError(f"map column {column.name} must be numeric, not {values.dtype}")
        fits_columns.append(
            fits.Column(name=column.name, format=kind, array=values, unit=column.unit or None)
        )
    table = fits.BinTableHDU.from_columns(fits_columns, name=extname)
    header = table.header
    for key, value, comment in (
        ("PIXTYPE", "HEALPIX", "HEALPix pixelisation"),
        ("ORDERING", "NESTED", "pixel ordering scheme"),
        ("COORDSYS", "C", "celestial (ICRS)"),
        ("NSIDE", 2**order, "resolution parameter"),
        ("ORDER", order, "HEALPix order, NSIDE = 2**ORDER"),
        ("INDXSCHM", "EXPLICIT", "the PIXEL column names each row's pixel"),
        ("OBJECT", "PARTIAL", "the rows cover part of the sky"),
        ("FIRSTPIX", 0, "first pixel of the sphere"),
        ("LASTPIX", 12 * 4**order - 1, "last pixel of the sphere"),
    ):
        header[key] = (value, comment)
    header["TCOMM1"] = "HEALPix nested pixel number"
    for index, column in enumerate(columns, start=2):
        header[f"TCOMM{index}"] = column.description[:68]
    target = Path(path)
    with atomic_path(target) as temporary:
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(temporary, overwrite=True)
    return target


def write_moc(path: str | os.PathLike, order: int, pixels: np.ndarray) -> Path:
    """Write the MOC of HEALPix ``pixels`` of ``order`` (nested) as FITS, atomically."""
    from mocpy import MOC

    _check_order(order)
    pixels = np.unique(np.asarray(pixels, dtype=np.uint64))
    moc = MOC.from_healpix_cells(pixels, np.full(len(pixels), order, dtype=np.uint8), order)
    target = Path(path)
    with atomic_path(target) as temporary:
        moc.save(temporary, format="fits", overwrite=True)
    return target
