"""Source injection: synthetic objects drawn with the mosaic's PSF into its pixels.

Injection-recovery (LSST ``source_injection``, DES Balrog) measures how far a
catalog can be trusted: objects of known position, flux and shape are added to
the real pixels, the survey is screened again, and what comes back is counted.

:func:`make_injection_catalog` places the objects, one row each, in valid pixels
and apart from each other (the members of a pair and the clumps of a host
excepted); :func:`render_window` draws every object that touches a window with
GalSim. Each object is drawn on a stamp of its own, fixed in mosaic coordinates
by the object alone, and the stamp's overlap with the window is added: a tile
renders exactly the pixels its neighbour renders for the same object, and a tiled
rendering equals the whole image's.

This module computes only: it reads and writes no file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import galsim
import numpy as np
import pandas as pd

from survey_seg.errors import InputError
from survey_seg.psf import RESOLUTION_FLOOR_PIX, SIGMA_PER_FWHM, resolution_pix

__all__ = [
    "CLUMP_MATCH_PIX",
    "COMPLETENESS_MIN_SNR",
    "INJECTION_KINDS",
    "MIN_INJECTED_LIGHT",
    "MIN_REAL_PEAK_SNR",
    "RESOLUTION_FLOOR_PIX",
    "RESOLVED_PAIR_SEPARATION_FWHM",
    "SEPARATION_BINS_FWHM",
    "SINGLE_KINDS",
    "SNR_BINS",
    "WHOLE_KINDS",
    "RenderedWindow",
    "completeness_rows",
    "injected_fractions",
    "injection_metrics",
    "injection_stamp_half",
    "injection_tile_metrics",
    "make_injection_catalog",
    "match_injections",
    "matched_filter_snr",
    "real_peaks",
    "render_window",
    "resolution_pix",
    "source_light_sums",
    "target_flux",
]

INJECTION_KINDS = (
    "star",
    "sersic",
    "bulge_disk",
    "inclined_disk",
    "knotty",
    "pair",
    "large",
    "clumpy",
)
"""Kinds of injected objects. A ``pair`` gives two rows (kind ``pair``, one
``pair_id``); a ``clumpy`` host gives its own row and one row per clump (kind
``clump``, with the host's ``host_injection_id``)."""

_SNR_RANGE = (5.0, 100.0)
_PAIR_SEPARATION_FWHM = (1.0, 3.0)
_LARGE_HLR_FWHM = (3.0, 10.0)
_GALAXY_HLR_FWHM = (0.5, 2.0)
_CLUMPY_HOST_HLR_FWHM = (2.5, 5.0)
_CLUMPS_PER_HOST = (2, 5)
_CLUMP_FLUX_FRACTION = (0.05, 0.15)  # of the host's smooth flux, each
_CLUMP_REACH_HLR = 1.5  # clumps lie within this many half-light radii of the host
_CLUMP_MIN_SPACING_FWHM = 2.0  # between clumps, and from the host centre
_BULGE_HLR_FRACTION = 0.4  # bulge half-light radius / disk half-light radius
_INCLINED_SCALE_HEIGHT = 0.1  # disk scale height / scale radius
_KNOTS = (10, 40)
_PLACEMENT_TRIES = 1024  # candidate positions drawn per object before giving up
_SPACING_FWHM = 2.5  # exclusion radius of a point source, in PSF FWHM
_SPACING_HLR = 3.0  # exclusion radius of a galaxy, in half-light radii
_STAMP_FWHM = 5.0  # stamp half-width of a point source, in PSF FWHM
_STAMP_HLR = 6.0  # stamp half-width of a galaxy, in half-light radii
_COLUMNS = (
    "injection_id",
    "kind",
    "x",
    "y",
    "ra",
    "dec",
    "flux",
    "snr",
    "magnitude",
    "half_light_radius_pix",
    "sersic_n",
    "ellipticity",
    "position_angle_deg",
    "bulge_fraction",
    "inclination_deg",
    "n_knots",
    "knot_fraction",
    "pair_id",
    "pair_separation_fwhm",
    "host_injection_id",
    "object_seed",
)

ValidSampler = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``valid(x, y)``: True where the 0-based mosaic pixel positions hold valid data."""


@dataclass(frozen=True)
class RenderedWindow:
    """The injected objects drawn into one window.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``window_shape`` image of every object that touches the window.
    skipped : tuple of int
        ``injection_id`` of the objects GalSim failed to draw (left out).
    """

    image: np.ndarray
    skipped: tuple[int, ...]


def make_injection_catalog(
    shape: tuple[int, int],
    wcs,
    valid: np.ndarray | ValidSampler,
    *,
    psf_fwhm_pix: float,
    noise_sigma: float,
    seed: int,
    density_per_mpix: float = 400.0,
    kinds: Sequence[str] = INJECTION_KINDS,
    zero_point: float | None = None,
    snr_range: tuple[float, float] = _SNR_RANGE,
    gain: float | None = None,
    psf_beta: float = 3.0,
) -> pd.DataFrame:
    """Place synthetic objects in the valid pixels of a mosaic: one row per object.

    Objects are drawn kind after kind in turn (``kinds`` cycled), each at a random
    position whose centre, and the points of its exclusion circle along the axes,
    hold valid data; no two exclusion circles overlap, except the members of a
    pair and a host's clumps. The flux of each object gives it the S/N drawn for it
    (log-uniform in ``snr_range``): the optimal matched-filter S/N of the object as
    drawn, PSF and pixels included, in sky noise ``noise_sigma`` (plus its own
    Poisson noise with a ``gain``; :func:`matched_filter_snr`). That is the ``snr``
    of a simulation's truth catalog, which :func:`survey_seg.evaluate.score_catalog`
    counts, so completeness above an S/N means the same for injected and simulated
    objects; the Gaussian equivalent of :func:`target_flux` would make a point
    source of S/N 10 one of 7.3. A clump keeps its fraction of its host's flux
    and gets the S/N of its own flux. Sizes and separations are in resolution
    elements (:func:`resolution_pix`): the PSF FWHM, or two pixels for an
    undersampled PSF.

    Parameters
    ----------
    shape : tuple of int
        Mosaic shape ``(ny, nx)``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the mosaic (0-based pixels), for ``ra`` and ``dec``.
    valid : numpy.ndarray or callable
        bool ``shape`` array, True where a pixel holds data (not NaN, not NO_DATA),
        or ``valid(x, y)`` returning that for arrays of 0-based pixel positions.
    psf_fwhm_pix : float
        PSF FWHM in pixels.
    noise_sigma : float
        Sky noise per pixel, in the image's flux unit.
    seed : int
        Random seed: equal seeds give equal catalogs.
    density_per_mpix : float
        Objects (pairs, hosts and singles, clumps not counted) per million pixels
        of the mosaic.
    kinds : sequence of str
        Kinds to inject, among :data:`INJECTION_KINDS`.
    zero_point : float, optional
        Photometric zero point, for ``magnitude`` (NaN without it).
    snr_range : tuple of float
        Range of the target S/N.
    gain : float, optional
        Electrons per image unit: the S/N counts the object's own Poisson noise
        too (as :func:`render_window` draws it with this gain). None: sky noise only.
    psf_beta : float
        Moffat index of the PSF the objects are drawn with (as :func:`render_window`).

    Returns
    -------
    pandas.DataFrame
        Columns ``injection_id``, ``kind``, ``x``, ``y`` (0-based mosaic pixels),
        ``ra``, ``dec`` (deg), ``flux``, ``snr``, ``magnitude``,
        ``half_light_radius_pix`` (0 for a point source), ``sersic_n``,
        ``ellipticity`` (shear ``|g|``), ``position_angle_deg``, ``bulge_fraction``,
        ``inclination_deg``, ``n_knots``, ``knot_fraction``, ``pair_id`` and
        ``pair_separation_fwhm`` (in resolution elements, :func:`resolution_pix`;
        -1 and NaN outside pairs), ``host_injection_id``
        (of a clump; -1 otherwise) and ``object_seed`` (its GalSim and noise seed).

    Raises
    ------
    InputError
        A bad parameter, a density that places no object, or more objects than fit.
    """
    ny, nx = _check_shape(shape)
    _check_positive("psf_fwhm_pix", psf_fwhm_pix)
    _check_positive("noise_sigma", noise_sigma)
    _check_positive("density_per_mpix", density_per_mpix)
    kinds = tuple(kinds)
    unknown = sorted(set(kinds) - set(INJECTION_KINDS))
    if not kinds or unknown:
        raise InputError(
            f"unknown injection kinds {unknown or '(none given)'}; choose among "
            f"{', '.join(INJECTION_KINDS)}"
        )
    low, high = snr_range
    if not 0 < low <= high or not math.isfinite(high):
        raise InputError(
            f"snr_range={snr_range!r} is not a range; give (low, high), 0 < low <= high"
        )
    if isinstance(valid, np.ndarray) and valid.shape != (ny, nx):
        raise InputError(
            f"the valid-pixel mask has shape {valid.shape}, not the mosaic's {(ny, nx)}; "
            "give a mask of the mosaic's shape"
        )
    n_units = round(density_per_mpix * ny * nx / 1e6)
    if n_units < 1:
        raise InputError(
            f"density {density_per_mpix:g} per million pixels places no object in a "
            f"{ny} x {nx} mosaic; use a density of at least {math.ceil(0.5e6 / (ny * nx))}"
        )
    rng = np.random.default_rng(seed)
    is_valid = _valid_sampler(valid, (ny, nx))
    scale = resolution_pix(psf_fwhm_pix)
    units = [_draw_unit(kinds[i % len(kinds)], rng, scale) for i in range(n_units)]
    placed = _place_units(units, rng, is_valid, (ny, nx))
    if len(placed) < n_units:
        area = ny * nx / 1e6
        raise InputError(
            f"density {density_per_mpix:g} per million pixels asks for {n_units} objects, but "
            f"only {len(placed)} fit in the valid pixels without overlapping; use a density of "
            f"at most {math.floor(len(placed) / area) if placed else 0}"
        )
    rows = _unit_rows(units, placed, rng, psf_fwhm_pix, noise_sigma, (low, high))
    catalog = pd.DataFrame(rows, columns=list(_COLUMNS))
    catalog["injection_id"] = np.arange(len(catalog), dtype=np.int64)
    catalog["host_injection_id"] = catalog["host_injection_id"].astype(np.int64)
    catalog["pair_id"] = catalog["pair_id"].astype(np.int64)
    catalog["n_knots"] = catalog["n_knots"].astype(np.int64)
    catalog["object_seed"] = rng.integers(1, 2**31 - 1, size=len(catalog), dtype=np.int64)
    _calibrate_flux(catalog, psf_fwhm_pix, psf_beta, noise_sigma, gain)
    ra, dec = wcs.pixel_to_world_values(catalog["x"].to_numpy(), catalog["y"].to_numpy())
    catalog["ra"] = np.asarray(ra, dtype=np.float64) % 360.0
    catalog["dec"] = np.asarray(dec, dtype=np.float64)
    if zero_point is not None:
        catalog["magnitude"] = zero_point - 2.5 * np.log10(catalog["flux"].to_numpy())
    return catalog


def target_flux(
    snr: np.ndarray | float, half_light_radius_pix: np.ndarray | float, psf_fwhm_pix: float,
    noise_sigma: float,
) -> np.ndarray | float:  # fmt: skip
    """Flux of an object of matched-filter S/N ``snr`` in sky noise ``noise_sigma``.

    The object and the PSF are taken as Gaussians of their half-light radius and
    FWHM, so the object seen through the PSF covers an effective area
    ``4 pi (sigma_psf^2 + sigma_obj^2)`` pixels and ``flux = snr * noise_sigma *
    sqrt(area)``. Sky-limited: the object's own Poisson noise is left out.
    """
    sigma_psf = psf_fwhm_pix * SIGMA_PER_FWHM
    # a Gaussian's half-light radius is half its FWHM
    sigma_obj = 2.0 * np.asarray(half_light_radius_pix, dtype=np.float64) * SIGMA_PER_FWHM
    area = 4.0 * math.pi * (sigma_psf**2 + sigma_obj**2)
    return np.asarray(snr, dtype=np.float64) * noise_sigma * np.sqrt(area)


def matched_filter_snr(stamp: np.ndarray, noise_sigma: float, gain: float | None = None) -> float:
    """Optimal matched-filter S/N of a noiseless stamp, as a simulation's truth defines it.

    ``sqrt(sum(m^2 / (noise_sigma^2 + m / gain)))`` over the stamp's pixels ``m``
    (negative pixels clipped to 0), the ``snr`` of
    :attr:`survey_seg.simulate.SimulatedMosaic.truth_sources`; without a ``gain``,
    sky noise only.
    """
    model = np.maximum(np.asarray(stamp, dtype=np.float64), 0.0)
    variance = noise_sigma**2 + (model / gain if gain is not None else 0.0)
    return float(np.sqrt(np.sum(model**2 / variance)))


def injection_stamp_half(half_light_radius_pix: float, psf_fwhm_pix: float) -> int:
    """Half-width of the stamp an object is drawn on: fixed by the object and the PSF."""
    reach = max(_STAMP_FWHM * psf_fwhm_pix, _STAMP_HLR * half_light_radius_pix)
    return math.ceil(reach) + 1


def render_window(
    catalog: pd.DataFrame,
    window_origin: tuple[int, int],
    window_shape: tuple[int, int],
    *,
    psf_fwhm_pix: float,
    psf_beta: float = 3.0,
    gain: float | None = None,
    seed: int = 0,
) -> RenderedWindow:
    """Draw every catalog object that touches a window, with GalSim.

    Each object is drawn (convolved with a Moffat PSF) on its own stamp, centred on
    its nearest pixel in mosaic coordinates, and the stamp's overlap with the
    window is added, so every window renders the same pixels for an object. With a
    ``gain``, the object's pixels get Poisson noise on its own counts, seeded by
    ``seed`` and the object's ``object_seed``: the same in every window.

    Parameters
    ----------
    catalog : pandas.DataFrame
        From :func:`make_injection_catalog`.
    window_origin : tuple of int
        Mosaic pixel ``(row, col)`` of the window's first pixel (may be negative).
    window_shape : tuple of int
        ``(rows, cols)`` of the window.
    psf_fwhm_pix : float
        PSF FWHM in pixels.
    psf_beta : float
        Moffat index of the PSF.
    gain : float, optional
        Electrons per image unit; None draws the objects without noise.
    seed : int
        Seed of the objects' Poisson noise.

    Returns
    -------
    RenderedWindow
        The image and the ids of the objects GalSim failed to draw.
    """
    _check_positive("psf_fwhm_pix", psf_fwhm_pix)
    if not psf_beta > 1.0:
        raise InputError(f"psf_beta={psf_beta!r} gives a Moffat of infinite flux; use beta > 1")
    if gain is not None:
        _check_positive("gain", gain)
    row0, col0 = (int(v) for v in window_origin)
    rows, cols = _check_shape(window_shape)
    image = np.zeros((rows, cols), dtype=np.float32)
    psf = galsim.Moffat(beta=psf_beta, fwhm=psf_fwhm_pix)
    skipped = []
    reach = np.maximum(_STAMP_FWHM * psf_fwhm_pix, _STAMP_HLR * catalog["half_light_radius_pix"])
    halves = np.ceil(reach.to_numpy(dtype=np.float64)) + 1
    rows_at, cols_at = np.rint(catalog["y"].to_numpy()), np.rint(catalog["x"].to_numpy())
    touching = (
        (rows_at + halves >= row0)
        & (rows_at - halves < row0 + rows)
        & (cols_at + halves >= col0)
        & (cols_at - halves < col0 + cols)
    )
    for obj in catalog[touching].itertuples(index=False):
        half = injection_stamp_half(obj.half_light_radius_pix, psf_fwhm_pix)
        cy, cx = round(obj.y), round(obj.x)
        y_lo, y_hi = max(cy - half, row0), min(cy + half + 1, row0 + rows)
        x_lo, x_hi = max(cx - half, col0), min(cx + half + 1, col0 + cols)
        if y_lo >= y_hi or x_lo >= x_hi:
            continue
        try:
            stamp = _draw_object(obj, psf, cx, cy, half)
        except galsim.GalSimError:
            skipped.append(int(obj.injection_id))
            continue
        if gain is not None:
            noise_rng = np.random.default_rng([seed, int(obj.object_seed)])
            counts = np.clip(stamp, 0.0, None) * gain
            stamp = (noise_rng.poisson(counts) / gain).astype(np.float32)
        image[y_lo - row0 : y_hi - row0, x_lo - col0 : x_hi - col0] += stamp[
            y_lo - cy + half : y_hi - cy + half, x_lo - cx + half : x_hi - cx + half
        ]
    return RenderedWindow(image=image, skipped=tuple(skipped))


SINGLE_KINDS = ("star", "sersic", "bulge_disk", "inclined_disk", "knotty", "large", "clumpy")
"""Kinds counted in the completeness of single objects (pairs and clumps apart)."""
COMPLETENESS_MIN_SNR = 10.0
"""S/N above which the completeness of single objects is counted."""
WHOLE_KINDS = ("large", "knotty", "clumpy")
"""Kinds whose shattering is counted: a large galaxy, a knotty irregular and a clumpy
host are each one source, their knots and clumps included (``<kind>_shattered``)."""


def completeness_rows(matched: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`match_injections` that ``completeness`` counts.

    Drawn single objects (:data:`SINGLE_KINDS`) of S/N at least
    :data:`COMPLETENESS_MIN_SNR`; their ``recovered`` is the completeness.
    """
    singles = matched["drawn"] & matched["kind"].isin(SINGLE_KINDS)
    return matched[singles & (matched["snr"] >= COMPLETENESS_MIN_SNR)]


SNR_BINS = (5.0, 10.0, 20.0, 50.0, 100.0)
"""Edges of the S/N bins of ``completeness_by_snr`` (the last bin is open)."""
RESOLVED_PAIR_SEPARATION_FWHM = (1.3, 2.5)
"""Separations (resolution elements) of the pairs ``pair_recall_resolved`` counts."""
SEPARATION_BINS_FWHM = (1.0, 1.5, 2.0, 3.0)
"""Edges of the separation bins (PSF FWHM) of ``pair_recall_by_separation``."""
CLUMP_MATCH_PIX = 1.5
"""A detected clump within this many pixels of an injected one recovers it."""
_FOOTPRINT_HLR = 1.5  # a large object's footprint: this many half-light radii
MIN_INJECTED_LIGHT = 0.5
"""A source of which injected light makes at least this share of the light is the
injected object's own (a piece of it where it is not its match); one of mostly
the image's own light is a real object (:func:`match_injections`)."""


MIN_REAL_PEAK_SNR = 5.0
"""A source whose peak pixel holds, in the image without the injection, more light
than the injection put there, and the 3 x 3 pixels around it at least this S/N, is
a real object that an injected one fell on (:func:`real_peaks`), not a piece of it."""
_PEAK_HALF = 1  # real_peaks sums the (2 * _PEAK_HALF + 1)^2 pixels around a peak


def real_peaks(
    peak_x: np.ndarray,
    peak_y: np.ndarray,
    injected: np.ndarray,
    own_light: np.ndarray,
    rms: np.ndarray,
    *,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Whether each source's peak is the image's own light rather than injected light.

    In a crowded field a faint real star on the disk of a large injected galaxy
    gets a segment that holds more of the galaxy's light than of its own: the
    share of injected light over the segment (:func:`injected_fractions`) calls it
    a piece of the galaxy. What made the source is its peak: in its peak pixel the
    image without the injection holds more light than the injection put there,
    and summed over the 3 x 3 pixels around it at least :data:`MIN_REAL_PEAK_SNR`
    times its noise. A noise bump on an injected galaxy, or its knot, is not
    such a peak. (Compared over the 3 x 3 pixels instead of the peak pixel, a
    star's light is diluted by the galaxy's smooth light around it: on Spitzer
    and 2MASS, injection seed 1, fewer of the candidate pieces that sit on a
    source of the screening without injection come out real, 28 of 50 and 20 of
    74, against 36 and 50; ``benchmarks/piece_attribution.py``.)

    Parameters
    ----------
    peak_x, peak_y : numpy.ndarray
        int pixel of each source's peak, in the coordinates of the whole image.
    injected, own_light, rms : numpy.ndarray
        The injected light alone (:func:`render_window`), the pixels without the
        injection less their background and the noise sigma (NaN or inf: no
        data), on a window of the image. Pixels of a peak's box beyond the
        window are no data (a peak on the image's edge has a smaller box).
    origin : tuple of int
        Image pixel ``(row, col)`` of the window's first pixel (may be negative).

    Returns
    -------
    numpy.ndarray
        bool, one per source.
    """
    own_light = np.asarray(own_light, dtype=np.float64)
    rms = np.asarray(rms, dtype=np.float64)
    valid = np.isfinite(own_light) & np.isfinite(rms)  # no data: neither light nor noise
    injected = np.nan_to_num(np.asarray(injected, dtype=np.float64))
    rows = np.asarray(peak_y, dtype=np.int64) - origin[0]
    cols = np.asarray(peak_x, dtype=np.int64) - origin[1]

    def pixels(dy: int, dx: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """The (clipped) pixel at that offset from each peak, and whether it has data."""
        row, col = rows + dy, cols + dx
        inside = (row >= 0) & (row < valid.shape[0]) & (col >= 0) & (col < valid.shape[1])
        here = (np.clip(row, 0, valid.shape[0] - 1), np.clip(col, 0, valid.shape[1] - 1))
        return here, inside & valid[here]

    box_light = np.zeros(rows.shape)
    box_variance = np.zeros(rows.shape)
    for dy, dx in itertools.product(range(-_PEAK_HALF, _PEAK_HALF + 1), repeat=2):
        here, usable = pixels(dy, dx)
        box_light += np.where(usable, own_light[here], 0.0)
        box_variance += np.where(usable, rms[here] ** 2, 0.0)
    peaks, usable = pixels(0, 0)
    brighter = np.where(usable, own_light[peaks], 0.0) > np.where(usable, injected[peaks], 0.0)
    return usable & brighter & (box_light >= MIN_REAL_PEAK_SNR * np.sqrt(box_variance))


def match_injections(
    catalog: pd.DataFrame,
    sources: pd.DataFrame,
    clumps: pd.DataFrame,
    *,
    psf_fwhm_pix: float,
    skipped: Sequence[int] = (),
) -> pd.DataFrame:
    """Match injected objects to detected sources and clumps: one row per injected object.

    Each object (a clump apart) is matched to a source within ``max(resolution,
    its half-light radius)`` of it (:func:`resolution_pix`), nearest pairs first,
    a source to one object at most: the two members of a pair are recovered only
    as distinct sources. A large, knotty or clumpy object (:data:`WHOLE_KINDS`) is
    shattered when more than one of its own sources lie within 1.5 of its
    half-light radii (or one resolution element): its match, and every source
    there of which injected light makes at least :data:`MIN_INJECTED_LIGHT` of
    the light (``injected_fraction``, :func:`injected_fractions`) and whose peak
    is not a real object's (``on_real_peak``, :func:`real_peaks`). A real star or
    galaxy under an injected one is not a piece of it, even where the injected
    light outweighs its own over its segment, and a piece is one whatever the
    real sources it displaced. An injected clump is recovered by a detected clump
    within :data:`CLUMP_MATCH_PIX` pixels.

    Parameters
    ----------
    catalog : pandas.DataFrame
        From :func:`make_injection_catalog`.
    sources, clumps : pandas.DataFrame
        The catalogs of the screened injected mosaic (``id``, ``x``, ``y``, ``flux``,
        ``is_blended``, optionally ``injected_fraction`` and ``on_real_peak``;
        ``host_id``, ``x``, ``y``). Without ``injected_fraction`` every source's
        light is taken for injected light, and without ``on_real_peak`` no peak
        for a real object's: nothing was there before.
    psf_fwhm_pix : float
        PSF FWHM in pixels.
    skipped : sequence of int
        ``injection_id`` of the objects that were not drawn (``drawn`` is False).

    Returns
    -------
    pandas.DataFrame
        The catalog's columns and ``drawn``, ``recovered``, ``matched_source_id``
        (-1: none), ``matched_distance_pix``, ``recovered_flux``,
        ``matched_as_blended``, ``n_sources_in_footprint``, ``n_own_sources``
        (its match and the sources of mostly injected light there; of a
        :data:`WHOLE_KINDS` object, else 0), ``shattered``,
        ``pair_partner_id`` (-1 outside pairs), ``n_clumps_injected`` and
        ``clumps_matched`` (of a clumpy host).
    """
    from scipy.spatial import cKDTree

    table = catalog.reset_index(drop=True).copy()
    n = len(table)
    table["drawn"] = ~table["injection_id"].isin(list(skipped))
    matched = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, np.nan)
    in_footprint = np.zeros(n, dtype=np.int64)
    is_clump = (table["kind"] == "clump").to_numpy()
    xy = table[["x", "y"]].to_numpy(dtype=np.float64)
    hlr = table["half_light_radius_pix"].to_numpy(dtype=np.float64)
    source_xy = sources[["x", "y"]].to_numpy(dtype=np.float64).reshape(-1, 2)
    resolution = resolution_pix(psf_fwhm_pix)
    drawn_objects = ~is_clump & table["drawn"].to_numpy()
    if len(source_xy):
        tree = cKDTree(source_xy)
        radius = np.maximum(resolution, hlr)
        candidates = []
        for i in np.flatnonzero(drawn_objects):
            for j in tree.query_ball_point(xy[i], radius[i]):
                candidates.append((float(np.hypot(*(source_xy[j] - xy[i]))), i, j))
        taken: set[int] = set()
        for gap, i, j in sorted(candidates):
            if matched[i] < 0 and j not in taken:
                matched[i], distance[i] = j, gap
                taken.add(j)
    found = matched >= 0
    at = np.maximum(matched, 0)
    if len(sources):
        ids = sources["id"].to_numpy(dtype=np.int64)
        flux = sources["flux"].to_numpy(dtype=np.float64)
        blended = sources["is_blended"].to_numpy(dtype=bool)
        table["matched_source_id"] = np.where(found, ids[at], -1)
        table["recovered_flux"] = np.where(found, flux[at], np.nan)
        table["matched_as_blended"] = found & blended[at]
    else:
        table["matched_source_id"] = matched
        table["recovered_flux"] = np.nan
        table["matched_as_blended"] = False
    table["matched_distance_pix"] = distance
    whole = table["kind"].isin(WHOLE_KINDS).to_numpy() & drawn_objects
    in_footprint, own = _sources_in_footprints(xy, hlr, resolution, sources, matched, whole)
    table["n_sources_in_footprint"] = in_footprint
    table["n_own_sources"] = own
    table["shattered"] = own > 1
    table["pair_partner_id"] = _pair_partners(table)
    clump_found = np.zeros(n, dtype=bool)
    clump_xy = clumps[["x", "y"]].to_numpy(dtype=np.float64).reshape(-1, 2)
    if len(clump_xy) and is_clump.any():
        gaps, _ = cKDTree(clump_xy).query(xy[is_clump])
        clump_found[is_clump] = gaps <= CLUMP_MATCH_PIX
    clump_found &= table["drawn"].to_numpy()
    table["recovered"] = np.where(is_clump, clump_found, found)
    hosts = table.loc[is_clump, "host_injection_id"]
    injected = hosts.value_counts()
    recovered = hosts[clump_found[is_clump]].value_counts()
    table["n_clumps_injected"] = table["injection_id"].map(injected).fillna(0).astype(np.int64)
    table["clumps_matched"] = table["injection_id"].map(recovered).fillna(0).astype(np.int64)
    return table


def _sources_in_footprints(
    xy: np.ndarray,
    hlr: np.ndarray,
    resolution: float,
    sources: pd.DataFrame,
    matched: np.ndarray,
    which: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per object of ``which``: the sources within its footprint reach, and its own among them.

    Its own: its match (row ``matched``; -1: none) and those of mostly injected
    light (:data:`MIN_INJECTED_LIGHT`) whose peak is not a real object's
    (``on_real_peak``). 0 and 0 for the other objects.
    """
    from scipy.spatial import cKDTree

    counts = np.zeros(len(xy), dtype=np.int64)
    own = np.zeros(len(xy), dtype=np.int64)
    if not len(sources):
        return counts, own
    injected = np.ones(len(sources), dtype=bool)
    if "injected_fraction" in sources:
        injected = sources["injected_fraction"].to_numpy(dtype=np.float64) >= MIN_INJECTED_LIGHT
    if "on_real_peak" in sources:
        injected &= ~sources["on_real_peak"].to_numpy(dtype=bool)
    tree = cKDTree(sources[["x", "y"]].to_numpy(dtype=np.float64))
    for i in np.flatnonzero(which):
        near = np.asarray(
            tree.query_ball_point(xy[i], max(resolution, _FOOTPRINT_HLR * hlr[i])), dtype=np.int64
        )
        counts[i] = near.size
        own[i] = np.count_nonzero(injected[near] | (near == matched[i]))
    return counts, own


def source_light_sums(
    segmentation: np.ndarray, injected: np.ndarray, own_light: np.ndarray
) -> pd.DataFrame:
    """The sums of injected and of the image's own light over each source's pixels.

    Parameters
    ----------
    segmentation : numpy.ndarray
        int source ids of the screened injected pixels (0: sky).
    injected : numpy.ndarray
        The injected light alone (:func:`render_window`) on the same pixels.
    own_light : numpy.ndarray
        The pixels without the injection, background subtracted (NaN: no data).

    Returns
    -------
    pandas.DataFrame
        ``id``, ``injected_light`` and ``own_light``: sums that add up over
        windows of one segmentation, so that a mosaic can be read a strip at a
        time. The share of injected light of a source is ``injected_light /
        (injected_light + max(own_light, 0))`` (:func:`injected_fractions`).
    """
    ids, inverse = np.unique(np.asarray(segmentation).ravel(), return_inverse=True)
    injected_sum = np.bincount(inverse, np.nan_to_num(injected).ravel(), ids.size)
    own_sum = np.bincount(inverse, np.nan_to_num(own_light).ravel(), ids.size)
    keep = ids > 0
    return pd.DataFrame(
        {"id": ids[keep].astype(np.int64), "injected_light": injected_sum[keep],
         "own_light": own_sum[keep]}
    )  # fmt: skip


def injected_fractions(light: pd.DataFrame) -> pd.Series:
    """Per source ``id``: the share of its light that is injected light.

    ``light`` holds rows of :func:`source_light_sums`, several per ``id``
    where they were summed over windows.
    """
    sums = light.groupby("id")[["injected_light", "own_light"]].sum()
    injected = sums["injected_light"].clip(lower=0.0)
    total = injected + sums["own_light"].clip(lower=0.0)
    return (injected / total.where(total > 0)).fillna(0.0).rename("injected_fraction")


def injection_metrics(
    matched: pd.DataFrame,
    clumps: pd.DataFrame,
    *,
    psf_fwhm_pix: float,
    n_sources: int,
    n_negative: int,
) -> dict:
    """The summary of an injection-recovery run (``injection.json``).

    Parameters
    ----------
    matched : pandas.DataFrame
        From :func:`match_injections`.
    clumps : pandas.DataFrame
        Detected clumps of the injected mosaic (``host_id``, ``x``, ``y``).
    psf_fwhm_pix : float
        PSF FWHM the objects were drawn with.
    n_sources : int
        Sources detected on the injected mosaic.
    n_negative : int
        Sources detected on the negated mosaic: every one is spurious.

    Returns
    -------
    dict
        ``psf_fwhm_pix``, ``n_injected``, ``n_skipped``, ``completeness`` (single
        objects of S/N >= 10), ``completeness_by_snr``, ``pair_recall`` (both members
        found as distinct sources), ``pair_recall_by_separation``,
        ``pair_recall_resolved`` (the pairs 1.3-2.5 resolution elements apart whose
        members both have S/N >= 10, :data:`RESOLVED_PAIR_SEPARATION_FWHM`), ``large_total``,
        ``large_shattered`` and the same of the knotty and clumpy objects
        (``knotty_total``, ...; :data:`WHOLE_KINDS`), ``clump_completeness``,
        ``clump_purity`` (detected clumps in recovered clumpy hosts that lie on an
        injected clump),
        ``spurious_fraction`` (detections on the negated mosaic over the detections
        on the mosaic that match no injected object) and ``n_negative``; and what
        each fraction is of, so that runs can be pooled: ``n_completeness``,
        ``n_pairs``, ``n_pairs_resolved``, ``n_clumps_injected``,
        ``n_clumps_in_hosts`` and ``n_unmatched``. A fraction of nothing is None.
    """
    drawn = matched[matched["drawn"]]
    singles = drawn[drawn["kind"].isin(SINGLE_KINDS)]
    by_snr = {}
    edges = (*SNR_BINS, np.inf)
    for low, high in itertools.pairwise(edges):
        inside = singles[(singles["snr"] >= low) & (singles["snr"] < high)]
        label = f"{low:g}-{high:g}" if np.isfinite(high) else f">={low:g}"
        by_snr[label] = _fraction(inside["recovered"])
    pairs = drawn[drawn["kind"] == "pair"].groupby("pair_id")
    both = pairs["recovered"].all()
    complete = pairs["recovered"].size() == 2
    both, separation = both[complete], pairs["pair_separation_fwhm"].first()[complete]
    faintest = pairs["snr"].min()[complete]
    low, high = RESOLVED_PAIR_SEPARATION_FWHM
    resolved = (separation >= low) & (separation <= high) & (faintest >= COMPLETENESS_MIN_SNR)
    by_separation = {}
    for low, high in itertools.pairwise(SEPARATION_BINS_FWHM):
        inside = both[
            (separation >= low) & (separation < high + (high == SEPARATION_BINS_FWHM[-1]))
        ]
        by_separation[f"{low:g}-{high:g}"] = _fraction(inside)
    clump_rows = drawn[drawn["kind"] == "clump"]
    host_sources = drawn.loc[(drawn["kind"] == "clumpy") & drawn["recovered"], "matched_source_id"]
    in_hosts = clumps[clumps["host_id"].isin(host_sources)] if len(clumps) else clumps
    on_injected = _near_any(in_hosts, clump_rows, CLUMP_MATCH_PIX)
    n_real = n_sources - int(matched["recovered"][matched["kind"] != "clump"].sum())
    completeness = completeness_rows(matched)["recovered"]
    return {
        "psf_fwhm_pix": float(psf_fwhm_pix),
        "resolution_pix": resolution_pix(psf_fwhm_pix),
        "n_injected": len(matched),
        "n_skipped": int((~matched["drawn"]).sum()),
        "completeness": _fraction(completeness),
        "completeness_by_snr": by_snr,
        "pair_recall": _fraction(both),
        "pair_recall_by_separation": by_separation,
        "pair_recall_resolved": _fraction(both[resolved]),
        **{
            f"{kind}_{count}": value
            for kind in WHOLE_KINDS
            for count, value in _shattering(drawn[drawn["kind"] == kind]).items()
        },
        "clump_completeness": _fraction(clump_rows["recovered"]),
        "clump_purity": _fraction(pd.Series(on_injected, dtype=bool)),
        "spurious_fraction": n_negative / n_real if n_real > 0 else None,
        "n_negative": int(n_negative),
        "n_completeness": len(completeness),
        "n_pairs": len(both),
        "n_pairs_resolved": int(resolved.sum()),
        "n_clumps_injected": len(clump_rows),
        "n_clumps_in_hosts": len(in_hosts),
        "n_unmatched": int(max(n_real, 0)),
    }


def _shattering(objects: pd.DataFrame) -> dict[str, int]:
    """How many of ``objects`` there are (``total``) and how many are ``shattered``."""
    return {"total": len(objects), "shattered": int(objects["shattered"].sum())}


TILE_KEYS = ("tile_id", "row", "col", "x0", "x1", "y0", "y1")
"""Columns of ``tiles.parquet`` that :func:`injection_tile_metrics` keeps."""


def injection_tile_metrics(
    matched: pd.DataFrame,
    tiles: pd.DataFrame,
    sources: pd.DataFrame,
    negative: pd.DataFrame,
    clumps: pd.DataFrame,
    *,
    psf_fwhm_pix: float,
) -> pd.DataFrame:
    """The summary of :func:`injection_metrics` per tile (``injection_tiles.parquet``).

    An injected object counts in the tile whose core holds its position (a clump in
    its host's tile); a tile's detections are the sources of the injected and of the
    negated mosaic that carry its ``tile_id``. Counts (``n_injected``,
    ``n_skipped``, ``<kind>_total``, ``<kind>_shattered``, ``n_negative``,
    ``n_sources``) sum over the tiles to the whole run's.

    Parameters
    ----------
    matched : pandas.DataFrame
        From :func:`match_injections`.
    tiles : pandas.DataFrame
        ``tiles.parquet`` of the injected run: ``tile_id``, ``row``, ``col`` and the
        core bounds ``x0``, ``x1``, ``y0``, ``y1`` (end-exclusive).
    sources, negative : pandas.DataFrame
        Sources of the injected and of the negated mosaic (``tile_id``).
    clumps : pandas.DataFrame
        Detected clumps of the injected mosaic (``host_id``, ``x``, ``y``).
    psf_fwhm_pix : float
        PSF FWHM the objects were drawn with.

    Returns
    -------
    pandas.DataFrame
        One row per tile: :data:`TILE_KEYS`, ``n_sources`` and the keys of
        :func:`injection_metrics`, the per-bin dictionaries flattened into columns
        ``completeness_by_snr_<bin>`` and ``pair_recall_by_separation_<bin>``; a
        fraction of nothing is NaN.
    """
    owner = _owning_tiles(matched, tiles)
    host_owner = pd.Series(owner, index=matched["injection_id"].to_numpy())
    hosts = matched["host_injection_id"].to_numpy()
    is_clump = hosts >= 0
    owner[is_clump] = host_owner.reindex(hosts[is_clump]).fillna(-1).to_numpy(dtype=np.int64)
    source_counts = sources["tile_id"].value_counts()
    negative_counts = negative["tile_id"].value_counts()
    rows = []
    for tile in tiles[list(TILE_KEYS)].itertuples(index=False):
        tile_id = int(tile.tile_id)
        n_sources = int(source_counts.get(tile_id, 0))
        metrics = injection_metrics(
            matched[owner == tile_id],
            clumps,
            psf_fwhm_pix=psf_fwhm_pix,
            n_sources=n_sources,
            n_negative=int(negative_counts.get(tile_id, 0)),
        )
        row: dict = {key: int(getattr(tile, key)) for key in TILE_KEYS}
        row["n_sources"] = n_sources
        for key, value in metrics.items():
            if isinstance(value, dict):
                row.update({f"{key}_{label}": value[label] for label in value})
            else:
                row[key] = value
        rows.append(row)
    table = pd.DataFrame(rows)
    fractions = [c for c in table.columns if c not in TILE_KEYS and table[c].dtype == object]
    table[fractions] = table[fractions].astype(np.float64)
    return table


def _owning_tiles(table: pd.DataFrame, tiles: pd.DataFrame) -> np.ndarray:
    """``tile_id`` of the core holding each row's ``(x, y)`` (as :meth:`Tile.owns`); -1: none."""
    col = np.floor(table["x"].to_numpy(dtype=np.float64) + 0.5)
    row = np.floor(table["y"].to_numpy(dtype=np.float64) + 0.5)
    if len(tiles):
        col = np.clip(col, 0, int(tiles["x1"].max()) - 1)
        row = np.clip(row, 0, int(tiles["y1"].max()) - 1)
    owner = np.full(len(table), -1, dtype=np.int64)
    for tile in tiles.itertuples(index=False):
        inside = (col >= tile.x0) & (col < tile.x1) & (row >= tile.y0) & (row < tile.y1)
        owner[inside] = int(tile.tile_id)
    return owner


def _fraction(flags: pd.Series) -> float | None:
    return float(flags.mean()) if len(flags) else None


def _near_any(points: pd.DataFrame, targets: pd.DataFrame, radius: float) -> np.ndarray:
    """For each of ``points``, whether one of ``targets`` lies within ``radius`` pixels."""
    if not len(points):
        return np.zeros(0, dtype=bool)
    if not len(targets):
        return np.zeros(len(points), dtype=bool)
    from scipy.spatial import cKDTree

    gaps, _ = cKDTree(targets[["x", "y"]].to_numpy(dtype=np.float64)).query(
        points[["x", "y"]].to_numpy(dtype=np.float64)
    )
    return gaps <= radius


def _pair_partners(table: pd.DataFrame) -> np.ndarray:
    """``injection_id`` of each pair member's partner; -1 outside pairs."""
    partners = np.full(len(table), -1, dtype=np.int64)
    in_pair = table.index[table["pair_id"] >= 0]
    for _, members in table.loc[in_pair].groupby("pair_id"):
        if len(members) == 2:
            first, second = members.index
            partners[first] = table.at[second, "injection_id"]
            partners[second] = table.at[first, "injection_id"]
    return partners


# --------------------------------------------------------------------------- internals


def _check_shape(shape) -> tuple[int, int]:
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape {shape!r} is not (rows, cols); give two integers") from None
    if ny < 1 or nx < 1:
        raise InputError(f"shape {shape!r} is empty; give two positive integers")
    return ny, nx


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int | float | np.number) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={value!r} is not a positive number; give one")


def _valid_sampler(valid: np.ndarray | ValidSampler, shape: tuple[int, int]) -> ValidSampler:
    """``valid(x, y)`` for positions anywhere: False outside the mosaic."""
    ny, nx = shape

    def sample(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        col, row = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
        inside = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
        result = np.zeros(col.shape, dtype=bool)
        if isinstance(valid, np.ndarray):
            result[inside] = valid[row[inside], col[inside]]
        else:
            result[inside] = np.asarray(valid(col[inside], row[inside]), dtype=bool)
        return result

    return sample


def _draw_unit(kind: str, rng: np.random.Generator, fwhm: float) -> dict:
    """Shape parameters of one unit (a single object, a pair or a clumpy host).

    ``fwhm`` is the unit of sizes and separations: :func:`resolution_pix`.
    """
    unit: dict = {"kind": kind, "hlr": 0.0, "sersic_n": np.nan, "ellipticity": 0.0}
    unit["angle"] = float(rng.uniform(0.0, 180.0))
    if kind in ("sersic", "bulge_disk", "inclined_disk", "knotty"):
        unit["hlr"] = float(rng.uniform(*_GALAXY_HLR_FWHM) * fwhm)
    if kind == "sersic":
        unit["sersic_n"] = float(rng.uniform(0.5, 4.0))
        unit["ellipticity"] = float(rng.uniform(0.0, 0.5))
    elif kind == "bulge_disk":
        unit["bulge_fraction"] = float(rng.uniform(0.2, 0.7))
        unit["ellipticity"] = float(rng.uniform(0.0, 0.4))
    elif kind == "inclined_disk":
        unit["sersic_n"] = 1.0
        unit["inclination"] = float(rng.uniform(20.0, 80.0))
    elif kind == "knotty":
        unit["sersic_n"] = 1.0
        unit["n_knots"] = int(rng.integers(_KNOTS[0], _KNOTS[1] + 1))
        unit["knot_fraction"] = float(rng.uniform(0.3, 0.6))
    elif kind == "large":
        unit["hlr"] = float(rng.uniform(*_LARGE_HLR_FWHM) * fwhm)
        unit["sersic_n"] = float(rng.uniform(0.5, 2.0))
        unit["ellipticity"] = float(rng.uniform(0.0, 0.5))
    elif kind == "pair":
        unit["separation_fwhm"] = float(rng.uniform(*_PAIR_SEPARATION_FWHM))
        unit["member_hlr"] = [
            0.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 0.6) * fwhm) for _ in range(2)
        ]
    elif kind == "clumpy":
        unit["hlr"] = float(rng.uniform(*_CLUMPY_HOST_HLR_FWHM) * fwhm)
        unit["sersic_n"] = 1.0
        unit["ellipticity"] = float(rng.uniform(0.0, 0.3))
    hlr = max(unit["hlr"], *unit.get("member_hlr", [0.0]))
    radius = max(_SPACING_FWHM * fwhm, _SPACING_HLR * hlr)
    if kind == "pair":
        radius += 0.5 * unit["separation_fwhm"] * fwhm
    unit["radius"] = radius
    return unit


def _place_units(
    units: list[dict], rng: np.random.Generator, is_valid: ValidSampler, shape: tuple[int, int]
) -> list[tuple[float, float]]:
    """Centres of the units, largest first; stops at the first unit that finds no room.

    Returns the centres in the order of ``units``, as many as were placed: fewer
    than ``units`` when one found no room.
    """
    ny, nx = shape
    xs, ys, radii = np.empty(len(units)), np.empty(len(units)), np.empty(len(units))
    directions = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    order = sorted(range(len(units)), key=lambda i: -units[i]["radius"])
    centres: dict[int, tuple[float, float]] = {}
    for index in order:
        r = units[index]["radius"]
        x = rng.uniform(-0.5, nx - 0.5, _PLACEMENT_TRIES)
        y = rng.uniform(-0.5, ny - 0.5, _PLACEMENT_TRIES)
        ok = np.ones(_PLACEMENT_TRIES, dtype=bool)
        for dx, dy in directions:
            ok &= is_valid(x + dx * r, y + dy * r)
        n = len(centres)
        if n:
            distance = np.hypot(x[:, None] - xs[None, :n], y[:, None] - ys[None, :n])
            ok &= np.all(distance >= r + radii[None, :n], axis=1)
        chosen = np.flatnonzero(ok)
        if not len(chosen):
            break
        xs[n], ys[n], radii[n] = x[chosen[0]], y[chosen[0]], r
        centres[index] = (float(xs[n]), float(ys[n]))
    if len(centres) < len(units):
        return list(centres.values())
    return [centres[index] for index in range(len(units))]


def _unit_rows(
    units: list[dict],
    placed: list[tuple[float, float]],
    rng: np.random.Generator,
    fwhm: float,
    noise_sigma: float,
    snr_range: tuple[float, float],
) -> list[dict]:
    """Catalog rows of the placed units (``injection_id`` is the row's position)."""
    log_low, log_high = math.log(snr_range[0]), math.log(snr_range[1])
    rows: list[dict] = []
    next_pair = 0

    def row(unit: dict, x: float, y: float, hlr: float, **extra) -> dict:
        snr = float(math.exp(rng.uniform(log_low, log_high)))
        entry = {
            "injection_id": len(rows),
            "kind": unit["kind"],
            "x": x,
            "y": y,
            "ra": np.nan,
            "dec": np.nan,
            "flux": float(target_flux(snr, hlr, fwhm, noise_sigma)),
            "snr": snr,
            "magnitude": np.nan,
            "half_light_radius_pix": hlr,
            "sersic_n": unit["sersic_n"] if hlr > 0 else np.nan,
            "ellipticity": unit["ellipticity"] if hlr > 0 else 0.0,
            "position_angle_deg": unit["angle"],
            "bulge_fraction": unit.get("bulge_fraction", np.nan),
            "inclination_deg": unit.get("inclination", np.nan),
            "n_knots": unit.get("n_knots", 0),
            "knot_fraction": unit.get("knot_fraction", np.nan),
            "pair_id": -1,
            "pair_separation_fwhm": np.nan,
            "host_injection_id": -1,
            "object_seed": 0,
            **extra,
        }
        rows.append(entry)
        return entry

    for unit, (x, y) in zip(units, placed, strict=False):
        if unit["kind"] == "pair":
            half = 0.5 * unit["separation_fwhm"] * resolution_pix(fwhm)
            theta = math.radians(unit["angle"])
            for sign, hlr in zip((1.0, -1.0), unit["member_hlr"], strict=True):
                member = {**unit, "sersic_n": 1.0, "ellipticity": 0.0}
                row(
                    member, x + sign * half * math.cos(theta), y + sign * half * math.sin(theta),
                    hlr, pair_id=next_pair, pair_separation_fwhm=unit["separation_fwhm"],
                )  # fmt: skip
            next_pair += 1
            continue
        host = row(unit, x, y, unit["hlr"])
        if unit["kind"] == "clumpy":
            for cx, cy in _clump_positions(unit, x, y, rng, resolution_pix(fwhm)):
                fraction = float(rng.uniform(*_CLUMP_FLUX_FRACTION))
                flux = fraction * host["flux"]
                clump = row({**unit, "kind": "clump"}, cx, cy, 0.0)
                clump.update(
                    flux=flux,
                    snr=float(flux / target_flux(1.0, 0.0, fwhm, noise_sigma)),
                    host_injection_id=host["injection_id"],
                    position_angle_deg=0.0,
                )
    return rows


def _calibrate_flux(
    catalog: pd.DataFrame, fwhm: float, beta: float, noise_sigma: float, gain: float | None
) -> None:
    """Set each object's flux so that its drawn profile has its ``snr`` (in place).

    The Gaussian-equivalent flux of :func:`target_flux` misses the Moffat wings and
    the pixels (a point source of target S/N 10 has a matched-filter S/N of about
    7.3 at 1.8 pix FWHM) and the shape of the profile. Each object (a clump apart)
    is drawn at unit flux and its flux solved for ``matched_filter_snr == snr``;
    a clump keeps its fraction of its host's flux, and its ``snr`` is recomputed.
    An object GalSim fails to draw keeps its Gaussian-equivalent flux.
    """
    psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    flux = catalog["flux"].to_numpy(dtype=np.float64).copy()
    snr = catalog["snr"].to_numpy(dtype=np.float64).copy()
    is_clump = (catalog["kind"] == "clump").to_numpy()
    for i, obj in enumerate(catalog.itertuples(index=False)):
        if is_clump[i]:
            continue
        half = injection_stamp_half(obj.half_light_radius_pix, fwhm)
        cx, cy = round(obj.x), round(obj.y)
        try:
            unit = _draw_object(obj._replace(flux=1.0), psf, cx, cy, half).astype(np.float64)
        except galsim.GalSimError:
            continue
        flux[i] = _flux_for_snr(unit, snr[i], noise_sigma, gain)
    old = catalog["flux"].to_numpy(dtype=np.float64)
    position = {int(v): k for k, v in enumerate(catalog["injection_id"])}
    half = injection_stamp_half(0.0, fwhm)
    for i, obj in enumerate(catalog.itertuples(index=False)):
        if not is_clump[i]:
            continue
        host = position[int(obj.host_injection_id)]
        flux[i] = old[i] / old[host] * flux[host]
        point = _draw_object(obj._replace(flux=flux[i]), psf, round(obj.x), round(obj.y), half)
        snr[i] = matched_filter_snr(point, noise_sigma, gain)
    catalog["flux"] = flux
    catalog["snr"] = snr


def _flux_for_snr(unit: np.ndarray, snr: float, noise_sigma: float, gain: float | None) -> float:
    """Flux at which a profile of unit-flux stamp ``unit`` has matched-filter S/N ``snr``."""
    flux = snr / matched_filter_snr(unit, noise_sigma)  # sky-limited: exact without a gain
    if gain is None:
        return flux
    for _ in range(100):  # S/N grows as flux^a, 1/2 <= a <= 1: this converges from below
        step = snr / matched_filter_snr(flux * unit, noise_sigma, gain)
        flux *= step
        if abs(step - 1.0) < 1e-6:
            break
    return flux


def _clump_positions(
    unit: dict, x: float, y: float, rng: np.random.Generator, fwhm: float
) -> list[tuple[float, float]]:
    """Clump centres inside a host, apart from each other and from its centre."""
    n_clumps = int(rng.integers(_CLUMPS_PER_HOST[0], _CLUMPS_PER_HOST[1] + 1))
    spacing = _CLUMP_MIN_SPACING_FWHM * fwhm
    reach = _CLUMP_REACH_HLR * unit["hlr"]
    positions: list[tuple[float, float]] = [(x, y)]
    for _ in range(_PLACEMENT_TRIES):
        if len(positions) > n_clumps:
            break
        radius = float(rng.uniform(spacing, max(reach, spacing * 1.01)))
        theta = float(rng.uniform(0.0, 2.0 * math.pi))
        cx, cy = x + radius * math.cos(theta), y + radius * math.sin(theta)
        if all(math.hypot(cx - px, cy - py) >= spacing for px, py in positions):
            positions.append((cx, cy))
    return positions[1:]


def _galaxy(obj, flux: float) -> galsim.GSObject:
    """The object's profile before the PSF (a point source for zero size)."""
    hlr = float(obj.half_light_radius_pix)
    if hlr <= 0:
        return galsim.DeltaFunction(flux=flux)
    if obj.kind == "bulge_disk":
        bulge = galsim.DeVaucouleurs(half_light_radius=_BULGE_HLR_FRACTION * hlr)
        disk = galsim.Exponential(half_light_radius=hlr)
        fraction = float(obj.bulge_fraction)
        profile = galsim.Add([fraction * bulge, (1.0 - fraction) * disk]).withFlux(flux)
    elif obj.kind == "inclined_disk":
        profile = galsim.InclinedExponential(
            float(obj.inclination_deg) * galsim.degrees,
            half_light_radius=hlr,
            scale_h_over_r=_INCLINED_SCALE_HEIGHT,
            flux=flux,
        )
    elif obj.kind == "knotty":
        fraction = float(obj.knot_fraction)
        knots = galsim.RandomKnots(
            int(obj.n_knots),
            half_light_radius=hlr,
            flux=fraction * flux,
            rng=galsim.BaseDeviate(int(obj.object_seed)),
        )
        profile = galsim.Add(
            [knots, galsim.Exponential(half_light_radius=hlr, flux=(1 - fraction) * flux)]
        )
    else:
        profile = galsim.Sersic(float(obj.sersic_n), half_light_radius=hlr, flux=flux)
    if obj.ellipticity > 0:
        profile = profile.shear(
            g=float(obj.ellipticity), beta=float(obj.position_angle_deg) * galsim.degrees
        )
    elif obj.kind == "inclined_disk":
        profile = profile.rotate(float(obj.position_angle_deg) * galsim.degrees)
    return profile


def _draw_object(obj, psf: galsim.GSObject, cx: int, cy: int, half: int) -> np.ndarray:
    """The object through the PSF on its ``(2 half + 1)^2`` stamp centred on pixel ``(cy, cx)``."""
    flux = float(obj.flux)
    # GalSim pixels are 1-based: 0-based mosaic pixel (x, y) is GalSim's (x + 1, y + 1)
    bounds = galsim.BoundsI(cx - half + 1, cx + half + 1, cy - half + 1, cy + half + 1)
    stamp = galsim.ImageF(bounds, scale=1.0)
    if float(obj.half_light_radius_pix) <= 0:
        profile = psf.withFlux(flux)
    else:
        profile = galsim.Convolve([_galaxy(obj, flux), psf])
    profile.drawImage(image=stamp, center=galsim.PositionD(obj.x + 1.0, obj.y + 1.0))
    return stamp.array.astype(np.float32)
