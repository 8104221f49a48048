"""Extended hosts: the sources inside one galaxy's body are one object.

The "hot and cold" detection of CANDELS and GEMS (Rix et al. 2004; Galametz et
al. 2013) runs SExtractor twice: a cold pass, on a coarse view of the image,
that finds bright extended galaxies whole, and a hot pass that finds faint
compact objects; a hot source inside a cold galaxy is dropped as a piece of it
(a knot, a clump, an arm, a noise bump on its disk).
:func:`join_pieces_to_hosts` applies that rule to the sources of one window, in
two steps. Its cold view is the S/N image smoothed by a Gaussian a few
resolution elements wide: a faint disk's noise bumps blur into its body there,
while two objects further apart than the smoothing keep a peak each. The
sources whose peaks lie in one object of the cold view join when their light
together is extended (a half-light radius of several resolution elements, not
held at their peaks as a group of stars holds it) and stands out of the field
around it. Then a fainter source whose peak lies inside an extended source's
ellipse (a bright knot keeps a cold peak of its own) joins it. A source that the
network is sure of (a centre peak of high probability: a companion galaxy on a
larger one) is never a piece. Sizes are in resolution elements: the width of a
point source in the pixels screened. Pure numpy; every step is local.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from survey_seg.measure import (
    label_maximum,
    label_maximum_position,
    relabel_in_raster_order,
)
from survey_seg.noise import gaussian_kernel_norm
from survey_seg.psf import SIGMA_PER_FWHM

__all__ = ["HostConfig", "cold_objects", "join_pieces_to_hosts"]


@dataclass(frozen=True)
class HostConfig:
    """How coarse the cold view is, what makes a source a host and a neighbour a piece.

    Sizes are in resolution elements (the FWHM of a point source in the pixels
    screened).

    Attributes
    ----------
    smoothing_fwhm : float
        FWHM of the cold view's Gaussian smoothing (0: no cold view, the hosts'
        ellipses alone). Two point sources of equal flux keep a peak each when
        they lie further apart than about this (times 0.9).
    min_contrast : float
        Least ratio of a galaxy's mean light within its half-light radius to the
        median light 2-3 such radii from its centre: a galaxy stands out of the
        field around it, a patch of a sea of unresolved stars (the Galactic
        centre) does not.
    min_radius_fwhm : float
        Least half-light radius of a host, or of the light of the sources that
        one cold object holds for them to be one object. A point source has
        0.5 (Gaussian) to 0.8 (Moffat, beta 2) FWHM; a pair that the cold view
        sees as one (closer than the smoothing) has at most about 1.2.
    max_point_fraction : float
        Largest fraction of that light within one resolution element of the
        sources' peaks. A group of stars (a crowded field seen coarsely) holds
        most of its light at its peaks; a galaxy holds most of it between its
        knots.
    reach : float
        A fainter source whose peak lies within this many half-light radii of an
        extended host, along its ellipse, is a piece of it.
    max_piece_fraction : float
        Largest ratio of a piece's light to its host's. A clump carries a
        minority of its galaxy's light (Guo et al. 2015 count clumps from 8 %),
        but its segment holds a share of the disk around it too.
    sure_centre : float
        A source seeded by a centre peak of at least this probability is an
        object by the network's own judgement (a companion galaxy on a larger
        one's disk), never a piece; a cold object with two such sources is two
        objects or more.
    """

    smoothing_fwhm: float = 2.5
    min_contrast: float = 3.0
    min_radius_fwhm: float = 1.5
    max_point_fraction: float = 0.5
    reach: float = 2.0
    max_piece_fraction: float = 0.7
    sure_centre: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.smoothing_fwhm) and self.smoothing_fwhm >= 0):
            raise ValueError(
                "HostConfig.smoothing_fwhm must be 0 (off) or positive, got "
                f"{self.smoothing_fwhm!r}"
            )
        for name in (
            "min_contrast",
            "min_radius_fwhm",
            "max_point_fraction",
            "reach",
            "max_piece_fraction",
            "sure_centre",
        ):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"HostConfig.{name} must be a positive number, got {value!r}")


def cold_objects(
    snr_image: np.ndarray, footprints: np.ndarray, *, resolution_pix: float, smoothing_fwhm: float
) -> np.ndarray:
    """The objects of the cold view: one per peak of the smoothed S/N in the footprints.

    Parameters
    ----------
    snr_image : numpy.ndarray
        Per-pixel S/N (0 where there is no data).
    footprints : numpy.ndarray
        int labels of the footprints (0: sky); the cold objects divide them.
    resolution_pix : float
        Width (FWHM, pix) of a point source in the pixels.
    smoothing_fwhm : float
        FWHM of the smoothing, in units of ``resolution_pix``.

    Returns
    -------
    numpy.ndarray
        int32 labels of the cold objects (0: sky).
    """
    sigma = smoothing_fwhm * resolution_pix * SIGMA_PER_FWHM
    cold = ndimage.gaussian_filter(snr_image.astype(np.float64), sigma, truncate=4.0)
    cold /= gaussian_kernel_norm(sigma)
    inside = footprints > 0
    peaks = (cold == ndimage.maximum_filter(cold, size=3)) & inside
    markers, n_markers = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    # a footprint whose smoothed light peaks outside it gets its brightest pixel
    unmarked = np.setdiff1d(np.unique(footprints[inside]), np.unique(footprints[peaks]))
    if unmarked.size:
        brightest = ndimage.maximum_position(cold, footprints, unmarked)
        ys, xs = np.array(brightest, dtype=np.int64).reshape(-1, 2).T
        markers[ys, xs] = n_markers + 1 + np.arange(unmarked.size)
    return watershed(-cold, markers, connectivity=2, mask=inside).astype(np.int32)


def join_pieces_to_hosts(
    sources: np.ndarray,
    footprints: np.ndarray,
    flux_image: np.ndarray,
    snr_image: np.ndarray,
    significance: np.ndarray,
    centre_peaks: np.ndarray,
    *,
    resolution_pix: float,
    config: HostConfig,
) -> np.ndarray:
    """Join the pieces of every extended galaxy: its knots, clumps and noise bumps.

    Two steps. First the sources that one cold object holds
    (:func:`cold_objects`) join when their light together is extended: a half-light
    radius of at least ``config.min_radius_fwhm`` resolution elements, of which at
    most ``config.max_point_fraction`` lies within one of their peaks (a group
    of stars holds its light there), that stands ``config.min_contrast`` times
    above the field around it, and the network is sure of one of their centres
    at most (``config.sure_centre``). Then each source so extended is a host, and
    a source of its footprint whose peak lies within ``config.reach`` host
    half-light radii along the host's ellipse, whose light is at most
    ``config.max_piece_fraction`` of the host's and whose centre the network is
    not sure of joins it (the brightest such host): a bright knot far out on a
    disk keeps a cold peak of its own.

    Parameters
    ----------
    sources, footprints : numpy.ndarray
        int labels (0: sky); every source lies in one footprint.
    flux_image : numpy.ndarray
        Background-subtracted image: the light.
    snr_image : numpy.ndarray
        Per-pixel S/N (0 where there is no data): the cold view's input.
    significance : numpy.ndarray
        Image whose maximum in a source is its peak.
    centre_peaks : numpy.ndarray
        The network's centre probability at the centre peaks that seeded the
        sources, 0 elsewhere.
    resolution_pix : float
        Width (FWHM, pix) of a point source in the pixels screened: the PSF's,
        or the native pixels' on an upsampled window.
    config : HostConfig

    Returns
    -------
    numpy.ndarray
        int32 source labels, numbered in raster order.
    """
    if int(sources.max(initial=0)) < 2:
        return sources
    light = np.where(np.isfinite(flux_image), np.maximum(flux_image, 0.0), 0.0)
    joined = sources
    if config.smoothing_fwhm > 0:  # 0: no cold view, the hosts' ellipses alone
        cold = cold_objects(
            snr_image,
            footprints,
            resolution_pix=resolution_pix,
            smoothing_fwhm=config.smoothing_fwhm,
        )
        sure = label_maximum(centre_peaks, sources, np.arange(int(sources.max()) + 1))
        joined = _join_cold_groups(
            sources, cold, sure >= config.sure_centre, light, significance, resolution_pix, config
        )
    sure = label_maximum(centre_peaks, joined, np.arange(int(joined.max()) + 1))
    return _join_inside_hosts(
        joined, footprints, sure >= config.sure_centre, light, significance, resolution_pix, config
    )


def _peaks_and_point_light(
    sources: np.ndarray, light: np.ndarray, significance: np.ndarray, resolution_pix: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each source's peak, its light and its light within a resolution element of a peak.

    Arrays indexed by label ``0 .. n`` (the peaks: ``1 .. n``, -1 where absent).
    """
    n = int(sources.max())
    peak_y, peak_x = label_maximum_position(significance, sources, np.arange(1, n + 1))
    present = peak_y >= 0
    at_peaks = np.zeros(sources.shape, dtype=bool)
    at_peaks[peak_y[present], peak_x[present]] = True
    near_peaks = ndimage.distance_transform_edt(~at_peaks) <= resolution_pix
    source_light = np.bincount(sources.ravel(), light.ravel(), n + 1)
    source_near = np.bincount(sources.ravel(), (light * near_peaks).ravel(), n + 1)
    return peak_y, peak_x, source_light, source_near


def _join_cold_groups(
    sources: np.ndarray,
    cold: np.ndarray,
    sure: np.ndarray,
    light: np.ndarray,
    significance: np.ndarray,
    resolution_pix: float,
    config: HostConfig,
) -> np.ndarray:
    """Join the sources whose peaks share a cold object and whose light is extended.

    Unless the network is sure of more than one centre among them.
    """
    n = int(sources.max())
    peak_y, peak_x, source_light, source_near = _peaks_and_point_light(
        sources, light, significance, resolution_pix
    )
    present = peak_y >= 0
    owner = np.zeros(n + 1, dtype=np.int64)  # per source: the cold object under its peak
    owner[1:][present] = cold[peak_y[present], peak_x[present]]
    n_cold = int(cold.max()) + 1
    counts = np.bincount(owner[1:], minlength=n_cold)
    counts[0] = 0
    grouped = np.where(counts[owner] > 1, owner, 0)  # per source: its shared cold object
    shared = np.flatnonzero(counts > 1)
    if shared.size == 0:
        return sources
    radii, centre_y, centre_x, _, _ = _light_profiles(grouped[sources], light, shared)
    contrast = _contrast(light, centre_y, centre_x, radii)
    group_light = np.bincount(grouped, source_light, n_cold)[shared]
    group_near = np.bincount(grouped, source_near, n_cold)[shared]
    extended = np.zeros(n_cold, dtype=bool)
    extended[shared] = (
        (radii >= config.min_radius_fwhm * resolution_pix)
        & (group_near <= config.max_point_fraction * group_light)
        & (contrast >= config.min_contrast)
        & (np.bincount(grouped, sure, n_cold)[shared] <= 1)
    )
    # a joined group takes the label of its first source; every other source keeps its own
    first = np.full(n_cold, n + 1, dtype=np.int64)
    np.minimum.at(first, grouped[1:], np.arange(1, n + 1))
    relabel = np.arange(n + 1)
    joined = extended[grouped] & (grouped > 0)
    relabel[joined] = first[grouped[joined]]
    return relabel_in_raster_order(relabel[sources].astype(np.int32))


def _join_inside_hosts(
    sources: np.ndarray,
    footprints: np.ndarray,
    sure: np.ndarray,
    light: np.ndarray,
    significance: np.ndarray,
    resolution_pix: float,
    config: HostConfig,
) -> np.ndarray:
    """Join each fainter source whose peak lies inside an extended host's ellipse to it.

    Unless the network is sure of its centre.
    """
    n = int(sources.max())
    if n < 2:
        return sources
    peak_y, peak_x, source_light, source_near = _peaks_and_point_light(
        sources, light, significance, resolution_pix
    )
    min_radius = config.min_radius_fwhm * resolution_pix
    area = np.bincount(sources.ravel(), minlength=n + 1)
    candidates = np.flatnonzero(
        (area >= np.pi * min_radius**2) & (source_near <= config.max_point_fraction * source_light)
    )
    candidates = candidates[candidates > 0]
    if candidates.size == 0:
        return sources
    radii, centre_y, centre_x, axis_ratio, angle = _light_profiles(sources, light, candidates)
    is_host = (radii >= min_radius) & (
        _contrast(light, centre_y, centre_x, radii) >= config.min_contrast
    )
    if not is_host.any():
        return sources
    footprint_of = np.zeros(n + 1, dtype=np.int64)
    present = peak_y >= 0
    footprint_of[1:][present] = footprints[peak_y[present], peak_x[present]]
    inside_of = {}  # per host: the sources of its footprint inside its ellipse
    for i in np.flatnonzero(is_host):
        host = int(candidates[i])
        pieces = np.flatnonzero(footprint_of == footprint_of[host])
        pieces = pieces[(pieces > 0) & (pieces != host) & ~sure[pieces]]
        distance = _elliptical_distance(
            peak_y[pieces - 1] - centre_y[i],
            peak_x[pieces - 1] - centre_x[i],
            axis_ratio[i],
            angle[i],
            radii[i],
        )
        inside_of[host] = pieces[distance <= config.reach]
    # a piece goes to the brightest host that holds it
    parent = np.arange(n + 1)
    for host in sorted(inside_of, key=lambda host: (source_light[host], host)):
        pieces = inside_of[host]
        parent[pieces[source_light[pieces] <= config.max_piece_fraction * source_light[host]]] = (
            host
        )
    root = parent.copy()
    for _ in range(n):  # a piece points to a brighter source: the chains end
        following = root[root]
        if np.array_equal(following, root):
            break
        root = following
    return relabel_in_raster_order(root[sources].astype(np.int32))


def _light_profiles(
    labels: np.ndarray, light: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Half-light radius, centre and ellipse of the light (>= 0) of each label of ``index``.

    From the label's own pixels, around its light-weighted centre. Returns the
    radii (pix; 0 where a label has no light), the centres ``y``, ``x`` (NaN
    there), and the axis ratio ``b / a`` and major-axis angle (radians from +x)
    of the light's second moments.
    """
    boxes = ndimage.find_objects(labels)
    radii, axis_ratio, angle = np.zeros(len(index)), np.ones(len(index)), np.zeros(len(index))
    centre_y, centre_x = np.full(len(index), np.nan), np.full(len(index), np.nan)
    for i, label in enumerate(index):
        box = boxes[label - 1]
        ys, xs = np.nonzero(labels[box] == label)
        weight = light[box][ys, xs]
        total = weight.sum()
        if not total > 0:
            continue
        mean_y, mean_x = (weight @ ys) / total, (weight @ xs) / total
        dy, dx = ys - mean_y, xs - mean_x
        distance = np.hypot(dy, dx)
        order = np.argsort(distance, kind="stable")
        cumulative = np.cumsum(weight[order])
        radii[i] = distance[order][np.searchsorted(cumulative, 0.5 * total)]
        centre_y[i], centre_x[i] = mean_y + box[0].start, mean_x + box[1].start
        cxx, cyy, cxy = (weight @ (dx * dx), weight @ (dy * dy), weight @ (dx * dy))
        root = np.hypot(0.5 * (cxx - cyy), cxy)
        major, minor = 0.5 * (cxx + cyy) + root, 0.5 * (cxx + cyy) - root
        axis_ratio[i] = np.sqrt(minor / major) if minor > 0 else 1.0
        angle[i] = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return radii, centre_y, centre_x, axis_ratio, angle


def _contrast(
    light: np.ndarray, centre_y: np.ndarray, centre_x: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Mean light within each radius of its centre over the median light at 2-3 radii.

    All pixels count, whatever their source: a galaxy stands out of the sky or
    the field around it; a patch of a sea of unresolved stars does not. 0 where
    the window holds none of the field around it.
    """
    ny, nx = light.shape
    contrast = np.zeros(len(radii))
    for i, (y, x, r) in enumerate(zip(centre_y, centre_x, radii, strict=True)):
        if not (np.isfinite(y) and r > 0):
            continue
        y0, y1 = max(int(y - 3 * r) - 1, 0), min(int(y + 3 * r) + 2, ny)
        x0, x1 = max(int(x - 3 * r) - 1, 0), min(int(x + 3 * r) + 2, nx)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        distance = np.hypot(yy - y, xx - x)
        box = light[y0:y1, x0:x1]
        ring = box[(distance >= 2 * r) & (distance <= 3 * r)]
        if ring.size == 0:  # no field around it in the window: it cannot be told to stand out
            continue
        surroundings = np.median(ring)
        inner = box[distance <= r].mean()
        contrast[i] = inner / surroundings if surroundings > 0 else np.inf
    return contrast


def _elliptical_distance(
    dy: np.ndarray, dx: np.ndarray, axis_ratio: float, angle: float, radius: float
) -> np.ndarray:
    """Distance along an ellipse in units of its geometric-mean radius ``radius``.

    The ellipse has axis ratio ``axis_ratio`` (minor over major) and its major
    axis at ``angle`` (radians from +x).
    """
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    root_q = np.sqrt(axis_ratio)
    return np.hypot(along * root_q, across / root_q) / radius
