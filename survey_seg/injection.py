"""Injection-recovery runs: how far to trust a catalog (``survey-seg inject``).

:func:`run_injection` draws synthetic objects (:mod:`survey_seg.inject`) into a
copy of the mosaic, screens it as ``survey-seg run`` would, screens the negated
mosaic (where every detection is spurious), and counts what came back. Everything
is written in a new output directory of its own; a run of the real mosaic
elsewhere is neither read nor touched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from survey_seg.config import RunConfig, check_run_config
from survey_seg.errors import InputError, OutputError
from survey_seg.files import atomic_write_bytes
from survey_seg.inject import (
    INJECTION_KINDS,
    injected_fractions,
    injection_metrics,
    injection_tile_metrics,
    make_injection_catalog,
    match_injections,
    real_peaks,
    render_window,
    source_light_sums,
)
from survey_seg.pipeline import execute_run, plan_run
from survey_seg.psf import UNDERSAMPLED_BETA
from survey_seg.simulate import SimulationConfig
from survey_seg.store import MOSAIC_STORE, PSF_MEASURED, MosaicInfo, MosaicStore, OutputStore
from survey_seg.tiling import Tile

__all__ = [
    "DEFAULT_DENSITY",
    "INJECTION_CATALOG",
    "INJECTION_DIR",
    "INJECTION_JSON",
    "INJECTION_TABLE",
    "INJECTION_TILES",
    "NEGATIVE_DIR",
    "attribute_sources",
    "run_injection",
]

INJECTION_DIR = "injection"
"""Where a run's injection run goes, inside the run's output directory (``OUT/injection/``
of a mosaic, ``OUT/mosaics/<name>/injection/`` of a survey's): the flows put it
there, and a survey's quality map takes its completeness from there."""
INJECTION_CATALOG = "injection_catalog.parquet"
"""The injected objects, written before the screening (``OUT/``)."""
INJECTION_TABLE = "injection.parquet"
"""One row per injected object with what was recovered of it."""
INJECTION_TILES = "injection_tiles.parquet"
"""The summary per tile: the objects whose position the tile's core holds."""
INJECTION_JSON = "injection.json"
"""The summary: completeness, pair recall, shattering, clumps, spurious fraction."""
NEGATIVE_DIR = "negative"
"""Output directory of the negated mosaic's run, inside ``OUT/``."""
DEFAULT_DENSITY = 400.0
"""Injected objects (pairs and clumpy hosts counted once) per million pixels."""
TRAINING_PSF_FWHM_PIX = SimulationConfig().psf_fwhm_pix
"""PSF FWHM of the simulated scenes the network was trained on: the PSF of a
mosaic that states none."""
_VALID_ROWS = 1024  # rows of the mosaic read at a time (valid pixels, injected light)


def run_injection(
    mosaic_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    seed: int = 0,
    density: float = DEFAULT_DENSITY,
    gain: float | None = None,
    client=None,
    progress: bool = False,
) -> dict:
    """Inject synthetic objects into a mosaic, screen it and its negative, count what returns.

    Writes in ``out_dir`` (new or empty): the injected run's outputs, as
    ``survey-seg run`` writes them, with :data:`INJECTION_CATALOG`,
    :data:`INJECTION_TABLE`, :data:`INJECTION_TILES` (the summary per tile) and
    :data:`INJECTION_JSON`, and the negated mosaic's run in ``out_dir/negative/``.
    A source whose light is mostly injected light is the injected object's own
    (:func:`survey_seg.inject.match_injections`): a real galaxy under an injected
    one is not a piece of it. The
    objects are drawn with a Moffat PSF of the mosaic's FWHM (``config.psf_fwhm``,
    else its ``PSFFWHM`` keyword, else measured on its stars, else the network's
    training PSF, with a warning) and index (the measured beta where the FWHM is
    the measured one, :func:`_injection_beta`), in the sky noise of the ingested mosaic (median
    of its background RMS mesh), with Poisson noise on their own counts where the
    gain is known (``gain``, else the mosaic's ``GAIN`` keyword when its pixels are
    counts).

    Parameters
    ----------
    mosaic_path : path-like
        FITS mosaic.
    out_dir : path-like
        New or empty output directory.
    config : RunConfig, optional
        Run parameters of both screenings (its injection fields are set here).
    seed : int
        Seed of the injection catalog.
    density : float
        Injected objects per million pixels.
    gain : float, optional
        Electrons per image unit: the objects get Poisson noise on their own counts
        (seeded per object, the same in every tile). None: the mosaic's ``GAIN``
        keyword where its ``BUNIT`` is a count unit (or absent); else the objects are
        drawn without Poisson noise, with a warning when a ``GAIN`` keyword exists
        but does not apply to the pixel unit.
    client : distributed.Client, optional
        Where tiles run; in this process when None.
    progress : bool
        Show progress bars over tiles.

    Returns
    -------
    dict
        The summary written to :data:`INJECTION_JSON`.

    Raises
    ------
    InputError, OutputError
        One-line messages naming the problem and the fix; an output directory that
        is not new or empty is refused before anything is written.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{out} is not a new or empty directory; survey-seg inject writes a run of its own: "
            "choose a new --out (a real run's directory is never reused)"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"--seed {seed!r} is not a seed; give an integer >= 0")
    base = replace(config or RunConfig(), injection_catalog=None, negate=False)
    if base.region is not None:
        raise InputError(
            "survey-seg inject screens the whole mosaic, so that every injected object is "
            "counted; drop --region"
        )
    plan = plan_run(mosaic_path, out, base)
    psf = base.psf_fwhm if base.psf_fwhm is not None else plan.mosaic.psf_fwhm_pix
    if psf is None:
        psf = TRAINING_PSF_FWHM_PIX
        warnings.warn(
            f"the mosaic has no PSFFWHM keyword and too few stars for a PSF fit, so objects "
            f"are injected with the network's training PSF ({psf} pix FWHM); give the PSF "
            "FWHM with --psf-fwhm PIX",
            stacklevel=2,
        )
    beta = _injection_beta(base, plan.mosaic)
    gain, gain_from = _injection_gain(gain, plan.mosaic)
    catalog_path = out.resolve() / INJECTION_CATALOG
    injected = replace(
        plan.config,
        injection_catalog=str(catalog_path),
        injection_psf_fwhm=float(psf),
        injection_psf_beta=beta,
        injection_gain=gain,
    )
    check_run_config(injected)
    plan = replace(
        plan,
        config=injected,
        result_key=injected.result_key(plan.mosaic.sha256, plan.method_provenance),
    )
    negative_plan = plan_run(mosaic_path, out / NEGATIVE_DIR, replace(base, negate=True))
    zero_point = base.zero_point if base.zero_point is not None else plan.mosaic.zero_point

    catalog = None
    catalog_refused = False

    def write_injection_catalog(plan) -> None:
        nonlocal catalog, catalog_refused
        mosaic = MosaicStore(plan.out_dir / MOSAIC_STORE)
        try:
            catalog = make_injection_catalog(
                mosaic.shape,
                mosaic.wcs,
                _valid_pixels(mosaic),
                psf_fwhm_pix=float(psf),
                psf_beta=beta,
                noise_sigma=_sky_noise(mosaic),
                seed=seed,
                density_per_mpix=density,
                kinds=INJECTION_KINDS,
                zero_point=zero_point,
                gain=gain,
            )
        except InputError:
            catalog_refused = True
            raise
        _write_parquet(catalog, catalog_path)

    created = not out.exists()
    try:
        execute_run(
            plan, client=client, progress=progress, before_screening=write_injection_catalog
        )
    except InputError:
        if catalog_refused:  # nothing was screened: leave the directory as it was
            _discard(out, created)
        raise
    with warnings.catch_warnings():  # on the negated mosaic no source is the right answer
        warnings.filterwarnings("ignore", "no source was detected", UserWarning)
        execute_run(negative_plan, client=client, progress=progress)

    sources = pd.read_parquet(out / "sources.parquet")
    attribution = attribute_sources(out, catalog, sources, psf_fwhm_pix=float(psf), psf_beta=beta)
    sources[list(attribution.columns)] = attribution
    clumps = pd.read_parquet(out / "clumps.parquet")
    negative = pd.read_parquet(out / NEGATIVE_DIR / "sources.parquet", columns=["id", "tile_id"])
    matched = match_injections(
        catalog,
        sources,
        clumps,
        psf_fwhm_pix=float(psf),
        skipped=_skipped(plan),
    )
    summary = injection_metrics(
        matched, clumps, psf_fwhm_pix=float(psf), n_sources=len(sources), n_negative=len(negative)
    )
    summary = {
        **summary,
        "psf_beta": beta,
        "seed": seed,
        "density_per_mpix": float(density),
        "gain": gain,
        "gain_from": gain_from,
        "noise_scale": MosaicStore(plan.out_dir / MOSAIC_STORE).noise_scale,
    }
    per_tile = injection_tile_metrics(
        matched,
        pd.read_parquet(out / "tiles.parquet"),
        sources,
        negative,
        clumps,
        psf_fwhm_pix=float(psf),
    )
    _write_parquet(matched, out / INJECTION_TABLE)
    _write_parquet(per_tile, out / INJECTION_TILES)
    atomic_write_bytes(out / INJECTION_JSON, json.dumps(summary, indent=2).encode())
    return summary


def _injection_beta(config: RunConfig, mosaic: MosaicInfo) -> float:
    """The Moffat index the objects are drawn with: the mosaic's own where it was measured.

    The measured beta (:class:`survey_seg.psf.PSFEstimate`) where the FWHM is the
    measured one (no ``config.psf_fwhm``); the beta its width-only fits assumed
    (:data:`survey_seg.psf.UNDERSAMPLED_BETA`) where its stars were too
    undersampled to measure one; else ``config.injection_psf_beta``. Real PSFs
    have wider wings than the default's (SDSS 2.0-2.8, Spitzer 2.6): objects drawn
    sharper than the mosaic's own stars would be found more easily.
    """
    record = mosaic.psf or {}
    if config.psf_fwhm is not None or record.get("source") != PSF_MEASURED:
        return config.injection_psf_beta
    beta = record.get("beta")
    return UNDERSAMPLED_BETA if beta is None else float(beta)


def _injection_gain(gain: float | None, mosaic: MosaicInfo) -> tuple[float | None, str]:
    """The gain the objects' Poisson noise is drawn with, and where it comes from."""
    if gain is not None:
        return gain, "--gain"
    if mosaic.counts_gain is not None:
        return mosaic.counts_gain, "GAIN"
    if mosaic.gain is not None:
        warnings.warn(
            f"the mosaic's GAIN keyword ({mosaic.gain:g}) is per raw count but its pixels are "
            f"in {mosaic.flux_unit}, so objects are injected without Poisson noise; give the "
            "electrons per pixel unit with --gain E_PER_UNIT",
            stacklevel=3,
        )
    return None, "none"


def attribute_sources(
    out: Path,
    catalog: pd.DataFrame,
    sources: pd.DataFrame,
    *,
    psf_fwhm_pix: float,
    psf_beta: float,
) -> pd.DataFrame:
    """Whose light each source of an injection run is: injected light or the image's own.

    The injected objects are drawn again without noise beside the mosaic's own
    pixels less their background mesh, a strip of rows at a time with a pixel of
    margin (:func:`survey_seg.inject.source_light_sums`,
    :func:`survey_seg.inject.real_peaks`).

    Parameters
    ----------
    out : pathlib.Path
        The injection run's output directory (its mosaic store and segmentation).
    catalog : pandas.DataFrame
        The injected objects (``injection_catalog.parquet``).
    sources : pandas.DataFrame
        The run's sources (``sources.parquet``: ``id``, ``x_peak``, ``y_peak``).
    psf_fwhm_pix, psf_beta : float
        The PSF the objects were injected with.

    Returns
    -------
    pandas.DataFrame
        On ``sources``' index: ``injected_fraction`` (the share of injected light
        over the source's segment) and ``on_real_peak`` (its peak is a real
        object's).
    """
    mosaic = MosaicStore(out / MOSAIC_STORE)
    _, segmentation = OutputStore(out).open_masks()
    ny, nx = mosaic.shape
    peak_x = sources["x_peak"].to_numpy(dtype=np.int64)
    peak_y = sources["y_peak"].to_numpy(dtype=np.int64)
    on_real_peak = np.zeros(len(sources), dtype=bool)
    sums = []
    for row in range(0, ny, _VALID_ROWS):
        rows = min(_VALID_ROWS, ny - row)
        strip = Tile(index=0, row=0, col=0, y0=row, y1=row + rows, x0=0, x1=nx, halo=1,
                     mosaic_shape=(ny, nx))  # fmt: skip
        window = mosaic.read_window(strip)
        origin = strip.origin
        injected = render_window(
            catalog, origin, window.image.shape, psf_fwhm_pix=psf_fwhm_pix, psf_beta=psf_beta
        ).image
        own = window.image.astype(np.float64) - window.background
        core = (slice(1, -1), slice(1, -1))
        labels = np.asarray(segmentation[row : row + rows])
        sums.append(source_light_sums(labels, injected[core], own[core]))
        here = (peak_y >= row) & (peak_y < row + rows)
        on_real_peak[here] = real_peaks(
            peak_x[here], peak_y[here], injected, own, np.sqrt(window.variance), origin=origin
        )
    fractions = injected_fractions(pd.concat(sums, ignore_index=True))
    return pd.DataFrame(
        {
            "injected_fraction": sources["id"].map(fractions).fillna(0.0).to_numpy(),
            "on_real_peak": on_real_peak,
        },
        index=sources.index,
    )


def _valid_pixels(mosaic: MosaicStore) -> np.ndarray:
    """The pixels of the mosaic's that hold data (a bool mask), read a strip at a time."""
    ny, _ = mosaic.shape
    strips = [
        np.isfinite(np.asarray(mosaic.image[row : row + _VALID_ROWS]))
        for row in range(0, ny, _VALID_ROWS)
    ]
    return np.concatenate(strips, axis=0)


def _sky_noise(mosaic: MosaicStore) -> float:
    """Median sky noise per pixel, from the background RMS mesh, as white noise.

    Correlated noise counts at its strength on the PSF's scale: the RMS is scaled
    by the mosaic's :attr:`~survey_seg.store.MosaicStore.noise_scale`, as the
    screening's variance is, so that an injected S/N is the S/N a matched filter
    reaches in that noise (on a drizzled image an object "of S/N 10" by the
    per-pixel RMS is one of S/N 10 / ratio).
    """
    rms = np.asarray(mosaic.mesh.rms, dtype=np.float64)
    rms = rms[np.isfinite(rms) & (rms > 0)]
    if not len(rms):
        raise InputError(
            "the mosaic's sky noise is zero or undefined everywhere, so no S/N can be "
            "injected; check its pixels or its noise plane"
        )
    return float(np.median(rms)) * mosaic.noise_scale


def _skipped(plan) -> list[int]:
    """``injection_id`` of the objects GalSim failed to draw, from the tile records."""
    store = OutputStore(plan.out_dir)
    skipped: set[int] = set()
    for index in range(len(plan.grid)):
        record = store.read_tile_record(index) or {}
        skipped.update(int(i) for i in record.get("injection_skipped", []))
    return sorted(skipped)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def _discard(out: Path, created: bool) -> None:
    """Remove what this run wrote in ``out``, new or empty before it."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
