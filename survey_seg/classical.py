"""The classical screening method: thresholding, watershed deblending, rule-based artefacts.

It is the baseline against which the networks are measured and the fallback
when no weights are available. Every step is local (a pixel's result depends
only on pixels within :attr:`ClassicalScreener.halo_required`), so a tile
screened with a large enough halo agrees exactly with the whole image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from survey_seg.clumps import clump_flux_fraction
from survey_seg.masks import MaskBit
from survey_seg.measure import (
    label_maximum_position,
    measure_segments,
    relabel_in_raster_order,
)
from survey_seg.quality import (
    cosmic_ray_contrast_for_psf,
    cosmic_ray_pixels,
    minor_axis_limit_for_psf,
    sharper_than_psf,
    tile_verdict,
)
from survey_seg.screen import ClumpCandidates, DenseProducts
from survey_seg.store import WindowData

__all__ = ["ClassicalConfig", "ClassicalScreener"]


@dataclass(frozen=True)
class ClassicalConfig:
    """Parameters of the classical method."""

    detect_threshold: float = 4.0
    """Detection threshold in units of the noise of the smoothed image (about 1.1 sigma
    of the unsmoothed noise at the default smoothing, SExtractor's usual depth)."""
    min_area: int = 5
    """Smallest footprint kept, in pixels."""
    smooth_sigma: float = 0.7
    """Gaussian smoothing (pixels) before thresholding: about the PSF sigma."""
    deblend_softening: float = 30.0
    """S/N scale ``s`` of the ``s * asinh(snr / s)`` compression before peak finding:
    peaks brighter than ``s`` are compared in relative rather than absolute contrast."""
    deblend_prominence: float = 0.5
    """Minimum prominence of a deblending peak on the compressed S/N image."""
    deblend_min_area: int = 10
    """Deblended children smaller than this (pix) are merged into their neighbours."""
    saturation_fraction: float = 0.98
    """Pixels at or above this fraction of ``SATURATE`` are flagged SAT."""
    cosmic_ray_sigma: float = 5.0
    """Significance above the local 3x3 median needed for a cosmic-ray pixel."""
    cosmic_ray_contrast: float = 2.5
    """Excess over the 3x3 median divided by the noise needed for a cosmic-ray pixel."""
    cosmic_ray_fine_contrast: float = 2.5
    """Excess over the 3x3 median divided by the fine structure (LA Cosmic's f_lim),
    for a well-sampled PSF; a screener for an undersampled one raises it above its
    stars' own (:func:`survey_seg.quality.cosmic_ray_contrast_for_psf`)."""
    cosmic_ray_max_minor_axis: float = 0.72
    """Bright segments narrower than this RMS minor axis (pix) are cosmic rays: the
    PSF-convolved sky cannot make them (stars measure about 0.9 at FWHM 1.8 pix).
    Tuned at ``nominal_psf_fwhm_pix``; a screener for another PSF scales it
    (:func:`survey_seg.quality.minor_axis_limit_for_psf`)."""
    nominal_psf_fwhm_pix: float = 1.8
    """PSF FWHM (pix) at which the PSF-dependent limits above were tuned."""
    cosmic_ray_min_snr: float = 30.0
    """S/N above which a narrow segment counts as a cosmic ray (faint sources are
    narrow by noise alone)."""
    streak_min_elongation: float = 8.0
    """Segments with a/b above this and longer than ``streak_min_length`` are trails."""
    streak_min_length: float = 15.0
    """Minimum RMS major axis (pix) of a trail segment."""
    ghost_min_area: int = 400
    """Footprints at least this large (pix) may be ghosts."""
    ghost_max_contrast: float = 2.0
    """... if the 90th over the 10th percentile of their S/N is below this (flat) ..."""
    ghost_max_median_snr: float = 15.0
    """... and their median S/N is below this (faint; a star inside a ghost leaves it so)."""
    bad_column_length: int = 64
    """Length of the running column mean used to find bad columns."""
    bad_column_sigma: float = 2.5
    """Offset of a column above its neighbours (mean S/N units) flagged BAD."""
    clump_sigma: float = 4.0
    """Significance of a clump above the smooth host (unsharp mask)."""
    clump_unsharp_sigma: float = 3.0
    """Gaussian sigma (pix) of the smooth host model."""
    clump_min_host_area: int = 80
    """Smallest host footprint searched for clumps, in pixels."""
    clump_min_separation: float = 3.0
    """Clumps closer than this (pix) to the host peak are its nucleus."""
    inspect_fraction: float = 0.02
    """Artefact fraction of a tile core above which it is flagged for inspection."""
    reject_fraction: float = 0.25
    """Artefact or no-data fraction of a tile core above which it is rejected."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"ClassicalConfig.{name} must be positive, got {value!r}")
        if self.inspect_fraction >= self.reject_fraction:
            raise ValueError(
                "ClassicalConfig.inspect_fraction must be below reject_fraction, got "
                f"{self.inspect_fraction} >= {self.reject_fraction}"
            )


class ClassicalScreener:
    """Configure once, call :meth:`segment` on many tile windows.

    Parameters
    ----------
    config : ClassicalConfig, optional
        Parameters; the defaults suit Euclid-VIS-like images (PSF FWHM ~ 2 pix).
    psf_fwhm_pix : float, optional
        PSF FWHM of the mosaic (pix): the cosmic-ray minor-axis limit is scaled from
        ``config.nominal_psf_fwhm_pix`` to it, and the cosmic-ray contrast limit is
        raised above an undersampled star's own
        (:func:`survey_seg.quality.cosmic_ray_contrast_for_psf`). None keeps the
        config's limits.
    """

    name = "classical"

    def __init__(
        self, config: ClassicalConfig | None = None, psf_fwhm_pix: float | None = None
    ) -> None:
        config = config or ClassicalConfig()
        limit = minor_axis_limit_for_psf(
            config.cosmic_ray_max_minor_axis, psf_fwhm_pix, config.nominal_psf_fwhm_pix
        )
        self.config = replace(
            config,
            cosmic_ray_max_minor_axis=limit,
            cosmic_ray_fine_contrast=cosmic_ray_contrast_for_psf(
                config.cosmic_ray_fine_contrast, psf_fwhm_pix
            ),
        )

    @property
    def halo_required(self) -> int:
        """Halo (pix) beyond which no pixel changes a core pixel's result.

        Objects extending further than this need a larger halo still.
        """
        c = self.config
        smooth = int(np.ceil(4 * c.smooth_sigma)) + 1
        return max(c.bad_column_length // 2 + 3, int(np.ceil(4 * c.clump_unsharp_sigma)) + smooth)

    def provenance(self) -> dict[str, object]:
        """Name and parameters, for the manifest."""
        return {"method": self.name, "config": asdict(self.config)}

    def verdict(self, core_artefacts: np.ndarray) -> str:
        """Tile verdict from the fractions of core pixels with no data or an artefact.

        Parameters
        ----------
        core_artefacts : numpy.ndarray
            uint32 artefact planes of the tile core.

        Returns
        -------
        str
            ``"reject"`` above ``reject_fraction``, ``"inspect"`` above
            ``inspect_fraction``, else ``"accept"``.
        """
        return tile_verdict(
            core_artefacts,
            inspect_fraction=self.config.inspect_fraction,
            reject_fraction=self.config.reject_fraction,
        )

    def segment(self, window: WindowData, *, saturation: float | None) -> DenseProducts:
        """Detect, deblend and flag artefacts in one window.

        Parameters
        ----------
        window : WindowData
            Image, variance and background of the window (NaN = no data).
        saturation : float or None
            Saturation level of the raw image, if known.

        Returns
        -------
        DenseProducts
        """
        c = self.config
        valid = np.isfinite(window.image) & np.isfinite(window.variance) & (window.variance > 0)
        flux = np.where(valid, window.image - window.background, 0.0).astype(np.float32)
        variance = np.where(valid, window.variance, 0.0).astype(np.float32)
        sigma = np.sqrt(variance)

        artefacts = np.zeros(flux.shape, dtype=np.uint32)
        artefacts[~valid] |= np.uint32(MaskBit.NO_DATA)
        if saturation is not None:
            saturated = valid & (window.image >= c.saturation_fraction * saturation)
            saturated = ndimage.binary_dilation(saturated, iterations=1) & valid
            artefacts[saturated] |= np.uint32(MaskBit.SAT)
        cosmic_rays = cosmic_ray_pixels(
            flux,
            sigma,
            valid & ((artefacts & np.uint32(MaskBit.SAT)) == 0),
            significance=c.cosmic_ray_sigma,
            contrast=c.cosmic_ray_contrast,
            fine_contrast=c.cosmic_ray_fine_contrast,
        )
        artefacts[cosmic_rays] |= np.uint32(MaskBit.CR)
        artefacts[self._bad_column_pixels(flux, sigma, valid)] |= np.uint32(MaskBit.BAD)

        unusable = (artefacts & np.uint32(MaskBit.NO_DATA | MaskBit.CR | MaskBit.BAD)) != 0
        work = np.where(unusable, 0.0, flux).astype(np.float32)
        smooth = ndimage.gaussian_filter(work, c.smooth_sigma, truncate=4.0)
        var_work = np.where(unusable, 0.0, variance)
        kernel_sq = 1.0 / (4.0 * np.pi * c.smooth_sigma**2)
        smooth_var = ndimage.gaussian_filter(var_work, c.smooth_sigma / np.sqrt(2), truncate=4.0)
        smooth_sigma = np.sqrt(np.maximum(smooth_var * kernel_sq, 0.0))
        snr = np.divide(smooth, smooth_sigma, out=np.zeros_like(smooth), where=smooth_sigma > 0)

        footprints, _ = ndimage.label(
            (snr > c.detect_threshold) & ~unusable, structure=np.ones((3, 3), bool)
        )
        footprints = _remove_small(footprints, c.min_area)
        footprints, artefacts = self._reject_artefact_footprints(
            footprints, artefacts, flux, variance, snr
        )
        sources = self._deblend(snr, footprints)
        sources, footprints, artefacts = self._reject_artefact_segments(
            sources, footprints, artefacts, flux, variance, snr
        )
        clumps = self._clumps(work, smooth, smooth_sigma, sources, snr)
        return DenseProducts(
            flux_image=flux,
            variance=variance,
            detection_image=snr,
            sources=sources,
            footprints=footprints,
            artefacts=artefacts,
            clumps=clumps,
            blend_probability=None,
        )

    # -- artefacts -----------------------------------------------------------------------

    def _bad_column_pixels(
        self, flux: np.ndarray, sigma: np.ndarray, valid: np.ndarray
    ) -> np.ndarray:
        """Columns whose running mean S/N stands out from the columns two to the side."""
        c = self.config
        snr = np.clip(np.divide(flux, sigma, out=np.zeros_like(flux), where=sigma > 0), -5, 5)
        column_mean = ndimage.uniform_filter1d(snr, c.bad_column_length, axis=0, mode="constant")
        side = 0.5 * (
            ndimage.shift(column_mean, (0, 2), order=0, mode="nearest")
            + ndimage.shift(column_mean, (0, -2), order=0, mode="nearest")
        )
        score = np.abs(column_mean - side)
        return (score > c.bad_column_sigma) & valid

    # -- detection -----------------------------------------------------------------------

    def _deblend(self, snr: np.ndarray, footprints: np.ndarray) -> np.ndarray:
        """Watershed of each footprint from its prominent peaks; one label per source."""
        c = self.config
        if footprints.max() == 0:
            return footprints
        inside = footprints > 0
        soft = c.deblend_softening
        compressed = np.where(inside, soft * np.arcsinh(snr / soft), 0.0)
        peaks = h_maxima(compressed, c.deblend_prominence).astype(bool) & inside
        markers, _ = ndimage.label(peaks, structure=np.ones((3, 3), bool))
        without = np.setdiff1d(np.unique(footprints[inside]), np.unique(footprints[peaks]))
        if without.size:
            ys, xs = label_maximum_position(snr, footprints, without)
            markers[ys, xs] = markers.max() + np.arange(1, without.size + 1)
        sources = watershed(-compressed, markers, mask=inside, connectivity=2)
        area = np.bincount(sources.ravel())
        small = np.flatnonzero(area < c.deblend_min_area)
        small = small[small > 0]
        if small.size:
            # a sliver is not a source: give its pixels to its neighbours, but keep
            # every footprint's brightest child
            keep = np.zeros(area.size, dtype=bool)
            ys, xs = label_maximum_position(snr, footprints, np.arange(1, footprints.max() + 1))
            present = ys >= 0
            keep[sources[ys[present], xs[present]]] = True
            drop = small[~keep[small]]
            if drop.size:
                markers[np.isin(markers, drop)] = 0
                sources = watershed(-compressed, markers, mask=inside, connectivity=2)
        return relabel_in_raster_order(sources)

    def _reject_artefact_footprints(
        self,
        footprints: np.ndarray,
        artefacts: np.ndarray,
        flux: np.ndarray,
        variance: np.ndarray,
        snr: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Move whole footprints that are trails (long, thin) or ghosts (large, flat, faint)."""
        c = self.config
        if footprints.max() == 0:
            return footprints, artefacts
        m = measure_segments(footprints, flux, variance, snr, artefacts)
        trail = (m.a > c.streak_min_length) & (
            m.a > c.streak_min_elongation * np.maximum(m.b, 1e-3)
        )
        ghost = np.zeros_like(trail)
        large = np.flatnonzero(m.area >= c.ghost_min_area) + 1
        if large.size:
            p10, p50, p90 = _percentiles_per_label(snr, footprints, large, (10, 50, 90))
            contrast = p90 / np.maximum(p10, 1e-12)
            ghost[large - 1] = (contrast < c.ghost_max_contrast) & (p50 < c.ghost_max_median_snr)
        for labels_of, bit in ((m.labels[trail], MaskBit.STREAK), (m.labels[ghost], MaskBit.GHOST)):
            if labels_of.size:
                pixels = np.isin(footprints, labels_of)
                artefacts[pixels] |= np.uint32(bit)
                footprints[pixels] = 0
        return relabel_in_raster_order(footprints), artefacts

    def _reject_artefact_segments(
        self,
        sources: np.ndarray,
        footprints: np.ndarray,
        artefacts: np.ndarray,
        flux: np.ndarray,
        variance: np.ndarray,
        snr: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Move too-sharp (cosmic ray) and too-elongated (trail) segments to the mask."""
        c = self.config
        if sources.max() == 0:
            return sources, footprints, artefacts
        m = measure_segments(sources, flux, variance, snr, artefacts)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = m.flux / m.flux_err
        sharp = sharper_than_psf(
            m.b, snr, max_minor_axis=c.cosmic_ray_max_minor_axis, min_snr=c.cosmic_ray_min_snr
        )
        trail = (m.a > c.streak_min_length) & (
            m.a > c.streak_min_elongation * np.maximum(m.b, 1e-3)
        )
        for labels_of, bit in ((m.labels[sharp], MaskBit.CR), (m.labels[trail], MaskBit.STREAK)):
            if labels_of.size:
                pixels = np.isin(sources, labels_of)
                artefacts[pixels] |= np.uint32(bit)
                sources[pixels] = 0
                footprints[pixels] = 0
        return relabel_in_raster_order(sources), relabel_in_raster_order(footprints), artefacts

    def _clumps(
        self,
        work: np.ndarray,
        smooth: np.ndarray,
        smooth_sigma: np.ndarray,
        sources: np.ndarray,
        snr: np.ndarray,
    ) -> ClumpCandidates:
        """Compact peaks above a smooth host model (unsharp mask), away from the nucleus."""
        c = self.config
        if sources.max() == 0:
            return ClumpCandidates.empty()
        host = ndimage.gaussian_filter(work, c.clump_unsharp_sigma, truncate=4.0)
        residual = smooth - host
        score = np.divide(
            residual, smooth_sigma, out=np.zeros_like(residual), where=smooth_sigma > 0
        )
        is_peak = (score == ndimage.maximum_filter(score, size=5)) & (score > c.clump_sigma)
        area = np.bincount(sources.ravel())
        big_host = area[sources] >= c.clump_min_host_area
        is_peak &= (sources > 0) & big_host
        ys, xs = np.nonzero(is_peak)
        if ys.size == 0:
            return ClumpCandidates.empty()
        labels = sources[ys, xs]
        peak_y, peak_x = label_maximum_position(snr, sources, np.arange(1, sources.max() + 1))
        far = np.hypot(ys - peak_y[labels - 1], xs - peak_x[labels - 1]) >= c.clump_min_separation
        ys, xs, labels = ys[far], xs[far], labels[far]
        fraction = clump_flux_fraction(work, sources, ys, xs, labels)
        return ClumpCandidates(
            y=ys.astype(np.float64),
            x=xs.astype(np.float64),
            host_label=labels.astype(np.int64),
            score=score[ys, xs].astype(np.float64),
            flux_fraction=fraction.astype(np.float64),
        )


def _percentiles_per_label(
    values: np.ndarray, labels: np.ndarray, which: np.ndarray, q: tuple[float, ...]
) -> np.ndarray:
    """Percentiles ``q`` of ``values`` within each label of ``which``: shape ``(len(q), n)``."""
    boxes = ndimage.find_objects(labels)
    result = np.empty((len(q), len(which)))
    for k, label in enumerate(which):
        box = boxes[label - 1]
        result[:, k] = np.percentile(values[box][labels[box] == label], q)
    return result


def _remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    area = np.bincount(labels.ravel())
    small = area < min_area
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return relabel_in_raster_order(labels)
