"""Simulated surveys: several overlapping mosaics cut from one simulated sky.

One large mosaic is simulated (:func:`survey_seg.simulate.simulate_mosaic`) and
four mosaics are cut from it in a 2 x 2 arrangement, overlapping pairwise and
all four around the parent's centre, so that every object of the one truth
catalog has the same sky position in every mosaic that holds it:

- ``a`` (top left in the parent's pixels, low ``y`` and ``x``) and ``b`` (low
  ``y``, high ``x``) are exact cuts: the parent's pixels and projection;
- ``c`` (high ``y``, low ``x``) is turned by ``rotation_deg`` on the sky, with a
  tangent point of its own;
- ``d`` (high ``y`` and ``x``) has pixels ``scale_ratio`` times larger, with a
  tangent point of its own.

``c`` and ``d`` are resampled from the parent by bilinear interpolation at
each pixel centre's sky position (their noise is therefore smoother and
correlated), and ``d``'s values are multiplied by ``scale_ratio**2`` so that
fluxes are conserved. A pixel next to a parent's NaN is NaN. The mosaics carry
no noise plane (the screening estimates it from the pixels); their headers give
``MAGZERO``, ``SATURATE``, ``GAIN`` and ``PSFFWHM`` in their own pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from survey_seg.files import atomic_path
from survey_seg.simulate import SimulatedMosaic, SimulationConfig, simulate_mosaic

__all__ = [
    "SimulatedSurvey",
    "SurveyMosaic",
    "SurveySimulationConfig",
    "simulate_survey",
    "write_survey",
]

MOSAIC_NAMES = ("a", "b", "c", "d")
"""Names of the simulated mosaics, in the order of :attr:`SimulatedSurvey.mosaics`."""


@dataclass(frozen=True)
class SurveySimulationConfig:
    """Parameters of a simulated four-mosaic survey.

    Attributes
    ----------
    mosaic_size : int
        Side of mosaics ``a``, ``b`` and ``c`` in pixels (``d`` covers the same
        sky with ``round(mosaic_size / scale_ratio)`` pixels).
    overlap : int
        Parent pixels that neighbouring mosaics share along each axis.
    rotation_deg : float
        Rotation of mosaic ``c`` on the sky (degrees, counter-clockwise in pixels).
    scale_ratio : float
        Pixel scale of mosaic ``d`` over the parent's.
    seed : int
        Seed of the parent simulation.
    simulation : SimulationConfig
        Other parameters of the parent (its ``size``, ``seed`` and ``ny``/``nx`` are
        set from the fields above).
    """

    mosaic_size: int = 320
    overlap: int = 128
    rotation_deg: float = 30.0
    scale_ratio: float = 1.25
    seed: int = 0
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def __post_init__(self) -> None:
        for name in ("mosaic_size", "overlap", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} is not an integer >= 0; give one.")
        if self.mosaic_size < 64:
            raise ValueError(f"mosaic_size={self.mosaic_size} is too small; give 64 or more.")
        if not 0 < self.overlap < self.mosaic_size or (self.mosaic_size - self.overlap) % 2:
            raise ValueError(
                f"overlap={self.overlap} must be in (0, mosaic_size) with mosaic_size - overlap "
                "even (the mosaics sit symmetrically about the parent's centre); change it"
            )
        for name in ("rotation_deg", "scale_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} is not a finite number; give one.")
        if not 0.5 <= self.scale_ratio <= 2.0:
            raise ValueError(f"scale_ratio={self.scale_ratio} leaves [0.5, 2]; give one within.")
        if not isinstance(self.simulation, SimulationConfig):
            raise ValueError("simulation must be a SimulationConfig; build one for the parent.")

    @property
    def offset(self) -> int:
        """Parent pixels from the parent's centre to each mosaic's centre, along each axis."""
        return (self.mosaic_size - self.overlap) // 2

    @property
    def parent_size(self) -> int:
        """Side of the parent: every footprint, the rotated one too, fits with 8 pixels to spare."""
        half = self.mosaic_size / 2.0
        theta = math.radians(self.rotation_deg % 90.0)
        reach = half * (abs(math.cos(theta)) + abs(math.sin(theta)))
        return 2 * (self.offset + math.ceil(max(reach, half)) + 8)


@dataclass
class SurveyMosaic:
    """One mosaic of a simulated survey: its pixels, header and WCS."""

    name: str
    image: np.ndarray
    wcs: WCS
    header: fits.Header


@dataclass
class SimulatedSurvey:
    """A simulated survey: the parent simulation (the one truth) and its mosaics."""

    parent: SimulatedMosaic
    mosaics: list[SurveyMosaic]
    config: SurveySimulationConfig

    @property
    def truth_sources(self) -> pd.DataFrame:
        """The truth catalog of every mosaic (the parent's; ``ra``, ``dec`` hold everywhere)."""
        return self.parent.truth_sources

    @property
    def truth_clumps(self) -> pd.DataFrame:
        """The truth clumps of every mosaic."""
        return self.parent.truth_clumps


def simulate_survey(config: SurveySimulationConfig | None = None) -> SimulatedSurvey:
    """Simulate one sky and cut four overlapping mosaics from it (see the module notes).

    Parameters
    ----------
    config : SurveySimulationConfig, optional

    Returns
    -------
    SimulatedSurvey
    """
    config = config or SurveySimulationConfig()
    if not isinstance(config, SurveySimulationConfig):
        raise TypeError(f"config is a {type(config).__name__}; pass a SurveySimulationConfig.")
    size = config.parent_size
    parent = simulate_mosaic(
        replace(config.simulation, size=size, ny=None, nx=None, seed=config.seed)
    )
    centre = (size - 1) / 2.0
    mosaics = []
    for name, (sign_y, sign_x) in zip(
        MOSAIC_NAMES, ((-1, -1), (-1, 1), (1, -1), (1, 1)), strict=True
    ):
        cy, cx = centre + sign_y * config.offset, centre + sign_x * config.offset
        if name in ("a", "b"):
            mosaics.append(_cut(parent, name, cy, cx, config.mosaic_size))
        elif name == "c":
            mosaics.append(
                _resampled(
                    parent,
                    name,
                    cy,
                    cx,
                    config.mosaic_size,
                    rotation_deg=config.rotation_deg,
                    scale_ratio=1.0,
                )
            )
        else:
            n = round(config.mosaic_size / config.scale_ratio)
            mosaics.append(
                _resampled(
                    parent, name, cy, cx, n, rotation_deg=0.0, scale_ratio=config.scale_ratio
                )
            )
    return SimulatedSurvey(parent=parent, mosaics=mosaics, config=config)


def _cut(parent: SimulatedMosaic, name: str, cy: float, cx: float, n: int) -> SurveyMosaic:
    """Mosaic ``name``: the parent's pixels of side ``n`` centred on ``(cy, cx)``."""
    y0, x0 = round(cy - (n - 1) / 2.0), round(cx - (n - 1) / 2.0)
    image = np.array(parent.image[y0 : y0 + n, x0 : x0 + n], dtype=np.float32)
    wcs = parent.wcs.deepcopy()
    wcs.wcs.crpix = parent.wcs.wcs.crpix - np.array([x0, y0], dtype=float)
    wcs.pixel_shape = (n, n)
    wcs.wcs.set()
    return SurveyMosaic(name, image, wcs, _header(parent, wcs, name, scale_ratio=1.0))


def _resampled(
    parent: SimulatedMosaic,
    name: str,
    cy: float,
    cx: float,
    n: int,
    *,
    rotation_deg: float,
    scale_ratio: float,
) -> SurveyMosaic:
    """Mosaic ``name`` of side ``n``: own tangent point, rotated and rescaled, resampled."""
    (ra,), (dec,) = parent.wcs.all_pix2world([cx], [cy], 0)
    scale = parent.config.pixel_scale_arcsec * scale_ratio / 3600.0
    theta = math.radians(rotation_deg)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
    wcs.wcs.crval = [float(ra), float(dec)]
    # East left, North up, then turned by theta: CD = R(theta) @ diag(-scale, scale)
    wcs.wcs.cd = np.array(
        [
            [-scale * math.cos(theta), -scale * math.sin(theta)],
            [-scale * math.sin(theta), scale * math.cos(theta)],
        ]
    )
    wcs.wcs.radesys = "ICRS"
    wcs.pixel_shape = (n, n)
    wcs.wcs.set()
    y, x = np.mgrid[0:n, 0:n].astype(float)
    world_ra, world_dec = wcs.all_pix2world(x, y, 0)
    px, py = parent.wcs.all_world2pix(world_ra, world_dec, 0)
    image = ndimage.map_coordinates(
        parent.image, [py, px], order=1, mode="constant", cval=np.nan, prefilter=False
    )
    image = (image * scale_ratio**2).astype(np.float32)
    return SurveyMosaic(name, image, wcs, _header(parent, wcs, name, scale_ratio=scale_ratio))


def _header(parent: SimulatedMosaic, wcs: WCS, name: str, *, scale_ratio: float) -> fits.Header:
    """The mosaic's header: its WCS, the parent's photometry in its own pixels."""
    config = parent.config
    header = wcs.to_header()
    header["BUNIT"] = ("adu", "pixel unit")
    header["MAGZERO"] = (float(config.zero_point), "mag = MAGZERO - 2.5 log10(flux [adu])")
    header["SATURATE"] = (float(config.saturation) * scale_ratio**2, "[adu] saturation level")
    header["GAIN"] = (float(config.gain) / scale_ratio**2, "[e-/adu] gain of the source noise")
    header["PIXSCALE"] = (float(config.pixel_scale_arcsec) * scale_ratio, "[arcsec/pix]")
    header["PSFFWHM"] = (float(config.psf_fwhm_pix) / scale_ratio, "[pix] PSF FWHM")
    header["SIMSEED"] = (int(config.seed), "seed of the parent simulation")
    header["SURVMOS"] = (name, "mosaic of the simulated survey")
    return header


def write_survey(survey: SimulatedSurvey, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write each mosaic as ``<name>.fits`` and the truth as ``truth_*.parquet``.

    Each file is written atomically.

    Parameters
    ----------
    survey : SimulatedSurvey
    out_dir : path-like
        Created if needed.

    Returns
    -------
    dict of str to pathlib.Path
        The mosaics by name, and ``"truth_sources"``, ``"truth_clumps"``.
    """
    if not isinstance(survey, SimulatedSurvey):
        raise TypeError(f"survey is a {type(survey).__name__}; pass a SimulatedSurvey.")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"out_dir={str(directory)!r} is a file; give a directory path.")
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for mosaic in survey.mosaics:
        path = directory / f"{mosaic.name}.fits"
        with atomic_path(path) as temporary:
            fits.PrimaryHDU(data=mosaic.image, header=mosaic.header).writeto(temporary)
        paths[mosaic.name] = path
    for key, table in (
        ("truth_sources", survey.truth_sources),
        ("truth_clumps", survey.truth_clumps),
    ):
        path = directory / f"{key}.parquet"
        with atomic_path(path) as temporary:
            table.to_parquet(temporary, index=False)
        paths[key] = path
    return paths
