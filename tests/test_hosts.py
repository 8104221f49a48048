import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import watershed

from survey_seg.hosts import HostConfig, cold_objects, join_pieces_to_hosts
from survey_seg.noise import gaussian_kernel_norm

SHAPE = (128, 128)
FWHM = 1.8
SIGMA = FWHM / 2.355


def _star(flux: float, y: float, x: float) -> np.ndarray:
    """A Gaussian point source of the PSF, in per-pixel S/N (unit noise)."""
    yy, xx = np.indices(SHAPE)
    return flux / (2 * np.pi * SIGMA**2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * SIGMA**2))


def _disk(flux: float, half_light_radius: float, y: float = 64.0, x: float = 64.0) -> np.ndarray:
    """An exponential disk (seen through no PSF: it is many PSF widths across)."""
    yy, xx = np.indices(SHAPE)
    scale = half_light_radius / 1.678
    return flux / (2 * np.pi * scale**2) * np.exp(-np.hypot(yy - y, xx - x) / scale)


def _significance(snr: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(snr, 0.7, truncate=4.0) / gaussian_kernel_norm(0.7)


def _pieces(snr: np.ndarray, seeds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sources cut by a watershed from ``seeds`` (a centre peak each), and one footprint per
    connected region above 2 sigma: what the network's centre peaks give."""
    significance = _significance(snr)
    footprints, _ = ndimage.label(significance > 2.0, structure=np.ones((3, 3)))
    markers = np.zeros(SHAPE, dtype=np.int32)
    for label, (y, x) in enumerate(seeds, start=1):
        markers[y, x] = label
    sources = watershed(-significance, markers, mask=footprints > 0).astype(np.int32)
    return sources, footprints


def _join(
    snr: np.ndarray,
    sources: np.ndarray,
    footprints: np.ndarray,
    centre_peaks: np.ndarray | None = None,
    **config,
) -> np.ndarray:
    centre_peaks = np.zeros(SHAPE) if centre_peaks is None else centre_peaks
    return join_pieces_to_hosts(
        sources,
        footprints,
        snr,
        snr,
        _significance(snr),
        centre_peaks,
        resolution_pix=FWHM,
        config=HostConfig(**config),
    )


KNOTS = [(64, 73), (57, 59), (71, 57), (70, 70)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_clumpy_galaxy_cut_at_its_knots_is_one_source(seed):
    """An exponential disk of 7 FWHM half-light radius with four point-like knots of 10 %
    of its light each, every knot a source of its own: one source."""
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    snr = noise + _disk(3000.0, 12.6) + sum(_star(300.0, y, x) for y, x in KNOTS)
    sources, footprints = _pieces(snr, [(64, 64), *KNOTS])
    assert sources.max() == 5
    joined = _join(snr, sources, footprints)
    assert joined.max() == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_close_pair_of_stars_stays_two(seed):
    """Two point sources 1.5 FWHM apart: the cold view sees one object, too compact for
    a galaxy's body."""
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    snr = noise + _star(400.0, 64, 64) + _star(250.0, 64, 64 + 1.5 * FWHM)
    sources, footprints = _pieces(snr, [(64, 64), (64, 67)])
    assert footprints[64, 64] == footprints[64, 67] and sources.max() == 2
    assert _join(snr, sources, footprints).max() == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_crowded_star_field_keeps_its_stars(seed):
    """Forty stars in a 40 x 40 pixel patch, one footprint: each stays a source of its own;
    the cold view's groups of stars hold their light at their peaks."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(44, 84, size=(40, 2))
    snr = rng.normal(size=SHAPE) + sum(
        _star(f, y, x) for (y, x), f in zip(positions, rng.uniform(60, 600, 40), strict=True)
    )
    seeds = sorted({(round(y), round(x)) for y, x in positions})
    sources, footprints = _pieces(snr, seeds)
    joined = _join(snr, sources, footprints)
    assert joined.max() >= sources.max() - 2, (sources.max(), joined.max())


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sea_of_unresolved_light_is_no_galaxy(seed):
    """Sources cut out of a plateau of light (the Galactic centre's unresolved stars) with
    faint stars on it: extended light, but it does not stand out of the field around it."""
    rng = np.random.default_rng(seed)
    snr = rng.normal(size=SHAPE) + 3.0 * np.pad(np.ones((108, 108)), 10)
    seeds = [(int(y), int(x)) for y, x in rng.integers(20, 108, size=(12, 2))]
    snr += sum(_star(80.0, y, x) for y, x in seeds)
    sources, footprints = _pieces(snr, seeds)
    assert _join(snr, sources, footprints).max() == sources.max()
    assert _join(snr, sources, footprints, min_contrast=1e-6).max() < sources.max()


def test_a_bright_star_on_a_galaxy_stays_apart():
    """A star on a disk's outskirts, as bright as the disk: no piece of it."""
    noise = np.random.default_rng(4).normal(size=SHAPE)
    snr = noise + _disk(3000.0, 12.6) + _star(2000.0, 64, 84)
    sources, footprints = _pieces(snr, [(64, 64), (64, 84)])
    assert footprints[64, 64] == footprints[64, 84]
    joined = _join(snr, sources, footprints)
    assert joined.max() == 2
    assert joined[64, 64] != joined[64, 84]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_smooth_disk_cut_by_noise_peaks_is_one_source(seed):
    """A faint exponential disk cut into four pieces (centre peaks on its noise): its
    pieces share one cold object and join in the first step."""
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    snr = noise + _disk(1500.0, 9.0)
    seeds = [(64, 64), (58, 68), (70, 60), (66, 71)]
    sources, footprints = _pieces(snr, seeds)
    cold = cold_objects(snr, footprints, resolution_pix=FWHM, smoothing_fwhm=2.5)
    assert len({int(cold[y, x]) for y, x in seeds}) == 1
    assert np.array_equal(cold > 0, footprints > 0)
    assert _join(snr, sources, footprints).max() == 1


def test_cold_objects_keep_a_far_star_apart():
    noise = np.random.default_rng(5).normal(size=SHAPE)
    snr = noise + _disk(3000.0, 12.6) + _star(3000.0, 64, 88)
    footprints, _ = ndimage.label(_significance(snr) > 2.0, structure=np.ones((3, 3)))
    assert footprints[64, 64] == footprints[64, 88]
    cold = cold_objects(snr, footprints, resolution_pix=FWHM, smoothing_fwhm=2.5)
    assert cold[64, 88] != cold[64, 64]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_galaxy_whose_centre_the_network_is_sure_of_is_no_piece(seed):
    """The clumpy galaxy's first knot seeded by a sure centre peak (a companion galaxy,
    by the network's judgement) stays a source of its own; the other knots join."""
    noise = np.random.default_rng(seed).normal(size=SHAPE)
    snr = noise + _disk(3000.0, 12.6) + sum(_star(300.0, y, x) for y, x in KNOTS)
    sources, footprints = _pieces(snr, [(64, 64), *KNOTS])
    centre_peaks = np.zeros(SHAPE)
    centre_peaks[KNOTS[0]] = 0.8
    joined = _join(snr, sources, footprints, centre_peaks)
    assert joined.max() == 2
    assert joined[KNOTS[0]] != joined[64, 64]
    assert len({int(joined[y, x]) for y, x in [(64, 64), *KNOTS[1:]]}) == 1


def test_without_a_cold_view_the_hosts_ellipses_alone_join_the_knots():
    noise = np.random.default_rng(0).normal(size=SHAPE)
    snr = noise + _disk(3000.0, 12.6) + sum(_star(300.0, y, x) for y, x in KNOTS)
    sources, footprints = _pieces(snr, [(64, 64), *KNOTS])
    assert _join(snr, sources, footprints, smoothing_fwhm=0.0).max() == 1


def test_nothing_to_join_returns_the_sources_as_they_are():
    sources = np.zeros(SHAPE, dtype=np.int32)
    sources[10:14, 10:14] = 1
    snr = np.where(sources > 0, 10.0, 0.0)
    assert _join(snr, sources, sources) is sources


@pytest.mark.parametrize(
    "field, value",
    [
        ("smoothing_fwhm", -1.0),
        ("min_radius_fwhm", -1.0),
        ("max_point_fraction", np.nan),
        ("reach", 0.0),
        ("max_piece_fraction", -0.5),
        ("min_contrast", 0.0),
    ],
)
def test_a_bad_host_config_is_refused(field, value):
    with pytest.raises(ValueError, match=f"HostConfig.{field}"):
        HostConfig(**{field: value})
