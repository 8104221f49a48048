"""Train the screening network on simulated scenes.

Every batch is a set of small mosaics simulated on the fly
(:func:`survey_seg.simulate.simulate_mosaic`), cropped at random, with dense
targets built from the simulation's truth: object / overlap classes, a heatmap
on object centres, a heatmap on clumps, artefact pixel planes and per-stamp
quality labels. Scenes vary the PSF, noise, Sersic range and artefact rates
around the survey defaults, and half of them carry many more artefacts than a
survey does, so that rare classes (trails, ghosts) are learned. Everything is
deterministic by seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch import nn

from survey_seg.background import cell_statistics, finish_mesh, interpolate_mesh
from survey_seg.files import atomic_path
from survey_seg.inference import Predictor, network_input, resolve_device
from survey_seg.masks import ARTEFACT_CLASS_BITS, MaskBit
from survey_seg.models.unet import (
    OFFSET_SCALE,
    QUALITY_CLASSES,
    ScreeningUNet,
    UNetConfig,
    load_growing_heads,
    split_heads,
)
from survey_seg.noise import image_noise_correlation
from survey_seg.sampling import bin_window_arrays, binned_position, upsample_window_arrays
from survey_seg.simulate import (
    SIMULATOR_VERSION,
    SimulatedMosaic,
    SimulationConfig,
    simulate_mosaic,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ARTEFACT_PLANES",
    "DEFAULT_THRESHOLDS",
    "TASKS",
    "StepBatches",
    "TrainConfig",
    "TrainResult",
    "average_weights",
    "boundary_loss",
    "centre_offsets",
    "distillation_loss",
    "loss_weights",
    "make_batch",
    "object_boundaries",
    "offset_loss",
    "scene_background",
    "scene_config",
    "stamp_labels",
    "train",
    "undersampled_scene_inputs",
]

ARTEFACT_PLANES = (MaskBit.CR, MaskBit.STREAK, MaskBit.GHOST, MaskBit.BAD, MaskBit.SAT)
"""Mask planes of the artefact head's channels, in order."""
QUALITY_PLANES = tuple(ARTEFACT_CLASS_BITS.values())
"""Mask planes of the first six :data:`QUALITY_CLASSES`, in order."""

TASKS: dict[str, dict[str, float]] = {
    "screening": {
        "segmentation": 1.0,
        "centre": 1.0,
        "clump": 1.0,
        "artefact": 1.0,
        "stamps": 0.5,
        "offset": 1.0,
        "boundary": 1.0,
    },
    "blends": {"segmentation": 1.0, "centre": 1.0, "offset": 1.0, "boundary": 1.0},
    "clumps": {"clump": 1.0, "segmentation": 0.2},
    "quality": {"artefact": 1.0, "stamps": 0.5},
}
"""Loss weights of each trainable task: ``screening`` trains every head of one
shared network; the others train a network for their heads alone. ``offset``
and ``boundary`` train only where the architecture has that head."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "object": 0.5,
    "centre": 0.3,
    "centre_min_distance": 2.0,
    "clump": 0.35,
    "artefact": 0.5,
    "inspect_fraction": 0.02,
    "reject_fraction": 0.25,
}
"""Post-processing thresholds written into a trained model's config (tunable there)."""

SHIFT = 0.3
"""Relative change of PSF width and sky noise of the shifted test survey."""
CENTRE_SIGMA = 1.0
CLUMP_SIGMA = 1.0
MIN_CENTRE_SNR = 5.0
CROWDED_STAR_DENSITY = (500.0, 5000.0)
"""Range (log-uniform) of stars per million pixels in a crowded training scene."""
PSF_BETA_RANGE = (2.0, 5.0)
"""Moffat ``beta`` of a training scene with a varied PSF (the canonical one is 3)."""
PSF_ELLIPTICITY_MAX = 0.15
"""Largest PSF ellipticity of a training scene with a varied PSF."""
CORRELATION_RANGE = (0.2, 0.6)
"""Neighbour weights of the noise kernel of a correlated training scene (0.5: the
benchmark's ``correlated`` sky and the drizzle-like kernel of the tests)."""
TRUTH_TAUGHT_PROFILES = ("knotty",)
"""Galaxies the teacher cuts into pieces (each knot of a knotty irregular is a centre
to it): on their pixels the distillation's targets are the truth's
(:func:`_with_distillation`), so that a distilled network learns them whole."""
LARGE_GALAXY_DENSITY = 60.0
"""Large galaxies per million pixels in a training scene that holds them (about two
in a 192 x 192 scene; :attr:`survey_seg.simulate.SimulationConfig.large_galaxy_density`)."""
WIDE_PSF_BINNINGS = (2, 3, 4)
"""Binnings of a wide-PSF training scene: its PSF is that many times a scene's, and it
is shown binned by that factor, as screening shows a mosaic whose PSF is that many
times the networks' (:func:`survey_seg.sampling.binning_factor`)."""
UNDERSAMPLING = 2
"""Block side of an undersampled training scene, and its upsampling: screening
upsamples by 2 every PSF recorded narrower than the training ones
(:func:`survey_seg.sampling.upsampling_factor`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Parameters of a training run."""

    steps: int = 3000
    """Optimiser steps."""
    batch_size: int = 8
    """Crops per step."""
    crop: int = 128
    """Side of the training crops (a multiple of the stamp size)."""
    scene_size: int = 192
    """Side of the simulated scenes that crops are cut from."""
    learning_rate: float = 2e-3
    """Peak learning rate of the one-cycle schedule (AdamW)."""
    seed: int = 0
    """Seed of the scenes, the crops and the initial weights."""
    architecture: UNetConfig = field(default_factory=UNetConfig)
    """Network width, depth and stamp size."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``."""
    checkpoint_every: int = 250
    """Steps between checkpoints (a run restarted in the same directory resumes)."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    init_weights: str | None = None
    """Weight file to start from (fine-tuning); its sha256 is recorded."""
    condition_jitter: float = 0.25
    """Largest relative change of PSF width and sky noise between training scenes
    (below :data:`SHIFT`, so that the shifted test survey stays unseen)."""
    galsim_fraction: float = 0.0
    """Probability that a galaxy of a training scene is a GalSim bulge + disk or knotty
    irregular (:attr:`survey_seg.simulate.SimulationConfig.galsim_fraction`)."""
    head_weights: dict[str, float] | None = None
    """Loss weights that replace the task's (:data:`TASKS`) for the heads named, e.g.
    ``{"clump": 2.0}`` to spend more of a fine-tuning run on clumps; a weight of 0
    leaves that head as initialised (no loss trains it, the shared layers included)."""
    teacher: str | None = None
    """Model config whose predictions (all its passes and networks, averaged as
    screening averages them) the network also learns to reproduce: distillation of
    several passes into one. Only the scenes of white noise at the networks'
    sampling are distilled: the teacher takes correlated noise for sources."""
    distill_weight: float = 0.5
    """Share of the loss that is distillation when a ``teacher`` is given (the rest
    is the task's loss on the simulation's truth)."""
    truth_taught_weight: float = 1.0
    """Weight of each pixel of the galaxies the distillation learns from the truth
    (:data:`TRUTH_TAUGHT_PROFILES`) in its segmentation, centre and clump terms,
    against 1 for every other pixel: they are a few per cent of a batch's pixels,
    so that the teacher's habit elsewhere outweighs what their truth teaches."""
    pair_truth_fwhm: float = 0.0
    """Objects with another's centre within this many PSF FWHM are also learned
    from the truth by the distillation, weighing ``truth_taught_weight`` each (0:
    none): what the knots teach, one centre under several peaks, is then learned
    beside its counter-example, two close objects that are two."""
    crowded_fraction: float = 0.0
    """Probability that a training scene is also a crowded star field (hundreds to
    thousands of stars per million pixels, as in the Galactic plane), so that stars
    touching stars are learned as sources, not artefacts."""
    crowded_density: tuple[float, float] = CROWDED_STAR_DENSITY
    """Range of stars per million pixels of a crowded scene, drawn log-uniformly
    (the Galactic plane of Spitzer's GLIMPSE holds over 8,000 detected per million)."""
    large_fraction: float = 0.0
    """Probability that a training scene also holds large galaxies (half-light radii
    of 4-20 PSF FWHM, bright with extended wings to below the noise; Sersic, bulge +
    disk, knotty, down to edge-on), so that a galaxy many times the PSF, its arms and
    knots are learned as one object."""
    large_clumpy_fraction: float = 0.0
    """Probability that a large galaxy of a training scene is a clumpy star-forming
    one (clumps of at least 8 % of the host's light, the literature's definition;
    :attr:`survey_seg.simulate.SimulationConfig.large_clumpy_fraction`), so that
    clumps are learned in hosts of any size, not only in small ones."""
    varied_psf_fraction: float = 0.0
    """Probability that a training scene's PSF has another shape: half of them a
    Moffat of ``beta`` 2-5 (:data:`PSF_BETA_RANGE`), half a Kolmogorov (GalSim's
    atmospheric PSF, wings falling as ``r**(-11/3)``), each with an ellipticity up to
    :data:`PSF_ELLIPTICITY_MAX` at any angle, so that the networks learn what a
    point source is whatever the seeing's profile."""
    correlated_fraction: float = 0.0
    """Probability that a training scene's noise is correlated between neighbouring
    pixels, as drizzled and resampled images' is (a drizzle-like kernel, neighbour
    weight 0.2-0.6; :attr:`survey_seg.simulate.SimulationConfig.noise_correlation`),
    its variance scaled as the ingest scales it (:func:`detection_variance`), so
    that noise bumps on the PSF's scale are learned as noise."""
    undersampled_fraction: float = 0.0
    """Probability that a training scene is shown as screening shows an undersampled
    mosaic (SDSS, 2MASS): averaged in 2 x 2 blocks, a native PSF of about half the
    scene's, then upsampled back by 2 (:func:`undersampled_scene_inputs`), so that
    stars, clumps and noise look as the upsampled windows of such mosaics do."""
    wide_psf_fraction: float = 0.0
    """Probability that a training scene is shown as screening shows a mosaic with a
    PSF 2-4 times the networks' (:data:`WIDE_PSF_BINNINGS`): simulated with that
    wider PSF on the same pixels, then binned back to the networks' sampling with
    its truth (:func:`binned_scene`), so that galaxies smaller than the PSF, blends
    below the resolution and diluted artefacts are learned as such, and the stamps
    learn the native pixels' flagged fraction. Such a scene is a crop's side."""
    data_workers: int = 0
    """Processes that simulate the batches ahead of the optimiser (0: the training
    process itself). The batches are the same for any number: each step's scenes and
    crops come from its own seeds."""

    def __post_init__(self) -> None:
        check_positive_integers(
            self, ("steps", "batch_size", "crop", "scene_size", "checkpoint_every")
        )
        if self.crop % self.architecture.stamp_size or self.crop > self.scene_size:
            raise ValueError(
                f"crop {self.crop} must be a multiple of the stamp size "
                f"{self.architecture.stamp_size} and at most scene_size {self.scene_size}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        for head, weight in (self.head_weights or {}).items():
            if head not in TASKS["screening"]:
                raise ValueError(
                    f"head_weights names unknown head {head!r}; use {', '.join(TASKS['screening'])}"
                )
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
                raise ValueError(f"head_weights[{head!r}] must be zero or positive, got {weight!r}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        low, high = self.crowded_density
        if not 0 < low <= high:
            raise ValueError(
                "crowded_density must be (low, high) with 0 < low <= high, "
                f"got {self.crowded_density}"
            )
        if not self.pair_truth_fwhm >= 0:
            raise ValueError(f"pair_truth_fwhm must be 0 or more, got {self.pair_truth_fwhm}")
        if not self.truth_taught_weight >= 1:
            raise ValueError(
                f"truth_taught_weight must be 1 or more, got {self.truth_taught_weight}"
            )
        for name in (
            "galsim_fraction",
            "crowded_fraction",
            "large_fraction",
            "large_clumpy_fraction",
            "correlated_fraction",
            "varied_psf_fraction",
            "undersampled_fraction",
            "wide_psf_fraction",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if isinstance(self.data_workers, bool) or not isinstance(self.data_workers, int):
            raise ValueError(f"data_workers must be an integer, got {self.data_workers!r}")
        if self.data_workers < 0:
            raise ValueError(f"data_workers must be 0 or more, got {self.data_workers}")
        if not 0 <= self.condition_jitter < SHIFT:
            raise ValueError(
                f"condition_jitter must be in [0, {SHIFT}) so that the shifted test survey "
                f"stays outside the training conditions, got {self.condition_jitter}"
            )


def check_positive_integers(config: object, names: tuple[str, ...]) -> None:
    """Refuse a config whose fields ``names`` are not positive integers (bools included)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{type(config).__name__}.{name} must be a positive integer, got {value!r}"
            )


@dataclass
class TrainResult:
    """What a training run produced."""

    config_path: Path
    weights_path: Path
    losses: list[float]
    validation_losses: list[float]
    seconds: float


# --------------------------------------------------------------------------- data


def scene_config(
    seed: int,
    *,
    size: int,
    shifted: bool = False,
    jitter: float = 0.25,
    galsim_fraction: float = 0.0,
    crowded_fraction: float = 0.0,
    crowded_density: tuple[float, float] = CROWDED_STAR_DENSITY,
    large_fraction: float = 0.0,
    large_clumpy_fraction: float = 0.0,
    correlated_fraction: float = 0.0,
    varied_psf_fraction: float = 0.0,
) -> SimulationConfig:
    """Simulation parameters of training scene ``seed`` (or of a shifted test survey).

    Training scenes jitter the PSF width and noise by up to ``jitter`` and the
    Sersic range; each scene is, independently, rich or not in artefacts, in
    clumpy galaxies and in bright (saturated) stars. The ``shifted`` survey (for
    testing generalisation) moves PSF width and noise by :data:`SHIFT` (30 %) and
    narrows the Sersic range, outside the training jitter. ``galsim_fraction`` of
    the galaxies of a training scene are GalSim bulge + disk or knotty galaxies;
    ``crowded_fraction`` of the training scenes are also crowded star fields
    (``crowded_density`` stars per million pixels, log-uniform) and
    ``large_fraction`` hold large galaxies too (:data:`LARGE_GALAXY_DENSITY`),
    ``large_clumpy_fraction`` of which are clumpy star-forming galaxies;
    ``correlated_fraction`` have noise correlated by a drizzle-like kernel
    (:data:`CORRELATION_RANGE`); ``varied_psf_fraction`` have a PSF of another
    profile (Moffat of another ``beta`` or Kolmogorov, elliptical; see
    :attr:`TrainConfig.varied_psf_fraction`). Each of those draws comes after the
    others, so that the other traits of a scene do not depend on it.
    """
    base = SimulationConfig()
    if shifted:
        return SimulationConfig(
            size=size,
            seed=seed,
            psf_fwhm_pix=base.psf_fwhm_pix * (1 + SHIFT),
            sky_sigma=base.sky_sigma * (1 + SHIFT),
            sersic_n_range=(0.8, 2.5),
        )
    rng = np.random.default_rng([seed, 7919])
    # independent traits: a scene rich in artefacts is not more likely to be rich in
    # clumpy galaxies or bright stars, so no trait can stand in for another
    artefacts, clumpy, bright = rng.random(3) < 0.5
    config = SimulationConfig(
        size=size,
        seed=seed,
        psf_fwhm_pix=base.psf_fwhm_pix * rng.uniform(1 - jitter, 1 + jitter),
        sky_sigma=base.sky_sigma * rng.uniform(1 - jitter, 1 + jitter),
        sersic_n_range=(rng.uniform(0.4, 0.7), rng.uniform(3.0, 5.0)),
        clumpy_fraction=0.5 if clumpy else base.clumpy_fraction,
        star_mag_range=(14.0, 24.0) if bright else base.star_mag_range,
        star_mag_slope=0.0 if bright else base.star_mag_slope,
        n_satellite_trails=80.0 if artefacts else base.n_satellite_trails,
        n_ghosts=80.0 if artefacts else base.n_ghosts,
        n_bad_columns=120.0 if artefacts else base.n_bad_columns,
        n_chip_gaps=20.0 if artefacts else base.n_chip_gaps,
        n_holes=20.0 if artefacts else base.n_holes,
        n_cosmic_rays=600.0 if artefacts else base.n_cosmic_rays,
        galsim_fraction=galsim_fraction,
    )
    if rng.random() < crowded_fraction:
        config = replace(
            config,
            star_density=float(np.exp(rng.uniform(*np.log(crowded_density)))),
            # the survey's magnitudes even in a bright-star scene: thousands of stars
            # with a flat magnitude distribution would saturate the field
            star_mag_range=base.star_mag_range,
            star_mag_slope=base.star_mag_slope,
        )
    if rng.random() < large_fraction:
        config = replace(
            config,
            large_galaxy_density=LARGE_GALAXY_DENSITY,
            large_clumpy_fraction=large_clumpy_fraction,
        )
    if rng.random() < correlated_fraction:
        config = replace(config, noise_correlation=float(rng.uniform(*CORRELATION_RANGE)))
    if rng.random() < varied_psf_fraction:
        kolmogorov, beta, ellipticity, angle = rng.random(4)
        config = replace(
            config,
            psf_model="kolmogorov" if kolmogorov < 0.5 else "moffat",
            psf_beta=float(PSF_BETA_RANGE[0] + beta * np.ptp(PSF_BETA_RANGE)),
            psf_ellipticity=float(ellipticity * PSF_ELLIPTICITY_MAX),
            psf_angle_deg=float(180.0 * angle),
        )
    return config


def scene_background(sim: SimulatedMosaic, background_cell: int = 64) -> np.ndarray:
    """The background of a whole simulated scene, interpolated from its mesh."""
    level, rms, _ = cell_statistics(sim.image, background_cell)
    mesh = finish_mesh(level, rms, background_cell)
    return interpolate_mesh(mesh.level, background_cell, (0, 0), sim.image.shape)


def detection_variance(sim: SimulatedMosaic, background: np.ndarray) -> np.ndarray:
    """The scene's variance as screening sees it: scaled by its noise correlation squared.

    The ingest measures how much noisier the sky is on the PSF's scale than its
    pixels say (:func:`survey_seg.noise.image_noise_correlation`, at least 1) and
    scales the variance by its square; a scene of white noise is left as it is.
    """
    if not sim.config.noise_correlation:
        return sim.variance
    ratio = image_noise_correlation(sim.image, sim.variance, background, sim.config.psf_fwhm_pix)
    return (sim.variance * np.float32(max(1.0, ratio) ** 2)).astype(np.float32)


def scene_inputs(sim: SimulatedMosaic, background_cell: int = 64) -> np.ndarray:
    """Network input planes of a whole simulated scene, background from its mesh."""
    background = scene_background(sim, background_cell)
    variance = detection_variance(sim, background)
    return network_input(sim.image, variance, background, sim.config.saturation)


def undersampled_scene_inputs(sim: SimulatedMosaic, background_cell: int = 64) -> np.ndarray:
    """Network input planes of a scene seen as an undersampled mosaic is seen.

    The scene is averaged in 2 x 2 blocks (the undersampled mosaic: PSF and noise
    per native pixel as a survey with half the sampling records them), then
    upsampled by 2 as screening upsamples such a mosaic
    (:func:`survey_seg.sampling.upsample_window_arrays`). The fine grid covers the
    native pixels exactly, so the scene's targets stay aligned. Saturation is
    left out, as screening takes it from the native pixels.
    """
    background = scene_background(sim, background_cell)
    variance = detection_variance(sim, background)
    native = bin_window_arrays(sim.image, variance, background, UNDERSAMPLING)
    image, variance, background = upsample_window_arrays(*native, UNDERSAMPLING)
    return network_input(image, variance, background, None)


def wide_psf_binning(seed: int, fraction: float) -> int:
    """The binning of training scene ``seed``: 1, or a :data:`WIDE_PSF_BINNINGS` factor."""
    rng = np.random.default_rng([seed, 7901])
    if not rng.random() < fraction:
        return 1
    return int(rng.choice(WIDE_PSF_BINNINGS))


def simulate_scene(
    config: SimulationConfig, binning: int = 1
) -> tuple[SimulatedMosaic, SimulatedMosaic]:
    """A scene simulated with its PSF ``binning`` times wider, and as screening sees it.

    Returns the native scene and its :func:`binned_scene` (the same scene when
    ``binning`` is 1).
    """
    native = simulate_mosaic(replace(config, psf_fwhm_pix=config.psf_fwhm_pix * binning))
    return native, binned_scene(native, binning) if binning > 1 else native


def binned_scene(sim: SimulatedMosaic, factor: int) -> SimulatedMosaic:
    """A scene and its truth binned ``factor`` a side, as screening bins a wide-PSF mosaic.

    The image is averaged in blocks and the variance is that of the means
    (:func:`survey_seg.sampling.bin_window_arrays`). Each binned pixel takes the
    truth object and overlap of its block's central pixel, and every artefact plane
    of any of its block's pixels (a cosmic ray is a binned pixel, as the binned
    screening's artefact planes are cut down to native pixels after). Positions
    move to the binned pixels, and the PSF narrows by ``factor``.
    """
    image, variance, _ = bin_window_arrays(
        sim.image, sim.variance, np.zeros_like(sim.image), factor
    )
    centre = factor // 2

    def sampled(array: np.ndarray | None) -> np.ndarray | None:
        return (
            None if array is None else np.ascontiguousarray(array[centre::factor, centre::factor])
        )

    def binned_positions(table):
        table = table.copy()
        for axis in ("x", "y"):
            table[axis] = binned_position(table[axis].to_numpy(), factor)
        return table

    return replace(
        sim,
        image=image,
        variance=variance,
        truth_sources=binned_positions(sim.truth_sources),
        truth_clumps=binned_positions(sim.truth_clumps),
        truth_mask=_block_or(sim.truth_mask, factor),
        config=replace(
            sim.config, size=image.shape[0], psf_fwhm_pix=sim.config.psf_fwhm_pix / factor
        ),
        truth_segmentation=sampled(sim.truth_segmentation),
        truth_overlap=sampled(sim.truth_overlap),
    )


def _block_or(mask: np.ndarray, factor: int) -> np.ndarray:
    """The union of the mask planes of each ``factor x factor`` block (sides its multiples)."""
    ny, nx = mask.shape
    blocks = mask.reshape(ny // factor, factor, nx // factor, factor)
    return np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=3), axis=1)


def scene_targets(
    sim: SimulatedMosaic,
    stamp_size: int,
    offsets: bool = False,
    pair_truth_fwhm: float = 0.0,
    boundaries: bool = False,
) -> dict[str, np.ndarray]:
    """Dense training targets of a whole simulated scene.

    Returns
    -------
    dict
        ``segmentation`` (int64 class 0/1/2), ``centre`` and ``clump`` heatmaps,
        ``artefact`` ``(5, H, W)`` planes, ``stamps`` ``(7, h, w)`` labels,
        ``truth_taught`` (bool: the pixels of the galaxies of
        :data:`TRUTH_TAUGHT_PROFILES` and, with ``pair_truth_fwhm``, of the
        objects with another's centre within that many PSF FWHM); with
        ``offsets``, ``offset`` ``(2, H, W)``: the ``(dy, dx)`` from each pixel of an
        object to its truth centre (:func:`centre_offsets`); with ``boundaries``,
        ``boundary``: 1 on the pixels of an object that border another object's
        (:func:`object_boundaries`).
    """
    shape = sim.image.shape
    classes = np.where(sim.truth_segmentation > 0, 1, 0)
    classes[sim.truth_overlap] = 2
    sources = sim.truth_sources
    detectable = sources[sources["snr"] >= MIN_CENTRE_SNR]
    centre = _heatmap(shape, detectable["x"].to_numpy(), detectable["y"].to_numpy(), CENTRE_SIGMA)
    clumps = sim.truth_clumps
    clump = _heatmap(shape, clumps["x"].to_numpy(), clumps["y"].to_numpy(), CLUMP_SIGMA)
    mask = sim.truth_mask
    artefact = np.stack([(mask & np.uint32(bit)) != 0 for bit in ARTEFACT_PLANES]).astype(
        np.float32
    )
    stamps = stamp_labels(mask, stamp_size)
    targets = {
        "segmentation": classes.astype(np.int64),
        "centre": centre,
        "clump": clump,
        "artefact": artefact,
        "stamps": stamps,
        "truth_taught": np.isin(
            sim.truth_segmentation,
            sources.loc[
                sources["profile"].isin(TRUTH_TAUGHT_PROFILES)
                | _close_pair_members(
                    detectable, sources, pair_truth_fwhm * sim.config.psf_fwhm_pix
                ),
                "id",
            ].to_numpy(),
        ),
    }
    if offsets:
        targets["offset"] = centre_offsets(sim.truth_segmentation, sources)
    if boundaries:
        targets["boundary"] = object_boundaries(sim.truth_segmentation)
    return targets


def _close_pair_members(
    detectable: pd.DataFrame, sources: pd.DataFrame, max_separation: float
) -> np.ndarray:
    """Per row of ``sources``: detectable, with another detectable centre that close."""
    member = np.zeros(len(sources), dtype=bool)
    if max_separation <= 0 or len(detectable) < 2:
        return member
    pairs = cKDTree(detectable[["x", "y"]].to_numpy(float)).query_pairs(
        max_separation, output_type="ndarray"
    )
    close_ids = detectable["id"].to_numpy()[np.unique(pairs)]
    return sources["id"].isin(close_ids).to_numpy()


def centre_offsets(segmentation: np.ndarray, sources: pd.DataFrame) -> np.ndarray:
    """``(dy, dx)`` from each pixel to the truth centre of the object it belongs to.

    Parameters
    ----------
    segmentation : numpy.ndarray
        int ``(H, W)`` truth ``id`` of each pixel's object, 0 on the sky.
    sources : pandas.DataFrame
        Truth table with ``id``, ``x`` and ``y``.

    Returns
    -------
    numpy.ndarray
        float32 ``(2, H, W)`` in pixels; NaN on the sky (no target there).
    """
    ids = sources["id"].to_numpy()
    lookup_y = np.full(max(int(segmentation.max()), int(ids.max(initial=0))) + 1, np.nan)
    lookup_x = lookup_y.copy()
    lookup_y[ids], lookup_x[ids] = sources["y"].to_numpy(), sources["x"].to_numpy()
    rows, cols = np.indices(segmentation.shape)
    return np.stack([lookup_y[segmentation] - rows, lookup_x[segmentation] - cols]).astype(
        np.float32
    )


def object_boundaries(segmentation: np.ndarray) -> np.ndarray:
    """Where a pixel of an object touches a pixel of another object (8-connected).

    Parameters
    ----------
    segmentation : numpy.ndarray
        int ``(H, W)`` truth ``id`` of each pixel's object, 0 on the sky.

    Returns
    -------
    numpy.ndarray
        float32 ``(H, W)``: 1 on such pixels (a band two pixels wide along each
        common border), 0 on the other pixels of objects, NaN on the sky (no
        target there: an object's edge to the sky is no boundary between objects).
    """
    labels = segmentation.astype(np.int64)
    highest = ndimage.maximum_filter(labels, size=3, mode="nearest")
    no_object = int(labels.max(initial=0)) + 1  # above every label (filters go by float)
    lowest = ndimage.minimum_filter(np.where(labels > 0, labels, no_object), size=3, mode="nearest")
    bordering = (highest > labels) | (lowest < labels)
    target = np.where(bordering, 1.0, 0.0).astype(np.float32)
    target[labels == 0] = np.nan
    return target


def _heatmap(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian peaks (max-combined) at ``(x, y)``, exactly 1 at each rounded centre."""
    heat = np.zeros(shape, dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    for xc, yc in zip(x, y, strict=True):
        ix, iy = int(np.rint(xc)), int(np.rint(yc))
        if not (0 <= ix < shape[1] and 0 <= iy < shape[0]):
            continue
        ys = np.clip(iy + offsets, 0, shape[0] - 1)
        xs = np.clip(ix + offsets, 0, shape[1] - 1)
        g = np.exp(-((xs[None, :] - xc) ** 2 + (ys[:, None] - yc) ** 2) / (2 * sigma**2)).astype(
            np.float32
        )
        block = heat[np.ix_(ys, xs)]
        heat[np.ix_(ys, xs)] = np.maximum(block, g)
        heat[iy, ix] = 1.0
    return heat


def stamp_labels(mask: np.ndarray, stamp_size: int) -> np.ndarray:
    """Per-stamp labels of a truth mask, ``(len(QUALITY_CLASSES), rows, cols)``.

    The first six: each of :data:`QUALITY_PLANES` present in the stamp (0 or 1).
    The last, ``flagged``: the fraction of the stamp's pixels that carry one of
    them, a soft target, so that the head learns its expectation and a tile's
    fraction is the mean of its stamps'; a stamp cut by the mask's edge counts the
    pixels it has.
    """
    ny, nx = mask.shape
    rows, cols = -(-ny // stamp_size), -(-nx // stamp_size)
    labels = np.zeros((len(QUALITY_CLASSES), rows, cols), dtype=np.float32)
    flagged_bits = np.uint32(sum(int(bit) for bit in QUALITY_PLANES))
    for r in range(rows):
        for c in range(cols):
            stamp = mask[
                r * stamp_size : (r + 1) * stamp_size, c * stamp_size : (c + 1) * stamp_size
            ]
            present = np.bitwise_or.reduce(stamp, axis=None)
            for k, bit in enumerate(QUALITY_PLANES):
                labels[k, r, c] = bool(present & np.uint32(bit))
            labels[-1, r, c] = np.mean((stamp & flagged_bits) != 0)
    return labels


def make_batch(
    seeds: list[int], rng: np.random.Generator, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Simulate one scene per seed, crop each at random, flip at random; stack."""
    stamp = config.architecture.stamp_size
    inputs, targets = [], {}
    for seed in seeds:
        binning = wide_psf_binning(seed, config.wide_psf_fraction)
        scene = scene_config(
            seed,
            size=config.scene_size if binning == 1 else config.crop * binning,
            jitter=config.condition_jitter,
            galsim_fraction=config.galsim_fraction,
            crowded_fraction=config.crowded_fraction,
            crowded_density=config.crowded_density,
            large_fraction=config.large_fraction,
            large_clumpy_fraction=config.large_clumpy_fraction,
            correlated_fraction=config.correlated_fraction,
            varied_psf_fraction=config.varied_psf_fraction,
        )
        native, sim = simulate_scene(scene, binning)
        if binning > 1:
            planes = scene_inputs(sim)
            dense = scene_targets(
                sim,
                stamp,
                offsets=config.architecture.offset_head,
                boundaries=config.architecture.boundary_head,
            )
            # the stamps learn the flagged fraction of the native pixels they cover
            dense["stamps"] = stamp_labels(native.truth_mask, stamp * binning)
        else:
            undersampled = (
                np.random.default_rng([seed, 7907]).random() < config.undersampled_fraction
            )
            planes = undersampled_scene_inputs(sim) if undersampled else scene_inputs(sim)
            dense = scene_targets(
                sim,
                stamp,
                offsets=config.architecture.offset_head,
                pair_truth_fwhm=config.pair_truth_fwhm,
                boundaries=config.architecture.boundary_head,
            )
        # crops start on the stamp grid so the stamp labels stay aligned
        starts = np.arange(0, sim.image.shape[0] - config.crop + 1, stamp)
        y0, x0 = int(rng.choice(starts)), int(rng.choice(starts))
        flip_y, flip_x = rng.random(2) < 0.5

        def cut(array: np.ndarray, scale: int = 1, y0=y0, x0=x0, fy=flip_y, fx=flip_x):
            size = config.crop // scale
            out = array[..., y0 // scale : y0 // scale + size, x0 // scale : x0 // scale + size]
            if fy:
                out = out[..., ::-1, :]
            if fx:
                out = out[..., :, ::-1]
            return np.ascontiguousarray(out)

        inputs.append(cut(planes))
        # the teacher was made on white noise at its own sampling: it takes correlated
        # bumps for sources, and a binned scene is what it screens poorly
        teachable = binning == 1 and not sim.config.noise_correlation
        targets.setdefault("teachable", []).append(np.bool_(teachable))
        for name, array in dense.items():
            crop = cut(array, stamp if name == "stamps" else 1)
            if name == "offset":  # a flipped crop's vectors point the flipped way
                crop[0] *= -1.0 if flip_y else 1.0
                crop[1] *= -1.0 if flip_x else 1.0
            targets.setdefault(name, []).append(crop)
    return (
        torch.from_numpy(np.stack(inputs)),
        {name: torch.from_numpy(np.stack(arrays)) for name, arrays in targets.items()},
    )


class StepBatches(torch.utils.data.Dataset):
    """The training batches of steps ``start_step`` to ``config.steps``, by step.

    Item ``i`` is step ``start_step + i``'s batch: its scenes' seeds and its crop
    generator come from the run's seed and the step alone, so that a run gives the
    same batches in any number of data worker processes and when resumed.
    """

    def __init__(self, config: TrainConfig, start_step: int = 0):
        self.config = config
        self.start_step = start_step

    def __len__(self) -> int:
        return max(self.config.steps - self.start_step, 0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        step = self.start_step + index
        size, seed = self.config.batch_size, self.config.seed
        seeds = [seed * 1_000_000 + step * size + k for k in range(size)]
        return make_batch(seeds, np.random.default_rng([seed, step]), self.config)


# --------------------------------------------------------------------------- losses


def distillation_loss(
    pixel_logits: torch.Tensor,
    stamp_logits: torch.Tensor,
    teacher: dict[str, torch.Tensor],
    weights: dict[str, float],
    pixel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """How far the network's probabilities are from a teacher's, for the task's heads.

    Segmentation: cross-entropy against the teacher's class probabilities. Centre
    and clump heatmaps: binary cross-entropy against the teacher's, summed and
    divided by the teacher's total probability (as the focal loss is by the number
    of peaks, so that sparse maps are not drowned by their background). Artefact
    planes and stamps: mean binary cross-entropy against the teacher's.
    ``pixel_weight`` (batch, height, width), if given, weighs each pixel's term in
    the segmentation, centre and clump losses.
    """
    heads = split_heads(pixel_logits)
    total = pixel_logits.new_zeros(())
    weight = 1.0 if pixel_weight is None else pixel_weight
    if "segmentation" in weights:
        log_p = torch.log_softmax(heads["segmentation"].float(), dim=1)
        cross_entropy = -(teacher["segmentation"] * log_p).sum(1)
        total = total + weights["segmentation"] * (weight * cross_entropy).mean()
    for name in ("centre", "clump"):
        if name in weights:
            target = teacher[name]
            bce = nn.functional.binary_cross_entropy_with_logits(
                heads[name][:, 0].float(), target, reduction="none"
            )
            total = total + weights[name] * (weight * bce).sum() / target.sum().clamp(min=1.0)
    if "artefact" in weights:
        total = total + weights["artefact"] * nn.functional.binary_cross_entropy_with_logits(
            heads["artefact"].float(), teacher["artefact"]
        )
    if "stamps" in weights:
        total = total + weights["stamps"] * nn.functional.binary_cross_entropy_with_logits(
            stamp_logits.float(), teacher["stamps"]
        )
    return total


def teacher_targets(teacher: Predictor, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """A :class:`~survey_seg.inference.Predictor`'s probabilities for a batch of inputs.

    Heatmaps lose their channel axis, as the truth targets have none; the tensors
    are copies made outside inference mode, so that the loss can keep them.
    """
    probabilities = teacher.predict_batch(inputs)
    return {
        name: (value[:, 0] if name in ("centre", "clump") else value).clone()
        for name, value in probabilities.items()
    }


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a heatmap with peaks of exactly 1."""
    p = torch.sigmoid(logits).clamp(1e-5, 1 - 1e-5)
    positive = target.eq(1).float()
    negative_weight = (1 - target).pow(4)
    positive_loss = positive * (1 - p).pow(2) * torch.log(p)
    negative_loss = (1 - positive) * negative_weight * p.pow(2) * torch.log(1 - p)
    n_positive = positive.sum().clamp(min=1.0)
    return -(positive_loss.sum() + negative_loss.sum()) / n_positive


SEGMENTATION_CLASS_WEIGHTS = torch.tensor([1.0, 1.0, 3.0])
ARTEFACT_POSITIVE_WEIGHT = 1.5


def task_loss(
    pixel_logits: torch.Tensor,
    stamp_logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
    weights: dict[str, float],
) -> torch.Tensor:
    """Weighted sum of the losses of the heads a task trains."""
    heads = split_heads(pixel_logits)
    total = pixel_logits.new_zeros(())
    if "segmentation" in weights:
        class_weights = SEGMENTATION_CLASS_WEIGHTS.to(pixel_logits.device)
        total = total + weights["segmentation"] * nn.functional.cross_entropy(
            heads["segmentation"], targets["segmentation"], weight=class_weights
        )
    if "centre" in weights:
        total = total + weights["centre"] * focal_heatmap_loss(
            heads["centre"][:, 0], targets["centre"]
        )
    if "clump" in weights:
        total = total + weights["clump"] * focal_heatmap_loss(
            heads["clump"][:, 0], targets["clump"]
        )
    if "artefact" in weights:
        pos_weight = torch.full((1, 5, 1, 1), ARTEFACT_POSITIVE_WEIGHT, device=pixel_logits.device)
        total = total + weights["artefact"] * nn.functional.binary_cross_entropy_with_logits(
            heads["artefact"], targets["artefact"], pos_weight=pos_weight
        )
    if "stamps" in weights:
        total = total + weights["stamps"] * nn.functional.binary_cross_entropy_with_logits(
            stamp_logits, targets["stamps"]
        )
    if "offset" in weights:
        total = total + weights["offset"] * offset_loss(heads["offset"], targets["offset"])
    if "boundary" in weights:
        total = total + weights["boundary"] * boundary_loss(
            heads["boundary"][:, 0], targets["boundary"]
        )
    return total


BOUNDARY_POSITIVE_WEIGHT = 2.0
"""Weight of a boundary pixel in :func:`boundary_loss` (in the training scenes they are
up to a tenth of the objects' pixels)."""


def boundary_loss(boundary_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the boundary head on the pixels of objects.

    The sky (NaN target) does not count: the head only has to tell, inside the
    objects, the borders between two of them from the rest.
    """
    known = torch.isfinite(target)
    if not bool(known.any()):
        return boundary_logits.new_zeros(())
    pos_weight = torch.tensor(BOUNDARY_POSITIVE_WEIGHT, device=boundary_logits.device)
    bce = nn.functional.binary_cross_entropy_with_logits(
        boundary_logits.float()[known], target[known].float(), pos_weight=pos_weight
    )
    return bce


def offset_loss(offset_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance (in :data:`OFFSET_SCALE` units) of predicted and true offsets.

    Only pixels of objects count (the target is NaN on the sky), each equally: a
    large galaxy's many pixels weigh as much as its area, which is what keeps it
    whole. Panoptic-DeepLab regresses its centre offsets the same way.
    """
    known = torch.isfinite(target)
    if not bool(known.any()):
        return offset_logits.new_zeros(())
    error = (offset_logits.float() - torch.nan_to_num(target) / OFFSET_SCALE).abs()
    return error[known].mean()


# --------------------------------------------------------------------------- training


def train(
    task: str,
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the network for ``task`` and write ``OUT/{task}.pt`` and ``OUT/{task}.json``.

    Parameters
    ----------
    task : str
        One of :data:`TASKS`.
    out_dir : path-like
        Output directory; a ``checkpoint.pt`` there from an interrupted run of the
        same task and config is resumed.
    config : TrainConfig, optional
        Training parameters.
    progress : bool
        Show a progress bar.
    log : callable, optional
        Receives one line per validation.

    Returns
    -------
    TrainResult
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    config = config or TrainConfig()
    weights = loss_weights(task, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = ScreeningUNet(config.architecture).to(device)
    init_sha256 = None
    if config.init_weights:
        init_bytes = Path(config.init_weights).read_bytes()
        init_sha256 = hashlib.sha256(init_bytes).hexdigest()
        load_growing_heads(
            model, torch.load(config.init_weights, map_location=device, weights_only=True)
        )
    groups = _parameter_groups(model, config.learning_rate)
    optimiser = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=[group["lr"] for group in groups],
        total_steps=config.steps,
        pct_start=0.15,
    )
    fingerprint = _config_fingerprint(task, config)
    checkpoint_path = out / "checkpoint.pt"
    start_step, losses, validation_losses = 0, [], []
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            start_step = int(state["step"])
            losses = list(state["losses"])
            validation_losses = list(state["validation_losses"])
    validation = make_batch(
        [10_000_000 + config.seed * 1000 + k for k in range(8)],
        np.random.default_rng([config.seed, 1]),
        config,
    )
    teacher = None
    if config.teacher:
        teacher = Predictor(config.teacher, device=str(device), precision="float32")
    started = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, unit="step")
    batches = torch.utils.data.DataLoader(
        StepBatches(config, start_step),
        batch_size=None,
        num_workers=config.data_workers,
        prefetch_factor=4 if config.data_workers else None,
        # fresh processes: a forked one inherits the parent's threads and fork hooks
        # (a CUDA context, a Prefect or dask client), which can kill it
        multiprocessing_context="spawn" if config.data_workers else None,
    )
    for step, (inputs, targets) in enumerate(batches, start=start_step):
        model.train()
        pixel_logits, stamp_logits = model(inputs.to(device))
        loss = task_loss(
            pixel_logits, stamp_logits, {k: v.to(device) for k, v in targets.items()}, weights
        )
        if teacher is not None:
            loss = _with_distillation(
                loss, teacher, inputs, pixel_logits, stamp_logits, targets, weights, config
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        done = step + 1
        if done % config.checkpoint_every == 0 or done == config.steps:
            validation_losses.append(_validate(model, validation, weights, device))
            if log:
                recent = np.mean(losses[-50:])
                log(f"step {done}: train {recent:.4f} validation {validation_losses[-1]:.4f}")
            _atomic_torch_save(
                {
                    "fingerprint": fingerprint,
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": done,
                    "losses": losses,
                    "validation_losses": validation_losses,
                },
                checkpoint_path,
            )
    bar.close()
    seconds = time.perf_counter() - started
    weights_path = out / f"{task}.pt"
    _atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, weights_path)
    config_path = out / f"{task}.json"
    model_config = {
        "name": task,
        "weights": weights_path.name,
        "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "architecture": config.architecture.to_dict(),
        "heads": list(weights),
        "thresholds": DEFAULT_THRESHOLDS,
        "training": {
            **{k: v for k, v in asdict(config).items() if k not in ("architecture", "device")},
            "task": task,
            "init_weights_sha256": init_sha256,
            "simulator_version": SIMULATOR_VERSION,
            "final_train_loss": float(np.mean(losses[-50:])),
            "validation_losses": validation_losses,
            "seconds": seconds,
            "device": str(device),
            "torch": torch.__version__,
        },
        "metrics": {},
    }
    config_path.write_text(json.dumps(model_config, indent=2))
    return TrainResult(config_path, weights_path, losses, validation_losses, seconds)


_PIXEL_HEAD_WEIGHT = "pixel_head.weight"
_PIXEL_HEAD = (_PIXEL_HEAD_WEIGHT, "pixel_head.bias")
"""The pixel head's tensors: one output channel per row, the offset head's last."""


def average_weights(
    weight_files: list[str | os.PathLike], fractions: list[float], out: str | os.PathLike
) -> str:
    """Write the weighted mean of networks fine-tuned from one start (a model soup).

    Networks fine-tuned from the same weights on different data stay in one basin
    of the loss, so that the mean of their weights is a network that keeps much of
    what each learnt (Wortsman et al. 2022, "Model soups").

    A network without the offset head may be averaged with networks that have it:
    the channels of the pixel head that all have are averaged over all, the
    offset head's own channels over the networks that have them (their fractions
    renormalised).

    Parameters
    ----------
    weight_files : list of path-like
        Weight files of one architecture (with or without the offset head).
    fractions : list of float
        Weight of each file, non-negative, summing to 1.
    out : path-like
        Weight file to write (atomically).

    Returns
    -------
    str
        The sha256 of the file written, for its model config.
    """
    if len(weight_files) < 2 or len(fractions) != len(weight_files):
        raise ValueError("give two or more weight files and one fraction for each")
    if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    states = [torch.load(path, map_location="cpu", weights_only=True) for path in weight_files]
    widest = max(states, key=lambda state: len(state.get(_PIXEL_HEAD_WEIGHT, ())))
    if not all(_same_architecture(state, widest) for state in states):
        raise ValueError("the weight files are not of one architecture; they cannot be averaged")
    mean = {
        name: _weighted_rows([state[name] for state in states], fractions).to(tensor.dtype)
        if tensor.is_floating_point()
        else tensor
        for name, tensor in widest.items()
    }
    _atomic_torch_save(mean, Path(out))
    return hashlib.sha256(Path(out).read_bytes()).hexdigest()


BOUNDARY_LEARNING_RATE_SCALE = 25.0
"""The boundary head learns this many times faster than the rest of the network: it is
one 1 x 1 convolution, grown from nothing on a network fine-tuned at a small rate (at
2e-4, Adam moves a weight by about that much a step, and a logit needs units)."""


def _parameter_groups(model: ScreeningUNet, learning_rate: float) -> list[dict]:
    """The optimiser's parameter groups: the boundary head's at its own peak rate."""
    own = [] if model.boundary_head is None else list(model.boundary_head.parameters())
    own_ids = {id(p) for p in own}
    others = [p for p in model.parameters() if id(p) not in own_ids]
    groups = [{"params": others, "lr": learning_rate}]
    if own:
        groups.append({"params": own, "lr": learning_rate * BOUNDARY_LEARNING_RATE_SCALE})
    return groups


def _same_architecture(state: dict, widest: dict) -> bool:
    """Whether ``state`` is ``widest``'s network, perhaps without the offset head."""
    if state.keys() != widest.keys():
        return False
    for name, tensor in state.items():
        other = widest[name]
        if tensor.shape == other.shape:
            continue
        if name not in _PIXEL_HEAD or tensor.shape[1:] != other.shape[1:]:
            return False
    return True


def _weighted_rows(tensors: list[torch.Tensor], fractions: list[float]) -> torch.Tensor:
    """Weighted mean of ``tensors`` row by row, each row over the tensors that have it."""
    if tensors[0].dim() == 0:
        return sum(f * t.double() for f, t in zip(fractions, tensors, strict=True))
    rows = max(tensor.shape[0] for tensor in tensors)
    total = torch.zeros((rows, *tensors[0].shape[1:]), dtype=torch.float64)
    weight = torch.zeros(rows, dtype=torch.float64)
    for fraction, tensor in zip(fractions, tensors, strict=True):
        total[: tensor.shape[0]] += fraction * tensor.double()
        weight[: tensor.shape[0]] += fraction
    return total / weight.clamp_min(1e-300).reshape(-1, *([1] * (total.dim() - 1)))


def loss_weights(task: str, config: TrainConfig) -> dict[str, float]:
    """The task's loss weights (:data:`TASKS`) with ``config.head_weights`` applied.

    Heads weighted 0 are left out: nothing trains them.

    Raises
    ------
    ValueError
        If ``head_weights`` names a head that ``task`` does not train.
    """
    weights = dict(TASKS[task])
    if not config.architecture.offset_head:
        weights.pop("offset", None)
    if not config.architecture.boundary_head:
        weights.pop("boundary", None)
    for head, weight in (config.head_weights or {}).items():
        if head not in weights:
            raise ValueError(
                f"task {task!r} does not train head {head!r}; it trains {', '.join(weights)}"
            )
        weights[head] = float(weight)
    return {head: weight for head, weight in weights.items() if weight > 0}


def _with_distillation(
    loss: torch.Tensor,
    teacher: Predictor,
    inputs: torch.Tensor,
    pixel_logits: torch.Tensor,
    stamp_logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
    weights: dict[str, float],
    config: TrainConfig,
) -> torch.Tensor:
    """The task's ``loss`` mixed with distillation from ``teacher`` on the teachable scenes.

    Scenes of correlated noise and wide-PSF scenes learn from their truth alone: the
    teacher was made on white noise at its own sampling, and takes correlated bumps
    for sources. On the pixels of the galaxies it cuts into pieces
    (``truth_taught``, :data:`TRUTH_TAUGHT_PROFILES`) its segmentation, centre and
    clump targets are replaced by the truth's, their pixels weighing
    ``truth_taught_weight`` each. The distillation's share is
    ``distill_weight`` times the share of the batch it is computed on.
    """
    taught = targets["teachable"]
    if not bool(taught.any()):
        return loss
    device = pixel_logits.device
    soft = {k: v.to(device) for k, v in teacher_targets(teacher, inputs[taught]).items()}
    truth = ("truth_taught", "segmentation", "centre", "clump")
    chosen = {k: targets[k][taught].to(device) for k in truth if k in targets}
    soft = _truth_where_taught(soft, chosen)
    pixel_weight = None
    if "truth_taught" in chosen and config.truth_taught_weight != 1:
        pixel_weight = 1 + (config.truth_taught_weight - 1) * chosen["truth_taught"].float()
    taught = taught.to(device)
    distilled = distillation_loss(
        pixel_logits[taught], stamp_logits[taught], soft, weights, pixel_weight
    )
    share = config.distill_weight * float(taught.float().mean())
    return (1 - share) * loss + share * distilled


def _truth_where_taught(
    soft: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The teacher's targets with the truth's on the pixels of ``targets["truth_taught"]``."""
    where = targets.get("truth_taught")
    if where is None or not bool(where.any()):
        return soft
    soft = dict(soft)
    if "segmentation" in soft:
        classes = nn.functional.one_hot(targets["segmentation"], soft["segmentation"].shape[1])
        soft["segmentation"] = torch.where(
            where[:, None], classes.permute(0, 3, 1, 2).to(soft["segmentation"].dtype),
            soft["segmentation"],
        )  # fmt: skip
    for name in ("centre", "clump"):
        if name in soft:
            soft[name] = torch.where(where, targets[name].to(soft[name].dtype), soft[name])
    return soft


@torch.no_grad()
def _validate(model: ScreeningUNet, batch, weights: dict[str, float], device) -> float:
    model.eval()
    inputs, targets = batch
    pixel_logits, stamp_logits = model(inputs.to(device))
    return float(
        task_loss(
            pixel_logits, stamp_logits, {k: v.to(device) for k, v in targets.items()}, weights
        )
    )


def _config_fingerprint(task: str, config: TrainConfig) -> str:
    payload = {"task": task, **asdict(config)}
    if config.init_weights:
        payload["init_weights"] = hashlib.sha256(Path(config.init_weights).read_bytes()).hexdigest()
    if config.teacher:
        payload["teacher"] = hashlib.sha256(Path(config.teacher).read_bytes()).hexdigest()
    for name in ("device", "threads", "data_workers"):
        payload.pop(name)
    if config.crowded_density == CROWDED_STAR_DENSITY:  # checkpoints from before the field
        payload.pop("crowded_density")
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)
