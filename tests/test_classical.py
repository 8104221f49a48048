import numpy as np
import pytest

from survey_seg.classical import ClassicalConfig, ClassicalScreener
from survey_seg.masks import MaskBit
from survey_seg.store import WindowData


def _window(image, sigma=1.0):
    return WindowData(
        image=image.astype(np.float32),
        variance=np.full(image.shape, sigma**2, np.float32),
        background=np.zeros(image.shape, np.float32),
    )


def _blob(shape, x0, y0, sigma, flux):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return flux * g / g.sum()


@pytest.fixture
def noise():
    return np.random.default_rng(11).normal(0, 1, (160, 160))


def test_isolated_sources_are_detected_once_each(noise):
    image = noise + _blob(noise.shape, 40, 40, 1.5, 400) + _blob(noise.shape, 110, 90, 2.5, 900)
    products = ClassicalScreener().segment(_window(image), saturation=None)
    assert products.sources.max() == 2
    assert products.sources[40, 40] and products.sources[90, 110]
    assert products.footprints.max() == 2


def test_close_pair_is_deblended_within_one_footprint(noise):
    image = noise + _blob(noise.shape, 70, 80, 1.5, 600) + _blob(noise.shape, 77, 80, 1.5, 400)
    products = ClassicalScreener().segment(_window(image), saturation=None)
    assert products.sources[80, 70] != products.sources[80, 77]
    assert products.sources[80, 70] and products.sources[80, 77]
    assert products.footprints[80, 70] == products.footprints[80, 77]


def test_cosmic_ray_is_masked_not_detected(noise):
    image = noise.copy()
    image[50, 60:66] += 300.0  # a one-pixel-wide track, no PSF
    products = ClassicalScreener().segment(_window(image), saturation=None)
    assert (products.artefacts[50, 60:66] & np.uint32(MaskBit.CR)).all()
    assert products.sources.max() == 0


def test_saturation_and_missing_data_are_flagged(noise):
    image = noise + _blob(noise.shape, 80, 80, 2.0, 40000)
    image[image > 300] = 300
    image[10:20, :] = np.nan
    products = ClassicalScreener().segment(_window(image), saturation=300)
    assert products.artefacts[80, 80] & np.uint32(MaskBit.SAT)
    assert (products.artefacts[10:20] & np.uint32(MaskBit.NO_DATA)).all()
    assert products.sources[80, 80] > 0  # the saturated star is still a source


def test_bad_column_is_flagged(noise):
    image = noise.copy()
    image[:, 33] += 6.0
    products = ClassicalScreener().segment(_window(image), saturation=None)
    flagged = (products.artefacts & np.uint32(MaskBit.BAD)) != 0
    assert flagged[40:120, 33].mean() > 0.9
    assert flagged[:, 60:100].mean() < 0.01


def test_trail_is_masked_not_detected(noise):
    image = noise.copy()
    rows = np.arange(160)
    image[rows, np.clip(rows // 2 + 20, 0, 159)] += 25.0
    image[rows, np.clip(rows // 2 + 21, 0, 159)] += 25.0
    products = ClassicalScreener().segment(_window(image), saturation=None)
    assert ((products.artefacts & np.uint32(MaskBit.STREAK)) != 0).sum() > 150
    assert products.sources.max() == 0


def test_empty_sky_gives_no_sources_and_accept(noise):
    screener = ClassicalScreener()
    products = screener.segment(_window(noise), saturation=None)
    assert products.sources.max() == 0
    assert screener.verdict(products.artefacts) == "accept"


def test_verdict_thresholds():
    screener = ClassicalScreener()
    planes = np.zeros((100, 100), np.uint32)
    planes[:5] = np.uint32(MaskBit.NO_DATA)
    assert screener.verdict(planes) == "inspect"
    planes[:50] = np.uint32(MaskBit.CR)
    assert screener.verdict(planes) == "reject"


def test_config_validation():
    with pytest.raises(ValueError, match="detect_threshold"):
        ClassicalConfig(detect_threshold=-1)
    with pytest.raises(ValueError, match="inspect_fraction"):
        ClassicalConfig(inspect_fraction=0.5, reject_fraction=0.2)


def test_halo_required_covers_the_widest_filter():
    assert ClassicalScreener().halo_required >= ClassicalConfig().bad_column_length // 2


def test_an_undersampled_star_is_a_source_when_the_psf_is_known(noise):
    import galsim

    star = galsim.Moffat(beta=3.0, fwhm=0.7).withFlux(3000.0)
    image = noise + star.drawImage(nx=160, ny=160, scale=1.0, offset=(0.2, -0.3)).array
    nominal = ClassicalScreener().segment(_window(image), saturation=None)
    assert nominal.artefacts[80, 80] & np.uint32(MaskBit.CR)  # narrower than a 1.8 pix PSF
    screener = ClassicalScreener(psf_fwhm_pix=0.7)
    assert screener.config.cosmic_ray_max_minor_axis < ClassicalConfig().cosmic_ray_max_minor_axis
    products = screener.segment(_window(image), saturation=None)
    assert products.sources[80, 80] > 0
    assert not products.artefacts[80, 80] & np.uint32(MaskBit.CR)
