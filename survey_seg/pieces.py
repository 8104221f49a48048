"""Touching sources judged one object or two by a small learned classifier.

The merges of :mod:`survey_seg.blends` are hand-made rules, each for one way an
object falls apart (a valley too shallow, a knot with a clump peak, an edge-on
disk's mirror halves). This module decides every touching pair of sources of a
footprint at once: a pair is described by a few numbers that do not depend on
the pixel scale (peak significances, the saddle between the two as a fraction
of each peak, their distance and sizes in PSF widths, the flux ratio, the
network's centre, clump and overlap heads at each), a small multilayer
perceptron trained on simulated scenes (:mod:`survey_seg.piece_training`) gives
the probability that the two are pieces of one object, and the pairs are joined
as a mutex watershed joins them (Wolf et al. 2018): the surest decisions first,
two groups never joined once a pair between them was judged apart.

Numpy only: the classifier's weights are read from a JSON file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from survey_seg.blends import _touching_pixels
from survey_seg.measure import label_maximum, label_maximum_position

__all__ = [
    "PAIR_FEATURES",
    "PairFeatures",
    "PieceClassifier",
    "join_pieces",
    "join_pieces_by_probability",
    "pair_features",
]

PAIR_FEATURES: tuple[str, ...] = (
    "log_peak_brighter",
    "log_peak_fainter",
    "log_flux_ratio",
    "saddle_to_fainter_peak",
    "saddle_to_brighter_peak",
    "distance_fwhm",
    "distance_to_brighter_radius",
    "log_radius_brighter_fwhm",
    "log_radius_fainter_fwhm",
    "centre_brighter",
    "centre_fainter",
    "clump_brighter",
    "clump_fainter",
    "overlap_fainter",
    "contact_to_fainter_size",
    "log_area_fainter_fwhm",
    "log_area_brighter_fwhm",
    "mirror_to_fainter_peak",
    "log_footprint_members",
    "centre_at_brighter_peak",
    "centre_at_fainter_peak",
    "concentration_fainter",
    "elliptical_distance_to_brighter",
    "overlap_max_fainter",
    "offset_fainter_fwhm",
)
"""The features of a pair of touching sources, brighter (by flux) first; see
:func:`pair_features`."""

_MIN_PEAK = 0.1
"""Floor of a peak significance (a piece of noise may peak under zero)."""


@dataclass(frozen=True)
class PairFeatures:
    """Every touching pair of sources of one footprint and its features.

    Attributes
    ----------
    pairs : numpy.ndarray
        ``(n, 2)`` int64 source labels, smaller first.
    values : numpy.ndarray
        ``(n, len(PAIR_FEATURES))`` float32 features, in :data:`PAIR_FEATURES` order.
    source_centre : numpy.ndarray
        Per source label ``0 .. n``: the largest centre probability in it.
    source_clump : numpy.ndarray
        Per source label ``0 .. n``: the clump probability at its peak.
    """

    pairs: np.ndarray
    values: np.ndarray
    source_centre: np.ndarray
    source_clump: np.ndarray


def pair_features(
    sources: np.ndarray,
    footprints: np.ndarray,
    significance: np.ndarray,
    flux: np.ndarray,
    centre: np.ndarray,
    clump: np.ndarray,
    overlap: np.ndarray,
    psf_fwhm_pix: float,
) -> PairFeatures:
    """The :data:`PAIR_FEATURES` of every touching pair of sources of one footprint.

    Parameters
    ----------
    sources, footprints : numpy.ndarray
        int source labels ``1 .. n`` and footprint labels (0 for background).
    significance : numpy.ndarray
        The point-source significance (S/N smoothed by a Gaussian, unit noise).
    flux : numpy.ndarray
        Background-subtracted light, 0 where unusable.
    centre, clump, overlap : numpy.ndarray
        The network's centre, clump and overlap (blended) probabilities.
    psf_fwhm_pix : float
        PSF FWHM in the pixels of these arrays.

    Returns
    -------
    PairFeatures
    """
    if psf_fwhm_pix <= 0:
        raise ValueError(f"psf_fwhm_pix must be positive, got {psf_fwhm_pix}")
    shapes = {a.shape for a in (sources, footprints, significance, flux, centre, clump, overlap)}
    if len(shapes) != 1:
        raise ValueError(f"the arrays of one window must share a shape, got {sorted(shapes)}")
    n = int(sources.max(initial=0))
    empty = PairFeatures(
        np.zeros((0, 2), np.int64),
        np.zeros((0, len(PAIR_FEATURES)), np.float32),
        np.zeros(n + 1),
        np.zeros(n + 1),
    )
    if n < 2:
        return empty
    key, first, second = _touching_pixels(sources, footprints, significance)
    if key.size == 0:
        return empty
    unique, inverse, contact = np.unique(key, return_inverse=True, return_counts=True)
    saddle = np.full(unique.size, -np.inf)
    np.maximum.at(saddle, inverse, np.minimum(first, second))
    pairs = np.stack([unique // (n + 1), unique % (n + 1)], axis=1).astype(np.int64)
    per_source = _source_measures(sources, footprints, significance, flux, centre, clump, overlap)
    return PairFeatures(
        pairs,
        _features(pairs, saddle, contact, per_source, significance, psf_fwhm_pix),
        per_source["centre"],
        per_source["clump"],
    )


def _source_measures(
    sources: np.ndarray,
    footprints: np.ndarray,
    significance: np.ndarray,
    flux: np.ndarray,
    centre: np.ndarray,
    clump: np.ndarray,
    overlap: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per source label ``0 .. n``: peak, its position, light, size and the heads."""
    n = int(sources.max())
    index = np.arange(1, n + 1)
    light = np.clip(flux, 0.0, None).astype(np.float64)
    ys, xs = np.indices(sources.shape, dtype=np.float64)
    total = np.r_[0.0, ndimage.sum_labels(light, sources, index)]
    safe = np.where(total > 0, total, 1.0)
    mean_y = np.r_[0.0, ndimage.sum_labels(light * ys, sources, index)] / safe
    mean_x = np.r_[0.0, ndimage.sum_labels(light * xs, sources, index)] / safe

    def moment(values: np.ndarray) -> np.ndarray:
        return np.r_[0.0, ndimage.sum_labels(light * values, sources, index)] / safe

    var_y = np.clip(moment(ys**2) - mean_y**2, 0.25, None)
    var_x = np.clip(moment(xs**2) - mean_x**2, 0.25, None)
    cov_xy = moment(ys * xs) - mean_y * mean_x
    radius = np.sqrt(0.5 * (var_y + var_x))
    peak_y, peak_x = (np.r_[0, p] for p in label_maximum_position(significance, sources, index))
    # the light of each source within the 3 x 3 pixels around its peak
    near_peak = np.zeros(n + 1)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y = np.clip(peak_y + dy, 0, sources.shape[0] - 1)
            x = np.clip(peak_x + dx, 0, sources.shape[1] - 1)
            own = sources[y, x] == np.arange(n + 1)
            near_peak += np.where(own, light[y, x], 0.0)
    members = np.bincount(footprints[peak_y[1:], peak_x[1:]], minlength=int(footprints.max()) + 1)
    return {
        "flux": total,
        "peak": np.maximum(significance[peak_y, peak_x], _MIN_PEAK),
        "peak_y": peak_y,
        "peak_x": peak_x,
        "radius": radius,
        "area": np.bincount(sources.ravel(), minlength=n + 1).astype(np.float64),
        "centre": np.r_[0.0, label_maximum(centre, sources, index)],
        "clump": clump[peak_y, peak_x].astype(np.float64),
        "overlap": np.r_[0.0, ndimage.mean(overlap, sources, index)],
        "members": np.r_[1, members[footprints[peak_y[1:], peak_x[1:]]]].astype(np.float64),
        "centre_at_peak": centre[peak_y, peak_x].astype(np.float64),
        "concentration": np.clip(near_peak / safe, 0.0, 1.5),
        "var_y": var_y,
        "var_x": var_x,
        "cov_xy": cov_xy,
        "overlap_max": np.r_[0.0, label_maximum(overlap, sources, index)],
        "offset": np.hypot(mean_y - peak_y, mean_x - peak_x),
    }


def _features(
    pairs: np.ndarray,
    saddle: np.ndarray,
    contact: np.ndarray,
    source: dict[str, np.ndarray],
    significance: np.ndarray,
    psf_fwhm_pix: float,
) -> np.ndarray:
    """The feature rows of ``pairs``, the brighter (by flux) of each pair first."""
    first_brighter = source["flux"][pairs[:, 0]] >= source["flux"][pairs[:, 1]]
    a = np.where(first_brighter, pairs[:, 0], pairs[:, 1])
    b = np.where(first_brighter, pairs[:, 1], pairs[:, 0])
    peak_a, peak_b = source["peak"][a], source["peak"][b]
    dy = source["peak_y"][b] - source["peak_y"][a]
    dx = source["peak_x"][b] - source["peak_x"][a]
    distance = np.hypot(dy, dx)
    # the significance at the fainter peak's mirror image through the brighter one's
    my, mx = source["peak_y"][a] - dy, source["peak_x"][a] - dx
    inside = (my >= 0) & (my < significance.shape[0]) & (mx >= 0) & (mx < significance.shape[1])
    mirror = np.zeros(len(pairs))
    mirror[inside] = significance[my[inside], mx[inside]]
    # the fainter peak's distance in the brighter source's own ellipse (second moments)
    var_y, var_x, cov = source["var_y"][a], source["var_x"][a], source["cov_xy"][a]
    determinant = np.maximum(var_y * var_x - cov**2, 1e-6)
    elliptical = np.sqrt(
        np.clip((dy**2 * var_x - 2 * dy * dx * cov + dx**2 * var_y), 0, None) / determinant
    )
    flux_floor = 1e-6 * max(float(source["flux"].max()), 1e-12)
    fwhm = float(psf_fwhm_pix)
    columns = [
        np.log10(peak_a),
        np.log10(peak_b),
        np.log10(
            np.maximum(source["flux"][b], flux_floor) / np.maximum(source["flux"][a], flux_floor)
        ),
        saddle / peak_b,
        saddle / peak_a,
        distance / fwhm,
        distance / source["radius"][a],
        np.log10(source["radius"][a] / fwhm),
        np.log10(source["radius"][b] / fwhm),
        source["centre"][a],
        source["centre"][b],
        source["clump"][a],
        source["clump"][b],
        source["overlap"][b],
        contact / np.sqrt(source["area"][b]),
        np.log10(source["area"][b] / fwhm**2),
        np.log10(source["area"][a] / fwhm**2),
        np.clip(mirror / peak_b, -1.0, 2.0),
        np.log10(source["members"][a]),
        source["centre_at_peak"][a],
        source["centre_at_peak"][b],
        source["concentration"][b],
        elliptical,
        source["overlap_max"][b],
        source["offset"][b] / fwhm,
    ]
    values = np.stack(columns, axis=1)
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=10.0, neginf=-10.0), -10, 10).astype(
        np.float32
    )


@dataclass(frozen=True)
class PieceClassifier:
    """A small multilayer perceptron: P(two touching sources are one object).

    Attributes
    ----------
    mean, scale : numpy.ndarray
        Standardisation of the :data:`PAIR_FEATURES` (training set's mean and
        standard deviation).
    weights, biases : tuple of numpy.ndarray
        The layers, ReLU between them, a logistic output.
    min_probability : float
        A pair at least this probable is joined (:func:`join_pieces_by_probability`).
    sure_centre : float or None
        A source whose centre probability reaches this is one the network is sure
        of, and no group joins two such (:func:`join_pieces`); None: no such rule.
    knot_clump : float or None
        A source whose clump probability at its peak reaches this is a knot or
        clump of a galaxy, never sure whatever its centre probability: the
        network's centre head also fires on bright knots, and the sure rule kept
        clumpy galaxies in pieces. None: every source may be sure.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    min_probability: float = 0.5
    sure_centre: float | None = None
    knot_clump: float | None = None

    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(one object) for each row of ``features`` (``(n, len(PAIR_FEATURES))``)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.mean.size:
            raise ValueError(
                f"features must be (n, {self.mean.size}) in PAIR_FEATURES order, "
                f"got shape {features.shape}"
            )
        hidden = (features - self.mean) / self.scale
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ weight.T + bias
            if layer < len(self.weights) - 1:
                hidden = np.maximum(hidden, 0.0)
        return 1.0 / (1.0 + np.exp(-hidden[:, 0]))

    def to_dict(self) -> dict:
        """The classifier as JSON-able lists (:meth:`from_dict` reads it back)."""
        return {
            "features": list(PAIR_FEATURES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": [w.tolist() for w in self.weights],
            "biases": [b.tolist() for b in self.biases],
            "min_probability": self.min_probability,
            "sure_centre": self.sure_centre,
            "knot_clump": self.knot_clump,
        }

    @classmethod
    def from_dict(cls, entry: dict) -> PieceClassifier:
        """A classifier from :meth:`to_dict`'s form; refused if its features differ."""
        if list(entry.get("features", [])) != list(PAIR_FEATURES):
            raise ValueError(
                "the piece classifier was trained on other features than this version's "
                "PAIR_FEATURES; retrain it with python -m survey_seg.piece_training"
            )
        weights = tuple(np.asarray(w, dtype=np.float64) for w in entry["weights"])
        biases = tuple(np.asarray(b, dtype=np.float64) for b in entry["biases"])
        if len(weights) != len(biases) or not weights or weights[-1].shape[0] != 1:
            raise ValueError("a piece classifier needs matching weights and biases, one output")
        return cls(
            mean=np.asarray(entry["mean"], dtype=np.float64),
            scale=np.asarray(entry["scale"], dtype=np.float64),
            weights=weights,
            biases=biases,
            min_probability=float(entry.get("min_probability", 0.5)),
            sure_centre=_optional_float(entry.get("sure_centre")),
            knot_clump=_optional_float(entry.get("knot_clump")),
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> PieceClassifier:
        """The classifier of a JSON file written by :meth:`write`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: str | os.PathLike) -> None:
        """Write the classifier as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)


def join_pieces_by_probability(
    sources: np.ndarray,
    pairs: np.ndarray,
    probability: np.ndarray,
    min_probability: float,
    sure: np.ndarray | None = None,
) -> np.ndarray:
    """Join touching sources judged one object, the surest decisions first.

    A mutex watershed (Wolf et al. 2018) over the pairs: in order of
    ``|p - min_probability|``, a pair with ``p >= min_probability`` joins its two
    groups unless a pair between them was already judged apart; a pair under it
    marks its two groups apart. So a large piece judged part of each of two
    galaxies does not join the two. With ``sure`` (boolean per label ``0 .. n``:
    the network is sure of the source's centre), two groups that each hold a
    sure source are apart from the start: a chain of faint pieces in a crowded
    field does not join two stars.

    Returns
    -------
    numpy.ndarray
        The sources, each group under the smallest label of its members (labels
        are not renumbered: a joined label is absent).
    """
    n = int(sources.max(initial=0))
    parent = np.arange(n + 1)

    def root(label: int) -> int:
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = int(parent[label])
        return label

    apart: dict[int, set[int]] = {}
    sure_group = np.zeros(n + 1, bool) if sure is None else np.asarray(sure, bool).copy()
    certainty = np.abs(np.asarray(probability, dtype=np.float64) - min_probability)
    for index in np.argsort(-certainty, kind="stable"):
        a, b = root(int(pairs[index, 0])), root(int(pairs[index, 1]))
        if a == b:
            continue
        if probability[index] < min_probability:
            apart.setdefault(a, set()).add(b)
            apart.setdefault(b, set()).add(a)
        elif b not in apart.get(a, set()) and not (sure_group[a] and sure_group[b]):
            keep, gone = min(a, b), max(a, b)
            parent[gone] = keep
            sure_group[keep] |= sure_group[gone]
            exclusions = apart.pop(gone, set())
            for other in exclusions:
                apart[other].discard(gone)
                apart[other].add(keep)
            apart.setdefault(keep, set()).update(exclusions)
    roots = np.array([root(label) for label in range(n + 1)])
    return roots[sources].astype(sources.dtype)


def join_pieces(
    sources: np.ndarray, features: PairFeatures, classifier: PieceClassifier
) -> np.ndarray:
    """Join the touching sources that ``classifier`` judges pieces of one object.

    The pairs of ``features`` (:func:`pair_features` of ``sources``) are joined by
    their probability (:func:`join_pieces_by_probability`, at the classifier's
    ``min_probability``; with its ``sure_centre``, a source whose centre
    probability reaches that somewhere is sure, and no group holds two sure
    sources; with its ``knot_clump``, a source whose clump probability at its
    peak reaches that is a knot, never sure). Returns the sources, relabelled
    ``1 .. m``.
    """
    if len(features.pairs) == 0:
        return sources
    sure = None
    if classifier.sure_centre is not None:
        sure = features.source_centre >= classifier.sure_centre
        if classifier.knot_clump is not None:
            sure &= features.source_clump < classifier.knot_clump
    joined = join_pieces_by_probability(
        sources,
        features.pairs,
        classifier.probability(features.values),
        classifier.min_probability,
        sure,
    )
    present = np.bincount(joined.ravel(), minlength=int(sources.max()) + 1) > 0
    present[0] = False
    renumbered = np.zeros(present.size, dtype=sources.dtype)
    renumbered[present] = np.arange(1, int(present.sum()) + 1)
    return renumbered[joined]
