from __future__ import annotations

import galsim
import numpy as np
import pandas as pd
import pytest

from survey_seg import inject
from survey_seg.errors import InputError
from survey_seg.inject import (
    INJECTION_KINDS,
    injection_stamp_half,
    make_injection_catalog,
    render_window,
    resolution_pix,
)
from survey_seg.simulate import mosaic_wcs

FWHM = 1.8
RESOLUTION = resolution_pix(FWHM)  # sizes and separations: 2 pixels for this undersampled PSF
SHAPE = (256, 320)


def _catalog(seed=3, valid=None, **kwargs):
    valid = np.ones(SHAPE, dtype=bool) if valid is None else valid
    options = {"psf_fwhm_pix": FWHM, "noise_sigma": 1.0, "density_per_mpix": 300.0}
    return make_injection_catalog(SHAPE, mosaic_wcs(SHAPE), valid, seed=seed, **options | kwargs)


def test_catalog_is_deterministic_by_seed():
    first, again, other = _catalog(seed=5), _catalog(seed=5), _catalog(seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["x"].to_numpy()[:5], other["x"].to_numpy()[:5])
    assert set(first["kind"]) == {*INJECTION_KINDS, "clump"}
    assert (first["injection_id"].to_numpy() == np.arange(len(first))).all()
    singles = first[first["kind"] != "clump"]
    assert singles["snr"].between(5.0, 100.0).all()


def test_objects_lie_in_valid_pixels_only():
    valid = np.ones(SHAPE, dtype=bool)
    valid[:, :150] = False  # a NaN half
    valid[200:, :] = False
    catalog = _catalog(valid=valid, density_per_mpix=150.0)
    rows, cols = np.rint(catalog["y"]).astype(int), np.rint(catalog["x"]).astype(int)
    assert valid[rows, cols].all()
    sampled = _catalog(valid=lambda x, y: x >= 150, density_per_mpix=150.0)
    assert (np.rint(sampled["x"]) >= 150).all()


def test_units_keep_their_distance_and_clumps_sit_in_their_host():
    catalog = _catalog(seed=11)
    units = catalog[(catalog["kind"] != "clump") & (catalog["pair_id"] < 0)]
    xy = units[["x", "y"]].to_numpy()
    distance = np.hypot(*(xy[:, None, :] - xy[None, :, :]).T)
    np.fill_diagonal(distance, np.inf)
    assert distance.min() >= 2 * 2.5 * RESOLUTION - 1e-9
    clumps = catalog[catalog["kind"] == "clump"]
    assert len(clumps)
    hosts = catalog.set_index("injection_id").loc[clumps["host_injection_id"]]
    assert (hosts["kind"] == "clumpy").all()
    offset = np.hypot(clumps["x"].to_numpy() - hosts["x"], clumps["y"].to_numpy() - hosts["y"])
    assert (offset <= 1.5 * hosts["half_light_radius_pix"].to_numpy() + 1e-9).all()
    assert (offset >= 2.0 * RESOLUTION - 1e-9).all()
    large = catalog[catalog["kind"] == "large"]
    assert large["half_light_radius_pix"].between(3 * RESOLUTION, 10 * RESOLUTION).all()


@pytest.mark.parametrize("fwhm", [0.6, 1.8, 3.0])
def test_pairs_at_the_asked_separations_in_resolution_elements(fwhm):
    catalog = _catalog(kinds=("pair",), density_per_mpix=200.0, psf_fwhm_pix=fwhm)
    assert (catalog["kind"] == "pair").all()
    assert resolution_pix(fwhm) == max(fwhm, 2.0)  # an undersampled PSF resolves 2 pixels
    for _, members in catalog.groupby("pair_id"):
        assert len(members) == 2
        gap = np.hypot(*np.diff(members[["x", "y"]].to_numpy(), axis=0)[0])
        separation = gap / resolution_pix(fwhm)
        assert separation == pytest.approx(members["pair_separation_fwhm"].iloc[0])
        assert 1.0 <= separation <= 3.0


def test_magnitude_from_the_zero_point():
    catalog = _catalog(zero_point=25.0, kinds=("star",))
    expected = 25.0 - 2.5 * np.log10(catalog["flux"])
    np.testing.assert_allclose(catalog["magnitude"], expected)
    assert _catalog(kinds=("star",))["magnitude"].isna().all()


@pytest.mark.parametrize(
    ("density", "phrase"), [(1.0, "places no object"), (1e6, "only")]
)  # fmt: skip
def test_bad_density_is_one_line(density, phrase):
    with pytest.raises(InputError, match=phrase) as error:
        _catalog(density_per_mpix=density)
    assert "\n" not in str(error.value)
    assert "density" in str(error.value)


def test_bad_kind_is_refused():
    with pytest.raises(InputError, match="unknown injection kinds"):
        _catalog(kinds=("comet",))


@pytest.mark.parametrize("gain", [None, 4.0])
def test_tiled_equals_whole_image(gain):
    catalog = _catalog(seed=2)
    whole = render_window(catalog, (0, 0), SHAPE, psf_fwhm_pix=FWHM, gain=gain, seed=9)
    left = render_window(catalog, (-20, -16), (300, 200), psf_fwhm_pix=FWHM, gain=gain, seed=9)
    right = render_window(catalog, (40, 150), (216, 170), psf_fwhm_pix=FWHM, gain=gain, seed=9)
    assert whole.skipped == left.skipped == right.skipped == ()
    assert whole.image.dtype == np.float32 and whole.image.sum() > 0
    np.testing.assert_allclose(left.image[20:276, 16:], whole.image[:, :184], atol=1e-5)
    np.testing.assert_allclose(right.image, whole.image[40:, 150:], atol=1e-5)
    np.testing.assert_allclose(left.image[60:276, 166:], right.image[:, :34], atol=1e-5)


def test_total_flux_of_an_isolated_object():
    catalog = _catalog(kinds=("star", "sersic"), density_per_mpix=40.0)
    assert len(catalog) >= 2
    for obj in catalog.itertuples():
        half = injection_stamp_half(obj.half_light_radius_pix, FWHM)
        origin = (round(obj.y) - half, round(obj.x) - half)
        alone = catalog[catalog["injection_id"] == obj.injection_id]
        image = render_window(alone, origin, (2 * half + 1,) * 2, psf_fwhm_pix=FWHM).image
        assert image.sum() == pytest.approx(obj.flux, rel=0.03)
        peak = np.unravel_index(np.argmax(image), image.shape)
        assert abs(peak[0] + origin[0] - obj.y) <= 1 and abs(peak[1] + origin[1] - obj.x) <= 1


def test_failing_object_is_skipped_and_counted(monkeypatch):
    catalog = _catalog(seed=4, kinds=("star",), density_per_mpix=100.0)
    draw = inject._draw_object
    bad = int(catalog["injection_id"].iloc[1])

    def failing(obj, *args):
        if obj.injection_id == bad:
            raise galsim.GalSimFFTSizeError("too big", 99999)
        return draw(obj, *args)

    monkeypatch.setattr(inject, "_draw_object", failing)
    rendered = render_window(catalog, (0, 0), SHAPE, psf_fwhm_pix=FWHM)
    assert rendered.skipped == (bad,)
    monkeypatch.setattr(inject, "_draw_object", draw)
    full = render_window(catalog, (0, 0), SHAPE, psf_fwhm_pix=FWHM).image
    assert rendered.image.sum() == pytest.approx(full.sum() - catalog["flux"].iloc[1], rel=0.02)


def _sources(rows):
    table = pd.DataFrame(rows, columns=["x", "y"], dtype=float)
    table["id"] = np.arange(len(table), dtype=np.int64) + 100
    table["flux"] = 10.0
    table["is_blended"] = False
    return table


def test_matching_pairs_large_objects_and_clumps():
    catalog = _catalog(seed=8, kinds=("pair", "large", "clumpy"), density_per_mpix=60.0)
    pair = catalog[catalog["pair_id"] == 0]
    large = catalog[catalog["kind"] == "large"].iloc[0]
    host = catalog[catalog["kind"] == "clumpy"].iloc[0]
    clump = catalog[catalog["host_injection_id"] == host["injection_id"]].iloc[0]
    near_first = (0.8 * pair[["x", "y"]].iloc[0] + 0.2 * pair[["x", "y"]].iloc[1]).to_list()
    hlr = large["half_light_radius_pix"]
    sources = _sources(
        [near_first, [large["x"] + 0.3, large["y"]], [large["x"] + hlr, large["y"]],
         [host["x"], host["y"]]]
    )  # fmt: skip
    clumps = pd.DataFrame({"host_id": [103, 103], "x": [clump["x"] + 1.0, host["x"] + 9.0],
                           "y": [clump["y"], host["y"]]})  # fmt: skip
    matched = inject.match_injections(catalog, sources, clumps, psf_fwhm_pix=FWHM)
    by_id = matched.set_index("injection_id")
    assert by_id.loc[pair["injection_id"], "recovered"].sum() == 1  # one source, not two
    assert by_id.loc[pair["injection_id"][0], "pair_partner_id"] == pair["injection_id"].iloc[1]
    assert by_id.at[large["injection_id"], "matched_source_id"] == 101
    assert by_id.at[large["injection_id"], "shattered"]
    assert by_id.at[clump["injection_id"], "recovered"]
    assert by_id.at[host["injection_id"], "clumps_matched"] == 1
    metrics = inject.injection_metrics(
        matched, clumps, psf_fwhm_pix=FWHM, n_sources=len(sources), n_negative=1
    )
    assert metrics["pair_recall"] == 0.0
    assert metrics["large_shattered"] == 1 and metrics["large_total"] >= 1
    assert metrics["clump_purity"] == 0.5
    assert metrics["spurious_fraction"] == pytest.approx(1 / (len(sources) - 3))
    nothing = inject.match_injections(catalog, sources[:0], clumps[:0], psf_fwhm_pix=FWHM)
    assert not nothing["recovered"].any() and (nothing["matched_source_id"] == -1).all()
    # a real galaxy under the large one (mostly light of its own) is not a piece of it
    real_under = sources.assign(injected_fraction=[1.0, 1.0, 0.3, 1.0])
    kept = inject.match_injections(catalog, real_under, clumps, psf_fwhm_pix=FWHM).set_index(
        "injection_id"
    )
    assert kept.at[large["injection_id"], "n_sources_in_footprint"] == 2
    assert kept.at[large["injection_id"], "n_own_sources"] == 1
    assert not kept.at[large["injection_id"], "shattered"]
    # a real star on it whose segment holds mostly the galaxy's light: its peak tells
    star_on_it = sources.assign(
        injected_fraction=[1.0, 1.0, 0.9, 1.0], on_real_peak=[False, False, True, False]
    )
    kept = inject.match_injections(catalog, star_on_it, clumps, psf_fwhm_pix=FWHM)
    assert not kept.set_index("injection_id").at[large["injection_id"], "shattered"]
    # the match is its own even where a real star under it outshines it
    on_a_star = sources.assign(injected_fraction=[1.0, 0.2, 0.3, 1.0])
    kept = inject.match_injections(catalog, on_a_star, clumps, psf_fwhm_pix=FWHM)
    assert kept.set_index("injection_id").at[large["injection_id"], "n_own_sources"] == 1


def test_a_real_star_on_an_injected_disk_is_not_a_piece_of_it():
    """Over its segment the disk's light outweighs a faint real star's; at the star's
    peak the image's own light wins, as it does not at a knot or a noise bump."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:60, :80]
    disk = 3.0 * np.exp(-np.hypot(yy - 30, xx - 40) / 12.0)
    knot = 4.0 * np.exp(-((yy - 25) ** 2 + (xx - 30) ** 2) / 2.0)
    star = 6.0 * np.exp(-((yy - 36) ** 2 + (xx - 50) ** 2) / 2.0)
    own = star + rng.normal(0.0, 1.0, yy.shape)
    own[40, 28] = 3.5  # a noise bump on the disk
    injected, rms = disk + knot, np.ones(yy.shape)
    peak_x, peak_y = np.array([50, 30, 28, 40]), np.array([36, 25, 40, 30])
    found = inject.real_peaks(peak_x, peak_y, injected, own, rms)
    assert found.tolist() == [True, False, False, False]  # star; knot, bump, disk centre
    window = (slice(20, 45), slice(25, 60))  # a window with its origin: the same answer
    shifted = inject.real_peaks(
        peak_x, peak_y, injected[window], own[window], rms[window], origin=(20, 25)
    )
    assert shifted.tolist() == found.tolist()
    faint = inject.real_peaks(peak_x[:1], peak_y[:1], injected, own * 0.2, rms)
    assert not faint[0]  # under MIN_REAL_PEAK_SNR its own light is not a detection


def test_a_peak_on_the_image_edge_has_a_smaller_box():
    """SEP puts peaks on the first and last rows: their box is cut by the edge, not
    wrapped round to the other side nor read past the end."""
    own = np.zeros((20, 30))
    own[0, 5] = own[19, 29] = 40.0  # stars on the edges
    own[19, 3] = 40.0  # wrapped round, the box of a peak at (0, 3) would see this one
    injected, rms = np.zeros_like(own), np.ones_like(own)
    found = inject.real_peaks(np.array([5, 29, 3]), np.array([0, 19, 0]), injected, own, rms)
    assert found.tolist() == [True, True, False]


def test_injected_fractions_add_up_over_strips_of_rows():
    rng = np.random.default_rng(3)
    segmentation = np.zeros((40, 30), dtype=np.int64)
    segmentation[5:20, 5:15] = 7  # mostly injected light
    segmentation[18:35, 18:28] = 9  # a real object with a little injected light on it
    segmentation[30:38, 2:6] = 11  # no light at all
    injected = np.zeros((40, 30))
    injected[5:20, 5:15] = 2.0
    injected[18:35, 18:28] = 0.1
    own = rng.normal(0.0, 0.01, (40, 30))
    own[18:35, 18:28] += 1.0
    own[30:38, 2:6] = -1.0  # a hole in the background: no light, not negative light
    whole = inject.injected_fractions(inject.source_light_sums(segmentation, injected, own))
    strips = pd.concat(
        [inject.source_light_sums(segmentation[r : r + 16], injected[r : r + 16], own[r : r + 16])
         for r in range(0, 40, 16)]
    )  # fmt: skip
    pd.testing.assert_series_equal(inject.injected_fractions(strips), whole)
    assert list(whole.index) == [7, 9, 11]
    assert whole[7] > 0.99 and whole[9] == pytest.approx(0.1 / 1.1, abs=0.01)
    assert whole[11] == 0.0


def test_a_knotty_or_clumpy_galaxy_in_pieces_is_shattered_and_a_star_never():
    catalog = _catalog(seed=8, kinds=("knotty", "clumpy", "star"), density_per_mpix=60.0)
    whole = catalog[catalog["kind"].isin(["knotty", "clumpy"])]
    star = catalog[catalog["kind"] == "star"].iloc[0]
    rows = []
    for _, obj in [*whole.iterrows(), (None, star)]:  # the object and a piece of it
        rows += [[obj["x"], obj["y"]], [obj["x"] + 0.5 * RESOLUTION, obj["y"]]]
    no_clumps = pd.DataFrame(columns=["host_id", "x", "y"])
    matched = inject.match_injections(catalog, _sources(rows), no_clumps, psf_fwhm_pix=FWHM)
    by_id = matched.set_index("injection_id")
    assert by_id.loc[whole["injection_id"], "shattered"].all()
    assert not by_id.at[star["injection_id"], "shattered"]  # a star beside a star is a pair
    metrics = inject.injection_metrics(
        matched, no_clumps, psf_fwhm_pix=FWHM, n_sources=len(rows), n_negative=0
    )
    for kind in ("knotty", "clumpy"):
        n = int((whole["kind"] == kind).sum())
        assert n > 0 and metrics[f"{kind}_total"] == metrics[f"{kind}_shattered"] == n


def test_tile_metrics_add_up_to_the_whole():
    catalog = _catalog(seed=6)
    tiles = pd.DataFrame(
        [(2 * r + c, r, c, 160 * c, 160 * (c + 1), 128 * r, 128 * (r + 1))
         for r in range(2) for c in range(2)],
        columns=list(inject.TILE_KEYS),
    )  # fmt: skip
    rng = np.random.default_rng(1)
    objects = catalog[(catalog["kind"] != "clump")].sample(frac=0.7, random_state=2)
    noise = pd.DataFrame({"x": rng.uniform(0, 320, 15), "y": rng.uniform(0, 256, 15)})
    sources = _sources(pd.concat([objects[["x", "y"]] + 0.3, noise]).to_numpy())
    owner = (sources["y"] >= 128).astype(int) * 2 + (sources["x"] >= 160).astype(int)
    sources["tile_id"] = owner.to_numpy()
    negative = pd.DataFrame({"id": np.arange(7), "tile_id": rng.integers(0, 4, 7)})
    clumps = pd.DataFrame({"host_id": pd.Series([], dtype=np.int64), "x": [], "y": []})
    matched = inject.match_injections(catalog, sources, clumps, psf_fwhm_pix=FWHM)
    whole = inject.injection_metrics(
        matched, clumps, psf_fwhm_pix=FWHM, n_sources=len(sources), n_negative=len(negative)
    )
    per_tile = inject.injection_tile_metrics(
        matched, tiles, sources, negative, clumps, psf_fwhm_pix=FWHM
    )
    assert per_tile["tile_id"].tolist() == [0, 1, 2, 3]
    assert per_tile["n_sources"].sum() == len(sources)
    summed = ("n_injected", "n_skipped", "large_total", "large_shattered", "n_negative")
    for key in (*summed, "n_completeness", "n_pairs", "n_clumps_injected", "n_unmatched"):
        assert per_tile[key].sum() == whole[key], key
    assert "completeness_by_snr_50-100" in per_tile and "pair_recall" in per_tile
    singles = matched[matched["kind"].isin(inject.SINGLE_KINDS) & (matched["snr"] >= 10)]
    counted = singles.groupby(inject._owning_tiles(singles, tiles)).size()
    weights = counted.reindex(per_tile["tile_id"]).fillna(0).to_numpy()
    recombined = np.nansum(per_tile["completeness"].to_numpy() * weights) / weights.sum()
    assert recombined == pytest.approx(whole["completeness"])
    assert 0 < whole["completeness"] < 1


def test_resolved_pair_recall_counts_pairs_in_the_target_range_of_bright_members():
    pairs = [  # (separation in FWHM, S/N of the members, recovered)
        (2.0, (20.0, 30.0), (True, True)),  # counted, found
        (1.6, (40.0, 12.0), (True, False)),  # counted, missed
        (1.1, (50.0, 50.0), (True, True)),  # too close for the target range
        (2.0, (60.0, 6.0), (True, False)),  # a member below S/N 10
    ]
    rows = [
        {"kind": "pair", "pair_id": i, "pair_separation_fwhm": sep, "snr": snr,
         "recovered": found, "drawn": True, "shattered": False, "matched_source_id": -1,
         "x": 0.0, "y": 0.0}
        for i, (sep, snrs, founds) in enumerate(pairs)
        for snr, found in zip(snrs, founds, strict=True)
    ]  # fmt: skip
    matched = pd.DataFrame(rows)
    clumps = pd.DataFrame({"host_id": [], "x": [], "y": []})
    metrics = inject.injection_metrics(matched, clumps, psf_fwhm_pix=FWHM, n_sources=5,
                                       n_negative=0)  # fmt: skip
    assert metrics["pair_recall"] == 0.5 and metrics["pair_recall_resolved"] == 0.5
    assert inject.RESOLVED_PAIR_SEPARATION_FWHM == (1.3, 2.5)
    matched.loc[matched["pair_id"] == 1, "recovered"] = True
    metrics = inject.injection_metrics(matched, clumps, psf_fwhm_pix=FWHM, n_sources=5,
                                       n_negative=0)  # fmt: skip
    assert metrics["pair_recall_resolved"] == 1.0 and metrics["pair_recall"] == 0.75
