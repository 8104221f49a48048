import numpy as np
import pandas as pd
import pytest

from survey_seg.evaluate import (
    ARTEFACT_PLANES,
    artefact_pixel_precision,
    artefact_pixel_scores,
    blend_flag_scores,
    clump_snr,
    expected_calibration_error,
    match_positions,
    object_iou,
    reliability_curve,
    score_catalog,
    score_clumps,
    segmentation_iou,
    touching_objects,
    truth_tile_labels,
    verdict_auc,
)
from survey_seg.masks import MaskBit


def test_matching_is_one_to_one_closest_first():
    detected = np.array([[0.0, 0.0], [1.0, 0.0]])
    truth = np.array([[0.9, 0.0], [10.0, 10.0]])
    detected_match, truth_match = match_positions(detected, truth, radius=2.0)
    assert detected_match.tolist() == [-1, 0]
    assert truth_match.tolist() == [1, -1]


def test_scores_of_a_known_catalog():
    truth = pd.DataFrame(
        {"x": [10.0, 20.0, 25.0, 80.0], "y": [10.0, 50.0, 50.0, 80.0], "snr": [50, 50, 50, 5]}
    )
    detected = pd.DataFrame({"x": [10.2, 22.5, 60.0], "y": [10.1, 50.0, 60.0]})
    score = score_catalog(detected, truth, pixel_scale_arcsec=0.1, match_radius_arcsec=0.3)
    assert score.n_truth == 3
    assert score.completeness == 2 / 3  # 20 and 25 merged into one detection
    assert score.purity == 2 / 3
    assert score.n_close_pairs == 1
    assert score.blend_recall == 0.0


def test_resolved_completeness_leaves_out_objects_with_a_close_neighbour():
    truth = pd.DataFrame(
        {"x": [10.0, 13.0, 40.0, 70.0, 90.0], "y": [10.0, 10.0, 40.0, 70.0, 90.0],
         "snr": [50, 50, 50, 50, 5]}
    )  # fmt: skip
    detected = pd.DataFrame({"x": [10.0, 40.0, 70.0, 89.0], "y": [10.0, 40.0, 70.0, 89.0]})
    # the pair 3 px apart is one detection; 90 is faint and counts nowhere
    score = score_catalog(detected, truth, resolved_separation_arcsec=0.4)
    assert score.completeness == 3 / 4
    assert score.completeness_resolved == 1.0  # 40 and 70, both found
    narrow = score_catalog(detected, truth, resolved_separation_arcsec=0.2)
    assert narrow.completeness_resolved == 3 / 4  # no pair is that close
    wide = score_catalog(detected, truth, resolved_separation_arcsec=10.0)
    assert np.isnan(wide.completeness_resolved)  # every object has a neighbour
    assert np.isnan(score_catalog(detected, truth).completeness_resolved)
    with pytest.raises(ValueError, match="resolved_separation_arcsec"):
        score_catalog(detected, truth, resolved_separation_arcsec=0.0)


def test_resolved_blend_recall_counts_the_pairs_at_least_that_far_apart():
    truth = pd.DataFrame(
        {"x": [10.0, 13.0, 40.0, 48.0, 90.0], "y": [10.0, 10.0, 40.0, 40.0, 90.0],
         "snr": [50, 50, 50, 50, 50]}
    )  # fmt: skip
    detected = pd.DataFrame({"x": [10.0, 40.0, 48.0, 90.0], "y": [10.0, 40.0, 40.0, 90.0]})
    # pairs 3 px (one detection) and 8 px apart (two)
    score = score_catalog(detected, truth, resolved_separation_arcsec=0.5)
    assert score.n_close_pairs == 2 and score.blend_recall == 0.5
    assert score.blend_recall_resolved == 1.0  # the 8 px pair alone
    both = score_catalog(detected, truth, resolved_separation_arcsec=0.2)
    assert both.blend_recall_resolved == 0.5
    none = score_catalog(detected, truth, resolved_separation_arcsec=1.0)
    assert np.isnan(none.blend_recall_resolved)  # no pair is 10 px apart
    assert np.isnan(score_catalog(detected, truth).blend_recall_resolved)


def test_on_artefact_counts_detections_on_spurious_planes():
    truth = pd.DataFrame({"x": [2.0], "y": [2.0], "snr": [50.0]})
    detected = pd.DataFrame({"x": [2.0, 7.2, 5.0, 9.0], "y": [2.0, 1.0, 5.0, 9.0]})
    mask = np.zeros((10, 10), np.uint32)
    mask[1, 7] = MaskBit.CR
    mask[5, 5] = MaskBit.SAT  # saturation is a real star, not an artefact source
    mask[9, 9] = MaskBit.STREAK
    score = score_catalog(detected, truth, truth_mask=mask)
    assert score.on_artefact == 0.5
    assert np.isnan(score_catalog(detected, truth).on_artefact)


def test_truth_objects_without_data_count_towards_neither_completeness_nor_pairs():
    truth = pd.DataFrame(
        {"x": [2.0, 6.0, 7.0, 8.0], "y": [2.0, 6.0, 6.0, 2.0], "snr": [50.0, 50.0, 50.0, 50.0]}
    )
    detected = pd.DataFrame({"x": [2.0, 6.0, 8.1], "y": [2.0, 6.0, 2.0]})
    mask = np.zeros((10, 10), np.uint32)
    mask[:, 7:] = MaskBit.NO_DATA  # the third object lies in a chip gap, the fourth too
    kwargs = {"match_radius_arcsec": 0.3, "pair_separation_arcsec": 0.15}
    without = score_catalog(detected, truth, **kwargs)
    assert (without.n_truth, without.completeness, without.n_close_pairs) == (4, 0.75, 1)
    score = score_catalog(detected, truth, truth_mask=mask, **kwargs)
    assert (score.n_truth, score.completeness, score.n_close_pairs) == (2, 1.0, 0)
    assert score.purity == 1.0  # a detection of an object in the gap is still pure


def test_clump_snr_of_a_known_clump():
    fwhm = 2.0 * np.sqrt(2.0 * np.log(2.0))  # a PSF sigma of one pixel
    snr = clump_snr([np.sqrt(4 * np.pi) * 0.5], sky_sigma=0.1, psf_fwhm_pix=fwhm)
    assert snr[0] == pytest.approx(5.0)


def test_clump_snr_in_correlated_noise_is_the_filtered_noise_of_a_simulated_field():
    """The PSF-weighted sum of correlated noise: its scatter over many draws."""
    from scipy import ndimage, signal

    from survey_seg.simulate import noise_kernel

    fwhm, sigma = 2.4, 0.1
    white = clump_snr([1.0], sky_sigma=sigma, psf_fwhm_pix=fwhm)[0]
    identity = np.zeros((3, 3))
    identity[1, 1] = 1.0
    assert clump_snr([1.0], sky_sigma=sigma, psf_fwhm_pix=fwhm, noise_kernel=identity)[
        0
    ] == pytest.approx(white)
    kernel = noise_kernel(0.5)
    correlated = clump_snr([1.0], sky_sigma=sigma, psf_fwhm_pix=fwhm, noise_kernel=kernel)[0]
    rng = np.random.default_rng(5)
    noise = ndimage.convolve(rng.normal(0.0, sigma, (400, 400)), kernel, mode="wrap")
    offsets = np.arange(-6, 7)
    psf_sigma = fwhm / 2.355
    psf = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / psf_sigma**2)
    psf /= psf.sum()
    filtered = signal.fftconvolve(noise, psf / np.sum(psf**2), mode="valid")
    assert 1.0 / filtered.std() == pytest.approx(correlated, rel=0.05)
    assert correlated < 0.6 * white


def test_score_clumps_counts_detectable_and_all_clumps():
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]])
    snr = np.array([20.0, 8.0, 2.0, 2.0])  # the last two are undetectable
    detected = np.array([[10.5, 10.0], [30.0, 31.0], [60.0, 60.0], [10.0, 11.5]])
    completeness, purity = score_clumps(detected, truth, snr)
    assert completeness == 0.5  # 10 found, 20 missed; faint ones do not count
    assert purity == 0.5  # (10.5, 10) and the faint (30, 31); (10, 11.5) is a duplicate
    completeness, _ = score_clumps(detected, truth)  # without S/N every clump counts
    assert completeness == 0.5
    assert np.isnan(score_clumps(np.zeros((0, 2)), truth, snr)[1])
    assert np.isnan(score_clumps(detected, truth, np.zeros(4))[0])
    with pytest.raises(ValueError, match="one S/N per clump"):
        score_clumps(detected, truth, snr[:2])


def test_score_clumps_leaves_out_clumps_without_data_and_keeps_their_detections_pure():
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    snr = np.array([20.0, 20.0, 20.0])
    truth_mask = np.zeros((40, 40), np.uint32)
    truth_mask[18:23, 18:23] = MaskBit.NO_DATA  # a chip gap under the second clump
    truth_mask[28:33, 28:33] = MaskBit.CR  # another plane changes nothing
    detected = np.array([[10.0, 10.5], [20.5, 20.0]])
    assert score_clumps(detected, truth, snr) == (2 / 3, 1.0)
    assert score_clumps(detected, truth, snr, truth_mask=truth_mask) == (0.5, 1.0)


def test_score_clumps_credits_the_detectable_clump():
    truth = np.array([[10.0, 10.0], [11.0, 10.0]])
    completeness, purity = score_clumps(np.array([[10.9, 10.0]]), truth, np.array([10.0, 1.0]))
    assert (completeness, purity) == (1.0, 1.0)


def test_artefact_pixel_scores_within_one_pixel_and_without_no_data():
    truth = np.zeros((10, 10), np.uint32)
    truth[:, 4] = MaskBit.CR  # a one-pixel-wide column, 10 pixels
    truth[0, :] = MaskBit.NO_DATA  # row 0 is not scored: 9 CR pixels remain
    predicted = np.zeros_like(truth)
    predicted[1:6, 5] = MaskBit.CR  # one pixel off: recalls rows 1-6 (within 1 px)
    predicted[9, 0] = MaskBit.CR  # a false positive
    predicted[0, 0] = MaskBit.CR  # on NO_DATA: ignored
    scores = artefact_pixel_scores(predicted, truth, ("CR", "STREAK"))
    recall, fpr = scores["CR"]
    assert recall == 6 / 9
    assert fpr == 6 / 81  # five pixels of column 5 and (9, 0), over 90 - 9 negatives
    assert np.isnan(scores["STREAK"][0])
    assert scores["STREAK"][1] == 0.0
    assert set(artefact_pixel_scores(predicted, truth)) == set(ARTEFACT_PLANES)
    with pytest.raises(ValueError, match="same mosaic"):
        artefact_pixel_scores(predicted[:5], truth)
    with pytest.raises(ValueError, match="unknown mask planes"):
        artefact_pixel_scores(predicted, truth, ("COSMIC",))


def test_segmentation_iou_of_footprints():
    truth = np.zeros((4, 4), np.int32)
    truth[0, :2] = 1
    truth[2, :2] = 2
    predicted = np.zeros((4, 4), np.int64)
    predicted[0, :3] = 7  # ids need not agree
    predicted[2, 0] = 9
    assert segmentation_iou(predicted, truth) == 3 / 5
    valid = np.ones((4, 4), bool)
    valid[0, 2] = False
    assert segmentation_iou(predicted, truth, valid) == 3 / 4
    assert np.isnan(segmentation_iou(np.zeros((4, 4), int), np.zeros((4, 4), int)))
    with pytest.raises(ValueError, match="same mosaic"):
        segmentation_iou(predicted[:2], truth)


def test_object_iou_penalises_merged_objects():
    truth = np.zeros((4, 6), np.int32)
    truth[1, 0:2] = 1
    truth[1, 3:5] = 2
    perfect = truth.astype(np.int64) * 100
    assert object_iou(perfect, truth) == 1.0
    merged = np.where(truth > 0, 5, 0)
    assert object_iou(merged, truth) == 0.5  # each object is half of the merged segment
    missing = np.where(truth == 1, 3, 0)
    assert object_iou(missing, truth) == 0.5  # object 2 has no segment: IoU 0
    assert np.isnan(object_iou(perfect, np.zeros_like(truth)))


def test_verdict_auc_by_ranks_with_ties_half():
    assert verdict_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert verdict_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    # one tie between a positive and a negative counts half: (1 + 1 + 1 + 0.5) / 4
    assert verdict_auc([0.1, 0.5, 0.5, 0.9], [False, False, True, True]) == 0.875
    assert verdict_auc([0.3, 0.3, 0.3], [True, False, False]) == 0.5
    assert np.isnan(verdict_auc([0.1, 0.2], [True, True]))
    assert np.isnan(verdict_auc([], []))
    with pytest.raises(ValueError, match="finite"):
        verdict_auc([np.nan, 1.0], [True, False])


def test_truth_tile_labels_from_core_fractions():
    mask = np.zeros((20, 20), np.uint32)
    mask[0, 0:3] = MaskBit.CR  # 3 of 100 pixels of tile 0
    mask[0, 10] = MaskBit.STREAK  # 1 of 100 pixels of tile 1
    mask[10:12, 0] = MaskBit.NO_DATA  # 2 of 100 pixels of tile 2
    mask[10, 10] = MaskBit.DETECTED  # not an artefact plane
    tiles = pd.DataFrame(
        {"x0": [0, 10, 0, 10], "x1": [10, 20, 10, 20], "y0": [0, 0, 10, 10], "y1": [10, 10, 20, 20]}
    )
    assert truth_tile_labels(mask, tiles).tolist() == [True, False, False, False]
    assert truth_tile_labels(mask, tiles, inspect_fraction=0.015).tolist() == [
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ValueError, match="not inside"):
        truth_tile_labels(mask[:10], tiles)


def test_artefact_pixel_precision_counts_flags_within_one_pixel_of_the_truth():
    truth = np.zeros((10, 10), np.uint32)
    truth[:, 4] = MaskBit.GHOST
    truth[0, :] = MaskBit.NO_DATA
    predicted = np.zeros_like(truth)
    predicted[1:6, 5] = MaskBit.GHOST  # one pixel off: right
    predicted[1:4, 8] = MaskBit.GHOST  # four pixels off: wrong
    predicted[0, 4] = MaskBit.GHOST  # on NO_DATA: ignored
    precision = artefact_pixel_precision(predicted, truth, ("GHOST", "CR"))
    assert precision["GHOST"] == 5 / 8
    assert np.isnan(precision["CR"])  # nothing flagged


def test_reliability_curve_and_expected_calibration_error():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    calibrated = rng.random(p.size) < p
    assert expected_calibration_error(p, calibrated) < 0.01
    overconfident = np.where(p > 0.5, 1.0, 0.0)
    assert expected_calibration_error(overconfident, calibrated) == pytest.approx(0.25, abs=0.01)
    curve = reliability_curve([0.05, 0.05, 0.95, 1.0], [False, True, True, True], bins=10)
    assert curve["count"].tolist() == [2, 2]
    assert curve["frequency"].tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        reliability_curve([1.5], [True])


def test_touching_objects_are_those_whose_footprints_meet():
    seg = np.zeros((8, 12), dtype=np.int32)
    seg[1:4, 1:4] = 1
    seg[4:6, 4:6] = 2  # diagonal neighbour of 1: they touch
    seg[1:4, 8:11] = 3  # alone
    seg[6:8, 8:10], seg[6:8, 10:12] = 4, 5  # side by side
    assert touching_objects(seg).tolist() == [1, 2, 4, 5]
    with pytest.raises(ValueError, match="2-D integer label map"):
        touching_objects(seg.astype(float))


def test_blend_flag_scores_of_isolated_and_blended_objects():
    seg = np.zeros((20, 40), dtype=np.int32)
    seg[2:6, 2:6], seg[2:6, 6:10] = 1, 2  # a blend
    seg[12:16, 2:6], seg[12:16, 20:24], seg[12:16, 30:34] = 3, 4, 5  # isolated
    truth = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "x": [4.0, 8.0, 4.0, 22.0, 32.0, 36.0],
            "y": [4.0, 4.0, 14.0, 14.0, 14.0, 2.0],
            "snr": [50.0, 20.0, 30.0, 30.0, 30.0, 5.0],  # 6 is too faint to count
        }
    )
    detected = pd.DataFrame(
        {
            "x": [4.2, 8.1, 4.0, 22.0, 36.0],
            "y": [4.0, 4.1, 14.0, 14.0, 2.0],
            "is_blended": [True, False, True, False, True],
        }
    )  # 5 is missed: it counts in neither
    isolated, blended = blend_flag_scores(detected, truth, seg, radius=1.5)
    assert isolated == pytest.approx(0.5) and blended == pytest.approx(0.5)
    mask = np.zeros(seg.shape, dtype=np.uint32)
    mask[14, 4] = MaskBit.NO_DATA  # object 3 is in a hole: left out
    isolated, _ = blend_flag_scores(detected, truth, seg, radius=1.5, truth_mask=mask)
    assert isolated == 0.0
