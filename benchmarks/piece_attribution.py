"""How well the injection test tells a real object under an injected one from a piece of it.

An injected galaxy is shattered when more than one source of its own lies in its
reach (:func:`survey_seg.inject.match_injections`). A source of mostly injected
light (``injected_fraction`` >= 0.5) that matches no injected object is a
candidate piece; its peak decides whether it is a real object that the injection
fell on (``on_real_peak``, :func:`survey_seg.inject.real_peaks`). This script
checks that decision against an independent reference: the same image screened
without injection. A candidate within ``--radius`` pixels (default 1) of a source
found there is a real object.

For every real image with a celestial WCS (``shared/data/real/``) and every
injection seed: the shipped network screens the image alone and runs an
injection (:func:`survey_seg.injection.run_injection`); the table gives the
candidates, how many lie on a source of the plain screening (``on_plain``), and
of those the test calls real (``real_on_plain``: agreement) and of the others
(``real_elsewhere``: a piece the test excuses), and ``real_on_plain_3x3`` and
``real_elsewhere_3x3``, the same were the light compared over the 3 x 3 pixels
around the peak instead of in the peak pixel.

Usage::

    python benchmarks/piece_attribution.py [--images NAME ...] [--seed 1 ...] [--radius 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from injection import REAL_DIR, has_celestial_wcs  # benchmarks/injection.py, beside this script
from scipy import ndimage
from scipy.spatial import cKDTree

from survey_seg.inject import MIN_INJECTED_LIGHT, MIN_REAL_PEAK_SNR, render_window
from survey_seg.injection import (
    INJECTION_CATALOG,
    INJECTION_TABLE,
    attribute_sources,
    run_injection,
)
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.store import MOSAIC_STORE, MosaicStore
from survey_seg.tiling import Tile


def candidate_pieces(out: Path) -> pd.DataFrame:
    """The sources of an injection run of mostly injected light that match no object.

    Each with ``on_real_peak`` and ``on_real_peak_3x3`` (the light compared over
    the 3 x 3 pixels around the peak rather than in its pixel).
    """
    summary = json.loads((out / "injection.json").read_text())
    catalog = pd.read_parquet(out / INJECTION_CATALOG)
    sources = pd.read_parquet(out / "sources.parquet")
    attribution = attribute_sources(
        out,
        catalog,
        sources,
        psf_fwhm_pix=float(summary["psf_fwhm_pix"]),
        psf_beta=float(summary["psf_beta"]),
    )
    sources = pd.concat([sources, attribution], axis=1)
    matched = set(pd.read_parquet(out / INJECTION_TABLE)["matched_source_id"])
    pieces = sources[
        (sources["injected_fraction"] >= MIN_INJECTED_LIGHT) & ~sources["id"].isin(matched)
    ].copy()
    pieces["on_real_peak_3x3"] = _real_peaks_3x3(out, catalog, pieces, summary)
    return pieces


def _real_peaks_3x3(out: Path, catalog: pd.DataFrame, pieces: pd.DataFrame, summary: dict):
    """``real_peaks`` with the light compared over the 3 x 3 pixels (the whole image at once)."""
    mosaic = MosaicStore(out / MOSAIC_STORE)
    ny, nx = mosaic.shape
    whole = Tile(index=0, row=0, col=0, y0=0, y1=ny, x0=0, x1=nx, halo=1, mosaic_shape=(ny, nx))
    window = mosaic.read_window(whole)
    injected = render_window(
        catalog,
        whole.origin,
        window.image.shape,
        psf_fwhm_pix=float(summary["psf_fwhm_pix"]),
        psf_beta=float(summary["psf_beta"]),
    ).image.astype(np.float64)
    own = np.nan_to_num(window.image - window.background)
    noise = np.sqrt(ndimage.uniform_filter(np.nan_to_num(window.variance), 3) * 9)
    own_sum, injected_sum = (ndimage.uniform_filter(a, 3) * 9 for a in (own, injected))
    at = (pieces["y_peak"].to_numpy() + 1, pieces["x_peak"].to_numpy() + 1)
    return (own_sum[at] > injected_sum[at]) & (own_sum[at] >= MIN_REAL_PEAK_SNR * noise[at])


def check_image(path: Path, work: Path, seed: int, radius: float) -> dict:
    """One image and seed: the candidates and how the peak test calls them."""
    config = RunConfig(fits_copies=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_survey(path, work / "plain", config)
        run_injection(path, work / "injected", config, seed=seed)
    plain = pd.read_parquet(work / "plain" / "sources.parquet")
    pieces = candidate_pieces(work / "injected")
    distance, _ = cKDTree(plain[["x", "y"]].to_numpy()).query(pieces[["x", "y"]].to_numpy())
    on_plain = distance <= radius
    row = {"image": path.stem, "seed": seed, "candidates": len(pieces)}
    row["on_plain"] = int(on_plain.sum())
    for suffix, column in (("", "on_real_peak"), ("_3x3", "on_real_peak_3x3")):
        real = pieces[column].to_numpy(dtype=bool)
        row[f"real_on_plain{suffix}"] = int((real & on_plain).sum())
        row[f"real_elsewhere{suffix}"] = int((real & ~on_plain).sum())
    return row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="*", default=None, help="real images (default all)")
    parser.add_argument("--seed", type=int, nargs="+", default=[1], help="injection seed(s)")
    parser.add_argument("--radius", type=float, default=1.0, help="pixels to a plain source")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="survey-seg-pieces-") as tmp:
        for path in sorted(REAL_DIR.glob("*.fits")):
            if args.images and path.name not in args.images and path.stem not in args.images:
                continue
            if not has_celestial_wcs(path):
                continue
            for seed in args.seed:
                rows.append(check_image(path, Path(tmp) / f"{path.stem}-{seed}", seed, args.radius))
                print(f"checked {path.stem}, seed {seed}", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
