"""Run parameters: one definition for the library, the command line and the flows.

:class:`RunConfig` holds what a run computes with; :data:`RUN_OPTIONS` names the
command-line option of each field a user sets, with its help, and
:data:`OUTPUT_OPTIONS` the choices of what happens to an earlier run in the
output directory. ``survey-seg run`` and the Prefect flows both build their
parameters from these tuples (:func:`add_run_arguments`), so that the two cannot
drift apart.

This module imports only the standard library: the command line builds its
help from it without loading torch or dask.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from typing import Any

from survey_seg.errors import InputError

__all__ = [
    "DEFAULT_HALO",
    "DEFAULT_METHOD",
    "DEFAULT_TILE_SIZE",
    "FLIPS",
    "METHOD_NAMES",
    "OUTPUT_OPTIONS",
    "PRECISIONS",
    "RUN_OPTIONS",
    "OutputOption",
    "RunConfig",
    "RunOption",
    "add_run_arguments",
    "check_run_config",
    "default_halo",
    "default_tile_size",
    "run_config_from_args",
    "run_options_from_args",
]

METHOD_NAMES = ("unet", "classical")
DEFAULT_METHOD = "unet"
PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of ``--precision``: ``auto`` is bfloat16 where the device computes it
natively (CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX), else float32."""
FLIPS = (1, 2, 4)
"""Values of ``--flips``: network passes per window."""
DEFAULT_TILE_SIZE = 512
"""Tile core side of a run that gives none (smaller for an image smaller than it)."""
DEFAULT_HALO = 64
"""Halo of a run that gives none (more when the method needs more)."""


_PATH_FIELDS = ("model", "weight_file", "rms_file", "mask_file", "injection_catalog")
"""Fields of :class:`RunConfig` that name a file: given as a path, kept as its str."""


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a run."""

    tile_size: int | None = None
    """Side of a tile core in pixels: one Zarr shard of every array. None:
    :data:`DEFAULT_TILE_SIZE`, or for a smaller image the largest multiple of the
    method's alignment that fits its shorter side (resolved by ``plan_run``)."""
    halo: int | None = None
    """Context read around each core, in pixels; objects larger than it are flagged.
    None: :data:`DEFAULT_HALO`, or what the method needs when that is more (a network
    screening a wide PSF binned), to its alignment (resolved by ``plan_run``)."""
    method: str = DEFAULT_METHOD
    """Screening method (``--method``)."""
    model: str | None = None
    """Model config file of a network method (default: the shipped weights)."""
    region: str | None = None
    """Screen only the tiles meeting this region (``cone:``, ``box:`` or ``tiles:``)."""
    background_cell: int = 64
    """Side of the background mesh cells in pixels."""
    precision: str = "auto"
    """Arithmetic of a network method: ``float32``, ``bfloat16``, or ``auto`` for
    bfloat16 where the hardware computes it natively (it runs about 2x faster;
    the benchmark metrics move by less than 0.01)."""
    flips: int | None = None
    """Passes of a network method per window, each on a flip of it, averaged: 1, 2
    or 4 (``None``: the model config's ``test_time_flips``). Each pass costs as much
    network time as the first; more passes give fewer spurious detections."""
    fits_copies: bool = True
    """Also write the FITS products: the catalogs as FITS tables and ``masks.fits``."""
    psf_fwhm: float | None = None
    """PSF FWHM of the mosaic in pixels (``--psf-fwhm``): a network method bins a
    wide PSF to its training width and picks its thresholds for it, and both methods
    scale their cosmic-ray sharpness limits with it. None: the mosaic's ``PSFFWHM``
    keyword, else the FWHM measured on its stars, and the training PSF when it has
    too few."""
    zero_point: float | None = None
    """Photometric zero point: ``mag = zero_point - 2.5 log10(flux)`` in the
    mosaic's flux unit (``--zero-point``). None: the mosaic's zero-point keyword
    (:data:`survey_seg.store.ZERO_POINT_KEYS`); without either, ``mag`` is NaN and
    the run warns."""
    weight_file: str | None = None
    """FITS file of the mosaic's weight map, inverse variance, 0 where there is no
    data (``--weight``; a SWarp ``.weight.fits``, MAP_WEIGHT). It replaces a noise
    HDU of the mosaic. None: the mosaic's own noise plane, if any."""
    rms_file: str | None = None
    """FITS file of the mosaic's noise in sigma: variance = rms² (``--rms``; a Euclid
    MER ``RMS`` file). Not with ``weight_file``."""
    mask_file: str | None = None
    """FITS file of the mosaic's integer bad-pixel mask, non-zero where a pixel is
    bad (``--mask``; a Euclid MER ``FLAG`` file). It replaces a mask HDU of the
    mosaic (``DQ``, ``MSK`` ...); its pixels are BAD, kept out of detection and
    measurement."""
    injection_catalog: str | None = None
    """Parquet catalog of synthetic objects (:mod:`survey_seg.inject`, written by
    ``survey-seg inject`` in its output directory) drawn into every window before it
    is screened. None: the mosaic as it is. Not a ``run`` option."""
    injection_psf_fwhm: float | None = None
    """FWHM (pixels) of the Moffat PSF the injected objects are drawn with; needed
    with ``injection_catalog``."""
    injection_psf_beta: float = 3.0
    """Moffat index of the PSF the injected objects are drawn with."""
    injection_gain: float | None = None
    """Electrons per image unit: the injected objects get Poisson noise on their own
    counts. None: they are drawn without noise (the sky's noise is the mosaic's)."""
    negate: bool = False
    """Screen the negated image (every window's image and background times -1):
    every source found on it is spurious (``survey-seg inject``'s negative pass)."""

    def __post_init__(self) -> None:
        # a pathlib.Path is as natural an argument as a str; stored as str, the
        # config stays JSON for the manifest and hashes the same either way
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    def result_key(self, mosaic_sha256: str, method_provenance: dict) -> str:
        """Hash of everything a tile's result depends on: equal keys, equal results."""
        payload = {
            "mosaic": mosaic_sha256,
            "tile_size": self.tile_size,
            "halo": self.halo,
            "background_cell": self.background_cell,
            "method": method_provenance,
        }
        if self.zero_point is not None:  # absent when unset: earlier keys stay valid
            payload["zero_point"] = self.zero_point
        if self.injection_catalog is not None:
            payload["injection"] = [
                self.injection_catalog,
                self.injection_psf_fwhm,
                self.injection_psf_beta,
                self.injection_gain,
            ]
        if self.negate:
            payload["negate"] = True
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunConfig:
        """The config recorded in a manifest (fields of older versions are dropped)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


def default_tile_size(shape: tuple[int, int], alignment: int = 1) -> int:
    """The tile size of a run that gives none, for an image of ``shape`` (ny, nx).

    :data:`DEFAULT_TILE_SIZE`, or for a smaller image its shorter side, each down
    to a multiple of ``alignment`` (the method's pooling stride and binning).
    """
    fitting = min(shape) // alignment * alignment
    largest = max(DEFAULT_TILE_SIZE // alignment * alignment, alignment)
    return min(largest, max(fitting, alignment))


def default_halo(halo_required: int, alignment: int = 1) -> int:
    """The halo of a run that gives none: :data:`DEFAULT_HALO` or ``halo_required``.

    The larger of the two, up to a multiple of ``alignment``.
    """
    return -(-max(DEFAULT_HALO, halo_required) // alignment) * alignment


def check_run_config(config: RunConfig) -> None:
    """Refuse values no run can use, before anything is read or written.

    Raises
    ------
    InputError
        One line naming the option and the fix.
    """
    if config.method not in METHOD_NAMES:
        raise InputError(f"unknown method {config.method!r}; use one of {', '.join(METHOD_NAMES)}")
    if config.precision not in PRECISIONS:
        raise InputError(
            f"precision {config.precision!r} is unknown; use one of {', '.join(PRECISIONS)}"
        )
    if config.flips is not None and config.flips not in FLIPS:
        raise InputError(f"--flips {config.flips!r} is not one of 1, 2, 4; pass one of them")
    for option, value in (("--tile-size", config.tile_size), ("--halo", config.halo)):
        if value is None:
            continue
        if not isinstance(value, int) or value < (8 if option == "--tile-size" else 0):
            raise InputError(
                f"{option} {value!r} is not a usable number of pixels; give an integer "
                f"{'of at least 8' if option == '--tile-size' else '>= 0'}"
            )
    if config.psf_fwhm is not None and not _positive_number(config.psf_fwhm):
        raise InputError(
            f"--psf-fwhm {config.psf_fwhm!r} is not a PSF width; give the FWHM in pixels (> 0)"
        )
    if config.zero_point is not None and not _finite_number(config.zero_point):
        raise InputError(
            f"--zero-point {config.zero_point!r} is not a magnitude; give the AB (or Vega) "
            "magnitude of one flux unit, e.g. 22.5 for nanomaggies"
        )
    files = (
        ("--weight", config.weight_file),
        ("--rms", config.rms_file),
        ("--mask", config.mask_file),
    )
    for option, value in files:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InputError(f"{option} {value!r} is not a file name; give the path of a FITS file")
    if config.injection_catalog is not None and not (
        _positive_number(config.injection_psf_fwhm)
        and _positive_number(config.injection_psf_beta)
        and config.injection_psf_beta > 1
        and (config.injection_gain is None or _positive_number(config.injection_gain))
    ):
        raise InputError(
            f"injection PSF FWHM {config.injection_psf_fwhm!r}, beta {config.injection_psf_beta!r}"
            f" or gain {config.injection_gain!r} is unusable; give a FWHM > 0 pixels, beta > 1 "
            "and a gain > 0 or none"
        )
    if config.weight_file is not None and config.rms_file is not None:
        raise InputError(
            "--weight and --rms both give the noise of the mosaic; pass one of them "
            "(--weight: inverse variance, --rms: sigma)"
        )


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: object) -> bool:
    return _finite_number(value) and value > 0  # type: ignore[operator]


@dataclass(frozen=True)
class RunOption:
    """The command-line option of one :class:`RunConfig` field."""

    field: str
    """Name of the RunConfig field."""
    flag: str
    """Option of ``survey-seg run`` and of the flows' command lines."""
    help: str
    """One line of help."""
    type: type = str
    """Type of the value on the command line."""
    metavar: str | None = None
    """Name of the value in the help."""
    choices: tuple | None = None
    """Accepted values, when they are few."""


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        "tile_size",
        "--tile-size",
        f"side of a tile core (default: {DEFAULT_TILE_SIZE}, or the image's shorter side "
        "when it is smaller, to the network's alignment)",
        int,
        "PIX",
    ),
    RunOption(
        "halo",
        "--halo",
        f"context read around each tile core (default: {DEFAULT_HALO}, or what the method "
        "needs when more)",
        int,
        "PIX",
    ),
    RunOption("method", "--method", "screening method", str, None, METHOD_NAMES),
    RunOption("model", "--model", "model config of a trained network", str, "CONFIG"),
    RunOption(
        "precision",
        "--precision",
        "network arithmetic; auto: bfloat16 where the hardware has it",
        str,
        None,
        PRECISIONS,
    ),
    RunOption(
        "flips",
        "--flips",
        "network passes per tile on flips of it, averaged (default: the model's); "
        "1 is fastest, more give fewer spurious detections",
        int,
        None,
        FLIPS,
    ),
    RunOption(
        "psf_fwhm",
        "--psf-fwhm",
        "PSF FWHM of the mosaic in pixels, for the binning of the network and the "
        "thresholds (default: its PSFFWHM keyword, else measured on its stars)",
        float,
        "PIX",
    ),
    RunOption(
        "zero_point",
        "--zero-point",
        "magnitude zero point: mag = ZP - 2.5 log10(flux) (default: the MAGZERO, MAGZP, "
        "PHOTZP, MAGZPT or ZEROPT keyword)",
        float,
        "MAG",
    ),
    RunOption(
        "weight_file",
        "--weight",
        "weight map of the mosaic, inverse variance, 0: no data (a SWarp .weight.fits); "
        "default: its WEIGHT/WHT/WGT, VARIANCE or ERR/RMS HDU, else estimated from the pixels",
        str,
        "FILE",
    ),
    RunOption(
        "rms_file",
        "--rms",
        "noise map of the mosaic in sigma, variance = rms**2 (a Euclid RMS file); not with "
        "--weight",
        str,
        "FILE",
    ),
    RunOption(
        "mask_file",
        "--mask",
        "integer bad-pixel mask of the mosaic, non-zero: BAD (a Euclid FLAG file); "
        "default: its DQ/MSK/MASK/FLAG/FLAGS/BPM HDU",
        str,
        "FILE",
    ),
    RunOption(
        "region",
        "--region",
        "screen the tiles meeting cone:RA,DEC,RADIUS_DEG | box:RA0,RA1,DEC0,DEC1 | tiles:I,J",
        str,
        "SPEC",
    ),
)
"""The RunConfig fields a user sets, with their options (the rest keep their defaults)."""


@dataclass(frozen=True)
class OutputOption:
    """What a run does with an earlier run in its output directory."""

    name: str
    """Keyword of :func:`survey_seg.pipeline.plan_run` and of the flows."""
    flag: str
    """Command-line option."""
    help: str
    """One line of help."""


OUTPUT_OPTIONS: tuple[OutputOption, ...] = (
    OutputOption("resume", "--resume", "finish an interrupted run: screen its unfinished tiles"),
    OutputOption(
        "force",
        "--force",
        "screen the tiles again (those meeting --region, else all) though they are "
        "finished; every other tile's rows and pixels are kept",
    ),
    OutputOption(
        "clean",
        "--clean",
        "discard the earlier run in --out, every tile of it, and start a new one",
    ),
)
"""At most one of them per run; with none, a run refuses an output directory that
holds an earlier run."""


def add_run_arguments(parser: argparse.ArgumentParser, *, output_options: bool = True) -> None:
    """Add the options of :data:`RUN_OPTIONS` (and :data:`OUTPUT_OPTIONS`) to ``parser``.

    Every option defaults to None (the value is then RunConfig's default), so that
    :func:`run_config_from_args` can tell a value given from one left out.
    """
    defaults = RunConfig()
    for option in RUN_OPTIONS:
        default = getattr(defaults, option.field)
        suffix = f" (default: {default})" if default is not None else ""
        parser.add_argument(
            option.flag,
            dest=option.field,
            type=option.type,
            metavar=option.metavar,
            choices=option.choices,
            default=None,
            help=option.help + suffix,
        )
    if output_options:
        for output in OUTPUT_OPTIONS:
            parser.add_argument(
                output.flag, dest=output.name, action="store_true", help=output.help
            )


def run_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`RUN_OPTIONS` fields given on the command line, by field name."""
    return {
        option.field: getattr(args, option.field)
        for option in RUN_OPTIONS
        if getattr(args, option.field, None) is not None
    }


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of parsed :func:`add_run_arguments` options (omitted ones: defaults)."""
    return RunConfig(**run_options_from_args(args))
