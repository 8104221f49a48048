"""Stitch per-tile results into the global catalogs.

Ownership, cross-edge joins and global ids are settled where each object is
seen whole (:func:`survey_seg.screen.screen_tile`), so merging is a checked
concatenation: every source comes from the tile whose core holds its centroid,
and its id says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS, TILE_COLUMNS, conform, empty_table
from survey_seg.screen import LOCAL_ID_BITS

__all__ = ["merge_clumps", "merge_sources", "tiles_table"]


def merge_sources(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-tile source tables into the global catalog, sorted by id.

    Parameters
    ----------
    tables : iterable of pandas.DataFrame
        Per-tile tables in the source schema.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        If an id appears twice or a row's id names another tile than ``tile_id``:
        both mean per-tile results from different runs were mixed.
    """
    merged = _concat(tables, SOURCE_COLUMNS)
    owner = merged["id"].to_numpy() >> LOCAL_ID_BITS
    if np.any(owner != merged["tile_id"].to_numpy()):
        raise ValueError("a source id names another tile than its tile_id; rerun with --force")
    return merged


def merge_clumps(tables: Iterable[pd.DataFrame], sources: pd.DataFrame) -> pd.DataFrame:
    """Concatenate per-tile clump tables; every clump's host must be in ``sources``."""
    merged = _concat(tables, CLUMP_COLUMNS)
    orphans = ~merged["host_id"].isin(sources["id"])
    if orphans.any():
        raise ValueError(
            f"{int(orphans.sum())} clumps have no host in the source catalog; rerun with --force"
        )
    return merged


def tiles_table(records: Iterable[dict]) -> pd.DataFrame:
    """One row per tile record, sorted by tile id, in the tile schema."""
    rows = list(records)
    if not rows:
        return empty_table(TILE_COLUMNS)
    table = pd.DataFrame(rows)
    for column in TILE_COLUMNS:
        missing = {"str": "", "float64": np.nan}.get(column.dtype, 0)
        if column.name not in table:
            table[column.name] = missing
        else:  # a failed tile's record lacks the counts that done tiles have
            table[column.name] = table[column.name].fillna(missing)
    table = table.sort_values("tile_id", kind="stable").reset_index(drop=True)
    return conform(table, TILE_COLUMNS)


def _concat(tables: Iterable[pd.DataFrame], columns) -> pd.DataFrame:
    parts = [t for t in tables if len(t)]
    if not parts:
        return empty_table(columns)
    merged = pd.concat(parts, ignore_index=True).sort_values("id", kind="stable")
    merged = conform(merged.reset_index(drop=True), columns)
    if merged["id"].duplicated().any():
        raise ValueError("an id appears in two tiles; rerun with --force")
    return merged
