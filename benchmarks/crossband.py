"""Cosmic rays on real pixels, checked across bands: SDSS g, r and i of one field.

The three SDSS images of ``shared/data/real/`` share one pixel grid. A cosmic ray
hits one exposure, so one band; a star or a galaxy is in all three. Each band is
screened (:func:`survey_seg.pipeline.run_survey`, default method and model); the
CR plane's connected regions that no source covers are what the screening
dropped as cosmic rays. SEP (``sep.extract`` at 5 sigma of the global background
RMS, minarea 1) then looks at the same place, within 1.5 pix, in the two other
bands: a region seen in both is a real object taken for a cosmic ray.

Columns: ``band``; ``sources`` (catalogued); ``cr_regions`` (CR regions without a
source); ``seen_in_<b>`` (of those, detected in band ``b``); ``seen_in_both``;
``seen_in_neither`` (cosmic rays, hot pixels, or objects of one band only).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sep
import zarr
from scipy import ndimage
from scipy.spatial import cKDTree

from survey_seg.masks import MaskBit
from survey_seg.pipeline import RunConfig, run_survey

REAL_DIR = Path(__file__).resolve().parents[2] / "shared/data/real"
BANDS = ("g", "r", "i")
MATCH_PIX = 1.5


def screen(band: str, out: Path, model: str | None) -> tuple[int, np.ndarray, np.ndarray]:
    """Sources, CR regions without a source ``(x, y)`` and SEP detections ``(x, y)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_survey(
            REAL_DIR / f"reprojected_sdss_{band}.fits",
            out,
            RunConfig(method="unet", model=model, fits_copies=False),
        )
    masks = zarr.open_group(str(out / "masks.zarr"), mode="r")
    mask, segmentation = masks["mask"][:], masks["segmentation"][:]
    image = zarr.open_group(str(out / "mosaic.zarr"), mode="r")["image"][:].astype(np.float64)
    image = np.nan_to_num(image)
    regions, n = ndimage.label((mask & np.uint32(MaskBit.CR)) != 0, structure=np.ones((3, 3), bool))
    peaks = np.array(ndimage.maximum_position(image, regions, np.arange(1, n + 1))).reshape(-1, 2)
    alone = segmentation[peaks[:, 0], peaks[:, 1]] == 0 if n else np.zeros(0, bool)
    background = sep.Background(image)
    found = sep.extract(image - background, 5.0, err=background.globalrms, minarea=1)
    n_sources = len(pd.read_parquet(out / "sources.parquet", columns=["id"]))
    return n_sources, peaks[alone][:, ::-1].astype(float), np.c_[found["x"], found["y"]]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model config (default: the shipped one)")
    args = parser.parse_args(argv)
    screened = {}
    with tempfile.TemporaryDirectory() as tmp:
        for band in BANDS:
            screened[band] = screen(band, Path(tmp) / band, args.model)
    rows = []
    for band in BANDS:
        n_sources, cosmic_rays, _ = screened[band]
        row: dict[str, object] = {"band": band, "sources": n_sources}
        row["cr_regions"] = len(cosmic_rays)
        seen = []
        for other in BANDS:
            row[f"seen_in_{other}"] = "-"
            if other != band:
                distance = cKDTree(screened[other][2]).query(cosmic_rays)[0]
                seen.append(distance < MATCH_PIX)
                row[f"seen_in_{other}"] = int(seen[-1].sum())
        row["seen_in_both"] = int((seen[0] & seen[1]).sum())
        row["seen_in_neither"] = int((~seen[0] & ~seen[1]).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
