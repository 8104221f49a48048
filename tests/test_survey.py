import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from survey_seg.errors import InputError
from survey_seg.survey import MosaicFootprint, neighbours, primary_mask, primary_mosaic

RA0, DEC0 = 150.0, 2.0


def _wcs(ra, dec, n, scale_arcsec, rotation_deg=0.0):
    scale = scale_arcsec / 3600.0
    theta = math.radians(rotation_deg)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.cd = [
        [-scale * math.cos(theta), -scale * math.sin(theta)],
        [-scale * math.sin(theta), scale * math.cos(theta)],
    ]
    wcs.pixel_shape = (n, n)
    wcs.wcs.set()
    return wcs


@pytest.fixture(scope="module")
def four():
    """Four footprints of ~100 arcsec meeting at (RA0, DEC0): one turned 30 deg, one coarser."""
    step = 35.0 / 3600.0
    cos = math.cos(math.radians(DEC0))
    specs = [
        ("north-east", +1, +1, 200, 0.5, 0.0),
        ("north-west", -1, +1, 200, 0.5, 0.0),
        ("south-east", +1, -1, 200, 0.5, 30.0),
        ("south-west", -1, -1, 143, 0.7, 0.0),
    ]
    return [
        MosaicFootprint(name, _wcs(RA0 + sx * step / cos, DEC0 + sy * step, n, scale, rot), (n, n))
        for name, sx, sy, n, scale, rot in specs
    ]


def _inside(footprint, ra, dec):
    """The footprint test done independently, with astropy's high-level API."""
    x, y = footprint.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
    ny, nx = footprint.shape
    return (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)


def _grid(half_arcsec, n):
    offsets = np.linspace(-half_arcsec, half_arcsec, n) / 3600.0
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (RA0 + dx / math.cos(math.radians(DEC0))).ravel(), (DEC0 + dy).ravel()


def test_every_position_of_the_union_has_exactly_one_primary_mosaic(four):
    ra, dec = _grid(140.0, 241)  # beyond the union on every side
    inside = np.array([_inside(footprint, ra, dec) for footprint in four])
    union = inside.any(axis=0)
    assert (inside.sum(axis=0) == 4).sum() > 100  # the corner all four share
    for a in range(4):
        for b in range(a + 1, 4):
            assert (inside[a] & inside[b]).any()  # overlapping pairwise
    assert (~union).sum() > 1000
    claims = np.array([primary_mask(ra, dec, footprint, four) for footprint in four])
    np.testing.assert_array_equal(claims.sum(axis=0), union.astype(int))
    # each mosaic claims only positions it contains, and some it does not share
    assert not (claims & ~inside).any()
    assert all((claim & (inside.sum(axis=0) == 1)).any() for claim in claims)


def test_near_the_common_corner_the_nearest_centre_wins(four):
    ra, dec = _grid(20.0, 81)  # the four-mosaic corner, densely
    names = primary_mosaic(ra, dec, four)
    assert set(names) == {footprint.name for footprint in four}
    points = SkyCoord(ra, dec, unit="deg")
    distance = np.array(
        [
            np.where(
                _inside(footprint, ra, dec),
                points.separation(SkyCoord(*footprint.center, unit="deg")).deg,
                np.inf,
            )
            for footprint in four
        ]
    )
    expected = np.array([footprint.name for footprint in four])[np.argmin(distance, axis=0)]
    np.testing.assert_array_equal(names, expected)


def test_footprint_contains_its_pixels_and_not_beyond_its_edges(four):
    rotated = four[2]
    n = rotated.shape[0]
    x = np.array([-0.49, n - 0.51, 100.0, -0.51, n - 0.49, 100.0])
    y = np.array([100.0, 100.0, -0.49, 100.0, 100.0, n - 0.49])
    ra, dec = rotated.wcs.pixel_to_world_values(x, y)
    np.testing.assert_array_equal(rotated.contains(ra, dec), [1, 1, 1, 0, 0, 0])
    ra_c, dec_c = rotated.center
    assert rotated.contains(ra_c, dec_c)
    assert not rotated.contains(ra_c + 180.0, -dec_c)  # the far side of the sky
    assert rotated.radius == pytest.approx(n / 2 * math.sqrt(2) * 0.5 / 3600.0, rel=1e-3)


def test_ties_go_to_the_name_that_sorts_first(four):
    twin = MosaicFootprint("aaa-twin", four[0].wcs, four[0].shape)
    ra, dec = _grid(100.0, 61)
    names = primary_mosaic(ra, dec, [*four, twin])
    assert not (names == four[0].name).any()
    np.testing.assert_array_equal(
        names == "aaa-twin", primary_mosaic(ra, dec, four) == "north-east"
    )


def test_a_distant_mosaic_is_not_a_neighbour_and_changes_nothing(four):
    far = MosaicFootprint("far", _wcs(RA0 + 1.0, DEC0, 200, 0.5), (200, 200))
    assert [f.name for f in neighbours(four[0], [*four, far])] == sorted(f.name for f in four)
    ra, dec = _grid(140.0, 61)
    np.testing.assert_array_equal(
        primary_mask(ra, dec, four[1], [*four, far]), primary_mask(ra, dec, four[1], four)
    )


def test_a_footprint_record_round_trips(four):
    again = MosaicFootprint.from_record(four[2].to_record())
    ra, dec = _grid(140.0, 41)
    np.testing.assert_array_equal(again.contains(ra, dec), four[2].contains(ra, dec))
    assert again.center == pytest.approx(four[2].center, abs=1e-9)
    # a record of a record is the record: footprints read back agree to the bit
    assert MosaicFootprint.from_record(again.to_record()).to_record() == again.to_record()


def test_bad_footprints_are_refused_with_the_fix(four):
    with pytest.raises(InputError, match="unique"):
        primary_mosaic(RA0, DEC0, [four[0], MosaicFootprint("north-east", four[1].wcs, (200, 200))])
    with pytest.raises(InputError, match="at least one"):
        primary_mosaic(RA0, DEC0, [])
    with pytest.raises(InputError, match="non-empty name"):
        MosaicFootprint("", four[0].wcs, (200, 200))
    with pytest.raises(InputError, match="shape"):
        MosaicFootprint("x", four[0].wcs, (200,))
    with pytest.raises(InputError, match="ny x nx"):
        MosaicFootprint("x", four[0].wcs, (100, 200))
    with pytest.raises(InputError, match="not among"):
        primary_mask(RA0, DEC0, four[0], four[1:])
