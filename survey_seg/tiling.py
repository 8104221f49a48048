"""Tiling geometry: tiles with halo, per-tile WCS, ownership and sky-region selection.

Pure geometry, no file I/O. Arrays are ``(y, x)``; pixel centres sit at integer
coordinates, 0-based, so pixel ``i`` covers ``[i - 0.5, i + 0.5)``.

A mosaic of shape ``(ny, nx)`` is cut into a regular grid of *cores* of side
``tile_size`` starting at pixel ``(0, 0)``; the last row and column of cores are
smaller when the shape is not a multiple of the tile size, so that core
``(row, col)`` always starts at ``(row * tile_size, col * tile_size)`` and is
exactly one Zarr shard. A :class:`Tile` is its core (the pixels it owns and
writes) plus a *halo* of context on every side; the core grown by the halo is
the *window*, the array a worker processes. Windows reach beyond the mosaic at
its edges; :func:`extract_window` pads them there.

Typical use::

    grid = make_tile_grid(image.shape, tile_size=2048, halo=64, wcs=wcs)
    for tile in select_tiles(grid, parse_region("cone:150.1,2.2,0.05")):
        window = extract_window(image, tile)  # tile.window_shape, NaN beyond the edge
        result = process(window, tile.wcs)  # tile.wcs describes the window
        insert_core(output, tile, result)  # writes output[tile.core_slices]

Every point of the plane has exactly one owner tile (:meth:`Tile.owns`,
:meth:`TileGrid.owner_index`): the tile whose core holds the pixel the point
falls in, with points beyond the mosaic clamped onto the edge pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral, Real
from typing import Any, NamedTuple, TypeAlias

import numpy as np
from astropy.wcs import WCS, Sip
from astropy.wcs.utils import proj_plane_pixel_scales

from survey_seg.errors import InputError

__all__ = [
    "ACCEPTED_REGION_FORMS",
    "BoxRegion",
    "ConeRegion",
    "EdgeFlags",
    "Region",
    "Tile",
    "TileGrid",
    "TileListRegion",
    "angular_separation",
    "check_wcs",
    "extract_window",
    "footprint_bounds",
    "format_region",
    "insert_core",
    "make_tile_grid",
    "parse_region",
    "pixel_to_sky",
    "select_tiles",
    "sky_to_pixel",
]

ACCEPTED_REGION_FORMS = (
    "'cone:RA,DEC,RADIUS_DEG', 'box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX' or 'tiles:ID,ID,...' "
    "(RA and Dec in degrees ICRS, RA in [0, 360], Dec in [-90, 90])"
)
"""The region forms :func:`parse_region` accepts, as shown in its error messages."""

# Golden-section and bisection steps used to refine region/core contacts along a
# core edge: the bracket is at most 2 pixels wide, so 48 steps reach ~1e-10 px.
_REFINE_STEPS = 48
# Boundary samples processed per batch (memory bound of select_tiles).
_BATCH_POINTS = 2_000_000


class _InputTypeError(InputError, TypeError):
    """An input of the wrong type; both a `TypeError` and an `InputError` (a `ValueError`)."""


# --------------------------------------------------------------------------- validation


def _as_int(name: str, value: Any, *, minimum: int, fix: str) -> int:
    """Return ``value`` as an ``int`` after checking its type and lower bound."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, Integral):
        raise _InputTypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); {fix}"
        )
    value = int(value)
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}; {fix}")
    return value


def check_wcs(wcs: Any, shape: tuple[int, int] | None = None) -> WCS | None:
    """Check that ``wcs`` is None or a 2-D celestial WCS matching ``shape``."""
    if wcs is None:
        return None
    if not isinstance(wcs, WCS):
        raise _InputTypeError(
            f"wcs must be an astropy.wcs.WCS or None, got {type(wcs).__name__}; "
            "build one with astropy.wcs.WCS(header)"
        )
    if wcs.naxis != 2 or not wcs.is_celestial:
        raise InputError(
            f"wcs must be a 2-D celestial WCS, got naxis={wcs.naxis} with ctype "
            f"{list(wcs.wcs.ctype)}; pass wcs.celestial (or a RA---TAN/DEC--TAN WCS)"
        )
    if shape is not None and wcs.pixel_shape is not None:
        nx, ny = (int(n) for n in wcs.pixel_shape)
        if (nx, ny) != (0, 0) and (ny, nx) != tuple(shape):
            raise InputError(
                f"wcs describes an image of {ny} x {nx} pixels (ny x nx) but shape is "
                f"{tuple(shape)}; pass shape=(ny, nx) in array order (y, x)"
            )
    return wcs


def _shift_wcs(wcs: WCS, origin: tuple[int, int], shape: tuple[int, int]) -> WCS:
    """Return a copy of ``wcs`` whose pixel (0, 0) is pixel ``origin`` = (y, x) of ``wcs``.

    Like `astropy.nddata.Cutout2D`: CRPIX shifts, as do the SIP reference pixel and
    the reference points of any lookup-table distortions; ``origin`` may be negative.
    """
    oy, ox = origin
    new = wcs.deepcopy()
    new.wcs.crpix = wcs.wcs.crpix - np.array([ox, oy], dtype=float)
    if wcs.sip is not None:
        new.sip = Sip(
            wcs.sip.a,
            wcs.sip.b,
            wcs.sip.ap,
            wcs.sip.bp,
            np.asarray(wcs.sip.crpix, dtype=float) - np.array([ox, oy], dtype=float),
        )
    for table in (new.cpdis1, new.cpdis2, new.det2im1, new.det2im2):
        if table is not None:
            crval = list(table.crval)
            table.crval = (crval[0] - ox, crval[1] - oy)
    new.pixel_shape = (shape[1], shape[0])
    return new


# --------------------------------------------------------------------------- tiles


class EdgeFlags(NamedTuple):
    """Which sides of a tile's window reach beyond the mosaic.

    ``top`` is the low-``y`` side (the start of axis 0, the "before" padding of
    :func:`numpy.pad`), ``bottom`` the high-``y`` side, ``left`` low ``x``,
    ``right`` high ``x``.
    """

    top: bool
    bottom: bool
    left: bool
    right: bool


def _pixel_index(coord: Any, n: int) -> np.ndarray:
    """Index of the pixel holding ``coord`` (float array), clamped to ``[0, n - 1]``; NaN stays.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5)``. Computed as ``floor(c)`` plus one when
    the fractional part is >= 0.5, which, unlike ``floor(c + 0.5)``, never rounds.
    """
    c = np.asarray(coord, dtype=float)
    with np.errstate(invalid="ignore"):
        base = np.floor(c)
        idx = base + ((c - base) >= 0.5)
        return np.clip(idx, 0, n - 1)


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`: a core of mosaic pixels plus a halo of context.

    All bounds are mosaic pixels, ``(y, x)``, 0-based, half-open.

    Attributes
    ----------
    index : int
        Row-major index in the grid, ``row * n_cols + col``.
    row, col : int
        Position of the tile in the grid.
    y0, y1, x0, x1 : int
        Core bounds; the core is ``mosaic[y0:y1, x0:x1]`` and lies inside the mosaic.
    halo : int
        Context pixels added on each side of the core to make the window.
    mosaic_shape : tuple of int
        ``(ny, nx)`` of the mosaic.
    mosaic_wcs : astropy.wcs.WCS or None
        WCS of the whole mosaic (shared by the tiles of a grid, not compared).
    """

    index: int
    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int
    halo: int
    mosaic_shape: tuple[int, int]
    mosaic_wcs: WCS | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        ny, nx = self.mosaic_shape
        if not (0 <= self.y0 < self.y1 <= ny and 0 <= self.x0 < self.x1 <= nx):
            raise InputError(
                f"tile core [{self.y0}:{self.y1}, {self.x0}:{self.x1}] is empty or not inside "
                f"the {ny} x {nx} mosaic; build tiles with make_tile_grid"
            )
        if self.halo < 0:
            raise InputError(f"halo must be >= 0, got {self.halo}; build tiles with make_tile_grid")

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Slices ``(y, x)`` of the core in the mosaic."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def core_shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of the core."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def window_bounds(self) -> tuple[int, int, int, int]:
        """``(wy0, wy1, wx0, wx1)``: the core grown by the halo, half-open, not clipped.

        May be negative or beyond the mosaic shape at the mosaic edges.
        """
        h = self.halo
        return self.y0 - h, self.y1 + h, self.x0 - h, self.x1 + h

    @property
    def window_shape(self) -> tuple[int, int]:
        """Shape ``(core_ny + 2 halo, core_nx + 2 halo)`` of the window array."""
        cy, cx = self.core_shape
        return cy + 2 * self.halo, cx + 2 * self.halo

    @property
    def read_slices(self) -> tuple[slice, slice]:
        """Slices ``(y, x)`` of the window clipped to the mosaic: what to read from it."""
        wy0, wy1, wx0, wx1 = self.window_bounds
        ny, nx = self.mosaic_shape
        return slice(max(wy0, 0), min(wy1, ny)), slice(max(wx0, 0), min(wx1, nx))

    @property
    def read_pad(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((top, bottom), (left, right))`` padding turning the read block into the window.

        Suitable as the ``pad_width`` of :func:`numpy.pad` for the last two axes;
        ``top`` is the low-``y`` side.
        """
        wy0, wy1, wx0, wx1 = self.window_bounds
        ny, nx = self.mosaic_shape
        return (max(0, -wy0), max(0, wy1 - ny)), (max(0, -wx0), max(0, wx1 - nx))

    @property
    def crop_slices(self) -> tuple[slice, slice]:
        """Slices ``(y, x)`` of the core inside the window array."""
        cy, cx = self.core_shape
        h = self.halo
        return slice(h, h + cy), slice(h, h + cx)

    @property
    def origin(self) -> tuple[int, int]:
        """Mosaic ``(y, x)`` of window pixel ``(0, 0)``: ``(y0 - halo, x0 - halo)``."""
        return self.y0 - self.halo, self.x0 - self.halo

    @property
    def touches_mosaic_edge(self) -> EdgeFlags:
        """Whether the window reaches beyond the mosaic on each side (see :class:`EdgeFlags`)."""
        (top, bottom), (left, right) = self.read_pad
        return EdgeFlags(top > 0, bottom > 0, left > 0, right > 0)

    @cached_property
    def wcs(self) -> WCS | None:
        """WCS of the window array (None when the grid has no WCS).

        The mosaic WCS shifted so that window pixel ``(0, 0)`` is mosaic pixel
        :attr:`origin`, SIP and lookup-table distortions included, with
        ``pixel_shape`` set to the window. Computed on first use.
        """
        if self.mosaic_wcs is None:
            return None
        return _shift_wcs(self.mosaic_wcs, self.origin, self.window_shape)

    def owns(self, x: Any, y: Any) -> np.ndarray:
        """Return True where the core holds the point ``(x, y)``.

        Parameters
        ----------
        x, y : float or array_like
            0-based mosaic pixel coordinates; broadcast against each other.

        Returns
        -------
        numpy.ndarray of bool
            A point belongs to pixel column ``floor(x + 0.5)`` and row
            ``floor(y + 0.5)``, clamped to the mosaic, so points beyond the mosaic
            belong to the edge tiles and every point has exactly one owner in the
            grid. NaN coordinates are owned by no tile.
        """
        ny, nx = self.mosaic_shape
        col = _pixel_index(x, nx)
        row = _pixel_index(y, ny)
        return (col >= self.x0) & (col < self.x1) & (row >= self.y0) & (row < self.y1)

    def to_window(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Convert mosaic pixel coordinates ``(x, y)`` to window pixel coordinates.

        Parameters
        ----------
        x, y : float or array_like
            0-based mosaic pixel coordinates.

        Returns
        -------
        tuple of numpy.ndarray
            ``(x - (x0 - halo), y - (y0 - halo))``.
        """
        oy, ox = self.origin
        return np.asarray(x, dtype=float) - ox, np.asarray(y, dtype=float) - oy

    def to_mosaic(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Convert window pixel coordinates ``(x, y)`` to mosaic pixel coordinates.

        Parameters
        ----------
        x, y : float or array_like
            0-based window pixel coordinates.

        Returns
        -------
        tuple of numpy.ndarray
            ``(x + (x0 - halo), y + (y0 - halo))``.
        """
        oy, ox = self.origin
        return np.asarray(x, dtype=float) + ox, np.asarray(y, dtype=float) + oy


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a mosaic, row-major; build it with :func:`make_tile_grid`.

    Attributes
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the mosaic.
    tile_size : int
        Side of a full core in pixels.
    halo : int
        Halo width in pixels.
    wcs : astropy.wcs.WCS or None
        WCS of the mosaic (a private copy; not compared).
    n_rows, n_cols : int
        Number of tile rows (along y) and columns (along x).
    tiles : tuple of Tile
        All tiles; ``tiles[i].index == i``.
    """

    shape: tuple[int, int]
    tile_size: int
    halo: int
    wcs: WCS | None = field(repr=False, compare=False)
    n_rows: int
    n_cols: int
    tiles: tuple[Tile, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __getitem__(self, index: int) -> Tile:
        """Return the tile of row-major ``index`` (negative counts from the end)."""
        if isinstance(index, bool | np.bool_) or not isinstance(index, Integral):
            raise _InputTypeError(
                f"tile index must be an integer, got {index!r}; use grid.tile_at(row, col) "
                "for a (row, col) position"
            )
        n = len(self.tiles)
        if not -n <= int(index) < n:
            raise IndexError(f"tile index {index} is out of range; valid ids are 0..{n - 1}")
        return self.tiles[int(index)]

    def tile_at(self, row: int, col: int) -> Tile:
        """Return the tile at grid position ``(row, col)``.

        Parameters
        ----------
        row, col : int
            0-based grid row (along y) and column (along x).

        Returns
        -------
        Tile

        Raises
        ------
        IndexError
            If the position is outside the grid.
        """
        row = _as_int("row", row, minimum=0, fix=f"use 0 <= row < {self.n_rows}")
        col = _as_int("col", col, minimum=0, fix=f"use 0 <= col < {self.n_cols}")
        if row >= self.n_rows or col >= self.n_cols:
            raise IndexError(
                f"tile ({row}, {col}) is outside the {self.n_rows} x {self.n_cols} grid; "
                f"use 0 <= row < {self.n_rows} and 0 <= col < {self.n_cols}"
            )
        return self.tiles[row * self.n_cols + col]

    def owner_index(self, x: Any, y: Any) -> np.ndarray:
        """Return the index of the tile owning each point ``(x, y)``.

        Same rule as :meth:`Tile.owns`: ``owner_index(x, y) == i`` exactly where
        ``grid[i].owns(x, y)``.

        Parameters
        ----------
        x, y : float or array_like
            0-based mosaic pixel coordinates; broadcast against each other.

        Returns
        -------
        numpy.ndarray of int64
            Tile indices; -1 where a coordinate is NaN.
        """
        ny, nx = self.shape
        col = _pixel_index(x, nx)
        row = _pixel_index(y, ny)
        valid = ~(np.isnan(col) | np.isnan(row))
        t = self.tile_size
        idx = (np.where(valid, row, 0) // t) * self.n_cols + np.where(valid, col, 0) // t
        return np.where(valid, idx, -1).astype(np.int64)


def make_tile_grid(
    shape: tuple[int, int], *, tile_size: int, halo: int, wcs: WCS | None = None
) -> TileGrid:
    """Cut a mosaic of ``shape`` into a grid of tiles.

    Cores lie on a regular grid of side ``tile_size`` starting at pixel ``(0, 0)``:
    core ``(row, col)`` starts at ``(row * tile_size, col * tile_size)``, and the
    last row and column of cores are smaller when ``shape`` is not a multiple of
    ``tile_size``. Cores are therefore aligned with Zarr shards of that side.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the mosaic, in array order.
    tile_size : int
        Side of a core in pixels; at most the smaller side of the mosaic.
    halo : int
        Context pixels around each core, >= 0 (may exceed ``tile_size``).
    wcs : astropy.wcs.WCS, optional
        2-D celestial WCS of the mosaic; needed for cone and box regions and
        for the per-tile WCS. The grid keeps a copy.

    Returns
    -------
    TileGrid

    Raises
    ------
    TypeError
        If an argument has the wrong type (the error is also a `ValueError`).
    ValueError
        If a value is out of range, or ``wcs`` is not 2-D celestial or disagrees
        with ``shape``.
    """
    if isinstance(shape, str | bytes) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise _InputTypeError(
            f"shape must be a pair of positive integers (ny, nx), got {shape!r}; "
            "pass image.shape of a 2-D image"
        )
    ny = _as_int("shape[0] (ny)", shape[0], minimum=1, fix="pass (ny, nx) of a 2-D image")
    nx = _as_int("shape[1] (nx)", shape[1], minimum=1, fix="pass (ny, nx) of a 2-D image")
    tile_size = _as_int(
        "tile size", tile_size, minimum=1, fix=f"use --tile-size between 1 and {min(ny, nx)}"
    )
    if tile_size > min(ny, nx):
        raise InputError(
            f"tile size {tile_size} is larger than the image ({ny} x {nx} pixels, ny x nx); "
            f"use --tile-size <= {min(ny, nx)}"
        )
    halo = _as_int("halo", halo, minimum=0, fix="use --halo >= 0 (pixels of context per side)")
    wcs = check_wcs(wcs, (ny, nx))
    if wcs is not None:
        wcs = wcs.deepcopy()
    n_rows = -(-ny // tile_size)
    n_cols = -(-nx // tile_size)
    tiles = []
    for r in range(n_rows):
        y0, y1 = r * tile_size, min((r + 1) * tile_size, ny)
        for c in range(n_cols):
            x0, x1 = c * tile_size, min((c + 1) * tile_size, nx)
            tiles.append(Tile(r * n_cols + c, r, c, y0, y1, x0, x1, halo, (ny, nx), wcs))
    return TileGrid((ny, nx), tile_size, halo, wcs, n_rows, n_cols, tuple(tiles))


# --------------------------------------------------------------------------- arrays


def _check_mosaic_array(name: str, array: Any, shape: tuple[int, int], what: str) -> None:
    """Check that ``array`` has ``ndim >= 2`` and trailing shape ``shape``."""
    arr_shape = getattr(array, "shape", None)
    if arr_shape is None:
        raise _InputTypeError(
            f"{name} must be an array with a shape, got {type(array).__name__}; "
            "pass a numpy (or zarr/dask) array"
        )
    if len(arr_shape) < 2 or tuple(arr_shape[-2:]) != tuple(shape):
        raise InputError(
            f"{name} has shape {tuple(arr_shape)} but must end with the {what} shape "
            f"{tuple(shape)} (y, x); pass an array of shape (..., {shape[0]}, {shape[1]})"
        )


def _check_fill(fill_value: Any, dtype: np.dtype) -> Any:
    """Check that ``fill_value`` is exactly representable in ``dtype``."""
    if dtype.kind in "biu":
        ok = isinstance(fill_value, Real) and math.isfinite(float(fill_value))
        if ok:
            ok = float(fill_value) == int(fill_value) and (
                dtype.kind == "b" or np.iinfo(dtype).min <= int(fill_value) <= np.iinfo(dtype).max
            )
        if not ok:
            raise InputError(
                f"fill_value {fill_value!r} cannot be stored in an array of dtype {dtype}; pass an "
                "integer fill_value in range (e.g. fill_value=0), or a float array"
            )
    elif dtype.kind in "fc":
        if not isinstance(fill_value, Real | complex | np.number):
            raise _InputTypeError(
                f"fill_value must be a number, got {fill_value!r}; e.g. fill_value=np.nan"
            )
    return fill_value


def extract_window(array: Any, tile: Tile, *, fill_value: Any = np.nan) -> np.ndarray:
    """Return the window of ``tile`` from an array of the mosaic.

    Parameters
    ----------
    array : array_like
        Array of shape ``(..., ny, nx)`` ending with the mosaic shape: numpy,
        or anything sliceable that way (zarr, dask); only the read block is read.
    tile : Tile
        The tile.
    fill_value : scalar, default NaN
        Value of the window pixels beyond the mosaic edge; must fit the dtype
        (pass an integer for integer arrays).

    Returns
    -------
    numpy.ndarray
        New array of shape ``(..., *tile.window_shape)`` and the dtype of ``array``;
        ``window[..., tile.crop_slices]`` is the core.
    """
    if not isinstance(tile, Tile):
        raise _InputTypeError(f"tile must be a Tile, got {type(tile).__name__}; use grid[i]")
    _check_mosaic_array("array", array, tile.mosaic_shape, "mosaic")
    dtype = np.dtype(array.dtype)
    fill_value = _check_fill(fill_value, dtype)
    block = np.asarray(array[(..., *tile.read_slices)])
    (top, _), (left, _) = tile.read_pad
    out = np.full((*block.shape[:-2], *tile.window_shape), fill_value, dtype=dtype)
    out[..., top : top + block.shape[-2], left : left + block.shape[-1]] = block
    return out


def insert_core(target: Any, tile: Tile, window_result: Any) -> None:
    """Write the core part of a window-shaped result into ``target[..., core_slices]``.

    Parameters
    ----------
    target : array_like
        Writable array of shape ``(..., ny, nx)`` ending with the mosaic shape.
    tile : Tile
        The tile the result belongs to.
    window_result : array_like
        Array of shape ``(..., *tile.window_shape)``; its ``crop_slices`` part is
        written (leading axes broadcast as in numpy assignment).
    """
    if not isinstance(tile, Tile):
        raise _InputTypeError(f"tile must be a Tile, got {type(tile).__name__}; use grid[i]")
    _check_mosaic_array("target", target, tile.mosaic_shape, "mosaic")
    _check_mosaic_array("window_result", window_result, tile.window_shape, "window")
    target[(..., *tile.core_slices)] = np.asarray(window_result[(..., *tile.crop_slices)])


# --------------------------------------------------------------------------- regions


def _check_ra(name: str, value: float) -> None:
    if not 0.0 <= value <= 360.0:
        fix = f"use {value % 360.0:.10g}" if math.isfinite(value) else "use a finite number"
        raise InputError(f"{name} {value!r} deg is outside [0, 360]; {fix}")


def _check_dec(name: str, value: float) -> None:
    if not -90.0 <= value <= 90.0:
        raise InputError(f"{name} {value!r} deg is outside [-90, 90]; use a declination")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, Real):
        raise _InputTypeError(f"{name} must be a number of degrees, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value!r}; use a number of degrees")
    return value


@dataclass(frozen=True)
class ConeRegion:
    """Sky cone: every point within ``radius_deg`` of ``(ra, dec)``.

    Attributes
    ----------
    ra, dec : float
        Centre, degrees ICRS; RA in [0, 360], Dec in [-90, 90].
    radius_deg : float
        Radius in degrees, in (0, 180].
    """

    ra: float
    dec: float
    radius_deg: float

    def __post_init__(self) -> None:
        for name, label in (("ra", "RA"), ("dec", "Dec"), ("radius_deg", "radius")):
            object.__setattr__(self, name, _as_float(label, getattr(self, name)))
        _check_ra("RA", self.ra)
        _check_dec("Dec", self.dec)
        if not 0.0 < self.radius_deg <= 180.0:
            raise InputError(f"radius {self.radius_deg!r} deg must be in (0, 180]")

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """Return True where ``(ra, dec)`` (degrees) lies in the cone, edge included."""
        return angular_separation(self.ra, self.dec, ra, dec) <= self.radius_deg


@dataclass(frozen=True)
class BoxRegion:
    """Sky box bounded by two meridians and two parallels (edges included).

    Attributes
    ----------
    ra_min, ra_max : float
        RA bounds in degrees, in [0, 360]. The box runs east from ``ra_min`` to
        ``ra_max``; when ``ra_min > ra_max`` it wraps through RA 0 (``350, 10``
        is 20 degrees wide). ``0, 360`` covers every RA; equal bounds are rejected.
    dec_min, dec_max : float
        Dec bounds in degrees, ``-90 <= dec_min < dec_max <= 90``.
    """

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def __post_init__(self) -> None:
        for name in ("ra_min", "ra_max", "dec_min", "dec_max"):
            object.__setattr__(self, name, _as_float(name.upper(), getattr(self, name)))
        _check_ra("RA_MIN", self.ra_min)
        _check_ra("RA_MAX", self.ra_max)
        _check_dec("DEC_MIN", self.dec_min)
        _check_dec("DEC_MAX", self.dec_max)
        if self.dec_min >= self.dec_max:
            raise InputError(
                f"DEC_MIN {self.dec_min!r} must be smaller than DEC_MAX {self.dec_max!r}"
            )
        if self.ra_min == self.ra_max:
            raise InputError(
                f"RA_MIN equals RA_MAX ({self.ra_min!r}): the box is empty; for every RA use 0,360"
            )

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """Return True where ``(ra, dec)`` (degrees, RA in [0, 360)) lies in the box."""
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        in_dec = (dec >= self.dec_min) & (dec <= self.dec_max)
        if self.ra_min < self.ra_max:
            in_ra = (ra >= self.ra_min) & (ra <= self.ra_max)
        else:
            in_ra = (ra >= self.ra_min) | (ra <= self.ra_max)
        # at a pole every RA is the same point
        at_pole = np.abs(dec) >= 90.0
        return in_dec & (in_ra | at_pole)


@dataclass(frozen=True)
class TileListRegion:
    """Explicit tile ids (row-major grid indices).

    Attributes
    ----------
    tile_ids : tuple of int
        Non-negative ids, stored sorted and without duplicates (duplicates given
        to the constructor are dropped silently).
    """

    tile_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        ids = self.tile_ids
        if isinstance(ids, str | bytes) or not hasattr(ids, "__iter__"):
            raise _InputTypeError(f"tile_ids must be a sequence of integers, got {ids!r}")
        ids = [_as_int("tile id", i, minimum=0, fix="tile ids count from 0") for i in ids]
        if not ids:
            raise InputError("the tile list is empty; give at least one tile id")
        object.__setattr__(self, "tile_ids", tuple(sorted(set(ids))))


Region: TypeAlias = ConeRegion | BoxRegion | TileListRegion


def _region_error(spec: str, reason: str) -> InputError:
    shown = spec if len(spec) <= 80 else spec[:77] + "..."
    return InputError(
        f"invalid region {shown!r}: {reason}; accepted forms: {ACCEPTED_REGION_FORMS}"
    )


def parse_region(spec: str) -> Region:
    """Parse a sky region given on the command line.

    Accepted forms (prefix case-insensitive, whitespace around parts ignored):

    - ``cone:RA,DEC,RADIUS_DEG``
    - ``box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX`` (wraps through RA 0 when RA_MIN > RA_MAX)
    - ``tiles:ID,ID,...``

    RA, Dec and radius are degrees (ICRS). RA must lie in [0, 360]; it is not
    reduced modulo 360, so a negative RA is an error whose message gives the
    equivalent value. Tile ids are sorted and duplicates dropped silently.

    Parameters
    ----------
    spec : str
        The region text.

    Returns
    -------
    ConeRegion or BoxRegion or TileListRegion

    Raises
    ------
    ValueError
        If the text is malformed; the message names the bad part and shows the
        accepted forms.
    """
    if not isinstance(spec, str):
        raise _InputTypeError(
            f"region must be a string, got {type(spec).__name__}; "
            f"accepted forms: {ACCEPTED_REGION_FORMS}"
        )
    prefix, sep, body = spec.strip().partition(":")
    if not sep:
        raise _region_error(spec, "no 'kind:' prefix")
    kind = prefix.strip().lower()
    items = [item.strip() for item in body.split(",")]
    if kind not in ("cone", "box", "tiles"):
        raise _region_error(spec, f"unknown region kind {prefix.strip()!r}")
    if not body.strip():
        raise _region_error(spec, f"no values after '{kind}:'")
    if "" in items:
        raise _region_error(spec, "an empty value between commas")
    try:
        if kind == "tiles":
            ids = []
            for item in items:
                try:
                    ids.append(int(item))
                except ValueError:
                    raise InputError(f"tile id {item!r} is not a whole number") from None
            return TileListRegion(tuple(ids))
        wanted = 3 if kind == "cone" else 4
        if len(items) != wanted:
            raise InputError(f"'{kind}' takes {wanted} numbers, got {len(items)}")
        values = []
        for item in items:
            try:
                values.append(float(item))
            except ValueError:
                raise InputError(f"{item!r} is not a number") from None
        if kind == "cone":
            return ConeRegion(*values)
        return BoxRegion(*values)
    except InputError as exc:
        raise _region_error(spec, str(exc)) from None


def format_region(region: Region) -> str:
    """Return the text of ``region`` that :func:`parse_region` reads back to an equal region.

    Parameters
    ----------
    region : ConeRegion or BoxRegion or TileListRegion

    Returns
    -------
    str
        E.g. ``'cone:150.1,2.2,0.05'``; floats are written with :func:`repr`, exactly.
    """
    if isinstance(region, ConeRegion):
        return f"cone:{region.ra!r},{region.dec!r},{region.radius_deg!r}"
    if isinstance(region, BoxRegion):
        return f"box:{region.ra_min!r},{region.ra_max!r},{region.dec_min!r},{region.dec_max!r}"
    if isinstance(region, TileListRegion):
        return "tiles:" + ",".join(str(i) for i in region.tile_ids)
    raise _InputTypeError(
        f"region must be a ConeRegion, BoxRegion or TileListRegion, got {type(region).__name__}; "
        "build one with parse_region"
    )


# --------------------------------------------------------------------------- sky geometry


def pixel_to_sky(wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic pixels (0-based) to (RA, Dec) in degrees, RA in [0, 360)."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        world = wcs.all_pix2world(x, y, 0)
    ra = np.asarray(world[wcs.wcs.lng], dtype=float) % 360.0
    dec = np.asarray(world[wcs.wcs.lat], dtype=float)
    return ra, dec


def angular_separation(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Angular separation in degrees (Vincenty formula, accurate at all distances)."""
    lon1, lat1, lon2, lat2 = (
        np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2)
    )
    dlon = lon2 - lon1
    sdlon, cdlon = np.sin(dlon), np.cos(dlon)
    slat1, clat1, slat2, clat2 = np.sin(lat1), np.cos(lat1), np.sin(lat2), np.cos(lat2)
    num1 = clat2 * sdlon
    num2 = clat1 * slat2 - slat1 * clat2 * cdlon
    den = slat1 * slat2 + clat1 * clat2 * cdlon
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def sky_to_pixel(wcs: WCS, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """(RA, Dec) degrees to mosaic pixels; NaN where the inverse fails or does not round-trip."""
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    world = [None, None]
    world[wcs.wcs.lng], world[wcs.wcs.lat] = ra, dec
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            x, y = wcs.all_world2pix(world[0], world[1], 0, tolerance=1e-8, maxiter=50, quiet=True)
        except Exception:  # wcslib refuses some points (e.g. beyond the projection)
            x = np.full(ra.shape, np.nan)
            y = np.full(ra.shape, np.nan)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    back_ra, back_dec = pixel_to_sky(wcs, x, y)
    tol = 1e-3 * _pixel_scale(wcs)
    with np.errstate(invalid="ignore"):
        bad = ~(angular_separation(ra, dec, back_ra, back_dec) <= tol)
    x[bad] = np.nan
    y[bad] = np.nan
    return x, y


def _pixel_scale(wcs: WCS) -> float:
    """Mean pixel side in degrees at the reference point."""
    return float(np.mean(proj_plane_pixel_scales(wcs)))


def _tile_arrays(grid: TileGrid) -> tuple[np.ndarray, ...]:
    """Core rectangles of all tiles as arrays ``(xa, xb, ya, yb)`` (pixel-edge coordinates)."""
    x0 = np.array([t.x0 for t in grid.tiles], dtype=float)
    x1 = np.array([t.x1 for t in grid.tiles], dtype=float)
    y0 = np.array([t.y0 for t in grid.tiles], dtype=float)
    y1 = np.array([t.y1 for t in grid.tiles], dtype=float)
    return x0 - 0.5, x1 - 0.5, y0 - 0.5, y1 - 0.5


def _coarse_points(
    wcs: WCS, xa: np.ndarray, xb: np.ndarray, ya: np.ndarray, yb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky coordinates of 9 points per core (centre, corners, edge midpoints) and its radius.

    Returns ``(ra, dec, radius)`` with ``ra``, ``dec`` of shape ``(n_tiles, 9)``
    (column 0 the centre) and a safe upper bound of the angular distance from
    the centre to any point of the core.
    """
    xm, ym = (xa + xb) / 2, (ya + yb) / 2
    px = np.stack([xm, xa, xb, xa, xb, xm, xm, xa, xb], axis=1)
    py = np.stack([ym, ya, ya, yb, yb, ya, yb, ym, ym], axis=1)
    ra, dec = pixel_to_sky(wcs, px, py)
    sep = angular_separation(ra[:, :1], dec[:, :1], ra, dec)
    radius = np.max(sep, axis=1) * 1.05 + 2.0 * _pixel_scale(wcs)
    return ra, dec, radius


def _edges(
    xa: np.ndarray, xb: np.ndarray, ya: np.ndarray, yb: np.ndarray
) -> tuple[np.ndarray, ...]:
    """The 4 edges of each core as segments ``(tile, sx, sy, dx, dy, length)``.

    Edge points are ``(sx + t dx, sy + t dy)`` for ``t`` in ``[0, length]`` pixels.
    """
    n = xa.size
    tile = np.repeat(np.arange(n), 4)
    w, h = xb - xa, yb - ya
    one, zero = np.ones(n), np.zeros(n)
    sx = np.stack([xa, xa, xa, xb], axis=1).ravel()
    sy = np.stack([ya, yb, ya, ya], axis=1).ravel()
    dx = np.stack([one, one, zero, zero], axis=1).ravel()
    dy = np.stack([zero, zero, one, one], axis=1).ravel()
    length = np.stack([w, w, h, h], axis=1).ravel()
    return tile, sx, sy, dx, dy, length


def _edge_samples(length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge id and parameter ``t`` of samples every pixel (every pixel corner) of each edge."""
    counts = length.astype(np.int64) + 1
    edge = np.repeat(np.arange(length.size), counts)
    starts = np.cumsum(counts) - counts
    t = (np.arange(counts.sum()) - np.repeat(starts, counts)).astype(float)
    return edge, t


def _batches(tiles: np.ndarray, points_per_tile: np.ndarray) -> Iterator[np.ndarray]:
    """Split ``tiles`` into batches of at most ~``_BATCH_POINTS`` boundary samples."""
    start, total = 0, 0
    for i, n in enumerate(points_per_tile):
        total += int(n)
        if total > _BATCH_POINTS and i > start:
            yield tiles[start:i]
            start, total = i, int(n)
    if start < tiles.size:
        yield tiles[start:]


def _cone_fine(wcs: WCS, region: ConeRegion, rect: tuple[np.ndarray, ...]) -> np.ndarray:
    """Exact cone test for the cores ``rect`` = (xa, xb, ya, yb): True where they meet."""
    xa, xb, ya, yb = rect
    meets = np.zeros(xa.size, dtype=bool)
    # the centre projects inside the core
    cx, cy = sky_to_pixel(wcs, region.ra, region.dec)
    if np.isfinite(cx[0]):
        meets |= (cx[0] >= xa) & (cx[0] <= xb) & (cy[0] >= ya) & (cy[0] <= yb)
    # otherwise the nearest point of the core is on its boundary: sample each
    # edge at every pixel corner, then refine the minimum by golden section
    tile, sx, sy, dx, dy, length = _edges(xa, xb, ya, yb)
    edge, t = _edge_samples(length)
    ra, dec = pixel_to_sky(wcs, sx[edge] + t * dx[edge], sy[edge] + t * dy[edge])
    sep = np.nan_to_num(angular_separation(region.ra, region.dec, ra, dec), nan=np.inf)
    order = np.lexsort((sep, edge))
    first = np.searchsorted(edge[order], np.arange(length.size))
    best = order[first]
    t_best = t[best]
    lo = np.maximum(t_best - 1.0, 0.0)
    hi = np.minimum(t_best + 1.0, length)

    def dist(tt: np.ndarray) -> np.ndarray:
        r, d = pixel_to_sky(wcs, sx + tt * dx, sy + tt * dy)
        return np.nan_to_num(angular_separation(region.ra, region.dec, r, d), nan=np.inf)

    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = dist(c), dist(d)
    for _ in range(_REFINE_STEPS):
        left = fc < fd
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        new = np.where(left, hi - g * (hi - lo), lo + g * (hi - lo))
        fnew = dist(new)
        c, d, fc, fd = (
            np.where(left, new, d),
            np.where(left, c, new),
            np.where(left, fnew, fd),
            np.where(left, fc, fnew),
        )
    edge_min = np.minimum(np.minimum(fc, fd), sep[best])
    close = np.zeros(xa.size, dtype=bool)
    np.logical_or.at(close, tile, edge_min <= region.radius_deg)
    return meets | close


def _box_functions(region: BoxRegion, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Signed functions whose zeros are the box edges, shape ``(..., 4)``."""

    def wrap(a: np.ndarray) -> np.ndarray:
        return (a + 180.0) % 360.0 - 180.0

    return np.stack(
        [
            wrap(ra - region.ra_min),
            wrap(region.ra_max - ra),
            dec - region.dec_min,
            region.dec_max - dec,
        ],
        axis=-1,
    )


def _box_fine(wcs: WCS, region: BoxRegion, rect: tuple[np.ndarray, ...]) -> np.ndarray:
    """Exact box test for the cores ``rect`` = (xa, xb, ya, yb): True where they meet."""
    xa, xb, ya, yb = rect
    meets = np.zeros(xa.size, dtype=bool)
    # a box corner inside the core (covers a box inside the core)
    cra = np.array([region.ra_min, region.ra_max, region.ra_min, region.ra_max]) % 360.0
    cdec = np.array([region.dec_min, region.dec_min, region.dec_max, region.dec_max])
    cx, cy = sky_to_pixel(wcs, cra, cdec)
    for x, y in zip(cx, cy, strict=True):
        if np.isfinite(x):
            meets |= (x >= xa) & (x <= xb) & (y >= ya) & (y <= yb)
    # a boundary sample inside the box (covers a core inside the box)
    tile, sx, sy, dx, dy, length = _edges(xa, xb, ya, yb)
    edge, t = _edge_samples(length)
    ra, dec = pixel_to_sky(wcs, sx[edge] + t * dx[edge], sy[edge] + t * dy[edge])
    np.logical_or.at(meets, tile[edge], region.contains(ra, dec))
    # a box edge crossing a core edge: locate each sign change between two
    # samples by bisection and test the crossing point
    f = _box_functions(region, ra, dec) >= 0
    same = edge[:-1] == edge[1:]
    k, j = np.nonzero((f[:-1] != f[1:]) & same[:, None])
    if k.size:
        e = edge[k]
        lo, hi = t[k], t[k + 1]
        lo_inside = f[k, j]

        def fun(tt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            r, d = pixel_to_sky(wcs, sx[e] + tt * dx[e], sy[e] + tt * dy[e])
            vals = _box_functions(region, r, d)[np.arange(tt.size), j]
            return vals >= 0, r, d

        for _ in range(_REFINE_STEPS):
            mid = (lo + hi) / 2
            inside_mid, _, _ = fun(mid)
            to_lo = inside_mid == lo_inside
            lo = np.where(to_lo, mid, lo)
            hi = np.where(to_lo, hi, mid)
        point = np.where(lo_inside, lo, hi)
        _, r, d = fun(point)
        np.logical_or.at(meets, tile[e], region.contains(r, d))
    return meets


def _select_sky(grid: TileGrid, region: ConeRegion | BoxRegion) -> np.ndarray:
    """Boolean mask over ``grid.tiles``: cores that meet a cone or box region."""
    wcs = grid.wcs
    xa, xb, ya, yb = _tile_arrays(grid)
    ra, dec, radius = _coarse_points(wcs, xa, xb, ya, yb)
    rac, decc = ra[:, 0], dec[:, 0]
    if isinstance(region, ConeRegion):
        sep_centre = angular_separation(region.ra, region.dec, rac, decc)
        candidate = ~(sep_centre > region.radius_deg + radius)
        accepted = np.any(
            angular_separation(region.ra, region.dec, ra, dec) <= region.radius_deg, axis=1
        )
    else:
        candidate = _box_may_meet(region, rac, decc, radius)
        accepted = np.any(region.contains(ra, dec), axis=1)
    undecided = np.flatnonzero(candidate & ~accepted)
    meets = accepted.copy()
    per_tile = 2 * (xb - xa + yb - ya) + 4
    for batch in _batches(undecided, per_tile[undecided]):
        rect = (xa[batch], xb[batch], ya[batch], yb[batch])
        if isinstance(region, ConeRegion):
            meets[batch] = _cone_fine(wcs, region, rect)
        else:
            meets[batch] = _box_fine(wcs, region, rect)
    return meets


def _box_may_meet(
    region: BoxRegion, ra: np.ndarray, dec: np.ndarray, radius: np.ndarray
) -> np.ndarray:
    """Return True where a disc of ``radius`` around ``(ra, dec)`` may meet the box."""
    dec_ok = (dec + radius >= region.dec_min) & (dec - radius <= region.dec_max)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sin(np.radians(np.minimum(radius, 90.0))) / np.cos(np.radians(dec))
        half = np.where(
            (np.abs(dec) + radius >= 90.0) | (s >= 1.0),
            180.0,
            np.degrees(np.arcsin(np.minimum(s, 1.0))),
        )
    if region.ra_min < region.ra_max:
        intervals = [(region.ra_min, region.ra_max)]
    else:
        intervals = [(region.ra_min, 360.0), (0.0, region.ra_max)]
    ra_ok = np.zeros(ra.shape, dtype=bool)
    for a, b in intervals:
        inside = (ra >= a) & (ra <= b)
        da = np.abs((ra - a + 180.0) % 360.0 - 180.0)
        db = np.abs((ra - b + 180.0) % 360.0 - 180.0)
        ra_ok |= inside | (np.minimum(da, db) <= half)
    return dec_ok & ra_ok


def _require_sky_wcs(grid: TileGrid, region: Region) -> WCS:
    if grid.wcs is None:
        raise InputError(
            f"region {format_region(region)} needs the mosaic WCS but the grid has none; "
            "pass wcs= to make_tile_grid, or select tiles with 'tiles:ID,...'"
        )
    ctype = grid.wcs.wcs.ctype[grid.wcs.wcs.lng]
    if not ctype.upper().startswith("RA"):
        raise InputError(
            f"region {format_region(region)} is in RA/Dec but the mosaic WCS has longitude "
            f"axis {ctype!r}; use an equatorial (RA/DEC) WCS or select with 'tiles:ID,...'"
        )
    return grid.wcs


def footprint_bounds(grid: TileGrid) -> tuple[float, float, float, float]:
    """Return the RA/Dec bounds ``(ra_min, ra_max, dec_min, dec_max)`` of the mosaic, degrees.

    Computed from the mosaic boundary (pixel edges, densely sampled). The RA range
    is the smallest arc holding the footprint, so ``ra_min > ra_max`` when it
    wraps through RA 0; a footprint containing a pole spans RA 0..360.

    Parameters
    ----------
    grid : TileGrid
        A grid with a WCS.

    Returns
    -------
    tuple of float
    """
    if not isinstance(grid, TileGrid):
        raise _InputTypeError(f"grid must be a TileGrid, got {type(grid).__name__}")
    if grid.wcs is None:
        raise InputError("the grid has no WCS; pass wcs= to make_tile_grid")
    wcs = grid.wcs
    ny, nx = grid.shape
    xs = np.linspace(-0.5, nx - 0.5, min(nx + 1, 4097))
    ys = np.linspace(-0.5, ny - 0.5, min(ny + 1, 4097))
    px = np.concatenate([xs, xs, np.full(ys.size, -0.5), np.full(ys.size, nx - 0.5)])
    py = np.concatenate([np.full(xs.size, -0.5), np.full(xs.size, ny - 0.5), ys, ys])
    ra, dec = pixel_to_sky(wcs, px, py)
    ok = np.isfinite(ra) & np.isfinite(dec)
    ra, dec = ra[ok], dec[ok]
    dec_min, dec_max = float(dec.min()), float(dec.max())
    ra_min, ra_max = _ra_span(ra)
    for pole in (90.0, -90.0):
        x, y = sky_to_pixel(wcs, 0.0, pole)
        if np.isfinite(x[0]) and -0.5 <= x[0] <= nx - 0.5 and -0.5 <= y[0] <= ny - 0.5:
            ra_min, ra_max = 0.0, 360.0
            dec_min, dec_max = min(dec_min, pole), max(dec_max, pole)
    return ra_min, ra_max, dec_min, dec_max


def _ra_span(ra: np.ndarray) -> tuple[float, float]:
    """Smallest circular arc ``(start, end)`` holding all ``ra`` (degrees in [0, 360))."""
    s = np.sort(ra)
    gaps = np.diff(np.concatenate([s, [s[0] + 360.0]]))
    i = int(np.argmax(gaps))
    if i == s.size - 1:
        return float(s[0]), float(s[-1])
    return float(s[i + 1]), float(s[i])


def select_tiles(grid: TileGrid, region: Region) -> list[Tile]:
    """Return exactly the tiles whose core meets ``region``, in index order.

    A core is the closed pixel rectangle ``[x0 - 0.5, x1 - 0.5] x [y0 - 0.5, y1 - 0.5]``.

    - Cone: the core meets the cone when the cone centre projects inside it, or
      the smallest angular distance from the centre to the core boundary is at
      most the radius. The boundary is sampled at every pixel corner and the
      minimum refined along each edge by golden-section search, with true
      angular separations through the WCS (SIP included).
    - Box: the core meets the box when a box corner projects inside it, a
      boundary sample (every pixel corner) lies in the box, or a box edge
      crosses a core edge at a point of the box (each crossing located by
      bisection between samples).

    Every tile returned has a point of its core in the region, to ~1e-9 pixel;
    a tile is missed only when the region pokes into a core through one edge
    between two pixel corners and back (a Dec circle within ~1e-5 pixel of being
    tangent to a core edge).

    Parameters
    ----------
    grid : TileGrid
        The grid; cone and box regions need ``grid.wcs``.
    region : ConeRegion or BoxRegion or TileListRegion
        E.g. from :func:`parse_region`.

    Returns
    -------
    list of Tile
        Never empty.

    Raises
    ------
    ValueError
        If the grid has no WCS for a sky region, a tile id is not in the grid,
        or the region does not meet the mosaic (the message gives the footprint).
    """
    if not isinstance(grid, TileGrid):
        raise _InputTypeError(
            f"grid must be a TileGrid, got {type(grid).__name__}; use make_tile_grid"
        )
    if isinstance(region, TileListRegion):
        n = len(grid)
        bad = [i for i in region.tile_ids if i >= n]
        if bad:
            raise InputError(
                f"tile id {bad[0]} is not in the grid ({grid.n_rows} x {grid.n_cols} tiles); "
                f"valid ids are 0..{n - 1}"
            )
        return [grid.tiles[i] for i in region.tile_ids]
    if not isinstance(region, ConeRegion | BoxRegion):
        raise _InputTypeError(
            f"region must be a ConeRegion, BoxRegion or TileListRegion, got "
            f"{type(region).__name__}; build one with parse_region"
        )
    _require_sky_wcs(grid, region)
    meets = _select_sky(grid, region)
    if not meets.any():
        ra0, ra1, dec0, dec1 = footprint_bounds(grid)
        raise InputError(
            f"region {format_region(region)} does not meet the mosaic footprint "
            f"(RA {ra0:.6f}..{ra1:.6f} deg, Dec {dec0:.6f}..{dec1:.6f} deg); check the coordinates"
        )
    return [grid.tiles[i] for i in np.flatnonzero(meets)]
