"""Score a screening run against a simulation's truth.

Every function here is pure: arrays and tables in, numbers out, no file I/O.
Positions are mosaic pixels ``(x, y)`` (0-based, the centre of pixel ``[j, i]`` is
``(i, j)``); arrays are indexed ``[y, x]``.

Sources (:func:`score_catalog`)
    Detections and truth objects are matched one to one, nearest pairs first,
    within a radius. Completeness counts truth objects above S/N 10; purity counts
    detections that match some truth object; blend recall counts close pairs of
    truth objects (both above S/N 10, closer than 1.5 arcsec) whose two members
    are both matched, each to its own detection. Given the truth mask, the
    fraction of detections whose pixel carries a CR, STREAK, GHOST or BAD plane
    (``on_artefact``) tells how many artefacts were catalogued as sources, and a
    truth object whose centre pixel has no data counts towards neither
    completeness nor pairs (nothing can detect it; a detection matched to it is
    still pure).
Clumps (:func:`score_clumps`)
    One-to-one matching within 2 px; completeness over the detectable truth
    clumps (S/N >= 5), purity over all detections against all truth clumps.
Artefact planes (:func:`artefact_pixel_scores`, :func:`artefact_pixel_precision`)
    Per plane, pixel recall (within 1 px), false-positive rate and precision
    (predicted pixels within 1 px of a true one), NO_DATA pixels excluded.
Footprints (:func:`segmentation_iou`, :func:`object_iou`)
    Intersection over union of the "any object" footprints, and the mean best IoU
    of the truth objects.
Tile verdicts (:func:`truth_tile_labels`, :func:`verdict_auc`)
    A tile is bad when more than 2 % of its core is artefact or NO_DATA in the
    truth; the verdict score is ranked against that label by the ROC AUC.
Calibration (:func:`reliability_curve`, :func:`expected_calibration_error`)
    Probabilities binned by value against the observed frequency of the event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, signal
from scipy.spatial import cKDTree
from scipy.stats import rankdata

from survey_seg.masks import ARTEFACT_BITS, MaskBit
from survey_seg.psf import SIGMA_PER_FWHM

__all__ = [
    "ARTEFACT_PLANES",
    "CLUMP_MIN_SNR",
    "ON_ARTEFACT_BITS",
    "CatalogScore",
    "artefact_pixel_precision",
    "artefact_pixel_scores",
    "blend_flag_scores",
    "clump_snr",
    "expected_calibration_error",
    "match_positions",
    "object_iou",
    "reliability_curve",
    "score_catalog",
    "score_clumps",
    "segmentation_iou",
    "touching_objects",
    "truth_tile_labels",
    "verdict_auc",
]

ARTEFACT_PLANES: tuple[str, ...] = ("CR", "STREAK", "GHOST", "BAD", "SAT")
"""Mask planes scored by :func:`artefact_pixel_scores`, by :class:`MaskBit` name."""

ON_ARTEFACT_BITS = MaskBit.CR | MaskBit.STREAK | MaskBit.GHOST | MaskBit.BAD
"""Planes on which a catalogued source is counted as a spurious artefact detection."""

CLUMP_MIN_SNR: float = 5.0
"""Truth clumps at or above this S/N (see :func:`clump_snr`) count as detectable."""


@dataclass(frozen=True)
class CatalogScore:
    """Quality of a catalog against the truth."""

    completeness: float
    """Fraction of truth objects with S/N > ``min_snr`` that are matched."""
    purity: float
    """Fraction of detections matched to a truth object."""
    blend_recall: float
    """Fraction of close truth pairs whose members are both matched, distinctly."""
    n_truth: int
    """Truth objects above ``min_snr``."""
    n_detected: int
    """Detections scored."""
    n_close_pairs: int
    """Close truth pairs above ``min_snr``."""
    on_artefact: float = float("nan")
    """Fraction of detections whose pixel carries a truth CR, STREAK, GHOST or BAD
    plane (NaN without a truth mask or without detections)."""
    completeness_resolved: float = float("nan")
    """Completeness of the truth objects above ``min_snr`` with no other such object
    within ``resolved_separation_arcsec``: what a wide PSF costs beside the pairs it
    does not resolve (NaN without that separation or without such objects)."""
    blend_recall_resolved: float = float("nan")
    """Blend recall of the close pairs at least ``resolved_separation_arcsec`` apart:
    the pairs a detector can resolve (NaN without that separation or without such
    pairs)."""


def match_positions(
    detected_xy: np.ndarray, truth_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching, closest pairs first.

    Parameters
    ----------
    detected_xy, truth_xy : numpy.ndarray
        ``(n, 2)`` positions in pixels.
    radius : float
        Largest match distance in pixels.

    Returns
    -------
    detected_match, truth_match : numpy.ndarray
        For each detection the index of its truth object (-1 if none), and for
        each truth object the index of its detection (-1 if none).
    """
    detected_match = np.full(len(detected_xy), -1, dtype=np.int64)
    truth_match = np.full(len(truth_xy), -1, dtype=np.int64)
    if len(detected_xy) == 0 or len(truth_xy) == 0:
        return detected_match, truth_match
    distances = cKDTree(detected_xy).sparse_distance_matrix(
        cKDTree(truth_xy), radius, output_type="ndarray"
    )
    order = np.lexsort((distances["j"], distances["i"], distances["v"]))
    for i, j in zip(distances["i"][order], distances["j"][order], strict=True):
        if detected_match[i] < 0 and truth_match[j] < 0:
            detected_match[i] = j
            truth_match[j] = i
    return detected_match, truth_match


def _positions(name: str, xy: object) -> np.ndarray:
    """``xy`` as a float ``(n, 2)`` array, or a ValueError naming ``name``."""
    array = np.asarray(xy, dtype=float)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} has shape {array.shape}; give an (n, 2) array of (x, y).")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite positions; drop them before scoring.")
    return array


def _mask_array(name: str, mask: object) -> np.ndarray:
    """``mask`` as a 2-D unsigned mask array, or a ValueError naming ``name``."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} has {array.ndim} dimensions; give a 2-D (y, x) mask.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} has dtype {array.dtype}; give the uint32 MaskBit planes.")
    return array.astype(np.uint32, copy=False)


def _carries(xy: np.ndarray, truth_mask: np.ndarray, bits: int) -> np.ndarray:
    """Whether the nearest pixel of each position carries any of ``bits``."""
    ny, nx = truth_mask.shape
    x = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, nx - 1)
    y = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, ny - 1)
    return (truth_mask[y, x] & np.uint32(int(bits))) != 0


def score_catalog(
    detected: pd.DataFrame,
    truth: pd.DataFrame,
    *,
    pixel_scale_arcsec: float = 0.1,
    match_radius_arcsec: float = 0.4,
    pair_separation_arcsec: float = 1.5,
    min_snr: float = 10.0,
    truth_mask: np.ndarray | None = None,
    resolved_separation_arcsec: float | None = None,
) -> CatalogScore:
    """Completeness, purity and blend recall of ``detected`` against ``truth``.

    Parameters
    ----------
    detected : pandas.DataFrame
        Catalog with ``x`` and ``y`` (mosaic pixels).
    truth : pandas.DataFrame
        Truth catalog with ``x``, ``y`` and ``snr``.
    pixel_scale_arcsec : float
        Pixel scale.
    match_radius_arcsec : float
        Match radius.
    pair_separation_arcsec : float
        Truth pairs closer than this are close pairs.
    min_snr : float
        Truth objects below this S/N do not count towards completeness or pairs.
    truth_mask : numpy.ndarray, optional
        uint32 ``(ny, nx)`` truth :class:`~survey_seg.masks.MaskBit` planes; when
        given, :attr:`CatalogScore.on_artefact` is the fraction of detections whose
        nearest pixel carries a CR, STREAK, GHOST or BAD plane: artefacts catalogued
        as sources (a split of the impurity), and truth objects whose nearest pixel
        is NO_DATA (a chip gap, a hole) are not counted towards completeness or
        close pairs.
    resolved_separation_arcsec : float, optional
        When given (1.5 PSF FWHM, say), :attr:`CatalogScore.completeness_resolved`
        is the completeness of the counted truth objects with no other counted
        object closer than this, and :attr:`CatalogScore.blend_recall_resolved`
        the blend recall of the close pairs at least this far apart.

    Returns
    -------
    CatalogScore
    """
    if resolved_separation_arcsec is not None and not resolved_separation_arcsec > 0:
        raise ValueError(
            f"resolved_separation_arcsec={resolved_separation_arcsec!r} must be > 0 "
            "(1.5 PSF FWHM, say), or None for no resolved completeness nor blend recall."
        )
    radius = match_radius_arcsec / pixel_scale_arcsec
    detected_xy = detected[["x", "y"]].to_numpy(dtype=float)
    truth_xy = truth[["x", "y"]].to_numpy(dtype=float)
    detected_match, truth_match = match_positions(detected_xy, truth_xy, radius)
    mask = None if truth_mask is None else _mask_array("truth_mask", truth_mask)
    bright = truth["snr"].to_numpy() > min_snr
    if mask is not None:
        bright &= ~_carries(truth_xy, mask, MaskBit.NO_DATA)
    n_bright = int(bright.sum())
    completeness = float(np.mean(truth_match[bright] >= 0)) if n_bright else float("nan")
    purity = float(np.mean(detected_match >= 0)) if len(detected_xy) else float("nan")

    bright_xy = truth_xy[bright]
    bright_match = truth_match[bright]
    tree = cKDTree(bright_xy) if n_bright else None

    def close_pairs(separation_arcsec: float) -> np.ndarray:
        if n_bright < 2:
            return np.zeros((0, 2), dtype=int)
        return tree.query_pairs(separation_arcsec / pixel_scale_arcsec, output_type="ndarray")

    pairs = close_pairs(pair_separation_arcsec)
    both = (bright_match[pairs[:, 0]] >= 0) & (bright_match[pairs[:, 1]] >= 0)
    blend_recall = float(np.mean(both)) if len(pairs) else float("nan")
    completeness_resolved = blend_recall_resolved = float("nan")
    if resolved_separation_arcsec is not None and n_bright:
        crowded = np.zeros(n_bright, dtype=bool)
        crowded[close_pairs(resolved_separation_arcsec)] = True
        if not crowded.all():
            completeness_resolved = float(np.mean(bright_match[~crowded] >= 0))
        separation = np.hypot(*(bright_xy[pairs[:, 0]] - bright_xy[pairs[:, 1]]).T)
        resolved = separation * pixel_scale_arcsec >= resolved_separation_arcsec
        if resolved.any():
            blend_recall_resolved = float(np.mean(both[resolved]))
    on_artefact = (
        float("nan")
        if mask is None or not len(detected_xy)
        else float(np.mean(_carries(detected_xy, mask, ON_ARTEFACT_BITS)))
    )
    return CatalogScore(
        completeness=completeness,
        purity=purity,
        blend_recall=blend_recall,
        n_truth=n_bright,
        n_detected=len(detected_xy),
        n_close_pairs=len(pairs),
        on_artefact=on_artefact,
        completeness_resolved=completeness_resolved,
        blend_recall_resolved=blend_recall_resolved,
    )


def touching_objects(truth_segmentation: np.ndarray) -> np.ndarray:
    """The truth ids whose footprint touches another object's: the truth's blends.

    A footprint holds the pixels where an object's light stands above the sky
    noise (:data:`survey_seg.simulate.FOOTPRINT_SKY_SIGMA`); two objects whose
    footprints touch (8-connected) overlap there, as a catalog's footprint that
    holds two sources says (``is_blended``).

    Parameters
    ----------
    truth_segmentation : numpy.ndarray
        Integer ``(ny, nx)`` truth ids, 0 for sky.

    Returns
    -------
    numpy.ndarray
        Sorted int64 ids.
    """
    labels = np.asarray(truth_segmentation)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"truth_segmentation has shape {labels.shape} and dtype {labels.dtype}; "
            "give a 2-D integer label map."
        )
    # a pixel meets another object where its 3 x 3 neighbourhood holds a higher or
    # a lower id than its own (sky left out of the lower)
    higher = ndimage.maximum_filter(labels, size=3, mode="constant") > labels
    objects = np.where(labels > 0, labels, np.iinfo(labels.dtype).max)
    lower = ndimage.minimum_filter(objects, size=3, mode="nearest") < labels
    return np.unique(labels[(labels > 0) & (higher | lower)]).astype(np.int64)


def blend_flag_scores(
    detected: pd.DataFrame,
    truth: pd.DataFrame,
    truth_segmentation: np.ndarray,
    *,
    radius: float,
    min_snr: float = 10.0,
    truth_mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """How often the catalog's blend flag is right, on the truth objects it found.

    Truth objects of S/N above ``min_snr`` (with data under them, given a
    ``truth_mask``) are matched one to one to ``detected`` within ``radius``
    pixels. A matched object is a blend when its footprint touches another
    truth object's (:func:`touching_objects`), isolated otherwise.

    Parameters
    ----------
    detected : pandas.DataFrame
        Catalog with ``x``, ``y`` (mosaic pixels) and ``is_blended``.
    truth : pandas.DataFrame
        Truth catalog with ``id``, ``x``, ``y`` and ``snr``.
    truth_segmentation : numpy.ndarray
        Integer ``(ny, nx)`` truth ids, 0 for sky.
    radius : float
        Largest match distance (pixels).
    min_snr : float
        Truth objects at or below this S/N are left out.
    truth_mask : numpy.ndarray, optional
        uint32 truth :class:`~survey_seg.masks.MaskBit` planes: objects whose
        centre pixel has no data are left out.

    Returns
    -------
    isolated_flagged : float
        Fraction of the matched isolated objects flagged blended (lower is
        better; NaN without any).
    blended_flagged : float
        Fraction of the matched blends flagged blended (NaN without any).
    """
    truth_xy = truth[["x", "y"]].to_numpy(dtype=float)
    _, truth_match = match_positions(
        _positions("detected", detected[["x", "y"]].to_numpy(dtype=float)), truth_xy, radius
    )
    counted = (truth["snr"].to_numpy() > min_snr) & (truth_match >= 0)
    if truth_mask is not None:
        counted &= ~_carries(truth_xy, _mask_array("truth_mask", truth_mask), MaskBit.NO_DATA)
    flagged = np.zeros(len(truth), dtype=bool)
    flagged[counted] = detected["is_blended"].to_numpy(dtype=bool)[truth_match[counted]]
    blend = np.isin(truth["id"].to_numpy(), touching_objects(truth_segmentation))

    def share(chosen: np.ndarray) -> float:
        return float(flagged[chosen].mean()) if chosen.any() else float("nan")

    return share(counted & ~blend), share(counted & blend)


# ------------------------------------------------------------------------------ clumps


def clump_snr(
    flux: np.ndarray | Sequence[float],
    *,
    sky_sigma: float,
    psf_fwhm_pix: float,
    noise_kernel: np.ndarray | None = None,
) -> np.ndarray:
    """Sky-limited matched-filter S/N of unresolved clumps.

    For a Gaussian PSF of width ``sigma = fwhm / 2.3548`` (pixels) on white noise of
    ``sky_sigma`` per pixel, the optimal (PSF-weighted) S/N of a point source of
    total ``flux`` is ``flux / (sky_sigma * sqrt(4 pi) * sigma)``. The host's own
    Poisson noise is neglected, so the estimate is an upper bound on bright hosts.
    In noise correlated by a unit-norm ``noise_kernel`` the same filter's noise is
    the kernel-convolved filter's norm: the S/N falls by ``|g| / |K * g|`` for the
    PSF ``g``.

    Parameters
    ----------
    flux : array-like
        Clump fluxes (ADU).
    sky_sigma : float
        Sky noise per pixel (ADU).
    psf_fwhm_pix : float
        PSF full width at half maximum (pixels).
    noise_kernel : numpy.ndarray, optional
        Unit-norm kernel that correlates the noise
        (:func:`survey_seg.simulate.noise_kernel`); None: white noise.

    Returns
    -------
    numpy.ndarray
        S/N of each clump.
    """
    if not sky_sigma > 0 or not psf_fwhm_pix > 0:
        raise ValueError(
            f"sky_sigma={sky_sigma!r} and psf_fwhm_pix={psf_fwhm_pix!r} must both be > 0."
        )
    psf_sigma = psf_fwhm_pix * SIGMA_PER_FWHM
    snr = np.asarray(flux, dtype=float) / (sky_sigma * np.sqrt(4.0 * np.pi) * psf_sigma)
    if noise_kernel is None:
        return snr
    half = int(np.ceil(5.0 * psf_sigma))
    offsets = np.arange(-half, half + 1)
    psf = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / psf_sigma**2)
    filtered = signal.fftconvolve(psf, noise_kernel)
    return snr * float(np.sqrt(np.sum(psf**2) / np.sum(filtered**2)))


def score_clumps(
    detected_xy: np.ndarray,
    truth_clumps_xy: np.ndarray,
    truth_clump_snr: np.ndarray | None = None,
    *,
    radius: float = 2.0,
    min_snr: float = CLUMP_MIN_SNR,
    truth_mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """Completeness and purity of detected clumps.

    Detections are first matched one to one (closest pairs first, within
    ``radius``) to the detectable truth clumps, those with ``truth_clump_snr >=
    min_snr`` (S/N from :func:`clump_snr`; all clumps when no S/N is given) and
    with data under them; the detections left over are then matched to the
    remaining, undetectable clumps. A detection that could be either is thus
    credited to the detectable clump.

    Parameters
    ----------
    detected_xy : numpy.ndarray
        ``(n, 2)`` detected clump positions ``(x, y)`` in pixels.
    truth_clumps_xy : numpy.ndarray
        ``(m, 2)`` truth clump positions ``(x, y)`` in pixels.
    truth_clump_snr : numpy.ndarray, optional
        ``(m,)`` S/N of each truth clump.
    radius : float
        Largest match distance in pixels.
    min_snr : float
        Truth clumps at or above this S/N are detectable.
    truth_mask : numpy.ndarray, optional
        uint32 ``(ny, nx)`` truth :class:`~survey_seg.masks.MaskBit` planes: a
        truth clump whose nearest pixel is NO_DATA (a chip gap, a hole) is not
        detectable, as :func:`score_catalog` leaves such objects out.

    Returns
    -------
    completeness : float
        Fraction of detectable truth clumps matched (NaN when there are none).
    purity : float
        Fraction of detections matched to any truth clump, detectable or not (NaN
        without detections).
    """
    detected = _positions("detected_xy", detected_xy)
    truth = _positions("truth_clumps_xy", truth_clumps_xy)
    if truth_clump_snr is None:
        detectable = np.ones(len(truth), dtype=bool)
    else:
        snr = np.asarray(truth_clump_snr, dtype=float).ravel()
        if len(snr) != len(truth):
            raise ValueError(
                f"truth_clump_snr has {len(snr)} values for {len(truth)} truth clumps; "
                "give one S/N per clump."
            )
        detectable = snr >= min_snr
    if truth_mask is not None:
        detectable &= ~_carries(truth, truth_mask, MaskBit.NO_DATA)
    if not radius > 0:
        raise ValueError(f"radius={radius!r} must be > 0 pixels.")
    detected_match, truth_match = match_positions(detected, truth[detectable], radius)
    matched = detected_match >= 0
    left = ~matched
    if left.any() and (~detectable).any():
        faint_match, _ = match_positions(detected[left], truth[~detectable], radius)
        matched[np.flatnonzero(left)[faint_match >= 0]] = True
    completeness = float(np.mean(truth_match >= 0)) if len(truth_match) else float("nan")
    purity = float(np.mean(matched)) if len(detected) else float("nan")
    return completeness, purity


# ---------------------------------------------------------------------- artefact planes


def artefact_pixel_scores(
    predicted_mask: np.ndarray,
    truth_mask: np.ndarray,
    bits: Sequence[str] = ARTEFACT_PLANES,
) -> dict[str, tuple[float, float]]:
    """Pixel recall and false-positive rate of each artefact plane.

    Pixels with NO_DATA in the truth are left out of both. Thin artefacts (a cosmic
    ray is often one pixel wide, a trail two) make pixel recall hostage to one-pixel
    offsets, so a truth pixel counts as recalled when the predicted plane is set
    within one pixel of it: recall uses the prediction dilated by a 3 x 3 square.
    The false-positive rate uses the undilated prediction.

    Parameters
    ----------
    predicted_mask, truth_mask : numpy.ndarray
        uint32 ``(ny, nx)`` :class:`~survey_seg.masks.MaskBit` planes.
    bits : sequence of str
        Plane names to score (default :data:`ARTEFACT_PLANES`).

    Returns
    -------
    dict of str to (float, float)
        ``{name: (recall, false_positive_rate)}``. Recall is the fraction of valid
        truth pixels of the plane with the plane predicted within one pixel (NaN when
        the truth has none); the false-positive rate is the fraction of valid pixels
        without the plane in the truth that have it predicted (NaN when there are
        none).
    """
    predicted, truth, bits, valid = _checked_planes(predicted_mask, truth_mask, bits)
    square = np.ones((3, 3), dtype=bool)
    scores: dict[str, tuple[float, float]] = {}
    for name in bits:
        bit = np.uint32(int(MaskBit[name]))
        true_plane = ((truth & bit) != 0) & valid
        pred_plane = (predicted & bit) != 0
        n_true = int(true_plane.sum())
        n_false = int(valid.sum()) - n_true
        if n_true:
            near = ndimage.binary_dilation(pred_plane, structure=square)
            recall = float(np.count_nonzero(near & true_plane)) / n_true
        else:
            recall = float("nan")
        if n_false:
            fpr = float(np.count_nonzero(pred_plane & valid & ~true_plane)) / n_false
        else:
            fpr = float("nan")
        scores[name] = (recall, fpr)
    return scores


def _checked_planes(
    predicted_mask: np.ndarray, truth_mask: np.ndarray, bits: Sequence[str] | str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    """Checked masks and plane names, and the pixels with data in the truth."""
    predicted = _mask_array("predicted_mask", predicted_mask)
    truth = _mask_array("truth_mask", truth_mask)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"predicted_mask has shape {predicted.shape} and truth_mask {truth.shape}; "
            "give masks of the same mosaic."
        )
    bits = (bits,) if isinstance(bits, str) else tuple(bits)
    unknown = [name for name in bits if name not in MaskBit.__members__]
    if unknown:
        raise ValueError(f"unknown mask planes {unknown}; use names of MaskBit.")
    valid = (truth & np.uint32(int(MaskBit.NO_DATA))) == 0
    return predicted, truth, bits, valid


def artefact_pixel_precision(
    predicted_mask: np.ndarray,
    truth_mask: np.ndarray,
    bits: Sequence[str] = ARTEFACT_PLANES,
) -> dict[str, float]:
    """Pixel precision of each artefact plane: how much of what is flagged is real.

    The mirror of :func:`artefact_pixel_scores`' recall: a predicted pixel counts
    as right when the truth plane is set within one pixel of it. Pixels with
    NO_DATA in the truth are left out.

    Parameters
    ----------
    predicted_mask, truth_mask : numpy.ndarray
        uint32 ``(ny, nx)`` :class:`~survey_seg.masks.MaskBit` planes.
    bits : sequence of str
        Plane names to score (default :data:`ARTEFACT_PLANES`).

    Returns
    -------
    dict of str to float
        ``{name: precision}``, NaN where nothing valid is predicted.
    """
    predicted, truth, bits, valid = _checked_planes(predicted_mask, truth_mask, bits)
    square = np.ones((3, 3), dtype=bool)
    precision: dict[str, float] = {}
    for name in bits:
        bit = np.uint32(int(MaskBit[name]))
        pred_plane = ((predicted & bit) != 0) & valid
        n_predicted = int(pred_plane.sum())
        if not n_predicted:
            precision[name] = float("nan")
            continue
        near = ndimage.binary_dilation((truth & bit) != 0, structure=square)
        precision[name] = float(np.count_nonzero(pred_plane & near)) / n_predicted
    return precision


# --------------------------------------------------------------------------- footprints


def _valid_pixels(shape: tuple[int, ...], valid: np.ndarray | None) -> np.ndarray:
    """The boolean valid-pixel map, all True when ``valid`` is None."""
    if valid is None:
        return np.ones(shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != shape:
        raise ValueError(f"valid has shape {valid.shape}, the segmentations {shape}.")
    return valid


def _segmentations(
    predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check two label maps (and a valid map) of one shape."""
    predicted = np.asarray(predicted)
    truth = np.asarray(truth)
    if predicted.ndim != 2 or predicted.shape != truth.shape:
        raise ValueError(
            f"predicted_segmentation has shape {predicted.shape} and truth_segmentation "
            f"{truth.shape}; give 2-D label maps of the same mosaic."
        )
    for name, array in (("predicted_segmentation", predicted), ("truth_segmentation", truth)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} has dtype {array.dtype}; give integer labels (0 = none).")
    return predicted, truth, _valid_pixels(truth.shape, valid)


def segmentation_iou(
    predicted_segmentation: np.ndarray,
    truth_segmentation: np.ndarray,
    valid: np.ndarray | None = None,
) -> float:
    """Footprint IoU: intersection over union of the "any object" pixels.

    ``((pred > 0) & (truth > 0)).sum() / ((pred > 0) | (truth > 0)).sum()`` over the
    valid pixels; it scores the footprints, not the split into objects (see
    :func:`object_iou` for that).

    Parameters
    ----------
    predicted_segmentation, truth_segmentation : numpy.ndarray
        Integer ``(ny, nx)`` label maps, 0 for background.
    valid : numpy.ndarray, optional
        Boolean ``(ny, nx)``: only these pixels count (e.g. not NO_DATA).

    Returns
    -------
    float
        The IoU in [0, 1]; NaN when neither map has an object pixel.
    """
    predicted, truth, valid = _segmentations(predicted_segmentation, truth_segmentation, valid)
    pred_any = (predicted > 0) & valid
    truth_any = (truth > 0) & valid
    union = int(np.count_nonzero(pred_any | truth_any))
    if not union:
        return float("nan")
    return float(np.count_nonzero(pred_any & truth_any)) / union


def object_iou(
    predicted_segmentation: np.ndarray,
    truth_segmentation: np.ndarray,
    valid: np.ndarray | None = None,
) -> float:
    """Mean, over truth objects, of the best IoU with any predicted segment.

    Each truth object (label > 0 on a valid pixel) takes the largest IoU that a
    single predicted segment reaches with it, 0 when no segment touches it. A merged
    blend or a shredded galaxy lowers the score; a perfect instance map scores 1.

    Parameters
    ----------
    predicted_segmentation, truth_segmentation : numpy.ndarray
        Integer ``(ny, nx)`` label maps, 0 for background.
    valid : numpy.ndarray, optional
        Boolean ``(ny, nx)``: only these pixels count.

    Returns
    -------
    float
        Mean best IoU; NaN when the truth has no object.
    """
    predicted, truth, valid = _segmentations(predicted_segmentation, truth_segmentation, valid)
    truth_ids, truth_index = np.unique(truth[valid], return_inverse=True)
    pred_ids, pred_index = np.unique(predicted[valid], return_inverse=True)
    truth_area = np.bincount(truth_index, minlength=len(truth_ids))
    pred_area = np.bincount(pred_index, minlength=len(pred_ids))
    objects = truth_ids > 0
    if not objects.any():
        return float("nan")
    both = (truth_ids[truth_index] > 0) & (pred_ids[pred_index] > 0)
    pair = truth_index[both].astype(np.int64) * len(pred_ids) + pred_index[both]
    pair_ids, intersection = np.unique(pair, return_counts=True)
    t, p = np.divmod(pair_ids, len(pred_ids))
    iou = intersection / (truth_area[t] + pred_area[p] - intersection)
    best = np.zeros(len(truth_ids))
    np.maximum.at(best, t, iou)
    return float(best[objects].mean())


# ------------------------------------------------------------------------ tile verdicts


def truth_tile_labels(
    truth_mask: np.ndarray, tiles_table: pd.DataFrame, *, inspect_fraction: float = 0.02
) -> np.ndarray:
    """Which tiles are bad in the truth.

    A tile is bad when more than ``inspect_fraction`` of its core pixels carry an
    artefact plane (BAD, SAT, CR, STREAK, GHOST) or NO_DATA in the truth mask: the
    truth counterpart of the ``inspect`` verdict.

    Parameters
    ----------
    truth_mask : numpy.ndarray
        uint32 ``(ny, nx)`` truth :class:`~survey_seg.masks.MaskBit` planes.
    tiles_table : pandas.DataFrame
        One row per tile with the core bounds ``x0``, ``x1``, ``y0``, ``y1``
        (end-exclusive, mosaic pixels), as in ``tiles.parquet``.
    inspect_fraction : float
        Largest fraction of flagged core pixels of a good tile.

    Returns
    -------
    numpy.ndarray
        Boolean, one per row of ``tiles_table``: True for a bad tile.
    """
    truth = _mask_array("truth_mask", truth_mask)
    missing = [c for c in ("x0", "x1", "y0", "y1") if c not in tiles_table]
    if missing:
        raise ValueError(f"tiles_table lacks the columns {missing}; pass tiles.parquet.")
    if not 0.0 <= inspect_fraction < 1.0:
        raise ValueError(f"inspect_fraction={inspect_fraction!r} is not a fraction in [0, 1).")
    flagged = (truth & np.uint32(int(ARTEFACT_BITS | MaskBit.NO_DATA))) != 0
    ny, nx = truth.shape
    labels = np.zeros(len(tiles_table), dtype=bool)
    bounds = tiles_table[["x0", "x1", "y0", "y1"]].to_numpy(dtype=np.int64)
    for k, (x0, x1, y0, y1) in enumerate(bounds):
        if not (0 <= x0 < x1 <= nx and 0 <= y0 < y1 <= ny):
            raise ValueError(
                f"tile {k} core x {x0}:{x1}, y {y0}:{y1} is not inside the {ny} x {nx} mask."
            )
        labels[k] = flagged[y0:y1, x0:x1].mean() > inspect_fraction
    return labels


def verdict_auc(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool]) -> float:
    """ROC AUC of ``scores`` for the positive ``labels``, from the Mann-Whitney U.

    The AUC is the probability that a random positive scores above a random
    negative, ties counted half: ``(R+ - n+ (n+ + 1) / 2) / (n+ n-)`` with ``R+``
    the sum of the positives' mid-ranks.

    Parameters
    ----------
    scores : array-like
        Finite scores, higher meaning more likely positive.
    labels : array-like
        Booleans of the same length, True for a positive (a bad tile).

    Returns
    -------
    float
        AUC in [0, 1]; NaN when either class is empty.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(labels).ravel()
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels; give one of each.")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values; give finite scores.")
    labels = labels.astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# ------------------------------------------------------------------------ calibration


def reliability_curve(
    probabilities: np.ndarray | Sequence[float],
    outcomes: np.ndarray | Sequence[bool],
    bins: int = 10,
) -> pd.DataFrame:
    """Predicted probability against observed frequency, in equal-width bins.

    Parameters
    ----------
    probabilities : array-like
        Predicted probabilities of the event, in [0, 1].
    outcomes : array-like
        Of the same length: whether the event happened (booleans), or, for a
        predicted fraction, the observed fraction in [0, 1].
    bins : int
        Number of equal-width bins over [0, 1].

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``low``, ``high``, ``count``,
        ``mean_probability`` and ``frequency`` (the mean outcome).
    """
    p = np.asarray(probabilities, dtype=float).ravel()
    y = np.asarray(outcomes).ravel()
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} outcomes; give one of each.")
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError("probabilities must be finite and in [0, 1].")
    y = y.astype(np.float64)
    if not (np.isfinite(y).all() and ((y >= 0) & (y <= 1)).all()):
        raise ValueError("outcomes must be booleans or fractions in [0, 1].")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r} must be a positive integer.")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        if inside.any():
            rows.append(
                {
                    "low": edges[k],
                    "high": edges[k + 1],
                    "count": int(inside.sum()),
                    "mean_probability": float(p[inside].mean()),
                    "frequency": float(y[inside].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["low", "high", "count", "mean_probability", "frequency"])


def expected_calibration_error(
    probabilities: np.ndarray | Sequence[float],
    outcomes: np.ndarray | Sequence[bool],
    bins: int = 10,
) -> float:
    """Expected calibration error: the count-weighted mean gap of :func:`reliability_curve`.

    ``sum_k (n_k / n) |mean probability_k - frequency_k|``; 0 for perfectly
    calibrated probabilities, NaN for no probabilities.
    """
    curve = reliability_curve(probabilities, outcomes, bins)
    if not len(curve):
        return float("nan")
    gap = (curve["mean_probability"] - curve["frequency"]).abs()
    return float((gap * curve["count"]).sum() / curve["count"].sum())
