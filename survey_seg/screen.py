"""Screen one tile: a method's dense products become core masks, ids and catalog rows.

A screening method (classical or network) turns a tile window into
:class:`DenseProducts`; :func:`screen_tile` then measures the sources, keeps
those whose position the tile's core holds (each object is reported by exactly
one tile), gives every source a global id that any tile seeing it computes
alike, and composes the core's mask planes and segmentation. Pure in-memory
work: reading and writing live in :mod:`survey_seg.store`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import ndimage

from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS, conform
from survey_seg.masks import ARTEFACT_BITS, MaskBit
from survey_seg.measure import measure_segments, relabel_in_raster_order
from survey_seg.models.unet import QUALITY_CLASSES
from survey_seg.quality import flagged_fraction
from survey_seg.tiling import Tile, TileGrid

__all__ = [
    "ClumpCandidates",
    "DenseProducts",
    "ScreeningMethod",
    "TileResult",
    "screen_tile",
    "source_ids",
]

LOCAL_ID_BITS = 32
CLUMP_RADIUS = 2
TRUNCATION_FRAME = 4
"""A source reaching this close (pix) to a window side inside the mosaic may be cut."""
VERDICTS = ("accept", "inspect", "reject")


@dataclass(frozen=True)
class ClumpCandidates:
    """Clumps found in a window, in window pixel coordinates."""

    y: np.ndarray
    x: np.ndarray
    host_label: np.ndarray
    score: np.ndarray
    flux_fraction: np.ndarray

    @classmethod
    def empty(cls) -> ClumpCandidates:
        """No clumps."""
        f, i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return cls(y=f, x=f, host_label=i, score=f, flux_fraction=f)


@dataclass
class DenseProducts:
    """What a screening method returns for one window (all arrays window-shaped).

    Attributes
    ----------
    flux_image : numpy.ndarray
        Background-subtracted image, 0 where unusable.
    variance : numpy.ndarray
        Variance, 0 where unusable.
    detection_image : numpy.ndarray
        Image whose maximum in a segment is that segment's peak.
    sources : numpy.ndarray
        int32 labels ``1 .. n`` of deblended sources, 0 elsewhere.
    footprints : numpy.ndarray
        int32 labels of the footprints (a footprint holding several sources is a blend).
    artefacts : numpy.ndarray
        uint32 artefact planes (NO_DATA, BAD, SAT, CR, STREAK, GHOST).
    clumps : ClumpCandidates
        Clumps, each attached to a source label.
    blend_probability : numpy.ndarray or None
        Per source label ``1 .. n``; None means 1 for blended sources, 0 otherwise.
    stamp_quality : numpy.ndarray or None
        Per-stamp quality probabilities, if the method has a stamp head.
    stamp_size : int
        Side of those stamps in pixels.
    network_seconds : float
        Time spent in the network's forward pass (0 for methods without one).
    centres : numpy.ndarray or None
        ``(n, 2)`` window positions ``(y, x)`` of sources whose centre the method
        locates better than their flux centroid (deblended ones); NaN rows, or
        None, keep the centroid.
    """

    flux_image: np.ndarray
    variance: np.ndarray
    detection_image: np.ndarray
    sources: np.ndarray
    footprints: np.ndarray
    artefacts: np.ndarray
    clumps: ClumpCandidates
    blend_probability: np.ndarray | None = None
    stamp_quality: np.ndarray | None = None
    """``(len(QUALITY_CLASSES), h, w)`` per-stamp probabilities on a grid of
    ``stamp_size`` stamps starting at the window origin (network methods)."""
    stamp_size: int = 0
    network_seconds: float = 0.0
    centres: np.ndarray | None = None

    def keep_sources(self, keep: np.ndarray) -> DenseProducts:
        """These products with only the sources where ``keep`` (per label ``1 .. n``) is set.

        The kept sources are numbered ``1 .. m`` in their order; a dropped source's
        pixels leave its footprint, and its clumps go with it. ``n`` is
        ``len(keep)``, at least the highest label in :attr:`sources`: a label may
        cover no pixel (a source lost in resampling), and its per-source entries
        (:attr:`blend_probability`, :attr:`centres`) still count.
        """
        keep = np.asarray(keep, dtype=bool)
        highest = int(self.sources.max(initial=0))
        per_source = [a for a in (self.blend_probability, self.centres) if a is not None]
        if keep.ndim != 1 or keep.size < highest or any(len(a) != keep.size for a in per_source):
            n = len(per_source[0]) if per_source else highest
            raise ValueError(f"keep must hold one flag per source ({n}), got shape {keep.shape}")
        n = keep.size
        if keep.all() and n == highest:
            return self
        kept = np.flatnonzero(keep)
        renumber = np.zeros(n + 1, dtype=np.int32)
        renumber[kept + 1] = np.arange(1, kept.size + 1, dtype=np.int32)
        sources = renumber[self.sources]
        footprints = np.where((self.sources > 0) & (sources == 0), 0, self.footprints)
        hosts = renumber[self.clumps.host_label]
        with_host = hosts > 0
        clumps = ClumpCandidates(
            y=self.clumps.y[with_host],
            x=self.clumps.x[with_host],
            host_label=hosts[with_host].astype(np.int64),
            score=self.clumps.score[with_host],
            flux_fraction=self.clumps.flux_fraction[with_host],
        )
        return replace(
            self,
            sources=sources,
            footprints=relabel_in_raster_order(footprints),
            clumps=clumps,
            blend_probability=None
            if self.blend_probability is None
            else self.blend_probability[kept],
            centres=None if self.centres is None else self.centres[kept],
        )


class ScreeningMethod(Protocol):
    """What :func:`screen_tile` needs of a method."""

    name: str

    @property
    def halo_required(self) -> int:
        """Smallest halo (pix) for which tiled screening equals whole-image screening."""
        ...

    def segment(self, window, *, saturation: float | None) -> DenseProducts:
        """Dense products of one window."""
        ...

    def verdict(self, core_artefacts: np.ndarray) -> str:
        """``accept``, ``inspect`` or ``reject`` from the core's artefact planes."""
        ...

    def provenance(self) -> dict[str, object]:
        """Name, parameters and model hashes, for the manifest."""
        ...


@dataclass
class TileResult:
    """Everything one tile produces.

    Attributes
    ----------
    tile_index : int
        The tile.
    mask, segmentation : numpy.ndarray
        Core-shaped uint32 planes and int64 global source ids.
    sources, clumps : pandas.DataFrame
        Rows the tile reports (primary objects only), in the catalog schemas.
    stats : dict
        Verdict, counts, fractions and timing for ``tiles.parquet``.
    quality : numpy.ndarray or None
        Per-stamp probability that the core's data are bad, on the stamp grid of
        the mosaic (network methods, when the halo is a whole number of stamps).
    """

    tile_index: int
    mask: np.ndarray
    segmentation: np.ndarray
    sources: pd.DataFrame
    clumps: pd.DataFrame
    stats: dict = field(default_factory=dict)
    quality: np.ndarray | None = None


def source_ids(
    grid: TileGrid, owner: np.ndarray, y_peak: np.ndarray, x_peak: np.ndarray
) -> np.ndarray:
    """Global ids ``(owner << 32) | local`` of sources from their owner and peak pixel.

    ``local`` is one plus the raster index of the peak pixel in a fixed frame of
    side ``tile_size + 2 halo`` around the owner's core, so any tile that sees a
    source whole computes the same id without talking to the others.

    Parameters
    ----------
    grid : TileGrid
        The tile grid.
    owner : numpy.ndarray
        Index of the owning tile of each source.
    y_peak, x_peak : numpy.ndarray
        Mosaic pixel of each source's peak.

    Returns
    -------
    numpy.ndarray
        int64 ids.
    """
    side = grid.tile_size + 2 * grid.halo
    row, col = np.divmod(np.asarray(owner, dtype=np.int64), grid.n_cols)
    local_y = np.clip(np.asarray(y_peak) - (row * grid.tile_size - grid.halo), 0, side - 1)
    local_x = np.clip(np.asarray(x_peak) - (col * grid.tile_size - grid.halo), 0, side - 1)
    local = local_y * side + local_x + 1
    return (np.asarray(owner, dtype=np.int64) << LOCAL_ID_BITS) | local.astype(np.int64)


def screen_tile(
    window,
    tile: Tile,
    grid: TileGrid,
    method: ScreeningMethod,
    *,
    saturation: float | None = None,
    zero_point: float | None = None,
) -> TileResult:
    """Screen one tile window and return its core products and primary catalog rows.

    Parameters
    ----------
    window : WindowData
        The tile's image, variance and background (window-shaped), and where the
        input mask flags pixels: the method sees those as unusable (left out of
        detection and measurement) and they are BAD (NO_DATA where there is no data).
    tile : Tile
        The tile (its core, halo and window WCS).
    grid : TileGrid
        The grid the tile belongs to (ownership and ids).
    method : ScreeningMethod
        The screening method.
    saturation, zero_point : float or None
        ``SATURATE`` and ``MAGZERO`` of the mosaic.

    Returns
    -------
    TileResult
    """
    start = time.perf_counter()
    flagged = window.flagged
    if flagged is not None and flagged.any():
        has_data = np.isfinite(window.image) & np.isfinite(window.variance) & (window.variance > 0)
        hidden = replace(window, image=np.where(flagged, np.float32(np.nan), window.image))
        products = method.segment(hidden, saturation=saturation)
        products.artefacts = _flag_input_mask(products.artefacts, flagged & has_data)
    else:
        products = method.segment(window, saturation=saturation)
    oy, ox = tile.origin
    crop = tile.crop_slices

    core_artefacts = products.artefacts[crop]
    verdict = method.verdict(core_artefacts)
    planes = products.artefacts | _edge_plane(tile, grid.halo)
    if verdict == "reject":
        planes[crop] |= np.uint32(MaskBit.REJECTED)

    m = measure_segments(
        products.sources, products.flux_image, products.variance, products.detection_image, planes
    )
    x_peak, y_peak = m.x_peak + ox, m.y_peak + oy
    gx, gy = x_peak + m.dx, y_peak + m.dy
    if products.centres is not None:
        # offsets from the peak pixel, like the centroid's: they round alike in any window
        located = np.isfinite(products.centres[:, 0])
        gy[located] = y_peak[located] + (products.centres[located, 0] - m.y_peak[located])
        gx[located] = x_peak[located] + (products.centres[located, 1] - m.x_peak[located])
    owner = grid.owner_index(gx, gy).astype(np.int64)
    ids = source_ids(grid, owner, y_peak, x_peak)
    footprint = products.footprints[m.y_peak, m.x_peak] if m.labels.size else np.zeros(0, int)
    n_members = np.bincount(footprint, minlength=int(products.footprints.max()) + 1)
    is_blended = n_members[footprint] > 1
    group = np.full(n_members.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(group, footprint, ids)
    blend_group = group[footprint]
    truncated = _touches_frame(products.sources, TRUNCATION_FRAME, tile)

    id_lookup = np.concatenate([[0], ids])
    blended_lookup = np.concatenate([[False], is_blended])
    planes = planes | np.where(products.sources > 0, np.uint32(MaskBit.DETECTED), np.uint32(0))
    planes |= np.where(blended_lookup[products.sources], np.uint32(MaskBit.BLENDED), np.uint32(0))
    planes |= _clump_plane(products.clumps, planes.shape)

    owned = owner == tile.index
    clump_table, n_clumps = _clump_rows(products.clumps, ids, owned, tile, n_sources=m.labels.size)
    sky = _sky(tile, gx, gy)
    blend_probability = (
        products.blend_probability
        if products.blend_probability is not None
        else is_blended.astype(np.float64)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = (
            zero_point - 2.5 * np.log10(np.where(m.flux > 0, m.flux, np.nan))
            if zero_point is not None
            else np.full(m.flux.shape, np.nan)
        )
        snr = m.flux / m.flux_err
    sources = conform(
        pd.DataFrame(
            {
                "id": ids,
                "tile_id": np.full(ids.shape, tile.index, dtype=np.int64),
                "x": gx,
                "y": gy,
                "ra": sky[0],
                "dec": sky[1],
                "x_peak": x_peak,
                "y_peak": y_peak,
                "flux": m.flux,
                "flux_err": m.flux_err,
                "mag": mag,
                "snr": snr,
                "area": m.area,
                "a": m.a,
                "b": m.b,
                "theta": m.theta,
                "is_blended": is_blended,
                "blend_group": blend_group,
                "blend_probability": blend_probability,
                "n_clumps": n_clumps,
                "truncated": truncated,
                "flags": m.flags,
            }
        )[owned].reset_index(drop=True),
        SOURCE_COLUMNS,
    )
    core_planes = planes[crop]
    stats = {
        "verdict": verdict,
        "n_sources": len(sources),
        "n_blended": int(sources["is_blended"].sum()),
        "n_clumps": len(clump_table),
        "n_truncated": int(sources["truncated"].sum()),
        "no_data_fraction": float(np.mean((core_planes & np.uint32(MaskBit.NO_DATA)) != 0)),
        "artefact_fraction": float(np.mean((core_planes & np.uint32(ARTEFACT_BITS)) != 0)),
        "flagged_fraction": flagged_fraction(core_planes),
        "seconds": time.perf_counter() - start,
        "seconds_network": products.network_seconds,
    }
    core_quality = _core_stamps(products, tile)
    if core_quality is not None:
        stats["predicted_flagged_fraction"] = _core_flagged_estimate(
            core_quality[-1], tile, products.stamp_size
        )
        for name, values in zip(QUALITY_CLASSES[:-1], core_quality[:-1], strict=True):
            stats[f"p_{name}"] = float(values.max())
    return TileResult(
        tile_index=tile.index,
        mask=core_planes,
        segmentation=id_lookup[products.sources[crop]],
        sources=sources,
        clumps=clump_table,
        stats=stats,
        quality=None if core_quality is None else core_quality[-1].astype(np.float32),
    )


def _flag_input_mask(artefacts: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """BAD, and only BAD, on pixels with data that the input mask flags.

    The method saw them as no data: their NO_DATA (and any plane it set) gives way
    to BAD.
    """
    return np.where(bad, np.uint32(MaskBit.BAD), artefacts).astype(np.uint32)


def _core_stamps(products: DenseProducts, tile: Tile) -> np.ndarray | None:
    """The window's stamp probabilities over the core, when the stamps align with it."""
    size = products.stamp_size
    if products.stamp_quality is None or not size or tile.halo % size:
        return None
    first = tile.halo // size
    rows = -(-(tile.y1 - tile.y0) // size)
    cols = -(-(tile.x1 - tile.x0) // size)
    return products.stamp_quality[:, first : first + rows, first : first + cols]


def _core_flagged_estimate(flagged: np.ndarray, tile: Tile, stamp: int) -> float:
    """The core's flagged fraction from its stamps' estimates.

    A stamp that reaches beyond the mosaic has the window's padding in it, which
    the network sees as no data: its estimate counts those pixels as flagged,
    though they are not the mosaic's. Each stamp's estimate is brought back to its
    pixels inside the mosaic (``(f * n - outside) / inside``, in [0, 1]), and the
    stamps are averaged weighted by their pixels inside the core.
    """
    height, width = tile.mosaic_shape
    rows = tile.y0 + stamp * np.arange(flagged.shape[0])
    cols = tile.x0 + stamp * np.arange(flagged.shape[1])
    inside_y = np.clip(np.minimum(rows + stamp, height) - rows, 0, stamp)
    inside_x = np.clip(np.minimum(cols + stamp, width) - cols, 0, stamp)
    core_y = np.clip(np.minimum(rows + stamp, tile.y1) - rows, 0, stamp)
    core_x = np.clip(np.minimum(cols + stamp, tile.x1) - cols, 0, stamp)
    inside = np.outer(inside_y, inside_x).astype(float)
    in_core = np.outer(core_y, core_x).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.clip((flagged * stamp**2 - (stamp**2 - inside)) / inside, 0.0, 1.0)
    if not in_core.sum():
        return float("nan")
    return float(np.sum(np.where(in_core > 0, estimate, 0.0) * in_core) / in_core.sum())


def _edge_plane(tile: Tile, halo: int) -> np.ndarray:
    """EDGE where a window pixel lies within ``halo`` of the mosaic edge."""
    ny, nx = tile.window_shape
    oy, ox = tile.origin
    height, width = tile.mosaic_shape
    ys = np.arange(oy, oy + ny)
    xs = np.arange(ox, ox + nx)
    near_y = (ys < halo) | (ys >= height - halo)
    near_x = (xs < halo) | (xs >= width - halo)
    near = near_y[:, None] | near_x[None, :]
    return np.where(near, np.uint32(MaskBit.EDGE), np.uint32(0))


def _touches_frame(sources: np.ndarray, width: int, tile: Tile) -> np.ndarray:
    """Flag sources that reach within ``width`` of a window side inside the mosaic.

    Such a source may extend beyond the window, so its measurement may be partial.
    """
    n = int(sources.max())
    touched = np.zeros(n + 1, dtype=bool)
    oy, ox = tile.origin
    ny, nx = sources.shape
    height, width_mosaic = tile.mosaic_shape
    width = max(1, min(width, ny // 2, nx // 2))
    sides = (
        (oy > 0, sources[:width, :]),
        (oy + ny < height, sources[-width:, :]),
        (ox > 0, sources[:, :width]),
        (ox + nx < width_mosaic, sources[:, -width:]),
    )
    for inside_mosaic, strip in sides:
        if inside_mosaic:
            touched[np.unique(strip)] = True
    touched[0] = False
    return touched[1:]


def _clump_plane(clumps: ClumpCandidates, shape: tuple[int, int]) -> np.ndarray:
    """CLUMP on discs of radius :data:`CLUMP_RADIUS` around each clump."""
    plane = np.zeros(shape, dtype=np.uint32)
    if clumps.y.size == 0:
        return plane
    points = np.zeros(shape, dtype=bool)
    ys = np.clip(np.rint(clumps.y).astype(int), 0, shape[0] - 1)
    xs = np.clip(np.rint(clumps.x).astype(int), 0, shape[1] - 1)
    points[ys, xs] = True
    r = CLUMP_RADIUS
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = ndimage.binary_dilation(points, structure=(yy**2 + xx**2) <= r * r)
    plane[disc] = np.uint32(MaskBit.CLUMP)
    return plane


def _clump_rows(
    clumps: ClumpCandidates,
    ids: np.ndarray,
    owned: np.ndarray,
    tile: Tile,
    *,
    n_sources: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Catalog rows of the clumps of owned hosts, and the clump count of every source."""
    n_clumps = np.bincount(clumps.host_label, minlength=n_sources + 1)[1:].astype(np.int64)
    keep = owned[clumps.host_label - 1] if clumps.y.size else np.zeros(0, bool)
    order = np.lexsort((clumps.x[keep], clumps.y[keep])) if keep.any() else np.zeros(0, int)
    y, x = clumps.y[keep][order], clumps.x[keep][order]
    oy, ox = tile.origin
    sky = _sky(tile, x + ox, y + oy)
    host = ids[clumps.host_label[keep][order] - 1] if keep.any() else np.zeros(0, np.int64)
    local = np.arange(1, y.size + 1, dtype=np.int64)
    table = pd.DataFrame(
        {
            "id": (np.int64(tile.index) << LOCAL_ID_BITS) | local,
            "host_id": host,
            "tile_id": np.full(y.size, tile.index, dtype=np.int64),
            "x": x + ox,
            "y": y + oy,
            "ra": sky[0],
            "dec": sky[1],
            "probability": clumps.score[keep][order],
            "flux_fraction": clumps.flux_fraction[keep][order],
        }
    )
    return conform(table, CLUMP_COLUMNS), n_clumps


def _sky(tile: Tile, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) in degrees of mosaic pixel coordinates.

    The mosaic WCS (rather than the window's shifted one) makes the result
    independent of the tiling to the last bit.
    """
    if tile.mosaic_wcs is None or np.size(x) == 0:
        nan = np.full(np.shape(x), np.nan)
        return nan, nan
    ra, dec = tile.mosaic_wcs.pixel_to_world_values(np.asarray(x, float), np.asarray(y, float))
    return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
