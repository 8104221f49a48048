"""Run the screening network: input normalisation, weight loading, prediction.

Weights are loaded with ``torch.load(..., weights_only=True)`` only after their
sha256 matches the one in the model's config file, and once per process and
device (:func:`load_predictor` caches them), never once per tile.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from survey_seg.diffuse import DiffuseConfig
from survey_seg.errors import InputError
from survey_seg.hosts import HostConfig
from survey_seg.methods import PRECISIONS
from survey_seg.models.unet import (
    OFFSET_SCALE,
    QUALITY_CLASSES,
    ScreeningUNet,
    UNetConfig,
    split_heads,
)

__all__ = [
    "DEFAULT_MODEL",
    "PREDICTION_HEADS",
    "Prediction",
    "Predictor",
    "check_flips",
    "load_model_config",
    "load_network",
    "load_predictor",
    "network_input",
    "resolve_device",
]

WEIGHTS_DIR = Path(__file__).parent / "models" / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "onepass.json"
SNR_SOFTENING = 3.0
MODEL_KEYS_REQUIRED = frozenset({"weights", "sha256", "architecture", "thresholds"})
MODEL_KEYS_OPTIONAL = frozenset(
    {"name", "heads", "training", "metrics", "thresholds_tuned_on", "test_time_flips"}
    | {"psf_thresholds", "clump_model", "stamp_calibration", "diffuse", "hosts", "pieces"}
)
THRESHOLDS_REQUIRED = frozenset(
    {"object", "centre", "centre_min_distance", "clump", "artefact"}
    | {"inspect_fraction", "reject_fraction"}
)
"""Post-processing thresholds that a model config must give (see :mod:`survey_seg.network`)."""
THRESHOLDS_OPTIONAL = frozenset(
    {"cosmic_ray_max_minor_axis", "cosmic_ray_min_snr", "min_valley_sigma", "min_valley_fraction"}
    | {"min_vote_fraction", "min_vote_distance_fwhm", "min_clump_to_centre", "min_knot_clump"}
    | {"weak_centre", "weak_valley_fraction", "clump_min_offset_fwhm"}
    | {"knot_join_fwhm", "knot_max_flux_ratio", "knot_min_saddle_fraction"}
    | {"sure_centre", "sure_split", "clump_peak_min_to_centre", "knot_clump", "fragment"}
    | {"min_snr", "max_border_boundary", "min_border_boundary"}
    | {"symmetry_sigma", "companion_sigma"}
)
HEAD_THRESHOLDS = {
    "offset": frozenset({"min_vote_fraction", "min_vote_distance_fwhm"}),
    "boundary": frozenset({"max_border_boundary", "min_border_boundary"}),
}
"""Optional thresholds that read an optional head: a config may set them only where its
``heads`` list that head as trained."""
PSF_THRESHOLD_KEYS = frozenset({"object", "centre", "clump", "clump_peak_min_to_centre"})
"""Thresholds that a model config may tune per PSF width (its ``psf_thresholds``); a
condition may hold an optional one only where the ``thresholds`` entry does."""
_PSF_RATIO_KEYS = frozenset({"clump_peak_min_to_centre"})
"""Of those, the ratios (any number > 0); the others are probabilities in (0, 1)."""
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-2, -1), (-2,), (-1,))
"""Flips of the input whose outputs are averaged, in order: one pass uses the image
as it is, two add the half turn, four add the two mirror images. Every flip keeps
columns as columns, as bad columns and chip gaps are in the training scenes."""


PREDICTION_HEADS = ("segmentation", "centre", "clump", "artefact", "stamps")
"""The fields of :class:`Prediction`, each the probabilities of one network head."""
OPTIONAL_HEADS = ("offset", "boundary")
"""Heads that a network may have (:class:`~survey_seg.models.unet.UNetConfig`)."""


def network_input(
    image: np.ndarray,
    variance: np.ndarray,
    background: np.ndarray,
    saturation: float | None,
) -> np.ndarray:
    """The network's input planes (:data:`~survey_seg.models.unet.INPUT_CHANNELS`).

    Parameters
    ----------
    image, variance, background : numpy.ndarray
        Window arrays; non-finite image or non-positive variance is no data.
    saturation : float or None
        ``SATURATE`` of the image, if known.

    Returns
    -------
    numpy.ndarray
        float32 ``(3, H, W)``: ``asinh(snr / 3)`` with ``snr`` the
        background-subtracted S/N, the image over its saturation level (clipped to
        [0, 1.5]; 0 without one), and the valid-pixel mask. No data is 0 everywhere.
    """
    valid = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    sigma = np.sqrt(np.where(valid, variance, 1.0))
    snr = np.where(valid, (image - background) / sigma, 0.0)
    planes = np.empty((3, *image.shape), dtype=np.float32)
    planes[0] = np.arcsinh(snr / SNR_SOFTENING)
    if saturation:
        planes[1] = np.clip(np.where(valid, image / saturation, 0.0), 0.0, 1.5)
    else:
        planes[1] = 0.0
    planes[2] = valid
    return planes


@dataclass(frozen=True)
class Prediction:
    """Network outputs for one window, as probabilities (numpy, float32).

    Attributes
    ----------
    segmentation : numpy.ndarray
        ``(3, H, W)`` softmax: background, single object, overlap.
    centre, clump : numpy.ndarray
        ``(H, W)`` heatmaps in [0, 1].
    artefact : numpy.ndarray
        ``(5, H, W)``: CR, STREAK, GHOST, BAD, SAT probabilities.
    stamps : numpy.ndarray
        ``(len(QUALITY_CLASSES), h, w)`` per-stamp quality probabilities.
    offset : numpy.ndarray or None
        ``(2, H, W)``: the ``(dy, dx)`` in pixels from each pixel to the centre of
        its object; None for a network without the offset head.
    boundary : numpy.ndarray or None
        ``(H, W)``: the probability that each pixel borders another object's; None
        for a network without the boundary head.
    """

    segmentation: np.ndarray
    centre: np.ndarray
    clump: np.ndarray
    artefact: np.ndarray
    stamps: np.ndarray
    offset: np.ndarray | None = None
    boundary: np.ndarray | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for but no CUDA GPU is available; use cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the network computes in on ``device`` for a ``--precision`` value."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return torch.float32
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    if precision == "bfloat16" or native:
        return torch.bfloat16
    return torch.float32


def load_model_config(path: str | os.PathLike = DEFAULT_MODEL) -> dict:
    """Read a model config file, checking that it names its weights and their hash."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"model config {path} does not exist; train one with `survey-seg train` "
            "or use --method classical"
        ) from None
    except json.JSONDecodeError as error:
        raise InputError(f"model config {path} is not valid JSON ({error}); restore it") from None
    if not isinstance(config, dict):
        raise InputError(f"model config {path} is not a JSON object; restore or retrain it")
    _check_keys(path, "", config, required=MODEL_KEYS_REQUIRED, optional=MODEL_KEYS_OPTIONAL)
    thresholds = config["thresholds"]
    if not isinstance(thresholds, dict):
        raise InputError(f"model config {path}: thresholds is not an object; restore it")
    _check_keys(
        path, "thresholds ", thresholds, required=THRESHOLDS_REQUIRED, optional=THRESHOLDS_OPTIONAL
    )
    _check_head_thresholds(path, thresholds, config.get("heads", PREDICTION_HEADS))
    if "psf_thresholds" in config:
        _check_psf_thresholds(path, config["psf_thresholds"], thresholds)
    for key, fields in (("diffuse", DiffuseConfig), ("hosts", HostConfig)):
        if key in config:
            _check_config_entry(path, key, config[key], fields)
    if "stamp_calibration" in config:
        stamp_temperature(config, path)
    if "pieces" in config:
        _check_pieces_entry(path, config["pieces"])
    return config


def _check_pieces_entry(path: Path, entry: object) -> None:
    """Refuse a ``pieces`` entry that does not name a classifier file and its sha256."""
    if (
        not isinstance(entry, dict)
        or set(entry) != {"classifier", "sha256"}
        or not all(isinstance(value, str) for value in entry.values())
    ):
        raise InputError(
            f'model config {path}: pieces must be {{"classifier": FILE, "sha256": HASH}} '
            f"(a piece classifier beside the config), got {entry!r}; restore it"
        )


def _check_head_thresholds(path: Path, thresholds: dict, heads: object) -> None:
    """Refuse thresholds of an optional head that the config does not list as trained.

    Screening reads an optional head only where ``heads`` names it, so such a
    threshold would be ignored without a word.
    """
    for head, keys in HEAD_THRESHOLDS.items():
        orphans = sorted(keys & set(thresholds))
        if orphans and head not in heads:
            raise InputError(
                f"model config {path}: thresholds {orphans} read the {head} head, which "
                f"its heads {heads} do not list as trained, so they would be ignored; "
                f"remove them or use a network trained with --{head}-head"
            )


def _check_config_entry(path: Path, key: str, entry: object, config_class: type) -> None:
    """Refuse an entry (``diffuse``, ``hosts``) that is not numbers for ``config_class``."""
    fields = sorted(config_class.__dataclass_fields__)
    numbers = isinstance(entry, dict) and all(_is_number(value) for value in entry.values())
    if not numbers or not set(entry) <= set(fields):
        raise InputError(
            f"model config {path}: {key} must be an object of numbers with fields among "
            f"{fields}, not {entry!r}; fix it or remove the entry"
        )
    try:
        config_class(**entry)
    except ValueError as error:
        raise InputError(f"model config {path}: {key}: {error}; fix it") from None


def _check_psf_thresholds(path: Path, entry: object, thresholds: dict) -> None:
    """Refuse a ``psf_thresholds`` entry that :func:`thresholds_for_psf` could misread.

    The entry is ``{"nominal_psf_fwhm_pix": F, "conditions": [{"psf_ratio": r,
    "clump": t, ...}, ...], "tuned_on": {...}}``: thresholds tuned on mosaics whose
    PSF is ``r`` times the nominal one (ratio 1 is the config's ``thresholds``).
    """
    where = f"model config {path}: psf_thresholds"
    if not isinstance(entry, dict):
        raise InputError(f"{where} is not an object; restore it or retune")
    _check_keys(
        path,
        "psf_thresholds ",
        entry,
        required=frozenset({"nominal_psf_fwhm_pix", "conditions"}),
        optional=frozenset({"tuned_on"}),
    )
    if not _is_number(entry["nominal_psf_fwhm_pix"]) or not entry["nominal_psf_fwhm_pix"] > 0:
        raise InputError(f"{where}.nominal_psf_fwhm_pix must be a number > 0; restore it")
    conditions = entry["conditions"]
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise InputError(f"{where}.conditions must be a list of objects; restore it or retune")
    ratios = []
    for condition in conditions:
        _check_keys(
            path,
            "psf_thresholds condition ",
            condition,
            required=frozenset({"psf_ratio"}),
            optional=PSF_THRESHOLD_KEYS,
        )
        ratio = condition["psf_ratio"]
        if not _is_number(ratio) or not ratio > 0 or ratio == 1:
            raise InputError(
                f"{where}: psf_ratio {ratio!r} must be a number > 0 other than 1 "
                "(ratio 1 is the thresholds entry); restore it or retune"
            )
        for key in PSF_THRESHOLD_KEYS & set(condition):
            if key not in thresholds:
                raise InputError(
                    f"{where}: {key} at psf_ratio {ratio} has no value at the nominal PSF; "
                    f"add {key} to the thresholds entry or remove it from the condition"
                )
            upper = math.inf if key in _PSF_RATIO_KEYS else 1.0
            if not _is_number(condition[key]) or not 0 < condition[key] < upper:
                interval = "be a number > 0" if key in _PSF_RATIO_KEYS else "lie in (0, 1)"
                raise InputError(
                    f"{where}: {key} {condition[key]!r} at psf_ratio {ratio} must {interval}"
                )
        ratios.append(ratio)
    if len(set(ratios)) != len(ratios):
        raise InputError(f"{where} gives psf_ratio {sorted(ratios)} twice; keep one of each")


def stamp_temperature(config: dict, path: str | os.PathLike = "") -> np.ndarray | None:
    """Per-class temperatures of the stamp head (``stamp_calibration``), or None.

    The stamp probabilities are ``sigmoid(logit / T)``, ``T`` fitted on validation
    scenes (:mod:`survey_seg.stamp_head`).
    """
    entry = config.get("stamp_calibration")
    if entry is None:
        return None
    temperature = entry.get("temperature") if isinstance(entry, dict) else None
    if (
        not isinstance(temperature, list)
        or len(temperature) != len(QUALITY_CLASSES)
        or not all(_is_number(t) and t > 0 for t in temperature)
    ):
        raise InputError(
            f"model config {path}: stamp_calibration.temperature must be a list of "
            f"{len(QUALITY_CLASSES)} positive numbers, got {temperature!r}; restore it or "
            "recalibrate with `survey-seg calibrate-quality`"
        )
    return np.asarray(temperature, dtype=np.float32)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _check_keys(
    path: Path, where: str, data: dict, *, required: frozenset[str], optional: frozenset[str]
) -> None:
    """Refuse missing and unknown keys (a typo must not silently fall back to a default)."""
    missing = sorted(required - set(data))
    if missing:
        raise InputError(f"model config {path} lacks {where}{missing}; restore or retrain it")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise InputError(
            f"model config {path} has unknown {where}keys {unknown}; "
            f"use only {sorted(required | optional)}"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Predictor:
    """Configure once (load and check weights), call :meth:`predict` on many windows.

    Parameters
    ----------
    config_path : path-like
        Model config file; its ``weights`` entry names the weight file beside it.
        Its optional ``clump_model`` entry names another model config beside it
        (a network trained for clumps, ``survey-seg train clumps``) whose clump
        map replaces this network's; the thresholds stay this config's, tuned
        with that map.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    precision : str
        One of :data:`PRECISIONS`: the network runs under autocast to bfloat16
        (about 2x faster on CPUs that have it, probabilities within about 0.05) or
        in float32.
    flips : int, optional
        Passes averaged per window, each on a flip of it (:data:`FLIP_DIMS`): 1, 2
        or 4. Averaging removes responses that depend on the orientation (noise
        peaks, fragments), at the cost of a pass each. Default: the model config's
        ``test_time_flips`` (chosen with its thresholds), else 1.
    """

    def __init__(
        self,
        config_path: str | os.PathLike = DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        flips: int | None = None,
    ):
        self.config_path = Path(config_path)
        self.config = load_model_config(self.config_path)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.model, self.sha256 = load_network(self.config_path, self.config, self.device)
        self.clump_config: dict | None = None
        self.clump_model: ScreeningUNet | None = None
        self.clump_sha256: str | None = None
        if "clump_model" in self.config:
            clump_path, self.clump_config = _clump_model_config(self.config_path, self.config)
            self.clump_model, self.clump_sha256 = load_network(
                clump_path, self.clump_config, self.device
            )
        self.thresholds: dict = dict(self.config["thresholds"])
        temperature = stamp_temperature(self.config, self.config_path)
        self.stamp_temperature: torch.Tensor | None = (
            None
            if temperature is None
            else torch.from_numpy(temperature).reshape(1, -1, 1, 1).to(self.device)
        )
        if flips is None:
            flips = check_flips(
                self.config.get("test_time_flips", 1),
                f"model config {self.config_path}: test_time_flips",
            )
        self.flips = check_flips(flips)

    @property
    def stride(self) -> int:
        """The multiple of which a window's sides must be for :meth:`predict_batch`."""
        multiple = self.model.config.stamp_size
        if self.clump_model is not None:
            multiple = math.lcm(multiple, self.clump_model.config.stamp_size)
        return multiple

    @torch.inference_mode()
    def predict(self, planes: np.ndarray) -> Prediction:
        """Probabilities for one window of input planes ``(3, H, W)``.

        The window is zero-padded (as no data) to a multiple of the network's
        stride, so that every flip sees the same stamp grid, and the padding is
        cropped off the outputs; with several :attr:`flips` the probabilities of
        the passes are averaged. With a :attr:`clump_model`, the clump map is its
        (it runs the same flips).
        """
        _, height, width = planes.shape
        pad_y, pad_x = -height % self.stride, -width % self.stride
        x = torch.from_numpy(np.ascontiguousarray(planes))[None].to(self.device)
        if pad_y or pad_x:
            x = torch.nn.functional.pad(x, (0, pad_x, 0, pad_y))
        mean = {name: _numpy(value[0]) for name, value in self._predict_batch(x).items()}
        stamp = self.model.config.stamp_size
        stamp_rows, stamp_cols = -(-height // stamp), -(-width // stamp)
        return Prediction(
            segmentation=mean["segmentation"][:, :height, :width],
            centre=mean["centre"][0, :height, :width],
            clump=mean["clump"][0, :height, :width],
            artefact=mean["artefact"][:, :height, :width],
            stamps=mean["stamps"][:, :stamp_rows, :stamp_cols],
            offset=mean["offset"][:, :height, :width] if "offset" in mean else None,
            boundary=mean["boundary"][0, :height, :width] if "boundary" in mean else None,
        )

    @torch.inference_mode()
    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities for a batch of windows ``(N, 3, H, W)``, as :meth:`predict` gives.

        The sides must be multiples of :attr:`stride` (no padding is done). Returns
        tensors on :attr:`device`, keyed by head (``centre``, ``clump`` and
        ``boundary`` keep their channel axis; ``offset`` is in pixels).
        """
        if inputs.ndim != 4 or inputs.shape[-2] % self.stride or inputs.shape[-1] % self.stride:
            raise InputError(
                f"predict_batch needs (N, 3, H, W) with H and W multiples of {self.stride}, "
                f"got {tuple(inputs.shape)}; use predict() for a window of any size"
            )
        return self._predict_batch(inputs.to(self.device))

    def _predict_batch(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = self._mean_over_flips(self.model, x)
        if self.clump_model is not None:
            mean["clump"] = self._mean_over_flips(self.clump_model, x, heads=("clump",))["clump"]
        return mean

    def _mean_over_flips(
        self,
        model: ScreeningUNet,
        x: torch.Tensor,
        heads: tuple[str, ...] = PREDICTION_HEADS + OPTIONAL_HEADS,
    ) -> dict[str, torch.Tensor]:
        """Outputs of ``heads`` (default: all it has) from ``model``, mean over the flips.

        An offset seen on a flipped window points the flipped way: its flipped
        components change sign when it is flipped back.
        """
        total: dict[str, torch.Tensor] = {}
        for dims in FLIP_DIMS[: self.flips]:
            flipped = torch.flip(x, dims) if dims else x
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16
            ):
                pixel_logits, stamp_logits = model(
                    flipped.contiguous(memory_format=torch.channels_last)
                )
            if self.stamp_temperature is not None:
                stamp_logits = stamp_logits.float() / self.stamp_temperature
            probabilities = _probabilities(pixel_logits, stamp_logits, heads)
            for name, probability in probabilities.items():
                probability = torch.flip(probability, dims) if dims else probability
                if name == "offset" and dims:
                    sign = torch.ones(2, 1, 1, device=probability.device)
                    sign[[dim + 2 for dim in dims]] = -1.0  # dims -2, -1: dy, dx
                    probability = probability * sign
                total[name] = total[name] + probability if name in total else probability
        return {name: value / self.flips for name, value in total.items()}


def load_network(
    config_path: Path, config: dict, device: torch.device
) -> tuple[ScreeningUNet, str]:
    """The network of a checked model config, and its weights' sha256.

    The weights are hashed before :func:`torch.load` reads them (``weights_only``).
    """
    weights = config_path.parent / config["weights"]
    if not weights.exists():
        raise InputError(f"weight file {weights} does not exist; reinstall or retrain")
    digest = _sha256(weights)
    if digest != config["sha256"]:
        raise InputError(
            f"weight file {weights} has sha256 {digest[:12]}..., but its config expects "
            f"{config['sha256'][:12]}...; it was changed or corrupted: reinstall "
            "survey-seg or retrain with `survey-seg train`"
        )
    try:
        model = ScreeningUNet(UNetConfig(**config["architecture"]))
    except (TypeError, ValueError) as error:
        raise InputError(
            f"model config {config_path}: architecture {config['architecture']} is not "
            f"a U-Net's ({error}); restore it"
        ) from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError) as error:
        raise InputError(
            f"weight file {weights} does not hold plain tensors of this architecture "
            f"({str(error).splitlines()[0][:120]}); reinstall survey-seg or retrain"
        ) from None
    # channels-last runs the convolutions about 1.6x faster on CPU (oneDNN) and
    # suits cuDNN on GPU; the outputs agree with the default layout to 1e-5
    return model.eval().to(device, memory_format=torch.channels_last), digest


def _clump_model_config(config_path: Path, config: dict) -> tuple[Path, dict]:
    """The path and checked config of the network named by a config's ``clump_model``.

    That network's clump map replaces the main network's: it must have a clump
    head, name no clump model of its own, and see no farther than the main network
    (whose depth sets the halo and the tile alignment).
    """
    name = config["clump_model"]
    where = f"model config {config_path}: clump_model"
    if not isinstance(name, str) or Path(name).name != name:
        raise InputError(f"{where} must be the file name of a model config beside it, got {name!r}")
    clump_path = config_path.parent / name
    if clump_path.resolve() == config_path.resolve():
        raise InputError(f"{where} names the config itself; name the clump network's config")
    if not clump_path.exists():
        raise InputError(
            f"{where} names {clump_path}, which does not exist; copy the clump network's "
            f"config and weights beside {config_path.name}, or remove the entry"
        )
    clump_config = load_model_config(clump_path)
    if "clump_model" in clump_config:
        raise InputError(f"{where}: {name} names a clump model of its own; remove that entry")
    if "clump" not in clump_config.get("heads", ["clump"]):
        raise InputError(
            f"{where}: {name} was trained without a clump head (heads "
            f"{clump_config['heads']}); train one with `survey-seg train clumps`"
        )
    depth = clump_config["architecture"].get("depth", UNetConfig().depth)
    if depth > config["architecture"].get("depth", UNetConfig().depth):
        raise InputError(
            f"{where}: {name} is deeper (depth {depth}) than the main network, so the "
            "halo would be too small for it; use a clump network of at most its depth"
        )
    return clump_path, clump_config


def check_flips(flips: object, name: str = "flips") -> int:
    """A valid number of test-time flips (1, 2 or 4); ``name`` says where it was given."""
    if isinstance(flips, bool) or flips not in (1, 2, 4):
        raise InputError(f"{name} must be 1, 2 or 4 (passes per window), got {flips!r}")
    return int(flips)


def _probabilities(
    pixel_logits: torch.Tensor, stamp_logits: torch.Tensor, heads: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Outputs of those of ``heads`` that the network has.

    A softmax over the segmentation classes, the offset in pixels, sigmoid
    probabilities for the rest.
    """
    logits = {**split_heads(pixel_logits), "stamps": stamp_logits}
    outputs = {}
    for name in heads:
        if name in OPTIONAL_HEADS and name not in logits:
            continue
        value = logits[name].float()
        if name == "segmentation":
            outputs[name] = torch.softmax(value, dim=1)
        elif name == "offset":
            outputs[name] = value * OFFSET_SCALE
        else:
            outputs[name] = torch.sigmoid(value)
    return outputs


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().cpu().numpy()


@lru_cache(maxsize=4)
def _cached_predictor(
    config_path: str, weights_key: str, device: str, precision: str, flips: int | None
) -> Predictor:
    return Predictor(config_path, device=device, precision=precision, flips=flips)


def load_predictor(
    config_path: str | os.PathLike = DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    flips: int | None = None,
) -> Predictor:
    """The process-wide :class:`Predictor` for a model, device, precision and flips.

    Loaded once per process (the cache key holds the sha256 of its weights, and of
    its clump model's).
    """
    config = load_model_config(config_path)
    key = config["sha256"]
    if "clump_model" in config:
        key += _clump_model_config(Path(config_path), config)[1]["sha256"]
    return _cached_predictor(str(Path(config_path).resolve()), key, device, precision, flips)
