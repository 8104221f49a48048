"""Screening quality of survey-seg against SEP and photutils on simulated mosaics.

Every method screens the same mosaics in the same run, and every output is scored
against the simulation's truth with :mod:`survey_seg.evaluate`:

- ``completeness``: fraction of truth sources above S/N 10 matched one to one
  within 0.4 arcsec; ``purity``: fraction of detections matched to a truth source;
  ``blend_recall``: fraction of close truth pairs (< 1.5 arcsec, both above
  S/N 10) whose members are both recovered as distinct detections;
  ``completeness_resolved``: completeness of the truth sources above S/N 10 with
  no other such source within 1.5 PSF FWHM, and ``blend_recall_resolved``: blend
  recall of the close pairs at least 1.5 PSF FWHM apart, which tell a wide PSF's
  unresolved pairs apart from what else it costs (diagnostics, no target). A truth source
  whose centre pixel has no data (a chip gap, a hole) counts in none of them;
  ``on_artefact``: fraction of detections whose pixel is a truth CR, STREAK,
  GHOST or BAD pixel (artefacts catalogued as sources).
- ``seg_iou``: footprint IoU of "any object" pixels against the truth
  segmentation (the dominant object's light above 1 sky sigma, noiseless);
  ``object_iou``: mean best IoU of the truth objects with a single segment.
  survey-seg methods: the ``segmentation`` of ``masks.zarr``; SEP: its
  ``segmentation_map``; photutils: the deblended ``SegmentationImage``.
- ``isolated_as_blend``: fraction of the matched truth sources above S/N 10 whose
  truth footprint touches no other's that the catalog flags blended;
  ``blends_flagged``: the same for those whose footprint touches another's
  (``evaluate.blend_flag_scores``). survey-seg: ``is_blended`` (the footprint
  holds more than one source); SEP: OBJ_MERGED; photutils: a footprint of
  several segments.
- ``clump_completeness``: fraction of detectable truth clumps (sky-limited
  matched-filter S/N ``flux / (sky_sigma sqrt(4 pi) psf_sigma)`` >= 5,
  ``psf_sigma = fwhm / 2.355``) matched within 2 px; ``clump_purity``: fraction
  of detected clumps matched to any truth clump. survey-seg methods only.
  ``clump_on_own_centre``: fraction of detected clumps within one PSF FWHM of
  their host's catalogued position (:func:`clumps_on_own_centre`): not clumps as
  the literature defines them (off the centre), though they may match a true
  clump by position (a knot that came out as a source of its own).
- ``<plane>_recall`` / ``<plane>_fpr`` / ``<plane>_precision`` for CR, STREAK,
  GHOST, BAD, SAT: pixel recall (a truth pixel counts when the plane is predicted
  within 1 px), false-positive rate and precision (a predicted pixel counts when
  the truth plane is within 1 px) of the ``mask`` planes of ``masks.zarr``,
  NO_DATA pixels excluded. survey-seg methods only.
- ``verdict_auc``: ROC AUC of the tile score ``flagged_fraction`` (the verdict's
  score: core pixels with NO_DATA or an artefact plane) of ``tiles.parquet``
  against the truth label "more than 2 % of the tile core is artefact or NO_DATA".
  Runs use 256-pixel tiles (64 per 2048^2 mosaic); the mean table pools the tiles
  of all seeds. survey-seg only. ``quality_auc``: the same for the data-quality
  classifier's own tile score ``predicted_flagged_fraction`` (the mean of its
  stamps' estimated flagged fractions; network only). ``stamp_ece``: expected
  calibration error of those stamp estimates (``masks.zarr/quality``) against the
  stamps' true flagged fractions (:func:`survey_seg.train.stamp_labels`).
- ``seconds``: wall time of the method on the mosaic (survey-seg: the whole
  in-process run, I/O included; SEP and photutils: background, detection,
  deblending, catalog and segmentation map in memory).

Five skies (``--simulators``): ``nominal`` is the default :class:`SimulationConfig`
at the benchmark seeds (default 901-906: six 2048^2 mosaics hold about 240
detectable clumps and 1,900 close pairs); ``shifted`` is
``survey_seg.train.scene_config(seed, size=size, shifted=True)`` (PSF width and
noise +30 %, Sersic range 0.8-2.5), outside the training jitter; ``psf3`` and
``psf5`` are the nominal sky with a PSF 3 and 5 times wider on the same pixels
(5.4 and 9 pix FWHM), scored in units of their PSF (match radii and close-pair
separation 3 and 5 times the nominal ones); ``correlated`` is the nominal sky
in noise correlated by a drizzle-like 3 x 3 kernel (``noise_correlation`` 0.5:
the same per-pixel variance; the truth S/N is the matched filter's in that
noise, 2.3-2.6 times lower than in white noise); ``kolmogorov`` is the nominal
sky seen through GalSim's Kolmogorov PSF of the same FWHM, elliptical (0.1),
whose wings are heavier than the Moffat's. The network is
trained on 256-pixel-ish scenes from ``scene_config`` with seeds
``seed * 1_000_000 + step * batch + k`` (and 10,000,000+ for validation): the
benchmark mosaics are of a different size, configuration and seed stream, so
none of them was seen in training.

Finally the ``--check-method`` (default ``unet``) is held to the targets: on the
nominal simulator completeness and purity >= 0.95, blend recall >= 0.85 and at
least SEP's + 0.25, clump completeness and purity >= 0.85, CR and STREAK pixel
recall >= 0.9 with FPR <= 0.005, verdict AUC and the classifier's tile AUC >= 0.98,
every artefact plane's pixel precision >= 0.8; the same levels on ``psf3``,
``psf5``, ``correlated`` and ``kolmogorov``; and none of those metrics worse by more than 0.05
on the shifted simulator (lower for scores, higher for false-positive rates).
Each check prints its standard error from the scatter of the per-seed values
(shifted minus nominal and the margin over SEP paired by seed) and its distance
from the target in those errors, so that a miss by noise can be told from a
real one. Clumps come in a few clumpy hosts per mosaic, and
the detectable ones of a mosaic range from faint to bright together: the clump
metrics' errors (about 0.03-0.05 on six mosaics) are up to twice what their count
alone would suggest.

Usage::

    python benchmarks/quality.py [--size 2048] [--seeds 901 ... 906]
        [--methods unet classical sep photutils] [--simulators S ...] [--json PATH]
        [--model PATH] [--precision P] [--flips N]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from scipy import ndimage

from survey_seg.config import default_halo
from survey_seg.evaluate import (
    ARTEFACT_PLANES,
    CLUMP_MIN_SNR,
    artefact_pixel_precision,
    artefact_pixel_scores,
    blend_flag_scores,
    clump_snr,
    expected_calibration_error,
    object_iou,
    score_catalog,
    score_clumps,
    segmentation_iou,
    truth_tile_labels,
    verdict_auc,
)
from survey_seg.inference import DEFAULT_MODEL
from survey_seg.masks import MaskBit
from survey_seg.methods import PRECISIONS, make_method
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.simulate import (
    SimulatedMosaic,
    SimulationConfig,
    noise_kernel,
    simulate_mosaic,
    write_simulation,
)
from survey_seg.store import OutputStore
from survey_seg.train import scene_config, stamp_labels

SURVEY_SEG_METHODS = ("unet", "classical")
ALL_METHODS = ("unet", "classical", "sep", "photutils")
TILE_SIZE = 256
HALO = 64
MATCH_RADIUS_ARCSEC = 0.4
PAIR_SEPARATION_ARCSEC = 1.5
CLUMP_MATCH_PIX = 2.0
RESOLVED_FWHM = 1.5  # the *_resolved diagnostics: objects and pairs this many PSF FWHM apart

# (metric, comparison, target) on the nominal simulator
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("completeness", ">=", 0.95),
    ("purity", ">=", 0.95),
    ("blend_recall", ">=", 0.85),
    ("clump_completeness", ">=", 0.85),
    ("clump_purity", ">=", 0.85),
    ("cr_recall", ">=", 0.9),
    ("cr_fpr", "<=", 0.005),
    ("streak_recall", ">=", 0.9),
    ("streak_fpr", "<=", 0.005),
    ("verdict_auc", ">=", 0.98),
    ("quality_auc", ">=", 0.98),
    *((f"{name.lower()}_precision", ">=", 0.8) for name in ("CR", "STREAK", "GHOST", "BAD", "SAT")),
)
SIMULATORS: tuple[str, ...] = ("nominal", "shifted", "psf3", "psf5", "correlated", "kolmogorov")
WIDE_PSF: dict[str, float] = {"psf3": 3.0, "psf5": 5.0}
"""PSF FWHM of the wide-PSF skies over the nominal one (the same pixels)."""
NOISE_CORRELATION = 0.5
"""Neighbour weight of the ``correlated`` sky's noise kernel (drizzle-like, 3 x 3)."""
KOLMOGOROV_PSF = {"psf_model": "kolmogorov", "psf_ellipticity": 0.1, "psf_angle_deg": 30.0}
"""The ``kolmogorov`` sky's PSF: GalSim's atmospheric profile, of the nominal FWHM,
elliptical (a profile no network was trained on until ``--varied-psf-fraction``)."""
OTHER_SKIES: tuple[str, ...] = ("psf3", "psf5", "correlated", "kolmogorov")
"""Skies held to the nominal targets (the ``shifted`` survey is held to its loss)."""
POOLED = frozenset({"verdict_auc", "quality_auc"})
"""Metrics computed on the tiles of all seeds together (no per-seed error)."""
BLEND_MARGIN_OVER_SEP = 0.25
MAX_SHIFT_LOSS = 0.05


# ------------------------------------------------------------------------ methods


def survey_seg_outputs(
    sim_dir: Path,
    method: str,
    model: str | None,
    precision: str = "auto",
    flips: int | None = None,
    psf_fwhm_pix: float | None = None,
) -> tuple[dict[str, object], float]:
    """Screen with survey-seg in-process and read back its outputs.

    Tiles of 256 pixels, or of the largest multiple of the method's alignment up to
    that, at least one (a PSF wide enough to be screened binned: 192 at PSF 5.4 pix,
    320 at 9 pix).
    """
    tile_size, halo = TILE_SIZE, HALO
    if method == "unet":  # the network may need a wider halo than the default
        screener = make_method(method, model=model, psf_fwhm_pix=psf_fwhm_pix)
        tile_size = max(TILE_SIZE // screener.alignment, 1) * screener.alignment
        halo = default_halo(max(HALO, screener.halo_required), screener.alignment)
    out = sim_dir / f"run-{method}"
    config = RunConfig(
        method=method,
        tile_size=tile_size,
        halo=halo,
        model=model if method == "unet" else None,
        precision=precision,
        flips=flips if method == "unet" else None,
        fits_copies=False,
    )
    start = time.perf_counter()
    run_survey(sim_dir / "mosaic.fits", out, config, clean=True)
    seconds = time.perf_counter() - start
    store = OutputStore(out)
    mask, segmentation = store.read_masks()
    outputs = {
        "sources": pd.read_parquet(out / "sources.parquet"),
        "clumps": pd.read_parquet(out / "clumps.parquet"),
        "tiles": pd.read_parquet(out / "tiles.parquet"),
        "mask": mask,
        "segmentation": segmentation,
    }
    quality = zarr.open_group(store.masks_path, mode="r")
    if "quality" in quality:
        outputs["quality"] = np.asarray(quality["quality"][...])
        outputs["quality_stamp"] = int(quality["quality"].attrs["quality_stamp"])
    return outputs, seconds


def sep_outputs(sim: SimulatedMosaic) -> tuple[dict[str, object], float]:
    """SEP as users run it: background, extraction with matched filter and deblending."""
    import sep

    start = time.perf_counter()
    image = sim.image.astype(np.float64)
    mask = ~np.isfinite(image)
    image = np.where(mask, 0.0, image)
    background = sep.Background(image, mask=mask, bw=64, bh=64)
    data = image - background.back()
    objects, segmentation = sep.extract(
        data, 1.5, err=np.sqrt(np.where(mask, np.inf, sim.variance)).astype(np.float64),
        mask=mask, minarea=5, deblend_nthresh=32, deblend_cont=0.005, segmentation_map=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    sources = pd.DataFrame(
        {
            "x": objects["x"],
            "y": objects["y"],
            "is_blended": (objects["flag"] & sep.OBJ_MERGED) != 0,  # SEP's own blend flag
        }
    )
    return {"sources": sources, "segmentation": np.asarray(segmentation)}, seconds


def photutils_outputs(sim: SimulatedMosaic) -> tuple[dict[str, object], float]:
    """photutils: Background2D, detect_sources + deblend_sources (SourceFinder), catalog."""
    from astropy.convolution import convolve
    from astropy.utils.exceptions import AstropyDeprecationWarning
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel

    # photutils 3 renamed npixels, nlevels and the centroid columns; the old names
    # work on 2.x and 3.x, so keep them and silence the renaming notices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        start = time.perf_counter()
        mask = ~np.isfinite(sim.image)
        image = np.where(mask, 0.0, sim.image)
        background = Background2D(image, 64, mask=mask, bkg_estimator=MedianBackground())
        data = image - background.background
        kernel = make_2dgaussian_kernel(1.8, size=5)
        convolved = convolve(data, kernel)
        threshold = 1.5 * np.sqrt(np.where(mask, np.inf, sim.variance))
        finder = SourceFinder(npixels=5, nlevels=32, contrast=0.005, progress_bar=False)
        segments = finder(convolved, threshold, mask=mask)
        if segments is None:
            sources = pd.DataFrame({"x": [], "y": [], "is_blended": np.zeros(0, bool)})
            segmentation = np.zeros(sim.image.shape, np.int32)
        else:
            table = SourceCatalog(data, segments, convolved_data=convolved).to_table(
                columns=["label", "xcentroid", "ycentroid"]
            )
            segmentation = np.asarray(segments.data)
            sources = pd.DataFrame(
                {
                    "x": np.asarray(table["xcentroid"]),
                    "y": np.asarray(table["ycentroid"]),
                    "is_blended": shares_a_footprint(segmentation)[np.asarray(table["label"])],
                }
            )
        seconds = time.perf_counter() - start
    return {"sources": sources, "segmentation": segmentation}, seconds


def shares_a_footprint(segmentation: np.ndarray) -> np.ndarray:
    """Per segment label ``0 .. max``: whether its 8-connected region holds another segment.

    The blend flag of a deblender that gives none (photutils), as survey-seg's
    ``is_blended`` is defined: the footprint holds more than one source.
    """
    labels = np.asarray(segmentation)
    regions, _ = ndimage.label(labels > 0, structure=np.ones((3, 3), dtype=bool))
    pairs = np.unique(np.stack([regions[labels > 0], labels[labels > 0]]), axis=1)
    members = np.bincount(pairs[0], minlength=int(regions.max()) + 1)
    shared = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    shared[pairs[1]] = members[pairs[0]] > 1
    return shared


# ------------------------------------------------------------------------ scoring


def score_outputs(
    outputs: dict[str, object], sim: SimulatedMosaic, distance_scale: float = 1.0
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """All metrics of one method on one mosaic, plus its tile scores and truth labels.

    ``distance_scale`` multiplies the match radii and the close-pair separation: a
    sky whose PSF is that many times the nominal one is scored in units of its PSF.
    """
    config = sim.config
    truth_mask = sim.truth_mask
    valid = (truth_mask & np.uint32(int(MaskBit.NO_DATA))) == 0
    score = score_catalog(
        outputs["sources"],
        sim.truth_sources,
        pixel_scale_arcsec=config.pixel_scale_arcsec,
        match_radius_arcsec=MATCH_RADIUS_ARCSEC * distance_scale,
        pair_separation_arcsec=PAIR_SEPARATION_ARCSEC * distance_scale,
        truth_mask=truth_mask,
        resolved_separation_arcsec=RESOLVED_FWHM * config.psf_fwhm_pix * config.pixel_scale_arcsec,
    )
    row: dict[str, float] = {
        "completeness": score.completeness,
        "completeness_resolved": score.completeness_resolved,
        "purity": score.purity,
        "blend_recall": score.blend_recall,
        "blend_recall_resolved": score.blend_recall_resolved,
        "on_artefact": score.on_artefact,
    }
    truth_segmentation = sim.truth_segmentation
    if truth_segmentation is None:
        row["seg_iou"] = row["object_iou"] = math.nan
        row["isolated_as_blend"] = row["blends_flagged"] = math.nan
    else:
        row["seg_iou"] = segmentation_iou(outputs["segmentation"], truth_segmentation, valid)
        row["object_iou"] = object_iou(outputs["segmentation"], truth_segmentation, valid)
        row["isolated_as_blend"], row["blends_flagged"] = blend_flag_scores(
            outputs["sources"],
            sim.truth_sources,
            truth_segmentation,
            radius=MATCH_RADIUS_ARCSEC * distance_scale / config.pixel_scale_arcsec,
            truth_mask=truth_mask,
        )

    truth_clumps = sim.truth_clumps
    snr = clump_snr(
        truth_clumps["flux"],
        sky_sigma=config.sky_sigma,
        psf_fwhm_pix=config.psf_fwhm_pix,
        noise_kernel=noise_kernel(config.noise_correlation),
    )
    if "clumps" in outputs:
        row["clump_completeness"], row["clump_purity"] = score_clumps(
            outputs["clumps"][["x", "y"]].to_numpy(float),
            truth_clumps[["x", "y"]].to_numpy(float),
            snr,
            radius=CLUMP_MATCH_PIX * distance_scale,
            truth_mask=truth_mask,
        )
        row["clump_on_own_centre"] = clumps_on_own_centre(
            outputs["clumps"], outputs["sources"], config.psf_fwhm_pix
        )
    else:
        row["clump_completeness"] = row["clump_purity"] = row["clump_on_own_centre"] = math.nan

    if "mask" in outputs:
        planes = artefact_pixel_scores(outputs["mask"], truth_mask, ARTEFACT_PLANES)
        precision = artefact_pixel_precision(outputs["mask"], truth_mask, ARTEFACT_PLANES)
    else:
        planes = dict.fromkeys(ARTEFACT_PLANES, (math.nan, math.nan))
        precision = dict.fromkeys(ARTEFACT_PLANES, math.nan)
    for name, (recall, fpr) in planes.items():
        row[f"{name.lower()}_recall"] = recall
        row[f"{name.lower()}_fpr"] = fpr
        row[f"{name.lower()}_precision"] = precision[name]
    row["stamp_ece"] = math.nan
    if "quality" in outputs:
        truth_fraction = stamp_labels(truth_mask, outputs["quality_stamp"])[-1]
        row["stamp_ece"] = expected_calibration_error(
            outputs["quality"].ravel(), truth_fraction.ravel()
        )

    tile_scores = np.zeros((0, 2))
    tile_labels = np.zeros(0, dtype=bool)
    if "tiles" in outputs:
        tiles = outputs["tiles"]
        tiles = tiles[tiles["status"] == "done"]
        tile_scores = tiles[["flagged_fraction", "predicted_flagged_fraction"]].to_numpy(float)
        tile_labels = truth_tile_labels(truth_mask, tiles)
    row["verdict_auc"] = verdict_auc(tile_scores[:, 0], tile_labels)
    row["quality_auc"] = _classifier_auc(tile_scores[:, 1], tile_labels)
    row["n_bad_tiles"] = int(tile_labels.sum()) if "tiles" in outputs else math.nan
    row["n_tiles"] = len(tile_labels) if "tiles" in outputs else math.nan
    row["n_detected"] = score.n_detected
    row["n_truth_snr10"] = score.n_truth
    row["n_pairs"] = score.n_close_pairs
    row["n_clumps_detectable"] = int(np.count_nonzero(snr >= CLUMP_MIN_SNR))
    return row, tile_scores, tile_labels


def clumps_on_own_centre(clumps: pd.DataFrame, sources: pd.DataFrame, psf_fwhm_pix: float) -> float:
    """Share of the clumps within one PSF FWHM of their host's catalogued position.

    A clump is a knot off its host's centre (Guo et al. 2015): one on the
    position of its own host is that source's centre, a knot that came out as a
    source of its own or a compact galaxy, though it may still match a true
    clump by position (NaN without clumps).
    """
    if not len(clumps):
        return math.nan
    hosts = sources.set_index("id").loc[clumps["host_id"].to_numpy()]
    gap = np.hypot(
        clumps["x"].to_numpy() - hosts["x"].to_numpy(),
        clumps["y"].to_numpy() - hosts["y"].to_numpy(),
    )
    return float(np.mean(gap < psf_fwhm_pix))


def _classifier_auc(predicted: np.ndarray, labels: np.ndarray) -> float:
    """AUC of the tiles' classifier score; NaN for methods without a classifier."""
    if not len(predicted) or not np.isfinite(predicted).all():
        return math.nan
    return verdict_auc(predicted, labels)


# ------------------------------------------------------------------------ report

METRICS: tuple[str, ...] = (
    "completeness",
    "completeness_resolved",
    "purity",
    "blend_recall",
    "blend_recall_resolved",
    "on_artefact",
    "seg_iou",
    "object_iou",
    "isolated_as_blend",
    "blends_flagged",
    "clump_completeness",
    "clump_purity",
    "clump_on_own_centre",
    *(
        f"{name.lower()}_{kind}"
        for name in ARTEFACT_PLANES
        for kind in ("recall", "fpr", "precision")
    ),
    "verdict_auc",
    "quality_auc",
    "stamp_ece",
    "seconds",
)
"""Scored metrics, in table order; the other numeric columns are counts."""

LOWER_IS_BETTER = frozenset(
    {
        "on_artefact",
        "isolated_as_blend",
        "clump_on_own_centre",
        "seconds",
        "stamp_ece",
        *(f"{name.lower()}_fpr" for name in ARTEFACT_PLANES),
    }
)

COMPACT = (
    ("completeness", "compl"),
    ("completeness_resolved", "compl_res"),
    ("purity", "purity"),
    ("blend_recall", "blend"),
    ("blend_recall_resolved", "blend_res"),
    ("on_artefact", "on_art"),
    ("seg_iou", "seg_iou"),
    ("object_iou", "obj_iou"),
    ("isolated_as_blend", "iso_blnd"),
    ("clump_completeness", "clump_c"),
    ("clump_purity", "clump_p"),
    ("clump_on_own_centre", "clump_ctr"),
    ("cr_recall", "cr_rec"),
    ("cr_fpr", "cr_fpr"),
    ("streak_recall", "strk_rec"),
    ("streak_fpr", "strk_fpr"),
    ("ghost_precision", "gh_prec"),
    ("verdict_auc", "auc"),
    ("quality_auc", "q_auc"),
    ("seconds", "seconds"),
)


def _format(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_row(row: dict[str, object], header: bool) -> None:
    """One per-seed line with the headline metrics."""
    keys = [("simulator", "simulator"), ("seed", "seed"), ("method", "method"), *COMPACT]
    if header:
        print(" ".join(f"{label:>9}" for _, label in keys))
    print(" ".join(f"{_format(row[key]):>9}" for key, _ in keys), flush=True)


def summarise(
    rows: list[dict[str, object]], tiles: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]
) -> pd.DataFrame:
    """Mean over seeds per (simulator, method); the verdict AUC pools the tiles of all seeds."""
    table = pd.DataFrame(rows)
    summary = table.groupby(["simulator", "method"], sort=False).mean(numeric_only=True)
    summary = summary.drop(columns="seed")
    for key, parts in tiles.items():
        scores = np.concatenate([s for s, _ in parts])
        labels = np.concatenate([lab for _, lab in parts])
        summary.loc[key, "verdict_auc"] = verdict_auc(scores[:, 0], labels)
        summary.loc[key, "quality_auc"] = _classifier_auc(scores[:, 1], labels)
    return summary


def shift_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Shifted minus nominal, metric by method, for methods run on both."""
    simulators = summary.index.get_level_values("simulator")
    if "nominal" not in simulators or "shifted" not in simulators:
        return pd.DataFrame()
    nominal = summary.xs("nominal", level="simulator")[list(METRICS)]
    shifted = summary.xs("shifted", level="simulator")[list(METRICS)]
    methods = [m for m in nominal.index if m in shifted.index]
    return (shifted.loc[methods] - nominal.loc[methods]).T


def _status(ok: bool | None) -> str:
    return "n/a " if ok is None else "PASS" if ok else "FAIL"


def standard_error(values: pd.Series | np.ndarray) -> float:
    """Standard error of a mean over seeds: their scatter (ddof 1) over sqrt(count).

    NaN with fewer than two finite values.
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return math.nan
    return float(np.std(finite, ddof=1) / math.sqrt(finite.size))


def per_seed(table: pd.DataFrame, simulator: str, method: str, metric: str) -> pd.Series:
    """``metric`` of one simulator and method in the per-seed ``table``, indexed by seed."""
    if table.empty or metric not in table:
        return pd.Series(dtype=float)
    chosen = table[(table["simulator"] == simulator) & (table["method"] == method)]
    return chosen.set_index("seed")[metric].astype(float)


def _paired_error(first: pd.Series, second: pd.Series) -> float:
    """Standard error of the mean per-seed difference ``first - second``."""
    return standard_error((first - second).dropna())


def checklist(
    summary: pd.DataFrame, method: str, rows: list[dict[str, object]] | None = None
) -> list[dict[str, object]]:
    """The targets of ``method``: nominal levels, margin over SEP, loss on the shift.

    With the per-seed ``rows``, each item also carries ``error``, the standard error
    of its value from the seed-to-seed scatter (differences are paired by seed;
    NaN for the verdict AUC, which pools the tiles of all seeds), and ``sigmas``,
    its distance from the target in those errors (negative when it misses).
    """
    items: list[dict[str, object]] = []
    if ("nominal", method) not in summary.index:
        return items
    nominal = summary.loc[("nominal", method)]
    table = pd.DataFrame(rows or [])

    def add(check: str, value: float, ok: bool | None, margin: float, error: float) -> None:
        if isinstance(value, float) and math.isnan(value):
            ok = None
        sigmas = margin / error if error > 0 else math.nan
        items.append(
            {"check": check, "value": value, "status": _status(ok).strip(),
             "error": error, "sigmas": sigmas}
        )  # fmt: skip

    def seeds(simulator: str, name: str, metric: str) -> pd.Series:
        return per_seed(table, simulator, name, metric)

    for metric, op, target in TARGETS:
        value = float(nominal[metric])
        margin = value - target if op == ">=" else target - value
        error = math.nan if metric in POOLED else standard_error(seeds("nominal", method, metric))
        add(f"{metric} {op} {target}", value, margin >= 0, margin, error)
    check = f"blend_recall - sep's >= {BLEND_MARGIN_OVER_SEP}"
    if ("nominal", "sep") in summary.index:
        value = float(nominal["blend_recall"] - summary.loc[("nominal", "sep"), "blend_recall"])
        error = _paired_error(
            seeds("nominal", method, "blend_recall"), seeds("nominal", "sep", "blend_recall")
        )
        add(check, value, value >= BLEND_MARGIN_OVER_SEP, value - BLEND_MARGIN_OVER_SEP, error)
    else:
        add(check, math.nan, None, math.nan, math.nan)
    for sky in OTHER_SKIES:
        if (sky, method) not in summary.index:
            continue
        for metric, op, target in TARGETS:
            value = float(summary.loc[(sky, method), metric])
            margin = value - target if op == ">=" else target - value
            error = math.nan if metric in POOLED else standard_error(seeds(sky, method, metric))
            add(f"{metric} {op} {target} ({sky})", value, margin >= 0, margin, error)
    shifts = shift_table(summary)
    for metric in dict.fromkeys(m for m, _, _ in TARGETS):
        check = f"{metric} worse by <= {MAX_SHIFT_LOSS} on shift"
        if method in shifts.columns:
            delta = float(shifts.loc[metric, method])
            loss = delta if metric in LOWER_IS_BETTER else -delta
            error = (
                math.nan
                if metric in POOLED
                else _paired_error(
                    seeds("shifted", method, metric), seeds("nominal", method, metric)
                )
            )
            add(check, delta, loss <= MAX_SHIFT_LOSS, MAX_SHIFT_LOSS - loss, error)
        else:
            add(check, math.nan, None, math.nan, math.nan)
    return items


def format_item(item: dict[str, object]) -> str:
    """One checklist line: status, check, value, its standard error and distance in sigmas."""
    line = f"  {item['status']:4}  {item['check']:<48} {_format(item['value'])}"
    error = item.get("error", math.nan)
    if isinstance(error, float) and math.isfinite(error):
        line += f" +- {error:.4f}"
        sigmas = float(item["sigmas"])
        if math.isfinite(sigmas):
            distance = f"{sigmas:+.1f}" if abs(sigmas) < 10 else ">+10" if sigmas > 0 else "<-10"
            line += f" ({distance} sigma)"
    return line


def jsonable(value: object) -> object:
    """NaN to None and numpy scalars to Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------ main


def simulate(simulator: str, seed: int, size: int) -> SimulatedMosaic:
    """The benchmark mosaic of ``simulator`` (one of :data:`SIMULATORS`) and ``seed``."""
    if simulator == "shifted":
        return simulate_mosaic(scene_config(seed, size=size, shifted=True))
    config = SimulationConfig(size=size, seed=seed)
    if simulator in WIDE_PSF:
        config = replace(config, psf_fwhm_pix=config.psf_fwhm_pix * WIDE_PSF[simulator])
    elif simulator == "correlated":
        config = replace(config, noise_correlation=NOISE_CORRELATION)
    elif simulator == "kolmogorov":
        config = replace(config, **KOLMOGOROV_PSF)
    elif simulator != "nominal":
        raise ValueError(f"unknown simulator {simulator!r}; use one of {SIMULATORS}")
    return simulate_mosaic(config)


def metric_prefixes(simulators: list[str]) -> list[tuple[str, str]]:
    """``(simulator, prefix)`` of the stored metrics: none for nominal, the sky's name else."""
    return [(sky, "" if sky == "nominal" else f"{sky}_") for sky in simulators]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="mosaic side in pixels")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(range(901, 907)),
        help="benchmark seeds (not training's)",
    )
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument(
        "--simulators",
        nargs="+",
        default=list(SIMULATORS),
        choices=SIMULATORS,
        help="skies to screen (default: all; nominal holds the targets)",
    )
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="network arithmetic (run option)"
    )
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="model config of the unet method"
    )
    parser.add_argument(
        "--flips", type=int, choices=(1, 2, 4), help="network passes per window (run option)"
    )
    parser.add_argument(
        "--check-method", default="unet", help="method held to the targets (default unet)"
    )
    parser.add_argument(
        "--write-metrics",
        action="store_true",
        help="store the unet metrics in the model config (its 'metrics' entry)",
    )
    args = parser.parse_args()

    methods = list(dict.fromkeys(args.methods))
    if "unet" in methods and not args.model.exists():
        print(f"note: unet skipped, no model config at {args.model} (train one first)")
        methods.remove("unet")
    if "unet" not in args.methods:
        print("note: unet not run (excluded by --methods)")
    model = str(args.model)
    simulators = list(dict.fromkeys(args.simulators))

    rows: list[dict[str, object]] = []
    tiles: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for simulator in simulators:
            for seed in args.seeds:
                sim = simulate(simulator, seed, args.size)
                sim_dir = Path(tmp) / f"{simulator}-{seed}"
                write_simulation(sim, sim_dir)
                for method in methods:
                    if method == "sep":
                        outputs, seconds = sep_outputs(sim)
                    elif method == "photutils":
                        outputs, seconds = photutils_outputs(sim)
                    else:
                        outputs, seconds = survey_seg_outputs(
                            sim_dir, method, model, args.precision, args.flips,
                            sim.config.psf_fwhm_pix,
                        )  # fmt: skip
                    metrics, tile_scores, tile_labels = score_outputs(
                        outputs, sim, WIDE_PSF.get(simulator, 1.0)
                    )
                    row = {"simulator": simulator, "seed": seed, "method": method}
                    row.update(metrics, seconds=seconds)
                    rows.append(row)
                    if method in SURVEY_SEG_METHODS:
                        tiles.setdefault((simulator, method), []).append((tile_scores, tile_labels))
                    print_row(row, header=len(rows) == 1)

    if not rows:
        print("nothing was run")
        return
    summary = summarise(rows, tiles)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print("\nmean over seeds (verdict_auc pools the tiles of all seeds; n/a = not applicable):")
        print(summary[list(METRICS)].T.to_string(float_format=_format, na_rep="n/a"))
        counts = [c for c in summary.columns if c.startswith("n_")]
        print(summary[counts].T.to_string(float_format=lambda v: f"{v:.1f}"))
        shifts = shift_table(summary)
        if len(shifts):
            print("\nshifted minus nominal:")
            print(shifts.to_string(float_format=lambda v: f"{v:+.4f}", na_rep="n/a"))

    items = checklist(summary, args.check_method, rows)
    if items:
        print(
            f"\ntargets of {args.check_method} (+- standard error from the scatter over "
            f"{len(args.seeds)} seeds, differences paired by seed):"
        )
        for item in items:
            print(format_item(item))
        counts = pd.Series([item["status"] for item in items]).value_counts()
        verdict = "FAIL" if counts.get("FAIL", 0) or counts.get("n/a", 0) else "PASS"
        print(
            f"  overall {verdict}: {counts.get('PASS', 0)} pass, {counts.get('FAIL', 0)} fail, "
            f"{counts.get('n/a', 0)} not measured"
        )
    else:
        print(f"\ntargets: {args.check_method} was not run on the nominal simulator; no checklist")

    if args.write_metrics and args.check_method == "unet" and "unet" in methods:
        model_config = json.loads(args.model.read_text())
        metrics = {}
        for simulator, prefix in metric_prefixes(simulators):
            if (simulator, "unet") in summary.index:
                values = summary.loc[(simulator, "unet"), list(METRICS)]
                metrics.update({prefix + k: v for k, v in values.items()})
        model_config["metrics"] = jsonable(
            {**metrics, "benchmark": {"script": "benchmarks/quality.py", "size": args.size,
                                      "seeds": args.seeds, "precision": _precision(args),
                                      "flips": _flips(args)}}
        )  # fmt: skip
        args.model.write_text(json.dumps(model_config, indent=2) + "\n")
        print(f"\nmetrics written to {args.model}")

    if args.json:
        mean = {
            simulator: {
                method: summary.loc[(simulator, method)].to_dict()
                for s, method in summary.index
                if s == simulator
            }
            for simulator in dict.fromkeys(s for s, _ in summary.index)
        }
        model_metrics: dict[str, object] = {}
        for simulator, prefix in metric_prefixes(simulators):
            if (simulator, args.check_method) in summary.index:
                values = summary.loc[(simulator, args.check_method), list(METRICS)]
                model_metrics.update({prefix + k: v for k, v in values.items()})
        document = {
            "settings": {
                "size": args.size,
                "seeds": args.seeds,
                "methods": methods,
                "simulators": simulators,
                "tile_size": TILE_SIZE,
                "model": model if args.check_method == "unet" else None,
                "check_method": args.check_method,
                "precision": _precision(args),
                "flips": _flips(args),
            },
            "runs": rows,
            "mean": mean,
            "shifted_minus_nominal": shift_table(summary).to_dict(),
            "checklist": items,
            "metrics": model_metrics,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jsonable(document), indent=2) + "\n")
        print(f"\nwrote {args.json}")


def _precision(args: argparse.Namespace) -> str:
    """The arithmetic the network ran in on this machine (``--precision`` resolved)."""
    import torch

    from survey_seg.inference import resolve_precision

    return str(resolve_precision(args.precision, torch.device("cpu"))).removeprefix("torch.")


def _flips(args: argparse.Namespace) -> int:
    """The network's passes per window (``--flips``, else the model config's)."""
    if args.flips is not None:
        return args.flips
    return int(json.loads(args.model.read_text()).get("test_time_flips", 1))


if __name__ == "__main__":
    main()
