"""Quick-look report of a finished run: ``OUT/report.html`` and PNGs under ``OUT/report/``.

:func:`make_report` reads only what a run wrote (``mosaic.zarr``, ``masks.zarr``,
``sources.parquet``, ``clumps.parquet``, ``tiles.parquet`` and ``manifest.json``)
and draws six figures:

``mosaic_mask.png``
    The mosaic (asinh stretch) with the artefact planes and the tile grid, binned
    further until it fits :data:`MOSAIC_PANEL_PX`; the caption gives the binning
    and the mosaic pixels per PNG pixel, measured on the drawn figure. Beside it,
    ``mosaic_mask_full.png`` holds the mosaic and its planes at one PNG pixel per
    mosaic pixel (up to :data:`FULL_RESOLUTION_MAX_PIXELS`), written by strips.
``quality_map.png``
    Per-tile artefact and no-data fractions, the data-quality classifier's own
    estimate of the flagged fraction (network runs) and the tile verdicts.
``segmentation.png``
    The segmentation map, blended sources in hot colours, and a zoom on the most
    crowded region.
``clumps_gallery.png``
    Cut-outs of the hosts with the most (and most probable) clumps.
``rejected_gallery.png``
    Cut-outs of the rejected tiles (or of the worst tiles when none was rejected).
``histograms.png``
    Catalog distributions: magnitude, size, S/N and number of clumps.

A run of ``survey-seg inject`` (``injection.json`` beside the outputs) gets an
"Injection-recovery" section: the summary and :data:`INJECTION_FIGURES`
(completeness against S/N and magnitude, pair recall against separation, a
gallery of shattered large galaxies, completeness per tile).

Mosaics larger than ``max_pixels`` on a side are binned while they are read, one
strip of rows at a time: image pixels are averaged, mask planes are OR-ed (so a
one-pixel cosmic ray stays visible) and segmentation ids are sampled. The
whole-mosaic figures follow the mosaic's aspect ratio and are laid out around
their WCS labels (constrained layout), and every PNG is cut to its content plus
a margin, so no label is clipped. Only matplotlib's object-oriented API with
the Agg canvas is used; the global pyplot state is never touched. Arrays are
``(y, x)`` with 0-based mosaic pixels.
"""

from __future__ import annotations

import html
import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from astropy.visualization import AsinhStretch, ImageNormalize
from astropy.wcs import WCS
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch, Rectangle

from survey_seg.errors import OutputError
from survey_seg.files import atomic_output
from survey_seg.masks import MaskBit, describe_bits
from survey_seg.store import (
    MASKS_STORE,
    MOSAIC_STORE,
    PSF_MEASURED,
    REPORT_DIR,
    REPORT_HTML,
    MosaicStore,
    OutputStore,
    atomic_write_bytes,
    check_no_links,
)

__all__ = ["FIGURES", "FULL_RESOLUTION_FIGURE", "INJECTION_FIGURES", "make_report"]

FIGURES: tuple[str, ...] = (
    "mosaic_mask.png",
    "quality_map.png",
    "segmentation.png",
    "clumps_gallery.png",
    "rejected_gallery.png",
    "histograms.png",
)
"""File names of the report's PNGs, in the order the HTML shows them."""

REQUIRED = (
    "manifest.json",
    MOSAIC_STORE,
    MASKS_STORE,
    "sources.parquet",
    "clumps.parquet",
    "tiles.parquet",
)

# Overlay colours of the artefact planes: none of them green, orange or red, which the
# tile outlines use for the verdicts.
PLANE_COLOURS: dict[str, str] = {
    "NO_DATA": "#2a4bff",
    "BAD": "#ffe600",
    "SAT": "#ff00ff",
    "CR": "#00e5ff",
    "STREAK": "#a066ff",
    "GHOST": "#ffa8d8",
}
PLANE_LABELS: dict[str, str] = {
    "NO_DATA": "no valid data (NaN, zero weight)",
    "BAD": "bad column / hot pixel",
    "SAT": "saturated, bleed trail",
    "CR": "cosmic ray",
    "STREAK": "satellite / asteroid trail",
    "GHOST": "ghost / scattered light",
}
PLANE_ALPHA: dict[str, float] = {
    "NO_DATA": 0.75,
    "BAD": 0.85,
    "SAT": 0.7,
    "CR": 1.0,
    "STREAK": 0.75,
    "GHOST": 0.45,
}
VERDICT_COLOURS: dict[str, str] = {
    "accept": "#2ca02c",
    "inspect": "#ff9f1c",
    "reject": "#e8112d",
    "failed": "#9e9e9e",
}
BLENDED_COLOUR = "#ff7b00"
ISOLATED_COLOUR = "#5b8fd6"
DPI = 110

FULL_RESOLUTION_FIGURE = "mosaic_mask_full.png"
"""The mosaic and its artefact planes, one PNG pixel per mosaic pixel, beside the figures."""
FULL_RESOLUTION_MAX_PIXELS = 8192 * 8192
"""Largest mosaic (ny * nx) of which :data:`FULL_RESOLUTION_FIGURE` is written; above it
the PNG (over 200 MB of RGB) is left out and the report says so."""
MOSAIC_PANEL_PX: tuple[int, int] = (780, 840)
"""Largest (width, height) in PNG pixels of the image in ``mosaic_mask.png``. The binned
mosaic is binned further until it fits, so that no pixel is dropped by resampling."""
TILE_ID_MIN_POINTS = 6.0
"""Smallest font size (points) of the tile ids on ``mosaic_mask.png``; tiles too small
on screen for it are not labelled, and the caption says so."""


@dataclass(frozen=True)
class _Binned:
    """The mosaic, its mask and segmentation at the report's resolution."""

    image: np.ndarray
    mask: np.ndarray
    segmentation: np.ndarray
    step: int
    wcs: WCS
    full_wcs: WCS
    shape: tuple[int, int]


@dataclass(frozen=True)
class _MosaicScale:
    """How ``mosaic_mask.png`` draws the mosaic, measured on the drawn figure."""

    factor: int
    """Mosaic pixels per drawn pixel on a side (read binning times display binning)."""
    png_per_bin: float
    """PNG pixels per drawn (binned) pixel on a side."""
    tile_note: str
    """Why some or all tile ids are not drawn (empty when all are)."""

    @property
    def mosaic_per_png(self) -> float:
        """Mosaic pixels per PNG pixel on a side."""
        return self.factor / self.png_per_bin


class _Run:
    """Lazy access to the outputs of one run (the only reader of its files here)."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir
        self.manifest = _read_manifest(out_dir)
        try:
            self.mosaic = MosaicStore(out_dir / MOSAIC_STORE)
            self._image = self.mosaic.image
            self._mask, self._segmentation = OutputStore(out_dir).open_masks()
            self.sources = pd.read_parquet(out_dir / "sources.parquet")
            self.clumps = pd.read_parquet(out_dir / "clumps.parquet")
            self.tiles = pd.read_parquet(out_dir / "tiles.parquet")
        except (OSError, KeyError, ValueError) as error:
            raise OutputError(
                f"{out_dir} holds an unreadable run output ({type(error).__name__}: "
                f"{str(error)[:160]}); rerun `survey-seg run ... --clean` to rewrite it"
            ) from None
        self.shape: tuple[int, int] = tuple(int(n) for n in self._image.shape)  # type: ignore[assignment]
        self.wcs = self.mosaic.wcs
        self.pixel_scale = float(self.mosaic.pixel_scale_arcsec)

    def window(
        self, y0: int, y1: int, x0: int, x1: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full-resolution image, mask and segmentation of a window (clipped to the mosaic)."""
        ys = slice(max(0, y0), min(self.shape[0], y1))
        xs = slice(max(0, x0), min(self.shape[1], x1))
        return (
            np.asarray(self._image[ys, xs], dtype=np.float32),
            np.asarray(self._mask[ys, xs]),
            np.asarray(self._segmentation[ys, xs]),
        )

    def binned(self, max_pixels: int) -> _Binned:
        """Read the whole mosaic binned so that neither side exceeds ``max_pixels``."""
        ny, nx = self.shape
        step = max(1, math.ceil(max(ny, nx) / max_pixels))
        image = _block_reduce(self._image, step, "mean")
        mask = _block_reduce(self._mask, step, "or")
        offset = (step - 1) // 2
        segmentation = np.asarray(self._segmentation[offset::step, offset::step])
        segmentation = segmentation[: image.shape[0], : image.shape[1]]
        wcs = self.wcs if step == 1 else self.wcs.slice((slice(None, None, step),) * 2)
        return _Binned(image, mask, segmentation, step, wcs, self.wcs, self.shape)


def make_report(
    out_dir: str | os.PathLike,
    *,
    max_pixels: int = 2048,
    title: str | None = None,
) -> Path:
    """Write the quick-look report of a finished run.

    Parameters
    ----------
    out_dir : str or path-like
        Output directory of ``survey-seg run`` (holding ``manifest.json``).
    max_pixels : int
        Largest side, in pixels, of the whole-mosaic images; bigger mosaics are
        binned by an integer factor while they are read (``mosaic_mask.png``
        bins further to fit its panel and says by how much).
    title : str, optional
        Title of the page; by default one naming the input mosaic.

    Returns
    -------
    pathlib.Path
        ``OUT/report.html``; the PNGs are in ``OUT/report/``, with
        :data:`FULL_RESOLUTION_FIGURE` for mosaics of at most
        :data:`FULL_RESOLUTION_MAX_PIXELS` pixels (an older one is removed
        otherwise).

    Raises
    ------
    TypeError, ValueError
        ``max_pixels`` is not an integer >= 16, or ``title`` is not a string.
    OutputError
        ``out_dir`` is not the directory of a finished run (a file is missing or
        unreadable).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
        raise TypeError(f"max_pixels={max_pixels!r} is not an integer; pass e.g. 2048")
    if max_pixels < 16:
        raise ValueError(f"max_pixels={max_pixels} is too small; pass 16 or more")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title={title!r} is not a string; pass a str or None")
    out = Path(out_dir)
    _check_run_dir(out)
    check_no_links(out, (REPORT_HTML, REPORT_DIR))
    run = _Run(out)
    figure_dir = out / REPORT_DIR
    figure_dir.mkdir(exist_ok=True)
    binned = run.binned(int(max_pixels))
    thresholds = _thresholds(run.manifest)
    notes: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks, empty slices
        figure, scale = _figure_mosaic(run, binned)
        _save(figure, figure_dir / "mosaic_mask.png")
        notes["mosaic"] = _mosaic_note(run, scale)
        notes["full"] = _write_full_resolution(run, figure_dir / FULL_RESOLUTION_FIGURE)
        _save(_figure_quality(run, binned, thresholds), figure_dir / "quality_map.png")
        figure, notes["segmentation"] = _figure_segmentation(run, binned)
        _save(figure, figure_dir / "segmentation.png")
        figure, notes["clumps"] = _figure_clumps(run)
        _save(figure, figure_dir / "clumps_gallery.png")
        figure, notes["rejected"] = _figure_rejected(run)
        _save(figure, figure_dir / "rejected_gallery.png")
        _save(_figure_histograms(run), figure_dir / "histograms.png")
        injection = _read_injection(out)
        if injection is not None:
            recovery, shattered, per_tile = INJECTION_FIGURES
            figure, notes[recovery] = _figure_injection_recovery(injection)
            _save(figure, figure_dir / recovery)
            figure, notes[shattered] = _figure_injection_shattered(run, injection)
            _save(figure, figure_dir / shattered)
            _save(_figure_injection_tiles(injection, binned), figure_dir / per_tile)
    page = _html(run, binned, title, notes, thresholds, injection)
    path = out / REPORT_HTML
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- reading


def _check_run_dir(out: Path) -> None:
    if not out.is_dir():
        raise OutputError(
            f"{out} is not a directory; pass the --out directory of a `survey-seg run`"
        )
    if not (out / "manifest.json").is_file():
        raise OutputError(
            f"{out} holds no manifest.json, so it is not a survey-seg run directory; "
            "pass the --out directory of a `survey-seg run`"
        )
    missing = [name for name in REQUIRED if not (out / name).exists()]
    if missing:
        raise OutputError(
            f"{out} lacks {', '.join(missing)}: the run did not finish; "
            "finish it with `survey-seg run ... --resume` before making the report"
        )


def _read_manifest(out: Path) -> dict[str, Any]:
    manifest = OutputStore(out).read_manifest()
    if not isinstance(manifest, dict):
        raise OutputError(
            f"{out / 'manifest.json'} is not a run manifest; rerun with --clean to rewrite it"
        )
    return manifest


def _block_reduce(array: Any, step: int, how: str) -> np.ndarray:
    """Bin a 2-D (Zarr) array by ``step``, reading one strip of rows at a time.

    ``how`` is ``"mean"`` (NaN-aware mean, float32) or ``"or"`` (bitwise OR).
    The output has ``ceil(n / step)`` pixels on each axis; output pixel ``i``
    covers input pixels ``i * step`` to ``i * step + step - 1``.
    """
    ny, nx = (int(n) for n in array.shape)
    if step == 1:
        data = np.asarray(array[...])
        return data.astype(np.float32, copy=False) if how == "mean" else data
    strip = step * max(1, math.ceil(256 / step))
    nxb = math.ceil(nx / step)
    rows = []
    for y0 in range(0, ny, strip):
        block = np.asarray(array[y0 : min(ny, y0 + strip), :])
        h = block.shape[0]
        hb = math.ceil(h / step)
        pad = ((0, hb * step - h), (0, nxb * step - nx))
        if how == "mean":
            block = np.pad(block.astype(np.float32, copy=False), pad, constant_values=np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # blocks without data: NaN
                rows.append(np.nanmean(block.reshape(hb, step, nxb, step), axis=(1, 3)))
        else:
            block = np.pad(block, pad, constant_values=0)
            rows.append(np.bitwise_or.reduce(block.reshape(hb, step, nxb, step), axis=(1, 3)))
    return np.concatenate(rows).astype(np.float32 if how == "mean" else array.dtype, copy=False)


def _thresholds(manifest: dict[str, Any]) -> dict[str, float]:
    """Inspect and reject fractions of the method, when its provenance records them."""
    found: dict[str, float] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("inspect_fraction", "reject_fraction") and isinstance(
                    value, int | float
                ):
                    found.setdefault(key, float(value))
                else:
                    visit(value)

    visit(manifest.get("method", {}))
    return found


# --------------------------------------------------------------------------- drawing helpers


def _new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    """Write a PNG atomically (a link planted at ``path`` is replaced, not followed).

    The PNG is cut to the figure's artists plus a margin of 0.1 inch, as
    ``bbox_inches="tight"`` does, so a label reaching past the figure's edge is
    never clipped; the scale is unchanged. A figure that is drawn as it stands
    (the laid-out WCS figures are) and lies within its canvas is cut out of the
    canvas instead of being drawn again.
    """
    import io

    from PIL import Image

    if figure.stale:
        figure.canvas.draw()
    tight = figure.get_tightbbox(figure.canvas.get_renderer())
    width, height = figure.get_size_inches()
    buffer = io.BytesIO()
    inside = tight.x0 >= 0 and tight.y0 >= 0 and tight.x1 <= width and tight.y1 <= height
    if inside and figure.dpi == DPI:
        rgba = np.asarray(figure.canvas.buffer_rgba())
        ny, nx = rgba.shape[:2]
        top, bottom = height - tight.y1 - 0.1, height - tight.y0 + 0.1  # inches from the top
        y0, y1 = math.floor(top * DPI), math.ceil(bottom * DPI)
        x0, x1 = math.floor((tight.x0 - 0.1) * DPI), math.ceil((tight.x1 + 0.1) * DPI)
        rgb = rgba[max(0, y0) : min(ny, y1), max(0, x0) : min(nx, x1), :3]
        margins = ((max(0, -y0), max(0, y1 - ny)), (max(0, -x0), max(0, x1 - nx)), (0, 0))
        Image.fromarray(np.pad(rgb, margins, constant_values=255)).save(buffer, format="png")
    else:
        box = tight.padded(0.1)
        figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches=box)
    atomic_write_bytes(path, buffer.getvalue())


def _norm(image: np.ndarray) -> ImageNormalize:
    """Asinh stretch from just below the sky to the bright end of the finite pixels."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return ImageNormalize(vmin=0.0, vmax=1.0, stretch=AsinhStretch(0.1))
    if finite.size > 1_000_000:
        finite = finite[:: finite.size // 1_000_000]
    sky = float(np.median(finite))
    sigma = 1.4826 * float(np.median(np.abs(finite - sky)))
    if not sigma > 0:
        sigma = float(np.std(finite)) or 1.0
    vmin = sky - 1.5 * sigma
    vmax = max(float(np.percentile(finite, 99.8)), sky + 25.0 * sigma)
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(0.08), clip=False)


def _grey() -> ListedColormap:
    cmap = ListedColormap(np.linspace(0, 1, 256)[:, None].repeat(3, axis=1), name="grey")
    return cmap.with_extremes(bad=PLANE_COLOURS["NO_DATA"], under="black", over="white")


def _overlay(mask: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """RGBA image of the artefact planes and the fraction of pixels in each plane."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    fractions = {}
    for name, colour in PLANE_COLOURS.items():
        hit = (mask & np.uint32(int(MaskBit[name]))) != 0
        fractions[name] = float(hit.mean()) if hit.size else 0.0
        if hit.any():
            rgba[hit, :3] = to_rgb(colour)
            rgba[hit, 3] = PLANE_ALPHA[name]
    return rgba, fractions


def _wcs_axes(figure: Figure, position: Any, wcs: WCS) -> Any:
    ax = figure.add_subplot(position, projection=wcs)
    ra, dec = ax.coords[0], ax.coords[1]
    ra.set_axislabel("RA (ICRS)")
    dec.set_axislabel("Dec (ICRS)")
    ra.set_major_formatter("hh:mm:ss")
    dec.set_major_formatter("dd:mm:ss")
    ra.set_ticklabel(exclude_overlapping=True, size=8)
    dec.set_ticklabel(exclude_overlapping=True, size=8)
    return ax


def _tile_rect(row: pd.Series, step: int, **kwargs: Any) -> Rectangle:
    """A tile core's outline in binned pixel coordinates (edges at ``x0 / step - 0.5``)."""
    return Rectangle(
        (row.x0 / step - 0.5, row.y0 / step - 0.5),
        (row.x1 - row.x0) / step,
        (row.y1 - row.y0) / step,
        **kwargs,
    )


def _verdict(row: pd.Series) -> str:
    verdict = str(row.verdict or "")
    return verdict if verdict in VERDICT_COLOURS and row.status == "done" else "failed"


def _empty_panel(ax: Any, text: str) -> None:
    ax.set_facecolor("#f2f2f2")
    ax.text(
        0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes, wrap=True
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _scale_bar(ax: Any, width_pix: int, pixel_scale: float, colour: str = "white") -> None:
    """A bar of a round number of arcsec in the lower-left corner of a cut-out."""
    if not pixel_scale > 0:
        return
    target = width_pix * pixel_scale / 4.0
    arcsec = max(
        (v for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120) if v <= target), default=0.1
    )
    length = arcsec / pixel_scale
    x0, y0 = 0.06 * width_pix, 0.07 * width_pix
    ax.plot([x0, x0 + length], [y0, y0], color=colour, lw=2, solid_capstyle="butt")
    label = f'{arcsec:g}"' if arcsec < 60 else f"{arcsec / 60:g}'"
    ax.text(
        x0 + length / 2,
        y0 + 0.03 * width_pix,
        label,
        color=colour,
        fontsize=7,
        ha="center",
        va="bottom",
    )


def _short_id(source_id: int) -> str:
    """``tile:local`` form of a global id ``(tile << 32) | local``."""
    source_id = int(source_id)
    return f"{source_id >> 32}:{source_id & 0xFFFFFFFF}"


# --------------------------------------------------------------------------- figures


def _display_factor(shape: tuple[int, int], budget: tuple[int, int]) -> int:
    """Further binning of a ``(ny, nx)`` image so that it fits ``budget`` (width, height)."""
    ny, nx = shape
    return max(1, math.ceil(nx / budget[0]), math.ceil(ny / budget[1]))


def _plane_fractions(mask: np.ndarray) -> dict[str, float]:
    """Fraction of the pixels of ``mask`` in each artefact plane."""
    return {
        name: float(np.mean((mask & np.uint32(int(MaskBit[name]))) != 0)) if mask.size else 0.0
        for name in PLANE_COLOURS
    }


def _figure_mosaic(run: _Run, b: _Binned) -> tuple[Figure, _MosaicScale]:
    """The mosaic with its artefact planes and the tile grid, and how it is drawn.

    The binned mosaic is binned again (image averaged, mask planes OR-ed) until it
    fits :data:`MOSAIC_PANEL_PX`, then drawn on at least one PNG pixel per bin, so
    that matplotlib only enlarges it and never drops a pixel. The axes are laid out
    by matplotlib's constrained layout around their tick and axis labels, whatever
    the aspect ratio and orientation of the mosaic.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, laid out (the tile ids are added after the layout's last draw).
    _MosaicScale
        The binning used and the PNG pixels per drawn pixel, measured on the figure.
    """
    extra = _display_factor(b.image.shape, MOSAIC_PANEL_PX)
    factor = b.step * extra
    image = b.image if extra == 1 else _block_reduce(b.image, extra, "mean")
    mask = b.mask if extra == 1 else _block_reduce(b.mask, extra, "or")
    wcs = b.full_wcs if factor == 1 else b.full_wcs.slice((slice(None, None, factor),) * 2)
    ny, nx = image.shape
    zoom = min(MOSAIC_PANEL_PX[0] / nx, MOSAIC_PANEL_PX[1] / ny)
    width, height = nx * zoom / DPI, ny * zoom / DPI
    legend_right = height >= 3.2
    if legend_right:
        size = (width + 1.6 + 4.6, max(height + 1.2, 4.2))
    else:
        size = (max(width + 1.6, 8.0), height + 1.2 + 2.0)
    figure = _new_figure(*size, layout="constrained")
    ax = _wcs_axes(figure, 111, wcs)
    ax.set_anchor("NE" if legend_right else "S")  # spare room on the outside, cut when saved
    ax.imshow(image, origin="lower", cmap=_grey(), norm=_norm(image), interpolation="nearest")
    ax.imshow(_overlay(mask)[0], origin="lower", interpolation="nearest")
    fractions = _plane_fractions(b.mask)
    tiles = run.tiles
    verdicts = [_verdict(row) for row in tiles.itertuples()]
    counts = {v: verdicts.count(v) for v in VERDICT_COLOURS}
    for verdict in VERDICT_COLOURS:
        rects = [
            _tile_rect(row, factor)
            for row, v in zip(tiles.itertuples(), verdicts, strict=True)
            if v == verdict
        ]
        if not rects:
            continue
        reject = verdict == "reject"
        ax.add_collection(
            PatchCollection(
                rects,
                facecolor="none",
                edgecolor=VERDICT_COLOURS[verdict],
                lw=1.6 if reject else 0.8,
                alpha=0.95 if reject else 0.6,
                hatch="///" if reject else None,
            )
        )
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    binned = f", binned {factor}x{factor}" if factor > 1 else ""
    ax.set_title(f"{_input_name(run)}: {b.shape[1]} x {b.shape[0]} pix{binned}", fontsize=10)
    planes: list[Any] = [Line2D([], [], ls="none", label="Artefact planes (% of pixels)")]
    for name, colour in PLANE_COLOURS.items():
        share = 100.0 * fractions[name]
        planes.append(
            Patch(
                facecolor=colour,
                alpha=PLANE_ALPHA[name],
                edgecolor="none",
                label=f"{name}: {PLANE_LABELS[name]} ({share:.2g}%)",
            )
        )
    grid: list[Any] = [Line2D([], [], ls="none", label="Tile cores (verdict: n)")]
    for verdict in ("accept", "inspect", "reject", "failed"):
        if verdict == "failed" and not counts.get(verdict):
            continue
        grid.append(
            Patch(
                facecolor="none",
                edgecolor=VERDICT_COLOURS[verdict],
                hatch="///" if verdict == "reject" else None,
                lw=1.5,
                label=f"{verdict}: {counts.get(verdict, 0)}"
                + (" (REJECTED plane)" if verdict == "reject" else ""),
            )
        )
    note = [
        Line2D([], [], ls="none", label="Grey: asinh stretch from 1.5 sigma below the sky;"),
        Line2D([], [], ls="none", label="colours: mask planes of masks.zarr."),
    ]
    if legend_right:
        blank = Line2D([], [], ls="none", label=" ")
        handles, ncol, loc = [*planes, blank, *grid, blank, *note], 1, "outside right upper"
    else:  # two columns under a wide mosaic: planes, then tiles and the note
        second = [*grid, *note]
        rows = max(len(planes), len(second))
        pad = [Line2D([], [], ls="none", label=" ") for _ in range(2 * rows)]
        handles = [*planes, *pad[: rows - len(planes)], *second, *pad[rows:][: rows - len(second)]]
        ncol, loc = 2, "outside lower center"
    legend = figure.legend(
        handles=handles, loc=loc, ncol=ncol, fontsize=8, frameon=False, handlelength=1.6
    )
    for text, handle in zip(legend.get_texts(), handles, strict=True):
        if handle in note:
            text.set_color("#444444")
            text.set_fontsize(7)
        elif isinstance(handle, Line2D) and handle.get_label().strip():
            text.set_fontweight("bold")
    png_per_bin = _fit_axes(figure, ax, nx * zoom)
    scale = _MosaicScale(factor, png_per_bin, "")
    return figure, _MosaicScale(factor, png_per_bin, _label_tiles(ax, tiles, scale))


def _fit_axes(figure: Figure, ax: Any, width_px: float) -> float:
    """Resize ``figure`` so that the laid-out, aspect-locked ``ax`` is ``width_px`` wide.

    Constrained layout sets the margins from the tick and axis labels, which are
    only known once drawn: the figure is drawn, resized by what the axes lack or
    have to spare (never below what its legend needs) and drawn again. Returns
    the PNG pixels per data pixel of ``ax`` as finally drawn.
    """
    nx = abs(np.diff(ax.get_xlim()).item())
    for _ in range(4):
        _lift_titles(figure)
        box = ax.get_window_extent()
        change = width_px - box.width
        if abs(change) < 0.5:
            break
        least = [(legend.get_window_extent().size + 24.0) / DPI for legend in figure.legends]
        size = np.maximum(
            figure.get_size_inches() + np.array([change, change * box.height / box.width]) / DPI,
            np.max(least, axis=0) if least else 0.0,
        )
        if np.allclose(size, figure.get_size_inches(), atol=1e-3):
            break
        figure.set_size_inches(*size)
    return float(ax.get_window_extent().width / nx)


def _lift_titles(figure: Figure, gap: float = 5.0) -> None:
    """Lay ``figure`` out and draw it, with each WCS panel's title clear of its labels.

    Matplotlib's automatic title placement does not see a WCS panel's tick and
    axis labels (a rotated or flipped WCS can label a coordinate along the top
    edge): each title is set explicitly ``gap`` PNG pixels above whatever the
    panel draws at its top, and the figure laid out again to make room for it.
    """
    panels = [ax for ax in figure.axes if hasattr(ax, "coords") and ax.get_title()]
    for ax in panels:  # an explicit position turns the automatic placement off
        ax.set_title(ax.get_title(), y=1.0, fontsize=ax.title.get_fontsize())
    for _ in range(4):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        moved = False
        for ax in panels:
            title = ax.title
            title.set_visible(False)
            top = max(ax.get_tightbbox(renderer).y1, ax.get_window_extent().y1)
            title.set_visible(True)
            shift = top + gap - title.get_window_extent(renderer).y0
            if shift > 0.5:
                y = title.get_position()[1] + shift / ax.get_window_extent().height
                ax.set_title(ax.get_title(), y=y, fontsize=title.get_fontsize())
                moved = True
        if not moved:
            figure.stale = False  # as drawn: the titles were only hidden to measure
            return
    figure.canvas.draw()


def _label_tiles(ax: Any, tiles: pd.DataFrame, scale: _MosaicScale) -> str:
    """Write each tile's id in the upper-left corner of its outline, readable on any image.

    White text with a black outline, its size following the tiles' size on screen
    (smaller in a cut edge tile); nothing when the tiles are too small for
    :data:`TILE_ID_MIN_POINTS`. Returns a note on the ids left out (empty when
    every id is drawn).
    """
    if not len(tiles):
        return ""
    points = 72.0 / DPI * scale.png_per_bin / scale.factor  # points per mosaic pixel
    widths = (tiles["x1"] - tiles["x0"]).to_numpy(dtype=float) * points
    heights = (tiles["y1"] - tiles["y0"]).to_numpy(dtype=float) * points
    digits = np.array([len(str(t)) for t in tiles["tile_id"]], dtype=float)
    # an id takes about 0.62 em per digit plus a pad, and at most about a quarter of the height
    fits = np.minimum((widths - 6.0) / (0.62 * digits + 0.6), 0.28 * heights)
    size = float(min(12.0, np.median(fits)))
    if size < TILE_ID_MIN_POINTS:
        side = float(np.median(np.minimum(widths, heights)) / 72.0 * DPI)
        return (
            f"tile ids are not drawn: tiles are about {side:.0f} PNG pixels across here, too "
            "small to label (tiles.parquet gives each tile's id and bounds)"
        )
    left_out = 0
    for row, room in zip(tiles.itertuples(), fits, strict=True):
        if room < TILE_ID_MIN_POINTS:
            left_out += 1
            continue
        fontsize = min(size, float(room))
        stroke = [patheffects.withStroke(linewidth=max(2.0, fontsize / 3.5), foreground="black")]
        ax.annotate(
            str(row.tile_id),
            xy=(row.x0 / scale.factor - 0.5, row.y1 / scale.factor - 0.5),
            xytext=(3, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=fontsize,
            fontweight="bold",
            color="white",
            path_effects=stroke,
            annotation_clip=False,
        )
    if left_out:
        return f"the ids of {left_out} tiles too small to label on screen are not drawn"
    return ""


def _tile_map(tiles: pd.DataFrame, b: _Binned, values: np.ndarray) -> np.ndarray:
    """A binned-resolution image holding each tile's value over its core (NaN elsewhere)."""
    image = np.full(b.image.shape, np.nan, dtype=np.float64)
    for row, value in zip(tiles.itertuples(), values, strict=True):
        ys = slice(row.y0 // b.step, math.ceil(row.y1 / b.step))
        xs = slice(row.x0 // b.step, math.ceil(row.x1 / b.step))
        image[ys, xs] = value
    return image


def _figure_quality(run: _Run, b: _Binned, thresholds: dict[str, float]) -> Figure:
    """Per-tile artefact and no-data fractions and verdicts, side by side.

    The three maps stand in a row, or in a column for a mosaic more than about
    twice as wide as high; the figure follows the mosaic's aspect ratio and
    constrained layout places every tick and axis label inside it.
    """
    tiles = run.tiles
    ny, nx = b.image.shape
    aspect = ny / max(nx, 1)
    stacked = aspect < 0.45
    panel_w = 10.0 if stacked else min(4.2, 7.0 / aspect)
    panel_h = panel_w * aspect
    artefact = tiles["artefact_fraction"].to_numpy(dtype=float)
    no_data = tiles["no_data_fraction"].to_numpy(dtype=float)
    panels = [
        ("Artefact fraction (BAD|SAT|CR|STREAK|GHOST)", artefact),
        ("No-data fraction (NO_DATA)", no_data),
    ]
    if "predicted_flagged_fraction" in tiles:
        estimate = tiles["predicted_flagged_fraction"].to_numpy(dtype=float)
        if np.isfinite(estimate).any():  # the network's data-quality classifier ran
            panels.append(("Classifier's estimate of the flagged fraction", estimate))
    n_panels = len(panels) + 1
    if stacked:
        figure = _new_figure(panel_w + 3.6, n_panels * (panel_h + 1.2), layout="constrained")
        grid = figure.add_gridspec(n_panels, 1)
    else:
        figure = _new_figure(n_panels * (panel_w + 2.4) + 1.2, panel_h + 1.3, layout="constrained")
        grid = figure.add_gridspec(1, n_panels)
    if not len(tiles):
        ax = figure.add_subplot(111)
        _empty_panel(ax, "no tile was screened (tiles.parquet is empty)")
        return figure
    vmax = float(np.nanmax(np.concatenate([values for _, values in panels] + [[1e-3]])))
    if "reject_fraction" in thresholds:
        vmax = (
            max(vmax, 1.15 * thresholds["reject_fraction"])
            if vmax > 0.5 * thresholds["reject_fraction"]
            else vmax
        )
    vmax = 100.0 * vmax
    label_tiles = len(tiles) <= 100
    fontsize = 7 if len(tiles) <= 36 else 5
    for k, (name, values) in enumerate(panels):
        ax = _wcs_axes(figure, grid[k], b.wcs)
        image = _tile_map(tiles, b, 100.0 * values)
        im = ax.imshow(
            image, origin="lower", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest"
        )
        ax.set_facecolor("#dddddd")
        ax.set_title(name, fontsize=10)
        cax = ax.inset_axes((1.03, 0.0, 0.035 if not stacked else 0.012, 1.0))
        bar = figure.colorbar(im, cax=cax)
        bar.set_label(
            "% of core pixels\n(lines: verdict thresholds, on no data OR artefact)", fontsize=8
        )
        bar.ax.tick_params(labelsize=7)
        for key, style in (("inspect_fraction", "--"), ("reject_fraction", "-")):
            level = 100.0 * thresholds.get(key, np.inf)
            if level <= vmax:
                bar.ax.axhline(level, color="white", lw=1.5, ls=style)
        if label_tiles:
            for row, value in zip(tiles.itertuples(), values, strict=True):
                if not np.isfinite(value):
                    continue
                shade = 100.0 * value / vmax if vmax else 0.0
                ax.text(
                    (row.x0 + row.x1) / 2 / b.step - 0.5,
                    (row.y0 + row.y1) / 2 / b.step - 0.5,
                    f"{100 * value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="black" if shade > 0.6 else "white",
                )
        _outline_tiles(ax, tiles, b)
    ax = _wcs_axes(figure, grid[len(panels)], b.wcs)
    order = ["accept", "inspect", "reject", "failed"]
    codes = np.array([order.index(_verdict(row)) for row in tiles.itertuples()], dtype=float)
    cmap = ListedColormap([VERDICT_COLOURS[v] for v in order])
    ax.imshow(
        _tile_map(tiles, b, codes),
        origin="lower",
        cmap=cmap,
        vmin=-0.5,
        vmax=3.5,
        interpolation="nearest",
    )
    ax.set_facecolor("#dddddd")
    ax.set_title("Tile verdict", fontsize=10)
    if label_tiles:
        for row in tiles.itertuples():
            ax.text(
                (row.x0 + row.x1) / 2 / b.step - 0.5,
                (row.y0 + row.y1) / 2 / b.step - 0.5,
                str(row.tile_id),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="black",
            )
    _outline_tiles(ax, tiles, b)
    verdicts = [_verdict(row) for row in tiles.itertuples()]
    handles = [
        Patch(color=VERDICT_COLOURS[v], label=f"{v}: {verdicts.count(v)}")
        for v in order
        if v != "failed" or v in verdicts
    ]
    figure.legend(
        handles=handles,
        loc="outside right upper",
        fontsize=8,
        frameon=False,
        title="tiles",
        title_fontsize=8,
        alignment="left",
    )
    for axis in figure.axes:
        if hasattr(axis, "coords"):
            axis.set_xlim(-0.5, nx - 0.5)
            axis.set_ylim(-0.5, ny - 0.5)
    _lift_titles(figure)
    return figure


def _outline_tiles(ax: Any, tiles: pd.DataFrame, b: _Binned) -> None:
    rects = [_tile_rect(row, b.step) for row in tiles.itertuples()]
    ax.add_collection(
        PatchCollection(rects, facecolor="none", edgecolor="white", lw=0.5, alpha=0.8)
    )


def _segment_colours(ids: np.ndarray, blended: np.ndarray) -> np.ndarray:
    """Stable RGB colours per id: hot hues for blended, muted cool hues for isolated."""
    from matplotlib.colors import hsv_to_rgb

    ids = ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        h1 = (ids * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
        h2 = (ids * np.uint64(0xC2B2AE3D27D4EB4F)) >> np.uint64(40)
    u = (h1 & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    v = (h2 & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    hue = np.where(blended, 0.0 + 0.17 * u, 0.47 + 0.28 * u)
    saturation = np.where(blended, 0.75 + 0.25 * v, 0.35 + 0.25 * v)
    value = np.where(blended, 0.75 + 0.25 * (1 - v), 0.45 + 0.3 * v)
    return hsv_to_rgb(np.stack([hue, saturation, value], axis=-1))


def _segmentation_rgb(segmentation: np.ndarray, blended_ids: set[int]) -> np.ndarray:
    """RGB image of a segmentation map: black background, black lines between segments."""
    ids, inverse = np.unique(segmentation, return_inverse=True)
    blended = np.isin(ids, np.fromiter(blended_ids, dtype=np.int64, count=len(blended_ids)))
    colours = _segment_colours(ids, blended)
    colours[ids == 0] = 0.0
    rgb = colours[inverse.reshape(segmentation.shape)]
    edge = np.zeros(segmentation.shape, dtype=bool)
    edge[:, 1:] |= (segmentation[:, 1:] != segmentation[:, :-1]) & (segmentation[:, :-1] != 0)
    edge[1:, :] |= (segmentation[1:, :] != segmentation[:-1, :]) & (segmentation[:-1, :] != 0)
    rgb[edge & (segmentation != 0)] *= 0.35
    return rgb


def _crowded_window(sources: pd.DataFrame, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the square window holding the most source positions."""
    ny, nx = shape
    side = int(min(ny, nx, max(96, min(256, min(ny, nx) // 3))))
    if not len(sources):
        y0, x0 = (ny - side) // 2, (nx - side) // 2
        return y0, y0 + side, x0, x0 + side
    half = max(side // 2, 1)
    x = sources["x"].to_numpy(dtype=float)
    y = sources["y"].to_numpy(dtype=float)
    good = np.isfinite(x) & np.isfinite(y)
    counts, _, _ = np.histogram2d(
        y[good],
        x[good],
        bins=(math.ceil(ny / half), math.ceil(nx / half)),
        range=((0, math.ceil(ny / half) * half), (0, math.ceil(nx / half) * half)),
    )
    if counts.shape[0] > 1 and counts.shape[1] > 1:
        counts = counts[:-1, :-1] + counts[1:, :-1] + counts[:-1, 1:] + counts[1:, 1:]
    iy, ix = np.unravel_index(int(np.argmax(counts)), counts.shape)
    y0 = int(min(max(0, iy * half), ny - side))
    x0 = int(min(max(0, ix * half), nx - side))
    return y0, y0 + side, x0, x0 + side


def _figure_segmentation(run: _Run, b: _Binned) -> tuple[Figure, str]:
    sources = run.sources
    blended_ids = set(sources.loc[sources["is_blended"].astype(bool), "id"].astype(int))
    ny, nx = b.segmentation.shape
    aspect = ny / max(nx, 1)
    height = max(5.0, min(12.0, 4.8 * aspect + 1.5))
    figure = _new_figure(17.0, height)
    bottom, span = 1.0 / height, 1 - 1.5 / height
    ax = _wcs_axes(figure, (0.06, bottom, 0.26, span), b.wcs)
    ax.set_facecolor("black")
    n_blended = len(blended_ids)
    n_sources = len(sources)
    binned = f" (sampled every {b.step} pix)" if b.step > 1 else ""
    ax.set_title(f"Segmentation: {n_sources} sources, {n_blended} blended{binned}", fontsize=10)
    if n_sources == 0 and not b.segmentation.any():
        ax.imshow(np.zeros((ny, nx, 3)), origin="lower")
        ax.text(
            0.5,
            0.5,
            "no sources detected",
            color="white",
            ha="center",
            va="center",
            fontsize=13,
            transform=ax.transAxes,
        )
    else:
        ax.imshow(
            _segmentation_rgb(b.segmentation, blended_ids), origin="lower", interpolation="nearest"
        )
    y0, y1, x0, x1 = _crowded_window(sources, b.shape)
    ax.add_patch(
        Rectangle(
            (x0 / b.step - 0.5, y0 / b.step - 0.5),
            (x1 - x0) / b.step,
            (y1 - y0) / b.step,
            fill=False,
            edgecolor="white",
            lw=1.2,
            ls="--",
        )
    )
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)

    image, _, segmentation = run.window(y0, y1, x0, x1)
    zoom_wcs = run.wcs.slice((slice(y0, y1), slice(x0, x1)))
    inside = sources[
        (sources.x >= x0 - 0.5)
        & (sources.x < x1 - 0.5)
        & (sources.y >= y0 - 0.5)
        & (sources.y < y1 - 0.5)
    ]
    zoom = _wcs_axes(figure, (0.39, bottom, 0.26, span), zoom_wcs)
    zoom.set_facecolor("black")
    zoom.imshow(
        _segmentation_rgb(segmentation, blended_ids), origin="lower", interpolation="nearest"
    )
    zoom.set_title(
        f"Most crowded {x1 - x0} x {y1 - y0} pix: {len(inside)} sources (x {x0}-{x1}, y {y0}-{y1})",
        fontsize=10,
    )
    cut = _wcs_axes(figure, (0.725, bottom, 0.265, span), zoom_wcs)
    cut.imshow(image, origin="lower", cmap=_grey(), norm=_norm(image), interpolation="nearest")
    _segment_outlines(cut, segmentation, blended_ids)
    if len(inside):
        is_blended = inside["is_blended"].astype(bool).to_numpy()
        for flag, colour in ((True, BLENDED_COLOUR), (False, ISOLATED_COLOUR)):
            chosen = inside[is_blended == flag]
            cut.plot(chosen.x - x0, chosen.y - y0, "+", color=colour, ms=5, mew=1.0)
    cut.set_title("Same region: image with segment outlines and positions", fontsize=10)
    for axis in (zoom, cut):
        axis.set_xlim(-0.5, x1 - x0 - 0.5)
        axis.set_ylim(-0.5, y1 - y0 - 0.5)
    handles = [
        Patch(color="#ff5a00", label="blended source (hot colours)"),
        Patch(color="#5a8a9a", label="isolated source (muted colours)"),
        Patch(facecolor="black", edgecolor="#777777", label="background (id 0)"),
        Line2D([], [], color=BLENDED_COLOUR, marker="+", ls="-", label="outline/position: blended"),
        Line2D(
            [], [], color=ISOLATED_COLOUR, marker="+", ls="-", label="outline/position: isolated"
        ),
    ]
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=5,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    _lift_titles(figure)
    note = (
        f"the zoom shows mosaic pixels x {x0}-{x1}, y {y0}-{y1}, the densest "
        f"{x1 - x0} x {y1 - y0} pixel window ({len(inside)} source positions)"
    )
    return figure, note


def _segment_outlines(ax: Any, segmentation: np.ndarray, blended_ids: set[int]) -> None:
    """Draw the boundary pixels of every segment, coloured by blended / isolated."""
    if not segmentation.any():
        return
    edge = np.zeros(segmentation.shape, dtype=bool)
    diff_x = segmentation[:, 1:] != segmentation[:, :-1]
    diff_y = segmentation[1:, :] != segmentation[:-1, :]
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y
    edge &= segmentation != 0
    blended = np.isin(
        segmentation, np.fromiter(blended_ids, dtype=np.int64, count=len(blended_ids))
    )
    rgba = np.zeros((*segmentation.shape, 4), dtype=np.float32)
    rgba[edge & blended] = (*to_rgb(BLENDED_COLOUR), 0.9)
    rgba[edge & ~blended] = (*to_rgb(ISOLATED_COLOUR), 0.9)
    ax.imshow(rgba, origin="lower", interpolation="nearest")


def _clump_hosts(run: _Run, n: int) -> pd.DataFrame:
    """Hosts ranked by number of clumps, then by their best clump's probability."""
    clumps = run.clumps
    grouped = clumps.groupby("host_id").agg(
        n=("id", "size"), best=("probability", "max"), cx=("x", "mean"), cy=("y", "mean")
    )
    grouped = grouped.sort_values(["n", "best"], ascending=False).head(n)
    sources = run.sources.set_index("id")
    hosts = grouped.join(sources[["x", "y", "a", "mag"]], how="left")
    hosts["x"] = hosts["x"].fillna(hosts["cx"])
    hosts["y"] = hosts["y"].fillna(hosts["cy"])
    return hosts


def _gallery_grid(figure: Figure, n: int, ncols: int = 4) -> list[Any]:
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    return [figure.add_subplot(nrows, ncols, k + 1) for k in range(n)]


def _gallery_panel(
    ax: Any,
    image: np.ndarray,
    norm: Any,
    position: tuple[float, float],
    title: str,
    pixel_scale: float,
) -> None:
    """One stamp of a gallery: the image, an orange + at ``position``, a title, a scale bar."""
    ax.imshow(image, origin="lower", cmap=_grey(), norm=norm, interpolation="nearest")
    ax.plot(*position, "+", color="#ffb000", ms=8, mew=1.2)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(-0.5, image.shape[0] - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    _scale_bar(ax, image.shape[1], pixel_scale)


def _figure_clumps(run: _Run) -> tuple[Figure, str]:
    clumps = run.clumps
    if not len(clumps):
        figure = _new_figure(7.0, 2.6)
        _empty_panel(figure.add_subplot(111), "none: no clump was detected in this run")
        return figure, "none: the run detected no clump"
    hosts = _clump_hosts(run, 16)
    n = len(hosts)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    figure = _new_figure(max(3.0 * ncols, 6.5), 3.3 * nrows + 0.8)
    axes = _gallery_grid(figure, n, ncols)
    for ax, (host_id, host) in zip(axes, hosts.iterrows(), strict=True):
        own = clumps[clumps["host_id"] == host_id]
        reach = np.hypot(own.x - host.x, own.y - host.y).max() if len(own) else 0.0
        size = float(np.nan_to_num(host.get("a", np.nan), nan=4.0))
        half = int(np.clip(max(4.0 * size, reach + 8.0, 20.0), 20, 128))
        cx, cy = round(float(host.x)), round(float(host.y))
        y0, x0 = cy - half, cx - half
        image, _, _ = run.window(y0, cy + half + 1, x0, cx + half + 1)
        oy, ox = max(0, y0), max(0, x0)
        mag = host.get("mag", np.nan)
        mag_text = f", mag {mag:.1f}" if np.isfinite(mag) else ""
        title = (
            f"host {_short_id(host_id)}: {int(host.n)} clump{'s' * (int(host.n) != 1)}\n"
            f"best score {host.best:.2f}{mag_text}"
        )
        _gallery_panel(ax, image, _norm(image), (host.x - ox, host.y - oy), title, run.pixel_scale)
        radius = max(2.0, 0.06 * half)
        for clump in own.itertuples():
            ax.add_patch(
                Circle(
                    (clump.x - ox, clump.y - oy), radius, fill=False, edgecolor="#00e5ff", lw=1.2
                )
            )
    figure.suptitle(
        f"Hosts with the most clumps ({len(clumps)} clumps in {clumps['host_id'].nunique()} "
        "hosts)\ncyan circles: clumps, orange +: host position",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.6 / (3.3 * nrows + 0.8)))
    return figure, f"{n} of {clumps['host_id'].nunique()} hosts shown"


def _figure_rejected(run: _Run) -> tuple[Figure, str]:
    tiles = run.tiles
    if not len(tiles):
        figure = _new_figure(7.0, 2.6)
        _empty_panel(figure.add_subplot(111), "none: no tile was screened")
        return figure, "none: no tile was screened"
    verdicts = np.array([_verdict(row) for row in tiles.itertuples()])
    worst = tiles["flagged_fraction"].fillna(0)
    rejected = tiles[verdicts == "reject"]
    if len(rejected):
        chosen = rejected.assign(_w=worst[verdicts == "reject"]).sort_values("_w", ascending=False)
        chosen = chosen.head(12)
        heading = f"Rejected tiles ({len(rejected)}; {len(chosen)} shown)"
        note = f"{len(rejected)} tiles were rejected; {len(chosen)} are shown"
    else:
        chosen = tiles.assign(_w=worst).sort_values("_w", ascending=False).head(8)
        if (chosen["_w"] > 0).any():
            chosen = chosen[chosen["_w"] > 0]
            heading = (
                f"No tile was rejected: the {len(chosen)} tiles with the highest artefact or "
                "no-data fraction"
            )
        else:
            chosen = chosen.head(4)
            heading = f"No tile was rejected and none has artefacts: {len(chosen)} tiles shown"
        note = f"none rejected; the {len(chosen)} tiles with the highest fractions are shown"
    n = len(chosen)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    height = 3.8 * nrows + 0.9
    figure = _new_figure(max(3.2 * ncols + 0.2, 6.5), height)
    axes = _gallery_grid(figure, n, ncols)
    for ax, row in zip(axes, chosen.itertuples(), strict=True):
        image, mask, _ = run.window(row.y0, row.y1, row.x0, row.x1)
        step = max(1, math.ceil(max(image.shape) / 384))
        if step > 1:
            image = _block_reduce(image, step, "mean")
            mask = _block_reduce(mask, step, "or")
        ax.imshow(image, origin="lower", cmap=_grey(), norm=_norm(image), interpolation="nearest")
        ax.imshow(_overlay(mask)[0], origin="lower", interpolation="nearest")
        verdict = _verdict(row)
        for spine in ax.spines.values():
            spine.set_edgecolor(VERDICT_COLOURS[verdict])
            spine.set_linewidth(2.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"tile {row.tile_id} (row {row.row}, col {row.col}): {verdict}\n"
            f"artefact {100 * row.artefact_fraction:.1f}%, no data "
            f"{100 * row.no_data_fraction:.1f}%",
            fontsize=8,
        )
        _scale_bar(ax, image.shape[1], run.pixel_scale * step)
    handles = [
        Patch(facecolor=c, alpha=PLANE_ALPHA[name], label=name) for name, c in PLANE_COLOURS.items()
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout(rect=(0, 0.4 / height, 1, 1 - 0.4 / height))
    return figure, note


def _photometry(manifest: dict) -> tuple[str, str, str]:
    """The run's flux unit, zero point, and the zero point with where it came from.

    Runs older than the manifest's ``photometry`` record: the header's ``MAGZERO``.
    """
    record = manifest.get("photometry") or {
        "flux_unit": "adu",
        "zero_point": manifest.get("input", {}).get("zero_point"),
        "zero_point_from": "MAGZERO",
    }
    unit = record.get("flux_unit") or "adu"
    zero_point = record.get("zero_point")
    if zero_point is None:
        return unit, "ZP", "none: mag is NaN (give --zero-point)"
    return unit, f"{zero_point:g}", f"{zero_point:g} ({record.get('zero_point_from')})"


def _psf(info: dict) -> str:
    """The run's PSF FWHM with where it came from (the fit, when measured on the stars).

    Runs older than the manifest's ``psf`` record: the ``PSFFWHM`` keyword.
    """
    record = info.get("psf") or {
        "fwhm_pix": info.get("psf_fwhm_pix"),
        "source": "PSFFWHM" if info.get("psf_fwhm_pix") is not None else "none",
    }
    if record.get("fwhm_pix") is None:
        n_stars = record.get("n_stars")
        why = f": too few isolated stars ({n_stars}) to measure it" if n_stars is not None else ""
        return f"none{why}; the training PSF's thresholds (give --psf-fwhm)"
    text = f"{record['fwhm_pix']:.3g} ({record.get('source')}"
    if record.get("source") == PSF_MEASURED:
        beta, ellipticity = record.get("beta"), record.get("ellipticity")
        shape = f"Moffat beta {beta:.3g}, " if beta is not None else "undersampled: width only, "
        text += f" on {record.get('n_stars')} stars: {shape}scatter {record.get('scatter_pix'):.2g}"
        if ellipticity is not None:
            text += f", ellipticity {ellipticity:.2g}"
        own = [r["fwhm_pix"] for r in record.get("regions", []) if r.get("measured")]
        if len(own) > 1:
            text += f"; {len(own)} regions {min(own):.3g} to {max(own):.3g}"
    return text + ")"


def _figure_histograms(run: _Run) -> Figure:
    sources = run.sources
    figure = _new_figure(11.0, 7.6)
    axes = [figure.add_subplot(2, 2, k + 1) for k in range(4)]
    if not len(sources):
        for ax in axes:
            _empty_panel(ax, "none: no sources detected")
        figure.suptitle("Catalog distributions", fontsize=11)
        return figure
    blended = sources["is_blended"].astype(bool).to_numpy()
    groups = (("blended", blended, BLENDED_COLOUR), ("isolated", ~blended, ISOLATED_COLOUR))

    unit, zero_point, _ = _photometry(run.manifest)
    mag = sources["mag"].to_numpy(dtype=float)
    if np.isfinite(mag).any():
        values, label = mag, f"magnitude ({zero_point} - 2.5 log10 flux [{unit}])"
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log10(sources["flux"].to_numpy(dtype=float))
        label = f"log10 flux [{unit}]"
    _split_hist(axes[0], values, groups, label, log_x=False)
    axes[0].set_title("Brightness", fontsize=10)

    a = sources["a"].to_numpy(dtype=float)
    _split_hist(axes[1], a, groups, "semi-major axis a [pix] (second moments)", log_x=True)
    axes[1].set_title("Size", fontsize=10)
    if run.pixel_scale > 0:
        scale = run.pixel_scale
        top = axes[1].secondary_xaxis("top", functions=(lambda p: p * scale, lambda s: s / scale))
        top.set_xlabel("a [arcsec]", fontsize=8)
        top.tick_params(labelsize=7)
        _plain_log_ticks(top.xaxis)

    snr = sources["snr"].to_numpy(dtype=float)
    _split_hist(axes[2], snr, groups, "S/N (flux / flux_err)", log_x=True)
    axes[2].set_title("Signal to noise", fontsize=10)

    n_clumps = sources["n_clumps"].fillna(0).to_numpy(dtype=int)
    ax = axes[3]
    top_count = int(n_clumps.max()) if n_clumps.size else 0
    edges = np.arange(-0.5, top_count + 1.5)
    counts, _, _ = ax.hist(n_clumps, bins=edges, color="#4c72b0", edgecolor="white", log=True)
    for k, count in enumerate(counts):
        if count:
            ax.text(k, count, f"{int(count)}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("clumps per source", fontsize=9)
    ax.set_ylabel("sources", fontsize=9)
    ax.set_xticks(range(top_count + 1))
    ax.set_title(
        f"Clumps: {int((n_clumps > 0).sum())} sources host {int(n_clumps.sum())}", fontsize=10
    )
    figure.suptitle(
        f"Catalog distributions: {len(sources)} sources, {int(blended.sum())} blended", fontsize=11
    )
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    return figure


def _split_hist(ax: Any, values: np.ndarray, groups: tuple, label: str, *, log_x: bool) -> None:
    finite = np.isfinite(values) & ((values > 0) if log_x else True)
    if not finite.any():
        _empty_panel(ax, f"none: no finite {label.split(' ')[0]}")
        return
    low, high = float(values[finite].min()), float(values[finite].max())
    if high <= low:
        high = low + 1.0 if not log_x else low * 2.0
    bins = np.geomspace(low, high, 30) if log_x else np.linspace(low, high, 30)
    for name, selected, colour in groups:
        chosen = values[finite & selected]
        ax.hist(
            chosen,
            bins=bins,
            histtype="step",
            lw=1.6,
            color=colour,
            label=f"{name} ({chosen.size})",
        )
    if log_x:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(label, fontsize=9)
    ax.set_ylabel("sources", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, frameon=False)


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis 0.5, 1, 2, 5, 10 ... instead of 5x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------- full resolution


def _mosaic_note(run: _Run, scale: _MosaicScale) -> str:
    """The sentence of the mosaic figure's caption that says how it is drawn."""
    per = (
        f"{scale.mosaic_per_png:.3g} mosaic pixels per PNG pixel"
        if scale.mosaic_per_png >= 1
        else f"{1 / scale.mosaic_per_png:.3g} PNG pixels per mosaic pixel"
    )
    if run.pixel_scale > 0:
        per += f" ({scale.mosaic_per_png * run.pixel_scale:.3g} arcsec per PNG pixel)"
    if scale.factor > 1:
        text = (
            f"the mosaic is binned {scale.factor} x {scale.factor} (image averaged, mask "
            f"planes OR-ed) and each bin is drawn on {scale.png_per_bin:.3g} x "
            f"{scale.png_per_bin:.3g} PNG pixels: {per}"
        )
    else:
        text = (
            f"the mosaic is not binned; each pixel is drawn on {scale.png_per_bin:.3g} x "
            f"{scale.png_per_bin:.3g} PNG pixels: {per}"
        )
    return text + (f"; {scale.tile_note}" if scale.tile_note else "")


def _write_full_resolution(run: _Run, path: Path) -> str:
    """Write :data:`FULL_RESOLUTION_FIGURE`, one PNG pixel per mosaic pixel; say what was done.

    The mosaic (asinh stretch) and its artefact planes, in the colours of
    ``mosaic_mask.png``, north up as there (mosaic row 0 is the PNG's last row),
    without the tile grid. It is written a strip of rows at a time, so memory
    stays bounded (under 100 MB) whatever the size. Mosaics of more than
    :data:`FULL_RESOLUTION_MAX_PIXELS` pixels are left out (and a PNG of an
    earlier report removed), as such a PNG would be too large to open.

    Returns
    -------
    str
        The sentence for the report: the PNG's size, or why there is none.
    """
    ny, nx = run.shape
    if ny * nx > FULL_RESOLUTION_MAX_PIXELS:
        path.unlink(missing_ok=True)
        side = math.isqrt(FULL_RESOLUTION_MAX_PIXELS)
        limit = (
            f"{side} x {side}"
            if side * side == FULL_RESOLUTION_MAX_PIXELS
            else f"{FULL_RESOLUTION_MAX_PIXELS:,}"
        )
        return (
            f"no full-resolution PNG is written: the mosaic has {ny * nx:,} pixels, more "
            f"than the limit of {limit} pixels; open mosaic.zarr and masks.zarr (or "
            "masks.fits) in a viewer instead"
        )
    y0, x0 = max(0, ny // 2 - 512), max(0, nx // 2 - 512)
    norm = _norm(run.window(y0, y0 + 1024, x0, x0 + 1024)[0])
    cmap = _grey()
    strip = max(1, (1 << 19) // nx)  # rows of about half a million pixels

    def strips() -> Iterator[np.ndarray]:
        for top in range(ny, 0, -strip):
            image, mask, _ = run.window(max(0, top - strip), top, 0, nx)
            rgb = cmap(norm(image[::-1]))[..., :3]
            overlay = _overlay(mask[::-1])[0]
            alpha = overlay[..., 3:]
            rgb = rgb * (1.0 - alpha) + overlay[..., :3] * alpha
            yield np.round(255.0 * rgb).astype(np.uint8)

    with atomic_output(path) as stream:
        _write_png(stream, nx, ny, strips())
    megabytes = path.stat().st_size / 1e6
    return (
        f"{FULL_RESOLUTION_FIGURE} (linked) shows the mosaic at full resolution: {nx} x {ny} "
        f"PNG pixels, one per mosaic pixel ({megabytes:.3g} MB), with the artefact planes in "
        "the same colours and no tile grid"
    )


def _write_png(
    stream: BinaryIO, width: int, height: int, strips: Iterable[np.ndarray], level: int = 4
) -> None:
    """Write an 8-bit RGB PNG from ``(h, width, 3)`` uint8 strips, top row first.

    The rows are compressed as they come (one zlib stream over all IDAT chunks),
    so only one strip is ever in memory.
    """

    def chunk(kind: bytes, data: bytes) -> None:
        stream.write(struct.pack(">I", len(data)) + kind + data)
        stream.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    stream.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    compressor = zlib.compressobj(level)
    rows = 0
    for rgb in strips:
        raw = np.zeros((rgb.shape[0], 1 + 3 * width), dtype=np.uint8)  # filter byte 0: none
        raw[:, 1:] = rgb.reshape(rgb.shape[0], 3 * width)
        rows += rgb.shape[0]
        data = compressor.compress(raw.tobytes())
        if data:
            chunk(b"IDAT", data)
    if rows != height:
        raise ValueError(f"_write_png: got {rows} rows for a PNG of {height}")
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


# --------------------------------------------------------------------------- HTML


def _input_name(run: _Run) -> str:
    path = run.manifest.get("input", {}).get("path") or run.mosaic.attrs.get("source_path", "")
    return Path(str(path)).name or "mosaic"


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        rows = []
        for key in sorted(node):
            rows.extend(_flatten(node[key], f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, node)]


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = "".join(f"<td>{_cell(value)}</td>" for value in row)
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value)
    else:
        text = str(value)
    text = html.escape(text)
    if len(text) >= 32 and all(c in "0123456789abcdef" for c in text):
        return f"<code>{text}</code>"
    return text


# --------------------------------------------------------------------------- injection


INJECTION_FIGURES: tuple[str, ...] = (
    "injection_recovery.png",
    "injection_shattered.png",
    "injection_tiles.png",
)
"""PNGs of the "Injection-recovery" section, drawn for a ``survey-seg inject`` run only."""
INJECTION_FILES = ("injection.json", "injection.parquet", "injection_tiles.parquet")
"""What :func:`survey_seg.injection.run_injection` writes and the section reads: the
summary, one row per injected object, one row per tile."""
_SHATTERED_SHOWN = 12  # most shattered large galaxies in the gallery
_MIN_PER_BIN = 3  # bins with fewer objects are left out of the recovery curves
_INJECTION_ROWS: tuple[tuple[str, str], ...] = (
    ("n_injected", "objects injected (pair members and clumps one each)"),
    ("n_skipped", "objects GalSim failed to draw (left out)"),
    ("psf_fwhm_pix", "PSF FWHM the objects were drawn with [pix]"),
    ("psf_beta", "its Moffat index: the mosaic's measured one, else 3"),
    ("completeness", "single objects of S/N >= 10 found as one source each"),
    ("completeness_by_snr", "the same, by bin of target S/N"),
    ("pair_recall", "pairs with both members found as distinct sources"),
    ("pair_recall_by_separation", "the same, by bin of separation [PSF FWHM]"),
    ("pair_recall_resolved", "the same, pairs 1.3-2.5 FWHM apart with both members S/N >= 10"),
    ("large_total", "large galaxies injected (half-light radius 3-10 FWHM)"),
    ("large_shattered", "large galaxies with more than one source within 1.5 half-light radii"),
    ("knotty_total", "knotty irregular galaxies injected (GalSim random knots on a disk)"),
    ("knotty_shattered", "knotty galaxies with more than one source within 1.5 half-light radii"),
    ("clumpy_total", "clumpy hosts injected (each with its clumps)"),
    ("clumpy_shattered", "clumpy hosts with more than one source within 1.5 half-light radii"),
    ("clump_completeness", "injected clumps with a detected clump within 1.5 pix"),
    ("clump_purity", "detected clumps of recovered clumpy hosts lying on an injected clump"),
    ("n_negative", "sources detected on the negated mosaic (all spurious)"),
    ("spurious_fraction", "those over the detections matching no injected object"),
    ("seed", "seed of the injection catalog"),
    ("density_per_mpix", "objects per million pixels"),
    ("gain", "electrons per image unit (Poisson noise on the objects; none: noiseless)"),
)


@dataclass(frozen=True)
class _Injection:
    """What an injection run wrote beside its screening outputs."""

    summary: dict[str, Any]
    objects: pd.DataFrame
    tiles: pd.DataFrame | None
    """None for a run written before the per-tile table existed."""


def _read_injection(out: Path) -> _Injection | None:
    """The injection outputs of ``out``; None for a plain run (no ``injection.json``)."""
    summary_name, objects_name, tiles_name = INJECTION_FILES
    if not (out / summary_name).is_file():
        return None
    try:
        summary = json.loads((out / summary_name).read_text())
        objects = pd.read_parquet(out / objects_name)
        tiles = pd.read_parquet(out / tiles_name) if (out / tiles_name).exists() else None
    except (OSError, ValueError) as error:
        raise OutputError(
            f"{out} holds an unreadable injection output ({type(error).__name__}: "
            f"{str(error)[:160]}); rerun `survey-seg inject` into a new --out"
        ) from None
    if not isinstance(summary, dict):
        raise OutputError(
            f"{out / summary_name} is not an injection summary; rerun `survey-seg inject` "
            "into a new --out"
        )
    return _Injection(summary, objects, tiles)


def _recovery_curve(
    values: np.ndarray, found: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, recovered fraction, its binomial error and counts (bins of a few dropped)."""
    which = np.digitize(values, edges) - 1
    centres, fractions, errors, counts = [], [], [], []
    for k in range(len(edges) - 1):
        inside = found[which == k]
        if len(inside) < _MIN_PER_BIN:
            continue
        p = float(inside.mean())
        centres.append(0.5 * (edges[k] + edges[k + 1]))
        fractions.append(p)
        errors.append(math.sqrt(max(p * (1 - p), 0.25 / len(inside)) / len(inside)))
        counts.append(len(inside))
    return np.array(centres), np.array(fractions), np.array(errors), np.array(counts)


def _plot_recovery(
    ax: Any, values: np.ndarray, found: np.ndarray, edges: np.ndarray, **style: Any
) -> None:
    x, y, error, _ = _recovery_curve(values, found, edges)
    if len(x):
        ax.errorbar(x, y, yerr=error, capsize=2, marker="o", ms=4, lw=1.2, **style)


def _figure_injection_recovery(injection: _Injection) -> tuple[Figure, str]:
    """Completeness against S/N (and magnitude) and pair recall against separation."""
    from survey_seg.inject import SINGLE_KINDS

    objects = injection.objects[injection.objects["drawn"].astype(bool)]
    singles = objects[objects["kind"].isin(SINGLE_KINDS)]
    stars = singles["kind"] == "star"
    magnitudes = singles["magnitude"].to_numpy(dtype=float)
    has_mag = bool(np.isfinite(magnitudes).any())
    n_panels = 3 if has_mag else 2
    figure = _new_figure(4.3 * n_panels, 3.6, layout="constrained")
    axes = [figure.add_subplot(1, n_panels, k + 1) for k in range(n_panels)]
    found = singles["recovered"].to_numpy(dtype=bool)
    groups = (
        ("all single objects", np.ones(len(singles), dtype=bool), "black"),
        ("stars", stars.to_numpy(), ISOLATED_COLOUR),
        ("galaxies", ~stars.to_numpy(), BLENDED_COLOUR),
    )
    snr = singles["snr"].to_numpy(dtype=float)
    snr_edges = np.geomspace(5.0, 100.0, 9)
    ax = axes[0]
    for label, chosen, colour in groups:
        _plot_recovery(ax, snr[chosen], found[chosen], snr_edges, color=colour, label=label)
    ax.axvline(10.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("target S/N (matched filter)")
    ax.set_ylabel("fraction recovered")
    ax.set_title(f"Completeness against S/N ({len(singles)} objects)", fontsize=10)
    if has_mag:
        ax = axes[1]
        finite = magnitudes[np.isfinite(magnitudes)]
        mag_edges = np.linspace(math.floor(finite.min()), math.ceil(finite.max()), 9)
        for label, chosen, colour in groups:
            chosen = chosen & np.isfinite(magnitudes)
            _plot_recovery(
                ax, magnitudes[chosen], found[chosen], mag_edges, color=colour, label=label
            )
        ax.set_xlabel("injected magnitude")
        ax.set_ylabel("fraction recovered")
        ax.set_title("Completeness against magnitude", fontsize=10)
    ax = axes[-1]
    pairs = objects[objects["kind"] == "pair"].groupby("pair_id")
    whole = pairs.size() == 2
    separation = pairs["pair_separation_fwhm"].first()[whole].to_numpy(dtype=float)
    both = pairs["recovered"].all()[whole].to_numpy(dtype=bool)
    either = pairs["recovered"].any()[whole].to_numpy(dtype=bool)
    sep_edges = np.linspace(1.0, 3.0, 9)
    _plot_recovery(ax, separation, both, sep_edges, color="black", label="both members")
    _plot_recovery(ax, separation, either, sep_edges, color="grey", label="at least one")
    ax.set_xlabel("separation [PSF FWHM]")
    ax.set_ylabel("fraction of pairs")
    ax.set_title(f"Pair recall against separation ({len(separation)} pairs)", fontsize=10)
    for ax in axes:
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center right" if ax is axes[-1] else "lower right")
        else:
            _empty_panel(ax, "too few objects to bin")
    note = "" if has_mag else "no zero point, so no magnitudes: the magnitude panel is left out"
    return figure, note


def _figure_injection_shattered(run: _Run, injection: _Injection) -> tuple[Figure, str]:
    """Cut-outs of the injected pixels around the most shattered large galaxies."""
    from survey_seg.inject import render_window

    objects = injection.objects
    drawn = objects[objects["drawn"].astype(bool)]
    large = drawn[drawn["kind"] == "large"]
    shattered = large[large["shattered"].astype(bool)]
    if not len(shattered):
        figure = _new_figure(7.0, 2.6)
        text = f"none: no large galaxy was shattered (of {len(large)} injected)"
        _empty_panel(figure.add_subplot(111), text)
        return figure, text
    config = run.manifest.get("config", {})
    psf = float(injection.summary.get("psf_fwhm_pix") or config["injection_psf_fwhm"])
    # an injection of an earlier version counted every source there, not its own
    pieces = "n_own_sources" if "n_own_sources" in shattered else "n_sources_in_footprint"
    label = "sources of its own" if pieces == "n_own_sources" else "sources"
    shown = shattered.sort_values([pieces, "half_light_radius_pix"], ascending=False).head(
        _SHATTERED_SHOWN
    )
    n = len(shown)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    figure = _new_figure(max(3.0 * ncols, 6.5), 3.4 * nrows + 0.9, layout="constrained")
    axes = _gallery_grid(figure, n, ncols)
    blended_ids = set(run.sources.loc[run.sources["is_blended"].astype(bool), "id"].tolist())
    for ax, obj in zip(axes, shown.itertuples(index=False), strict=True):
        reach = max(psf, 1.5 * obj.half_light_radius_pix)
        half = int(np.clip(1.6 * reach + 6, 20, 128))
        cx, cy = round(obj.x), round(obj.y)
        image, _, segmentation = run.window(cy - half, cy + half + 1, cx - half, cx + half + 1)
        oy, ox = max(0, cy - half), max(0, cx - half)
        objects_drawn = render_window(
            drawn,
            (oy, ox),
            image.shape,
            psf_fwhm_pix=psf,
            psf_beta=float(config.get("injection_psf_beta", 3.0)),
            gain=config.get("injection_gain"),
        ).image
        image = image + objects_drawn
        norm = _norm(image)  # up to the object's peak: a bright neighbour would hide it
        norm.vmax = max(float(np.nanmedian(image) + objects_drawn.max()), norm.vmin + 1e-6)
        title = (
            f"object {obj.injection_id}: {getattr(obj, pieces)} {label}\n"
            f"r_half {obj.half_light_radius_pix:.1f} px, S/N {obj.snr:.0f}"
        )
        _gallery_panel(ax, image, norm, (obj.x - ox, obj.y - oy), title, run.pixel_scale)
        _segment_outlines(ax, segmentation, blended_ids)
        ax.add_patch(
            Circle((obj.x - ox, obj.y - oy), reach, fill=False, ec="#00e5ff", ls="--", lw=1.0)
        )
    figure.suptitle(
        f"Shattered large galaxies ({len(shattered)} of {len(large)}): the screened pixels\n"
        "cyan dashed: 1.5 half-light radii, orange +: injected position",
        fontsize=10,
    )
    return figure, f"{n} of {len(shattered)} shattered large galaxies shown"


def _figure_injection_tiles(injection: _Injection, b: _Binned) -> Figure:
    """Per-tile completeness on the sky, laid out as the quality map's panels."""
    tiles = injection.tiles
    ny, nx = b.image.shape
    aspect = ny / max(nx, 1)
    panel_w = min(6.0, 9.0 / aspect)
    figure = _new_figure(panel_w + 2.6, panel_w * aspect + 1.3, layout="constrained")
    if tiles is None or not len(tiles):
        text = "no per-tile table: injection_tiles.parquet is missing or empty"
        _empty_panel(figure.add_subplot(111), text)
        return figure
    ax = _wcs_axes(figure, 111, b.wcs)
    values = tiles["completeness"].to_numpy(dtype=float)
    im = ax.imshow(
        _tile_map(tiles, b, 100.0 * values),
        origin="lower",
        cmap="viridis",
        vmin=0.0,
        vmax=100.0,
        interpolation="nearest",
    )
    ax.set_facecolor("#dddddd")
    ax.set_title("Completeness per tile (single objects, S/N >= 10)", fontsize=10)
    bar = figure.colorbar(im, cax=ax.inset_axes((1.03, 0.0, 0.035, 1.0)))
    bar.set_label("% recovered", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if len(tiles) <= 100:
        fontsize = 7 if len(tiles) <= 36 else 5
        for row, value in zip(tiles.itertuples(), values, strict=True):
            text = f"{100 * value:.0f}%" if np.isfinite(value) else "n/a"
            ax.text(
                (row.x0 + row.x1) / 2 / b.step - 0.5,
                (row.y0 + row.y1) / 2 / b.step - 0.5,
                f"{text}\nof {row.n_injected}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="black" if np.isfinite(value) and value > 0.6 else "white",
            )
    _outline_tiles(ax, tiles, b)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    _lift_titles(figure)
    return figure


def _injection_rows(summary: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rows (quantity, value, meaning) of the injection summary, per-bin values apart."""
    rows: list[tuple[Any, ...]] = []
    for key, meaning in _INJECTION_ROWS:
        value = summary.get(key)
        if isinstance(value, dict):
            for k, (label, part) in enumerate(value.items()):
                shown = "n/a" if part is None else part
                rows.append((f"{key} {label}", shown, meaning if k == 0 else ""))
        else:
            shown = ("none" if key == "gain" else "n/a") if value is None else value
            rows.append((key, shown, meaning))
    return rows


CAPTIONS: dict[str, str] = {
    "mosaic_mask.png": (
        "The whole mosaic in grey (asinh stretch from just below the sky), north and east as "
        "the WCS puts them, with RA/Dec on the axes. Coloured pixels are the artefact planes of "
        "the mask (colour key beside the image, with the percentage of pixels in each plane). When "
        "the mosaic is binned, a plane is drawn where any pixel of the bin has it, so thin "
        "artefacts stay visible (and look wider than they are). Outlines are the tile cores, "
        "coloured by verdict (green accept, orange inspect, red hatched reject), with the tile "
        "id (white, outlined in black) in their upper-left corner when the tiles are large "
        "enough on screen to label."
    ),
    "quality_map.png": (
        "Per tile core: the fraction of pixels in any artefact plane (first), in NO_DATA "
        "(second), after a network run the data-quality classifier's own estimate of the "
        "flagged fraction (predicted_flagged_fraction in tiles.parquet: the mean of its "
        "stamps' calibrated estimates, an independent check on the pixel planes), and the "
        "verdict screening gave the tile (last). The verdict comes from "
        "neither map alone but from their union, the tile's flagged_fraction in tiles.parquet: "
        "the fraction of core pixels with no data or an artefact (or both), each pixel counted "
        "once, so never below either map's value and never above their sum. A tile is "
        "inspected when it exceeds the method's inspect fraction and rejected when it exceeds "
        "the reject fraction; the dashed and solid lines on the colour bars mark these two "
        "thresholds when they fall within the range. Numbers are percentages, and tile ids on "
        "the verdict map."
    ),
    "segmentation.png": (
        "Left: the segmentation map (each source's footprint in its own colour, black "
        "background); sources in a blend are in hot colours (red-yellow), isolated sources in "
        "muted blue-green; dark lines separate touching segments. The dashed box is the most "
        "crowded window, shown at full resolution in the middle, and on the right as the "
        "image with each segment's outline and position (orange blended, blue isolated)."
    ),
    "clumps_gallery.png": (
        "Cut-outs (asinh stretch, scale bar in arcsec) of the host galaxies with the most "
        "clumps, then the highest clump probability. Cyan circles mark detected clumps, the "
        "orange cross the host's position; each title gives the host id as tile:local, the "
        "number of clumps, the best clump's score and the host's magnitude."
    ),
    "rejected_gallery.png": (
        "The core of each rejected tile (or, when none was rejected, of the tiles with the "
        "highest artefact or no-data fraction), with the artefact planes overlaid in the "
        "colours of the mosaic figure; the frame colour is the verdict. Titles give the tile "
        "id, its grid position and its fractions."
    ),
    "histograms.png": (
        "Catalog distributions, blended (orange) against isolated (blue) sources: magnitude "
        "(or log flux without a zero point), semi-major axis from second moments (pixels, "
        "arcsec on top), signal to noise, and the number of clumps per source (log counts)."
    ),
    "injection_recovery.png": (
        "Fraction of the injected objects recovered (matched within max(FWHM, half-light "
        "radius), one source per object), in bins of at least three objects, with the binomial "
        "standard error (at least 0.5/n for n objects) as error bar: single objects (stars, "
        "galaxies, large and clumpy galaxies; pairs and clumps apart) against their target S/N "
        "(matched filter in the sky noise; the dashed line at S/N 10 is the threshold of the "
        "summary's completeness) and, with a zero point, against their injected magnitude; and, "
        "right, the pairs in which both members were found as distinct sources (black) or at "
        "least one was (grey), against the members' separation in PSF FWHM."
    ),
    "injection_shattered.png": (
        "The large injected galaxies (half-light radius 3-10 FWHM) that came out in more than "
        "one source, most pieces first. Each cut-out shows the pixels that were screened: "
        "the real mosaic (mosaic.zarr, which holds no injected object) plus the objects drawn "
        "again with the same code, PSF and seed (inject.render_window draws an object the same "
        "in any window, so these are the screened pixels, not an illustration). Outlines are "
        "the injected run's segments (orange blended, blue isolated); the dashed cyan circle "
        "is the footprint (1.5 half-light radii) within which more than one source counts as "
        "shattering, the orange cross the injected position."
    ),
    "injection_tiles.png": (
        "Completeness (single objects of S/N >= 10) per tile core, on the sky: each injected "
        "object counts in the tile whose core holds its position. Numbers are the percentage "
        "recovered and the objects injected into the tile (all kinds); grey tiles hold no "
        "single object of S/N >= 10. The values are the completeness column of "
        "injection_tiles.parquet."
    ),
}

STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 1em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
code { font-size: 0.85em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; max-width: 1100px; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #888;
          vertical-align: middle; }
.warn { color: #a33; }
"""


def _html(
    run: _Run,
    b: _Binned,
    title: str | None,
    notes: dict[str, str],
    thresholds: dict[str, float],
    injection: _Injection | None = None,
) -> str:
    manifest = run.manifest
    summary = manifest.get("summary", {})
    name = _input_name(run)
    title = title or f"survey-seg report: {name}"
    info = manifest.get("input", {})
    method = manifest.get("method", {})
    sources, clumps, tiles = run.sources, run.clumps, run.tiles
    n_blended = int(sources["is_blended"].astype(bool).sum()) if len(sources) else 0
    seconds = tiles["seconds"].dropna() if "seconds" in tiles else pd.Series([], dtype=float)
    hashes = [
        (k, v)
        for k, v in _flatten(method)
        if any(s in k.rsplit(".", 1)[-1].lower() for s in ("sha256", "sha1", "hash", "digest"))
    ]
    run_rows: list[tuple[Any, ...]] = [
        ("input file", info.get("path", "")),
        ("input sha256", info.get("sha256", "")),
        ("image shape (ny, nx)", info.get("shape", list(b.shape))),
        ("pixel scale [arcsec]", info.get("pixel_scale_arcsec", run.pixel_scale)),
        ("flux unit", _photometry(manifest)[0]),
        ("zero point", _photometry(manifest)[2]),
        ("saturation (SATURATE)", info.get("saturation")),
        ("PSF FWHM [pix]", _psf(info)),
        ("method", method.get("method", method.get("name", ""))),
        *(
            [("thresholds for PSF FWHM [pix]", method["psf_fwhm_pix"])]
            if method.get("psf_fwhm_pix") is not None
            else []
        ),
        *((f"model {k}", v) for k, v in hashes),
        ("run id", manifest.get("run_id", "")),
        ("status", manifest.get("status", "")),
        ("package version", manifest.get("package_version", "")),
        ("result key", manifest.get("result_key", "")),
        ("updated", manifest.get("updated", "")),
    ]
    count_rows = [
        ("tiles screened / selected", f"{len(tiles)} / {summary.get('n_tiles', len(tiles))}"),
        ("failed tiles", summary.get("n_failed", int((tiles["status"] != "done").sum()))),
        ("Sources", len(sources)),
        ("blended sources", n_blended),
        ("clumps", len(clumps)),
        ("hosts of clumps", int(clumps["host_id"].nunique()) if len(clumps) else 0),
        ("wall time of the run [s]", summary.get("wall_seconds", "")),
        (
            "tile time: sum / median / max [s]",
            f"{seconds.sum():.1f} / {seconds.median():.2f} / {seconds.max():.2f}"
            if len(seconds)
            else "n/a",
        ),
    ]
    verdicts = [_verdict(row) for row in tiles.itertuples()]
    verdict_rows = [
        (
            f'<span class="swatch" style="background:{VERDICT_COLOURS[v]}"></span> '
            f"{html.escape(v)}",
            verdicts.count(v),
            f"{100.0 * verdicts.count(v) / max(len(verdicts), 1):.1f}%",
        )
        for v in ("accept", "inspect", "reject", "failed")
        if v != "failed" or v in verdicts
    ]
    worst = tiles.assign(worst=tiles["flagged_fraction"].fillna(0)).sort_values(
        "worst", ascending=False
    )
    worst = worst[[_verdict(row) != "accept" for row in worst.itertuples()]].head(10)
    full = (run.root / REPORT_DIR / FULL_RESOLUTION_FIGURE).is_file()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Output directory <code>{html.escape(str(run.root))}</code>. "
        + (
            f"The whole-mosaic figures are made from the mosaic binned {b.step} x {b.step} "
            "while it is read (image averaged, mask planes OR-ed, segmentation sampled); "
            if b.step > 1
            else "The whole-mosaic figures are made from the mosaic read unbinned; "
        )
        + f"in mosaic_mask.png {html.escape(notes.get('mosaic', ''))}. "
        + (
            f'Full resolution: <a href="{REPORT_DIR}/{FULL_RESOLUTION_FIGURE}">'
            f"{FULL_RESOLUTION_FIGURE}</a>.</p>"
            if full
            else f"{html.escape(_sentence(notes.get('full', '')))}.</p>"
        ),
    ]
    for message in summary.get("warnings", []) or []:
        parts.append(f'<p class="warn">Warning: {html.escape(str(message))}</p>')
    parts += ["<h2>Run</h2>", _table(run_rows), "<h2>Counts and timings</h2>", _table(count_rows)]
    parts += ["<h2>Tile verdicts</h2>", _verdict_table(verdict_rows)]
    if thresholds:
        text = ", ".join(f"{k} = {v:g}" for k, v in sorted(thresholds.items()))
        parts.append(
            "<p>A tile is inspected or rejected when the fraction of its core pixels with no "
            "data or an artefact (flagged_fraction: the union of the two, each pixel counted "
            f"once) exceeds the method's thresholds ({html.escape(text)}).</p>"
        )
    if len(worst):
        parts.append("<p>Tiles not accepted (worst first, at most 10):</p>")
        parts.append(
            _table(
                [
                    (
                        r.tile_id,
                        r.row,
                        r.col,
                        _verdict(r),
                        f"{100 * r.artefact_fraction:.2f}%",
                        f"{100 * r.no_data_fraction:.2f}%",
                        f"{100 * r.worst:.2f}%",
                        r.n_sources,
                        r.error or "",
                    )
                    for r in worst.itertuples()
                ],
                (
                    "tile",
                    "row",
                    "col",
                    "verdict",
                    "artefact",
                    "no data",
                    "flagged (no data or artefact)",
                    "sources",
                    "error",
                ),
            )
        )
    parts.append("<h2>Figures</h2>")
    note_of = {
        "mosaic_mask.png": "; ".join(n for n in (notes.get("mosaic"), notes.get("full")) if n),
        "segmentation.png": notes.get("segmentation"),
        "clumps_gallery.png": notes.get("clumps"),
        "rejected_gallery.png": notes.get("rejected"),
    }
    for figure in FIGURES:
        caption = CAPTIONS[figure]
        if note_of.get(figure):
            caption += f" Here: {note_of[figure]}."
        image = f'<img src="{REPORT_DIR}/{figure}" alt="{html.escape(figure)}">'
        link = ""
        if figure == "mosaic_mask.png" and full:
            target = f"{REPORT_DIR}/{FULL_RESOLUTION_FIGURE}"
            image = f'<a href="{target}">{image}</a>'
            link = f' <a href="{target}">Open the full-resolution image.</a>'
        parts.append(
            f"<figure>{image}<figcaption><b>{html.escape(figure)}</b>: "
            f"{html.escape(caption)}{link}</figcaption></figure>"
        )
    if injection is not None:
        parts += _injection_html(injection, notes)
    parts.append("<h2>Mask bits</h2>")
    parts.append(
        "<p>The <code>mask</code> array of <code>masks.zarr</code> is uint32; a pixel carries "
        "the bitwise OR of the planes below (value = 2<sup>bit</sup>). The colour is the one "
        "used in the figures.</p>"
    )
    bit_rows = []
    for bit_name, spec in describe_bits().items():
        colour = PLANE_COLOURS.get(bit_name)
        swatch = f'<span class="swatch" style="background:{colour}"></span>' if colour else ""
        bit_rows.append((spec["bit"], bit_name, spec["value"], spec["doc"], swatch))
    parts.append(_bits_table(bit_rows))
    parts.append("<h2>Method parameters</h2>")
    parts.append(_table(_flatten(method), ("parameter", "value")))
    parts.append("<h2>Run parameters</h2>")
    parts.append(_table(_flatten(manifest.get("config", {})), ("parameter", "value")))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _injection_html(injection: _Injection, notes: dict[str, str]) -> list[str]:
    """The "Injection-recovery" section: what was injected, the summary, the figures."""
    summary = injection.summary
    parts = [
        "<h2>Injection-recovery</h2>",
        "<p>This run screened the mosaic with synthetic objects of known position, flux and "
        "shape drawn into its pixels (<code>survey-seg inject</code>); the negated mosaic was "
        f"screened in <code>negative/</code>. {summary.get('n_injected', 0)} objects were "
        "injected; one row per object is in <code>injection.parquet</code>, one row per tile "
        "in <code>injection_tiles.parquet</code>. The other figures of this report show the "
        "injected run's catalogs and masks over the mosaic <em>without</em> the objects: "
        "<code>mosaic.zarr</code> holds the real pixels only.</p>",
        _table(_injection_rows(summary), ("quantity", "value", "meaning")),
    ]
    for figure in INJECTION_FIGURES:
        caption = CAPTIONS[figure]
        if notes.get(figure):
            caption += f" Here: {notes[figure]}."
        parts.append(
            f'<figure><img src="{REPORT_DIR}/{figure}" alt="{html.escape(figure)}">'
            f"<figcaption><b>{html.escape(figure)}</b>: {html.escape(caption)}</figcaption>"
            "</figure>"
        )
    return parts


def _sentence(text: str) -> str:
    """``text`` with its first letter in capitals (the rest untouched, unlike ``capitalize``)."""
    return text[:1].upper() + text[1:]


def _verdict_table(rows: list[tuple[str, int, str]]) -> str:
    body = "".join(
        f"<tr><td>{label}</td><td>{count}</td><td>{html.escape(share)}</td></tr>"
        for label, count, share in rows
    )
    return f"<table><tr><th>verdict</th><th>tiles</th><th>share</th></tr>{body}</table>"


def _bits_table(rows: list[tuple[Any, ...]]) -> str:
    body = "".join(
        f"<tr><td>{bit}</td><td>{html.escape(name)}</td><td>{value}</td>"
        f"<td>{html.escape(str(doc))}</td><td>{swatch}</td></tr>"
        for bit, name, value, doc, swatch in rows
    )
    header = "<tr><th>bit</th><th>name</th><th>value</th><th>meaning</th><th>colour</th></tr>"
    return f"<table>{header}{body}</table>"
