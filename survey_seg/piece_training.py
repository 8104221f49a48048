"""Training of the piece classifier (:mod:`survey_seg.pieces`) on simulated scenes.

Each training scene (:func:`survey_seg.train.scene_config`: GalSim bulge + disk
and knotty galaxies, large and clumpy ones, correlated noise and PSFs of other
shapes among them) is screened by the shipped network as one window; every pair
of touching sources that reaches the last merge is recorded with its
:data:`~survey_seg.pieces.PAIR_FEATURES`, and labelled by the truth: *apart*
when the two match two different truth objects (one-to-one, closest first, within
the quality benchmark's radius), *one object* otherwise (a piece of a galaxy, a
knot or clump of one, or a noise peak on one). An ensemble of small multilayer
perceptrons is fitted to the labels (:func:`fit_classifier`).

``python -m survey_seg.piece_training --out FILE`` writes the classifier as JSON,
with what its training cost and measured in a ``training`` entry.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from survey_seg.blends import deblended_centres
from survey_seg.evaluate import match_positions
from survey_seg.inference import DEFAULT_MODEL, Prediction
from survey_seg.measure import light_centres
from survey_seg.network import NetworkScreener
from survey_seg.pieces import PAIR_FEATURES, PairFeatures, PieceClassifier
from survey_seg.simulate import SimulationConfig, simulate_mosaic
from survey_seg.store import WindowData
from survey_seg.train import detection_variance, scene_background, scene_config

MATCH_RADIUS_ARCSEC = 0.4
"""Truth matching radius: the quality benchmark's (:func:`survey_seg.evaluate.score_catalog`)."""


@dataclass(frozen=True)
class PieceTrainingConfig:
    """How the piece classifier is trained.

    Attributes
    ----------
    seeds : tuple of int
        Training scene seeds (apart from the validation 801-804 and test 901-906
        mosaics of the benchmarks).
    scene_size : int
        Side of a training scene in pixels.
    galsim_fraction, crowded_fraction, large_fraction, large_clumpy_fraction,
    correlated_fraction, varied_psf_fraction : float
        The scene mix (:func:`survey_seg.train.scene_config`).
    max_pairs_per_scene : int
        At most this many pairs of one scene are fitted (drawn at random): a
        crowded star field has thousands of touching pairs, which would
        outweigh every other scene.
    hidden : int
        Units in each of the two hidden layers of one perceptron.
    ensemble : int
        Perceptrons fitted from other initial weights and averaged.
    steps : int
        Full-batch optimiser steps.
    learning_rate, weight_decay : float
        AdamW's.
    seed : int
        Seed of the initial weights (of the first perceptron) and of the draw of
        each scene's pairs.
    min_probability : float
        The joining threshold written with the classifier (chosen on the
        validation mosaics 801-802 and injection into the real images with seed
        1; README, "Pieces of one object").
    sure_centre : float or None
        The classifier's sure-centre rule, written with it (chosen as
        ``min_probability``).
    knot_clump : float or None
        The classifier's knot rule: a source whose clump probability at its peak
        reaches this is never sure (chosen as ``min_probability``).
    """

    seeds: tuple[int, ...] = tuple(range(5000, 6000))
    scene_size: int = 512
    galsim_fraction: float = 0.5
    crowded_fraction: float = 0.3
    large_fraction: float = 0.5
    large_clumpy_fraction: float = 0.5
    correlated_fraction: float = 0.3
    varied_psf_fraction: float = 0.3
    max_pairs_per_scene: int = 150
    hidden: int = 32
    ensemble: int = 5
    steps: int = 2000
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0
    min_probability: float = 0.95
    sure_centre: float | None = 0.3
    knot_clump: float | None = 0.5


class _PairRecorder(NetworkScreener):
    """The shipped screening, recording the touching pairs its last merge sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorded: list[tuple[PairFeatures, np.ndarray, ...]] = []

    def _join_pieces(
        self,
        sources: np.ndarray,
        footprints: np.ndarray,
        significance: np.ndarray,
        flux: np.ndarray,
        prediction: Prediction,
    ) -> np.ndarray:
        features = self._pair_features(sources, footprints, significance, flux, prediction)
        self.recorded.append((features, sources, footprints, flux, significance, prediction.centre))
        return sources


def source_positions(
    sources: np.ndarray,
    footprints: np.ndarray,
    flux: np.ndarray,
    significance: np.ndarray,
    centre: np.ndarray,
) -> np.ndarray:
    """``(n + 1, 2)`` catalog-like ``(x, y)`` of labels ``0 .. n``.

    The centre heatmap's peak for a source that shares its footprint (as the
    catalog's deblended centres), the light centre otherwise.
    """
    n = int(sources.max(initial=0))
    positions = np.full((n + 1, 2), np.nan)
    if n == 0:
        return positions
    light = np.stack(light_centres(sources, flux, significance), axis=1)
    deblended = deblended_centres(centre, sources, footprints)
    yx = np.where(np.isfinite(deblended), deblended, light)
    positions[1:] = yx[:, ::-1]
    return positions


def pair_labels(
    pairs: np.ndarray, positions: np.ndarray, truth_xy: np.ndarray, radius: float
) -> np.ndarray:
    """1 where a pair is one object, 0 where its two sources match two truth objects."""
    detected = np.isfinite(positions[:, 0])
    match = np.full(len(positions), -1)
    match[detected] = match_positions(positions[detected], truth_xy, radius)[0]
    a, b = match[pairs[:, 0]], match[pairs[:, 1]]
    apart = (a >= 0) & (b >= 0) & (a != b)
    return (~apart).astype(np.float32)


def scene_pairs(
    seed: int, config: PieceTrainingConfig, model: str | Path = DEFAULT_MODEL
) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels of the touching pairs of training scene ``seed``."""
    scene = scene_config(
        seed,
        size=config.scene_size,
        galsim_fraction=config.galsim_fraction,
        crowded_fraction=config.crowded_fraction,
        large_fraction=config.large_fraction,
        large_clumpy_fraction=config.large_clumpy_fraction,
        correlated_fraction=config.correlated_fraction,
        varied_psf_fraction=config.varied_psf_fraction,
    )
    return simulated_pairs(scene, model)


def simulated_pairs(
    scene: SimulationConfig, model: str | Path = DEFAULT_MODEL
) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels of the touching pairs of a simulated scene, screened whole.

    A scene the network would screen resampled (its PSF outside the native range)
    gives none.
    """
    recorder = _PairRecorder(
        model, device="cpu", precision="float32", psf_fwhm_pix=scene.psf_fwhm_pix
    )
    none = np.zeros((0, len(PAIR_FEATURES)), np.float32), np.zeros(0, np.float32)
    if recorder.binning != 1 or recorder.upsampling != 1:
        return none
    sim = simulate_mosaic(scene)
    background = scene_background(sim)
    variance = detection_variance(sim, background)
    noise_scale = float(np.sqrt(np.median(variance / sim.variance)))
    window = WindowData(sim.image, variance, background, None, noise_scale)
    recorder.segment(window, saturation=scene.saturation)
    features, sources, footprints, flux, significance, centre = recorder.recorded[-1]
    if len(features.pairs) == 0:
        return none
    positions = source_positions(sources, footprints, flux, significance, centre)
    truth_xy = sim.truth_sources[["x", "y"]].to_numpy(dtype=float)
    radius = MATCH_RADIUS_ARCSEC / scene.pixel_scale_arcsec
    return features.values, pair_labels(features.pairs, positions, truth_xy, radius)


def fit_classifier(
    features: np.ndarray, labels: np.ndarray, config: PieceTrainingConfig
) -> PieceClassifier:
    """An ensemble of two-hidden-layer perceptrons fitted to ``labels``, as one perceptron.

    ``config.ensemble`` perceptrons (initial weights seeded ``config.seed``,
    ``config.seed + 1``, ...) are fitted by full-batch AdamW on one thread (so that
    a rerun gives the same weights), and folded into one perceptron whose output
    is the mean of their logits: their hidden layers side by side, the second
    block-diagonal. One perceptron's probabilities near 1 vary from fit to fit;
    the ensemble's much less.
    """
    mean = features.mean(axis=0).astype(np.float64)
    scale = np.maximum(features.std(axis=0).astype(np.float64), 1e-6)
    x = torch.as_tensor((features - mean) / scale, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        members = [_fit_perceptron(x, y, config, config.seed + k) for k in range(config.ensemble)]
    finally:
        torch.set_num_threads(threads)
    first = np.concatenate([m[0][0] for m in members])
    second = np.zeros((len(first), len(first)))
    for k, member in enumerate(members):
        block = slice(k * config.hidden, (k + 1) * config.hidden)
        second[block, block] = member[0][1]
    last = np.concatenate([m[0][2] for m in members], axis=1) / config.ensemble
    return PieceClassifier(
        mean=mean,
        scale=scale,
        weights=(first, second, last),
        biases=(
            np.concatenate([m[1][0] for m in members]),
            np.concatenate([m[1][1] for m in members]),
            np.mean([m[1][2] for m in members], axis=0),
        ),
        min_probability=config.min_probability,
        sure_centre=config.sure_centre,
        knot_clump=config.knot_clump,
    )


def _fit_perceptron(
    x: torch.Tensor, y: torch.Tensor, config: PieceTrainingConfig, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The weights and biases of one perceptron fitted to ``y``."""
    torch.manual_seed(seed)
    network = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], config.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(config.hidden, config.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(config.hidden, 1),
    )
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_function = torch.nn.BCEWithLogitsLoss()
    for _ in range(config.steps):
        optimiser.zero_grad()
        loss = loss_function(network(x)[:, 0], y)
        loss.backward()
        optimiser.step()
    layers = [m for m in network if isinstance(m, torch.nn.Linear)]
    return (
        [m.weight.detach().double().numpy() for m in layers],
        [m.bias.detach().double().numpy() for m in layers],
    )


def accuracy(classifier: PieceClassifier, features: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and the recall of each class at the classifier's threshold."""
    joined = classifier.probability(features) >= classifier.min_probability
    one = labels > 0.5
    return {
        "pairs": len(labels),
        "one_object_fraction": float(one.mean()) if len(labels) else float("nan"),
        "accuracy": float(np.mean(joined == one)) if len(labels) else float("nan"),
        "one_object_recall": float(joined[one].mean()) if one.any() else float("nan"),
        "apart_recall": float((~joined[~one]).mean()) if (~one).any() else float("nan"),
    }


def record_pairs(
    config: PieceTrainingConfig, model: str | Path = DEFAULT_MODEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features, labels and scene seed of every touching pair of the training scenes."""
    per_scene = [scene_pairs(seed, config, model) for seed in config.seeds]
    seeds = np.concatenate(
        [np.full(len(y), seed) for seed, (_, y) in zip(config.seeds, per_scene, strict=True)]
    )
    features = np.concatenate([x for x, _ in per_scene])
    labels = np.concatenate([y for _, y in per_scene])
    return features, labels, seeds


def train_piece_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    seeds: np.ndarray,
    config: PieceTrainingConfig,
    holdout: float = 0.2,
) -> tuple[PieceClassifier, dict]:
    """Fit the classifier to recorded pairs and measure it.

    At most ``config.max_pairs_per_scene`` pairs of each scene are kept. The pairs
    of the last ``holdout`` fraction of the scenes are held out for the reported
    accuracy; the returned classifier is then refitted on every kept pair.
    """
    kept = _at_most_per_scene(seeds, config.max_pairs_per_scene, config.seed)
    features, labels, seeds = features[kept], labels[kept], seeds[kept]
    scenes = np.unique(seeds)
    held = np.isin(seeds, scenes[round(len(scenes) * (1 - holdout)) :])
    held_out = accuracy(
        fit_classifier(features[~held], labels[~held], config), features[held], labels[held]
    )
    start = time.perf_counter()
    classifier = fit_classifier(features, labels, config)
    report = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
        "scenes_with_pairs": int(scenes.size),
        "fit_seconds": round(time.perf_counter() - start, 1),
        "held_out_scenes": int(np.unique(seeds[held]).size),
        "held_out": held_out,
        "training": accuracy(classifier, features, labels),
    }
    return classifier, report


def _at_most_per_scene(seeds: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Boolean: at most ``limit`` pairs of each scene, drawn at random."""
    rng = np.random.default_rng(seed)
    kept = np.zeros(len(seeds), bool)
    for scene in np.unique(seeds):
        kept[rng.permutation(np.flatnonzero(seeds == scene))[:limit]] = True
    return kept


def main(argv: list[str] | None = None) -> None:
    """Command line: record the training pairs (or read them back), fit and write."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="classifier JSON to write")
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model config to screen with")
    parser.add_argument(
        "--pairs", type=Path, help="recorded pairs (.npz): read if it exists, else written"
    )
    args = parser.parse_args(argv)
    config = PieceTrainingConfig(seeds=tuple(range(args.first_seed, args.first_seed + args.scenes)))
    start = time.perf_counter()
    if args.pairs is not None and args.pairs.exists():
        with np.load(args.pairs) as recorded:
            features, labels, seeds = recorded["features"], recorded["labels"], recorded["seeds"]
            record_seconds = (
                float(recorded["record_seconds"]) if "record_seconds" in recorded else None
            )
    else:
        features, labels, seeds = record_pairs(config, args.model)
        record_seconds = round(time.perf_counter() - start, 1)
        if args.pairs is not None:
            np.savez(
                args.pairs,
                features=features,
                labels=labels,
                seeds=seeds,
                record_seconds=record_seconds,
            )
    classifier, report = train_piece_classifier(features, labels, seeds, config)
    report["record_seconds"] = record_seconds  # None: recorded elsewhere, time not kept
    args.out.write_text(json.dumps(classifier.to_dict() | {"training": report}, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
