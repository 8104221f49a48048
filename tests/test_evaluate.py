import numpy as np
import pandas as pd

from survey_seg.evaluate import match_positions, score_catalog


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
