import dataclasses

import numpy as np
import pandas as pd
import pytest

from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS
from survey_seg.classical import ClassicalScreener
from survey_seg.masks import MaskBit
from survey_seg.screen import screen_tile, source_ids
from survey_seg.store import WindowData
from survey_seg.tiling import extract_window, make_tile_grid


def _window(image, tile):
    window = extract_window(image, tile)
    return WindowData(
        image=window.astype(np.float32),
        variance=np.where(np.isfinite(window), 1.0, np.nan).astype(np.float32),
        background=np.zeros(window.shape, np.float32),
    )


def _one_source_image(seed, x, y=100.0):
    """A 300 x 300 unit-noise image with one Gaussian source (sigma 3 px) at ``(x, y)``."""
    image = np.random.default_rng(seed).normal(0, 1, (300, 300))
    yy, xx = np.mgrid[:300, :300]
    return image + 2000 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2)) / (2 * np.pi * 9)


def test_source_ids_are_unique_and_name_their_owner():
    grid = make_tile_grid((1000, 700), tile_size=256, halo=40)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 1000, 5000)
    x = rng.integers(0, 700, 5000)
    owner = grid.owner_index(x, y)
    pairs = set(zip(y.tolist(), x.tolist(), strict=True))
    ids = source_ids(grid, owner, y, x)
    assert len(set(ids.tolist())) == len(pairs)
    np.testing.assert_array_equal(ids >> 32, owner)
    assert (ids & 0xFFFFFFFF).min() >= 1


def test_empty_tile_gives_empty_tables_in_the_schemas():
    image = np.random.default_rng(1).normal(0, 1, (300, 300))
    grid = make_tile_grid(image.shape, tile_size=150, halo=40)
    result = screen_tile(_window(image, grid[0]), grid[0], grid, ClassicalScreener())
    assert list(result.sources.columns) == [c.name for c in SOURCE_COLUMNS]
    assert list(result.clumps.columns) == [c.name for c in CLUMP_COLUMNS]
    assert len(result.sources) == 0
    assert result.segmentation.shape == (150, 150) and not result.segmentation.any()
    assert result.stats["verdict"] == "accept"


def test_source_across_a_core_edge_is_reported_once_with_one_id():
    image = _one_source_image(seed=2, x=150.7)
    grid = make_tile_grid(image.shape, tile_size=150, halo=40)
    results = [screen_tile(_window(image, t), t, grid, ClassicalScreener()) for t in grid]
    sources = pd.concat([r.sources for r in results])
    assert len(sources) == 1
    assert sources["tile_id"].iloc[0] == 1  # centroid at x = 150.7 lies in the second column
    left, right = results[0].segmentation, results[1].segmentation
    assert set(np.unique(left[95:105, 140:])) - {0} == set(sources["id"])
    assert set(np.unique(right[95:105, :10])) - {0} == set(sources["id"])
    assert results[0].mask[100, 149] & np.uint32(MaskBit.DETECTED)


def test_rejected_tile_carries_the_rejected_plane():
    image = np.random.default_rng(3).normal(0, 1, (200, 200))
    image[:, :120] = np.nan
    grid = make_tile_grid(image.shape, tile_size=200, halo=40)
    result = screen_tile(_window(image, grid[0]), grid[0], grid, ClassicalScreener())
    assert result.stats["verdict"] == "reject"
    assert (result.mask & np.uint32(MaskBit.REJECTED)).all()
    assert result.stats["no_data_fraction"] == 0.6


class _CentredScreener(ClassicalScreener):
    """The classical method, but placing its one source where the test says."""

    def __init__(self, mosaic_yx):
        super().__init__()
        self.mosaic_yx = np.asarray(mosaic_yx, float)
        self.origin = (0, 0)

    def segment(self, window, *, saturation):
        products = super().segment(window, saturation=saturation)
        centres = np.full((int(products.sources.max()), 2), np.nan)
        centres[:] = self.mosaic_yx - np.asarray(self.origin)
        return dataclasses.replace(products, centres=centres)


def test_keeping_some_sources_renumbers_them_and_drops_their_clumps_and_footprints():
    from survey_seg.screen import ClumpCandidates, DenseProducts

    sources = np.zeros((8, 12), dtype=np.int32)
    sources[1:3, 1:3], sources[1:3, 3:5], sources[5:7, 8:10] = 1, 2, 3
    footprints = np.where(sources == 3, 2, np.where(sources > 0, 1, 0)).astype(np.int32)
    zeros = np.zeros(sources.shape, dtype=np.float32)
    products = DenseProducts(
        flux_image=zeros,
        variance=zeros,
        detection_image=zeros,
        sources=sources,
        footprints=footprints,
        artefacts=np.zeros(sources.shape, dtype=np.uint32),
        clumps=ClumpCandidates(
            y=np.array([1.0, 6.0]),
            x=np.array([2.0, 9.0]),
            host_label=np.array([1, 3]),
            score=np.array([0.5, 0.6]),
            flux_fraction=np.array([0.1, 0.2]),
        ),
        blend_probability=np.array([0.9, 0.8, 0.1]),
        centres=np.array([[1.5, 1.5], [1.5, 3.5], [5.5, 8.5]]),
    )
    assert products.keep_sources(np.ones(3, bool)) is products
    kept = products.keep_sources(np.array([True, False, True]))
    np.testing.assert_array_equal(kept.sources, np.select([sources == 1, sources == 3], [1, 2]))
    assert kept.sources.max() == 2 and (kept.sources[5:7, 8:10] == 2).all()
    assert (kept.footprints[1:3, 3:5] == 0).all() and (kept.footprints[1:3, 1:3] == 1).all()
    np.testing.assert_array_equal(kept.clumps.host_label, [1, 2])
    np.testing.assert_array_equal(kept.blend_probability, [0.9, 0.1])
    np.testing.assert_array_equal(kept.centres, [[1.5, 1.5], [5.5, 8.5]])
    only_third = products.keep_sources(np.array([False, False, True]))
    np.testing.assert_array_equal(only_third.clumps.x, [9.0])
    with pytest.raises(ValueError, match="one flag per source"):
        products.keep_sources(np.ones(2, bool))
    with pytest.raises(ValueError, match=r"one flag per source \(3\)"):
        products.keep_sources(np.ones(4, bool))  # more flags than per-source entries
    # a fourth source that covers no pixel (lost in resampling) still has its entries
    lost = dataclasses.replace(
        products,
        blend_probability=np.array([0.9, 0.8, 0.1, 0.7]),
        centres=np.array([[1.5, 1.5], [1.5, 3.5], [5.5, 8.5], [9.0, 9.0]]),
    )
    without_lost = lost.keep_sources(np.array([True, True, True, False]))
    np.testing.assert_array_equal(without_lost.sources, sources)
    np.testing.assert_array_equal(without_lost.blend_probability, [0.9, 0.8, 0.1])
    assert len(without_lost.centres) == 3


def test_a_method_centre_sets_position_and_owner():
    image = _one_source_image(seed=4, x=147.0)
    grid = make_tile_grid(image.shape, tile_size=150, halo=40)
    method = _CentredScreener((100.4, 151.3))  # its centroid is in tile 0, its centre in tile 1
    results = []
    for tile in grid:
        method.origin = tile.origin
        results.append(screen_tile(_window(image, tile), tile, grid, method))
    sources = pd.concat([r.sources for r in results])
    assert len(sources) == 1
    row = sources.iloc[0]
    assert row["tile_id"] == 1
    assert (row["x"], row["y"]) == pytest.approx((151.3, 100.4))
    assert row["x_peak"] == 147  # the peak stays the detection image's


def test_the_core_flagged_estimate_leaves_out_the_padding_beyond_the_mosaic():
    """A one-row core at the mosaic's bottom edge: its stamp is 63/64 padding, which
    the network calls no data; the core's estimate is the stamp's in-mosaic row's."""
    from survey_seg.screen import _core_flagged_estimate
    from survey_seg.tiling import make_tile_grid

    grid = make_tile_grid((129, 128), tile_size=128, halo=64)
    edge = next(tile for tile in grid if tile.y0 == 128)  # core rows 128:129
    all_padding_flagged = np.array([[63 / 64, 63 / 64]])  # the in-mosaic row is clean
    assert _core_flagged_estimate(all_padding_flagged, edge, 64) == pytest.approx(0.0)
    half_of_it_flagged = np.array([[(63 + 0.5) / 64, (63 + 0.5) / 64]])
    assert _core_flagged_estimate(half_of_it_flagged, edge, 64) == pytest.approx(0.5)
    interior = next(tile for tile in grid if tile.y0 == 0)
    estimates = np.array([[0.1, 0.3], [0.0, 0.2]])
    assert _core_flagged_estimate(estimates, interior, 64) == pytest.approx(0.15)
