"""Sky noise and PSF of the real images: the background mesh against SEP's, and the PSF fit.

For each FITS image with data in ``shared/data/real/`` (or those given): the
median background RMS and level of the mesh (``survey_seg.background``, 64-pixel
cells, clipped until convergence, and stopped after three rounds as before
2026-12-05), SEP's global RMS and level on the same 64-pixel mesh, the noise of
neighbouring-pixel differences (``1.4826 MAD / sqrt(2)``: the pixel noise, with
no confusion), and the PSF measured on the stars (:func:`survey_seg.psf.estimate_psf`).

In a crowded field the three-round RMS keeps the stars' wings (Spitzer, 2MASS);
the converged one is SEP's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import sep
from astropy.io import fits

from survey_seg.background import cell_statistics, finish_mesh
from survey_seg.psf import estimate_psf

REAL_DIR = Path(__file__).resolve().parents[2] / "shared/data/real"
CELL = 64


def sky_noise_row(name: str, image: np.ndarray) -> dict:
    """The row of one image: mesh RMS and level (converged, three rounds), SEP's, PSF."""
    image = np.asarray(image, dtype=np.float32)
    row: dict = {"image": name}
    for label, rounds in (("", 100), ("_3_rounds", 3)):
        level, rms, _ = cell_statistics(image, CELL, max_iter=rounds)
        mesh = finish_mesh(level, rms, CELL)
        row[f"rms{label}"] = float(np.median(mesh.rms))
        row[f"level{label}"] = float(np.median(mesh.level))
    filled = np.nan_to_num(image, nan=float(np.nanmedian(image))).astype(np.float64)
    background = sep.Background(filled, bw=CELL, bh=CELL)
    row["sep_rms"] = float(background.globalrms)
    row["sep_level"] = float(background.globalback)
    steps = np.diff(image, axis=1)
    steps = steps[np.isfinite(steps)]
    row["pixel_noise"] = float(1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2))
    estimate = estimate_psf(image)
    row["psf_fwhm_pix"] = estimate.fwhm_pix
    row["psf_beta"] = estimate.beta
    row["psf_stars"] = estimate.n_stars
    return row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", type=Path, help="FITS images (default: all real)")
    args = parser.parse_args(argv)
    paths = args.images or sorted(REAL_DIR.glob("*.fits"))
    rows = [sky_noise_row(path.stem, fits.getdata(path)) for path in paths]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return table


if __name__ == "__main__":
    main()
