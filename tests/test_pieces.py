"""Tests of survey_seg.pieces: pair features, the classifier and the mutex joining."""

from dataclasses import replace

import numpy as np
import pytest

from survey_seg.pieces import (
    PAIR_FEATURES,
    PieceClassifier,
    join_pieces,
    join_pieces_by_probability,
    pair_features,
)


def _two_blobs(separation: float, size: int = 48, sigma: float = 2.0):
    """Two Gaussian blobs along x, the left one twice as bright, cut at the midpoint."""
    ys, xs = np.indices((size, size), dtype=float)
    cy, left, right = size / 2, size / 2 - separation / 2, size / 2 + separation / 2
    image = 100 * np.exp(-((ys - cy) ** 2 + (xs - left) ** 2) / (2 * sigma**2)) + 50 * np.exp(
        -((ys - cy) ** 2 + (xs - right) ** 2) / (2 * sigma**2)
    )
    footprints = (image > 1.0).astype(np.int32)
    sources = np.where(footprints > 0, np.where(xs < size / 2, 1, 2), 0).astype(np.int32)
    return sources, footprints, image


def _features(sources, footprints, image, psf=2.0):
    zeros = np.zeros_like(image)
    return pair_features(sources, footprints, image, image, zeros, zeros, zeros, psf)


def test_a_touching_pair_is_described_brighter_first_in_psf_widths():
    sources, footprints, image = _two_blobs(separation=8.0)
    features = _features(sources, footprints, image)
    assert features.pairs.tolist() == [[1, 2]]
    row = dict(zip(PAIR_FEATURES, features.values[0], strict=True))
    assert row["log_peak_brighter"] > row["log_peak_fainter"]
    assert row["log_flux_ratio"] == pytest.approx(np.log10(0.5), abs=0.05)
    assert row["distance_fwhm"] == pytest.approx(4.0, abs=0.6)  # 8 px at 2 px FWHM
    assert 0 < row["saddle_to_fainter_peak"] < 1
    assert row["log_footprint_members"] == pytest.approx(np.log10(2))
    # the same pair at twice the pixel scale (and FWHM) has the same distance in FWHM
    coarse = _features(*_two_blobs(separation=16.0, size=96, sigma=4.0), psf=4.0)
    assert coarse.values[0][PAIR_FEATURES.index("distance_fwhm")] == pytest.approx(
        row["distance_fwhm"], abs=0.3
    )


def test_sources_of_two_footprints_or_alone_make_no_pair():
    sources, footprints, image = _two_blobs(separation=8.0)
    apart = np.where(sources == 2, 2, footprints)  # each source its own footprint
    assert len(_features(sources, apart, image).pairs) == 0
    assert len(_features(np.minimum(sources, 1), footprints, image).pairs) == 0


def test_arrays_of_other_shapes_are_refused():
    sources, footprints, image = _two_blobs(separation=8.0)
    with pytest.raises(ValueError, match="share a shape"):
        pair_features(sources, footprints, image, image[1:], image, image, image, 2.0)
    with pytest.raises(ValueError, match="positive"):
        _features(sources, footprints, image, psf=0.0)


def test_the_surest_decisions_come_first_and_a_group_judged_apart_stays_apart():
    sources = np.array([[1, 2, 3]])
    pairs = np.array([[1, 2], [2, 3], [1, 3]])
    # 1-2 sure, 1-3 surely apart, so 2-3 (less sure) may not join 3 to 1 and 2
    joined = join_pieces_by_probability(sources, pairs, np.array([0.95, 0.7, 0.02]), 0.5)
    assert joined.tolist() == [[1, 1, 3]]
    # without the pair judged apart, the chain joins all three
    joined = join_pieces_by_probability(sources, pairs[:2], np.array([0.95, 0.7]), 0.5)
    assert joined.tolist() == [[1, 1, 1]]
    # a higher threshold joins only the surest
    joined = join_pieces_by_probability(sources, pairs[:2], np.array([0.95, 0.7]), 0.8)
    assert joined.tolist() == [[1, 1, 3]]


def _classifier(bias: float) -> PieceClassifier:
    n = len(PAIR_FEATURES)
    rng = np.random.default_rng(0)
    return PieceClassifier(
        mean=np.zeros(n),
        scale=np.ones(n),
        weights=(rng.normal(size=(4, n)), np.zeros((1, 4))),
        biases=(np.zeros(4), np.array([bias])),
    )


def test_a_classifier_reads_back_what_it_writes_and_refuses_other_features(tmp_path):
    classifier = _classifier(0.3)
    path = tmp_path / "pieces.json"
    classifier.write(path)
    features = np.random.default_rng(1).normal(size=(5, len(PAIR_FEATURES)))
    read = PieceClassifier.read(path)
    np.testing.assert_allclose(read.probability(features), classifier.probability(features))
    np.testing.assert_allclose(classifier.probability(features), 1 / (1 + np.exp(-0.3)))
    with pytest.raises(ValueError, match="PAIR_FEATURES order"):
        classifier.probability(features[:, :3])
    entry = classifier.to_dict() | {"features": ["a", "b"]}
    with pytest.raises(ValueError, match="retrain"):
        PieceClassifier.from_dict(entry)


def test_join_pieces_joins_by_the_classifier_and_relabels():
    sources, footprints, image = _two_blobs(separation=8.0)
    features = _features(sources, footprints, image)
    joined = join_pieces(sources, features, _classifier(5.0))
    assert set(np.unique(joined)) == {0, 1}
    kept = join_pieces(sources, features, _classifier(-5.0))
    np.testing.assert_array_equal(kept, sources)


def test_no_group_holds_two_sources_the_network_is_sure_of():
    """Stars 1 and 3, sure centres, each judged one object with the faint piece 2
    between them: the piece joins the surer pair's star, and the stars stay apart."""
    sources = np.array([[1, 2, 3]])
    pairs = np.array([[1, 2], [2, 3]])
    probability = np.array([0.97, 0.99])
    sure = np.array([False, True, False, True])
    joined = join_pieces_by_probability(sources, pairs, probability, 0.5, sure)
    assert joined.tolist() == [[1, 2, 2]]
    assert join_pieces_by_probability(sources, pairs, probability, 0.5).tolist() == [[1, 1, 1]]


def test_a_knot_the_network_is_sure_of_still_joins_its_galaxy():
    """A galaxy and a bright knot on it, both with sure centres: the sure rule
    keeps them apart, unless the clump head marks the knot as one."""
    sources, footprints, image = _two_blobs(separation=8.0)
    centre = np.where(sources > 0, 0.9, 0.0)  # both sources: sure centres
    clump = np.where(sources == 2, 0.6, 0.0)  # the fainter one: a clump
    zeros = np.zeros_like(image)
    features = pair_features(sources, footprints, image, image, centre, clump, zeros, 2.0)
    np.testing.assert_allclose(features.source_clump, [0.0, 0.0, 0.6])
    sure = replace(_classifier(5.0), sure_centre=0.3)
    assert set(np.unique(join_pieces(sources, features, sure))) == {0, 1, 2}
    knots_join = replace(sure, knot_clump=0.5)
    assert set(np.unique(join_pieces(sources, features, knots_join))) == {0, 1}
    stricter = replace(sure, knot_clump=0.7)  # a clump probability under it: still sure
    assert set(np.unique(join_pieces(sources, features, stricter))) == {0, 1, 2}
    read = PieceClassifier.from_dict(knots_join.to_dict())
    assert read.knot_clump == 0.5 and read.sure_centre == 0.3
