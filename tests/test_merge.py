import numpy as np
import pandas as pd
import pytest

from survey_seg.catalog import SOURCE_COLUMNS, TILE_COLUMNS, empty_table
from survey_seg.merge import merge_clumps, merge_sources, tiles_table


def _sources(tile, locals_):
    table = empty_table(SOURCE_COLUMNS).reindex(range(len(locals_)))
    table["id"] = (np.int64(tile) << 32) | np.asarray(locals_, dtype=np.int64)
    table["tile_id"] = tile
    return table.fillna(0)


def test_merge_sorts_by_id_and_keeps_the_schema():
    merged = merge_sources([_sources(2, [5, 1]), _sources(0, [3]), empty_table(SOURCE_COLUMNS)])
    assert merged["id"].tolist() == sorted(merged["id"].tolist())
    assert list(merged.columns) == [c.name for c in SOURCE_COLUMNS]
    assert merged["id"].dtype == np.int64


def test_merge_refuses_duplicates_and_foreign_ids():
    with pytest.raises(ValueError, match="two tiles"):
        merge_sources([_sources(1, [4]), _sources(1, [4])])
    foreign = _sources(1, [4])
    foreign["tile_id"] = 3
    with pytest.raises(ValueError, match="another tile"):
        merge_sources([foreign])


def test_clumps_need_a_host():
    sources = merge_sources([_sources(0, [1])])
    clumps = pd.DataFrame({"id": [9], "host_id": [12345], "tile_id": [0], "x": [0.0],
                           "y": [0.0], "ra": [0.0], "dec": [0.0], "probability": [1.0],
                           "flux_fraction": [0.1]})  # fmt: skip
    with pytest.raises(ValueError, match="no host"):
        merge_clumps([clumps], sources)


def test_empty_merge_gives_empty_tables():
    assert len(merge_sources([])) == 0
    assert list(tiles_table([]).columns) == [c.name for c in TILE_COLUMNS]


def test_tiles_table_fills_failed_records():
    table = tiles_table(
        [
            {
                "tile_id": 1,
                "row": 0,
                "col": 1,
                "x0": 0,
                "x1": 1,
                "y0": 0,
                "y1": 1,
                "run_id": "r",
                "status": "failed",
                "verdict": "",
                "error": "boom",
            },
            {
                "tile_id": 0,
                "row": 0,
                "col": 0,
                "x0": 0,
                "x1": 1,
                "y0": 0,
                "y1": 1,
                "run_id": "r",
                "status": "done",
                "verdict": "accept",
                "error": "",
                "n_sources": 3,
                "n_blended": 1,
                "n_clumps": 0,
                "no_data_fraction": 0.0,
                "artefact_fraction": 0.0,
                "seconds": 0.5,
            },
        ]
    )
    assert table["tile_id"].tolist() == [0, 1]
    assert table.loc[1, "error"] == "boom" and table.loc[1, "n_sources"] == 0
