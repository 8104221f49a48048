"""Tests of survey_seg.piece_training: labels from the truth, recording and fitting."""

from dataclasses import replace

import numpy as np
import pytest

from survey_seg.piece_training import (
    PieceTrainingConfig,
    accuracy,
    fit_classifier,
    pair_labels,
    simulated_pairs,
)
from survey_seg.pieces import PAIR_FEATURES
from survey_seg.simulate import SimulationConfig


def test_a_pair_is_apart_only_when_its_sources_match_two_truth_objects():
    # labels 0 .. 4: two sources on two objects, a piece near the first, one on nothing
    positions = np.array([[np.nan, np.nan], [10.0, 10.0], [30.0, 10.0], [12.5, 10.0], [80, 80]])
    truth = np.array([[10.2, 10.0], [30.0, 10.5]])
    pairs = np.array([[1, 2], [1, 3], [2, 3], [3, 4]])
    np.testing.assert_array_equal(pair_labels(pairs, positions, truth, radius=4.0), [0, 1, 1, 1])


def test_the_touching_pairs_of_a_simulated_scene_are_recorded_with_their_labels():
    features, labels = simulated_pairs(SimulationConfig(size=384, seed=3, galaxy_density=600.0))
    assert features.shape == (len(labels), len(PAIR_FEATURES)) and len(labels) > 5
    assert np.isfinite(features).all()
    assert set(np.unique(labels)) <= {0.0, 1.0}
    # most touching pairs of an ordinary crowded scene are two objects
    assert labels.mean() < 0.5


def test_a_scene_the_network_would_screen_binned_gives_no_pairs():
    features, labels = simulated_pairs(SimulationConfig(size=64, seed=0, psf_fwhm_pix=5.4))
    assert features.shape == (0, len(PAIR_FEATURES)) and labels.size == 0


def test_the_classifier_learns_a_rule_it_is_shown():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, len(PAIR_FEATURES))).astype(np.float32)
    # one object when the saddle is high against the fainter peak
    labels = (features[:, PAIR_FEATURES.index("saddle_to_fainter_peak")] > 0.3).astype(np.float32)
    config = replace(PieceTrainingConfig(), hidden=8, steps=500, min_probability=0.5)
    classifier = fit_classifier(features[:1500], labels[:1500], config)
    measured = accuracy(classifier, features[1500:], labels[1500:])
    assert measured["accuracy"] > 0.95
    assert measured["pairs"] == 500
    assert measured["one_object_fraction"] == pytest.approx(labels[1500:].mean())
