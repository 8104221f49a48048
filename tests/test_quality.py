import numpy as np
import pytest

from survey_seg.masks import MaskBit
from survey_seg.quality import (
    NETWORK_ARTEFACT_BITS,
    artefact_planes,
    flagged_fraction,
    tile_verdict,
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
