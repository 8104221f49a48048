"""Tests of survey_seg.catalog: the column schemas and their lookup by table name."""

from __future__ import annotations

import pytest

from survey_seg.catalog import (
    CATALOGS,
    CLUMP_COLUMNS,
    FLUX_COLUMNS,
    SOURCE_COLUMNS,
    TILE_COLUMNS,
    table_columns,
)


def test_every_global_table_is_looked_up_by_its_file_stem():
    assert table_columns("sources") == SOURCE_COLUMNS
    assert table_columns("clumps") == CLUMP_COLUMNS
    assert table_columns("tiles") == TILE_COLUMNS
    assert set(CATALOGS) == {"sources", "clumps", "tiles"}
    for columns in CATALOGS.values():
        assert all(column.description for column in columns)
        assert len({column.name for column in columns}) == len(columns)


def test_flux_unit_replaces_the_unit_of_the_flux_columns_only():
    default = {column.name: column for column in table_columns("sources")}
    assert {default[name].unit for name in FLUX_COLUMNS} == {"adu"}
    columns = table_columns("sources", flux_unit="nanomaggy")
    assert [column.name for column in columns] == [column.name for column in SOURCE_COLUMNS]
    for column in columns:
        expected = "nanomaggy" if column.name in FLUX_COLUMNS else default[column.name].unit
        assert column.unit == expected, column.name
        assert column.description == default[column.name].description
    # the schema itself is untouched
    assert {c.unit for c in SOURCE_COLUMNS if c.name in FLUX_COLUMNS} == {"adu"}
    # a table without flux columns is returned as it is
    assert table_columns("clumps", flux_unit="nanomaggy") == CLUMP_COLUMNS


@pytest.mark.parametrize(
    ("name", "flux_unit", "message"),
    [
        ("stars", None, "unknown table 'stars'"),
        ("sources", "", "flux_unit must be a non-empty string"),
        ("sources", "  ", "flux_unit must be a non-empty string"),
        ("sources", 3, "flux_unit must be a non-empty string"),
    ],
)
def test_unknown_table_or_blank_flux_unit_is_refused(name, flux_unit, message):
    with pytest.raises(ValueError, match=message):
        table_columns(name, flux_unit=flux_unit)
