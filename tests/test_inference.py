import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from survey_seg.errors import InputError
from survey_seg.inference import (
    DEFAULT_MODEL,
    OPTIONAL_HEADS,
    PREDICTION_HEADS,
    Predictor,
    load_predictor,
    network_input,
    resolve_precision,
)
from survey_seg.models.unet import HEADS, QUALITY_CLASSES, UNetConfig
from survey_seg.train import DEFAULT_THRESHOLDS


def _corrupt(weights):
    """Flip the last byte of a weight file (its sha256 no longer matches)."""
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def test_network_input_planes():
    image = np.array([[10.0, np.nan], [30.0, 210.0]], np.float32)
    variance = np.array([[4.0, 4.0], [0.0, 4.0]], np.float32)
    planes = network_input(image, variance, np.full((2, 2), 4.0, np.float32), 200.0)
    assert planes.shape == (3, 2, 2) and planes.dtype == np.float32
    assert planes[0, 0, 0] == pytest.approx(np.arcsinh(3.0 / 3.0))
    np.testing.assert_array_equal(planes[2], [[1, 0], [0, 1]])
    assert planes[0, 0, 1] == planes[0, 1, 0] == 0.0  # no data is zero
    assert planes[1, 1, 1] == pytest.approx(1.05)


@pytest.mark.parametrize("flips", [1, 2, 4])
def test_predictor_shapes_and_padding(write_model, tmp_path, flips):
    predictor = Predictor(write_model(tmp_path), device="cpu", flips=flips)
    planes = np.random.default_rng(0).normal(size=(3, 50, 37)).astype(np.float32)
    prediction = predictor.predict(planes)
    assert prediction.segmentation.shape == (3, 50, 37)
    np.testing.assert_allclose(prediction.segmentation.sum(axis=0), 1.0, rtol=1e-5)
    assert prediction.centre.shape == prediction.clump.shape == (50, 37)
    assert prediction.artefact.shape == (HEADS["artefact"], 50, 37)
    assert prediction.stamps.shape == (len(QUALITY_CLASSES), 4, 3)
    assert 0 <= prediction.centre.min() and prediction.centre.max() <= 1


def test_flips_average_the_passes_on_the_flipped_windows(write_model, tmp_path):
    path = write_model(tmp_path)
    planes = np.random.default_rng(1).normal(size=(3, 32, 48)).astype(np.float32)
    one = Predictor(path, device="cpu", precision="float32", flips=1)
    two = Predictor(path, device="cpu", precision="float32", flips=2).predict(planes)
    turned = one.predict(np.ascontiguousarray(planes[:, ::-1, ::-1]))
    upright = one.predict(planes)
    for name in ("segmentation", "centre", "clump", "artefact", "stamps"):
        expected = (getattr(upright, name) + getattr(turned, name)[..., ::-1, ::-1]) / 2
        np.testing.assert_allclose(getattr(two, name), expected, atol=1e-6, err_msg=name)
    assert not np.allclose(two.centre, upright.centre, atol=1e-4)  # the turn changes outputs


def _answering_model(write_model, directory, config, head: str, wake) -> Path:
    """A tiny model with ``head`` among its trained heads, its weights stirred by ``wake``.

    An optional head starts flat: it has to be made to answer.
    """
    from survey_seg.models.unet import ScreeningUNet

    path = write_model(directory, config=config, heads=[*PREDICTION_HEADS, head])
    torch.manual_seed(2)
    model = ScreeningUNet(config)
    with torch.no_grad():
        wake(model)
    torch.save(model.state_dict(), directory / "tiny.pt")
    spec = json.loads(path.read_text())
    spec["sha256"] = hashlib.sha256((directory / "tiny.pt").read_bytes()).hexdigest()
    path.write_text(json.dumps(spec))
    return path


def _upright_turned_and_both(path: Path, planes: np.ndarray):
    """One pass on the planes, one on them turned by 180 degrees, and the two-flip mean."""
    one = Predictor(path, device="cpu", precision="float32", flips=1)
    upright, turned = one.predict(planes), one.predict(np.ascontiguousarray(planes[:, ::-1, ::-1]))
    two = Predictor(path, device="cpu", precision="float32", flips=2).predict(planes)
    return upright, turned, two


def test_offsets_seen_on_flipped_windows_are_turned_back(write_model, tmp_path):
    config = UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True)
    path = _answering_model(
        write_model, tmp_path, config, "offset", lambda model: model.pixel_head.weight.normal_()
    )
    planes = np.random.default_rng(1).normal(size=(3, 32, 48)).astype(np.float32)
    upright, turned, two = _upright_turned_and_both(path, planes)
    # turned by 180 degrees, a vector to the centre points the other way
    expected = (upright.offset - turned.offset[:, ::-1, ::-1]) / 2
    np.testing.assert_allclose(two.offset, expected, atol=1e-5)
    assert np.abs(upright.offset).max() > 1.0
    assert (
        Predictor(write_model(tmp_path, name="plain"), device="cpu").predict(planes).offset is None
    )


def test_predict_batch_gives_each_windows_prediction(write_model, tmp_path):
    predictor = Predictor(write_model(tmp_path), device="cpu", precision="float32", flips=2)
    windows = np.random.default_rng(2).normal(size=(2, 3, 32, 64)).astype(np.float32)
    batch = predictor.predict_batch(torch.from_numpy(windows))
    for k, planes in enumerate(windows):
        single = predictor.predict(planes)
        for name, value in batch.items():
            expected = getattr(single, name)
            got = value[k, 0] if name in ("centre", "clump") else value[k]
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, err_msg=name)
    with pytest.raises(InputError, match="multiples of"):
        predictor.predict_batch(torch.from_numpy(windows[:, :, :30]))


def test_flips_default_to_the_model_config_and_bad_values_are_refused(write_model, tmp_path):
    path = write_model(tmp_path)
    assert Predictor(path, device="cpu").flips == 1
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "test_time_flips": 4}))
    assert Predictor(path, device="cpu").flips == 4
    assert Predictor(path, device="cpu", flips=2).flips == 2
    with pytest.raises(InputError, match=r"^flips must be 1, 2 or 4 .* got 3"):
        Predictor(path, device="cpu", flips=3)
    path.write_text(json.dumps({**config, "test_time_flips": "two"}))
    with pytest.raises(InputError, match=r"tiny.json: test_time_flips must be 1, 2 or 4"):
        Predictor(path, device="cpu")


def test_weight_file_with_a_wrong_hash_is_refused(write_model, tmp_path):
    path = write_model(tmp_path)
    weights = tmp_path / "tiny.pt"
    _corrupt(weights)
    with pytest.raises(InputError, match=r"sha256.*changed or corrupted"):
        Predictor(path, device="cpu")


def test_missing_or_broken_model_config_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Predictor(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        Predictor(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text('{"weights": "x.pt"}')
    with pytest.raises(InputError, match="lacks"):
        Predictor(tmp_path / "partial.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(weigths="x.pt"), r"unknown keys \['weigths'\]; use only"),
        (lambda c: c["thresholds"].update(objet=0.4), r"unknown thresholds keys \['objet'\]"),
        (lambda c: c["thresholds"].pop("clump"), r"lacks thresholds \['clump'\]"),
        (lambda c: c.update(thresholds=[0.5]), "thresholds is not an object"),
        (
            lambda c: c["thresholds"].update(max_border_boundary=0.15),
            r"\['max_border_boundary'\] read the boundary head.*--boundary-head",
        ),
        (
            lambda c: c["thresholds"].update(min_vote_fraction=0.5),
            r"\['min_vote_fraction'\] read the offset head.*--offset-head",
        ),
    ],
)
def test_model_config_with_unknown_or_missing_keys_is_refused(write_model, tmp_path, edit, message):
    """A typo in a model config is an error, never a silent fallback to a default."""
    path = write_model(tmp_path)
    spec = json.loads(path.read_text())
    edit(spec)
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match=message):
        Predictor(path, device="cpu")


PSF_ENTRY = {
    "nominal_psf_fwhm_pix": 1.8,
    "conditions": [{"psf_ratio": 1.25, "clump": 0.3, "centre": 0.25}],
}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ([1.25], "psf_thresholds is not an object"),
        ({"conditions": []}, r"lacks psf_thresholds \['nominal_psf_fwhm_pix'\]"),
        ({**PSF_ENTRY, "nominal_psf_fwhm_pix": -1}, "must be a number > 0"),
        ({**PSF_ENTRY, "conditions": {"psf_ratio": 1.2}}, "must be a list of objects"),
        ({**PSF_ENTRY, "conditions": [{"psf_ratio": 1.2, "clumps": 0.3}]}, r"\['clumps'\]"),
        ({**PSF_ENTRY, "conditions": [{"psf_ratio": 1, "clump": 0.3}]}, "other than 1"),
        ({**PSF_ENTRY, "conditions": [{"psf_ratio": 1.2, "clump": 1.5}]}, r"lie in \(0, 1\)"),
        ({**PSF_ENTRY, "conditions": [{"psf_ratio": 1.2}, {"psf_ratio": 1.2}]}, "twice"),
        (
            {**PSF_ENTRY, "conditions": [{"psf_ratio": 1.2, "clump_peak_min_to_centre": 0.5}]},
            "has no value at the nominal PSF",
        ),
    ],
)
def test_bad_psf_thresholds_are_refused(write_model, tmp_path, entry, message):
    path = write_model(tmp_path)
    spec = json.loads(path.read_text())
    spec["psf_thresholds"] = entry
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match=message):
        Predictor(path, device="cpu")
    spec["psf_thresholds"] = PSF_ENTRY
    path.write_text(json.dumps(spec))
    assert Predictor(path, device="cpu").config["psf_thresholds"] == PSF_ENTRY


def test_a_ratio_tuned_per_psf_may_exceed_1_but_must_be_positive(write_model, tmp_path):
    path = write_model(tmp_path)
    spec = json.loads(path.read_text())
    spec["thresholds"]["clump_peak_min_to_centre"] = 0.85
    spec["psf_thresholds"] = {
        **PSF_ENTRY,
        "conditions": [{"psf_ratio": 0.75, "clump_peak_min_to_centre": 1.5}],
    }
    path.write_text(json.dumps(spec))
    assert Predictor(path, device="cpu").config["psf_thresholds"]["conditions"][0][
        "clump_peak_min_to_centre"
    ] == pytest.approx(1.5)
    spec["psf_thresholds"]["conditions"][0]["clump_peak_min_to_centre"] = -1.0
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="must be a number > 0"):
        Predictor(path, device="cpu")


def test_trained_thresholds_are_exactly_the_required_ones():
    from survey_seg.inference import THRESHOLDS_REQUIRED

    assert set(DEFAULT_THRESHOLDS) == THRESHOLDS_REQUIRED


def test_weights_load_only_as_plain_tensors(write_model, tmp_path):
    """A weight file that would need unpickling of code is refused by weights_only."""
    path = write_model(tmp_path)
    weights = tmp_path / "tiny.pt"

    class Sneaky:
        def __reduce__(self):
            return (print, ("unpickled",))

    torch.save({"payload": Sneaky()}, weights)
    spec = json.loads(path.read_text())
    spec["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="does not hold plain tensors"):
        Predictor(path, device="cpu")


def test_clump_model_replaces_the_clump_map_only(write_model, tmp_path):
    clump_net = UNetConfig(width=2, depth=1, stamp_size=8)
    clumps = write_model(tmp_path, config=clump_net, name="clumps", seed=1, heads=["clump"])
    main = write_model(tmp_path, name="main")
    combined = write_model(tmp_path, name="combined", clump_model=clumps.name)
    planes = np.random.default_rng(2).normal(size=(3, 48, 32)).astype(np.float32)
    kwargs = {"device": "cpu", "precision": "float32", "flips": 2}
    both = Predictor(combined, **kwargs)
    assert both.clump_sha256 == json.loads(clumps.read_text())["sha256"]
    together = both.predict(planes)
    alone = Predictor(main, **kwargs).predict(planes)
    clump_alone = Predictor(clumps, **kwargs).predict(planes)
    np.testing.assert_allclose(together.clump, clump_alone.clump, atol=1e-6)
    assert np.abs(together.clump - alone.clump).max() > 1e-4  # two different networks
    for name in ("segmentation", "centre", "artefact", "stamps"):
        np.testing.assert_allclose(getattr(together, name), getattr(alone, name), atol=1e-6)


def test_clump_model_with_a_wrong_hash_is_refused(write_model, tmp_path):
    clumps = write_model(tmp_path, name="clumps", seed=1)
    combined = write_model(tmp_path, name="combined", clump_model=clumps.name)
    weights = tmp_path / "clumps.pt"
    _corrupt(weights)
    with pytest.raises(InputError, match=r"clumps.pt has sha256 .*changed or corrupted"):
        Predictor(combined, device="cpu")
    with pytest.raises(InputError, match=r"clumps.pt has sha256"):
        load_predictor(combined, "cpu")


@pytest.mark.parametrize(
    ("entry", "clump_spec", "message"),
    [
        ("sub/clumps.json", {}, "must be the file name of a model config beside it"),
        ("combined.json", {}, "names the config itself"),
        ("missing.json", {}, "missing.json, which does not exist; copy"),
        ("clumps.json", {"clump_model": "other.json"}, "names a clump model of its own"),
        ("clumps.json", {"heads": ["segmentation"]}, "trained without a clump head"),
        ("clumps.json", {"config": UNetConfig(width=2, depth=3, stamp_size=16)}, "deeper"),
    ],
)
def test_bad_clump_model_entries_are_refused(write_model, tmp_path, entry, clump_spec, message):
    write_model(tmp_path, name="clumps", **clump_spec)
    combined = write_model(tmp_path, name="combined", clump_model=entry)
    with pytest.raises(InputError, match=message):
        Predictor(combined, device="cpu")


def test_predictor_is_loaded_once_per_process(write_model, tmp_path):
    path = write_model(tmp_path)
    assert load_predictor(path, "cpu") is load_predictor(path, "cpu")


def test_cuda_request_without_gpu_is_refused(write_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="no CUDA GPU"):
        Predictor(write_model(tmp_path), device="cuda")


def test_shipped_weights_load_and_match_their_hash():
    predictor = Predictor(DEFAULT_MODEL, device="cpu")
    config = json.loads(DEFAULT_MODEL.read_text())
    assert predictor.sha256 == config["sha256"]
    weight_files = [config["weights"]]
    if "clump_model" in config:
        clump_config = json.loads((DEFAULT_MODEL.parent / config["clump_model"]).read_text())
        assert predictor.clump_sha256 == clump_config["sha256"]
        weight_files.append(clump_config["weights"])
    if "pieces" in config:
        weight_files.append(config["pieces"]["classifier"])
    for name in weight_files:
        assert (DEFAULT_MODEL.parent / name).stat().st_size < 10_000_000, name


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(InputError, match="float32"):
        resolve_precision("half", cpu)


def test_bfloat16_probabilities_stay_close_to_float32():
    from survey_seg.simulate import SimulationConfig, simulate_mosaic
    from survey_seg.train import scene_inputs

    planes = scene_inputs(simulate_mosaic(SimulationConfig(size=192, seed=3)))
    exact = Predictor(DEFAULT_MODEL, device="cpu", precision="float32").predict(planes)
    fast = Predictor(DEFAULT_MODEL, device="cpu", precision="bfloat16").predict(planes)
    for name in ("segmentation", "centre", "clump", "artefact", "stamps"):
        assert getattr(fast, name).dtype == np.float32
        assert np.abs(getattr(fast, name) - getattr(exact, name)).max() < 0.1, name
    assert exact.segmentation[1:].max() > 0.9  # the scene has objects to disagree on


def test_the_boundary_head_gives_a_probability_map_averaged_over_flips(write_model, tmp_path):
    def wake(model):
        model.boundary_head.weight.normal_(std=10.0)
        model.boundary_head.bias.zero_()

    config = UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True, boundary_head=True)
    path = _answering_model(write_model, tmp_path, config, "boundary", wake)
    planes = np.random.default_rng(4).normal(size=(3, 32, 48)).astype(np.float32)
    upright, turned, two = _upright_turned_and_both(path, planes)
    assert upright.boundary.shape == (32, 48)
    assert 0.0 <= upright.boundary.min() and upright.boundary.max() <= 1.0
    assert upright.boundary.std() > 1e-3  # a map, not a constant
    expected = (upright.boundary + turned.boundary[::-1, ::-1]) / 2
    np.testing.assert_allclose(two.boundary, expected, atol=1e-6)
    assert upright.offset.shape == (2, 32, 48)
    assert (
        Predictor(write_model(tmp_path, name="plain"), device="cpu").predict(planes).boundary
        is None
    )


def test_thresholds_of_a_trained_optional_head_are_accepted(write_model, tmp_path):
    config = UNetConfig(width=4, depth=2, stamp_size=16, offset_head=True, boundary_head=True)
    thresholds = {**DEFAULT_THRESHOLDS, "max_border_boundary": 0.15, "min_vote_fraction": 0.5}
    path = write_model(
        tmp_path, config=config, heads=[*PREDICTION_HEADS, *OPTIONAL_HEADS], thresholds=thresholds
    )
    assert Predictor(path, device="cpu").config["thresholds"]["max_border_boundary"] == 0.15
