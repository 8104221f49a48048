"""The network screening method (``--method unet``).

The trained U-Net's heads become artefact planes, deblended sources and clumps.

Configure once (the weights load once per process and device), call
:meth:`NetworkScreener.segment` on many windows.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import ndimage

from survey_seg.blends import (
    absorb_enclosed,
    border_boundaries,
    deblended_centres,
    find_centres,
    join_central_knots,
    join_clumpy_pieces,
    join_symmetric_pieces,
    merge_by_centre_votes,
    merge_unbounded,
    merge_unseparated,
    split_asymmetric_companions,
    split_instances,
)
from survey_seg.clumps import find_clumps
from survey_seg.diffuse import DiffuseConfig, diffuse_sources
from survey_seg.errors import InputError
from survey_seg.hosts import HostConfig, join_pieces_to_hosts
from survey_seg.inference import (
    DEFAULT_MODEL,
    PREDICTION_HEADS,
    PSF_THRESHOLD_KEYS,
    Prediction,
    Predictor,
    load_predictor,
    network_input,
)
from survey_seg.masks import MaskBit
from survey_seg.measure import (
    label_maximum,
    label_maximum_position,
    measure_segments,
    relabel_in_raster_order,
    segment_snr,
)
from survey_seg.noise import gaussian_kernel_norm
from survey_seg.pieces import PairFeatures, PieceClassifier, join_pieces, pair_features
from survey_seg.psf import SIGMA_PER_FWHM, resolution_pix
from survey_seg.quality import (
    GHOST_MIN_RADIUS_FWHM,
    NETWORK_ARTEFACT_BITS,
    artefact_planes,
    column_runs,
    cosmic_ray_contrast_for_psf,
    cosmic_ray_median_size,
    cosmic_ray_pixels,
    ghosts_off_objects,
    lit_within,
    long_trails,
    minor_axis_limit_for_psf,
    regions_off,
    round_ghosts,
    sharp_cosmic_rays,
    sharper_than_psf,
    star_neighbour_ratio,
    tile_verdict,
    with_pixel_noise_artefacts,
)
from survey_seg.sampling import (
    bin_window_arrays,
    binning_factor,
    expand_to_native,
    isophote_segments,
    native_position,
    sample_to_native,
    seen_psf_fwhm,
    upsample_window_arrays,
    upsampled_to_native_position,
    upsampling_factor,
)
from survey_seg.screen import DenseProducts
from survey_seg.store import WindowData

__all__ = ["NetworkScreener", "thresholds_for_psf"]

_Config = TypeVar("_Config", DiffuseConfig, HostConfig)

SPURIOUS = np.uint32(MaskBit.CR | MaskBit.BAD | MaskBit.NO_DATA)
"""Planes that veto a source covering mostly them: compact artefacts that can look like
one. Trails and ghosts need no veto: the segmentation and centre heads were trained
to see them as background."""
VETO_MIN_SNR = 5.0
"""S/N that a binned screening's source must keep without its native cosmic-ray, bad and
no-data pixels, for a model config without a ``min_snr`` threshold
(:meth:`NetworkScreener._segment_binned`)."""
NOT_OBJECT_LIGHT = np.uint32(
    MaskBit.CR | MaskBit.BAD | MaskBit.NO_DATA | MaskBit.STREAK | MaskBit.GHOST | MaskBit.SAT
)
"""Planes whose light is no diffuse object's (:func:`survey_seg.diffuse.diffuse_sources`)."""
SMOOTH_SIGMA = 0.7
MERGE_AREA_RESOLUTION = 6.0
"""Sources smaller than this many resolution elements ((2 FWHM)^2 each) keep their
split without a valley (:func:`survey_seg.blends.merge_unseparated`)."""
MIN_ENCLOSED: float | None = 0.75
"""A source whose border touches one brighter source for at least this fraction of
its contacts lies inside it and joins it (:func:`survey_seg.blends.absorb_enclosed`)."""
MIN_VALLEY_SIGMA = 3.0
"""Neighbouring sources of a footprint without a valley this significant between
them are one object (:func:`survey_seg.blends.merge_unseparated`); a model config's
``min_valley_sigma`` threshold replaces it."""
MIN_CLUMP_TO_CENTRE: float | None = None
"""A source whose clump probability at its brightest pixel is at least this many
times its centre probability there is a piece of a clumpy galaxy and joins the
touching pieces (:func:`survey_seg.blends.join_clumpy_pieces`); a model config's
``min_clump_to_centre`` threshold replaces it (None: each piece stays a source)."""
MIN_KNOT_CLUMP = 0.55
"""Nor is it a piece unless its clump probability there is at least this; a model
config's ``min_knot_clump`` threshold replaces it. (At the clump catalog's 0.4,
crowded stars and compact galaxies on a clumpy host were taken for knots on
injected 2MASS K and Spitzer validation images.)"""
MIN_VOTE_FRACTION = 0.5
"""With an offset head: a source at least this share of whose pixels point into one
other source (of its footprint, or larger) joins it
(:func:`survey_seg.blends.merge_by_centre_votes`); a model config's
``min_vote_fraction`` threshold replaces it."""
MIN_VOTE_DISTANCE_FWHM = 3.0
"""Nor unless the centre those pixels vote for lies at least this many PSF FWHM (as
the network sees them) from the source's centroid: the offsets do not resolve the
members of a close pair (target pairs are 1.3-2.5 FWHM apart); a model config's
``min_vote_distance_fwhm`` threshold replaces it."""
CLOSE_PAIR_FWHM = 2.5
"""A piece whose light lies within this many PSF FWHM of its object's centre, as close as
the members of a close pair (1.3-2.5 FWHM apart), joins that object only if it differs
from its mirror image by less than both ``symmetry_sigma`` and the valley rule's
fraction of its peak (:func:`survey_seg.blends.join_symmetric_pieces`): on a faint
companion that close, noise hides the asymmetry."""
MIN_VALLEY_FRACTION = 0.1
"""Nor are they two without a valley of this fraction of the fainter peak (a relative
dip: a few sigma on a bright galaxy is a dust lane or a ripple, not a second object);
a model config's ``min_valley_fraction`` threshold replaces it."""
COMPANION_MARGIN = 2
"""Pixels around an artefact (CR, BAD, STREAK, GHOST, SAT, NO_DATA) whose light the
companion search (:func:`~survey_seg.blends.split_asymmetric_companions`) does not
compare: the significance map smooths an artefact's light that far."""
COMPANION_BELOW_SKY_SIGMA = 3.0
"""Light this many sigma below the sky is no object's (a dead column or a hole that the
artefact planes missed): the companion search does not compare it either, where a
star's wing would face a dark mirror image."""
# A model config's ``weak_centre`` threshold (absent: off) also seeds sources at
# centre peaks above it and at most ``centre``; such a source keeps its split only
# with a valley of ``weak_valley_fraction`` of the fainter peak, whatever its area
# (:func:`survey_seg.blends.merge_unseparated`, ``weak``; measured in the README).
# A model config's ``clump_min_offset_fwhm`` threshold (absent: 0, off) drops a clump
# peak within that many PSF FWHM (as the network sees them) of its host's
# light-weighted centre: a clump is off the centre, not the nucleus, and never the
# whole of a source (:func:`survey_seg.clumps.find_clumps`; measured in the README).
# Its ``clump_peak_min_to_centre`` threshold (absent: off) drops a clump peak where the
# clump probability is less than that many times the centre probability: an
# object's centre, not a knot (:func:`survey_seg.clumps.find_clumps`).
# Its ``knot_join_fwhm`` threshold (absent: 0, off) first joins a source whose clump
# peak lies that close to its own centre to its touching neighbour of highest
# saddle, if that one is at least ``1 / knot_max_flux_ratio`` times as bright
# (absent: any) and their saddle at least ``knot_min_saddle_fraction`` of the knot's
# peak (absent: 0): a knot that came out as a source of its own goes back to its
# host (:func:`survey_seg.blends.join_central_knots`; measured in the README). Its
# clump peaks are those above ``knot_clump`` (absent: the catalog's ``clump``), so
# that the catalog's threshold only filters clumps, as threshold tuning assumes.
# Its ``sure_centre`` threshold (absent: off) lets each centre peak at least that
# high flood from its 3 x 3 block and keep its source however small: a faint star
# on a bright star's slope (:func:`survey_seg.blends.split_instances`).
# Its ``sure_split`` threshold (absent: off) keeps apart two touching sources whose
# seed peaks both reach it, valley or not (:func:`survey_seg.blends.merge_unseparated`,
# ``sure``).
# Its ``min_snr`` threshold (absent: off) leaves out every source whose catalog S/N
# (flux over its error) and peak point-source significance are both under it, the
# variance scaled for correlated noise: a survey catalog's significance limit
# (:meth:`NetworkScreener._significant`).
# Its ``max_border_boundary`` threshold (absent: off) merges touching sources whose
# common border has a mean boundary probability under it, for a network trained with
# the boundary head (:func:`survey_seg.blends.merge_unbounded`). Its
# ``min_border_boundary`` threshold (absent: off) keeps apart, in the valley and
# enclosure merges, two sources whose common border has a mean boundary probability
# at least that (:func:`survey_seg.blends.border_boundaries`).
# Its ``fragment`` threshold (absent: off) joins a footprint without a centre peak to
# the object that pixels of object probability above it connect it with: an island
# of a large galaxy's faint outskirts, not a source of its own
# (:func:`survey_seg.blends.split_instances`, ``fragment_threshold``).
_COSMIC_RAY_MAX_MINOR_AXIS = 0.72  # pix, for a model config that sets none
_TRAINING_PSF_FWHM_PIX = 1.8  # pix, for a model config that states none
NARROWEST_TRAINING_PSF = 0.75
"""Narrowest PSF of the training scenes, over the training PSF (1 - their jitter)."""
PIXEL_NOISE_MIN_SCALE = 1.25
"""Noise correlated on the PSF's scale by this factor or more (the mosaic's
``noise_scale``) is seen twice: objects in the noise of the PSF's scale, ghosts
and bad columns in one pixel's noise
(:func:`~survey_seg.quality.with_pixel_noise_artefacts`).
Under it the two S/N planes differ by less than the sky noise of the training
scenes varies (``condition_jitter`` 0.25), and one pass serves both."""
PIXEL_NOISE_GHOST_MIN_RADIUS_FWHM = 3.0
"""A ghost seen only in one pixel's noise holds a disk of this radius (PSF FWHM): the
correlated noise's blobs, seen so, reach 35 pixels (2 FWHM in radius) on the
drizzle-correlated Spitzer and SDSS r images, and a ghost is tens of FWHM across
(the simulator's 11-33)."""
_ISOPHOTE_SMOOTHING = 0.5
"""A binned screening's footprints are cut to the native isophote of the light
smoothed by a Gaussian of this fraction of the PSF's sigma: it widens a point
source by 12 % and leaves on the light it compares a noise of half a pixel's
sigma at the narrowest PSF screened binned (2.7 pix), a quarter at 5.4 pix
(:func:`~survey_seg.sampling.isophote_segments`; 0.5 against 1 on validation
mosaic 801, psf3 and psf5: object pixels' IoU 0.79 / 0.82 against 0.77 / 0.76)."""
_NATIVE_COSMIC_RAY_LIMITS = {"significance": 5.0, "contrast": 2.5, "fine_contrast": 2.5}
"""LA Cosmic limits of a binned screening's native cosmic-ray plane (those of the
classical method's defaults: its PSF is wide, so no star approaches them)."""


@dataclass(frozen=True)
class _NativePlanes:
    """The native pixels' part of a resampled screening (:meth:`NetworkScreener._native_planes`)."""

    valid: np.ndarray
    flux: np.ndarray
    variance: np.ndarray
    sigma: np.ndarray
    artefacts: np.ndarray

    def detection(self, smoothing: float) -> np.ndarray:
        """The S/N smoothed by a Gaussian of ``smoothing`` pix: a segment's peak is its max."""
        snr = np.where(self.valid, self.flux / np.where(self.valid, self.sigma, 1.0), 0.0)
        return ndimage.gaussian_filter(snr, smoothing, truncate=4.0)

    def light(self, smoothing: float, excluded: np.ndarray | None = None) -> np.ndarray:
        """The flux smoothed by a Gaussian of ``smoothing`` pix over the valid pixels.

        Pixels where ``excluded`` is set (a cosmic ray, a bad pixel) neither give
        light to their neighbours nor get any; they and the pixels without data
        are NaN.
        """
        used = self.valid if excluded is None else self.valid & ~excluded
        weight = ndimage.gaussian_filter(used.astype(np.float64), smoothing, truncate=4.0)
        summed = ndimage.gaussian_filter(
            np.where(used, self.flux, 0.0).astype(np.float64), smoothing, truncate=4.0
        )
        return np.where(used, summed / np.where(used, weight, 1.0), np.nan)


@dataclass(frozen=True)
class _NativeArtefacts:
    """A binned screening's native pass (:meth:`NetworkScreener._native_artefacts`)."""

    bad: np.ndarray
    """Boolean: BAD pixels."""
    ghost: np.ndarray
    """Boolean: GHOST pixels."""
    objects: np.ndarray
    """Boolean: pixels the pass sees as objects (object probability over its threshold)."""
    stamps: np.ndarray | None
    """The data-quality stamps' probabilities (None without the stamp head)."""
    network_seconds: float
    """Seconds the pass took."""


class NetworkScreener:
    """Screen windows with the trained screening network.

    Parameters
    ----------
    model_path : path-like
        The model's config file (its weights lie beside it).
    device : str
        ``auto`` (a GPU when present), ``cpu`` or ``cuda[:N]``.
    precision : str
        ``auto``, ``float32`` or ``bfloat16`` (see :data:`survey_seg.methods.PRECISIONS`).
    flips : int, optional
        Passes averaged per window on flips of it, 1, 2 or 4 (default: the model
        config's ``test_time_flips``; see :class:`survey_seg.inference.Predictor`).
    psf_fwhm_pix : float, optional
        PSF FWHM of the mosaics to screen (pixels). A PSF at least 1.5 times the
        network's training PSF is screened binned by the nearest integer
        (:mod:`survey_seg.sampling`); the thresholds are the model's for the PSF
        it then sees (:func:`thresholds_for_psf`). None: those of its training PSF.
    """

    name = "unet"

    def __init__(
        self,
        model_path: str | os.PathLike = DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        flips: int | None = None,
        psf_fwhm_pix: float | None = None,
    ):
        self.predictor = load_predictor(model_path, device, precision, flips)
        _check_trained_heads(self.predictor)
        self._offsets_trained = "offset" in self.predictor.config.get("heads", ())
        self._boundaries_trained = "boundary" in self.predictor.config.get("heads", ())
        self.diffuse = _config_entry(self.predictor, "diffuse", DiffuseConfig)
        """Diffuse sources are looked for when the model config has a ``diffuse`` entry."""
        self.hosts = _config_entry(self.predictor, "hosts", HostConfig)
        """Pieces join extended hosts when the model config has a ``hosts`` entry."""
        self.pieces = _piece_classifier(Path(model_path), self.predictor.config)
        """Touching sources judged one object join, when the model config has a
        ``pieces`` entry (:mod:`survey_seg.pieces`)."""
        self.precision = precision
        self.psf_fwhm_pix = psf_fwhm_pix
        psf_thresholds = self.predictor.config.get("psf_thresholds")
        training_psf = (psf_thresholds or {}).get("nominal_psf_fwhm_pix", _TRAINING_PSF_FWHM_PIX)
        self.binning = binning_factor(psf_fwhm_pix, training_psf)
        self.upsampling = upsampling_factor(psf_fwhm_pix, training_psf, NARROWEST_TRAINING_PSF)
        seen_psf = seen_psf_fwhm(psf_fwhm_pix, self.binning, self.upsampling)
        self._seen_psf_fwhm = training_psf if seen_psf is None else seen_psf
        self._seen_resolution = (
            self.upsampling * resolution_pix(psf_fwhm_pix)
            if self.upsampling > 1
            else self._seen_psf_fwhm
        )
        """Width (pix) of a point source as the network sees it: on an upsampled window, a
        resolution element of the native pixels (2 of them) spans ``upsampling`` fine
        pixels each."""
        self.thresholds = thresholds_for_psf(self.predictor.thresholds, psf_thresholds, seen_psf)
        self.thresholds["cosmic_ray_max_minor_axis"] = minor_axis_limit_for_psf(
            self.thresholds.get("cosmic_ray_max_minor_axis", _COSMIC_RAY_MAX_MINOR_AXIS),
            seen_psf,
            training_psf,
        )

    @property
    def halo_required(self) -> int:
        """Half the U-Net's receptive field, rounded up to the pooling stride."""
        depth = self.predictor.model.config.depth
        scales = [2**level for level in range(depth)]
        # per level, down and up: two 3x3 convolutions (4 s) and a pooling or an
        # upsampling step (s); at the bottom, two 3x3 convolutions at scale 2**depth
        diameter = (1 + 2 * sum(5 * s for s in scales) + 4 * 2**depth) * self.binning
        return -(-(diameter // 2 + 1) // self.alignment) * self.alignment

    @property
    def alignment(self) -> int:
        """Multiple that tile size and halo must be (the pooling stride, times the binning).

        Then every window sees the same binning blocks and pooling grid. A binned
        screening also aligns the data-quality stamps, which it takes from a pass
        over the native pixels (:meth:`_native_artefacts`): the stride is then the
        least common multiple of the binned pooling stride and the stamp side, and
        without it no halo default would be a whole number of stamps, so no tile
        would get the classifier's estimate (``predicted_flagged_fraction``).
        """
        config = self.predictor.model.config
        stride = 2**config.depth * self.binning
        if self.binning > 1:
            stride = math.lcm(stride, config.stamp_size)
        return stride

    def provenance(self) -> dict[str, object]:
        """Name, weight hashes, thresholds and training summaries, for the manifest."""
        config = self.predictor.config
        provenance: dict[str, object] = {
            "method": self.name,
            "model": config.get("name"),
            "sha256": self.predictor.sha256,
            "precision": self.precision,
            "flips": self.predictor.flips,
            "psf_fwhm_pix": self.psf_fwhm_pix,
            "binning": self.binning,
            "upsampling": self.upsampling,
            "thresholds": self.thresholds,
            "diffuse": None if self.diffuse is None else asdict(self.diffuse),
            "hosts": None if self.hosts is None else asdict(self.hosts),
            "pieces": None
            if self.pieces is None
            else {
                "sha256": config["pieces"]["sha256"],
                "min_probability": self.pieces.min_probability,
                "sure_centre": self.pieces.sure_centre,
            },
            "architecture": config["architecture"],
            "training": _training_summary(config),
        }
        clump_config = self.predictor.clump_config
        if clump_config is not None:
            provenance["clump_model"] = {
                "model": clump_config.get("name"),
                "sha256": self.predictor.clump_sha256,
                "architecture": clump_config["architecture"],
                "training": _training_summary(clump_config),
            }
        return provenance

    def verdict(self, core_artefacts: np.ndarray) -> str:
        """Tile verdict from the fractions of core pixels with no data or an artefact."""
        return tile_verdict(
            core_artefacts,
            inspect_fraction=self.thresholds["inspect_fraction"],
            reject_fraction=self.thresholds["reject_fraction"],
        )

    def _cosmic_ray_sources(
        self,
        sources: np.ndarray,
        footprints: np.ndarray,
        flux: np.ndarray,
        variance: np.ndarray,
        snr: np.ndarray,
        artefacts: np.ndarray,
    ) -> np.ndarray:
        """CR plane on sources sharper than the PSF allows (cosmic rays the network missed).

        Only a source alone in its footprint is measured: the watershed cuts a
        blend's members along the valley between them, so a star of a close pair
        measures narrower across the cut than the PSF is and would be taken for a
        cosmic ray (on a pair 1.5 FWHM apart, one star in two was).
        """
        plane = np.zeros(sources.shape, dtype=np.uint32)
        if sources.max() == 0:
            return plane
        m = measure_segments(sources, flux, variance, snr, artefacts)
        with np.errstate(divide="ignore", invalid="ignore"):
            source_snr = m.flux / m.flux_err
        sharp = sharper_than_psf(
            m.b,
            source_snr,
            max_minor_axis=self.thresholds["cosmic_ray_max_minor_axis"],
            min_snr=self.thresholds.get("cosmic_ray_min_snr", 30.0),
        )
        sharp &= _alone_in_footprint(sources, footprints, m.labels)
        if sharp.any():
            plane[np.isin(sources, m.labels[sharp])] = np.uint32(MaskBit.CR)
        return plane

    def segment(self, window: WindowData, *, saturation: float | None) -> DenseProducts:
        """Artefacts, sources, footprints and clumps of one window.

        With a binning (a wide PSF) or an upsampling (an undersampled one), the
        network screens the resampled window and its products are mapped back to
        the native pixels (:meth:`_segment_binned`, :meth:`_segment_upsampled`).
        With a ``min_snr`` threshold, sources under it by their catalog S/N and
        their peak significance alike are left out (:meth:`_significant`).
        """
        if self.binning > 1:
            products = self._segment_binned(window, saturation=saturation)
        elif self.upsampling > 1:
            products = self._segment_upsampled(window, saturation=saturation)
        else:
            products = self._segment_at_network_sampling(window, saturation=saturation)
        min_snr = self.thresholds.get("min_snr")
        if min_snr is None:
            return products
        return products.keep_sources(self._significant(products, min_snr))

    def _significant(
        self, products: DenseProducts, min_snr: float, excluded: np.ndarray | None = None
    ) -> np.ndarray:
        """Per source: its catalog S/N or its peak point-source significance reaches ``min_snr``.

        The catalog S/N is the flux over its error on the source's pixels; the
        significance, the S/N image filtered by a Gaussian as wide as a resolution
        element (:func:`~survey_seg.psf.resolution_pix`: the PSF, at least 2 px) in units of its own
        noise (a matched filter for a point source). Either
        measure alone would drop real objects: a compact companion whose segment a
        bright neighbour squeezes has a low catalog S/N but a significant peak, and
        a faint extended galaxy the reverse. The variance is scaled for correlated
        noise, so both are in units of the noise on the PSF's scale. Pixels
        ``excluded`` (boolean, optional) count with neither their light nor their
        noise.
        """
        n = int(products.sources.max(initial=0))
        sources, flux, variance = products.sources, products.flux_image, products.variance
        if excluded is not None:  # their light left out
            sources = np.where(excluded, 0, sources)
            flux = np.where(excluded, 0.0, flux)
            variance = np.where(excluded, 0.0, variance)
        snr = segment_snr(products.sources, flux, variance)
        if excluded is not None:  # a source with no light left has none to show
            snr = np.nan_to_num(snr, nan=-np.inf)
        valid = variance > 0
        sigma_pix = resolution_pix(self.psf_fwhm_pix or _TRAINING_PSF_FWHM_PIX) * SIGMA_PER_FWHM
        ratio = flux / np.sqrt(np.where(valid, variance, 1.0))
        significance = ndimage.gaussian_filter(
            np.where(valid, ratio, 0.0), sigma_pix, truncate=4.0
        ) / gaussian_kernel_norm(sigma_pix)
        peak = label_maximum(significance, sources, np.arange(1, n + 1))
        return ~((snr < min_snr) & (peak < min_snr))

    @property
    def _veto_snr(self) -> float:
        """S/N a binned source's light must keep without its cosmic-ray and bad pixels."""
        return float(self.thresholds.get("min_snr") or VETO_MIN_SNR)

    def _bounded(
        self, sources: np.ndarray, footprints: np.ndarray, boundary: np.ndarray | None
    ) -> set[tuple[int, int]] | None:
        """Touching sources with a boundary between them; None unless kept apart so.

        A model config keeps them apart with a ``min_border_boundary`` threshold;
        ``boundary`` is the trained boundary head's map, or None.
        """
        min_border_boundary = self.thresholds.get("min_border_boundary")
        if boundary is None or not min_border_boundary:
            return None
        means = border_boundaries(sources, footprints, boundary)
        return {pair for pair, mean in means.items() if mean >= min_border_boundary}

    def _artefact_probability(
        self,
        window: WindowData,
        saturation: float | None,
        prediction: Prediction,
        psf_fwhm_pix: float | None,
    ) -> np.ndarray:
        """The artefact head's probabilities of ``window``, read in correlated noise too.

        Where the window's noise is correlated (``noise_scale`` at least
        :data:`PIXEL_NOISE_MIN_SCALE`), its variance is scaled so that objects are
        detected in the noise of the PSF's scale; that dims each pixel of a bad
        column or a ghost by the same factor. A second pass of the network then
        sees the window with the variance unscaled, and its GHOST and BAD channels
        replace ``prediction``'s (:func:`~survey_seg.quality.with_pixel_noise_artefacts`;
        a ghost region at least :data:`PIXEL_NOISE_GHOST_MIN_RADIUS_FWHM` of
        ``psf_fwhm_pix`` in radius). Under that scale, ``prediction``'s own.
        """
        scale = _pixel_noise_scale(window)
        if scale == 1.0:
            return prediction.artefact
        pixel_variance = window.variance / np.float32(scale**2)
        planes = network_input(window.image, pixel_variance, window.background, saturation)
        return with_pixel_noise_artefacts(
            prediction.artefact,
            self.predictor.predict(planes).artefact,
            self.thresholds["artefact"],
            min_ghost_area=_ghost_area(psf_fwhm_pix, PIXEL_NOISE_GHOST_MIN_RADIUS_FWHM),
        )

    def _segment_binned(self, window: WindowData, *, saturation: float | None) -> DenseProducts:
        """Screen the window binned by :attr:`binning`; products on the native pixels.

        Each product comes from the sampling that suits it. Sources, footprints,
        clumps and the STREAK plane are the binned screening's, each binned
        pixel's value on its block's native pixels (no data excluded): a wide PSF
        makes objects and trails wide; a STREAK region keeps its native pixels
        that hold light, where it has any (:func:`~survey_seg.quality.lit_within`).
        The BAD and GHOST planes and the data-quality stamps come from a pass of
        the network over the native pixels (:meth:`_native_artefacts`): a hot
        pixel or a bad column is one pixel wide whatever the PSF, and a binned
        view blurs it into its neighbours' blocks; a ghost is as wide as the
        optics make it, and binned by 5 it is a compact blob that the network
        takes for an object (GHOST recall 0 under a 9-pix PSF), or for a piece of
        a thick trail: a STREAK region mostly on a ghost is cleared
        (:func:`~survey_seg.quality.regions_off`). NO_DATA, SAT and CR are the
        native pixels' own (:meth:`_native_planes`).

        The native planes also decide which binned sources are artefacts: a source
        is left out when its light without its native CR, BAD and NO_DATA pixels
        is not significant (:meth:`_significant` at :attr:`_veto_snr`), where
        binned, an object that a cosmic-ray track crosses looked like a mostly
        cosmic-ray source and was lost (22 of 25 stars and galaxies at PSF 5.4 px,
        ``test_a_wide_psf_keeps_objects_that_a_cosmic_ray_crosses``). Nor is a
        source that lies mostly on the native GHOST plane with no pixel that the
        native pass sees as an object (:func:`_ghost_sources`).

        Last, the sources are cut to the native isophote of one pixel's noise
        (:func:`~survey_seg.sampling.isophote_segments`, the light smoothed by
        :data:`_ISOPHOTE_SMOOTHING` of the PSF's sigma, without its CR, BAD and
        NO_DATA pixels): binned, the network draws footprints at a ``binning``
        times fainter isophote, which join neighbours several PSF widths apart
        into blends.
        """
        factor, shape = self.binning, window.image.shape
        arrays = bin_window_arrays(window.image, window.variance, window.background, factor)
        binned = self._segment_at_network_sampling(
            WindowData(*arrays),
            saturation=None,
            veto=np.uint32(MaskBit.NO_DATA),
            split_companions=False,
        )
        native = self._native_planes(window, saturation)
        seen = self._native_artefacts(window, saturation, native)
        artefacts = native.artefacts.copy()
        artefacts[seen.ghost] |= np.uint32(MaskBit.GHOST)
        streak = (binned.artefacts & np.uint32(MaskBit.STREAK)) != 0
        streak = expand_to_native(streak, factor, shape) & native.valid
        # a bright bad column is lit too, and lights the box means of its neighbours
        near_bad = ndimage.binary_dilation(seen.bad, structure=np.ones((5, 5), bool))
        trail = lit_within(streak, native.flux, native.sigma) & ~near_bad
        # binned by 5 a ghost can look like a piece of a thick trail
        trail = regions_off(trail, seen.ghost)
        artefacts[trail] |= np.uint32(MaskBit.STREAK)
        artefacts[seen.bad] |= np.uint32(MaskBit.BAD)
        artefacts[~native.valid] = np.uint32(MaskBit.NO_DATA)

        def labels(binned_labels: np.ndarray) -> np.ndarray:
            return np.where(native.valid, expand_to_native(binned_labels, factor, shape), 0)

        clumps = binned.clumps
        products = DenseProducts(
            flux_image=native.flux,
            variance=native.variance,
            detection_image=native.detection(SMOOTH_SIGMA * factor),
            sources=labels(binned.sources),
            footprints=labels(binned.footprints),
            artefacts=artefacts,
            clumps=replace(
                clumps, y=native_position(clumps.y, factor), x=native_position(clumps.x, factor)
            ),
            blend_probability=binned.blend_probability,
            stamp_quality=seen.stamps,
            stamp_size=self.predictor.model.config.stamp_size if seen.stamps is not None else 0,
            network_seconds=binned.network_seconds + seen.network_seconds,
            centres=None if binned.centres is None else native_position(binned.centres, factor),
        )
        spurious = (artefacts & SPURIOUS) != 0
        keep = self._significant(products, self._veto_snr, spurious)
        keep &= ~_ghost_sources(products.sources, seen.ghost, seen.objects)
        products = products.keep_sources(keep)
        psf_sigma = (self.psf_fwhm_pix or _TRAINING_PSF_FWHM_PIX) * SIGMA_PER_FWHM
        sources, footprints = isophote_segments(
            products.sources,
            native.light(_ISOPHOTE_SMOOTHING * psf_sigma, excluded=spurious),
            native.sigma / window.noise_scale,  # one pixel's noise, as the truth's
            core_light=native.light(psf_sigma, excluded=spurious),
        )
        return replace(products, sources=sources, footprints=footprints)

    def _native_artefacts(
        self, window: WindowData, saturation: float | None, native: _NativePlanes
    ) -> _NativeArtefacts:
        """The BAD and GHOST planes and the data-quality stamps of a pass over the native pixels.

        One pass of the network over the window as it is, its artefact channels at
        the model's thresholds (in correlated noise, the BAD and GHOST channels of a
        second pass in one pixel's noise: :meth:`_artefact_probability`). The
        GHOST plane keeps the regions off the objects this pass sees
        (:func:`~survey_seg.quality.ghosts_off_objects`), round and several PSF
        widths across (:func:`~survey_seg.quality.round_ghosts`):
        under a wide PSF the channel also fires along a trail's wings, and in
        specks (on the Spitzer image split 3 x 3, 38 of them, of 9-100 pixels).
        """
        planes = network_input(window.image, window.variance, window.background, saturation)
        start = time.perf_counter()
        prediction = self.predictor.predict(planes)
        artefact_probability = self._artefact_probability(
            window, saturation, prediction, self.psf_fwhm_pix
        )
        seconds = time.perf_counter() - start
        seen = artefact_planes(
            artefact_probability,
            native.valid,
            window.image,
            saturation,
            threshold=self.thresholds["artefact"],
        )
        object_probability = prediction.segmentation[1] + prediction.segmentation[2]
        objects = native.valid & (object_probability > self.thresholds["object"])
        ghost = round_ghosts(
            ghosts_off_objects(seen & np.uint32(MaskBit.GHOST), objects, native.flux),
            min_area=_ghost_area(self.psf_fwhm_pix, GHOST_MIN_RADIUS_FWHM),
        )
        return _NativeArtefacts(
            bad=(seen & np.uint32(MaskBit.BAD)) != 0,
            ghost=(ghost & np.uint32(MaskBit.GHOST)) != 0,
            objects=objects,
            stamps=prediction.stamps,
            network_seconds=seconds,
        )

    def _segment_upsampled(self, window: WindowData, *, saturation: float | None) -> DenseProducts:
        """Screen the window upsampled by :attr:`upsampling`; products on the native pixels.

        Sources, footprints, clumps and the STREAK, GHOST and BAD planes are the
        upsampled screening's at each native pixel's centre; a source that covers
        no native pixel centre is left out. NO_DATA, SAT and CR are the native
        pixels' (:meth:`_native_planes`): on the fine grid a cosmic ray or a hot
        pixel is as wide as a star. The data-quality stamps are the fine ones pooled
        by ``upsampling`` a side, so that a stamp has as many native pixels as at
        the network's own sampling (:func:`_pool_stamps`).
        """
        factor = self.upsampling
        arrays = upsample_window_arrays(window.image, window.variance, window.background, factor)
        fine = self._segment_at_network_sampling(
            WindowData(*arrays), saturation=None, join_symmetric=False, split_companions=False
        )
        native = self._native_planes(window, saturation)
        kept = np.uint32(MaskBit.STREAK | MaskBit.GHOST | MaskBit.BAD)
        artefacts = native.artefacts | sample_to_native(fine.artefacts & kept, factor)
        artefacts[~native.valid] = np.uint32(MaskBit.NO_DATA)
        sampled = np.where(native.valid, sample_to_native(fine.sources, factor), 0)
        spurious = _spurious_at_native(sampled, native.flux, artefacts)[sampled]
        sampled[spurious] = 0
        n_fine = int(fine.sources.max(initial=0))
        covers_a_pixel = np.isin(np.arange(1, n_fine + 1), sampled)
        clumps = fine.clumps
        stamp_quality = _pool_stamps(fine.stamp_quality, factor)
        products = DenseProducts(
            flux_image=native.flux,
            variance=native.variance,
            detection_image=native.detection(SMOOTH_SIGMA),
            sources=sampled,
            footprints=relabel_in_raster_order(
                np.where(native.valid & ~spurious, sample_to_native(fine.footprints, factor), 0)
            ),
            artefacts=artefacts,
            clumps=replace(
                clumps,
                y=upsampled_to_native_position(clumps.y, factor),
                x=upsampled_to_native_position(clumps.x, factor),
            ),
            blend_probability=fine.blend_probability,
            stamp_quality=stamp_quality,
            stamp_size=fine.stamp_size if stamp_quality is not None else 0,
            network_seconds=fine.network_seconds,
            centres=None
            if fine.centres is None
            else upsampled_to_native_position(fine.centres, factor),
        )
        return products.keep_sources(covers_a_pixel)

    def _native_planes(self, window: WindowData, saturation: float | None) -> _NativePlanes:
        """What a resampled screening takes from the native pixels.

        The flux, variance and validity, and the NO_DATA, SAT and CR planes: cosmic
        rays (:func:`~survey_seg.quality.cosmic_ray_pixels`) are sharper than any
        PSF, and resampling would smear them into blocks or blobs; the contrast
        limit is raised above the PSF's own stars when it is undersampled, and the
        local median widens with a wide PSF
        (:func:`~survey_seg.quality.cosmic_ray_median_size`). Sharp pixels in a long
        run down one column are a hot column: BAD, not CR
        (:func:`~survey_seg.quality.column_runs`). In correlated noise they are
        sought in one pixel's noise (:func:`_pixel_noise_scale`).
        """
        valid = np.isfinite(window.image) & np.isfinite(window.variance) & (window.variance > 0)
        flux = np.where(valid, window.image - window.background, 0.0).astype(np.float32)
        variance = np.where(valid, window.variance, 0.0).astype(np.float32)
        sigma = np.sqrt(variance)
        artefacts = artefact_planes(
            np.zeros((len(NETWORK_ARTEFACT_BITS), *flux.shape), np.float32),
            valid,
            window.image,
            saturation,
            threshold=1.0,
        )
        unsaturated = valid & ((artefacts & np.uint32(MaskBit.SAT)) == 0)
        limits = dict(_NATIVE_COSMIC_RAY_LIMITS)
        limits["fine_contrast"] = cosmic_ray_contrast_for_psf(
            limits["fine_contrast"], self.psf_fwhm_pix
        )
        if self.psf_fwhm_pix is not None:
            limits["min_neighbour_ratio"] = star_neighbour_ratio(self.psf_fwhm_pix)
        limits["median_size"] = cosmic_ray_median_size(self.psf_fwhm_pix)
        pixel_sigma = sigma / np.float32(_pixel_noise_scale(window))  # a cosmic ray is one pixel
        sharp = cosmic_ray_pixels(flux, pixel_sigma, unsaturated, **limits)
        hot_columns = column_runs(sharp)
        artefacts[sharp & ~hot_columns] |= np.uint32(MaskBit.CR)
        artefacts[hot_columns] |= np.uint32(MaskBit.BAD)
        return _NativePlanes(valid, flux, variance, sigma, artefacts)

    def _pair_features(
        self,
        sources: np.ndarray,
        footprints: np.ndarray,
        significance: np.ndarray,
        flux: np.ndarray,
        prediction: Prediction,
    ) -> PairFeatures:
        """Touching pairs of a window's sources and their features (network sampling)."""
        return pair_features(
            sources,
            footprints,
            significance,
            flux,
            prediction.centre,
            prediction.clump,
            prediction.segmentation[2],
            self._seen_psf_fwhm,
        )

    def _join_pieces(
        self,
        sources: np.ndarray,
        footprints: np.ndarray,
        significance: np.ndarray,
        flux: np.ndarray,
        prediction: Prediction,
    ) -> np.ndarray:
        """Touching sources the piece classifier judges one object, joined.

        The last of the merges, on the network's sampling, before the optional
        companion split and hosts join; the sources as they are without a
        ``pieces`` entry (:func:`survey_seg.pieces.join_pieces`).
        """
        if self.pieces is None:
            return sources
        features = self._pair_features(sources, footprints, significance, flux, prediction)
        return join_pieces(sources, features, self.pieces)

    def _segment_at_network_sampling(
        self,
        window: WindowData,
        *,
        saturation: float | None,
        veto: np.uint32 = SPURIOUS,
        join_symmetric: bool = True,
        split_companions: bool = True,
    ) -> DenseProducts:
        """Artefacts, sources, footprints and clumps of a window the network sees as it is.

        A source whose pixels are mostly of the ``veto`` planes is left out
        (:func:`_drop_artefact_sources`). With a ``symmetry_sigma`` threshold and
        ``join_symmetric``, a piece that mirrors its object's light joins it
        (:func:`~survey_seg.blends.join_symmetric_pieces`). An upsampled window
        leaves that out: on the undersampled SDSS and 2MASS images it joined faint
        injected objects on the wings of bright stars to them (README, "An
        edge-on disk is one source"). With a ``companion_sigma`` threshold, light
        of a source that its mirror image lacks becomes a source of its own
        (:func:`~survey_seg.blends.split_asymmetric_companions`): a faint companion
        on a bright star's or galaxy's wing that the network gave no centre. With
        ``split_companions`` False (a binned or an upsampled window) that is left
        out: binned, the native cosmic rays and bad pixels are not yet known, and
        a track across a star is asymmetric light (README, "A faint companion on
        a bright wing"); upsampled, the significance map's noise is not unit.
        """
        t = self.thresholds
        planes = network_input(window.image, window.variance, window.background, saturation)
        network_start = time.perf_counter()
        prediction = self.predictor.predict(planes)
        artefact_probability = self._artefact_probability(
            window, saturation, prediction, self._seen_psf_fwhm
        )
        network_seconds = time.perf_counter() - network_start
        valid = planes[2] > 0
        artefacts = artefact_planes(
            artefact_probability, valid, window.image, saturation, threshold=t["artefact"]
        )
        flux = np.where(valid, window.image - window.background, 0.0).astype(np.float32)
        variance = np.where(valid, window.variance, 0.0).astype(np.float32)
        snr = ndimage.gaussian_filter(planes[0], SMOOTH_SIGMA, truncate=4.0)

        object_probability = prediction.segmentation[1] + prediction.segmentation[2]
        object_probability = np.where(valid, object_probability, 0.0)
        weak_centre = t.get("weak_centre")
        centres = find_centres(
            prediction.centre,
            object_probability > t["object"],
            threshold=t["centre"] if weak_centre is None else weak_centre,
            min_distance=int(t["centre_min_distance"]),
        )
        sigma = np.sqrt(np.where(valid, window.variance, 1.0))
        pixel_snr = np.where(valid, flux / sigma, 0.0)
        significance = ndimage.gaussian_filter(
            pixel_snr, SMOOTH_SIGMA, truncate=4.0
        ) / gaussian_kernel_norm(SMOOTH_SIGMA)
        boundary = prediction.boundary if self._boundaries_trained else None
        # the merges leave a compact source (under 6 resolution elements) as it was split
        min_merge_area = int(MERGE_AREA_RESOLUTION * (2.0 * self._seen_psf_fwhm) ** 2)
        sources, footprints, _ = split_instances(
            object_probability,
            prediction.segmentation[2],
            centres,
            snr,
            object_threshold=t["object"],
            sure_centres=None if "sure_centre" not in t else prediction.centre >= t["sure_centre"],
            fragment_threshold=t.get("fragment"),
        )
        min_valley_sigma = t.get("min_valley_sigma", MIN_VALLEY_SIGMA)
        if min_valley_sigma is not None:  # one object, one source: a valley between two
            weak = sure = None
            labels = np.arange(int(sources.max()) + 1)
            if weak_centre is not None:  # split off by a centre peak under the threshold
                weak = label_maximum(prediction.centre, sources, labels) <= t["centre"]
            if "sure_split" in t:  # seeded by a centre peak the network is sure of
                seed_peaks = np.where(centres, prediction.centre, 0.0)
                sure = label_maximum(seed_peaks, sources, labels) >= t["sure_split"]
            sources = merge_unseparated(
                sources,
                footprints,
                significance,
                min_valley_sigma=min_valley_sigma,
                min_valley_fraction=t.get("min_valley_fraction", MIN_VALLEY_FRACTION),
                min_area=min_merge_area,
                weak=weak,
                weak_valley_fraction=t.get("weak_valley_fraction", 0.0),
                sure=sure,
                keep_apart=self._bounded(sources, footprints, boundary),
            )
        symmetry_sigma = t.get("symmetry_sigma") if join_symmetric else None
        if symmetry_sigma is not None:  # a piece that mirrors its object is part of it
            valley_fraction = t.get("min_valley_fraction", MIN_VALLEY_FRACTION)
            sources, joined = join_symmetric_pieces(
                sources,
                footprints,
                significance,
                valid,
                max_asymmetry_sigma=symmetry_sigma,
                max_asymmetry_fraction=valley_fraction,
                min_valley_sigma=MIN_VALLEY_SIGMA if min_valley_sigma is None else min_valley_sigma,
                min_valley_fraction=valley_fraction,
                close_distance=CLOSE_PAIR_FWHM * self._seen_psf_fwhm,
                close_fraction=valley_fraction,
            )
            centres &= ~joined  # a joined piece's seed is no centre of its object
        max_border_boundary = t.get("max_border_boundary")
        if boundary is not None and max_border_boundary:
            sources = merge_unbounded(  # one object: no boundary between its pieces
                sources,
                footprints,
                boundary,
                max_boundary=max_border_boundary,
                min_area=min_merge_area,
            )
        if prediction.offset is not None and self._offsets_trained:
            sources, footprints = merge_by_centre_votes(
                sources,
                footprints,
                prediction.offset,
                min_vote_fraction=t.get("min_vote_fraction", MIN_VOTE_FRACTION),
                min_vote_distance=t.get("min_vote_distance_fwhm", MIN_VOTE_DISTANCE_FWHM)
                * self._seen_psf_fwhm,
            )
        artefacts = sharp_cosmic_rays(
            artefacts, flux, self._seen_psf_fwhm, _peak_pixels(sources, significance)
        )
        artefacts |= self._cosmic_ray_sources(sources, footprints, flux, variance, snr, artefacts)
        sources, footprints = _drop_artefact_sources(sources, footprints, artefacts & veto)
        min_clump_to_centre = t.get("min_clump_to_centre", MIN_CLUMP_TO_CENTRE)
        if min_clump_to_centre is not None:  # the knots of a clumpy galaxy are one source
            sources = join_clumpy_pieces(
                sources,
                footprints,
                significance,
                prediction.centre,
                prediction.clump,
                min_clump=t.get("min_knot_clump", MIN_KNOT_CLUMP),
                min_clump_to_centre=min_clump_to_centre,
            )
        if MIN_ENCLOSED is not None:  # a knot cut out of its galaxy goes back to it
            sources = absorb_enclosed(
                sources,
                significance,
                min_enclosed=MIN_ENCLOSED,
                keep_apart=self._bounded(sources, footprints, boundary),
            )
        if self.diffuse is not None:
            sources, footprints = diffuse_sources(
                sources,
                footprints,
                pixel_snr,
                significance,
                (artefacts & NOT_OBJECT_LIGHT) != 0,
                psf_fwhm_pix=self._seen_psf_fwhm,
                significance_sigma=SMOOTH_SIGMA,
                config=self.diffuse,
            )
        sources = join_central_knots(  # a knot is its host's clump, not a source
            sources,
            footprints,
            significance,
            flux,
            prediction.clump,
            clump_threshold=t.get("knot_clump", t["clump"]),
            max_offset=t.get("knot_join_fwhm", 0.0) * self._seen_psf_fwhm,
            max_flux_ratio=t.get("knot_max_flux_ratio"),
            min_saddle_fraction=t.get("knot_min_saddle_fraction", 0.0),
        )
        # the last merge: before the optional companion search, which it would undo
        sources = self._join_pieces(sources, footprints, significance, flux, prediction)
        companion_sigma = t.get("companion_sigma") if split_companions else None
        if companion_sigma is not None:  # light its source's mirror image lacks: a companion
            # an artefact's light, light 3 sigma under the sky (a dead column that the
            # planes missed) and what the smoothing spreads of them are no object's
            unlike_objects = (artefacts != 0) | (significance < -COMPANION_BELOW_SKY_SIGMA)
            comparable = valid & ~ndimage.binary_dilation(
                unlike_objects, structure=np.ones((3, 3), bool), iterations=COMPANION_MARGIN
            )
            sources, companions = split_asymmetric_companions(
                sources,
                significance,
                comparable,
                prediction.clump,
                saturated=(artefacts & np.uint32(MaskBit.SAT)) != 0,
                min_sigma=companion_sigma,
                min_distance=self._seen_psf_fwhm,
                clump_threshold=t["clump"],
                centre=prediction.centre,
            )
            centres |= companions  # a companion's position is its excess's peak
        if self.hosts is not None:  # a fainter source inside an extended galaxy is a piece of it
            sources = join_pieces_to_hosts(
                sources,
                footprints,
                flux,
                pixel_snr,
                significance,
                np.where(centres, prediction.centre, 0.0),
                resolution_pix=self._seen_resolution,
                config=self.hosts,
            )
        blend_probability = label_maximum(
            prediction.segmentation[2], sources, np.arange(1, int(sources.max()) + 1)
        )
        clumps = find_clumps(
            prediction.clump,
            sources,
            flux,
            threshold=t["clump"],
            min_offset=t.get("clump_min_offset_fwhm", 0.0) * self._seen_psf_fwhm,
            centre_heatmap=prediction.centre,
            min_clump_to_centre=t.get("clump_peak_min_to_centre"),
        )
        artefacts = ghosts_off_objects(artefacts, sources > 0, flux)
        artefacts = long_trails(artefacts, self._seen_psf_fwhm)
        return DenseProducts(
            flux_image=flux,
            variance=variance,
            detection_image=snr,
            sources=sources,
            footprints=footprints,
            artefacts=artefacts,
            clumps=clumps,
            blend_probability=blend_probability,
            stamp_quality=prediction.stamps,
            stamp_size=self.predictor.model.config.stamp_size,
            network_seconds=network_seconds,
            centres=deblended_centres(
                prediction.centre, sources, footprints, centres, knots=prediction.clump
            ),
        )


def thresholds_for_psf(
    thresholds: dict, psf_thresholds: dict | None, psf_fwhm_pix: float | None
) -> dict:
    """The post-processing thresholds for mosaics of a given PSF width.

    A wider PSF lowers the network's peaks on faint or unresolved objects (clumps
    above all), so a model config may carry thresholds tuned on validation mosaics
    whose PSF is ``psf_ratio`` times its training PSF (``psf_thresholds``, written
    by ``benchmarks/tune_thresholds.py --psf-scale``). Each of :data:`PSF_THRESHOLD_KEYS`
    that ``thresholds`` holds is interpolated linearly in the ratio between the tuned
    conditions (ratio 1 is ``thresholds``) and held at the nearest one outside them:
    no extrapolation.

    Parameters
    ----------
    thresholds : dict
        The model's thresholds at its training PSF.
    psf_thresholds : dict or None
        The model config's ``psf_thresholds`` entry (checked by
        :func:`survey_seg.inference.load_model_config`).
    psf_fwhm_pix : float or None
        PSF FWHM of the mosaic (pixels); None keeps ``thresholds``.

    Returns
    -------
    dict
        A new thresholds dict.
    """
    chosen = dict(thresholds)
    if not psf_thresholds or psf_fwhm_pix is None:
        return chosen
    if not psf_fwhm_pix > 0:
        raise ValueError(f"psf_fwhm_pix={psf_fwhm_pix!r}; give the PSF FWHM in pixels (> 0)")
    ratio = psf_fwhm_pix / psf_thresholds["nominal_psf_fwhm_pix"]
    conditions = sorted(
        [{"psf_ratio": 1.0, **thresholds}, *psf_thresholds["conditions"]],
        key=lambda condition: condition["psf_ratio"],
    )
    ratios = [condition["psf_ratio"] for condition in conditions]
    for key in sorted(PSF_THRESHOLD_KEYS & set(thresholds)):
        values = [condition.get(key, thresholds[key]) for condition in conditions]
        chosen[key] = float(np.interp(ratio, ratios, values))
    return chosen


def _ghost_area(psf_fwhm_pix: float | None, radius_fwhm: float) -> float:
    """Area (pixels) of a disk of ``radius_fwhm`` PSF FWHM: the least of a ghost region."""
    return math.pi * (radius_fwhm * (psf_fwhm_pix or 0.0)) ** 2


def _pixel_noise_scale(window: WindowData) -> float:
    """The factor that takes ``window``'s noise to one pixel's.

    Its ``noise_scale`` where that reaches :data:`PIXEL_NOISE_MIN_SCALE`, else 1
    (the variance is used as it is).
    """
    return window.noise_scale if window.noise_scale >= PIXEL_NOISE_MIN_SCALE else 1.0


def _check_trained_heads(predictor: Predictor) -> None:
    """Refuse a model whose training left heads that screening reads untrained.

    A ``blends``, ``clumps`` or ``quality`` model (``survey-seg train``) trains some
    heads only; the others would give random planes. A clump model supplies ``clump``.
    """
    trained = set(predictor.config.get("heads", PREDICTION_HEADS))
    if predictor.clump_config is not None:
        trained.add("clump")
    untrained = [head for head in PREDICTION_HEADS if head not in trained]
    if untrained:
        raise InputError(
            f"model config {predictor.config_path} was trained for heads "
            f"{predictor.config['heads']} only, so its {untrained} would be noise; screen "
            "with a model of `survey-seg train screening` (a `clumps` model can serve as "
            "its clump_model)"
        )


def _piece_classifier(model_path: Path, config: dict) -> PieceClassifier | None:
    """The model config's piece classifier (its ``pieces`` entry), or None without one.

    The entry names the classifier's JSON file (beside the config) and its sha256.
    """
    entry = config.get("pieces")
    if entry is None:
        return None
    path = model_path.parent / entry["classifier"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise InputError(
            f"model config {model_path} names a piece classifier {path} that does not "
            "exist; restore it or retrain it with python -m survey_seg.piece_training"
        ) from None
    if digest != entry["sha256"]:
        raise InputError(
            f"piece classifier {path} does not match the sha256 in {model_path}; "
            "restore it or retrain it with python -m survey_seg.piece_training"
        )
    try:
        return PieceClassifier.read(path)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise InputError(
            f"piece classifier {path} cannot be read ({error}); restore it or retrain it "
            "with python -m survey_seg.piece_training"
        ) from None


def _config_entry(predictor: Predictor, key: str, config_class: type[_Config]) -> _Config | None:
    """The model config's ``key`` entry (checked when the config was loaded), or None."""
    entry = predictor.config.get(key)
    return None if entry is None else config_class(**{k: float(v) for k, v in entry.items()})


def _training_summary(config: dict) -> dict[str, object]:
    """Seed, steps and simulator version of a model config's training run.

    A config whose ``training`` lists ``stages`` gets them for each stage.
    """
    training = config.get("training", {})
    keys = ("seed", "steps", "simulator_version")
    if "stages" in training:
        return {
            "stages": [
                {"name": stage.get("name"), **{k: stage.get(k) for k in keys}}
                for stage in training["stages"]
            ]
        }
    return {k: training.get(k) for k in keys}


def _mostly_spurious(sources: np.ndarray, artefacts: np.ndarray) -> np.ndarray:
    """Per label ``0 .. n``: more than half its pixels are cosmic rays, bad or no data."""
    return _mostly_on(sources, (artefacts & SPURIOUS) != 0)


def _mostly_on(sources: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Per label ``0 .. n``: more than half its pixels are on the boolean ``plane``."""
    n = int(sources.max(initial=0))
    area = np.bincount(sources.ravel(), minlength=n + 1)
    on_plane = np.bincount(sources.ravel(), weights=plane.ravel(), minlength=n + 1)
    mostly = on_plane > 0.5 * np.maximum(area, 1)
    mostly[0] = False
    return mostly


def _spurious_at_native(sources: np.ndarray, flux: np.ndarray, artefacts: np.ndarray) -> np.ndarray:
    """Per label ``0 .. n``: mostly spurious pixels, or a cosmic ray at its brightest pixel.

    On an undersampled PSF a hot pixel is a source to the network; the native
    cosmic-ray rule, which no star passes, finds it at the source's peak.
    """
    drop = _mostly_spurious(sources, artefacts)
    n = int(sources.max())
    if n:
        ys, xs = label_maximum_position(flux, sources, np.arange(1, n + 1))
        present = ys >= 0
        peak_is_cr = np.zeros(n, dtype=bool)
        peak_is_cr[present] = (artefacts[ys[present], xs[present]] & np.uint32(MaskBit.CR)) != 0
        drop[1:] |= peak_is_cr
    return drop


def _pool_stamps(stamps: np.ndarray | None, factor: int) -> np.ndarray | None:
    """Data-quality stamps of an upsampled screening pooled ``factor`` x ``factor``.

    ``factor`` fine stamps a side cover one stamp of the network's size in native
    pixels. The estimated flagged fraction (the last class) is their mean, each
    holding the same number of pixels; a class's presence is the largest of their
    probabilities (it is present in the pooled stamp where it is in any of them;
    the tile's ``p_<class>``, the largest over its stamps, is unchanged).
    Incomplete groups at the window's far edges are left out; None without stamps.
    """
    if stamps is None:
        return None
    classes, rows, cols = stamps.shape
    rows, cols = rows // factor, cols // factor
    if not rows or not cols:
        return None
    blocks = stamps[:, : rows * factor, : cols * factor].reshape(
        classes, rows, factor, cols, factor
    )
    pooled = blocks.max(axis=(2, 4))
    pooled[-1] = blocks[-1].mean(axis=(1, 3))
    return pooled.astype(stamps.dtype, copy=False)


def _peak_pixels(sources: np.ndarray, significance: np.ndarray) -> np.ndarray:
    """Boolean: each source's brightest pixel of ``significance``."""
    peaks = np.zeros(sources.shape, dtype=bool)
    n = int(sources.max())
    if n:
        y, x = label_maximum_position(significance, sources, np.arange(1, n + 1))
        present = y >= 0
        peaks[y[present], x[present]] = True
    return peaks


def _alone_in_footprint(
    sources: np.ndarray, footprints: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Whether each source of ``labels`` is the only source of its footprint."""
    pairs = np.unique(np.stack([footprints[sources > 0], sources[sources > 0]]), axis=1)
    members = np.bincount(pairs[0], minlength=int(footprints.max()) + 1)
    footprint_of = np.zeros(int(sources.max()) + 1, dtype=np.int64)
    footprint_of[pairs[1]] = pairs[0]
    return members[footprint_of[labels]] == 1


def _ghost_sources(sources: np.ndarray, ghost: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """Per source ``1 .. n``: mostly on a ghost, with no pixel the native pass sees as an object.

    Binned by 5, a ghost is a compact blob that the binned network segments as an
    object; the pass over the native pixels sees its smooth light as no object.
    """
    n = int(sources.max(initial=0))
    on_objects = np.bincount(sources.ravel(), weights=objects.ravel(), minlength=n + 1)
    return (_mostly_on(sources, ghost) & (on_objects == 0))[1:]


def _drop_artefact_sources(
    sources: np.ndarray, footprints: np.ndarray, artefacts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sources whose pixels are mostly cosmic rays, bad pixels or no data are not sources."""
    if sources.max() == 0:
        return sources, footprints
    drop = _mostly_spurious(sources, artefacts)
    if not drop.any():
        return sources, footprints
    gone = drop[sources]
    sources = np.where(gone, 0, sources)
    footprints = np.where(gone, 0, footprints)
    return relabel_in_raster_order(sources), relabel_in_raster_order(footprints)
