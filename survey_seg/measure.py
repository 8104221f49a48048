"""Measurements of labelled segments: centroid, flux, shape, peak, flags.

Pure numpy on in-memory windows. Sums run over each segment's pixels in raster
order, and positions are taken relative to the segment's peak pixel, so the
same segment measured in any window that holds it whole gives bit-identical
numbers: the property that makes tiled screening equal whole-image screening.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SegmentMeasurements",
    "label_maximum",
    "label_maximum_position",
    "light_centres",
    "measure_segments",
    "relabel_in_raster_order",
    "segment_snr",
]


@dataclass(frozen=True)
class SegmentMeasurements:
    """Per-segment measurements, one entry per label ``1 .. n``, in window pixels.

    Attributes
    ----------
    labels : numpy.ndarray
        The labels measured, ``1 .. n``.
    x_peak, y_peak : numpy.ndarray
        Window pixel of the maximum of the detection image in the segment
        (first in raster order on ties).
    dx, dy : numpy.ndarray
        Flux-weighted centroid (positive pixels only) minus the peak pixel. Add
        them to the peak in any frame (``x = x_peak + dx``) so that the centroid
        rounds alike whatever the window origin.
    flux, flux_err : numpy.ndarray
        Sum of the flux image and the square root of the summed variance.
    area : numpy.ndarray
        Pixel count.
    a, b, theta : numpy.ndarray
        RMS semi-axes (pix) and position angle (deg, counter-clockwise from +x).
    flags : numpy.ndarray
        uint32 OR of the mask planes present in the segment.
    """

    labels: np.ndarray
    x_peak: np.ndarray
    y_peak: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    area: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    flags: np.ndarray


def measure_segments(
    labels: np.ndarray,
    flux_image: np.ndarray,
    variance: np.ndarray,
    detection_image: np.ndarray,
    mask: np.ndarray,
) -> SegmentMeasurements:
    """Measure every segment of a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        int array, 0 for background and ``1 .. n`` for segments (every label used).
    flux_image : numpy.ndarray
        Background-subtracted image; non-finite pixels count as zero.
    variance : numpy.ndarray
        Per-pixel variance; non-finite pixels count as zero.
    detection_image : numpy.ndarray
        Image whose maximum defines each segment's peak (e.g. smoothed S/N).
    mask : numpy.ndarray
        uint32 mask planes; their OR over each segment becomes ``flags``.

    Returns
    -------
    SegmentMeasurements
    """
    n = int(labels.max()) if labels.size else 0
    index = np.arange(1, n + 1)
    if n == 0:
        empty_f = np.zeros(0)
        empty_i = np.zeros(0, dtype=np.int64)
        return SegmentMeasurements(
            index, empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_i,
            empty_f, empty_f, empty_f, np.zeros(0, dtype=np.uint32),
        )  # fmt: skip
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    seg = flat[inside]
    y_peak, x_peak = label_maximum_position(detection_image, labels, index)
    dy, dx, weight = _peak_offsets(labels, flux_image, inside, y_peak, x_peak)
    flux_values = np.nan_to_num(flux_image.ravel()[inside].astype(np.float64))
    var_values = np.nan_to_num(variance.ravel()[inside].astype(np.float64))

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(seg, weights=values, minlength=n + 1)[1:]

    area = np.bincount(seg, minlength=n + 1)[1:].astype(np.int64)
    flux = total(flux_values)
    flux_err = np.sqrt(total(var_values))
    w_sum = total(weight)
    my, mx = _weighted_means(seg, n, weight, dy, dx)
    ux = dx - mx[seg - 1]
    uy = dy - my[seg - 1]
    w_or_one = np.where(w_sum[seg - 1] > 0, weight, 1.0)
    norm = np.where(w_sum > 0, w_sum, area.astype(np.float64))
    cxx = total(w_or_one * ux * ux) / norm
    cyy = total(w_or_one * uy * uy) / norm
    cxy = total(w_or_one * ux * uy) / norm
    half_trace = 0.5 * (cxx + cyy)
    root = np.sqrt(np.maximum(0.25 * (cxx - cyy) ** 2 + cxy**2, 0.0))
    a = np.sqrt(np.maximum(half_trace + root, 0.0))
    b = np.sqrt(np.maximum(half_trace - root, 0.0))
    theta = np.degrees(0.5 * np.arctan2(2.0 * cxy, cxx - cyy))

    mask_values = mask.ravel()[inside].astype(np.uint32)
    flags = np.zeros(n, dtype=np.uint32)
    present = int(np.bitwise_or.reduce(mask_values))
    for bit in range(present.bit_length()):
        if not (present >> bit) & 1:
            continue
        has = np.bincount(seg, weights=(mask_values >> bit) & 1, minlength=n + 1)[1:] > 0
        if has.any():
            flags |= has.astype(np.uint32) << np.uint32(bit)
    return SegmentMeasurements(
        labels=index,
        x_peak=x_peak,
        y_peak=y_peak,
        dx=mx,
        dy=my,
        flux=flux,
        flux_err=flux_err,
        area=area,
        a=a,
        b=b,
        theta=theta,
        flags=flags,
    )


def light_centres(
    labels: np.ndarray, flux_image: np.ndarray, detection_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's light-weighted centre: the catalog's ``y``, ``x`` in window pixels.

    The centroid of the segment's positive flux (its pixels' mean where it has
    none), taken relative to its peak as in :func:`measure_segments`, so that any
    window holding the segment whole gives the same numbers.

    Parameters
    ----------
    labels : numpy.ndarray
        int array, 0 for background and ``1 .. n`` for segments.
    flux_image : numpy.ndarray
        Background-subtracted image; non-finite pixels count as zero.
    detection_image : numpy.ndarray
        Image whose maximum defines each segment's peak.

    Returns
    -------
    y, x : numpy.ndarray
        float64 centres, one per label ``1 .. n`` (NaN for an absent label).
    """
    n = int(labels.max()) if labels.size else 0
    index = np.arange(1, n + 1)
    inside = np.flatnonzero(labels.ravel())
    y_peak, x_peak = label_maximum_position(detection_image, labels, index)
    dy, dx, weight = _peak_offsets(labels, flux_image, inside, y_peak, x_peak)
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = _weighted_means(labels.ravel()[inside], n, weight, dy, dx)
    return y_peak + my, x_peak + mx


def _peak_offsets(
    labels: np.ndarray,
    flux_image: np.ndarray,
    inside: np.ndarray,
    y_peak: np.ndarray,
    x_peak: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each labelled pixel's row and column offsets from its segment's peak, and its weight.

    The weight is the pixel's positive flux (non-finite as zero).
    """
    seg = labels.ravel()[inside]
    py, px = np.divmod(inside, labels.shape[1])
    dy = (py - y_peak[seg - 1]).astype(np.float64)
    dx = (px - x_peak[seg - 1]).astype(np.float64)
    flux_values = np.nan_to_num(flux_image.ravel()[inside].astype(np.float64))
    return dy, dx, np.clip(flux_values, 0.0, None)


def _weighted_means(
    seg: np.ndarray, n: int, weight: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per label ``1 .. n``, the ``weight``-weighted mean of ``dy`` and ``dx`` (plain if dark)."""
    w_sum = np.bincount(seg, weights=weight, minlength=n + 1)[1:]
    area = np.bincount(seg, minlength=n + 1)[1:]
    safe = np.where(w_sum > 0, w_sum, 1.0)
    means = []
    for offset in (dy, dx):
        lit = np.bincount(seg, weights=weight * offset, minlength=n + 1)[1:] / safe
        plain = np.bincount(seg, weights=offset, minlength=n + 1)[1:] / area
        means.append(np.where(w_sum > 0, lit, plain))
    return means[0], means[1]


def label_maximum(values: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Largest of ``values`` in each label of ``index`` (``-inf`` for an absent label).

    The result of :func:`scipy.ndimage.maximum` without its sort of the whole
    image: one pass over the labelled pixels. NaN values are ignored.
    """
    index = np.asarray(index, dtype=np.int64)
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    best = np.full(int(max(flat.max(initial=0), index.max(initial=0))) + 1, -np.inf)
    np.fmax.at(best, flat[inside], values.ravel()[inside].astype(np.float64))
    return best[index]


def label_maximum_position(
    values: np.ndarray, labels: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the maximum of ``values`` in each label of ``index``.

    Ties go to the first pixel in raster order, so the position is the same in
    any window holding the label whole. An absent label gets ``(-1, -1)``.

    Returns
    -------
    y, x : numpy.ndarray
        int64 positions, one per entry of ``index``.
    """
    index = np.asarray(index, dtype=np.int64)
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    segment = flat[inside]
    value = values.ravel()[inside].astype(np.float64)
    size = int(max(flat.max(initial=0), index.max(initial=0))) + 1
    best = label_maximum(values, labels, np.arange(size))
    at_best = value == best[segment]
    first = np.full(size, flat.size, dtype=np.int64)
    np.minimum.at(first, segment[at_best], inside[at_best])
    first = first[index]
    y, x = np.divmod(first, labels.shape[1])
    absent = first == flat.size
    y[absent], x[absent] = -1, -1
    return y, x


def segment_snr(labels: np.ndarray, flux_image: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Each segment's flux over its error, as :func:`measure_segments` measures them.

    Returns
    -------
    numpy.ndarray
        Per label ``1 .. n``; NaN for a segment without variance.
    """
    n = int(labels.max(initial=0))
    flat = labels.ravel()

    def total(values: np.ndarray) -> np.ndarray:
        values = np.nan_to_num(values.ravel().astype(np.float64))
        return np.bincount(flat, weights=values, minlength=n + 1)[1:]

    error = np.sqrt(total(variance))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error > 0, total(flux_image) / error, np.nan)


def relabel_in_raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``1 .. n`` in order of their first pixel in raster order.

    Makes label numbers a function of the segments alone, so that the same
    segments in two windows are numbered alike (0 stays background).
    """
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    first = np.full(int(flat.max(initial=0)) + 1, flat.size, dtype=np.int64)
    np.minimum.at(first, flat[inside], inside)
    used = np.flatnonzero(first < flat.size)
    order = used[np.argsort(first[used], kind="stable")]
    lookup = np.zeros(first.size, dtype=np.int32)
    lookup[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lookup[labels]
