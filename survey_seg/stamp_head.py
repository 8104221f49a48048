"""The data-quality stamp head: refitted on a frozen network, calibrated, scored.

The screening network's stamp head (the Euclid data-quality CNN of the seeds,
sharing the U-Net's encoder) gives, for every stamp of ``stamp_size``² pixels, the
probability that each artefact class is present, and ``flagged``: the estimated
fraction of the stamp's pixels that are flagged (NO_DATA or an artefact plane).
A tile's ``predicted_flagged_fraction`` is the mean of its core's stamps', the
classifier's own estimate of the fraction the verdict thresholds.

:func:`calibrate_stamp_head` refits the head's last two layers on the frozen
bottleneck of simulated scenes (the rest of the network, and so every pixel
product, stays as it was), then fits one temperature per class on validation
scenes of other seeds (``sigmoid(logit / T)``, Guo et al. 2017), and writes a new
model config whose ``stamp_calibration`` records the temperatures and the
validation scores before and after: the expected calibration error of every
class (for ``flagged``, of the estimated against the true fraction), its
reliability curve, and the ROC AUC with which the mean of 4 x 4 stamps ranks
tiles that are bad in the truth (more than :data:`BAD_TILE_FRACTION` flagged).
Half of the scenes are screened as the edge of a mosaic is, a band of no data
around them (outside a mosaic a window is padded so): the pixels there are not
the mosaic's, and a stamp beside them is not flagged for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from survey_seg.evaluate import expected_calibration_error, reliability_curve, verdict_auc
from survey_seg.files import atomic_path
from survey_seg.inference import load_model_config, load_network
from survey_seg.models.unet import QUALITY_CLASSES, ScreeningUNet
from survey_seg.train import (
    check_positive_integers,
    scene_config,
    scene_inputs,
    simulate_scene,
    stamp_labels,
    wide_psf_binning,
)

__all__ = ["StampHeadConfig", "StampSet", "calibrate_stamp_head", "fit_temperature", "stamp_set"]

VALIDATION_SEED_OFFSET = 20_000_000
"""Validation scenes use seeds from here on, apart from training's (and from the
benchmarks' 900s)."""
BAD_TILE_FRACTION = 0.02
"""A tile is bad in the truth when more than this fraction of it is flagged (the
``inspect`` verdict's default fraction)."""
TILE_STAMPS = 4
"""Stamps per side of the tiles scored on validation scenes (256-pixel tiles)."""


@dataclass(frozen=True)
class StampHeadConfig:
    """How the stamp head is refitted and calibrated."""

    scenes: int = 400
    """Simulated training scenes (each ``scene_size``² gives ``(scene_size / stamp)²`` stamps)."""
    validation_scenes: int = 160
    """Simulated validation scenes, for the temperatures and the reported scores."""
    scene_size: int = 512
    """Side of the scenes (a multiple of the stamp size)."""
    seed: int = 0
    """Seed of the training scenes; validation scenes use :data:`VALIDATION_SEED_OFFSET` + it."""
    epochs: int = 60
    """Passes over the training stamps."""
    batch_size: int = 512
    """Stamps per optimiser step."""
    learning_rate: float = 2e-3
    """Peak learning rate (AdamW, cosine decay)."""
    condition_jitter: float = 0.25
    """PSF and noise jitter of the scenes (:func:`survey_seg.train.scene_config`)."""
    galsim_fraction: float = 0.0
    """Fraction of scene galaxies drawn by GalSim."""
    wide_psf_fraction: float = 0.0
    """Fraction of the scenes seen as a mosaic with a PSF 2-4 times the networks' is
    screened: simulated with that PSF, binned back (:func:`survey_seg.train.binned_scene`),
    each stamp labelled with the native pixels it covers, so that the classifier's
    estimate holds under a wide PSF too."""

    def __post_init__(self) -> None:
        check_positive_integers(
            self, ("scenes", "validation_scenes", "scene_size", "epochs", "batch_size")
        )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.wide_psf_fraction <= 1:
            raise ValueError(f"wide_psf_fraction must be in [0, 1], got {self.wide_psf_fraction}")


@dataclass(frozen=True)
class StampSet:
    """Stamps of simulated scenes: what the head's last layers see, and the truth."""

    features: np.ndarray
    """``(n, channels)`` float32 bottleneck averaged over each stamp."""
    labels: np.ndarray
    """``(n, len(QUALITY_CLASSES))`` float32 truth (:func:`~survey_seg.train.stamp_labels`)."""
    tiles: np.ndarray
    """``(n,)`` int64: the :data:`TILE_STAMPS`² block of its scene each stamp is in,
    numbered across the whole set."""


@torch.no_grad()
def stamp_set(model: ScreeningUNet, seeds: list[int], config: StampHeadConfig) -> StampSet:
    """Features and labels of the stamps of one simulated scene per seed.

    Every other scene is seen as a mosaic's edge: surrounded by a band of one stamp
    of no data (zero input, as a window is padded beyond its mosaic), its stamps
    the scene's own. A ``wide_psf_fraction`` of the scenes are seen binned, as a
    wide-PSF mosaic is screened; their stamps' truth is that of the native pixels.

    Parameters
    ----------
    model : ScreeningUNet
        The network (put in eval mode here).
    seeds : list of int
        Scene seeds (:func:`survey_seg.train.scene_config`).
    config : StampHeadConfig
        Scene size, jitter and GalSim fraction.

    Returns
    -------
    StampSet
    """
    stamp = model.config.stamp_size
    if config.scene_size % stamp:
        raise ValueError(f"scene_size {config.scene_size} is not a multiple of the stamp {stamp}")
    model.eval()
    features, labels, tiles = [], [], []
    n_tiles = 0
    for k, seed in enumerate(seeds):
        binning = wide_psf_binning(seed, config.wide_psf_fraction)
        scene = scene_config(
            seed,
            size=config.scene_size * binning,
            jitter=config.condition_jitter,
            galsim_fraction=config.galsim_fraction,
        )
        native, sim = simulate_scene(scene, binning)
        planes = torch.from_numpy(scene_inputs(sim))[None]
        band = stamp if k % 2 else 0
        if band:
            planes = nn.functional.pad(planes, (band, band, band, band))
        pooled = model.stamp_features(planes)[0]  # (channels, rows, cols)
        if band:
            pooled = pooled[:, 1:-1, 1:-1]
        features.append(pooled.reshape(pooled.shape[0], -1).T.numpy())
        truth = stamp_labels(native.truth_mask, stamp * binning)
        labels.append(truth.reshape(truth.shape[0], -1).T)
        rows, cols = truth.shape[1:]
        block = (np.arange(rows)[:, None] // TILE_STAMPS) * -(-cols // TILE_STAMPS) + (
            np.arange(cols)[None, :] // TILE_STAMPS
        )
        tiles.append(block.ravel() + n_tiles)
        n_tiles += int(block.max()) + 1
    return StampSet(
        np.concatenate(features).astype(np.float32),
        np.concatenate(labels).astype(np.float32),
        np.concatenate(tiles).astype(np.int64),
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` that minimises the log loss of ``sigmoid(logits / T)``.

    Searched over ``log T`` in [-3, 3]; 1.0 when the labels hold one class only.
    """
    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if labels.min() == labels.max():
        return 1.0

    def log_loss(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))

    return float(np.exp(minimize_scalar(log_loss, bounds=(-3.0, 3.0), method="bounded").x))


def calibrate_stamp_head(
    config_path: str | Path,
    out_dir: str | Path,
    config: StampHeadConfig | None = None,
    *,
    threads: int | None = None,
    log=None,
) -> Path:
    """Refit and calibrate a model's stamp head; write the new model beside ``out_dir``.

    Parameters
    ----------
    config_path : path-like
        Model config whose network is used frozen (its pixel heads are unchanged).
    out_dir : path-like
        Directory for the new weights and config (named as the input's); a clump
        model the config names is copied beside them.
    config : StampHeadConfig, optional
        Scenes, epochs and learning rate.
    threads : int, optional
        torch CPU threads.
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    pathlib.Path
        The new model config.
    """
    config = config or StampHeadConfig()
    say = log or (lambda line: None)
    if threads:
        torch.set_num_threads(threads)
    config_path = Path(config_path)
    model_config = load_model_config(config_path)
    model, _ = load_network(config_path, model_config, torch.device("cpu"))
    started = time.perf_counter()
    train_seeds = [config.seed * 1_000_000 + k for k in range(config.scenes)]
    validation_seeds = [
        VALIDATION_SEED_OFFSET + config.seed * 1_000_000 + k
        for k in range(config.validation_scenes)
    ]
    training = stamp_set(model, train_seeds, config)
    validation = stamp_set(model, validation_seeds, config)
    say(f"{len(training.labels)} training and {len(validation.labels)} validation stamps")
    before = _scores(_logits(model, validation.features), validation, None)
    _fit_head(model, training, config, say)
    logits = _logits(model, validation.features)
    temperature = [
        fit_temperature(logits[:, k], validation.labels[:, k]) for k in range(logits.shape[1])
    ]
    after = _scores(logits, validation, np.asarray(temperature))
    say(
        f"flagged fraction: ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
        f"tile AUC {before['tile_auc']:.4f} -> {after['tile_auc']:.4f}"
    )
    return _write_model(
        config_path,
        model_config,
        model,
        Path(out_dir),
        {
            "temperature": temperature,
            "bad_tile_fraction": BAD_TILE_FRACTION,
            "validation_before": before,
            "validation_after": after,
            "config": asdict(config),
            "seconds": time.perf_counter() - started,
        },
    )


@torch.no_grad()
def _logits(model: ScreeningUNet, features: np.ndarray) -> np.ndarray:
    """Stamp logits from pooled features, through the head's last layers."""
    model.eval()
    x = torch.from_numpy(features)[:, :, None, None]
    return model.stamp_head[1:](x)[:, :, 0, 0].numpy()


def _fit_head(model: ScreeningUNet, training: StampSet, config: StampHeadConfig, say) -> None:
    """Minibatch log loss on the head's last layers; everything else frozen."""
    torch.manual_seed(config.seed)
    head = model.stamp_head[1:]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    x = torch.from_numpy(training.features)[:, :, None, None]
    y = torch.from_numpy(training.labels)[:, :, None, None]
    steps_per_epoch = -(-len(x) // config.batch_size)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    head.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(head(x[batch]), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if (epoch + 1) % 10 == 0:
            say(f"epoch {epoch + 1}: log loss {total / len(x):.4f}")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()


def _scores(logits: np.ndarray, validation: StampSet, temperature: np.ndarray | None) -> dict:
    """Calibration of every class and the tile AUC of ``flagged`` on validation stamps."""
    scaled = logits if temperature is None else logits / temperature
    probabilities = 1.0 / (1.0 + np.exp(-scaled))
    labels = validation.labels
    flagged, truth = probabilities[:, -1], labels[:, -1]
    counts = np.bincount(validation.tiles)
    tile_estimate = np.bincount(validation.tiles, weights=flagged) / counts
    tile_truth = np.bincount(validation.tiles, weights=truth) / counts
    return {
        "ece": expected_calibration_error(flagged, truth),
        "tile_auc": verdict_auc(tile_estimate, tile_truth > BAD_TILE_FRACTION),
        "ece_by_class": {
            name: expected_calibration_error(probabilities[:, k], labels[:, k])
            for k, name in enumerate(QUALITY_CLASSES)
        },
        "reliability": reliability_curve(flagged, truth).to_dict(orient="records"),
        "bad_tiles": int(np.count_nonzero(tile_truth > BAD_TILE_FRACTION)),
        "tiles": len(counts),
    }


def _write_model(
    config_path: Path, model_config: dict, model: ScreeningUNet, out: Path, calibration: dict
) -> Path:
    """New weights and config in ``out``; a named clump model or piece classifier comes along."""
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / model_config["weights"]
    with atomic_path(weights_path) as temporary:
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, temporary)
    new_config = {
        **model_config,
        "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "stamp_calibration": calibration,
    }
    pieces = model_config.get("pieces")
    if pieces and out.resolve() != config_path.parent.resolve():
        shutil.copy2(config_path.parent / pieces["classifier"], out / pieces["classifier"])
    clump = model_config.get("clump_model")
    if clump and out.resolve() != config_path.parent.resolve():
        clump_config = json.loads((config_path.parent / clump).read_text())
        shutil.copy2(config_path.parent / clump, out / clump)
        shutil.copy2(config_path.parent / clump_config["weights"], out / clump_config["weights"])
    new_path = out / config_path.name
    with atomic_path(new_path) as temporary:
        Path(temporary).write_text(json.dumps(new_config, indent=2))
    return new_path
