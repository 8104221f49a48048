from dataclasses import replace

import numpy as np
import pytest
import torch

from survey_seg.inference import Predictor
from survey_seg.masks import MaskBit
from survey_seg.models.unet import ScreeningUNet, UNetConfig
from survey_seg.simulate import SimulationConfig, simulate_mosaic
from survey_seg.train import (
    TASKS,
    StepBatches,
    TrainConfig,
    loss_weights,
    make_batch,
    scene_config,
    task_loss,
    train,
    undersampled_scene_inputs,
)

TINY = UNetConfig(width=4, depth=2, stamp_size=32)


def _config(**overrides):
    values = {"steps": 4, "batch_size": 2, "crop": 64, "scene_size": 128,
              "architecture": TINY, "checkpoint_every": 2, "threads": 1}  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def test_batches_are_deterministic_by_seed():
    config = _config()
    a = make_batch([3, 4], np.random.default_rng(0), config)
    b = make_batch([3, 4], np.random.default_rng(0), config)
    c = make_batch([5, 6], np.random.default_rng(0), config)
    torch.testing.assert_close(a[0], b[0])
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], equal_nan=True)
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (2, 3, 64, 64)
    assert a[1]["stamps"].shape == (2, 7, 2, 2)


def test_training_with_data_workers_gives_the_same_run(tmp_path):
    in_process = train("screening", tmp_path / "a", _config(steps=2))
    with_workers = train("screening", tmp_path / "b", _config(steps=2, data_workers=2))
    assert with_workers.losses == in_process.losses


def test_step_batches_are_the_same_in_worker_processes():
    config = _config(steps=3)
    in_process = [StepBatches(config, start_step=1)[i] for i in range(2)]
    loader = torch.utils.data.DataLoader(
        StepBatches(config, start_step=1),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="spawn",  # as train() runs them
    )
    from_workers = list(loader)
    assert len(from_workers) == 2
    for (inputs, targets), (expected_inputs, expected_targets) in zip(
        from_workers, in_process, strict=True
    ):
        torch.testing.assert_close(inputs, expected_inputs)
        for name, target in targets.items():
            torch.testing.assert_close(target, expected_targets[name], equal_nan=True)


def test_crowded_scenes_keep_the_other_traits_and_hold_many_stars():
    plain = [scene_config(seed, size=128) for seed in range(40)]
    crowded = [scene_config(seed, size=128, crowded_fraction=0.5) for seed in range(40)]
    dense = [c for c in crowded if c.star_density >= 500]
    assert 10 <= len(dense) <= 30
    for before, after in zip(plain, crowded, strict=True):
        assert after.psf_fwhm_pix == before.psf_fwhm_pix
        assert after.n_cosmic_rays == before.n_cosmic_rays
    assert all(c.star_density < 500 for c in plain)
    denser = [
        scene_config(seed, size=128, crowded_fraction=0.5, crowded_density=(8000.0, 20000.0))
        for seed in range(40)
    ]
    for before, after in zip(crowded, denser, strict=True):
        if before.star_density >= 500:
            assert 8000 <= after.star_density <= 20000
        else:
            assert after == before
    with pytest.raises(ValueError, match="crowded_density"):
        _config(crowded_density=(5000.0, 500.0))
    with pytest.raises(ValueError, match="crowded_fraction"):
        _config(crowded_fraction=1.5)
    with pytest.raises(ValueError, match="data_workers"):
        _config(data_workers=-1)


def test_correlated_scenes_keep_the_other_traits_and_their_noise_is_scaled_as_screened():
    """The S/N plane of a correlated scene is scaled as the ingest scales a mosaic's:
    smoothed on the PSF's scale its noise is that of white noise again."""
    from scipy import ndimage

    from survey_seg.noise import gaussian_kernel_norm
    from survey_seg.simulate import simulate_mosaic
    from survey_seg.train import detection_variance, scene_background

    plain = [scene_config(seed, size=128) for seed in range(40)]
    correlated = [scene_config(seed, size=128, correlated_fraction=0.5) for seed in range(40)]
    drizzled = [c for c in correlated if c.noise_correlation > 0]
    assert 10 <= len(drizzled) <= 30
    assert all(0.2 <= c.noise_correlation <= 0.6 for c in drizzled)
    for before, after in zip(plain, correlated, strict=True):
        assert replace(after, noise_correlation=0.0) == before
    with pytest.raises(ValueError, match="correlated_fraction"):
        _config(correlated_fraction=-0.1)

    empty = dict.fromkeys(
        [
            "galaxy_density", "star_density", "n_cosmic_rays", "n_hot_pixels",
            "n_bad_columns", "n_satellite_trails", "n_ghosts", "n_chip_gaps", "n_holes",
        ],
        0.0,
    )  # fmt: skip
    config = replace(drizzled[0], size=256, **empty)
    sim = simulate_mosaic(config)
    background = scene_background(sim)
    psf_sigma = config.psf_fwhm_pix / 2.3548
    for variance, expected in (
        (sim.variance, (1.3, 3.0)),
        (detection_variance(sim, background), (0.9, 1.1)),
    ):
        snr = (sim.image - background) / np.sqrt(variance)
        smoothed = ndimage.gaussian_filter(snr, psf_sigma, truncate=4.0)
        noise = np.std(smoothed[20:-20, 20:-20]) / gaussian_kernel_norm(psf_sigma)
        assert expected[0] < noise < expected[1], (config.noise_correlation, noise)
    white = simulate_mosaic(replace(config, noise_correlation=0.0))
    assert detection_variance(white, scene_background(white)) is white.variance


def test_an_undersampled_scene_is_seen_as_screening_sees_an_upsampled_mosaic():
    from survey_seg.simulate import simulate_mosaic

    sim = simulate_mosaic(scene_config(3, size=128))
    plain = make_batch([3], np.random.default_rng(0), _config())
    every = make_batch([3], np.random.default_rng(0), _config(undersampled_fraction=1.0))
    for name, target in plain[1].items():  # the same scene, crop and targets
        torch.testing.assert_close(every[1][name], target, equal_nan=True)
    assert not torch.equal(every[0], plain[0])
    planes = undersampled_scene_inputs(sim)
    assert planes.shape == (3, 128, 128)
    # each 2 x 2 block carries one native pixel's noise: the fine S/N plane is smooth,
    # and a bright star stays where it was (the fine grid covers the native pixels)
    y, x = np.unravel_index(np.nanargmax(np.nan_to_num(sim.image)), sim.image.shape)
    near = np.nan_to_num(planes[0])[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
    assert near.max() == pytest.approx(np.nanmax(planes[0]), rel=1e-6)
    with pytest.raises(ValueError, match="undersampled_fraction"):
        _config(undersampled_fraction=2.0)


def test_large_galaxy_scenes_keep_the_other_traits():
    plain = [scene_config(seed, size=128, crowded_fraction=0.3) for seed in range(40)]
    large = [
        scene_config(seed, size=128, crowded_fraction=0.3, large_fraction=0.5) for seed in range(40)
    ]
    holding = [c for c in large if c.large_galaxy_density > 0]
    assert 10 <= len(holding) <= 30
    for before, after in zip(plain, large, strict=True):
        assert replace(after, large_galaxy_density=0.0) == before
    assert all(c.large_galaxy_density == 0 for c in plain)
    with pytest.raises(ValueError, match="large_fraction"):
        _config(large_fraction=-0.1)
    with_large = [scene_config(seed, size=128, large_fraction=0.5) for seed in range(40)]
    clumpy = [
        scene_config(seed, size=128, large_fraction=0.5, large_clumpy_fraction=0.4)
        for seed in range(40)
    ]
    for before, after in zip(with_large, clumpy, strict=True):
        # only the scenes that hold large galaxies make some of them clumpy
        assert replace(after, large_clumpy_fraction=0.0) == before
        assert after.large_clumpy_fraction == (0.4 if before.large_galaxy_density > 0 else 0.0)
    with pytest.raises(ValueError, match="large_clumpy_fraction"):
        _config(large_clumpy_fraction=2.0)


@pytest.mark.parametrize("task", list(TASKS))
def test_a_few_steps_reduce_the_loss_of_a_tiny_model(task):
    torch.manual_seed(0)
    architecture = UNetConfig(width=4, depth=2, stamp_size=32, offset_head=True, boundary_head=True)
    config = _config(architecture=architecture)
    inputs, targets = make_batch([11, 12], np.random.default_rng(1), config)
    model = ScreeningUNet(config.architecture)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = task_loss(*model(inputs), targets, loss_weights(task, config))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_train_writes_loadable_weights_and_resumes(tmp_path):
    config = _config()
    result = train("screening", tmp_path, config)
    assert len(result.losses) == 4 and len(result.validation_losses) == 2
    predictor = Predictor(result.config_path, device="cpu")
    assert predictor.config["training"]["steps"] == 4
    assert predictor.config["training"]["simulator_version"]
    # a longer run in the same directory resumes from the checkpoint, not from scratch
    longer = train("screening", tmp_path, _config(steps=4))
    assert longer.losses == result.losses


def test_distillation_pulls_the_student_towards_the_teachers_averaged_passes(write_model, tmp_path):
    """A one-pass student learns the teacher's flip-averaged probabilities."""
    from survey_seg.train import distillation_loss, teacher_targets

    teacher_path = write_model(tmp_path, config=TINY, seed=3, test_time_flips=2)
    teacher = Predictor(teacher_path, device="cpu", precision="float32")
    inputs, _ = make_batch([21, 22], np.random.default_rng(2), _config())
    soft = teacher_targets(teacher, inputs)
    assert soft["segmentation"].shape == (2, 3, 64, 64)
    np.testing.assert_allclose(soft["segmentation"].sum(1), 1.0, rtol=1e-5)
    torch.manual_seed(0)
    student = ScreeningUNet(TINY)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-2)
    weights = TASKS["screening"]
    losses = []
    for _ in range(15):
        loss = distillation_loss(*student(inputs), soft, weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    result = train("screening", tmp_path / "distilled", _config(teacher=str(teacher_path)))
    assert len(result.losses) == 4 and np.isfinite(result.losses).all()
    with pytest.raises(ValueError, match="distill_weight"):
        _config(distill_weight=1.5)
    with pytest.raises(ValueError, match="truth_taught_weight"):
        _config(truth_taught_weight=0.5)
    with pytest.raises(ValueError, match="pair_truth_fwhm"):
        _config(pair_truth_fwhm=-1.0)


def test_distillation_weighs_each_pixel_by_its_pixel_weight():
    """Unit weights change nothing; a weight on some pixels adds their terms again."""
    from survey_seg.train import distillation_loss

    rng = np.random.default_rng(4)
    torch.manual_seed(4)
    student = ScreeningUNet(TINY)
    inputs = torch.from_numpy(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        pixel_logits, stamp_logits = student(inputs)
    soft = {
        "segmentation": torch.softmax(torch.from_numpy(rng.normal(size=(2, 3, 64, 64))), 1),
        "centre": torch.from_numpy(rng.random((2, 64, 64))).float(),
    }
    weights = {"segmentation": 1.0, "centre": 1.0}
    plain = distillation_loss(pixel_logits, stamp_logits, soft, weights)
    ones = distillation_loss(pixel_logits, stamp_logits, soft, weights, torch.ones(2, 64, 64))
    assert float(ones) == pytest.approx(float(plain), rel=1e-6)
    where = torch.zeros(2, 64, 64)
    where[:, :16] = 1.0
    heavier = distillation_loss(pixel_logits, stamp_logits, soft, weights, 1 + 2 * where)
    only = {name: soft[name] * where[:, None] if name == "segmentation" else soft[name]
            for name in soft}  # fmt: skip
    seg_part = distillation_loss(pixel_logits, stamp_logits, only, {"segmentation": 1.0})
    centre_part = distillation_loss(pixel_logits, stamp_logits, soft, {"centre": 1.0}, where)
    assert float(heavier) == pytest.approx(
        float(plain) + 2 * (float(seg_part) + float(centre_part)), rel=1e-5
    )


def test_the_teacher_teaches_only_the_white_noise_scenes(write_model, tmp_path):
    """Correlated scenes learn from their truth alone; white ones also from the teacher."""
    from survey_seg.train import _with_distillation

    teacher = Predictor(
        write_model(tmp_path, config=TINY, seed=3), device="cpu", precision="float32"
    )
    config = _config(correlated_fraction=0.5, teacher="unused")
    seeds = [
        s for s in range(40) if scene_config(s, size=128, correlated_fraction=0.5).noise_correlation
    ]
    white = [s for s in range(40) if s not in seeds]
    torch.manual_seed(0)
    student = ScreeningUNet(TINY)
    weights = loss_weights("screening", config)
    for batch_seeds, taught in ((seeds[:2], 0), (white[:2], 2), ([seeds[0], white[0]], 1)):
        inputs, targets = make_batch(batch_seeds, np.random.default_rng(0), config)
        assert int(targets["teachable"].sum()) == taught
        pixel_logits, stamp_logits = student(inputs)
        loss = task_loss(pixel_logits, stamp_logits, targets, weights)
        mixed = _with_distillation(
            loss, teacher, inputs, pixel_logits, stamp_logits, targets, weights, config
        )
        assert (float(mixed) == float(loss)) == (taught == 0)


def test_the_truth_replaces_the_teacher_on_the_knotty_galaxies_it_cuts_into_pieces():
    from survey_seg.train import TRUTH_TAUGHT_PROFILES, _truth_where_taught, scene_targets

    assert TRUTH_TAUGHT_PROFILES == ("knotty",)
    sim = simulate_mosaic(SimulationConfig(size=128, seed=5, galsim_fraction=1.0))
    truth = sim.truth_sources
    knotty = truth.loc[truth["profile"] == "knotty", "id"].to_numpy()
    assert len(knotty) and (truth["profile"] != "knotty").any()
    targets = scene_targets(sim, TINY.stamp_size)
    taught = targets["truth_taught"]
    np.testing.assert_array_equal(taught, np.isin(sim.truth_segmentation, knotty))
    batch = {k: torch.from_numpy(np.asarray(v))[None] for k, v in targets.items()}
    rng = np.random.default_rng(0)
    soft = {
        "segmentation": torch.softmax(torch.from_numpy(rng.normal(size=(1, 3, 128, 128))), 1),
        "centre": torch.from_numpy(rng.random((1, 128, 128))),
        "clump": torch.from_numpy(rng.random((1, 128, 128))),
        "artefact": torch.from_numpy(rng.random((1, 5, 128, 128))),
    }
    mixed = _truth_where_taught(soft, batch)
    where = batch["truth_taught"][0].numpy()
    for name in ("centre", "clump"):
        np.testing.assert_array_equal(mixed[name][0][where], batch[name][0][where])
        np.testing.assert_array_equal(mixed[name][0][~where], soft[name][0][~where])
    one_hot = np.eye(3)[batch["segmentation"][0].numpy()].transpose(2, 0, 1)
    np.testing.assert_array_equal(mixed["segmentation"][0][:, where], one_hot[:, where])
    np.testing.assert_array_equal(
        mixed["segmentation"][0][:, ~where], soft["segmentation"][0][:, ~where]
    )
    assert mixed["artefact"] is soft["artefact"]  # artefacts are the teacher's everywhere
    batch["truth_taught"][:] = False
    assert _truth_where_taught(soft, batch) is soft


def test_varied_psf_scenes_keep_the_other_traits_and_cover_the_shapes():
    plain = [scene_config(seed, size=128, correlated_fraction=0.5) for seed in range(60)]
    varied = [
        scene_config(seed, size=128, correlated_fraction=0.5, varied_psf_fraction=0.5)
        for seed in range(60)
    ]
    changed = [v for p, v in zip(plain, varied, strict=True) if p != v]
    assert 15 <= len(changed) <= 45
    for before, after in zip(plain, varied, strict=True):
        assert replace(after, psf_model=before.psf_model, psf_beta=before.psf_beta,
                       psf_ellipticity=0.0, psf_angle_deg=0.0) == before  # fmt: skip
    assert {c.psf_model for c in changed} == {"moffat", "kolmogorov"}
    assert all(2.0 <= c.psf_beta <= 5.0 and 0 <= c.psf_ellipticity <= 0.15 for c in changed)
    with pytest.raises(ValueError, match="varied_psf_fraction"):
        _config(varied_psf_fraction=1.5)


def test_a_binned_scene_keeps_its_truth_on_the_binned_pixels():
    """Binned by 3, a scene's objects and artefacts stay where its truth says."""
    from survey_seg.simulate import SimulationConfig, simulate_mosaic
    from survey_seg.train import binned_scene

    native = simulate_mosaic(
        SimulationConfig(size=384, seed=5, psf_fwhm_pix=5.4, n_cosmic_rays=400.0)
    )
    binned = binned_scene(native, 3)
    assert binned.image.shape == binned.truth_mask.shape == binned.truth_segmentation.shape
    assert binned.image.shape == (128, 128) and binned.config.psf_fwhm_pix == pytest.approx(1.8)
    np.testing.assert_allclose(np.nanmean(binned.image), np.nanmean(native.image), rtol=1e-3)
    # the mean of 9 pixels has a ninth of their variance
    sky = (native.truth_segmentation == 0) & np.isfinite(native.variance)
    binned_sky = (binned.truth_segmentation == 0) & (binned.variance > 0)
    ratio = np.median(native.variance[sky]) / np.median(binned.variance[binned_sky])
    assert ratio == pytest.approx(9.0, rel=0.05)
    bright = binned.truth_sources[binned.truth_sources["snr"] > 20]
    rows, cols = bright["y"].round().astype(int), bright["x"].round().astype(int)
    inside = (rows >= 0) & (rows < 128) & (cols >= 0) & (cols < 128)
    assert inside.sum() >= 3
    ids = binned.truth_segmentation[rows[inside], cols[inside]]
    assert np.mean(ids == bright["id"].to_numpy()[inside]) >= 0.8
    cosmic = int(MaskBit.CR)
    assert ((native.truth_mask & cosmic) != 0).any()
    for y, x in zip(*np.nonzero(native.truth_mask & cosmic), strict=True):
        assert binned.truth_mask[y // 3, x // 3] & cosmic


def test_wide_psf_scenes_are_crops_with_native_stamp_fractions_and_no_teacher():
    config = _config(wide_psf_fraction=1.0)
    inputs, targets = make_batch([1, 2], np.random.default_rng(0), config)
    assert inputs.shape == (2, 3, 64, 64) and targets["stamps"].shape == (2, 7, 2, 2)
    assert not targets["teachable"].any()
    assert torch.isfinite(inputs).all()
    plain_inputs, plain = make_batch([1, 2], np.random.default_rng(0), _config())
    assert plain["teachable"].all() and not torch.equal(inputs, plain_inputs)
    with pytest.raises(ValueError, match="wide_psf_fraction"):
        _config(wide_psf_fraction=2.0)


def test_shifted_simulator_is_outside_the_training_jitter():
    nominal = scene_config(0, size=128)
    shifted = scene_config(0, size=128, shifted=True)
    assert shifted.psf_fwhm_pix == pytest.approx(1.3 * 1.8)
    assert abs(nominal.psf_fwhm_pix / 1.8 - 1) <= TrainConfig().condition_jitter < 0.3
    with pytest.raises(ValueError, match="shifted test survey"):
        TrainConfig(condition_jitter=0.3)


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="multiple of the stamp size"):
        TrainConfig(crop=100)
    with pytest.raises(ValueError, match="unknown task"):
        train("everything", "/tmp/unused", _config())


def test_head_weights_replace_the_task_weights():
    config = _config(head_weights={"clump": 2.0, "centre": 3})
    weights = loss_weights("screening", config)
    assert weights["clump"] == 2.0 and weights["centre"] == 3.0
    assert weights["segmentation"] == TASKS["screening"]["segmentation"]
    optional = ("offset", "boundary")
    without_offsets = {k: v for k, v in TASKS["screening"].items() if k not in optional}
    assert loss_weights("screening", _config()) == without_offsets
    offset_architecture = UNetConfig(width=4, depth=2, stamp_size=32, offset_head=True)
    assert loss_weights("screening", _config(architecture=offset_architecture)) == {
        **without_offsets,
        "offset": TASKS["screening"]["offset"],
    }
    both = replace(offset_architecture, boundary_head=True)
    assert loss_weights("screening", _config(architecture=both)) == TASKS["screening"]
    with pytest.raises(ValueError, match="does not train head 'artefact'"):
        loss_weights("blends", _config(head_weights={"artefact": 2.0}))
    with pytest.raises(ValueError, match="unknown head 'clumps'"):
        _config(head_weights={"clumps": 2.0})
    with pytest.raises(ValueError, match="must be zero or positive"):
        _config(head_weights={"clump": -1.0})
    untrained_offsets = _config(architecture=offset_architecture, head_weights={"offset": 0})
    assert loss_weights("screening", untrained_offsets) == without_offsets


def test_head_weights_change_the_loss_and_are_recorded(tmp_path):
    inputs, targets = make_batch([11], np.random.default_rng(1), _config(batch_size=1))
    model = ScreeningUNet(TINY)
    with torch.no_grad():
        outputs = model(inputs)
    base = task_loss(*outputs, targets, loss_weights("screening", _config()))
    clump_heavy = loss_weights("screening", _config(head_weights={"clump": 5.0}))
    assert float(task_loss(*outputs, targets, clump_heavy)) > float(base)
    result = train("screening", tmp_path, _config(steps=2, head_weights={"clump": 2.0}))
    assert Predictor(result.config_path, device="cpu").config["training"]["head_weights"] == {
        "clump": 2.0
    }


def test_average_weights_is_the_weighted_mean_and_refuses_mismatches(tmp_path):
    from survey_seg.train import average_weights

    torch.manual_seed(0)
    paths = []
    for k in range(2):
        path = tmp_path / f"net{k}.pt"
        torch.save(ScreeningUNet(TINY).state_dict(), path)
        paths.append(path)
    sha256 = average_weights(paths, [0.25, 0.75], tmp_path / "mean.pt")
    assert len(sha256) == 64
    a, b = (torch.load(path, weights_only=True) for path in paths)
    mean = torch.load(tmp_path / "mean.pt", weights_only=True)
    for name, tensor in mean.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, 0.25 * a[name] + 0.75 * b[name])
        else:
            assert torch.equal(tensor, a[name])
    with pytest.raises(ValueError, match="sum to 1"):
        average_weights(paths, [0.5, 0.6], tmp_path / "bad.pt")
    other = tmp_path / "other.pt"
    torch.save(ScreeningUNet(UNetConfig(width=8, depth=2, stamp_size=32)).state_dict(), other)
    with pytest.raises(ValueError, match="one architecture"):
        average_weights([paths[0], other], [0.5, 0.5], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_average_weights_takes_the_offset_head_from_the_networks_that_have_it(tmp_path):
    from survey_seg.train import average_weights

    torch.manual_seed(0)
    plain, with_offsets = tmp_path / "plain.pt", tmp_path / "offsets.pt"
    torch.save(ScreeningUNet(TINY).state_dict(), plain)
    torch.save(ScreeningUNet(replace(TINY, offset_head=True)).state_dict(), with_offsets)
    average_weights([plain, with_offsets], [0.5, 0.5], tmp_path / "mean.pt")
    a, b = (torch.load(path, weights_only=True) for path in (plain, with_offsets))
    mean = torch.load(tmp_path / "mean.pt", weights_only=True)
    head = a["pixel_head.weight"].shape[0]
    assert mean["pixel_head.weight"].shape == b["pixel_head.weight"].shape
    for name, rows in (("pixel_head.weight", slice(0, head)), ("encoders.0.0.weight", slice(None))):
        torch.testing.assert_close(mean[name][rows], 0.5 * a[name] + 0.5 * b[name][rows])
    torch.testing.assert_close(mean["pixel_head.bias"][head:], b["pixel_head.bias"][head:])
    ScreeningUNet(replace(TINY, offset_head=True)).load_state_dict(mean)


def test_average_weights_refuses_networks_with_and_without_the_boundary_head(tmp_path):
    from survey_seg.train import average_weights

    offsets, both = tmp_path / "offsets.pt", tmp_path / "both.pt"
    torch.save(ScreeningUNet(replace(TINY, offset_head=True)).state_dict(), offsets)
    torch.save(
        ScreeningUNet(replace(TINY, offset_head=True, boundary_head=True)).state_dict(), both
    )
    with pytest.raises(ValueError, match="one architecture"):
        average_weights([offsets, both], [0.5, 0.5], tmp_path / "bad.pt")
    average_weights([both, both], [0.5, 0.5], tmp_path / "mean.pt")
    ScreeningUNet(replace(TINY, offset_head=True, boundary_head=True)).load_state_dict(
        torch.load(tmp_path / "mean.pt", weights_only=True)
    )


def test_the_boundary_head_learns_at_its_own_rate():
    from survey_seg.train import BOUNDARY_LEARNING_RATE_SCALE, _parameter_groups

    model = ScreeningUNet(replace(TINY, boundary_head=True))
    groups = _parameter_groups(model, 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-3 * BOUNDARY_LEARNING_RATE_SCALE]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(_parameter_groups(ScreeningUNet(TINY), 1e-3)) == 1


def test_object_boundaries_mark_the_borders_between_objects_only():
    from survey_seg.train import object_boundaries

    segmentation = np.zeros((8, 12), dtype=np.int32)
    segmentation[2:6, 1:5] = 3  # alone: its edge to the sky is no boundary
    segmentation[2:6, 7:9] = 4
    segmentation[2:6, 9:11] = 5  # touching 4 along column 8 | 9
    target = object_boundaries(segmentation)
    assert np.isnan(target[segmentation == 0]).all()
    assert (target[segmentation == 3] == 0).all()
    assert (target[2:6, 8:10] == 1).all()
    assert (target[2:6, 7] == 0).all() and (target[2:6, 10] == 0).all()


def test_boundary_loss_counts_the_pixels_of_objects_only():
    from survey_seg.train import boundary_loss

    target = torch.tensor([[[np.nan, 0.0], [1.0, np.nan]]])
    right = torch.tensor([[[-50.0, -9.0], [9.0, 50.0]]])
    wrong_on_sky = torch.tensor([[[50.0, -9.0], [9.0, -50.0]]])
    assert float(boundary_loss(right, target)) < 1e-3
    assert float(boundary_loss(wrong_on_sky, target)) == pytest.approx(
        float(boundary_loss(right, target))
    )
    assert float(boundary_loss(-right, target)) > 5.0
    assert float(boundary_loss(right, torch.full_like(target, np.nan))) == 0.0


def test_centre_offsets_point_every_pixel_of_an_object_at_its_centre():
    import pandas as pd

    from survey_seg.train import centre_offsets

    segmentation = np.zeros((10, 12), dtype=np.int32)
    segmentation[1:5, 1:6] = 3
    segmentation[6:9, 7:11] = 1
    truth = pd.DataFrame({"id": [1, 2, 3], "x": [8.5, 0.0, 3.0], "y": [7.0, 0.0, 2.25]})
    offsets = centre_offsets(segmentation, truth)
    rows, cols = np.indices(segmentation.shape)
    for object_id, (x, y) in ((1, (8.5, 7.0)), (3, (3.0, 2.25))):
        inside = segmentation == object_id
        np.testing.assert_allclose(rows[inside] + offsets[0][inside], y)
        np.testing.assert_allclose(cols[inside] + offsets[1][inside], x)
    assert np.isnan(offsets[:, segmentation == 0]).all()


def test_flipped_training_crops_keep_their_offsets_pointing_at_the_centres():
    """Whatever the flips, the pixels of a crop's objects vote for a few points only."""
    architecture = UNetConfig(width=4, depth=2, stamp_size=32, offset_head=True)
    config = _config(batch_size=4, crop=128, scene_size=128, architecture=architecture)
    _, targets = make_batch([31, 32, 33, 34], np.random.default_rng(3), config)
    rows, cols = np.indices(targets["offset"].shape[-2:])
    checked = 0
    for offsets in targets["offset"].numpy():
        inside = np.isfinite(offsets[0])
        if inside.sum() < 20:
            continue
        votes = np.stack([rows[inside] + offsets[0][inside], cols[inside] + offsets[1][inside]])
        assert np.unique(np.round(votes, 3), axis=1).shape[1] < 0.1 * inside.sum()
        checked += 1
    assert checked == 4


def test_close_pairs_are_learned_from_the_truth_beside_the_knots():
    """With ``pair_truth_fwhm`` the members of close pairs join the truth-taught pixels."""
    from scipy.spatial import cKDTree

    from survey_seg.train import MIN_CENTRE_SNR, scene_targets

    sim = simulate_mosaic(SimulationConfig(size=192, seed=12, galsim_fraction=1.0))
    truth = sim.truth_sources
    plain = scene_targets(sim, TINY.stamp_size)["truth_taught"]
    paired = scene_targets(sim, TINY.stamp_size, pair_truth_fwhm=2.5)["truth_taught"]
    assert (paired >= plain).all()
    detectable = truth[truth["snr"] >= MIN_CENTRE_SNR]
    close = cKDTree(detectable[["x", "y"]].to_numpy()).query_pairs(
        2.5 * sim.config.psf_fwhm_pix, output_type="ndarray"
    )
    assert len(close), "the scene should hold a close pair"
    members = detectable["id"].to_numpy()[np.unique(close)]
    np.testing.assert_array_equal(
        paired & ~plain, np.isin(sim.truth_segmentation, members) & ~plain
    )
    assert (paired & ~plain).any()
