import numpy as np
import pytest

from survey_seg.blends import (
    absorb_enclosed,
    border_boundaries,
    deblended_centres,
    find_centres,
    join_central_knots,
    join_clumpy_pieces,
    join_symmetric_pieces,
    merge_by_centre_votes,
    merge_unbounded,
    merge_unseparated,
    split_asymmetric_companions,
    split_instances,
    symmetry_centre,
)


def _gauss(shape, y0, x0, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * sigma**2))


def test_find_centres_respects_threshold_distance_and_mask():
    heat = 0.9 * _gauss((40, 40), 10, 10, 1) + 0.6 * _gauss((40, 40), 10, 14, 1)
    heat += 0.2 * _gauss((40, 40), 30, 30, 1)
    inside = np.ones(heat.shape, bool)
    peaks = find_centres(heat, inside, threshold=0.3, min_distance=2)
    assert sorted(zip(*np.nonzero(peaks), strict=True)) == [(10, 10), (10, 14)]
    assert find_centres(heat, inside, threshold=0.3, min_distance=5).sum() == 1
    inside[:, :12] = False
    assert list(
        zip(*np.nonzero(find_centres(heat, inside, threshold=0.3, min_distance=2)), strict=True)
    ) == [(10, 14)]


def test_flat_topped_peak_gives_one_centre():
    heat = np.zeros((10, 10))
    heat[4:6, 4:6] = 0.8
    assert find_centres(heat, np.ones_like(heat, bool), threshold=0.5, min_distance=1).sum() == 1


def test_two_centres_in_one_footprint_make_a_blend():
    shape = (50, 50)
    light = _gauss(shape, 25, 20, 3) + _gauss(shape, 25, 29, 3)
    objects = (light > 0.1).astype(float)
    overlap = ((_gauss(shape, 25, 20, 3) > 0.1) & (_gauss(shape, 25, 29, 3) > 0.1)).astype(float)
    centres = np.zeros(shape, bool)
    centres[25, 20] = centres[25, 29] = True
    sources, footprints, blend = split_instances(
        objects, overlap, centres, light, object_threshold=0.5
    )
    assert sources.max() == 2 and footprints.max() == 1
    assert sources[25, 18] != sources[25, 31]
    np.testing.assert_array_equal(blend, [1.0, 1.0])


def test_footprint_without_centre_gets_one_and_tiny_ones_are_dropped():
    shape = (30, 30)
    objects = np.zeros(shape)
    objects[5:12, 5:12] = 1.0  # 49 px, no centre
    objects[20, 20] = 1.0  # 1 px: noise
    light = _gauss(shape, 8, 9, 2)
    sources, footprints, blend = split_instances(
        objects, np.zeros(shape), np.zeros(shape, bool), light, object_threshold=0.5
    )
    assert sources.max() == 1 and footprints.max() == 1
    assert sources[20, 20] == 0
    assert blend.tolist() == [0.0]


def test_an_island_of_a_galaxy_outskirts_joins_it_and_a_lone_one_stays():
    shape = (40, 60)
    light = _gauss(shape, 20, 15, 6)
    objects = 0.3 * (light > 0.05)  # the outskirts: under the threshold ...
    objects[light > 0.5] = 1.0  # ... but for the body
    objects[20, 24:27] = objects[19:22, 25] = 1.0  # an island where noise lifts them
    objects[30:33, 50:53] = 1.0  # an unrelated object, no centre peak
    centres = np.zeros(shape, bool)
    centres[20, 15] = True
    args = (objects, np.zeros(shape), centres, light)
    sources, _, _ = split_instances(*args, object_threshold=0.5)
    assert sources.max() == 3 and sources[20, 25] not in (0, sources[20, 15])
    sources, footprints, blend = split_instances(
        *args, object_threshold=0.5, fragment_threshold=0.2
    )
    assert sources.max() == 2 and blend.size == 2
    assert sources[20, 25] == sources[20, 26] == sources[20, 15]
    assert sources[20, 23] == 0  # the connecting outskirts stay sky
    assert sources[31, 51] not in (0, sources[20, 15])
    assert footprints[20, 25] == footprints[20, 15] != footprints[31, 51] > 0
    centres[20, 15] = False  # the body without a centre: the highest of the two is the object
    sources, _, _ = split_instances(*args, object_threshold=0.5, fragment_threshold=0.2)
    assert sources.max() == 2 and sources[20, 25] == sources[20, 15] > 0


def test_nothing_detected():
    sources, footprints, blend = split_instances(
        np.zeros((8, 8)),
        np.zeros((8, 8)),
        np.zeros((8, 8), bool),
        np.zeros((8, 8)),
        object_threshold=0.5,
    )
    assert sources.max() == 0 and footprints.max() == 0 and blend.size == 0


def test_a_sliver_child_goes_back_to_its_neighbour():
    shape = (12, 12)
    objects = np.zeros(shape)
    objects[2:9, 2:9] = 1.0
    objects[9, 9] = 1.0  # joined to the block through a corner only
    light = _gauss(shape, 5, 5, 3)
    light[9, 9] = 0.5  # a local maximum, seeded as a centre: a sliver of one or two pixels
    centres = np.zeros(shape, bool)
    centres[5, 5] = centres[9, 9] = True
    sources, footprints, _ = split_instances(
        objects, np.zeros(shape), centres, light, object_threshold=0.5
    )
    assert footprints.max() == 1
    assert sources.max() == 1 and sources[9, 9] == sources[5, 5] == 1


def test_deblended_centres_are_sub_pixel_and_only_for_blends():
    shape = (40, 60)
    heat = _gauss(shape, 20.3, 20.6, 1.0) + 0.8 * _gauss(shape, 19.8, 27.25, 1.0)
    heat += _gauss(shape, 20, 50.4, 1.0)
    sources = np.zeros(shape, np.int32)
    sources[14:27, 14:24] = 1  # two sources sharing footprint 1
    sources[14:27, 24:34] = 2
    sources[14:27, 44:57] = 3  # alone in footprint 2
    footprints = np.where(sources == 3, 2, np.where(sources > 0, 1, 0))
    centres = deblended_centres(heat, sources, footprints)
    assert centres.shape == (3, 2)
    truth = np.array([[20.3, 20.6], [19.8, 27.25]])
    error = np.abs(centres[:2] - truth)
    assert error.max() < 0.2
    assert (error < np.abs(np.rint(truth) - truth)).all()  # closer than the peak pixel
    assert np.isnan(centres[2]).all()


def test_deblended_centres_of_nothing_and_at_the_window_edge():
    assert deblended_centres(
        np.zeros((8, 8)), np.zeros((8, 8), int), np.zeros((8, 8), int)
    ).shape == (0, 2)
    heat = _gauss((10, 10), 0, 0.3, 1.0) + _gauss((10, 10), 0, 5, 1.0)
    sources = np.zeros((10, 10), int)
    sources[:3, :3], sources[:3, 3:8] = 1, 2
    centres = deblended_centres(heat, sources, (sources > 0).astype(int))
    assert np.isfinite(centres).all() and abs(centres[0, 1] - 0.3) < 0.2


def test_a_deblended_centre_is_its_sources_peak_not_the_heatmaps_maximum_on_its_border():
    shape = (30, 40)
    heat = 0.9 * _gauss(shape, 15, 20, 2.0) + 0.25 * _gauss(shape, 15, 26, 1.0)
    sources = np.zeros(shape, np.int32)
    sources[8:23, 12:23], sources[8:23, 23:32] = 1, 2  # a bright star, a faint one
    footprints = (sources > 0).astype(int)
    on_border = deblended_centres(heat, sources, footprints)
    assert abs(on_border[1, 1] - 23) < 0.5  # on the bright star's slope
    peaks = find_centres(heat, sources > 0, threshold=0.2, min_distance=1)
    centres = deblended_centres(heat, sources, footprints, peaks)
    assert abs(centres[1, 1] - 26) < 0.3 and abs(centres[0, 1] - 20) < 0.3
    no_peak = deblended_centres(heat, sources, footprints, peaks & (sources == 1))
    assert no_peak[1, 1] == on_border[1, 1]  # a source without a peak: the maximum


def test_a_galaxy_joined_with_its_knot_is_centred_on_its_nucleus():
    """The centre head marks a bright knot (x = 27) higher than the diffuse
    nucleus (x = 18); the clump head marks the knot, and the nucleus is the centre."""
    shape = (30, 50)
    heat = 0.5 * _gauss(shape, 15, 18, 1.5) + 0.7 * _gauss(shape, 15, 27, 1.0)
    clump = 0.6 * _gauss(shape, 15, 27, 1.5)
    sources = np.zeros(shape, np.int32)
    sources[5:25, 8:33], sources[5:25, 33:45] = 1, 2  # the galaxy, a neighbour
    heat += 0.8 * _gauss(shape, 15, 39, 1.0)
    footprints = (sources > 0).astype(int)
    peaks = find_centres(heat, sources > 0, threshold=0.3, min_distance=2)
    on_knot = deblended_centres(heat, sources, footprints, peaks)
    assert abs(on_knot[0, 1] - 27) < 0.5
    centres = deblended_centres(heat, sources, footprints, peaks, knots=clump)
    assert abs(centres[0, 1] - 18) < 0.5 and abs(centres[1, 1] - 39) < 0.5


def test_a_sure_centre_on_a_bright_stars_slope_keeps_a_source():
    shape = (40, 40)
    flux = 100 * _gauss(shape, 20, 16, 1.5) + 1.5 * _gauss(shape, 20, 20, 1.5)
    flux += 10 * _gauss(shape, 20, 25, 1.5)  # a third star beyond the faint one
    centres = np.zeros(shape, bool)
    centres[20, 16] = centres[20, 20] = centres[20, 25] = True
    args = ((flux > 0.05).astype(float), np.zeros(shape), centres, flux)
    sources, _, _ = split_instances(*args, object_threshold=0.5)
    assert sources.max() == 2  # no local maximum: flooded from its pixel, a sliver
    sure, _, _ = split_instances(*args, object_threshold=0.5, sure_centres=centres)
    assert sure.max() == 3 and len({sure[20, 16], sure[20, 20], sure[20, 25]}) == 3
    assert (sure == sure[20, 20]).sum() >= 9


def _halves(shape):
    sources = np.ones(shape, dtype=np.int32)
    sources[:, shape[1] // 2 :] = 2
    return sources, np.ones(shape, dtype=np.int32)


def test_a_galaxy_cut_in_two_merges_and_a_resolved_pair_stays_apart():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    pair = 50 * (_gauss(shape, 20, 22, 2) + _gauss(shape, 20, 38, 2))
    one = 50 * _gauss(shape, 20, 31, 5)  # its wing piece has its peak on the cut: no valley
    kept = merge_unseparated(sources, footprints, pair, min_valley_sigma=3.0)
    assert set(np.unique(kept)) == {1, 2}
    assert set(np.unique(merge_unseparated(sources, footprints, one, min_valley_sigma=3.0))) == {1}
    # a valley shallower than the noise does not separate; a small piece keeps its split
    shallow = 50 * (_gauss(shape, 20, 28.5, 2) + _gauss(shape, 20, 31.5, 2))  # one peak
    assert merge_unseparated(sources, footprints, shallow, min_valley_sigma=3.0).max() == 1
    assert (
        merge_unseparated(sources, footprints, one, min_valley_sigma=3.0, min_area=2000).max() == 2
    )
    # sources of different footprints never merge
    apart = footprints.copy()
    apart[:, 30:] = 2
    assert merge_unseparated(sources, apart, one, min_valley_sigma=3.0).max() == 2


def test_two_sources_with_sure_centres_do_not_merge_without_a_valley():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    one = 50 * _gauss(shape, 20, 31, 5)  # no valley between the halves
    for sure, count in (([False, True, True], 2), ([False, True, False], 1), (None, 1)):
        merged = merge_unseparated(sources, footprints, one, min_valley_sigma=3.0, sure=sure)
        assert merged.max() == count
    thirds = np.repeat(np.repeat(np.array([[1, 2, 3]], dtype=np.int32), 30, 0), 30, 1)
    row = 100 * _gauss((30, 90), 15, 45, 12)
    merged = merge_unseparated(  # the unsure middle joins one, which is then sure
        thirds,
        np.ones((30, 90), np.int32),
        row,
        min_valley_sigma=3.0,
        sure=[False, True, False, True],
    )
    assert merged.max() == 2


def test_merging_follows_the_shallowest_valley_first():
    shape = (30, 90)
    sources = np.repeat(np.repeat(np.array([[1, 2, 3]], dtype=np.int32), 30, 0), 30, 1)
    row = 100 * _gauss(shape, 15, 45, 12)  # one broad object cut in three
    merged = merge_unseparated(sources, np.ones(shape, np.int32), row, min_valley_sigma=3.0)
    assert merged.max() == 1


def test_a_knot_inside_its_galaxy_joins_it_and_a_companion_does_not():
    shape = (40, 40)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:35, 5:35] = 1  # the galaxy
    sources[18:22, 18:22] = 2  # a knot inside it
    sources[5:12, 28:35] = 3  # a companion in its corner, with its own edge to the sky
    light = 20 * _gauss(shape, 20, 14, 8) + 3 * _gauss(shape, 20, 20, 1)
    light += 5 * _gauss(shape, 8, 31, 2)
    kept = absorb_enclosed(sources, light, min_enclosed=0.75)
    assert kept.max() == 2
    assert kept[20, 20] == kept[10, 10] and kept[8, 31] != kept[10, 10]
    # a source brighter than the one around it is not given to it
    brighter = light + 40 * _gauss(shape, 20, 20, 1)
    assert absorb_enclosed(sources, brighter, min_enclosed=0.75).max() == 3


def test_a_relative_dip_on_a_bright_object_does_not_separate():
    """A 5-sigma dip on a bright galaxy (a dust lane) is one object; on a faint
    pair the same dip separates two."""
    shape = (30, 60)
    sources, footprints = _halves(shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    distance = np.minimum(np.hypot(yy - 15, xx - 10), np.hypot(yy - 15, xx - 49))
    for peak, merges in ((100.0, True), (20.0, False)):
        light = peak - 5.0 * np.clip(distance / 20.0, 0.0, 1.0)  # valley 5 at the cut
        plain = merge_unseparated(sources, footprints, light, min_valley_sigma=3.0)
        relative = merge_unseparated(
            sources, footprints, light, min_valley_sigma=3.0, min_valley_fraction=0.1
        )
        assert plain.max() == 2
        assert bool(relative.max() == 1) is merges


def test_a_weakly_split_source_needs_a_deep_valley_whatever_its_area():
    """A source split off by a centre peak under the threshold stays only where the
    light dips deeply between it and its neighbour: a crowded star, not a noise bump
    on a galaxy."""
    shape = (30, 60)
    sources, footprints = _halves(shape)
    star_pair = 40 * (_gauss(shape, 15, 22, 1.5) + _gauss(shape, 15, 38, 1.5))
    bump = 40 * _gauss(shape, 15, 24, 8) + 8 * _gauss(shape, 15, 38, 1.5)
    for light, stays in ((star_pair, True), (bump, False)):
        plain = merge_unseparated(sources, footprints, light, min_valley_sigma=3.0, min_area=2000)
        assert plain.max() == 2  # too small to merge by the ordinary rule
        weak = np.array([False, False, True])
        kept = merge_unseparated(
            sources,
            footprints,
            light,
            min_valley_sigma=3.0,
            min_area=2000,
            weak=weak,
            weak_valley_fraction=0.5,
        )
        assert bool(kept.max() == 2) is stays
        assert weak[2]  # the caller's flags are left alone


def _offsets_to(shape, centres_by_pixel):
    """Offsets from each pixel to the centre that ``centres_by_pixel`` gives it."""
    yy, xx = np.indices(shape)
    return np.stack([centres_by_pixel[0] - yy, centres_by_pixel[1] - xx]).astype(np.float32)


def test_pieces_whose_pixels_point_into_another_source_join_it_and_a_pair_does_not():
    shape = (30, 60)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:25, 5:15] = 1  # a large galaxy, centre (15, 14), cut in three pieces
    sources[5:25, 15:22] = 2
    sources[5:12, 22:28] = 3  # an arm, beyond the piece that holds no centre
    sources[26:29, 8:11] = 6  # a fragment of its outskirts, a footprint of its own
    sources[10:20, 35:42] = 4  # a close pair in one footprint: each points at its own
    sources[10:20, 42:49] = 5
    footprints = np.zeros_like(sources)
    footprints[np.isin(sources, (1, 2, 3))] = 1
    footprints[np.isin(sources, (4, 5))] = 2
    footprints[sources == 6] = 3
    centre_y = np.full(shape, 15.0)
    centre_x = np.select([sources == 4, sources == 5], [38.0, 45.0], 14.0)
    offsets = _offsets_to(shape, (centre_y, centre_x))
    merged, merged_footprints = merge_by_centre_votes(
        sources, footprints, offsets, min_vote_fraction=0.5
    )
    assert merged.max() == 3 and merged_footprints.max() == 2
    assert merged[6, 6] == merged[15, 18] == merged[6, 25] == merged[27, 9]
    assert merged_footprints[27, 9] == merged_footprints[6, 6]
    assert merged[15, 38] != merged[15, 45] and merged[15, 38] != merged[15, 10]


def test_a_source_joins_a_source_of_another_footprint_only_if_that_one_is_larger():
    shape = (20, 40)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:15, 2:12] = 1  # 100 pixels
    sources[5:15, 20:26] = 2  # 60 pixels, in a footprint of its own
    footprints = np.where(sources > 0, sources, 0)
    at_other = np.where(sources == 1, 10.0, 7.0)  # each says the other holds its centre
    offsets = _offsets_to(shape, (np.full(shape, 10.0), np.where(sources == 1, 23.0, at_other)))
    merged, _ = merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.5)
    assert merged.max() == 1  # the smaller one joined
    offsets = _offsets_to(shape, (np.full(shape, 10.0), np.where(sources == 1, 23.0, 23.0)))
    assert merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.5)[0].max() == 2


def test_a_source_joins_only_when_enough_of_its_pixels_agree():
    shape = (20, 20)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:15, 2:10] = 1
    sources[5:15, 10:18] = 2
    footprints = (sources > 0).astype(np.int32)
    own_x = np.where(sources == 1, 6.0, 14.0)
    offsets = _offsets_to(shape, (np.full(shape, 10.0), own_x))
    third = (sources == 2) & (np.indices(shape)[1] < 13)  # 3 of its 8 columns say "1"
    offsets[1][third] = 6.0 - np.indices(shape)[1][third]
    kept, _ = merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.5)
    assert kept.max() == 2
    joined, _ = merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.3)
    assert joined.max() == 1


def test_two_halves_pointing_at_each_other_are_one_source():
    shape = (20, 20)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:15, 2:10], sources[5:15, 10:18] = 1, 2
    footprints = (sources > 0).astype(np.int32)
    crossed_x = np.where(sources == 1, 12.0, 7.0)  # each half says the other holds its centre
    offsets = _offsets_to(shape, (np.full(shape, 10.0), crossed_x))
    merged, _ = merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.5)
    assert merged.max() == 1 and np.array_equal(merged > 0, sources > 0)


def _clumpy_galaxy_and_companion(piece_clump=0.7, piece_centre=0.25):
    """Two pieces of a clumpy galaxy (left: two knots) and a compact galaxy below them.

    Returns sources, footprints, significance, centre and clump maps.
    """
    shape = (40, 60)
    sources = np.zeros(shape, dtype=np.int32)
    sources[5:20, 5:30] = 1  # a knot and the disk around it
    sources[20:35, 5:30] = 2  # another knot and its part of the disk
    sources[20:28, 30:38] = 3  # a compact galaxy touching the second piece
    knots = ((12, 17), (27, 17))
    significance = 20 * _gauss(shape, 20, 17, 8) + 12 * _gauss(shape, 24, 34, 1.5)
    centre = 0.8 * _gauss(shape, 24, 34, 1.5)
    clump = np.zeros(shape)
    for y, x in knots:
        significance += 15 * _gauss(shape, y, x, 1.5)
        centre += piece_centre * _gauss(shape, y, x, 1.5)
        clump += piece_clump * _gauss(shape, y, x, 1.5)
    return sources, (sources > 0).astype(np.int32), significance, centre, clump


def _join(sources, footprints, significance, centre, clump):
    return join_clumpy_pieces(
        sources, footprints, significance, centre, clump, min_clump=0.4, min_clump_to_centre=1.5
    )


def test_the_pieces_of_a_clumpy_galaxy_are_one_source_and_a_galaxy_beside_them_stays():
    sources, *maps = _clumpy_galaxy_and_companion()
    joined = _join(sources, *maps)
    assert joined.max() == 2
    assert joined[12, 17] == joined[27, 17] != joined[24, 34]


def test_a_piece_is_a_knot_only_where_the_clump_head_beats_the_centre_head():
    for piece_clump, piece_centre in ((0.3, 0.1), (0.7, 0.6)):  # too faint; centre-like
        sources, *maps = _clumpy_galaxy_and_companion(piece_clump, piece_centre)
        np.testing.assert_array_equal(_join(sources, *maps), sources)


def test_a_knot_does_not_join_a_galaxy_whose_centre_the_network_sees():
    sources, footprints, significance, centre, clump = _clumpy_galaxy_and_companion()
    clump[:20] = 0.0  # the first piece is a galaxy (no knot at its brightest pixel)
    centre += 0.9 * _gauss(sources.shape, 12, 17, 1.5)
    joined = _join(sources, footprints, significance, centre, clump)
    np.testing.assert_array_equal(joined, sources)


def test_a_close_pair_whose_vectors_point_at_one_centre_stays_two_with_a_vote_distance():
    shape = (30, 40)
    sources = np.zeros(shape, dtype=np.int32)
    sources[10:20, 10:16] = 1  # two stars 6 px apart, both pointing at the brighter one
    sources[10:20, 16:22] = 2
    sources[2:6, 30:36] = 3  # a fragment far out on a galaxy centred in source 1
    footprints = np.where(sources == 3, 2, (sources > 0).astype(np.int32))
    offsets = _offsets_to(shape, (np.full(shape, 15.0), np.full(shape, 13.0)))
    joined, _ = merge_by_centre_votes(sources, footprints, offsets, min_vote_fraction=0.5)
    assert joined.max() == 1
    kept, _ = merge_by_centre_votes(
        sources, footprints, offsets, min_vote_fraction=0.5, min_vote_distance=8.0
    )
    assert kept.max() == 2  # the pair stays two, the far fragment (19 px out) joins
    assert kept[15, 12] != kept[15, 18] and kept[4, 32] == kept[15, 12]


def _galaxy_with_knot_source_and_pair(pair_ratio=1.0):
    """A galaxy whose knot came out as a source; a star pair, one with a clump peak.

    Returns sources, footprints, flux (also the significance) and clump maps.
    """
    shape = (40, 70)
    flux = 100 * _gauss(shape, 20, 20, 5) + 40 * _gauss(shape, 20, 28, 1.2)
    flux += 60 * _gauss(shape, 20, 50, 1.5) + 60 * pair_ratio * _gauss(shape, 20, 56, 1.5)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sources = np.zeros(shape, dtype=np.int32)
    sources[(flux > 1.0) & (xx < 40)] = 1
    sources[np.hypot(yy - 20, xx - 28) <= 2.5] = 2
    sources[(flux > 1.0) & (xx >= 40) & (xx < 53)] = 3
    sources[(flux > 1.0) & (xx >= 53)] = 4
    footprints = np.where(sources > 2, 2, (sources > 0).astype(np.int32))
    clump = 0.8 * _gauss(shape, 20, 28, 1.0) + 0.8 * _gauss(shape, 20, 56, 1.0)
    return sources, footprints, flux, clump


def _join_knots(sources, footprints, flux, clump, **kwargs):
    return join_central_knots(sources, footprints, flux, flux, clump, clump_threshold=0.5, **kwargs)


def test_a_knot_source_joins_its_galaxy_and_a_pair_stays_two_with_a_flux_ratio():
    sources, footprints, flux, clump = _galaxy_with_knot_source_and_pair()
    joined = _join_knots(sources, footprints, flux, clump, max_offset=1.0, max_flux_ratio=0.5)
    assert joined.max() == 3
    assert joined[20, 28] == joined[20, 20] != joined[20, 50] != joined[20, 56]
    paired = _join_knots(sources, footprints, flux, clump, max_offset=1.0)
    assert paired.max() == 2  # without the ratio the star with a clump peak joins the other
    faint = _join_knots(
        *_galaxy_with_knot_source_and_pair(pair_ratio=0.3), max_offset=1.0, max_flux_ratio=0.5
    )
    assert faint.max() == 2 and faint[20, 56] == faint[20, 50]


def test_a_knot_on_its_hosts_light_joins_and_a_star_beside_a_star_does_not():
    sources, footprints, flux, clump = _galaxy_with_knot_source_and_pair()
    joined = _join_knots(sources, footprints, flux, clump, max_offset=1.0, min_saddle_fraction=0.6)
    assert joined.max() == 3  # the knot's saddle is most of its peak; the pair's valley is deep
    assert joined[20, 28] == joined[20, 20] and joined[20, 50] != joined[20, 56]


def test_a_clump_peak_off_a_source_centre_or_no_offset_joins_nothing():
    sources, footprints, flux, clump = _galaxy_with_knot_source_and_pair()
    off_centre = np.roll(clump, 2, axis=1)  # peaks 2 px from both sources' centres
    np.testing.assert_array_equal(
        _join_knots(sources, footprints, flux, off_centre, max_offset=1.0), sources
    )
    np.testing.assert_array_equal(
        _join_knots(sources, footprints, flux, clump, max_offset=0.0), sources
    )


def test_pieces_with_no_boundary_between_them_merge_and_a_bounded_pair_does_not():
    shape = (20, 50)
    sources = np.zeros(shape, dtype=np.int32)
    sources[4:16, 2:10] = 1  # a galaxy cut in three at its knots: no boundary inside
    sources[4:16, 10:16] = 2
    sources[4:16, 16:22] = 3
    sources[4:16, 30:36] = 4  # a pair, bounded along columns 35 | 36
    sources[4:16, 36:42] = 5
    sources[4:16, 44:48] = 6  # beside the pair, but a footprint of its own
    footprints = np.select([sources == 6, sources > 3, sources > 0], [3, 2, 1], 0)
    boundary = np.zeros(shape, dtype=np.float32)
    boundary[4:16, 35:37] = 0.9
    boundary[4:16, 42:44] = 0.0
    merged = merge_unbounded(sources, footprints, boundary, max_boundary=0.5)
    assert merged.max() == 4
    assert merged[8, 3] == merged[8, 12] == merged[8, 20]
    assert merged[8, 32] != merged[8, 38] and merged[8, 38] != merged[8, 45]
    # the mean along the border decides: bounded along a third of it is too little
    boundary[4:12, 35:37] = 0.0
    assert merge_unbounded(sources, footprints, boundary, max_boundary=0.5).max() == 3
    assert merge_unbounded(sources, footprints, boundary, max_boundary=0.2).max() == 4
    # a compact source (under min_area pixels) keeps its split, boundary or not
    boundary[:] = 0.0
    assert merge_unbounded(sources, footprints, boundary, max_boundary=0.5).max() == 3
    compact = merge_unbounded(sources, footprints, boundary, max_boundary=0.5, min_area=80)
    assert compact.max() == 6  # every piece but the first has 72 pixels or fewer
    assert merge_unbounded(sources, footprints, boundary, max_boundary=0.5, min_area=72).max() == 3
    single = np.where(sources == 1, 1, 0).astype(np.int32)
    assert merge_unbounded(single, footprints, boundary, max_boundary=0.5) is single


def test_a_boundary_keeps_apart_what_the_valley_and_enclosure_merges_would_join():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    one = 50 * _gauss(shape, 20, 31, 5)  # no valley between the halves
    assert merge_unseparated(sources, footprints, one, min_valley_sigma=3.0).max() == 1
    kept = merge_unseparated(sources, footprints, one, min_valley_sigma=3.0, keep_apart={(1, 2)})
    assert kept.max() == 2
    thirds = np.repeat(np.repeat(np.array([[1, 2, 3]], dtype=np.int32), 30, 0), 30, 1)
    row = 100 * _gauss((30, 90), 15, 45, 12)  # 2 joins 1 or 3, then stays apart from 3 or 1
    merged = merge_unseparated(
        thirds, np.ones((30, 90), np.int32), row, min_valley_sigma=3.0, keep_apart={(1, 3)}
    )
    assert merged.max() == 2
    galaxy = np.zeros((40, 40), dtype=np.int32)
    galaxy[5:35, 5:35] = 1
    galaxy[18:22, 18:22] = 2  # enclosed
    light = 20 * _gauss((40, 40), 20, 14, 8) + 3 * _gauss((40, 40), 20, 20, 1)
    assert absorb_enclosed(galaxy, light, min_enclosed=0.75).max() == 1
    assert absorb_enclosed(galaxy, light, min_enclosed=0.75, keep_apart={(1, 2)}).max() == 2


def test_border_boundaries_average_the_larger_probability_of_each_touching_pair():
    sources = np.zeros((6, 8), dtype=np.int32)
    sources[1:5, 1:4] = 1
    sources[1:5, 4:7] = 2
    footprints = (sources > 0).astype(np.int32)
    boundary = np.zeros((6, 8), dtype=np.float32)
    boundary[1:5, 4] = 0.8  # on one side of the border only
    means = border_boundaries(sources, footprints, boundary)
    assert list(means) == [(1, 2)] and means[(1, 2)] == pytest.approx(0.8)
    assert border_boundaries(np.where(sources == 1, 1, 0), footprints, boundary) == {}
    assert border_boundaries(sources, sources, boundary) == {}  # two footprints


def _join_symmetric(sources, footprints, light, valid, fraction=0.1):
    """:func:`join_symmetric_pieces` at 3 sigma, with the valley test of the pipeline."""
    joined, _ = join_symmetric_pieces(
        sources,
        footprints,
        light,
        valid,
        max_asymmetry_sigma=3.0,
        max_asymmetry_fraction=fraction,
        min_valley_sigma=3.0,
        min_valley_fraction=0.1,
    )
    return joined


def _edge_on_disk(shape, y0, x0, length, width, angle_deg):
    """An elongated Gaussian ridge: the light of an edge-on disk."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = np.deg2rad(angle_deg)
    along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
    across = -(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle)
    return np.exp(-0.5 * ((along / length) ** 2 + (across / width) ** 2))


def _pieces_along(shape, y0, x0, angle_deg, cuts):
    """Labels 1.. of the strips between ``cuts`` (distances along the ridge from its centre)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = np.deg2rad(angle_deg)
    along = (xx - x0) * np.cos(angle) + (yy - y0) * np.sin(angle)
    return (np.digitize(along, cuts) + 1).astype(np.int32)


def test_the_pieces_of_an_edge_on_disk_join_and_a_companion_on_its_ridge_does_not():
    shape, centre = (64, 64), (31.3, 32.6)
    disk = 80.0 * _edge_on_disk(shape, *centre, 9.0, 1.5, 30.0)
    sources = _pieces_along(shape, *centre, 30.0, [-12.0, -5.0, 6.0, 14.0])
    sources[disk < 2.0] = 0  # five strips of the ridge, cut by spurious centres
    footprints = (sources > 0).astype(np.int32)
    rng = np.random.default_rng(3)
    noisy = disk + rng.normal(0.0, 1.0, shape)
    valid = np.ones(shape, dtype=bool)
    joined = _join_symmetric(sources, footprints, noisy, valid, fraction=0.1)
    assert joined.max() == 1  # five strips of one ridge: one object
    _, pieces = join_symmetric_pieces(
        sources,
        footprints,
        noisy,
        valid,
        max_asymmetry_sigma=3.0,
        max_asymmetry_fraction=0.1,
        min_valley_sigma=3.0,
        min_valley_fraction=0.1,
    )
    assert np.array_equal(pieces, (sources > 0) & (sources != sources[31, 32]))  # all but its core
    # a companion on the far end of the ridge: the mirror image holds the ridge but not
    # it, so it stays, and so does the other end, whose mirror image it is
    tip = np.round(np.array(centre) + 16.0 * np.array([np.sin(np.pi / 6), np.cos(np.pi / 6)]))
    companion = noisy + 25.0 * _gauss(shape, *tip, 1.0)
    joined = _join_symmetric(sources, footprints, companion, valid, fraction=0.1)
    assert joined.max() == 3
    assert joined[int(tip[0]), int(tip[1])] != joined[31, 32]


def test_a_pair_stays_two_and_a_piece_whose_mirror_has_no_data_keeps_its_split():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    pair = 50 * (_gauss(shape, 20, 24, 2) + 0.5 * _gauss(shape, 20, 36, 2))
    valid = np.ones(shape, dtype=bool)
    kept = _join_symmetric(sources, footprints, pair, valid, fraction=0.1)
    assert kept.max() == 2
    one = 50 * _gauss(shape, 20, 30.2, 5)  # one galaxy cut in two halves: joined
    assert _join_symmetric(sources, footprints, one, valid, fraction=0.1).max() == 1
    valid[:, 45:] = False  # most of the fainter half's mirror image has no data
    half = 50 * _gauss(shape, 20, 31.2, 5)  # the right half is the brighter one
    assert _join_symmetric(sources, footprints, half, valid, fraction=0.1).max() == 2
    # sources of different footprints never join
    apart = footprints.copy()
    apart[:, 30:] = 2
    assert _join_symmetric(sources, apart, one, np.ones(shape, bool)).max() == 2


def test_a_faint_companion_on_a_bright_objects_shoulder_stays_without_a_valley():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    shoulder = 100 * _gauss(shape, 20, 25.3, 3) + 12 * _gauss(shape, 20, 33, 1.0)
    valid = np.ones(shape, dtype=bool)
    assert _join_symmetric(sources, footprints, shoulder, valid).max() == 2
    alone = 100 * _gauss(shape, 20, 25.3, 3)  # its shoulder alone is the mirror of the other
    assert _join_symmetric(sources, footprints, alone, valid).max() == 1


def test_a_bright_galaxys_small_asymmetry_is_measured_against_its_peak():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    lopsided = 1000 * _gauss(shape, 20, 30.4, 5) + 30 * _gauss(shape, 20, 22, 3)
    valid = np.ones(shape, dtype=bool)
    joined = _join_symmetric(sources, footprints, lopsided, valid, fraction=0.1)
    assert joined.max() == 1  # 30 sigma of asymmetry on a 1000-sigma galaxy: one object
    strict = _join_symmetric(sources, footprints, lopsided, valid, fraction=0.01)
    assert strict.max() == 2


@pytest.mark.parametrize("true_centre", [(20.0, 30.0), (20.3, 29.6), (19.5, 30.5)])
def test_the_symmetry_centre_is_found_to_a_quarter_pixel(true_centre):
    shape = (40, 60)
    light = 100 * _gauss(shape, *true_centre, 1.5) + 20 * _gauss(shape, 20, 38, 1.5)
    y, x = symmetry_centre(light, 20, 30)
    assert abs(y - true_centre[0]) <= 0.125 and abs(x - true_centre[1]) <= 0.125


def test_a_piece_within_the_pair_range_must_mirror_nearly_all_its_light():
    shape = (40, 60)
    sources, footprints = _halves(shape)
    # a faint galaxy cut in two (its halves' centroids about 4 px from its centre) with
    # a bump of 2.5 sigma of the difference's noise on its fainter half
    faint = 20 * _gauss(shape, 20, 30.2, 5) + 3.5 * _gauss(shape, 20, 22, 1.2)
    valid = np.ones(shape, dtype=bool)
    kwargs = dict(
        max_asymmetry_sigma=3.0,
        max_asymmetry_fraction=0.1,
        min_valley_sigma=3.0,
        min_valley_fraction=0.1,
    )

    def count(light: np.ndarray, distance: float) -> int:
        joined, _ = join_symmetric_pieces(
            sources, footprints, light, valid, close_distance=distance, **kwargs
        )
        return joined.max()

    assert count(faint, 3.0) == 1  # further out than a close pair: within 3 sigma
    assert count(faint, 9.0) == 2  # as close as a pair's members: 2.5 sigma is 13 % of its peak
    # on a galaxy ten times brighter, 14 sigma of asymmetry is under a tenth of the peak
    bright = 200 * _gauss(shape, 20, 30.2, 5) + 20 * _gauss(shape, 20, 22, 1.2)
    assert count(bright, 3.0) == 1
    assert count(bright, 9.0) == 2  # not as close as a pair's members


def _star_with_companion(companion=25.0, seed=0, at=(30.0, 38.0)):
    """A bright star (significance peak ~300) with a faint companion on its wing, in
    unit noise smoothed as the network's significance map is, all one source."""
    shape = (60, 60)
    rng = np.random.default_rng(seed)
    light = 300 * _gauss(shape, 30.2, 29.7, 1.2) + companion * _gauss(shape, *at, 1.2)
    significance = light + rng.normal(size=shape)
    sources = (light > 2.0).astype(np.int32)
    return sources, significance


def _split_companions(sources, significance, **kwargs):
    options = dict(
        comparable=np.ones(sources.shape, dtype=bool),
        clump=np.zeros(sources.shape, dtype=np.float32),
        min_sigma=5.0,
        min_distance=2.8,
        clump_threshold=0.25,
    )
    options.update(kwargs)
    comparable = options.pop("comparable")
    clump = options.pop("clump")
    return split_asymmetric_companions(sources, significance, comparable, clump, **options)


def test_a_faint_companion_on_a_bright_stars_wing_becomes_a_source_of_its_own():
    for seed in range(3):
        sources, significance = _star_with_companion(seed=seed)
        split, peaks = _split_companions(sources, significance)
        assert split.max() == 2
        (y,), (x,) = np.nonzero(peaks)
        assert abs(y - 30) <= 1 and abs(x - 38) <= 1
        assert split[30, 38] == 2 and split[30, 30] == 1  # the star keeps its core


def test_a_lone_star_in_noise_keeps_one_source():
    for seed in range(5):
        sources, significance = _star_with_companion(companion=0.0, seed=seed)
        split, peaks = _split_companions(sources, significance)
        assert split.max() == 1 and not peaks.any()


def test_a_bright_star_off_the_pixel_grid_is_not_split_by_its_centring_error():
    # a steep core centred up to an eighth of a pixel off leaves many sigma of
    # asymmetry on its wing: the centring term alone keeps the star whole (without
    # it, 16 of these 60 stars were split, and 7 at half its error)
    rng = np.random.default_rng(4)
    shape = (41, 41)
    for peak in (300.0, 1000.0, 3000.0):
        for _ in range(20):
            y0, x0 = 20.0 + rng.uniform(-0.5, 0.5, 2)
            significance = peak * _gauss(shape, y0, x0, 1.2) + rng.normal(size=shape)
            sources = (significance > 3.0).astype(np.int32)
            split, peaks = _split_companions(sources, significance, min_distance=1.8)
            assert split.max() == 1 and not peaks.any()


def test_no_companion_in_a_clumpy_galaxy_beside_another_source_or_in_the_core():
    sources, significance = _star_with_companion()
    clump = np.zeros(sources.shape, dtype=np.float32)
    clump[30, 38] = 0.6  # the network calls the excess a clump: a clumpy galaxy
    assert _split_companions(sources, significance, clump=clump)[0].max() == 1
    beside = sources.copy()
    beside[28:33, 42:46] = 2 * (sources[28:33, 42:46] > 0)  # a detected neighbour touches it
    assert _split_companions(beside, significance)[0].max() == 2
    close_sources, close = _star_with_companion(at=(30.0, 31.5))  # 1.8 px from the centre
    assert _split_companions(close_sources, close)[0].max() == 1


def test_no_companion_where_its_light_or_its_mirror_is_not_comparable():
    sources, significance = _star_with_companion()
    comparable = np.ones(sources.shape, dtype=bool)
    comparable[:, 20:23] = False  # the mirror image lies on an artefact
    assert _split_companions(sources, significance, comparable=comparable)[0].max() == 1
    saturated = np.zeros(sources.shape, dtype=bool)
    saturated[29:32, 28:31] = True  # a saturated core: its unsaturated ring centres the star
    split, _ = _split_companions(sources, significance, saturated=saturated)
    assert split.max() == 2
    saturated[:] = False
    saturated[31:33, 28:30] = True  # part of the core flagged, its centroid 1.5 px off
    split, _ = _split_companions(sources, significance, saturated=saturated)
    assert split.max() == 2


def test_split_asymmetric_companions_checks_shapes():
    sources, significance = _star_with_companion()
    with pytest.raises(ValueError, match="one shape"):
        _split_companions(sources, significance[:-1])
