"""Tests of survey_seg.tiling: geometry, ownership, per-tile WCS and sky regions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from astropy.wcs import WCS, Sip
from hypothesis import given, settings
from hypothesis import strategies as st

from survey_seg.tiling import (
    ACCEPTED_REGION_FORMS,
    BoxRegion,
    ConeRegion,
    Tile,
    TileGrid,
    TileListRegion,
    extract_window,
    footprint_bounds,
    format_region,
    insert_core,
    make_tile_grid,
    parse_region,
    select_tiles,
)

PIX_DEG = 0.1 / 3600.0
FUZZ = settings(max_examples=60, deadline=None)


def tan_wcs(
    shape: tuple[int, int] = (200, 200),
    ra: float = 150.1,
    dec: float = 2.2,
    scale_deg: float = PIX_DEG,
    sip: bool = False,
) -> WCS:
    """TAN (optionally TAN-SIP) WCS with (ra, dec) at the centre of a (ny, nx) image."""
    ny, nx = shape
    w = WCS(naxis=2)
    suffix = "-SIP" if sip else ""
    w.wcs.ctype = ["RA---TAN" + suffix, "DEC--TAN" + suffix]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    w.wcs.cdelt = [-scale_deg, scale_deg]
    w.wcs.radesys = "ICRS"
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        # a few pixels of distortion at the corners of a 200 x 200 image
        a[2, 0], a[1, 1], a[0, 2], a[3, 0] = 2e-4, -1e-4, 5e-5, 1e-6
        b[0, 2], b[1, 1], b[2, 0], b[1, 2] = 1.5e-4, 5e-5, -1e-4, -1e-6
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.pixel_shape = (nx, ny)
    return w


@pytest.fixture(scope="module")
def wcs() -> WCS:
    return tan_wcs()


@pytest.fixture(scope="module")
def sip_wcs() -> WCS:
    return tan_wcs(sip=True)


@pytest.fixture(scope="module")
def grid(wcs: WCS) -> TileGrid:
    return make_tile_grid((200, 200), tile_size=50, halo=8, wcs=wcs)


def sky(w: WCS, x, y) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = w.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    return np.asarray(ra) % 360.0, np.asarray(dec)


def sep_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


# --------------------------------------------------------------------------- grid geometry

GEOMETRIES = [
    ((64, 64), 16, 4),
    ((64, 64), 64, 0),
    ((50, 70), 16, 0),
    ((50, 70), 16, 3),
    ((37, 53), 10, 25),  # halo larger than a tile
    ((33, 17), 17, 1),
    ((1, 1), 1, 2),
    ((5, 9), 2, 7),
    ((100, 7), 7, 7),
]


@pytest.mark.parametrize(("shape", "tile_size", "halo"), GEOMETRIES)
def test_tile_then_reassemble_equals_original(shape, tile_size, halo):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape)
    grid = make_tile_grid(shape, tile_size=tile_size, halo=halo)
    out = np.full(shape, np.nan)
    count = np.zeros(shape, dtype=int)
    for tile in grid:
        window = extract_window(image, tile)
        assert window.shape == tile.window_shape
        np.testing.assert_array_equal(window[tile.crop_slices], image[tile.core_slices])
        insert_core(out, tile, window)
        count[tile.core_slices] += 1
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(count, 1)


@given(
    ny=st.integers(1, 40),
    nx=st.integers(1, 40),
    tile_frac=st.floats(0.0, 1.0),
    halo=st.integers(0, 45),
)
@FUZZ
def test_tiling_fuzz(ny, nx, tile_frac, halo):
    tile_size = max(1, round(tile_frac * min(ny, nx)))
    image = np.arange(ny * nx, dtype=np.int64).reshape(ny, nx)
    grid = make_tile_grid((ny, nx), tile_size=tile_size, halo=halo)
    assert len(grid) == grid.n_rows * grid.n_cols == len(grid.tiles)
    out = np.full((ny, nx), -1, dtype=np.int64)
    for i, tile in enumerate(grid):
        assert tile.index == i == tile.row * grid.n_cols + tile.col
        assert (tile.y0, tile.x0) == (tile.row * tile_size, tile.col * tile_size)
        assert grid.tile_at(tile.row, tile.col) is tile
        window = extract_window(image, tile, fill_value=-7)
        # read_slices + read_pad reproduce extract_window
        padded = np.pad(image[tile.read_slices], tile.read_pad, constant_values=-7)
        np.testing.assert_array_equal(padded, window)
        assert tile.origin == tile.window_bounds[::2]
        wy0, wy1, wx0, wx1 = tile.window_bounds
        assert (wy1 - wy0, wx1 - wx0) == tile.window_shape
        assert np.all(out[tile.core_slices] == -1)
        insert_core(out, tile, window)
    np.testing.assert_array_equal(out, image)


def test_window_padding_is_fill_value():
    image = np.arange(20 * 30, dtype=float).reshape(20, 30)
    grid = make_tile_grid(image.shape, tile_size=10, halo=4)
    tile = grid.tile_at(0, 2)  # top-right corner tile
    assert tile.window_bounds == (-4, 14, 16, 34)
    assert tile.read_slices == (slice(0, 14), slice(16, 30))
    assert tile.read_pad == ((4, 0), (0, 4))
    assert tile.touches_mosaic_edge == (True, False, False, True)
    assert tile.touches_mosaic_edge.right
    window = extract_window(image, tile)
    assert np.all(np.isnan(window[:4])) and np.all(np.isnan(window[:, -4:]))
    np.testing.assert_array_equal(window[4:, :-4], image[0:14, 16:30])
    zeros = extract_window(image.astype(np.int32), tile, fill_value=0)
    assert zeros.dtype == np.int32 and np.all(zeros[:4] == 0)
    inner = make_tile_grid((30, 30), tile_size=10, halo=4).tile_at(1, 1)
    assert inner.touches_mosaic_edge == (False, False, False, False)
    assert inner.read_pad == ((0, 0), (0, 0))


def test_extract_window_leading_axes_and_insert_broadcast():
    cube = np.random.default_rng(2).normal(size=(3, 25, 31))
    grid = make_tile_grid((25, 31), tile_size=8, halo=3)
    out = np.zeros_like(cube)
    for tile in grid:
        window = extract_window(cube, tile)
        assert window.shape == (3, *tile.window_shape)
        insert_core(out, tile, window)
    np.testing.assert_array_equal(out, cube)
    window = extract_window(cube, grid[0])
    window[:] = 1.0  # a copy, never a view of the mosaic
    assert not np.any(cube == 1.0)


def test_extract_and_insert_validation():
    grid = make_tile_grid((20, 20), tile_size=10, halo=2)
    with pytest.raises(
        ValueError, match=r"fill_value nan cannot be stored in an array of dtype int64"
    ):
        extract_window(np.zeros((20, 20), dtype=np.int64), grid[0])
    with pytest.raises(ValueError, match=r"must end with the mosaic shape \(20, 20\)"):
        extract_window(np.zeros((20, 21)), grid[0])
    with pytest.raises(ValueError, match=r"must end with the window shape \(14, 14\)"):
        insert_core(np.zeros((20, 20)), grid[0], np.zeros((10, 10)))
    with pytest.raises(TypeError, match="tile must be a Tile"):
        extract_window(np.zeros((20, 20)), 0)


def test_tile_is_picklable_hashable_and_lazy_wcs(wcs):
    grid = make_tile_grid((200, 200), tile_size=50, halo=8, wcs=wcs)
    tile = grid[6]
    clone = pickle.loads(pickle.dumps(tile))
    assert clone == tile and hash(clone) == hash(tile)
    assert clone.wcs.pixel_shape == (66, 66)
    assert tile.wcs is tile.wcs  # computed once
    assert make_tile_grid((200, 200), tile_size=50, halo=8).tiles[6].wcs is None
    assert grid.wcs is not wcs  # the grid keeps its own copy


# --------------------------------------------------------------------------- ownership


def test_ownership_boundaries():
    grid = make_tile_grid((1024, 1000), tile_size=512, halo=16)
    # x = 511.5 is the left edge of pixel 512, the first pixel of column 1
    assert grid.owner_index(511.5, 0.0) == 1
    assert grid.owner_index(np.nextafter(511.5, 0), 0.0) == 0
    for tile in grid:
        assert tile.owns(tile.x0 - 0.5, tile.y0 - 0.5)
        # x1 - 0.5 belongs to the next tile, or to this one at the mosaic edge (clamped)
        assert tile.owns(tile.x1 - 0.5, tile.y0) == (tile.x1 == 1000)
    # beyond the mosaic: clamped onto the edge tiles
    assert grid.owner_index(-1e9, -1e9) == 0
    assert grid.owner_index(1e9, 1e9) == len(grid) - 1
    assert grid.owner_index(np.inf, -np.inf) == grid.tile_at(0, 1).index
    assert grid.owner_index(np.nan, 3.0) == -1
    assert not any(t.owns(np.nan, 3.0) for t in grid)


@given(
    ny=st.integers(1, 60),
    nx=st.integers(1, 60),
    tile_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
@FUZZ
def test_every_point_has_exactly_one_owner(ny, nx, tile_frac, seed):
    tile_size = max(1, round(tile_frac * min(ny, nx)))
    grid = make_tile_grid((ny, nx), tile_size=tile_size, halo=3)
    rng = np.random.default_rng(seed)
    n = 400
    x = rng.uniform(-10, nx + 10, n)
    y = rng.uniform(-10, ny + 10, n)
    # half-pixel boundaries, exact pixel centres and far-away points
    x[:100] = rng.integers(-3, nx + 3, 100) - 0.5
    y[50:150] = rng.integers(-3, ny + 3, 100) - 0.5
    x[150:200] = rng.integers(0, nx, 50)
    x[200:210] = rng.choice([-1e12, 1e12], 10)
    owns = np.stack([t.owns(x, y) for t in grid])
    np.testing.assert_array_equal(owns.sum(axis=0), 1)
    np.testing.assert_array_equal(grid.owner_index(x, y), np.argmax(owns, axis=0))
    # the owner's core holds the pixel the point falls in (clamped)
    col = np.clip(np.floor(x + 0.5), 0, nx - 1)
    idx = grid.owner_index(x, y)
    x0 = np.array([grid[i].x0 for i in idx])
    x1 = np.array([grid[i].x1 for i in idx])
    assert np.all((col >= x0) & (col < x1))


def test_to_window_and_back(grid):
    tile = grid.tile_at(2, 1)
    xw, yw = tile.to_window(60.25, 110.0)
    assert (xw, yw) == (60.25 - 42, 110.0 - 92)
    np.testing.assert_array_equal(tile.to_mosaic(xw, yw), (60.25, 110.0))


# --------------------------------------------------------------------------- tile WCS


@pytest.mark.parametrize("which", ["tan", "sip"])
def test_tile_wcs_is_shifted_mosaic_wcs(which, wcs, sip_wcs):
    mosaic_wcs = wcs if which == "tan" else sip_wcs
    grid = make_tile_grid((200, 200), tile_size=64, halo=20, wcs=mosaic_wcs)
    rng = np.random.default_rng(3)
    for tile in grid:
        assert tile.wcs.pixel_shape == tile.window_shape[::-1]
        xw = rng.uniform(-5, tile.window_shape[1] + 5, 50)
        yw = rng.uniform(-5, tile.window_shape[0] + 5, 50)
        oy, ox = tile.origin
        ra_t, dec_t = tile.wcs.pixel_to_world_values(xw, yw)
        ra_m, dec_m = grid.wcs.pixel_to_world_values(xw + ox, yw + oy)
        np.testing.assert_allclose(ra_t, ra_m, rtol=0, atol=1e-10)
        np.testing.assert_allclose(dec_t, dec_m, rtol=0, atol=1e-10)
    if which == "sip":
        # the distortion is really there (a shift of CRPIX alone would not do)
        ra_tan, _ = wcs.pixel_to_world_values(0.0, 0.0)
        ra_sip, _ = sip_wcs.pixel_to_world_values(0.0, 0.0)
        assert abs(ra_tan - ra_sip) > 0.3 * PIX_DEG


@given(
    which=st.sampled_from(["tan", "sip"]),
    index=st.integers(0, 15),
    xw=st.floats(-10, 76),
    yw=st.floats(-10, 76),
)
@FUZZ
def test_tile_wcs_round_trip(which, index, xw, yw):
    mosaic_wcs = tan_wcs(sip=which == "sip")
    tile = make_tile_grid((200, 200), tile_size=50, halo=8, wcs=mosaic_wcs)[index]
    ra, dec = tile.wcs.all_pix2world(xw, yw, 0)
    xb, yb = tile.wcs.all_world2pix(ra, dec, 0, tolerance=1e-10, maxiter=100)
    assert abs(xb - xw) < 1e-6 and abs(yb - yw) < 1e-6


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"shape": (2048, 1500), "tile_size": 4096, "halo": 0},
            ValueError,
            r"use --tile-size <= 1500",
        ),
        (
            {"shape": (2048, 1500), "tile_size": 0, "halo": 0},
            ValueError,
            r"tile size must be >= 1, got 0",
        ),
        ({"shape": (20, 20), "tile_size": -4, "halo": 0}, ValueError, r"got -4"),
        (
            {"shape": (20, 20), "tile_size": 4.0, "halo": 0},
            TypeError,
            r"tile size must be an integer",
        ),
        ({"shape": (20, 20), "tile_size": True, "halo": 0}, TypeError, r"got True \(bool\)"),
        ({"shape": (20, 20), "tile_size": 4, "halo": -1}, ValueError, r"halo must be >= 0"),
        ({"shape": (20, 20), "tile_size": 4, "halo": 1.5}, TypeError, r"halo must be an integer"),
        ({"shape": (20, 20), "tile_size": 4, "halo": False}, TypeError, r"halo must be an integer"),
        ({"shape": (20,), "tile_size": 4, "halo": 0}, TypeError, r"pair of positive integers"),
        ({"shape": (20, 20, 3), "tile_size": 4, "halo": 0}, TypeError, r"pair of positive"),
        ({"shape": (0, 20), "tile_size": 4, "halo": 0}, ValueError, r"shape\[0\] \(ny\)"),
        ({"shape": (20.0, 20), "tile_size": 4, "halo": 0}, TypeError, r"shape\[0\]"),
        ({"shape": (20, 20), "tile_size": 4, "halo": 0, "wcs": "x"}, TypeError, r"astropy"),
    ],
)
def test_make_tile_grid_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_tile_grid(**kwargs)
    with pytest.raises(ValueError):  # type errors are ValueErrors too
        make_tile_grid(**kwargs)


def test_make_tile_grid_wcs_validation(wcs):
    with pytest.raises(ValueError, match=r"wcs describes an image of 200 x 200"):
        make_tile_grid((100, 200), tile_size=50, halo=0, wcs=wcs)
    with pytest.raises(ValueError, match="2-D celestial"):
        make_tile_grid((200, 200), tile_size=50, halo=0, wcs=WCS(naxis=3))
    linear = WCS(naxis=2)
    with pytest.raises(ValueError, match="2-D celestial"):
        make_tile_grid((200, 200), tile_size=50, halo=0, wcs=linear)
    grid = make_tile_grid(np.array([20, 30]), tile_size=np.int64(10), halo=np.int32(0))
    assert grid.shape == (20, 30) and (grid.n_rows, grid.n_cols) == (2, 3)


def test_grid_indexing_errors(grid):
    assert grid[-1] is grid.tiles[-1]
    with pytest.raises(IndexError, match=r"valid ids are 0..15"):
        grid[16]
    with pytest.raises(IndexError, match=r"outside the 4 x 4 grid"):
        grid.tile_at(4, 0)
    with pytest.raises(TypeError):
        grid[1.0]


# --------------------------------------------------------------------------- parse_region


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cone:150.1,2.2,0.05", ConeRegion(150.1, 2.2, 0.05)),
        ("  CONE : 150.1 , -2.2 ,\t1e-3 ", ConeRegion(150.1, -2.2, 0.001)),
        ("box:150,150.2,2.1,2.3", BoxRegion(150, 150.2, 2.1, 2.3)),
        ("Box:359.5,0.5,-1,1", BoxRegion(359.5, 0.5, -1, 1)),
        ("box:0,360,-90,90", BoxRegion(0, 360, -90, 90)),
        ("tiles:3,1,2", TileListRegion((1, 2, 3))),
        ("tiles: 5, 5 ,0", TileListRegion((0, 5))),
        ("TILES:7", TileListRegion((7,))),
    ],
)
def test_parse_region_valid(spec, expected):
    region = parse_region(spec)
    assert region == expected
    assert parse_region(format_region(region)) == region


@pytest.mark.parametrize(
    ("spec", "part"),
    [
        ("", "no 'kind:' prefix"),
        ("150.1,2.2,0.05", "no 'kind:' prefix"),
        ("circle:1,2,3", "unknown region kind 'circle'"),
        ("cone:", "no values"),
        ("cone:1,2", "takes 3 numbers, got 2"),
        ("cone:1,2,3,4", "takes 3 numbers, got 4"),
        ("box:1,2,3", "takes 4 numbers, got 3"),
        ("cone:abc,2,3", "'abc' is not a number"),
        ("cone:nan,2,3", "RA must be finite"),
        ("cone:1,inf,3", "Dec must be finite"),
        ("cone:10,91,1", "Dec 91.0 deg is outside"),
        ("cone:-10,0,1", "use 350"),
        ("cone:361,0,1", "RA 361.0 deg is outside"),
        ("cone:10,0,0", "radius 0.0 deg must be in"),
        ("cone:10,0,-1", "radius -1.0"),
        ("cone:10,0,181", "radius 181.0"),
        ("box:1,2,3,3", "DEC_MIN 3.0 must be smaller than DEC_MAX 3.0"),
        ("box:1,2,4,3", "DEC_MIN 4.0"),
        ("box:5,5,1,2", "box is empty"),
        ("box:1,2,-95,3", "DEC_MIN -95.0"),
        ("tiles:", "no values"),
        ("tiles:1,,2", "empty value"),
        ("tiles:1,2,", "empty value"),
        ("tiles:-1", "tile id must be >= 0, got -1"),
        ("tiles:1.5", "'1.5' is not a whole number"),
        ("tiles:x", "'x' is not a whole number"),
    ],
)
def test_parse_region_errors_name_the_part_and_the_forms(spec, part):
    with pytest.raises(ValueError) as info:
        parse_region(spec)
    message = str(info.value)
    assert part in message
    assert ACCEPTED_REGION_FORMS in message
    assert "cone:RA,DEC,RADIUS_DEG" in message and "tiles:ID,ID,..." in message


def test_parse_region_type_error():
    with pytest.raises(TypeError, match="region must be a string"):
        parse_region(3)


ra_values = st.floats(0, 360, allow_nan=False)
dec_values = st.floats(-90, 90, allow_nan=False)
cones = st.builds(ConeRegion, ra_values, dec_values, st.floats(1e-9, 180))
boxes = (
    st.tuples(ra_values, ra_values, dec_values, dec_values)
    .filter(lambda v: v[0] != v[1] and v[2] != v[3])
    .map(lambda v: BoxRegion(v[0], v[1], min(v[2], v[3]), max(v[2], v[3])))
)
tile_lists = st.lists(st.integers(0, 10**6), min_size=1, max_size=20).map(
    lambda ids: TileListRegion(tuple(ids))
)


@given(region=st.one_of(cones, boxes, tile_lists))
@FUZZ
def test_format_parse_round_trip(region):
    assert parse_region(format_region(region)) == region


@given(text=st.text(max_size=60))
@settings(max_examples=200, deadline=None)
def test_parse_arbitrary_text_parses_or_raises_value_error(text):
    try:
        parse_region(text)
    except ValueError as exc:
        assert "accepted forms" in str(exc)


@given(
    kind=st.sampled_from(["cone", "box", "tiles", "CONE", " Box ", "x"]),
    items=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.integers(-5, 400).map(str),
            st.sampled_from(["", " ", "nan", "-inf", "1e400", "0x10", "1_0", "--1", "٣"]),
        ),
        max_size=6,
    ),
)
@settings(max_examples=200, deadline=None)
def test_parse_structured_fuzz(kind, items):
    try:
        region = parse_region(f"{kind}:{','.join(items)}")
    except ValueError as exc:
        assert "accepted forms" in str(exc)
    else:
        assert parse_region(format_region(region)) == region


# --------------------------------------------------------------------------- select_tiles


def tile_centre_sky(w: WCS, tile: Tile) -> tuple[float, float]:
    ra, dec = sky(w, (tile.x0 + tile.x1 - 1) / 2, (tile.y0 + tile.y1 - 1) / 2)
    return float(ra), float(dec)


def test_cone_on_tile_centre_selects_that_tile(grid):
    for tile in grid:
        ra, dec = tile_centre_sky(grid.wcs, tile)
        assert select_tiles(grid, ConeRegion(ra, dec, 1e-3 * PIX_DEG)) == [tile]


def test_cone_on_a_core_corner_selects_four_tiles(grid):
    ra, dec = sky(grid.wcs, 99.5, 49.5)  # corner shared by tiles 1, 2, 5, 6
    chosen = select_tiles(grid, ConeRegion(float(ra), float(dec), 0.5 * PIX_DEG))
    assert [t.index for t in chosen] == [1, 2, 5, 6]
    # a cone just reaching across the edge x = 99.5 from inside tile 5
    ra, dec = sky(grid.wcs, 99.0, 75.0)
    assert [t.index for t in select_tiles(grid, ConeRegion(ra, dec, 0.49 * PIX_DEG))] == [5]
    assert [t.index for t in select_tiles(grid, ConeRegion(ra, dec, 0.51 * PIX_DEG))] == [5, 6]


def test_cone_covering_everything_and_off_the_edge(grid):
    assert len(select_tiles(grid, ConeRegion(150.1, 2.2, 1.0))) == 16
    # centre beyond the mosaic, reaching 1 pixel into the bottom-left core only
    ra, dec = sky(grid.wcs, -10.0, -10.0)
    radius = float(sep_deg(ra, dec, *sky(grid.wcs, -0.5, -0.5))) * 1.001
    assert [t.index for t in select_tiles(grid, ConeRegion(ra, dec, radius))] == [0]


def brute_force(w: WCS, grid: TileGrid, inside) -> tuple[set[int], np.ndarray]:
    """Tiles with a half-pixel lattice point (pixel centres, edges, corners) in the region."""
    ny, nx = grid.shape
    ys, xs = np.meshgrid(np.arange(-0.5, ny, 0.5), np.arange(-0.5, nx, 0.5), indexing="ij")
    ra, dec = sky(w, xs, ys)
    hit = inside(ra, dec)
    found = set()
    for t in grid:
        core = (xs >= t.x0 - 0.5) & (xs <= t.x1 - 0.5) & (ys >= t.y0 - 0.5) & (ys <= t.y1 - 0.5)
        if np.any(hit & core):
            found.add(t.index)
    return found, (xs, ys, ra, dec)


def check_against_brute(grid, region, inside, inside_grown):
    found, _ = brute_force(grid.wcs, grid, inside)
    try:
        chosen = {t.index for t in select_tiles(grid, region)}
    except ValueError as exc:
        assert "does not meet the mosaic footprint" in str(exc)
        chosen = set()
    assert found <= chosen, (region, found, chosen)
    extra = chosen - found
    if extra:  # only close calls: the region grown by a pixel reaches the lattice
        grown, _ = brute_force(grid.wcs, grid, inside_grown)
        assert extra <= grown, (region, extra)
    return found == chosen


@pytest.mark.parametrize("which", ["tan", "sip"])
def test_cones_against_brute_force(which):
    w = tan_wcs(sip=which == "sip")
    grid = make_tile_grid((200, 200), tile_size=50, halo=4, wcs=w)
    rng = np.random.default_rng(11)
    agree = 0
    for _ in range(25):
        ra, dec = sky(w, rng.uniform(-60, 260), rng.uniform(-60, 260))
        r = rng.uniform(0.3, 80) * PIX_DEG
        region = ConeRegion(float(ra), float(dec), r)
        agree += check_against_brute(
            grid,
            region,
            lambda a, d, ra=ra, dec=dec, r=r: sep_deg(ra, dec, a, d) <= r,
            lambda a, d, ra=ra, dec=dec, r=r: sep_deg(ra, dec, a, d) <= r + PIX_DEG,
        )
    assert agree >= 23


@pytest.mark.parametrize("which", ["tan", "sip"])
def test_boxes_against_brute_force(which):
    w = tan_wcs(sip=which == "sip")
    grid = make_tile_grid((200, 200), tile_size=50, halo=4, wcs=w)
    rng = np.random.default_rng(12)
    agree = 0
    for _ in range(25):
        ra0, dec0 = sky(w, rng.uniform(-60, 260), rng.uniform(-60, 260))
        half_ra, half_dec = rng.uniform(0.2, 60, 2) * PIX_DEG
        region = BoxRegion(
            float(ra0 - half_ra),
            float(ra0 + half_ra),
            float(dec0 - half_dec),
            float(dec0 + half_dec),
        )
        grown = BoxRegion(
            region.ra_min - PIX_DEG, region.ra_max + PIX_DEG,
            region.dec_min - PIX_DEG, region.dec_max + PIX_DEG,
        )  # fmt: skip
        agree += check_against_brute(grid, region, region.contains, grown.contains)
    assert agree >= 23


def test_thin_box_crossing_a_core_is_found(grid):
    # a box 0.2 pixel wide in RA, running through tiles 1, 5, 9, 13 between pixel corners
    ra, _ = sky(grid.wcs, 75.0, 0.0)
    _, dec_lo = sky(grid.wcs, 75.0, 10.0)
    _, dec_hi = sky(grid.wcs, 75.0, 190.0)
    region = BoxRegion(float(ra) - 0.1 * PIX_DEG, float(ra) + 0.1 * PIX_DEG, dec_lo, dec_hi)
    assert [t.index for t in select_tiles(grid, region)] == [1, 5, 9, 13]
    # a box inside a single core, touching no pixel corner
    ra, dec = sky(grid.wcs, 120.0, 130.0)
    tiny = BoxRegion(
        ra - 0.1 * PIX_DEG, ra + 0.1 * PIX_DEG, dec - 0.1 * PIX_DEG, dec + 0.1 * PIX_DEG
    )
    assert [t.index for t in select_tiles(grid, tiny)] == [10]


def test_ra_wraparound_box():
    # 2 x 2 deg mosaic centred at RA 0.5 deg: it spans RA 359.5 .. 1.5
    w = tan_wcs(ra=0.5, dec=0.0, scale_deg=0.01)
    grid = make_tile_grid((200, 200), tile_size=50, halo=0, wcs=w)
    ra_min, ra_max, dec_min, dec_max = footprint_bounds(grid)
    assert ra_min == pytest.approx(359.5, abs=1e-3) and ra_max == pytest.approx(1.5, abs=1e-3)
    assert dec_min == pytest.approx(-1.0, abs=1e-3) and dec_max == pytest.approx(1.0, abs=1e-3)
    for region in (
        BoxRegion(359.8, 0.2, -0.3, 0.3),
        BoxRegion(359.0, 359.7, -2, 2),
        BoxRegion(1.2, 359.9, -0.1, 0.1),  # wraps the long way round
        BoxRegion(0.0, 360.0, 0.95, 0.99),
    ):
        grown = BoxRegion(
            (region.ra_min - 0.01) % 360, (region.ra_max + 0.01) % 360,
            region.dec_min - 0.01, region.dec_max + 0.01,
        )  # fmt: skip
        assert check_against_brute(grid, region, region.contains, grown.contains)
    chosen = select_tiles(grid, BoxRegion(359.8, 0.2, -0.3, 0.3))
    # RA 0 is at x = 149.5, the edge between columns 2 and 3
    assert {t.col for t in chosen} == {2, 3} and {t.row for t in chosen} == {1, 2}


def test_region_off_the_footprint(grid):
    with pytest.raises(ValueError) as info:
        select_tiles(grid, parse_region("cone:10,10,1"))
    message = str(info.value)
    assert "does not meet the mosaic footprint (RA 150.0972" in message
    assert "Dec 2.1972" in message and "check the coordinates" in message
    with pytest.raises(ValueError, match="does not meet the mosaic footprint"):
        select_tiles(grid, BoxRegion(150.2, 150.3, 2.1, 2.3))
    # just outside the mosaic edge (x = -0.5 lies 1 pixel away)
    ra, dec = sky(grid.wcs, -1.5, 100.0)
    with pytest.raises(ValueError, match="does not meet"):
        select_tiles(grid, ConeRegion(ra, dec, 0.99 * PIX_DEG))
    assert [t.index for t in select_tiles(grid, ConeRegion(ra, dec, 1.01 * PIX_DEG))] == [8]


def test_region_contains():
    cone = ConeRegion(359.9, 10.0, 1.0)
    ra = np.array([359.9, 0.5, 1.1, 359.9])
    dec = np.array([10.0, 10.0, 10.0, 11.01])
    np.testing.assert_array_equal(cone.contains(ra, dec), [True, True, False, False])
    box = BoxRegion(359.0, 1.0, -1.0, 1.0)
    np.testing.assert_array_equal(
        box.contains([359.5, 0.5, 180.0, 0.5], [0.0, 1.0, 0.0, 1.5]), [True, True, False, False]
    )
    assert BoxRegion(0.0, 10.0, 80.0, 90.0).contains(200.0, 90.0)  # every RA at the pole


def test_select_tile_list(grid):
    chosen = select_tiles(grid, parse_region("tiles:15,0,3,3"))
    assert [t.index for t in chosen] == [0, 3, 15]
    with pytest.raises(ValueError, match=r"tile id 16 is not in the grid .*valid ids are 0..15"):
        select_tiles(grid, parse_region("tiles:1,16"))


def test_select_needs_wcs():
    grid = make_tile_grid((100, 100), tile_size=50, halo=0)
    with pytest.raises(ValueError, match="needs the mosaic WCS"):
        select_tiles(grid, ConeRegion(1, 2, 3))
    assert len(select_tiles(grid, TileListRegion((0, 1)))) == 2
    with pytest.raises(TypeError, match="region must be"):
        select_tiles(grid, "cone:1,2,3")


def test_footprint_bounds(grid):
    ra_min, ra_max, dec_min, dec_max = footprint_bounds(grid)
    half = 100 * PIX_DEG
    assert ra_min == pytest.approx(150.1 - half / np.cos(np.radians(2.2)), abs=1e-6)
    assert ra_max == pytest.approx(150.1 + half / np.cos(np.radians(2.2)), abs=1e-6)
    assert dec_min == pytest.approx(2.2 - half, abs=1e-6)
    assert dec_max == pytest.approx(2.2 + half, abs=1e-6)
    polar = make_tile_grid(
        (100, 100), tile_size=50, halo=0, wcs=tan_wcs((100, 100), 10.0, 89.99, 0.001)
    )
    assert footprint_bounds(polar)[:2] == (0.0, 360.0) and footprint_bounds(polar)[3] == 90.0
    chosen = select_tiles(polar, BoxRegion(200, 210, 89.999, 90))
    assert [t.index for t in chosen] == [2, 3]  # the pole lies on the edge x = 49.5 of row 1
