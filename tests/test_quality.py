import numpy as np
import pytest

from survey_seg.masks import MaskBit
from survey_seg.quality import (
    NETWORK_ARTEFACT_BITS,
    artefact_planes,
    flagged_fraction,
    minor_axis_limit_for_psf,
    tile_verdict,
    with_pixel_noise_artefacts,
)


def test_artefact_planes_follow_probabilities_saturation_and_validity():
    probability = np.zeros((5, 4, 4), np.float32)
    probability[0, 0, 0] = 0.9  # CR
    probability[1, 1, 1] = 0.4  # STREAK below threshold
    probability[2, 3, 3] = 0.7  # GHOST, but no data there
    valid = np.ones((4, 4), bool)
    valid[3, 3] = False
    image = np.zeros((4, 4))
    image[2, 2] = 99.0
    planes = artefact_planes(probability, valid, image, 100.0, threshold=0.5)
    assert planes[0, 0] == MaskBit.CR
    assert planes[1, 1] == 0
    assert planes[2, 2] == MaskBit.SAT
    assert planes[3, 3] == MaskBit.NO_DATA
    assert [b.name for b in NETWORK_ARTEFACT_BITS] == ["CR", "STREAK", "GHOST", "BAD", "SAT"]


def test_network_saturation_needs_the_saturation_level_nearby_when_it_is_known():
    probability = np.zeros((5, 6, 6), np.float32)
    probability[4, 1, 1] = probability[4, 4, 4] = 0.9  # SAT said at two bright cores
    image = np.zeros((6, 6))
    image[1, 1], image[4, 5] = 2.0, 60.0  # 2 % and 60 % of the level
    valid = np.ones((6, 6), bool)
    planes = artefact_planes(probability, valid, image, 100.0, threshold=0.5)
    assert planes[1, 1] == 0 and planes[4, 4] == MaskBit.SAT  # a neighbour near the level
    unknown = artefact_planes(probability, valid, image, None, threshold=0.5)
    assert unknown[1, 1] == unknown[4, 4] == MaskBit.SAT  # no level: the network decides


def test_tile_verdict():
    planes = np.zeros((10, 10), np.uint32)
    assert tile_verdict(planes, inspect_fraction=0.02, reject_fraction=0.25) == "accept"
    planes[0, :5] = MaskBit.CR
    assert tile_verdict(planes, inspect_fraction=0.02, reject_fraction=0.25) == "inspect"
    planes[:3] = MaskBit.NO_DATA
    assert tile_verdict(planes, inspect_fraction=0.02, reject_fraction=0.25) == "reject"


def test_verdict_counts_artefacts_and_missing_data_together():
    planes = np.zeros((100, 100), np.uint32)
    planes[0, :] = MaskBit.CR  # 1 % artefact
    planes[1, :] = MaskBit.NO_DATA  # and 1 % without data: 2 % unusable
    planes[2, :50] = MaskBit.STREAK | MaskBit.CR  # 0.5 % more, counted once
    assert flagged_fraction(planes) == pytest.approx(0.025)
    assert tile_verdict(planes, inspect_fraction=0.02, reject_fraction=0.25) == "inspect"


def test_artefact_thresholds_per_channel():
    probability = np.full((5, 2, 2), 0.6, np.float32)
    planes = artefact_planes(
        probability, np.ones((2, 2), bool), np.zeros((2, 2)), None,
        threshold=[0.5, 0.9, 0.9, 0.9, 0.9],
    )  # fmt: skip
    assert (planes == MaskBit.CR).all()


def test_minor_axis_limit_scales_as_a_stars_width():
    assert minor_axis_limit_for_psf(0.72, None, 1.8) == 0.72
    assert minor_axis_limit_for_psf(0.72, 1.8, 1.8) == pytest.approx(0.72)
    # far above the pixel, a star's RMS width is the PSF's sigma: the limit scales with it
    assert minor_axis_limit_for_psf(0.72, 20.0, 10.0) == pytest.approx(1.44, rel=0.01)
    # far below, it is the pixel's (1/sqrt(12)): the limit stops shrinking
    narrow = minor_axis_limit_for_psf(0.72, 0.2, 1.8)
    assert narrow == pytest.approx(minor_axis_limit_for_psf(0.72, 0.1, 1.8), rel=0.05)
    assert 0.25 < narrow < 0.72
    with pytest.raises(ValueError, match="PSF FWHM in pixels"):
        minor_axis_limit_for_psf(0.72, -1.0, 1.8)


def test_cosmic_ray_contrast_limit_stays_above_an_undersampled_stars():
    from survey_seg.quality import cosmic_ray_contrast_for_psf

    assert cosmic_ray_contrast_for_psf(2.5, None) == 2.5
    assert cosmic_ray_contrast_for_psf(2.5, 1.8) == 2.5  # a well-sampled star: about 1.1
    limits = [cosmic_ray_contrast_for_psf(2.5, fwhm) for fwhm in (1.3, 1.0, 0.7, 0.5)]
    assert limits == sorted(limits) and limits[0] > 2.5 and limits[-1] > 100.0


def test_undersampled_stars_are_no_cosmic_rays_wherever_they_fall_and_hits_are():
    """Beside the core of an undersampled star the fine structure is near zero, so a
    wing pixel can pass the contrast test that the core fails; and a star a little
    off a pixel centre, or on a corner, passes it with its core. A region is judged
    by its brightest pixel, and a star gives that pixel's neighbours light that a
    cosmic ray does not."""
    from scipy import special

    from survey_seg.quality import (
        cosmic_ray_contrast_for_psf,
        cosmic_ray_pixels,
        star_neighbour_ratio,
    )

    shape = (31, 31)
    rng = np.random.default_rng(0)
    sigma, usable = np.ones(shape), np.ones(shape, bool)

    def star(fwhm, y, x, flux):  # pixel-integrated Gaussian
        def profile(centre, n):
            edges = (np.arange(n + 1) - 0.5 - centre) / (fwhm / 2.3548 * np.sqrt(2.0))
            return 0.5 * np.diff(special.erf(edges))

        return flux * np.outer(profile(y, shape[0]), profile(x, shape[1]))

    contrast_only = 0
    for fwhm in (0.6, 0.75, 1.0, 1.4):
        limits = {
            "significance": 5.0,
            "contrast": 2.5,
            "fine_contrast": cosmic_ray_contrast_for_psf(2.5, fwhm),
        }
        ratio = star_neighbour_ratio(fwhm)
        for dy in np.linspace(0.0, 0.5, 6):
            for dx in np.linspace(0.0, 0.5, 6):
                for flux in (300.0, 1000.0, 5000.0, 30000.0):
                    image = star(fwhm, 15 + dy, 15 + dx, flux) + rng.normal(0.0, 1.0, shape)
                    near = np.s_[11:20, 11:20]  # the star (elsewhere: noise spikes)
                    contrast_only += int(
                        cosmic_ray_pixels(image, sigma, usable, **limits)[near].any()
                    )
                    flagged = cosmic_ray_pixels(
                        image, sigma, usable, **limits, min_neighbour_ratio=ratio
                    )
                    assert not flagged[near].any(), (fwhm, dy, dx, flux)
        hit = star(fwhm, 10.3, 10.2, 1000.0) + rng.normal(0.0, 1.0, shape)
        hit[24, 20] += 300.0  # a cosmic ray in the sky
        hit[25, 8:11] += 300.0  # a short track
        flagged = cosmic_ray_pixels(hit, sigma, usable, **limits, min_neighbour_ratio=ratio)
        assert flagged[24, 20] and flagged[25, 8:11].all(), fwhm
        assert not flagged[5:16, 5:16].any(), fwhm
    assert contrast_only > 100  # the contrast test alone takes many of these stars for hits


def test_trail_plane_keeps_trails_and_their_pieces_and_drops_blobs():
    from survey_seg.quality import TRAIL_MIN_LENGTH_FWHM, long_trails

    streak, cr = np.uint32(MaskBit.STREAK), np.uint32(MaskBit.CR)
    artefacts = np.zeros((100, 100), np.uint32)
    for x in range(100):  # a trail, 3 pix wide, across the window
        y = int(20 + 0.3 * x)
        artefacts[y - 1 : y + 2, x] |= streak
    artefacts[60:63, 10:18] |= streak  # a piece 8 pix long: 4.4 FWHM of 1.8
    artefacts[80:83, 50:53] |= streak | cr  # a blob on a star
    artefacts[90, 90:93] |= streak  # a short line: 3 pix
    kept = long_trails(artefacts, 1.8)
    trail = (kept & streak) != 0
    assert trail[20, 0] and trail[49, 99] and trail[61, 10:18].all()
    assert not trail[80:83, 50:53].any() and not trail[90].any()
    assert (kept[80:83, 50:53] == cr).all()  # other planes untouched
    # lengths scale with the PSF: at 3 pix FWHM the 8-pixel piece is a blob too
    assert 8 < TRAIL_MIN_LENGTH_FWHM * 3.0
    assert not ((long_trails(artefacts, 3.0) & streak) != 0)[61, 10:18].any()
    assert long_trails(kept, 1.8).tolist() == kept.tolist()  # idempotent


def test_ghost_plane_keeps_ghosts_and_drops_object_outskirts_and_lines():
    from survey_seg.quality import ghosts_off_objects

    yy, xx = np.mgrid[:120, :120]
    artefacts = np.zeros((120, 120), np.uint32)
    ghost_disk = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2  # in the sky, one small object on it
    outskirts = ((yy - 90) ** 2 + (xx - 90) ** 2 < 18**2) & ((yy - 90) ** 2 + (xx - 90) ** 2 > 8**2)
    artefacts[ghost_disk | outskirts] |= np.uint32(MaskBit.GHOST)
    artefacts[:, 110] |= np.uint32(MaskBit.GHOST | MaskBit.BAD)  # a column: not a ghost
    artefacts[5, 5] |= np.uint32(MaskBit.CR)
    objects = np.zeros((120, 120), bool)
    objects[28:33, 28:33] = True  # a faint galaxy under the ghost
    objects[(yy - 90) ** 2 + (xx - 90) ** 2 < 16**2] = True  # the galaxy whose wings fired
    kept = ghosts_off_objects(artefacts, objects)
    ghost = (kept & np.uint32(MaskBit.GHOST)) != 0
    assert ghost[ghost_disk].mean() > 0.95 and not ghost[~ghost_disk].any()
    assert ((kept & np.uint32(MaskBit.BAD)) != 0)[:, 110].all()  # other planes untouched
    assert kept[5, 5] == MaskBit.CR
    assert ghosts_off_objects(kept, objects).tolist() == kept.tolist()  # idempotent


def test_round_ghosts_keep_disks_and_rings_and_drop_a_trails_wings_and_specks():
    from survey_seg.quality import GHOST_MIN_AXIS_RATIO, round_ghosts

    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 60, xx - 60)
    ring = (r < 40) & (r > 20)
    crescent = (np.hypot(yy - 150, xx - 60) < 30) & (xx < 55)  # a disk cut by objects
    wing = (np.abs(yy - (0.5 * xx + 20)) < 6) & (xx > 110)  # beside a trail: a band
    artefacts = np.zeros((200, 200), np.uint32)
    artefacts[ring | crescent | wing] |= np.uint32(MaskBit.GHOST)
    artefacts[wing] |= np.uint32(MaskBit.STREAK)
    kept = round_ghosts(artefacts)
    ghost_bit = np.uint32(MaskBit.GHOST)
    ghost = (kept & ghost_bit) != 0
    assert ghost[ring].all() and ghost[crescent].all() and not ghost[wing].any()
    assert ((kept & np.uint32(MaskBit.STREAK)) != 0)[wing].all()  # other planes untouched
    assert round_ghosts(kept).tolist() == kept.tolist()  # idempotent
    # axis ratios: the band 0.10, the cut disk 0.45; a stricter rule drops the disk too
    assert not ((round_ghosts(artefacts, 0.6) & np.uint32(MaskBit.GHOST)) != 0)[crescent].any()
    assert 0.10 < GHOST_MIN_AXIS_RATIO < 0.45
    # a speck is round too, but no ghost: narrower than a few PSF widths
    speck = np.hypot(yy - 150, xx - 150) < 4
    artefacts[speck] |= np.uint32(MaskBit.GHOST)
    kept = (round_ghosts(artefacts, min_area=np.pi * (1.5 * 5.0) ** 2) & ghost_bit) != 0
    assert not kept[speck].any() and kept[ring].all() and kept[crescent].all()
    assert ((round_ghosts(artefacts) & ghost_bit) != 0)[speck].all()


def test_regions_off_drops_the_regions_mostly_on_the_other_plane():
    from survey_seg.quality import regions_off

    plane = np.zeros((40, 40), bool)
    plane[5, :] = True  # a trail crossing a ghost: a third of it on the ghost
    plane[20:24, 10:20] = True  # a piece that lies on the ghost
    other = np.zeros((40, 40), bool)
    other[0:30, 8:22] = True
    kept = regions_off(plane, other)
    assert kept[5].all() and not kept[20:24].any()
    assert regions_off(plane, other, max_fraction=0.2)[5].sum() == 0
    assert not regions_off(np.zeros((4, 4), bool), other[:4, :4]).any()


def test_ghost_plane_drops_the_wings_of_a_large_galaxy_beyond_its_footprint():
    """An SDSS-like spiral: the footprint holds its core, GHOST fired on its outer disk,
    mostly off the footprint; a ghost beside it, with its own faint galaxy, stays."""
    from survey_seg.quality import ghosts_off_objects

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:160, :160]
    galaxy_r = np.hypot((yy - 50) / 0.6, xx - 50)  # inclined exponential disk
    ghost_r = np.hypot(yy - 110, xx - 110)
    image = 40.0 * np.exp(-galaxy_r / 8.0) + rng.normal(0.0, 0.3, yy.shape)
    image += np.where(ghost_r < 25, 1.2 + 0.4 * (ghost_r / 25) ** 2, 0.0)  # fainter middle
    image += 20.0 * np.exp(-(np.hypot(yy - 104, xx - 116) ** 2) / 4.0)  # a galaxy on the ghost
    objects = (galaxy_r < 14) | (np.hypot(yy - 104, xx - 116) < 3)
    wings = (galaxy_r < 34) & (ghost_r >= 27)
    ghost = ghost_r < 25
    artefacts = np.zeros(yy.shape, np.uint32)
    artefacts[wings | ghost] |= np.uint32(MaskBit.GHOST)
    assert objects[wings].mean() < 0.5  # the object fraction alone keeps the wings
    assert ((ghosts_off_objects(artefacts, objects) & np.uint32(MaskBit.GHOST)) != 0)[wings].all()
    kept = (ghosts_off_objects(artefacts, objects, image) & np.uint32(MaskBit.GHOST)) != 0
    assert not kept[wings].any() and kept[ghost].mean() > 0.95
    # no object in the window: the profile has nothing to fall away from
    alone = ghosts_off_objects(artefacts, np.zeros_like(objects), image)
    assert ((alone & np.uint32(MaskBit.GHOST)) != 0)[wings | ghost].mean() > 0.95


def test_cosmic_ray_regions_on_star_cores_are_cleared_unless_sharper_than_a_star():
    from survey_seg.quality import sharp_cosmic_rays

    yy, xx = np.mgrid[:60, :60]
    sigma = 1.6 / 2.355

    def star(y, x, flux):
        return flux * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))

    flux = star(15, 15, 500.0) + star(45, 15, 500.0)
    flux[45, 16] += 2000.0  # a cosmic ray on the second star, its brightest pixel
    flux[15, 45] += 800.0  # a cosmic ray in the sky, no source there
    flux[40:41, 35:50] += 300.0  # a track
    artefacts = np.zeros(flux.shape, np.uint32)
    for y, x in ((15, 15), (45, 16), (15, 45)):
        artefacts[y - 1 : y + 2, x - 1 : x + 2] |= np.uint32(MaskBit.CR)
    artefacts[40, 35:50] |= np.uint32(MaskBit.CR)
    peaks = np.zeros(flux.shape, bool)
    peaks[15, 15] = peaks[45, 16] = peaks[40, 42] = True
    kept = (sharp_cosmic_rays(artefacts, flux, 1.6, peaks) & np.uint32(MaskBit.CR)) != 0
    assert not kept[14:17, 14:17].any()  # the star's core
    assert kept[45, 16] and kept[15, 45] and kept[40, 35:50].all()
    assert sharp_cosmic_rays(artefacts, flux, None, peaks).tolist() == artefacts.tolist()


def _gaussian_star(shape, fwhm, y, x, flux):
    """A pixel-integrated Gaussian star."""
    from scipy import special

    def profile(centre, n):
        edges = (np.arange(n + 1) - 0.5 - centre) / (fwhm / 2.3548 * np.sqrt(2.0))
        return 0.5 * np.diff(special.erf(edges))

    return flux * np.outer(profile(y, shape[0]), profile(x, shape[1]))


def test_under_a_wide_psf_the_local_median_widens_and_finds_thick_tracks_not_stars():
    """A track two pixels wide lifts its own 3 x 3 median, so LA Cosmic's 3 x 3
    window misses it; under a PSF of 5.4 pix the 5 x 5 window finds it, and still
    no star of that PSF stands out of its median."""
    from survey_seg.quality import (
        cosmic_ray_contrast_for_psf,
        cosmic_ray_median_size,
        cosmic_ray_pixels,
        star_neighbour_ratio,
    )

    assert [cosmic_ray_median_size(f) for f in (None, 1.8, 3.6, 5.4, 9.0, 12.0)] == [
        3, 3, 3, 5, 5, 5,
    ]  # fmt: skip
    fwhm, shape = 5.4, (64, 64)
    rng = np.random.default_rng(1)
    sigma, usable = np.ones(shape), np.ones(shape, bool)
    limits = {
        "significance": 5.0,
        "contrast": 2.5,
        "fine_contrast": cosmic_ray_contrast_for_psf(2.5, fwhm),
        "min_neighbour_ratio": star_neighbour_ratio(fwhm),
    }
    image = rng.normal(0.0, 1.0, shape)
    for y, x, flux in ((15.0, 15.0, 3e4), (15.3, 45.6, 3e5), (45.5, 20.2, 1e4)):
        image += _gaussian_star(shape, fwhm, y, x, flux)
    track = np.zeros(shape, bool)
    for step in range(14):  # 2 px wide, 14 long, at 30 degrees
        y, x = 40 + round(step * 0.5), 35 + round(step * 0.866)
        track[y : y + 2, x] = True
    image[track] += 80.0
    narrow = cosmic_ray_pixels(image, sigma, usable, **limits)
    wide = cosmic_ray_pixels(
        image, sigma, usable, **limits, median_size=cosmic_ray_median_size(fwhm)
    )
    assert np.count_nonzero(narrow & track) < 0.5 * track.sum()
    assert np.count_nonzero(wide & track) >= 0.9 * track.sum()
    assert not (wide & ~_near(track)).any()  # no star's pixel


def _near(mask):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))


def test_a_long_run_down_one_column_is_a_hot_column_not_a_track():
    from survey_seg.quality import BAD_COLUMN_MIN_RUN, column_runs

    sharp = np.zeros((100, 60), bool)
    sharp[10:90, 5] = True  # a hot column segment
    sharp[20 : 20 + BAD_COLUMN_MIN_RUN - 1, 15] = True  # a vertical track one short
    diagonal = np.arange(40)
    sharp[50 + diagonal // 4, 20 + diagonal] = True  # a long shallow track
    runs = column_runs(sharp)
    assert runs[10:90, 5].all()
    assert np.count_nonzero(runs) == 80
    with pytest.raises(ValueError, match="min_length"):
        column_runs(sharp, 0)


def test_a_bad_column_is_whole_across_an_object_that_outshines_it():
    from survey_seg.quality import BAD_COLUMN_MIN_RUN, column_gaps

    run = BAD_COLUMN_MIN_RUN
    probability = np.zeros((5, 3 * run + 12, 8), np.float32)
    probability[3, :, 2] = 0.9  # a bad column...
    probability[3, run + 1 : 2 * run + 11, 2] = 0.1  # ...lost under a galaxy
    probability[3, : run - 1, 5] = probability[3, run + 5 :, 5] = 0.9  # one run one short
    probability[3, 3:6, 6] = probability[3, 20:23, 6] = 0.9  # hot pixels
    valid = np.ones(probability.shape[1:], bool)
    valid[run + 5, 2] = False
    planes = artefact_planes(probability, valid, np.zeros(valid.shape), None, threshold=0.5)
    bad = (planes & MaskBit.BAD) != 0
    assert bad[:, 2].sum() == bad.shape[0] - 1 and planes[run + 5, 2] == MaskBit.NO_DATA
    assert not bad[run - 1 : run + 5, 5].any()  # two runs, but not two long ones
    assert not bad[6:20, 6].any()
    assert np.array_equal(column_gaps(np.zeros((5, 5), bool)), np.zeros((5, 5), bool))


def test_binned_trail_blocks_shrink_to_the_trail_pixels():
    """A binned screening flags a trail in 3 x 3 blocks: the blocks keep its lit pixels."""
    from survey_seg.quality import lit_within

    rng = np.random.default_rng(2)
    shape = (60, 60)
    sigma = np.ones(shape)
    image = rng.normal(0.0, 1.0, shape)
    image[20:25, :] += 3.0  # a trail 5 px wide, 3 sigma high
    trail_blocks = np.zeros(shape, bool)
    trail_blocks[18:27, :] = True  # its binned blocks, 2 px margin each side
    trail_blocks[3:6, 3:6] = True  # a block on plain sky
    trail = lit_within(trail_blocks, image, sigma)
    assert trail[20:25].mean() > 0.97
    assert trail[18].mean() < 0.1 and trail[26].mean() < 0.1
    assert trail[3:6, 3:6].all()  # nothing to cut it down to


def test_sharp_artefacts_in_correlated_noise_come_from_the_pass_in_one_pixels_noise():
    """GHOST is the second pass's where its region is wide, BAD where it is a column."""
    channel = {bit: NETWORK_ARTEFACT_BITS.index(bit) for bit in NETWORK_ARTEFACT_BITS}
    scaled = np.zeros((5, 30, 30), np.float32)
    pixel = np.zeros((5, 30, 30), np.float32)
    pixel[channel[MaskBit.CR], 3, 3] = 0.9
    pixel[channel[MaskBit.GHOST], 5:11, 5:11] = 0.8  # a ghost of 36 pixels
    pixel[channel[MaskBit.GHOST], 20:23, 2:5] = 0.8  # a blob of correlated noise
    scaled[channel[MaskBit.GHOST], 6, 6] = 0.9
    pixel[channel[MaskBit.STREAK], 12, :] = 0.9  # a streak of correlated noise
    pixel[channel[MaskBit.BAD], 2:10, 15] = 0.7  # a column
    pixel[channel[MaskBit.BAD], 15, 4] = 0.9  # a speck of correlated noise
    pixel[channel[MaskBit.BAD], 15:17, 8] = 0.9  # a vertical pair of it
    scaled[channel[MaskBit.BAD], 17, 17] = 0.6  # a hot pixel the first pass saw
    scaled[channel[MaskBit.BAD], 5, 15] = 0.4
    scaled[channel[MaskBit.STREAK], 1, :] = 0.5

    combined = with_pixel_noise_artefacts(scaled, pixel, 0.3, min_ghost_area=30)

    for bit in (MaskBit.CR, MaskBit.STREAK, MaskBit.SAT):  # the first pass's
        np.testing.assert_array_equal(combined[channel[bit]], scaled[channel[bit]])
    ghost = combined[channel[MaskBit.GHOST]]
    np.testing.assert_array_equal(ghost[5:11, 5:11], np.float32(0.8))  # the second pass's
    assert ghost[20:23, 2:5].max() == 0.0  # the blob is not taken
    assert np.count_nonzero(ghost) == 36
    bad = combined[channel[MaskBit.BAD]]
    assert (bad[2:10, 15] == 0.7).all()  # the column, the larger of the two passes
    assert bad[15, 4] == 0.0 and bad[15:17, 8].max() == 0.0  # nor are the specks
    assert bad[17, 17] == 0.6  # the first pass's hot pixel stays
    assert np.count_nonzero(bad > 0.3) == 9
    # the inputs are left as they were
    assert scaled[channel[MaskBit.GHOST]].max() == np.float32(0.9)
