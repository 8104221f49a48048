"""Tests of survey_seg.background: cell statistics, mesh filling and interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from survey_seg.background import (
    BackgroundMesh,
    cell_statistics,
    finish_mesh,
    interpolate_mesh,
)


def _sky(shape, level=100.0, rms=5.0, seed=0):
    return (level + np.random.default_rng(seed).normal(0.0, rms, shape)).astype(np.float32)


def _blob(shape, cy, cx, peak, sigma):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return peak * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


# --------------------------------------------------------------------------- cell statistics


def test_constant_plus_noise_recovers_level_and_rms():
    block = _sky((256, 320), level=100.0, rms=5.0)
    level, rms, n_valid = cell_statistics(block, 64)
    assert level.shape == rms.shape == n_valid.shape == (4, 5)
    assert level.dtype == rms.dtype == np.float32
    assert np.all(np.abs(level - 100.0) < 0.5)  # 0.5 % of the level, a tenth of the rms
    # 3-sigma clipping keeps 98.7 % of a gaussian's rms
    np.testing.assert_allclose(rms, 5.0, rtol=0.04)
    assert np.mean(rms) == pytest.approx(5.0 * 0.985, rel=0.01)
    assert np.all(n_valid > 0.98 * 64 * 64)


@pytest.mark.parametrize(("sigma", "rms_rtol"), [(2.0, 0.05), (3.0, 0.25)])
def test_bright_source_barely_biases_its_cell(sigma, rms_rtol):
    shape = (128, 128)
    sky = _sky(shape, level=100.0, rms=5.0, seed=1)
    block = sky + _blob(shape, 32, 32, peak=2000.0, sigma=sigma).astype(np.float32)
    level, rms, _ = cell_statistics(block, 64)
    clean_level, clean_rms, _ = cell_statistics(sky, 64)
    raw_bias = float(np.mean(block[:64, :64]) - np.mean(sky[:64, :64]))
    assert raw_bias > 10.0  # the plain mean moves by twice the rms
    assert float(np.std(block[:64, :64])) > 20 * 5.0
    assert abs(level[0, 0] - clean_level[0, 0]) < 0.1 * 5.0
    assert abs(level[0, 0] - 100.0) < 0.2 * 5.0
    # the faint wings stay below the clipping threshold: a wider source adds more of them
    assert rms[0, 0] == pytest.approx(clean_rms[0, 0], rel=rms_rtol)
    # the other cells do not see the source
    np.testing.assert_array_equal(level.ravel()[1:], clean_level.ravel()[1:])


def test_a_crowded_field_is_clipped_until_convergence_as_sep_does():
    sep = pytest.importorskip("sep")
    rng = np.random.default_rng(4)
    shape = (256, 256)
    block = rng.normal(0.0, 1.0, shape)
    for _ in range(1500):  # a star every 44 pixels, 5 to 2000 in flux, sigma 1 pix
        cy, cx = rng.uniform(0, 256, 2)
        block += _blob(shape, cy, cx, np.exp(rng.uniform(np.log(5), np.log(2000))) / 6.28, 1.0)
    block = block.astype(np.float32)
    _, rms, _ = cell_statistics(block, 64)
    _, rms_after_3, _ = cell_statistics(block, 64, max_iter=3)
    sep_rms = sep.Background(block.astype(np.float64), bw=64, bh=64).globalrms
    # the faint stars are confusion noise: above the pixels' 1, at SEP's value
    assert 1.0 < np.median(rms) == pytest.approx(sep_rms, rel=0.1)
    assert np.median(rms_after_3) > 2.0 * np.median(rms)  # three rounds kept the wings


def test_partial_cells_and_missing_data():
    block = _sky((100, 150), seed=2)
    block[:64, :64] = np.nan  # an empty cell
    block[64:, :64][:, :2] = np.nan  # keeps 36 x 62 pixels
    level, rms, n_valid = cell_statistics(block, 64)
    assert level.shape == (2, 3)
    assert np.isnan(level[0, 0]) and np.isnan(rms[0, 0]) and n_valid[0, 0] == 0
    # partial cells at the block edge keep their valid pixels only
    assert n_valid[1, 2] <= 36 * 22 and n_valid[1, 2] > 0.95 * 36 * 22
    assert np.isfinite(level[1:, :]).all() and np.isfinite(level[0, 1:]).all()
    assert np.all(np.abs(level[np.isfinite(level)] - 100.0) < 1.5)


def test_cell_with_too_few_pixels_is_empty():
    block = np.full((64, 64), np.nan, np.float32)
    block[:6, :6] = 100.0 + np.arange(36).reshape(6, 6) * 0.01  # 36 < 409 = a tenth
    level, rms, n_valid = cell_statistics(block, 64)
    assert np.isnan(level[0, 0]) and np.isnan(rms[0, 0])
    assert n_valid[0, 0] == 36


# --------------------------------------------------------------------------- finish_mesh


def test_finish_mesh_fills_empty_cells_from_neighbours():
    level = np.full((6, 7), 100.0, np.float32)
    rms = np.full((6, 7), 5.0, np.float32)
    level[2:4, 3:5] = np.nan  # a block of empty cells
    rms[0, 0] = np.nan  # a cell with a level but no rms is empty too
    level[5, 6] = np.nan
    mesh = finish_mesh(level, rms, 32)
    assert isinstance(mesh, BackgroundMesh)
    assert mesh.cell_size == 32 and mesh.level.shape == (6, 7)
    assert np.isfinite(mesh.level).all() and np.isfinite(mesh.rms).all()
    np.testing.assert_array_equal(mesh.level, 100.0)
    np.testing.assert_array_equal(mesh.rms, 5.0)


def test_finish_mesh_takes_the_nearest_values_and_smooths_outliers():
    level = np.tile(np.arange(8, dtype=np.float32), (5, 1))  # a gradient along x
    rms = np.ones_like(level)
    level[:, 0] = np.nan  # filled from column 1
    level[2, 5] = 1000.0  # a single outlier cell, removed by the 3 x 3 median
    mesh = finish_mesh(level, rms, 16)
    np.testing.assert_array_equal(mesh.level[:, 0], 1.0)
    assert mesh.level[2, 5] == 5.0
    assert np.isfinite(mesh.level).all()


def test_finish_mesh_of_a_single_valid_cell():
    level = np.full((3, 4), np.nan, np.float32)
    rms = np.full((3, 4), np.nan, np.float32)
    level[1, 2], rms[1, 2] = 7.0, 2.0
    mesh = finish_mesh(level, rms, 8)
    np.testing.assert_array_equal(mesh.level, 7.0)
    np.testing.assert_array_equal(mesh.rms, 2.0)


def test_finish_mesh_without_valid_cells_is_an_error():
    empty = np.full((2, 2), np.nan, np.float32)
    with pytest.raises(ValueError, match="no background cell"):
        finish_mesh(empty, empty, 64)


def test_background_mesh_validates_its_arrays():
    with pytest.raises(ValueError, match="one shape"):
        BackgroundMesh(np.zeros((2, 3)), np.zeros((3, 2)), 8)
    with pytest.raises(ValueError, match="cell_size"):
        BackgroundMesh(np.zeros((2, 3)), np.zeros((2, 3)), 0)


# --------------------------------------------------------------------------- interpolation


MESHES = {
    "regular": (np.random.default_rng(5).normal(100, 3, (6, 9)), 32),
    "odd cell": (np.random.default_rng(6).normal(0, 1, (5, 4)), 17),
    "one row": (np.random.default_rng(7).normal(0, 1, (1, 6)), 20),
    "one column": (np.random.default_rng(8).normal(0, 1, (5, 1)), 20),
    "one cell": (np.array([[3.5]]), 64),
}


@pytest.mark.parametrize("name", list(MESHES))
def test_any_window_equals_the_crop_of_the_whole_interpolation(name):
    values, cell = MESHES[name]
    ny, nx = values.shape[0] * cell - 5, values.shape[1] * cell - 3  # partial last cells
    whole = interpolate_mesh(values, cell, (0, 0), (ny, nx))
    assert whole.shape == (ny, nx) and whole.dtype == np.float32
    assert np.isfinite(whole).all()
    pad = 150  # windows reach this far beyond the mosaic on every side
    padded = interpolate_mesh(values, cell, (-pad, -pad), (ny + 2 * pad, nx + 2 * pad))
    np.testing.assert_array_equal(padded[pad : pad + ny, pad : pad + nx], whole)
    rng = np.random.default_rng(9)
    for _ in range(40):
        h, w = rng.integers(1, 120, size=2)
        oy = int(rng.integers(-pad, ny + pad - h + 1))
        ox = int(rng.integers(-pad, nx + pad - w + 1))
        window = interpolate_mesh(values, cell, (oy, ox), (int(h), int(w)))
        expected = padded[oy + pad : oy + pad + h, ox + pad : ox + pad + w]
        np.testing.assert_array_equal(window, expected)


def test_interpolation_hits_cell_centres_and_holds_beyond_them():
    values = np.arange(12, dtype=np.float64).reshape(3, 4) * 10.0
    cell = 5  # odd: cell (i, j) is centred on pixel (5 i + 2, 5 j + 2)
    image = interpolate_mesh(values, cell, (0, 0), (15, 20))
    np.testing.assert_allclose(image[2::5, 2::5], values, rtol=0, atol=1e-5)
    # halfway between two centres along x
    np.testing.assert_allclose(image[2, 2 + 2], values[0, 0] + 0.4 * 10.0, atol=1e-5)
    # held constant beyond the outermost centres, also far outside the mosaic
    outside = interpolate_mesh(values, cell, (-50, -50), (52, 52))
    np.testing.assert_allclose(outside, values[0, 0], atol=1e-5)
    far = interpolate_mesh(values, cell, (100, 100), (3, 3))
    np.testing.assert_allclose(far, values[-1, -1], atol=1e-5)


def test_interpolation_of_a_constant_mesh_is_constant():
    values = np.full((4, 4), 42.25)
    image = interpolate_mesh(values, 16, (-7, 13), (90, 70))
    np.testing.assert_allclose(image, 42.25, rtol=1e-7)


def test_mesh_one_cell_wide():
    row = np.array([[1.0, 3.0, 5.0]])
    cell = 11  # odd: cell centres on pixels 5, 16 and 27
    image = interpolate_mesh(row, cell, (0, 0), (cell, 3 * cell))
    assert np.isfinite(image).all()
    # constant along y (one cell), linear along x between the centres
    np.testing.assert_array_equal(image, np.broadcast_to(image[0], image.shape))
    np.testing.assert_allclose(image[0, [5, 16, 27]], [1.0, 3.0, 5.0], atol=1e-6)
    np.testing.assert_allclose(image[0, 10], 1.0 + 2.0 * 5 / 11, atol=1e-6)
    np.testing.assert_allclose(image[0, :6], 1.0, atol=1e-6)
    np.testing.assert_allclose(image[0, 27:], 5.0, atol=1e-6)
    column = interpolate_mesh(row.T, cell, (0, 0), (3 * cell, cell))
    np.testing.assert_array_equal(column, image.T)
    single = interpolate_mesh(np.array([[2.0]]), 10, (-3, -3), (16, 16))
    np.testing.assert_array_equal(single, 2.0)


def test_tiled_mesh_statistics_equal_whole_image_statistics():
    # ingest measures the mesh in blocks of rows that start on cell boundaries
    image = _sky((200, 150), seed=10) + _blob((200, 150), 90, 70, 500.0, 4.0).astype(np.float32)
    cell = 25
    whole = cell_statistics(image, cell)
    blocks = [cell_statistics(image[y0 : y0 + 75], cell) for y0 in range(0, 200, 75)]
    for index in range(3):
        np.testing.assert_array_equal(np.concatenate([b[index] for b in blocks]), whole[index])
