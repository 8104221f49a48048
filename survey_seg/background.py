"""Sky background and noise on a global mesh of cells, as SExtractor and SEP do.

The mesh is computed once per mosaic (at ingest) on cells aligned to the mosaic
origin, so that the background of any pixel depends only on the mesh and the
pixel's mosaic coordinates: screening a tile gives exactly the background that
screening the whole image would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["BackgroundMesh", "cell_statistics", "finish_mesh", "interpolate_mesh"]


@dataclass(frozen=True)
class BackgroundMesh:
    """Background level and RMS on a mesh of square cells.

    Attributes
    ----------
    level : numpy.ndarray
        Background level per cell, shape ``(n_cell_rows, n_cell_cols)``, float32.
    rms : numpy.ndarray
        Background noise RMS per cell, same shape, float32.
    cell_size : int
        Cell side in pixels; cell ``(i, j)`` covers mosaic rows
        ``i * cell_size`` to ``(i + 1) * cell_size``.
    """

    level: np.ndarray
    rms: np.ndarray
    cell_size: int

    def __post_init__(self) -> None:
        if self.level.shape != self.rms.shape or self.level.ndim != 2:
            raise ValueError(
                f"background level {self.level.shape} and rms {self.rms.shape} must be "
                "2-D arrays of one shape"
            )
        if self.cell_size < 1:
            raise ValueError(f"cell_size must be a positive integer, got {self.cell_size}")


def cell_statistics(
    block: np.ndarray, cell_size: int, *, n_sigma: float = 3.0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped background level and RMS of each cell of a block of rows.

    Each cell is clipped at ``n_sigma`` standard deviations about its median until
    no pixel is clipped, as SExtractor and SEP do. In a crowded field that takes
    10-30 rounds: the stars widen the first rounds' standard deviation, which
    keeps their wings (after 3 rounds the RMS of a Spitzer field of stars was
    twice its converged value, and SEP's).

    Parameters
    ----------
    block : numpy.ndarray
        2-D float array, NaN where there is no data. Its rows and columns start
        on a cell boundary of the mosaic; the last cells may be partial.
    cell_size : int
        Cell side in pixels.
    n_sigma : float
        Clipping threshold in units of the standard deviation.
    max_iter : int
        Most clipping rounds.

    Returns
    -------
    level, rms, n_valid : numpy.ndarray
        Per-cell SExtractor mode estimate (``2.5 median - 1.5 mean``, or the
        median in crowded cells), clipped standard deviation, and the number of
        pixels kept. Cells with fewer than a tenth of their pixels valid get NaN.
    """
    ny, nx = block.shape
    n_rows = -(-ny // cell_size)
    n_cols = -(-nx // cell_size)
    padded = np.full((n_rows * cell_size, n_cols * cell_size), np.nan, dtype=np.float32)
    padded[:ny, :nx] = block
    cells = (
        padded.reshape(n_rows, cell_size, n_cols, cell_size)
        .transpose(0, 2, 1, 3)
        .reshape(n_rows * n_cols, cell_size * cell_size)
    )
    values = cells.copy()
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
        clipping = np.arange(len(values))  # the cells not yet converged
        for _ in range(max_iter):
            kept = values[clipping]
            median = np.nanmedian(kept, axis=1)
            std = np.nanstd(kept, axis=1)
            outside = np.abs(kept - median[:, None]) > n_sigma * std[:, None]
            kept[outside] = np.nan
            values[clipping] = kept
            clipping = clipping[outside.any(axis=1)]
            if not clipping.size:
                break
        median = np.nanmedian(values, axis=1)
        mean = np.nanmean(values, axis=1)
        std = np.nanstd(values, axis=1)
        n_valid = np.sum(np.isfinite(values), axis=1)
        crowded = np.abs(mean - median) > 0.3 * std
        level = np.where(crowded, median, 2.5 * median - 1.5 * mean)
    too_few = n_valid < max(1, (cell_size * cell_size) // 10)
    level[too_few] = np.nan
    std[too_few] = np.nan
    shape = (n_rows, n_cols)
    return (
        level.reshape(shape).astype(np.float32),
        std.reshape(shape).astype(np.float32),
        n_valid.reshape(shape),
    )


def finish_mesh(level: np.ndarray, rms: np.ndarray, cell_size: int) -> BackgroundMesh:
    """Fill empty cells from their nearest neighbour and median-filter the mesh.

    Parameters
    ----------
    level, rms : numpy.ndarray
        Raw per-cell statistics of the whole mosaic (NaN for empty cells).
    cell_size : int
        Cell side in pixels.

    Returns
    -------
    BackgroundMesh
        The smoothed mesh. A mosaic without any valid cell is an input error
        that the caller must catch before this point.
    """
    empty = ~np.isfinite(level) | ~np.isfinite(rms)
    if empty.all():
        raise ValueError("no background cell has valid pixels")
    if empty.any():
        nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
        level = level[tuple(nearest)]
        rms = rms[tuple(nearest)]
    size = 3 if min(level.shape) >= 3 else 1
    level = ndimage.median_filter(level, size=size, mode="nearest")
    rms = ndimage.median_filter(rms, size=size, mode="nearest")
    return BackgroundMesh(level.astype(np.float32), rms.astype(np.float32), int(cell_size))


def interpolate_mesh(
    values: np.ndarray, cell_size: int, origin: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Bilinear interpolation of a cell mesh between cell centres onto a pixel window.

    Parameters
    ----------
    values : numpy.ndarray
        Mesh values, shape ``(n_cell_rows, n_cell_cols)``.
    cell_size : int
        Cell side in pixels.
    origin : tuple of int
        Mosaic ``(y, x)`` of window pixel ``(0, 0)``; may be negative.
    shape : tuple of int
        Window shape ``(ny, nx)``.

    Returns
    -------
    numpy.ndarray
        float32 array of ``shape``. Depends only on mosaic coordinates, so any
        two windows agree where they overlap. Beyond the outermost cell centres
        the value is held constant.
    """
    iy, wy = _cell_weights(origin[0], shape[0], cell_size, values.shape[0])
    ix, wx = _cell_weights(origin[1], shape[1], cell_size, values.shape[1])
    v = values.astype(np.float64)
    # a mesh one cell wide is padded so the upper neighbour exists; its weight is zero
    v = np.pad(v, ((0, int(v.shape[0] == 1)), (0, int(v.shape[1] == 1))), mode="edge")
    top = v[iy][:, ix] * (1 - wx) + v[iy][:, ix + 1] * wx
    bottom = v[iy + 1][:, ix] * (1 - wx) + v[iy + 1][:, ix + 1] * wx
    return (top * (1 - wy)[:, None] + bottom * wy[:, None]).astype(np.float32)


def _cell_weights(
    start: int, length: int, cell_size: int, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lower cell index and interpolation weight for each pixel along one axis."""
    pixel = np.arange(start, start + length, dtype=np.float64)
    position = (pixel + 0.5) / cell_size - 0.5
    position = np.clip(position, 0.0, max(n_cells - 1, 0))
    lower = np.minimum(np.floor(position).astype(np.intp), max(n_cells - 2, 0))
    return lower, position - lower
