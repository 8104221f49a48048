"""Catalog schemas: every column's name, dtype, unit and description, in one place.

Pixel coordinates are 0-based mosaic pixels with pixel centres at integers;
sky coordinates are ICRS degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

__all__ = [
    "CATALOGS",
    "CLUMP_COLUMNS",
    "FLUX_COLUMNS",
    "SOURCE_COLUMNS",
    "SURVEY_COLUMNS",
    "TILE_COLUMNS",
    "Column",
    "conform",
    "empty_table",
    "table_columns",
]


@dataclass(frozen=True)
class Column:
    """One catalog column."""

    name: str
    dtype: str
    unit: str
    description: str


POSITION_DOC = (
    "mosaic {axis} (0-based): flux-weighted centroid, or for a deblended source of "
    "the network its sub-pixel centre-head peak"
)

SOURCE_COLUMNS: tuple[Column, ...] = (
    Column("id", "int64", "", "global source id: (owner tile index << 32) | local id"),
    Column("tile_id", "int64", "", "index of the tile whose core holds the position (x, y)"),
    Column("x", "float64", "pix", POSITION_DOC.format(axis="column")),
    Column("y", "float64", "pix", POSITION_DOC.format(axis="row")),
    Column("ra", "float64", "deg", "right ascension of (x, y) (ICRS)"),
    Column("dec", "float64", "deg", "declination of (x, y) (ICRS)"),
    Column("x_peak", "int64", "pix", "mosaic column of the brightest smoothed pixel"),
    Column("y_peak", "int64", "pix", "mosaic row of the brightest smoothed pixel"),
    Column("flux", "float64", "adu", "background-subtracted flux summed over the segment"),
    Column("flux_err", "float64", "adu", "flux uncertainty from the variance plane"),
    Column("mag", "float64", "mag", "ZP - 2.5 log10(flux); NaN without a zero point or flux"),
    Column("snr", "float64", "", "flux / flux_err"),
    Column("area", "int64", "pix2", "number of pixels in the segment"),
    Column("a", "float64", "pix", "semi-major axis RMS from second moments"),
    Column("b", "float64", "pix", "semi-minor axis RMS from second moments"),
    Column("theta", "float64", "deg", "position angle of a, counter-clockwise from +x"),
    Column("is_blended", "bool", "", "the footprint holds more than one source"),
    Column("blend_group", "int64", "", "smallest id among the sources of the footprint"),
    Column("blend_probability", "float64", "", "probability that the source is blended"),
    Column("n_clumps", "int64", "", "number of clumps detected in the source"),
    Column("truncated", "bool", "", "the footprint reaches the tile window edge (halo too small)"),
    Column("flags", "uint32", "", "OR of the mask planes set inside the segment"),
)

CLUMP_COLUMNS: tuple[Column, ...] = (
    Column("id", "int64", "", "global clump id: (tile index << 32) | local id"),
    Column("host_id", "int64", "", "id of the host source"),
    Column("tile_id", "int64", "", "index of the tile that reports the host"),
    Column("x", "float64", "pix", "mosaic column of the clump peak"),
    Column("y", "float64", "pix", "mosaic row of the clump peak"),
    Column("ra", "float64", "deg", "right ascension (ICRS)"),
    Column("dec", "float64", "deg", "declination (ICRS)"),
    Column("probability", "float64", "", "detection score: network probability or a S/N proxy"),
    Column(
        "flux_fraction",
        "float64",
        "",
        "clump light above the host's local level (5x5 pixels, each to the nearest clump) "
        "over the host's light; in [0, 1], summing to at most 1 per host",
    ),
)

TILE_COLUMNS: tuple[Column, ...] = (
    Column("tile_id", "int64", "", "tile index, row-major"),
    Column("row", "int64", "", "tile row in the grid"),
    Column("col", "int64", "", "tile column in the grid"),
    Column("x0", "int64", "pix", "first core column"),
    Column("x1", "int64", "pix", "core column end (exclusive)"),
    Column("y0", "int64", "pix", "first core row"),
    Column("y1", "int64", "pix", "core row end (exclusive)"),
    Column("run_id", "str", "", "id of the run that last screened the tile"),
    Column("status", "str", "", "done or failed"),
    Column("verdict", "str", "", "accept, inspect or reject"),
    Column("n_sources", "int64", "", "sources reported by the tile"),
    Column("n_blended", "int64", "", "blended sources reported by the tile"),
    Column("n_clumps", "int64", "", "clumps reported by the tile"),
    Column("no_data_fraction", "float64", "", "fraction of core pixels with NO_DATA"),
    Column("artefact_fraction", "float64", "", "fraction of core pixels with any artefact plane"),
    Column(
        "flagged_fraction",
        "float64",
        "",
        "fraction of core pixels with NO_DATA or an artefact plane (the verdict's score)",
    ),
    Column(
        "predicted_flagged_fraction",
        "float64",
        "",
        "the data-quality classifier's estimate of flagged_fraction: the mean over the "
        "core's stamps of their estimated flagged fractions (network methods; NaN otherwise)",
    ),
    Column("seconds", "float64", "s", "wall time of screening the tile (network included)"),
    Column("seconds_network", "float64", "s", "of which the network's forward pass"),
    Column("seconds_read", "float64", "s", "wall time of reading the tile window from Zarr"),
    Column("seconds_write", "float64", "s", "wall time of writing the tile core to Zarr"),
    Column("error", "str", "", "reason of a failure, empty when done"),
)

SURVEY_COLUMNS: tuple[Column, ...] = (
    Column(
        "mosaic",
        "str",
        "",
        "name of the survey mosaic that reports the row (its outputs are OUT/mosaics/<name>)",
    ),
    Column(
        "is_primary",
        "bool",
        "",
        "the row's mosaic is the primary mosaic of its (ra, dec) (a clump: of its host's), "
        "the one whose centre is nearest among the mosaics holding it; the survey catalogs "
        "hold the primary rows only",
    ),
)
"""Columns a survey adds to the catalogs of its mosaics (``is_primary``) and to its own
tables (``mosaic``)."""

CATALOGS: dict[str, tuple[Column, ...]] = {
    "sources": SOURCE_COLUMNS,
    "clumps": CLUMP_COLUMNS,
    "tiles": TILE_COLUMNS,
}
"""The schema of each global table, by its file stem (``OUT/sources.parquet``, ...)."""

FLUX_COLUMNS: tuple[str, ...] = ("flux", "flux_err")
"""Columns in the units of the mosaic's pixels (``adu`` unless the mosaic says otherwise)."""


def table_columns(name: str, *, flux_unit: str | None = None) -> tuple[Column, ...]:
    """Return the columns of the global table ``name``, with the run's flux unit.

    Parameters
    ----------
    name : str
        A key of :data:`CATALOGS`: ``"sources"``, ``"clumps"`` or ``"tiles"``.
    flux_unit : str or None
        Unit of the mosaic's pixel values (its ``BUNIT``, e.g. ``"nanomaggy"``); it
        replaces the unit of the :data:`FLUX_COLUMNS`. None keeps ``adu``.

    Returns
    -------
    tuple of Column

    Raises
    ------
    ValueError
        ``name`` is not a known table, or ``flux_unit`` is empty or not a string.
    """
    if name not in CATALOGS:
        raise ValueError(f"unknown table {name!r}; known tables are {sorted(CATALOGS)}")
    if flux_unit is not None and (not isinstance(flux_unit, str) or not flux_unit.strip()):
        raise ValueError(f"flux_unit must be a non-empty string or None, not {flux_unit!r}")
    columns = CATALOGS[name]
    if flux_unit is None:
        return columns
    unit = flux_unit.strip()
    return tuple(replace(c, unit=unit) if c.name in FLUX_COLUMNS else c for c in columns)


def empty_table(columns: tuple[Column, ...]) -> pd.DataFrame:
    """Return an empty DataFrame with the schema's columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series([], dtype=_pandas_dtype(c.dtype)) for c in columns})


def conform(table: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """Order and cast ``table``'s columns to the schema; missing columns are an error.

    Parameters
    ----------
    table : pandas.DataFrame
        Table holding at least the schema's columns.
    columns : tuple of Column
        The schema.

    Returns
    -------
    pandas.DataFrame
        A new table with exactly the schema's columns, in order.
    """
    missing = [c.name for c in columns if c.name not in table.columns]
    if missing:
        raise ValueError(f"table lacks schema columns {missing}")
    return pd.DataFrame(
        {c.name: table[c.name].to_numpy().astype(_numpy_dtype(c.dtype)) for c in columns}
    )


def _pandas_dtype(dtype: str) -> str | type:
    return object if dtype == "str" else dtype


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(object) if dtype == "str" else np.dtype(dtype)
