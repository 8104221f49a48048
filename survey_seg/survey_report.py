"""The survey's report: its mosaics, and the quality map on the sky.

``OUT/report.html`` of a survey (:mod:`survey_seg.survey_run`) lists its mosaics
(status, failed tiles, link to each mosaic's own report where one was written)
and shows ``OUT/report/sky.png``: the HEALPix quality map's pixels coloured by
verdict (or flagged fraction), with every mosaic's footprint outlined, RA
increasing to the left as on the sky.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from survey_seg.errors import InputError
from survey_seg.files import atomic_write_bytes
from survey_seg.survey import MosaicFootprint

__all__ = ["SKY_PLOT", "SURVEY_REPORT", "make_survey_report"]

SURVEY_REPORT = "report.html"
"""The survey report, in the survey's output directory."""
SKY_PLOT = "report/sky.png"
"""The sky plot of the quality map, beside the report."""
VERDICT_COLOURS = {0: "#4caf50", 1: "#ffb300", 2: "#e53935", -1: "#9e9e9e"}
VERDICT_NAMES = {0: "accept", 1: "inspect", 2: "reject", -1: "none"}


def make_survey_report(out_dir: str | os.PathLike) -> Path:
    """Write ``OUT/report.html`` and ``OUT/report/sky.png`` for a survey run.

    Parameters
    ----------
    out_dir : path-like
        A survey's output directory (it holds ``survey.json``).

    Returns
    -------
    pathlib.Path
        The report.
    """
    out = Path(out_dir)
    manifest_path = out / "survey.json"
    if not manifest_path.is_file():
        raise InputError(
            f"{out} holds no survey.json, so it is not a survey's output directory; "
            "give the --out of `survey-seg run A.fits B.fits ...` (or a mosaic's run to "
            "`survey-seg report`)"
        )
    manifest = json.loads(manifest_path.read_text())
    footprints = [MosaicFootprint.from_record(m["footprint"]) for m in manifest["mosaics"]]
    map_path = out / manifest["products"]["quality_map"]["path"]
    pixels = _read_quality_map(map_path)
    (out / SKY_PLOT).parent.mkdir(exist_ok=True)
    atomic_write_bytes(out / SKY_PLOT, _sky_png(pixels, footprints, manifest))
    atomic_write_bytes(out / SURVEY_REPORT, _html(out, manifest).encode())
    return out / SURVEY_REPORT


def _read_quality_map(path: Path) -> dict[str, np.ndarray]:
    """Pixel index, verdict and flagged fraction of a survey's HEALPix map, with its order."""
    with fits.open(path) as hdus:
        table = hdus["QUALITY"]
        nside = int(table.header["NSIDE"])
        return {
            "pixel": np.asarray(table.data["PIXEL"], dtype=np.int64),
            "verdict": np.asarray(table.data["VERDICT"], dtype=np.int64),
            "flagged": np.asarray(table.data["FLAGGED"], dtype=np.float64),
            "nside": np.asarray(nside),
        }


def _sky_png(pixels: dict, footprints: list[MosaicFootprint], manifest: dict) -> bytes:
    """The map's pixel centres coloured by verdict, the footprints outlined."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import astropy.units as u
    import matplotlib.pyplot as plt
    from astropy_healpix import HEALPix
    from matplotlib.ticker import MaxNLocator

    healpix = HEALPix(nside=int(pixels["nside"]), order="nested")
    lon, lat = healpix.healpix_to_lonlat(pixels["pixel"])
    ra = _unwrapped(lon.to_value(u.deg))
    dec = lat.to_value(u.deg)
    figure, axis = plt.subplots(figsize=(7.0, 6.0), dpi=110)
    size = max(1.0, 4000.0 / max(len(ra), 1))
    for verdict, colour in VERDICT_COLOURS.items():
        chosen = pixels["verdict"] == verdict
        if chosen.any():
            axis.scatter(
                ra[chosen], dec[chosen], s=size, c=colour, marker="s", linewidths=0,
                label=f"{VERDICT_NAMES[verdict]} ({int(chosen.sum())} pixels)",
            )  # fmt: skip
    reference = float(np.median(ra)) if len(ra) else 0.0
    for footprint in footprints:
        boundary_ra, boundary_dec = footprint.boundary()
        boundary_ra = _near(np.append(boundary_ra, boundary_ra[0]), reference)
        axis.plot(boundary_ra, np.append(boundary_dec, boundary_dec[0]), color="k", lw=0.8)
        centre_ra = _near(np.array([footprint.center[0]]), reference)[0]
        axis.annotate(footprint.name, (centre_ra, footprint.center[1]), ha="center", fontsize=8)
    axis.invert_xaxis()  # RA increases to the left, as on the sky
    axis.xaxis.set_major_locator(MaxNLocator(5))
    axis.yaxis.set_major_locator(MaxNLocator(6))
    axis.set_xlabel("RA [deg]")
    axis.set_ylabel("Dec [deg]")
    order = manifest["products"]["quality_map"].get("order")
    axis.set_title(f"survey quality map (HEALPix order {order}, verdict per pixel)")
    axis.legend(loc="upper right", fontsize=7, markerscale=3)
    axis.set_aspect(1.0 / max(np.cos(np.radians(np.median(dec) if len(dec) else 0.0)), 1e-3))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _unwrapped(ra: np.ndarray) -> np.ndarray:
    """RA in degrees, continuous across 0/360 about its circular mean."""
    if not len(ra):
        return ra
    mean = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(ra)))))
    return _near(ra, mean)


def _near(ra: np.ndarray, reference: float) -> np.ndarray:
    """RA values shifted by multiples of 360 to lie within 180 deg of ``reference``."""
    return reference + (np.asarray(ra, dtype=float) - reference + 180.0) % 360.0 - 180.0


def _html(out: Path, manifest: dict) -> str:
    """The report page: totals, the mosaics' table, the sky plot."""
    products = manifest["products"]
    sources = products["catalogs"]["sources"]["n_rows"]
    clumps = products["catalogs"]["clumps"]["n_rows"]
    quality = products["quality_map"]
    rows = []
    for mosaic in manifest["mosaics"]:
        name = html.escape(mosaic["name"])
        report = out / mosaic["out"] / "report.html"
        link = f'<a href="{html.escape(mosaic["out"])}/report.html">{name}</a>'
        rows.append(
            f"<tr><td>{link if report.is_file() else name}</td>"
            f"<td>{html.escape(str(mosaic.get('status', '')))}</td>"
            f"<td>{int(mosaic.get('n_failed_tiles') or 0)}</td>"
            f"<td>{html.escape(str(mosaic.get('path', '')))}</td></tr>"
        )
    verdicts = ", ".join(f"{n} {v}" for v, n in quality.get("verdict_pixels", {}).items())
    injection = quality.get("injection")
    completeness = (
        f"<p>Injection-recovery in mosaics {html.escape(', '.join(injection['mosaics']))}: "
        f"completeness {injection['completeness']:.3f} of {injection['n_injected']} injected "
        "S/N &ge; 10 single objects (per tile in the map's <code>COMPLETENESS</code>).</p>"
        if injection
        else "<p>No injection run in the survey: the map has no completeness.</p>"
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>survey-seg survey report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:auto}}
td,th{{padding:2px 8px;text-align:left}}</style></head><body>
<h1>Survey of {len(manifest["mosaics"])} mosaics</h1>
<p>Status: {html.escape(str(manifest.get("status", "")))}; run {html.escape(manifest["run_id"])};
updated {html.escape(manifest.get("updated", ""))}.</p>
<p>Survey catalogs (each object once, from its primary mosaic): {sources} sources,
{clumps} clumps, in <code>catalogs/</code> (HATS). Primary rule: {
        html.escape(manifest.get("primary_rule", ""))
    }.</p>
<p>Quality map: HEALPix order {quality.get("order")}, {quality.get("n_pixels")} pixels
({verdicts}); covered {quality.get("covered_deg2", 0.0):.6g} deg&sup2;, accepted
{quality.get("accepted_deg2", 0.0):.6g} deg&sup2; (<code>{html.escape(quality["path"])}</code>,
<code>{html.escape(quality.get("moc", ""))}</code>).</p>
{completeness}
<img src="{SKY_PLOT}" alt="quality map on the sky" style="max-width:100%">
<h2>Mosaics</h2>
<table><tr><th>mosaic</th><th>status</th><th>failed tiles</th><th>input</th></tr>
{"".join(rows)}
</table></body></html>
"""
