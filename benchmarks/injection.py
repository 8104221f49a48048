"""Injection-recovery baseline: survey-seg (unet, classical) and SEP on the same injected pixels.

Every image of ``shared/data/real/`` that has a celestial WCS (the M13 frames
have none: they are skipped, and the table says so) and two simulated mosaics
(default 1024^2, seeds 901 and 902) get an injection run
(:func:`survey_seg.injection.run_injection`, default density and seed) for each
survey-seg method, and SEP runs on the very same injected pixels:

- survey-seg: the whole ``run_injection`` (ingest, injected run, negated run,
  matching), with the default tile size and halo;
- SEP: the ingested mosaic of the unet injection run plus the injected objects
  drawn over the whole image with :func:`survey_seg.inject.render_window` (same
  catalog, PSF, Moffat index and gain), then ``sep.Background`` (64-pixel mesh)
  and ``sep.extract`` at 1.5 sigma of the background RMS, minarea 5, 32
  deblending thresholds and contrast 0.005, as ``benchmarks/quality.py`` runs
  it; the same on the negated pixels for the spurious fraction. The share of
  injected light in each source's pixels (its segmentation) tells the pieces of
  an injected galaxy from the real objects under it, as for survey-seg.
  Its sources are matched with :func:`survey_seg.inject.match_injections` and
  scored with
  :func:`survey_seg.inject.injection_metrics` as survey-seg's are (SEP finds no
  clumps: its clump metrics are n/a).

Columns: ``psf_fwhm_pix`` the PSF the objects were drawn with and ``psf_from``
where it came from (``mosaic``: the mosaic's own PSF; ``training``: none was
found, the network's training PSF of 1.8 pix was used); ``completeness``
(single objects of S/N >= 10); ``pair_recall`` (all pairs, 1-3 FWHM apart, members
of S/N 5-100); ``pairs_t`` (the target's pairs: 1.3-2.5 FWHM apart, both members of
S/N >= 10); ``shattered`` (large objects
shattered / large objects), ``knotty`` and ``clumpy`` (the same of the knotty
irregulars and the clumpy hosts: each is one source, knots and clumps included);
``clump_c`` and ``clump_p`` (clump completeness and
purity); ``spurious`` (detections on the negated image over the unmatched
detections on the injected one); ``seconds`` (survey-seg: the whole injection
run, its two screenings; SEP: background and extraction of both images, the
rendering excluded).

Usage::

    python benchmarks/injection.py [--methods unet classical sep] [--sim-size 1024]
        [--sim-seeds 901 902] [--images NAME ...] [--seed 0 ...] [--density 400]
        [--json PATH]

With several ``--seed`` values each image gets one injection run per seed (one
row each, its ``seed`` in the table) and then a row ``seed`` = ``all``: every
fraction over the seeds' objects together (the per-seed fractions weighted by
their counts: singles, pairs, clumps, unmatched detections), the shattered large
galaxies summed. Injected objects land elsewhere with every seed, so eight seeds
measure what one seed's scatter hides.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from survey_seg.errors import InputError
from survey_seg.inject import (
    injected_fractions,
    injection_metrics,
    match_injections,
    real_peaks,
    render_window,
    source_light_sums,
)
from survey_seg.injection import DEFAULT_DENSITY, INJECTION_CATALOG, run_injection
from survey_seg.pipeline import RunConfig
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation
from survey_seg.store import MOSAIC_STORE, MosaicStore

REAL_DIR = Path(__file__).resolve().parents[2] / "shared/data/real"
SURVEY_SEG_METHODS = ("unet", "classical")
ALL_METHODS = (*SURVEY_SEG_METHODS, "sep")
COLUMNS = (
    ("image", "image", 28),
    ("method", "method", 9),
    ("seed", "seed", 4),
    ("psf_fwhm_pix", "psf_pix", 7),
    ("psf_from", "psf_from", 8),
    ("completeness", "compl", 6),
    ("pair_recall", "pairs", 6),
    ("pair_recall_resolved", "pairs_t", 7),
    ("shattered", "shattered", 9),
    ("knotty_shattered", "knotty", 6),
    ("clumpy_shattered", "clumpy", 6),
    ("clump_completeness", "clump_c", 7),
    ("clump_purity", "clump_p", 7),
    ("spurious_fraction", "spurious", 8),
    ("seconds", "seconds", 7),
)

SHATTERING_COLUMNS = {
    "shattered": "large",
    "knotty_shattered": "knotty",
    "clumpy_shattered": "clumpy",
}
"""Table columns of shattered / injected objects, and the kind each counts."""


def has_celestial_wcs(path: Path) -> bool:
    """Whether the first image HDU of a FITS file has a celestial WCS."""
    with warnings.catch_warnings(), fits.open(path) as hdus:
        warnings.simplefilter("ignore")
        for hdu in hdus:
            if hdu.data is not None and hdu.data.ndim >= 2:
                return bool(WCS(hdu.header).has_celestial)
    return False


def survey_seg_injection(
    mosaic: Path, out: Path, method: str, seed: int, density: float, model: str | None = None
) -> tuple[dict, str, float]:
    """``run_injection`` (default halo and tile size): its summary, its PSF's origin, seconds.

    ``model`` is the unet method's model config (default: the shipped one).
    """
    config = RunConfig(method=method, fits_copies=False, model=model)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_injection(mosaic, out, config, seed=seed, density=density)
    seconds = time.perf_counter() - start
    fallback = any("training PSF" in str(w.message) for w in caught)
    return summary, "training" if fallback else "mosaic", seconds


def sep_sources(image: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """SEP as benchmarks/quality.py runs it.

    Returns the ``id, x, y, x_peak, y_peak, flux, is_blended`` of its sources, its
    segmentation (the ``id`` of each pixel's source plus one; 0: sky), the
    background it subtracted and its noise sigma.
    """
    import sep

    mask = ~np.isfinite(image)
    data = np.where(mask, 0.0, image).astype(np.float64)
    background = sep.Background(data, mask=mask, bw=64, bh=64)
    level = background.back()
    data = data - level
    err = np.where(mask, np.inf, background.rms()).astype(np.float64)
    sep.set_extract_pixstack(10_000_000)
    sep.set_sub_object_limit(16_384)  # crowded fields (2MASS) overflow the default 1024
    objects, segmentation = sep.extract(
        data,
        1.5,
        err=err,
        mask=mask,
        minarea=5,
        deblend_nthresh=32,
        deblend_cont=0.005,
        segmentation_map=True,
    )
    table = pd.DataFrame(
        {
            "id": np.arange(len(objects), dtype=np.int64),
            "x": objects["x"],
            "y": objects["y"],
            "x_peak": objects["xpeak"],
            "y_peak": objects["ypeak"],
            "flux": objects["flux"],
            "is_blended": (objects["flag"] & sep.OBJ_MERGED) != 0,
        }
    )
    return table, segmentation, level, err


def sep_injection(run_dir: Path, summary: dict) -> tuple[dict, float]:
    """SEP on the injected pixels of an injection run and on their negation."""
    catalog = pd.read_parquet(run_dir / INJECTION_CATALOG)
    psf = float(summary["psf_fwhm_pix"])
    image = np.asarray(MosaicStore(run_dir / MOSAIC_STORE).image[:], dtype=np.float64)
    beta = float(summary["psf_beta"])
    rendered = render_window(
        catalog, (0, 0), image.shape, psf_fwhm_pix=psf, psf_beta=beta, gain=summary["gain"],
        seed=summary["seed"],
    )  # fmt: skip
    injected = image + rendered.image
    start = time.perf_counter()
    sources, segmentation, background, rms = sep_sources(injected)
    negative, _, _, _ = sep_sources(-image)
    seconds = time.perf_counter() - start
    light = source_light_sums(segmentation, rendered.image, image - background)
    light["id"] -= 1  # SEP labels its pixels with the source's index plus one
    sources["injected_fraction"] = sources["id"].map(injected_fractions(light)).fillna(0.0)
    sources["on_real_peak"] = real_peaks(
        sources["x_peak"], sources["y_peak"], rendered.image, image - background, rms
    )
    clumps = pd.DataFrame({"host_id": [], "x": [], "y": []})
    matched = match_injections(catalog, sources, clumps, psf_fwhm_pix=psf, skipped=rendered.skipped)
    metrics = injection_metrics(
        matched, clumps, psf_fwhm_pix=psf, n_sources=len(sources), n_negative=len(negative)
    )
    metrics["clump_purity"] = None  # SEP finds no clumps: neither metric applies
    metrics["clump_completeness"] = None
    return metrics, seconds


def table_row(
    image: str, method: str, summary: dict, psf_from: str, seconds: float, seed: int | str
) -> dict:
    """One table row from an injection summary."""
    return {
        "image": image,
        "method": method,
        "seed": seed,
        "psf_fwhm_pix": summary["psf_fwhm_pix"],
        "psf_from": psf_from,
        "completeness": summary["completeness"],
        "pair_recall": summary["pair_recall"],
        "pair_recall_resolved": summary["pair_recall_resolved"],
        **{
            column: f"{summary[f'{kind}_shattered']}/{summary[f'{kind}_total']}"
            for column, kind in SHATTERING_COLUMNS.items()
        },
        "clump_completeness": summary["clump_completeness"],
        "clump_purity": summary["clump_purity"],
        "spurious_fraction": summary["spurious_fraction"],
        "seconds": seconds,
        "n_injected": summary["n_injected"],
        "counts": counts(summary),
    }


def counts(summary: dict) -> dict[str, int]:
    """What each fraction of a summary is a fraction of (for pooling seeds)."""
    return {
        "completeness": summary.get("n_completeness", 0),
        "pair_recall": summary.get("n_pairs", 0),
        "pair_recall_resolved": summary.get("n_pairs_resolved", 0),
        "clump_completeness": summary.get("n_clumps_injected", 0),
        "clump_purity": summary.get("n_clumps_in_hosts", 0),
        "spurious_fraction": summary.get("n_unmatched", 0),
    }


def pooled_row(rows: list[dict]) -> dict:
    """The row of several seeds' rows of one image and method: fractions over all objects."""
    row = {**rows[0], "seed": "all", "seconds": sum(r["seconds"] for r in rows)}
    for key in rows[0]["counts"]:
        weights = [r["counts"][key] for r in rows if r[key] is not None]
        values = [r[key] for r in rows if r[key] is not None]
        row[key] = float(np.average(values, weights=weights)) if sum(weights) > 0 else None
    for column in SHATTERING_COLUMNS:
        shattered = [tuple(map(int, r[column].split("/"))) for r in rows]
        row[column] = f"{sum(s for s, _ in shattered)}/{sum(t for _, t in shattered)}"
    row["n_injected"] = sum(r["n_injected"] for r in rows)
    row["counts"] = {key: sum(r["counts"][key] for r in rows) for key in rows[0]["counts"]}
    return row


def _format(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_row(row: dict, header: bool) -> None:
    """One line of the table (with its header first)."""
    if header:
        print(" ".join(f"{label:>{width}}" for _, label, width in COLUMNS))
    print(" ".join(f"{_format(row[key]):>{width}}" for key, _, width in COLUMNS), flush=True)


def mosaics(
    work: Path, images: list[str] | None, sim_size: int, sim_seeds: list[int]
) -> tuple[list[tuple[str, Path]], list[str]]:
    """The mosaics to inject into, as ``(name, path)``, and the real images skipped."""
    available = sorted(REAL_DIR.glob("*.fits"))
    unknown = sorted(set(images or ()) - {p.name for p in available} - {p.stem for p in available})
    if unknown or (images is None and not available):
        wanted = ", ".join(unknown) if unknown else "at all"
        names = ", ".join(p.stem for p in available) or "none"
        raise SystemExit(
            f"no real image {wanted} in {REAL_DIR} (found: {names}); the benchmark "
            "reads the images of shared/data/real beside the repository: run it from a "
            "checkout that has them, or name one of those found."
        )
    chosen: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for path in available:
        if images and path.name not in images and path.stem not in images:
            continue
        if has_celestial_wcs(path):
            chosen.append((path.stem, path))
        else:
            skipped.append(path.name)
    for seed in sim_seeds:
        sim = simulate_mosaic(SimulationConfig(size=sim_size, seed=seed))
        written = write_simulation(sim, work / f"sim-{seed}")
        chosen.append((f"sim{sim_size}-{seed}", Path(written["mosaic"])))
    return chosen, skipped


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(ALL_METHODS))
    parser.add_argument("--images", nargs="*", default=None, help="real images (default all)")
    parser.add_argument("--sim-size", type=int, default=1024)
    parser.add_argument("--sim-seeds", type=int, nargs="*", default=[901, 902])
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="injection catalog seed(s)"
    )
    parser.add_argument("--density", type=float, default=DEFAULT_DENSITY)
    parser.add_argument("--json", type=Path, default=None, help="write the table here")
    parser.add_argument("--model", default=None, help="model config of the unet method")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="survey-seg-injection-") as tmp:
        work = Path(tmp)
        chosen, skipped = mosaics(work, args.images, args.sim_size, args.sim_seeds)
        for name in skipped:
            print(f"skipped {name}: no celestial WCS, nothing can be injected", flush=True)
        runs = [m for m in SURVEY_SEG_METHODS if m in args.methods]
        if "sep" in args.methods and not runs:
            runs = ["classical"]  # SEP needs an injection run's catalog and pixels
        for name, path in chosen:
            by_method: dict[str, list[dict]] = {}
            for seed in args.seed:
                for row in _seed_rows(name, path, work / str(seed), runs, seed, args, failures):
                    rows.append(row)
                    by_method.setdefault(row["method"], []).append(row)
                    print_row(row, header=len(rows) == 1)
            if len(args.seed) > 1:
                for method_rows in by_method.values():
                    rows.append(pooled_row(method_rows))
                    print_row(rows[-1], header=False)
    if args.json is not None:
        args.json.write_text(
            json.dumps({"rows": rows, "skipped": skipped, "failures": failures}, indent=2)
        )
    return rows


def _seed_rows(
    name: str,
    path: Path,
    work: Path,
    runs: list[str],
    seed: int,
    args: argparse.Namespace,
    failures: list[str],
) -> list[dict]:
    """The table rows of one image and one injection seed (SEP's on the first run's pixels)."""
    rows: list[dict] = []
    reference: tuple[Path, dict, str] | None = None
    for method in runs:
        out = work / f"{name}-{method}"
        try:
            summary, psf_from, seconds = survey_seg_injection(
                path, out, method, seed, args.density, args.model if method == "unet" else None
            )
        except InputError as error:
            failures.append(f"{name} {method} seed {seed}: {error}")
            print(f"failed {name} {method} seed {seed}: {error}", flush=True)
            continue
        reference = reference or (out, summary, psf_from)
        if method in args.methods:
            rows.append(table_row(name, method, summary, psf_from, seconds, seed))
    if "sep" in args.methods and reference is not None:
        out, summary, psf_from = reference
        metrics, seconds = sep_injection(out, summary)
        rows.append(table_row(name, "sep", {**summary, **metrics}, psf_from, seconds, seed))
    return rows


if __name__ == "__main__":
    main()
