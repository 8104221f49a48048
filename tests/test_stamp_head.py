import json

import numpy as np
import pytest
import torch

from survey_seg.errors import InputError
from survey_seg.inference import Predictor, load_model_config
from survey_seg.masks import MaskBit
from survey_seg.models.unet import QUALITY_CLASSES, UNetConfig
from survey_seg.stamp_head import StampHeadConfig, calibrate_stamp_head, fit_temperature
from survey_seg.train import stamp_labels

TINY = UNetConfig(width=4, depth=2, stamp_size=32)


def test_stamp_labels_are_class_presence_and_the_flagged_fraction():
    mask = np.zeros((64, 64), np.uint32)
    mask[3, 3] = MaskBit.CR  # one cosmic-ray pixel
    mask[40:64, 0:2] = MaskBit.BAD  # 48 of 1024 pixels
    mask[0:10, 32:34] = MaskBit.GHOST  # 20 pixels, 4 of them also a trail
    mask[0:2, 32:34] |= np.uint32(MaskBit.STREAK)
    labels = stamp_labels(mask, 32)
    cosmic_ray, bad_column, ghost, trail = (
        QUALITY_CLASSES.index(name)
        for name in ("cosmic_ray", "bad_column", "ghost", "satellite_trail")
    )
    assert QUALITY_CLASSES[-1] == "flagged"
    assert labels.shape == (len(QUALITY_CLASSES), 2, 2)
    assert labels[cosmic_ray, 0, 0] == 1 and labels[-1, 0, 0] == 1 / 1024
    assert labels[ghost, 0, 1] == labels[trail, 0, 1] == 1
    assert labels[-1, 0, 1] == 20 / 1024  # a pixel of two planes counts once
    assert labels[bad_column, 1, 0] == 1 and labels[-1, 1, 0] == 48 / 1024
    assert labels[:, 1, 1].sum() == 0


def test_fit_temperature_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 20_000)
    labels = rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))
    assert fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(true_logits, np.ones(10)) == 1.0  # one class only


def test_calibration_refits_the_stamp_head_only_and_the_predictor_applies_it(write_model, tmp_path):
    source = write_model(tmp_path, config=TINY)
    config = StampHeadConfig(scenes=3, validation_scenes=3, scene_size=128, epochs=2)
    calibrated = calibrate_stamp_head(source, tmp_path / "calibrated", config, threads=1)
    entry = load_model_config(calibrated)["stamp_calibration"]
    assert len(entry["temperature"]) == len(QUALITY_CLASSES)
    assert {"ece", "tile_auc", "reliability", "ece_by_class"} <= set(entry["validation_after"])
    before = torch.load(tmp_path / "tiny.pt", weights_only=True)
    after = torch.load(calibrated.parent / "tiny.pt", weights_only=True)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("stamp_head.") for name in changed)

    planes = np.random.default_rng(2).normal(size=(3, 64, 64)).astype(np.float32)
    plain = Predictor(calibrated, device="cpu", precision="float32")
    temperature = np.asarray(entry["temperature"], np.float32)
    plain.stamp_temperature = None
    raw = plain.predict(planes).stamps
    scaled = Predictor(calibrated, device="cpu", precision="float32").predict(planes).stamps
    logits = np.log(raw / (1 - raw))
    expected = 1 / (1 + np.exp(-logits / temperature[:, None, None]))
    np.testing.assert_allclose(scaled, expected, atol=1e-4)


def test_wide_psf_stamps_are_seen_binned_and_labelled_by_their_native_pixels(write_model, tmp_path):
    from survey_seg.inference import load_network
    from survey_seg.stamp_head import stamp_set
    from survey_seg.train import wide_psf_binning

    source = write_model(tmp_path, config=TINY)
    model, _ = load_network(source, load_model_config(source), torch.device("cpu"))
    seeds = [s for s in range(40) if wide_psf_binning(s, 0.5) > 1][:2]
    plain = stamp_set(model, seeds, StampHeadConfig(scene_size=128))
    wide = stamp_set(model, seeds, StampHeadConfig(scene_size=128, wide_psf_fraction=0.5))
    # the same number of stamps (a binned scene is the scene size), other pixels and truth
    assert wide.features.shape == plain.features.shape
    assert not np.allclose(wide.features, plain.features)
    assert (wide.labels[:, -1] >= 0).all() and (wide.labels[:, -1] <= 1).all()
    with pytest.raises(ValueError, match="wide_psf_fraction"):
        StampHeadConfig(wide_psf_fraction=-1.0)


def test_a_broken_stamp_calibration_is_refused(write_model, tmp_path):
    path = write_model(tmp_path, stamp_calibration={"temperature": [1.0, -2.0]})
    with pytest.raises(InputError, match=r"stamp_calibration.temperature must be a list of 7"):
        load_model_config(path)
    config = json.loads(path.read_text())
    config["stamp_calibration"] = {"temperature": [1.5] * len(QUALITY_CLASSES)}
    path.write_text(json.dumps(config))
    assert load_model_config(path)["stamp_calibration"]["temperature"][0] == 1.5
