"""Tests of survey_seg.store: FITS validation, ingest into Zarr, windows, outputs."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from astropy.io import fits
from astropy.wcs import WCS

from survey_seg.background import interpolate_mesh
from survey_seg.errors import InputError, OutputError
from survey_seg.store import (
    MOSAIC_STORE,
    RUN_LOCK,
    MosaicStore,
    OutputStore,
    acquire_run_lock,
    check_lock_held_by,
    check_run_lock,
    ingest_mosaic,
    inspect_fits_mosaic,
    release_run_lock,
    wcs_from_attrs,
    wcs_to_attrs,
)
from survey_seg.tiling import extract_window, insert_core, make_tile_grid

SHAPE = (300, 260)  # (ny, nx): not square, so that swapped axes show
PIX_DEG = 0.1 / 3600.0


# --------------------------------------------------------------------------- builders


def wcs_header(shape: tuple[int, int] = SHAPE, **override) -> fits.Header:
    """A TAN header at 0.1 arcsec/pix centred on (150.1, 2.2) deg."""
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 150.1, 2.2
    header["CRPIX1"], header["CRPIX2"] = shape[1] / 2 + 0.5, shape[0] / 2 + 0.5
    header["CD1_1"], header["CD1_2"] = -PIX_DEG, 0.0
    header["CD2_1"], header["CD2_2"] = 0.0, PIX_DEG
    for key, value in override.items():
        header[key] = value
    return header


def noisy_image(shape: tuple[int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Sky 10 + gaussian noise (rms 1) + a few gaussian blobs, float32."""
    rng = np.random.default_rng(seed)
    image = 10.0 + rng.normal(0.0, 1.0, shape)
    y, x = np.mgrid[: shape[0], : shape[1]]
    for _ in range(6):
        cy, cx = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        image += rng.uniform(20, 200) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 2.5**2))
    return image.astype(np.float32)


def write_fits(path: Path, data, header=None, *extensions: fits.ImageHDU) -> Path:
    fits.HDUList([fits.PrimaryHDU(data, header=header), *extensions]).writeto(path)
    return path


@pytest.fixture
def good_mosaic(tmp_path) -> tuple[Path, np.ndarray]:
    """A valid mosaic with a few NaN and inf pixels, and no noise HDU."""
    image = noisy_image()
    image[5, 7] = np.nan
    image[100:103, 40] = np.inf
    image[200, 200] = -np.inf
    return write_fits(tmp_path / "mosaic.fits", image, wcs_header()), image


def _ingest(path: Path, out: Path, tile_size: int = 100) -> MosaicStore:
    out.mkdir(exist_ok=True)
    return ingest_mosaic(inspect_fits_mosaic(path), out, tile_size=tile_size, background_cell=32)


def _expected(image: np.ndarray) -> np.ndarray:
    expected = np.asarray(image, dtype=np.float32).copy()
    expected[~np.isfinite(expected)] = np.nan
    return expected


# --------------------------------------------------------------------------- bad FITS input


def _missing(tmp_path):
    return tmp_path / "nowhere.fits"


def _directory(tmp_path):
    (tmp_path / "dir.fits").mkdir()
    return tmp_path / "dir.fits"


def _text(tmp_path):
    path = tmp_path / "text.fits"
    path.write_text("this is a catalogue, not an image\n" * 100)
    return path


def _random_bytes(tmp_path):
    path = tmp_path / "random.fits"
    path.write_bytes(np.random.default_rng(1).bytes(20_000))
    return path


def _empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    return path


def _truncated_half(tmp_path):
    good = write_fits(tmp_path / "good.fits", noisy_image(), wcs_header())
    path = tmp_path / "truncated.fits"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_header(tmp_path):
    good = write_fits(tmp_path / "good.fits", noisy_image(), wcs_header())
    path = tmp_path / "truncated.fits"
    path.write_bytes(good.read_bytes()[:1000])
    return path


def _truncated_variance(tmp_path):
    variance = fits.ImageHDU(np.ones(SHAPE, np.float32), name="VARIANCE")
    good = write_fits(tmp_path / "good.fits", noisy_image(), wcs_header(), variance)
    path = tmp_path / "truncated.fits"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) - 50_000])  # the image is whole, the variance is cut
    return path


def _no_image_hdu(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


def _one_d(tmp_path):
    return write_fits(tmp_path / "1d.fits", noisy_image()[0])


def _three_d(tmp_path):
    cube = np.stack([noisy_image(), noisy_image(seed=1)])
    return write_fits(tmp_path / "3d.fits", cube, wcs_header())


def _zero_size(tmp_path):
    return write_fits(tmp_path / "zero.fits", np.zeros((0, 260), np.float32), wcs_header())


def _all_nan(tmp_path):
    return write_fits(tmp_path / "nan.fits", np.full(SHAPE, np.nan, np.float32), wcs_header())


def _all_inf(tmp_path):
    image = np.full(SHAPE, np.inf, np.float32)
    image[::2] = -np.inf
    return write_fits(tmp_path / "inf.fits", image, wcs_header())


def _no_wcs(tmp_path):
    return write_fits(tmp_path / "nowcs.fits", noisy_image())


def _unknown_projection(tmp_path):
    header = wcs_header(CTYPE1="RA---XYZ", CTYPE2="DEC--XYZ")
    return write_fits(tmp_path / "xyz.fits", noisy_image(), header)


def _zero_cd(tmp_path):
    header = wcs_header(CD1_1=0.0, CD2_2=0.0)
    return write_fits(tmp_path / "cd0.fits", noisy_image(), header)


def _string_crval(tmp_path):
    header = wcs_header(CRVAL1="150.1 deg")
    return write_fits(tmp_path / "crval.fits", noisy_image(), header)


def _variance_shape(tmp_path):
    variance = fits.ImageHDU(np.ones((100, 100), np.float32), name="VARIANCE")
    return write_fits(tmp_path / "var.fits", noisy_image(), wcs_header(), variance)


def _weight_shape(tmp_path):
    weight = fits.ImageHDU(np.ones((260, 300), np.float32), name="WEIGHT")
    return write_fits(tmp_path / "wht.fits", noisy_image(), wcs_header(), weight)


def _negative_psf(tmp_path):
    return write_fits(tmp_path / "psf.fits", noisy_image(), wcs_header(PSFFWHM=-2.0))


def _text_psf(tmp_path):
    return write_fits(tmp_path / "psftext.fits", noisy_image(), wcs_header(PSFFWHM="wide"))


BAD_INPUTS = {
    # builder: (words naming the problem, words naming the fix)
    "missing": (_missing, ["does not exist"], ["check the path"]),
    "directory": (_directory, ["is a directory"], ["pass a FITS file"]),
    "text": (_text, ["not a FITS file"], ["pass a FITS mosaic"]),
    "random bytes": (_random_bytes, ["not a FITS file"], ["pass a FITS mosaic"]),
    "empty file": (_empty_file, ["not a FITS file"], ["pass a FITS mosaic"]),
    "truncated half": (_truncated_half, ["truncated"], ["regenerate"]),
    "truncated header": (_truncated_header, ["truncated or corrupt"], ["regenerate"]),
    "truncated variance": (_truncated_variance, ["truncated"], ["regenerate"]),
    "no image HDU": (_no_image_hdu, ["no image HDU"], ["IMAGE extension"]),
    "1-D": (_one_d, ["1-D"], ["2-D plane"]),
    "3-D": (_three_d, ["3-D", "(2, 300, 260)"], ["2-D plane"]),
    "zero size": (_zero_size, ["zero-size"], ["non-empty image"]),
    "all NaN": (_all_nan, ["no finite pixel"], ["right file"]),
    "all inf": (_all_inf, ["no finite pixel"], ["right file"]),
    "no WCS": (_no_wcs, ["no celestial WCS", "CTYPE"], ["add the WCS"]),
    "unknown projection": (_unknown_projection, ["malformed WCS", "XYZ"], ["fix the CTYPE"]),
    "zero CD matrix": (_zero_cd, ["malformed WCS", "singular"], ["CD"]),
    "string CRVAL": (_string_crval, ["malformed WCS", "CRVAL1", "not a number"], ["numeric"]),
    "variance shape": (_variance_shape, ["VARIANCE", "(100, 100)", "(300, 260)"], ["drop it"]),
    "weight shape": (_weight_shape, ["WEIGHT", "(260, 300)"], ["image's shape"]),
    "negative PSFFWHM": (_negative_psf, ["PSFFWHM = -2.0"], ["correct the keyword"]),
    "text PSFFWHM": (_text_psf, ["PSFFWHM = 'wide'"], ["PSF FWHM in pixels"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_mosaic_raises_one_line_input_error_naming_problem_and_fix(tmp_path, case):
    build, problem, fix = BAD_INPUTS[case]
    path = build(tmp_path)
    with pytest.raises(InputError) as caught:
        inspect_fits_mosaic(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    for words in problem + fix:
        assert words in message, f"{words!r} not in {message!r}"
    # an InputError is a ValueError, as the design asks of boundary checks
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("build", [_truncated_header, _truncated_half, _text])
def test_bad_mosaic_does_not_leak_file_handles(tmp_path, build):
    import gc
    import warnings

    path = build(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError):
            inspect_fits_mosaic(path)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# --------------------------------------------------------------------------- accepted input


def test_good_mosaic_is_described(good_mosaic):
    path, _ = good_mosaic
    info = inspect_fits_mosaic(path)
    assert info.shape == SHAPE
    assert info.image_hdu == 0
    assert info.noise_hdu is None and info.noise_kind == "none"
    assert info.pixel_scale_arcsec == pytest.approx(0.1, rel=1e-9)
    assert len(info.sha256) == 64
    assert info.saturation is None and info.zero_point is None and info.psf_fwhm_pix is None
    assert info.gain is None and info.counts_gain is None


@pytest.mark.parametrize(
    ("cards", "gain", "counts_gain"),
    [
        ({"GAIN": 2.5}, 2.5, 2.5),  # no BUNIT: counts
        ({"GAIN": 2.5, "BUNIT": "ADU"}, 2.5, 2.5),
        ({"GAIN": 3.7, "BUNIT": "MJy/sr"}, 3.7, None),  # calibrated: GAIN is of the raw frames
        ({"GAIN": 0.0}, None, None),
        ({"GAIN": "n/a"}, None, None),
    ],
)
def test_gain_keyword_applies_to_counts_only(tmp_path, cards, gain, counts_gain):
    path = tmp_path / "gain.fits"
    fits.PrimaryHDU(noisy_image(), header=wcs_header(**cards)).writeto(path)
    info = inspect_fits_mosaic(path)
    assert (info.gain, info.counts_gain) == (gain, counts_gain)


def test_image_in_an_extension_with_keywords(tmp_path):
    header = wcs_header(SATURATE=5000.0, MAGZERO=24.5, PSFFWHM=2.2)
    path = tmp_path / "ext.fits"
    image = noisy_image()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, header=header, name="SCI")]).writeto(path)
    info = inspect_fits_mosaic(path)
    assert info.image_hdu == 1
    assert info.saturation == 5000.0 and info.zero_point == 24.5
    assert info.psf_fwhm_pix == 2.2
    store = _ingest(path, tmp_path / "out")
    np.testing.assert_array_equal(store.read_image(), image)
    assert store.psf_fwhm_pix == 2.2


@pytest.mark.parametrize(
    ("dtype", "bitpix", "bzero"),
    [
        (np.int16, 16, None),
        (np.uint16, 16, 32768),  # stored as int16 with BZERO = 2**15
        (np.int32, 32, None),
        (np.uint32, 32, 2**31),  # stored as int32 with BZERO = 2**31
        (">f4", -32, None),  # FITS native big-endian float32
        (np.float64, -64, None),
    ],
)
def test_pixel_types_are_ingested_as_native_float32(tmp_path, dtype, bitpix, bzero):
    rng = np.random.default_rng(2)
    if np.dtype(dtype).kind in "iu":
        data = rng.integers(0, 30_000, SHAPE).astype(dtype)
    else:
        data = (rng.normal(100.0, 10.0, SHAPE)).astype(dtype)
    path = write_fits(tmp_path / "typed.fits", data, wcs_header())
    raw = fits.getheader(path)
    assert raw["BITPIX"] == bitpix
    assert raw.get("BZERO") == bzero
    store = _ingest(path, tmp_path / "out")
    image = store.read_image()
    assert image.dtype == np.float32 and image.dtype.isnative
    np.testing.assert_array_equal(image, data.astype(np.float32))


def test_weight_becomes_variance_and_zero_weight_no_data(tmp_path):
    image = noisy_image()
    weight = np.random.default_rng(3).uniform(0.5, 4.0, SHAPE).astype(np.float32)
    weight[10:20, 30:40] = 0.0
    weight[50, 50] = np.nan
    hdu = fits.ImageHDU(weight, name="WEIGHT")
    path = write_fits(tmp_path / "weighted.fits", image, wcs_header(), hdu)
    info = inspect_fits_mosaic(path)
    assert info.noise_kind == "weight" and info.noise_hdu == 1
    out = tmp_path / "out"
    store = _ingest(path, out)
    variance = np.asarray(zarr.open_group(out / MOSAIC_STORE, mode="r")["variance"][...])
    no_data = (weight == 0) | ~np.isfinite(weight)
    with np.errstate(divide="ignore"):
        expected = np.where(no_data, np.nan, np.float32(1.0) / weight).astype(np.float32)
    np.testing.assert_array_equal(variance, expected)
    ingested = store.read_image()
    assert np.isnan(ingested[no_data]).all()
    np.testing.assert_array_equal(ingested[~no_data], image[~no_data])


def test_variance_hdu_non_positive_is_no_data(tmp_path):
    image = noisy_image()
    variance = np.full(SHAPE, 2.0, np.float32)
    variance[0, :10] = 0.0
    variance[1, :10] = -1.0
    hdu = fits.ImageHDU(variance, name="VARIANCE")
    path = write_fits(tmp_path / "var.fits", image, wcs_header(), hdu)
    assert inspect_fits_mosaic(path).noise_kind == "variance"
    out = tmp_path / "out"
    store = _ingest(path, out)
    stored = np.asarray(zarr.open_group(out / MOSAIC_STORE, mode="r")["variance"][...])
    assert np.isnan(stored[:2, :10]).all() and np.isnan(store.read_image()[:2, :10]).all()
    assert (stored[2:] == 2.0).all()


def test_inf_pixels_become_nan_at_ingest(good_mosaic, tmp_path):
    path, image = good_mosaic
    store = _ingest(path, tmp_path / "out")
    ingested = store.read_image()
    np.testing.assert_array_equal(ingested, _expected(image))
    assert not np.isinf(ingested).any()
    assert store.attrs["n_nonfinite_input"] == 4  # the three +inf and one -inf pixels


# --------------------------------------------------------------------------- ingest and windows


@pytest.mark.parametrize(("tile_size", "halo"), [(100, 16), (128, 40), (77, 100), (260, 0)])
def test_windows_reassemble_the_image(good_mosaic, tmp_path, tile_size, halo):
    path, image = good_mosaic
    variance = np.random.default_rng(4).uniform(1.0, 2.0, SHAPE).astype(np.float32)
    path = write_fits(
        tmp_path / "with_var.fits", image, wcs_header(), fits.ImageHDU(variance, name="VARIANCE")
    )
    store = _ingest(path, tmp_path / "out", tile_size=tile_size)
    expected = _expected(image)
    expected_variance = np.where(np.isfinite(expected), variance, np.nan)
    grid = make_tile_grid(SHAPE, tile_size=tile_size, halo=halo, wcs=store.wcs)
    image_out = np.full(SHAPE, -1.0, np.float32)
    variance_out = np.full(SHAPE, -1.0, np.float32)
    for tile in grid:
        window = store.read_window(tile)
        for plane in (window.image, window.variance, window.background):
            assert plane.shape == tile.window_shape and plane.dtype == np.float32
        # the whole window, halo included, is the mosaic with NaN beyond its edge
        np.testing.assert_array_equal(window.image, extract_window(expected, tile))
        np.testing.assert_array_equal(window.variance, extract_window(expected_variance, tile))
        (top, bottom), (left, right) = tile.read_pad
        outside = np.ones(tile.window_shape, bool)
        outside[top : tile.window_shape[0] - bottom, left : tile.window_shape[1] - right] = False
        assert np.isnan(window.image[outside]).all()
        assert np.isfinite(window.background).all()
        insert_core(image_out, tile, window.image)
        insert_core(variance_out, tile, window.variance)
        assert window.image[tile.crop_slices].shape == tile.core_shape
    np.testing.assert_array_equal(image_out, expected)
    np.testing.assert_array_equal(variance_out, expected_variance)


def test_window_without_noise_hdu_uses_background_rms(good_mosaic, tmp_path):
    path, _ = good_mosaic
    store = _ingest(path, tmp_path / "out")
    grid = make_tile_grid(SHAPE, tile_size=100, halo=30)
    for tile in (grid[0], grid[len(grid) - 1]):
        window = store.read_window(tile)
        finite = np.isfinite(window.image)
        np.testing.assert_array_equal(np.isfinite(window.variance), finite)
        rms = interpolate_mesh(store.mesh.rms, 32, tile.origin, tile.window_shape)
        scale = np.float32(store.noise_scale**2)  # the measured noise correlation, >= 1
        np.testing.assert_allclose(window.variance[finite], (rms * rms * scale)[finite], rtol=1e-6)
        level = interpolate_mesh(store.mesh.level, 32, tile.origin, tile.window_shape)
        np.testing.assert_array_equal(window.background, level)
        # the sky is 10 with rms 1: the mesh finds them (3-sigma clipping keeps 0.987 rms)
        assert np.median(window.variance[finite]) == pytest.approx(0.97, abs=0.05)
        assert np.all(np.abs(window.variance[finite] - 1.0) < 0.3)
        assert np.all(np.abs(window.background - 10.0) < 0.15)


@pytest.mark.parametrize("tile_size", [64, 100, 128, 260])
def test_one_tile_core_is_one_shard(good_mosaic, tmp_path, tile_size):
    path, _ = good_mosaic
    out = tmp_path / "out"
    store = _ingest(path, out, tile_size=tile_size)
    image = zarr.open_group(out / MOSAIC_STORE, mode="r")["image"]
    assert image.shards == (tile_size, tile_size)
    assert all(shard % chunk == 0 for shard, chunk in zip(image.shards, image.chunks, strict=True))
    outputs = OutputStore(out)
    outputs.create_masks(SHAPE, tile_size, store.wcs)
    masks = zarr.open_group(out / "masks.zarr", mode="r")
    for name in ("mask", "segmentation"):
        assert masks[name].shards == (tile_size, tile_size)
        assert masks[name].shape == SHAPE


def test_write_core_writes_exactly_the_tile_core(good_mosaic, tmp_path):
    path, _ = good_mosaic
    out = tmp_path / "out"
    store = _ingest(path, out)
    outputs = OutputStore(out)
    outputs.create_masks(SHAPE, 100, store.wcs)
    grid = make_tile_grid(SHAPE, tile_size=100, halo=0)
    tile = grid[4]
    outputs.write_core(tile, np.full(tile.core_shape, 3), np.full(tile.core_shape, 7))
    mask, segmentation = outputs.read_masks()
    expected = np.zeros(SHAPE, np.int64)
    expected[tile.core_slices] = 7
    np.testing.assert_array_equal(segmentation, expected)
    np.testing.assert_array_equal(mask, (expected > 0) * 3)
    assert mask.dtype == np.uint32 and segmentation.dtype == np.int64


def test_wcs_round_trips_through_attributes(good_mosaic, tmp_path):
    path, _ = good_mosaic
    info = inspect_fits_mosaic(path)
    attrs = wcs_to_attrs(info.wcs)
    attrs = json.loads(json.dumps(attrs))  # survives JSON, as in Zarr attributes
    rebuilt = wcs_from_attrs(attrs)
    store = _ingest(path, tmp_path / "out")
    y, x = np.mgrid[0:300:37, 0:260:29]
    expected = info.wcs.pixel_to_world_values(x, y)
    for wcs in (rebuilt, store.wcs):
        assert isinstance(wcs, WCS) and wcs.has_celestial
        np.testing.assert_allclose(wcs.pixel_to_world_values(x, y), expected, rtol=0, atol=1e-12)
    assert store.pixel_scale_arcsec == pytest.approx(0.1)


# --------------------------------------------------------------------------- output store


def _tables():
    sources = pd.DataFrame({"id": np.arange(3, dtype=np.int64), "flux": [1.0, 2.0, 3.0]})
    clumps = pd.DataFrame({"id": np.arange(2, dtype=np.int64), "host": [0, 0]})
    return sources, clumps


def test_write_tile_result_round_trips_and_leaves_no_temporary_file(tmp_path):
    store = OutputStore(tmp_path / "out")
    (tmp_path / "out").mkdir()
    sources, clumps = _tables()
    store.write_tile_result(12, sources, clumps, {"status": "done", "tile_id": 12})
    names = sorted(p.name for p in store.tiles_dir.iterdir())
    assert names == ["000012.clumps.parquet", "000012.json", "000012.sources.parquet"]
    assert store.read_tile_record(12) == {"status": "done", "tile_id": 12}
    read_sources, read_clumps = store.read_tile_tables(12)
    pd.testing.assert_frame_equal(read_sources, sources)
    pd.testing.assert_frame_equal(read_clumps, clumps)
    assert store.read_tile_record(13) is None


def test_tile_record_is_written_last(tmp_path, monkeypatch):
    import survey_seg.store as store_module

    written = []
    real_parquet, real_bytes = store_module._atomic_parquet, store_module.atomic_write_bytes
    monkeypatch.setattr(
        store_module, "_atomic_parquet", lambda t, p: (written.append(p.name), real_parquet(t, p))
    )
    monkeypatch.setattr(
        store_module, "atomic_write_bytes", lambda p, d: (written.append(p.name), real_bytes(p, d))
    )
    store = OutputStore(tmp_path)
    store.write_tile_result(3, *_tables(), {"status": "done"})
    assert written[-1] == "000003.json"
    assert set(written) == {"000003.sources.parquet", "000003.clumps.parquet", "000003.json"}


def test_failed_catalog_write_leaves_no_record(tmp_path, monkeypatch):
    import survey_seg.store as store_module

    real = store_module._atomic_parquet

    def failing(table, path):
        if "clumps" in path.name:
            raise OSError("disk full")
        real(table, path)

    monkeypatch.setattr(store_module, "_atomic_parquet", failing)
    store = OutputStore(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        store.write_tile_result(5, *_tables(), {"status": "done"})
    assert not store.tile_paths(5)["record"].exists()
    assert store.read_tile_record(5) is None
    assert not list(store.tiles_dir.glob("*.tmp"))


def test_interrupted_atomic_write_leaves_no_file(tmp_path, monkeypatch):
    import survey_seg.store as store_module

    store = OutputStore(tmp_path)

    def failing_replace(source, target):
        raise OSError("interrupted")

    monkeypatch.setattr(store_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="interrupted"):
        store.write_tile_result(7, *_tables(), {"status": "done"})
    assert list(store.tiles_dir.iterdir()) == []


def test_corrupt_tile_record_counts_as_unfinished(tmp_path):
    store = OutputStore(tmp_path)
    store.write_tile_result(1, *_tables(), {"status": "done"})
    store.tile_paths(1)["record"].write_text('{"status": "do')
    assert store.read_tile_record(1) is None


def test_manifest_round_trip_and_corrupt_manifest(tmp_path):
    store = OutputStore(tmp_path)
    assert store.read_manifest() is None
    store.write_manifest({"run_id": "x", "runs": ["x"]})
    assert store.read_manifest() == {"run_id": "x", "runs": ["x"]}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    store.manifest_path.write_text('{"run_id": "x", "ru')
    with pytest.raises(OutputError, match="--clean") as caught:
        store.read_manifest()
    assert "corrupt" in str(caught.value) and str(store.manifest_path) in str(caught.value)


def test_write_table_writes_parquet_and_fits(tmp_path):
    from astropy.table import Table

    store = OutputStore(tmp_path)
    sources, _ = _tables()
    store.write_table(sources, "sources")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sources.parquet"), sources)
    np.testing.assert_array_equal(Table.read(tmp_path / "sources.fits")["flux"], sources["flux"])
    store.write_table(sources, "plain", fits_copy=False)
    assert not (tmp_path / "plain.fits").exists()
    assert not list(tmp_path.glob(".*"))


def test_run_lock_refuses_a_second_live_run_and_takes_over_a_stale_one(tmp_path):
    import subprocess
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / RUN_LOCK
        lock.write_text(
            json.dumps({"run_id": "a", "pid": sleeper.pid, "host": socket.gethostname()})
        )
        with pytest.raises(OutputError, match=r"another survey-seg run \(a, process"):
            acquire_run_lock(tmp_path, "b")
        with pytest.raises(OutputError, match=r"delete .*run\.lock if that run is no longer alive"):
            check_run_lock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the lock is stale and the next run takes it over
    check_run_lock(tmp_path)
    acquire_run_lock(tmp_path, "b")
    assert json.loads(lock.read_text())["run_id"] == "b"
    acquire_run_lock(tmp_path, "b")  # the same run may take its lock again (a retried task)
    release_run_lock(tmp_path, "other")  # not the holder: nothing happens
    assert lock.exists()
    release_run_lock(tmp_path, "b")
    assert not lock.exists()


def test_a_lock_from_another_host_counts_as_alive(tmp_path):
    (tmp_path / RUN_LOCK).write_text(json.dumps({"run_id": "a", "pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputError, match="on elsewhere"):
        acquire_run_lock(tmp_path, "b")


def test_only_the_run_holding_the_lock_may_write(tmp_path):
    """A tile task that outlives its run (stopped, or taken over on resume) writes nothing."""
    acquire_run_lock(tmp_path, "run-a")
    check_lock_held_by(tmp_path, "run-a")
    with pytest.raises(OutputError, match="run-b no longer holds"):
        check_lock_held_by(tmp_path, "run-b")
    release_run_lock(tmp_path, "run-a")
    with pytest.raises(OutputError, match="its tile was not written"):
        check_lock_held_by(tmp_path, "run-a")


# --------------------------------------------------------------------------- FITS products

PROVENANCE = {
    "package_version": "9.8.7",
    "run_id": "20260101T000000-abcdef",
    "updated": "2026-01-01T00:00:00+00:00",
    "input": {"path": "/data/" + "deep/" * 20 + "mosaic.fits", "sha256": "ab" * 32},
    "method": {
        "method": "unet",
        "model": "tiny",
        "sha256": "cd" * 32,
        "clump_model": {"model": "clumpy", "sha256": "ef" * 32},
    },
    "grid": {"tile_size": 100, "halo": 16},
    "result_key": "0123456789abcdef",
}
"""A run manifest as pipeline._manifest builds it (the parts the headers summarise)."""


def _catalog(columns, n: int, seed: int) -> pd.DataFrame:
    """A seeded table of ``n`` rows in the schema ``columns``."""
    from survey_seg.catalog import conform

    rng = np.random.default_rng(seed)
    data = {}
    for column in columns:
        if column.dtype == "str":
            data[column.name] = np.array([f"row {i}" for i in range(n)], dtype=object)
        elif column.dtype == "bool":
            data[column.name] = rng.random(n) < 0.5
        elif column.dtype.startswith("float"):
            data[column.name] = rng.normal(size=n)
        else:
            data[column.name] = rng.integers(0, 2**31, n) * 2  # uint32 flags above 2**31
    return conform(pd.DataFrame(data), columns)


def _assert_provenance(header: fits.Header) -> None:
    assert header["ORIGIN"] == "survey-seg"
    assert header["SSEG_VER"] == "9.8.7"
    assert header["RUN_ID"] == PROVENANCE["run_id"]
    assert header["DATE"] == "2026-01-01T00:00:00"
    assert header["MOSAIC"] == PROVENANCE["input"]["path"]  # a long string: CONTINUE cards
    assert header["MOSAISHA"] == "ab" * 32
    assert (header["METHOD"], header["MODEL"], header["MODELSHA"]) == ("unet", "tiny", "cd" * 32)
    assert (header["CLMODEL"], header["CLMODSHA"]) == ("clumpy", "ef" * 32)
    assert (header["TILESIZE"], header["HALO"]) == (100, 16)
    assert header["RESULTKY"] == "0123456789abcdef"


def test_catalogs_carry_units_descriptions_and_provenance(tmp_path, assert_column_metadata):

    from survey_seg.catalog import CATALOGS, table_columns

    store = OutputStore(tmp_path)
    for seed, name in enumerate(CATALOGS):
        table = _catalog(CATALOGS[name], 5, seed)
        store.write_table(
            table,
            name,
            fits_copy=name != "tiles",
            flux_unit="nanomaggy",
            provenance=PROVENANCE,
        )
        columns = table_columns(name, flux_unit="nanomaggy")
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{name}.parquet"), table)
        assert_column_metadata(tmp_path / f"{name}.parquet", columns)
        if name == "tiles":
            continue
        with fits.open(tmp_path / f"{name}.fits") as hdus:
            hdus.verify("exception")
            _assert_provenance(hdus[0].header)
            header = hdus[1].header
            assert hdus[1].name == name.upper()
            assert header["TFIELDS"] == len(columns)
            for index, column in enumerate(columns, start=1):
                assert header[f"TTYPE{index}"] == column.name
                assert header.get(f"TUNIT{index}") == (column.unit or None), column.name
                assert header[f"TCOMM{index}"] == column.description, column.name
            for column in ("id", "flux", "flags"):
                if column in table:
                    np.testing.assert_array_equal(hdus[1].data[column], table[column])
    with fits.open(tmp_path / "sources.fits") as hdus:
        units = {hdus[1].header[f"TTYPE{i}"]: hdus[1].header.get(f"TUNIT{i}") for i in range(1, 23)}
    assert units["flux"] == units["flux_err"] == "nanomaggy"
    assert (units["x"], units["ra"], units["area"], units["mag"]) == ("pix", "deg", "pix2", "mag")


def test_catalog_units_default_to_adu_and_headers_to_the_package_version(tmp_path):
    import pyarrow.parquet as pq

    from survey_seg import __version__
    from survey_seg.catalog import SOURCE_COLUMNS

    store = OutputStore(tmp_path)
    store.write_table(_catalog(SOURCE_COLUMNS, 3, 0), "sources")
    field = pq.read_schema(tmp_path / "sources.parquet").field("flux_err")
    assert field.metadata[b"unit"] == b"adu"
    with fits.open(tmp_path / "sources.fits") as hdus:
        assert hdus[0].header["SSEG_VER"] == __version__
        assert "RUN_ID" not in hdus[0].header
        assert hdus[1].header["TUNIT10"] == "adu"


def test_tile_catalogs_carry_units_and_descriptions(tmp_path):
    import pyarrow.parquet as pq

    from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS

    store = OutputStore(tmp_path)
    sources, clumps = _catalog(SOURCE_COLUMNS, 4, 1), _catalog(CLUMP_COLUMNS, 2, 2)
    store.write_tile_result(3, sources, clumps, {"status": "done"}, flux_unit="Jy")
    read_sources, read_clumps = store.read_tile_tables(3)
    pd.testing.assert_frame_equal(read_sources, sources)
    pd.testing.assert_frame_equal(read_clumps, clumps)
    schema = pq.read_schema(store.tile_paths(3)["sources"])
    assert schema.field("flux").metadata == {
        b"unit": b"Jy",
        b"description": b"background-subtracted flux summed over the segment",
    }
    assert schema.field("id").metadata.keys() == {b"description"}
    clump_schema = pq.read_schema(store.tile_paths(3)["clumps"])
    assert clump_schema.field("ra").metadata[b"unit"] == b"deg"


def test_bad_table_arguments_are_refused(tmp_path):
    store = OutputStore(tmp_path)
    sources, _ = _tables()
    with pytest.raises(ValueError, match="flux_unit applies to the catalogs"):
        store.write_table(sources, "plain", flux_unit="Jy")
    with pytest.raises(ValueError, match="flux_unit must be a non-empty string"):
        store.write_table(sources, "sources", flux_unit="")
    with pytest.raises(ValueError, match="provenance must be a manifest dict"):
        store.write_table(sources, "sources", provenance="run 1")
    assert not list(tmp_path.iterdir())


STAMP = 20


def _filled_masks(out: Path, *, quality: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """masks.zarr of SHAPE in tiles of 100, every tile core written with seeded values."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2**32, SHAPE, dtype=np.uint64).astype(np.uint32)
    mask[0, :4] = [0, 1, 2**31, 2**32 - 1]  # the extremes of the uint32 <-> int32 shift
    segmentation = (rng.integers(0, 12, SHAPE) << 32) | rng.integers(0, 1000, SHAPE)
    segmentation[0, 0] = 0
    planes = {"mask": mask, "segmentation": segmentation}
    stamps = tuple(-(-n // STAMP) for n in SHAPE)
    if quality:
        planes["quality"] = rng.random(stamps).astype(np.float32)
        planes["quality"][2, 3] = np.nan
    store = OutputStore(out)
    out.mkdir(exist_ok=True)
    store.create_masks(SHAPE, 100, WCS(wcs_header()), quality_stamp=STAMP if quality else None)
    for tile in make_tile_grid(SHAPE, tile_size=100, halo=0):
        rows, cols = tile.core_slices
        stamp_slices = (
            slice(rows.start // STAMP, -(-rows.stop // STAMP)),
            slice(cols.start // STAMP, -(-cols.stop // STAMP)),
        )
        store.write_core(
            tile,
            mask[tile.core_slices],
            segmentation[tile.core_slices],
            planes["quality"][stamp_slices] if quality else None,
        )
    return planes


def test_zarr_mask_arrays_carry_their_wcs_planes_and_description(tmp_path):
    from survey_seg.masks import describe_bits

    _filled_masks(tmp_path)
    root = zarr.open_group(tmp_path / "masks.zarr", mode="r")
    expected = WCS(wcs_header())
    y, x = np.mgrid[0:300:37, 0:260:29]
    for name in ("mask", "segmentation"):
        attrs = dict(root[name].attrs)
        assert attrs["description"]
        wcs = wcs_from_attrs(attrs["wcs"])
        np.testing.assert_allclose(
            wcs.pixel_to_world_values(x, y), expected.pixel_to_world_values(x, y), atol=1e-12
        )
    assert root["mask"].attrs["mask_bits"] == describe_bits()
    quality = dict(root["quality"].attrs)
    assert quality["quality_stamp"] == STAMP and quality["description"]
    # a quality stamp (i, j) is the centre of its block of mosaic pixels
    i, j = np.array([0.0, 5.0, 12.0]), np.array([0.0, 7.0, 14.0])
    np.testing.assert_allclose(
        wcs_from_attrs(quality["wcs"]).pixel_to_world_values(i, j),
        expected.pixel_to_world_values(STAMP * i + (STAMP - 1) / 2, STAMP * j + (STAMP - 1) / 2),
        atol=1e-12,
    )


def test_masks_fits_holds_the_zarr_arrays_with_wcs_planes_and_provenance(tmp_path):
    from survey_seg.masks import MaskBit

    planes = _filled_masks(tmp_path)
    path = OutputStore(tmp_path).write_masks_fits(provenance=PROVENANCE)
    assert path == tmp_path / "masks.fits"
    expected = WCS(wcs_header())
    y, x = np.mgrid[0:300:37, 0:260:29]
    with fits.open(path) as hdus:
        hdus.verify("exception")
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "MASK", "SEGMENT", "QUALITY"]
        _assert_provenance(hdus[0].header)
        mask = hdus["MASK"].data
        assert mask.dtype == np.uint32 and hdus["MASK"].header["BZERO"] == 2**31
        np.testing.assert_array_equal(mask, planes["mask"])
        assert hdus["SEGMENT"].data.dtype == np.dtype(">i8")  # FITS int64, big-endian
        np.testing.assert_array_equal(hdus["SEGMENT"].data, planes["segmentation"])
        np.testing.assert_array_equal(hdus["QUALITY"].data, planes["quality"])
        for name in ("MASK", "SEGMENT"):
            header = hdus[name].header
            _assert_provenance(header)
            np.testing.assert_allclose(
                WCS(header).pixel_to_world_values(x, y),
                expected.pixel_to_world_values(x, y),
                rtol=0,
                atol=1e-12,
            )
        for bit in MaskBit:
            assert hdus["MASK"].header[f"MSKBIT{int(bit).bit_length() - 1}"] == bit.name
        quality = hdus["QUALITY"].header
        assert quality["STAMP"] == STAMP
        np.testing.assert_allclose(
            WCS(quality).pixel_to_world_values(3.0, 4.0),
            expected.pixel_to_world_values(3 * STAMP + 9.5, 4 * STAMP + 9.5),
            atol=1e-12,
        )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("block_rows", [1, 7, 100, 1000])
def test_masks_fits_is_the_same_file_whatever_the_block_of_rows(tmp_path, block_rows):
    _filled_masks(tmp_path, quality=block_rows != 7)
    store = OutputStore(tmp_path)
    whole = store.write_masks_fits(provenance=PROVENANCE, block_rows=SHAPE[0]).read_bytes()
    blocks = store.write_masks_fits(provenance=PROVENANCE, block_rows=block_rows).read_bytes()
    assert blocks == whole
    assert len(whole) % 2880 == 0
    assert store.write_masks_fits(provenance=PROVENANCE).read_bytes() == whole  # chunk rows


def test_masks_fits_reads_the_zarr_arrays_a_block_of_rows_at_a_time(tmp_path, monkeypatch):
    import survey_seg.store as store_module

    _filled_masks(tmp_path, quality=False)
    read_rows = []
    real = store_module._stream_image

    def stream_image(stream, array, header, dtype, block_rows):
        class Recorder:
            shape = array.shape

            def __getitem__(self, key):
                block = array[key]
                read_rows.append(block.shape[0])
                return block

        real(stream, Recorder(), header, dtype, block_rows)

    monkeypatch.setattr(store_module, "_stream_image", stream_image)
    OutputStore(tmp_path).write_masks_fits(block_rows=64)
    assert read_rows == [64, 64, 64, 64, 44] * 2


def test_failed_masks_fits_export_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    import survey_seg.store as store_module

    _filled_masks(tmp_path)
    store = OutputStore(tmp_path)
    earlier = store.write_masks_fits(provenance=PROVENANCE).read_bytes()
    _filled_masks(tmp_path, seed=1)
    real = store_module._stream_image

    def failing(stream, array, header, dtype, block_rows):
        if header["EXTNAME"] == "SEGMENT":
            raise OSError("disk full")
        real(stream, array, header, dtype, block_rows)

    monkeypatch.setattr(store_module, "_stream_image", failing)
    with pytest.raises(OSError, match="disk full"):
        store.write_masks_fits(provenance=PROVENANCE)
    assert (tmp_path / "masks.fits").read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.fits", "masks.zarr"]


def test_bad_masks_fits_arguments_are_refused(tmp_path):
    store = OutputStore(tmp_path)
    with pytest.raises(OutputError, match=r"masks\.zarr does not exist"):
        store.write_masks_fits()
    _filled_masks(tmp_path, quality=False)
    for block_rows in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="block_rows must be a positive integer"):
            store.write_masks_fits(block_rows=block_rows)
    with pytest.raises(ValueError, match="provenance must be a manifest dict"):
        store.write_masks_fits(provenance=["run"])
    assert not (tmp_path / "masks.fits").exists()


# --------------------------------------------------------------------------- input layouts


def _noise_and_flags(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A variance map of 0.25, 1 and 4 (exact as sigma and as weight) with a no-data
    patch, and int16 DQ flags (bit 4096 on a patch, 1 on a column), both of SHAPE."""
    rng = np.random.default_rng(seed)
    variance = rng.choice(np.float32([0.25, 1.0, 4.0]), SHAPE)
    variance[40:50, 60:90] = 0.0  # weight 0, rms 0: no data
    flags = np.zeros(SHAPE, np.int16)
    flags[120:126, 30:37] = 4096
    flags[:, 200] = 1
    return variance, flags


def _hst(path: Path, image, variance, flags) -> Path:
    """HST/JWST layout: empty primary, SCI, ERR (sigma), DQ."""
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(image, header=wcs_header(), name="SCI"),
        fits.ImageHDU(np.sqrt(variance), name="ERR"),
        fits.ImageHDU(flags, name="DQ"),
    ]
    fits.HDUList(hdus).writeto(path)
    return path


def _des(path: Path, image, variance, flags) -> Path:
    """DES coadd layout: empty primary, SCI, MSK, WGT (inverse variance, 0: no data)."""
    with np.errstate(divide="ignore"):
        weight = np.where(variance > 0, np.float32(1.0) / variance, np.float32(0.0))
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(image, header=wcs_header(), name="SCI"),
        fits.ImageHDU(flags.astype(np.int32), name="MSK"),
        fits.ImageHDU(weight.astype(np.float32), name="WGT"),
    ]
    fits.HDUList(hdus).writeto(path)
    return path


LAYOUTS = {"HST": (_hst, 1, 2, "rms", 3, "DQ"), "DES": (_des, 1, 3, "weight", 2, "MSK")}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_survey_layouts_give_the_variance_of_an_explicit_variance_hdu_and_their_mask(
    tmp_path, layout
):
    build, image_hdu, noise_hdu, kind, mask_hdu, mask_name = LAYOUTS[layout]
    image = noisy_image()
    variance, flags = _noise_and_flags()
    path = build(tmp_path / f"{layout}.fits", image, variance, flags)
    info = inspect_fits_mosaic(path)
    assert (info.image_hdu, info.noise_hdu, info.noise_kind) == (image_hdu, noise_hdu, kind)
    assert (info.mask.hdu, info.mask.extname) == (mask_hdu, mask_name)
    reference = write_fits(
        tmp_path / "reference.fits",
        image,
        wcs_header(),
        fits.ImageHDU(variance, name="VARIANCE"),
    )
    store = _ingest(path, tmp_path / "out")
    expected = _ingest(reference, tmp_path / "reference")
    stored = zarr.open_group(tmp_path / "out" / MOSAIC_STORE, mode="r")
    wanted = zarr.open_group(tmp_path / "reference" / MOSAIC_STORE, mode="r")
    np.testing.assert_array_equal(stored["variance"][...], wanted["variance"][...])
    np.testing.assert_array_equal(store.read_image(), expected.read_image())
    assert np.isnan(store.read_image()[40:50, 60:90]).all()  # weight or rms 0: no data
    np.testing.assert_array_equal(stored["input_mask"][...], (flags != 0).astype(np.uint8))
    assert stored["input_mask"].shards == stored["image"].shards
    assert "input_mask" not in wanted
    assert store.attrs["noise_kind"] == kind
    assert store.attrs["n_flagged_input"] == int(np.count_nonzero(flags))
    assert store.attrs["planes"]["mask"]["source"] == f"HDU {mask_hdu} ({mask_name}) of the mosaic"
    grid = make_tile_grid(SHAPE, tile_size=100, halo=30)
    for tile in grid:
        window = store.read_window(tile)
        flagged = extract_window(flags, tile, fill_value=0) != 0
        np.testing.assert_array_equal(window.flagged, flagged)
        assert expected.read_window(tile).flagged is None


def test_mask_and_noise_planes_before_the_image_are_not_taken_for_it(tmp_path):
    image = noisy_image()
    variance, flags = _noise_and_flags()
    hdus = [
        fits.PrimaryHDU(flags, header=fits.Header({"EXTNAME": "DQ"})),
        fits.ImageHDU(np.sqrt(variance), name="ERR"),
        fits.ImageHDU(image, header=wcs_header(), name="SCI"),
    ]
    path = tmp_path / "dq_first.fits"
    fits.HDUList(hdus).writeto(path)
    info = inspect_fits_mosaic(path)
    assert (info.image_hdu, info.image_extname) == (2, "SCI")
    assert (info.noise_hdu, info.noise_kind, info.mask.hdu) == (1, "rms", 0)
    expected = np.where(variance > 0, image, np.float32(np.nan))  # rms 0: no data
    np.testing.assert_array_equal(_ingest(path, tmp_path / "out").read_image(), expected)


def test_separate_weight_rms_and_mask_files(tmp_path):
    """SWarp: image + .weight.fits (inverse variance); Euclid MER: image + RMS + FLAG."""
    image = noisy_image()
    variance, flags = _noise_and_flags()
    mosaic = write_fits(tmp_path / "coadd.fits", image, wcs_header())
    with np.errstate(divide="ignore"):
        weight = np.where(variance > 0, np.float32(1.0) / variance, np.float32(0.0))
    weight_file = write_fits(tmp_path / "coadd.weight.fits", weight.astype(np.float32))
    rms_file = write_fits(tmp_path / "coadd.rms.fits", np.sqrt(variance))
    flag_file = tmp_path / "coadd.flag.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flags.astype(np.int32), name="FLAG")]).writeto(
        flag_file
    )
    reference = write_fits(
        tmp_path / "reference.fits", image, wcs_header(), fits.ImageHDU(variance, name="VARIANCE")
    )
    _ingest(reference, tmp_path / "reference")
    wanted = zarr.open_group(tmp_path / "reference" / MOSAIC_STORE, mode="r")["variance"][...]
    plain = inspect_fits_mosaic(mosaic)
    assert plain.noise is None and plain.mask is None and plain.sha256 == plain.file_sha256
    for options, kind in (({"weight": weight_file}, "weight"), ({"rms": rms_file}, "rms")):
        info = inspect_fits_mosaic(mosaic, mask=flag_file, **options)
        assert info.noise_kind == kind and info.noise.path == next(iter(options.values()))
        assert (info.mask.path, info.mask.hdu, info.mask.extname) == (flag_file, 1, "FLAG")
        assert info.sha256 != info.file_sha256 == plain.sha256  # the files enter the checksum
        out = tmp_path / kind
        out.mkdir()
        store = ingest_mosaic(info, out, tile_size=100, background_cell=32)
        root = zarr.open_group(out / MOSAIC_STORE, mode="r")
        np.testing.assert_array_equal(root["variance"][...], wanted)
        np.testing.assert_array_equal(root["input_mask"][...], flags != 0)
        planes = store.attrs["planes"]
        assert planes["noise"]["source"] == f"file {options[kind]}, HDU 0"
        assert planes["noise"]["sha256"] == info.noise.sha256 and len(info.noise.sha256) == 64
        assert planes["mask"]["source"] == f"file {flag_file}, HDU 1 (FLAG)"
    # the same file read as another kind, or a changed file, is another input
    as_weight = inspect_fits_mosaic(mosaic, weight=rms_file).sha256
    assert as_weight != inspect_fits_mosaic(mosaic, rms=rms_file).sha256
    write_fits(tmp_path / "coadd.rms.fits.new", np.sqrt(variance) * 2).replace(rms_file)
    assert inspect_fits_mosaic(mosaic, weight=rms_file).sha256 != as_weight


def _float_dq(tmp_path, image):
    dq = fits.ImageHDU(np.zeros(SHAPE, np.float32), name="DQ")
    return [write_fits(tmp_path / "float_dq.fits", image, wcs_header(), dq)], {}


def _dq_shape(tmp_path, image):
    dq = fits.ImageHDU(np.zeros((100, 100), np.int16), name="DQ")
    return [write_fits(tmp_path / "dq.fits", image, wcs_header(), dq)], {}


def _err_shape(tmp_path, image):
    err = fits.ImageHDU(np.ones((260, 300), np.float32), name="ERR")
    return [write_fits(tmp_path / "err.fits", image, wcs_header(), err)], {}


def _weight_file_shape(tmp_path, image):
    weight = write_fits(tmp_path / "m.weight.fits", np.ones((260, 300), np.float32))
    return [weight], {"weight": weight}


def _missing_weight_file(tmp_path, image):
    return [tmp_path / "m.weight.fits"], {"weight": tmp_path / "m.weight.fits"}


def _float_mask_file(tmp_path, image):
    mask = write_fits(tmp_path / "flag.fits", np.zeros(SHAPE, np.float32))
    return [mask], {"mask": mask}


def _text_rms_file(tmp_path, image):
    rms = tmp_path / "rms.fits"
    rms.write_text("not an image\n" * 100)
    return [rms], {"rms": rms}


def _empty_mask_file(tmp_path, image):
    mask = write_fits(tmp_path / "flag.fits", None)
    return [mask], {"mask": mask}


def _weight_and_rms(tmp_path, image):
    noise = write_fits(tmp_path / "noise.fits", np.ones(SHAPE, np.float32))
    return [], {"weight": noise, "rms": noise}


BAD_PLANES = {
    # builder: (words naming the problem, words naming the fix)
    "float DQ HDU": (_float_dq, ["DQ HDU", "float32", "not integers"], ["integer image"]),
    "DQ shape": (_dq_shape, ["DQ HDU", "(100, 100)", "(300, 260)"], ["mask plane", "drop it"]),
    "ERR shape": (_err_shape, ["ERR HDU", "(260, 300)"], ["noise plane of the image's shape"]),
    "weight file shape": (
        _weight_file_shape,
        ["weight file", "(--weight)", "(260, 300)", "(300, 260)"],
        ["weight map of this mosaic"],
    ),
    "missing weight file": (_missing_weight_file, ["--weight", "does not exist"], ["check"]),
    "float mask file": (_float_mask_file, ["(--mask)", "float32", "not integers"], ["integer"]),
    "rms file not FITS": (_text_rms_file, ["not a FITS file"], ["FITS image for --rms"]),
    "mask file without pixels": (_empty_mask_file, ["(--mask)", "no image HDU"], ["FITS image"]),
    "weight and rms": (_weight_and_rms, ["--weight and --rms"], ["pass one of them"]),
}


@pytest.mark.parametrize("case", list(BAD_PLANES))
def test_bad_noise_or_mask_plane_is_one_line_naming_the_file_and_fix(tmp_path, case):
    build, problem, fix = BAD_PLANES[case]
    image = noisy_image()
    named, options = build(tmp_path, image)  # no options: the first file is the mosaic
    mosaic = write_fits(tmp_path / "mosaic.fits", image, wcs_header()) if options else named[0]
    with pytest.raises(InputError) as caught:
        inspect_fits_mosaic(mosaic, **options)
    message = str(caught.value)
    assert "\n" not in message
    for words in [*map(str, named), *problem, *fix]:
        assert words in message, f"{words!r} not in {message!r}"


# --------------------------------------------------------------------------- PSF


def test_a_large_mosaic_has_its_psf_measured_on_a_cutout_per_region(tmp_path, monkeypatch):
    from survey_seg import store
    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    config = SimulationConfig(ny=1600, nx=300, seed=5, psf_fwhm_pix=2.2, star_density=400.0)
    mosaic = write_simulation(simulate_mosaic(config), tmp_path)["mosaic"]
    info = inspect_fits_mosaic(mosaic)
    assert info.psf == {"fwhm_pix": 2.2, "source": "PSFFWHM"}
    read = []
    measure = store.estimate_psf_cutouts

    def spy(cutouts, shape, **options):
        read.extend((c.origin, c.image.shape, c.variance is not None) for c in cutouts)
        return measure(cutouts, shape, **options)

    monkeypatch.setattr(store, "estimate_psf_cutouts", spy)
    monkeypatch.setattr(store, "PSF_CUTOUT", 256)  # a "large" mosaic: over 3 x 256 rows
    estimate = store.measure_mosaic_psf(info)
    # 3 x 1 regions of 533 x 300: the central 256 x 256 of each, with the variance HDU
    assert read == [((138, 22), (256, 256), True), ((672, 22), (256, 256), True),
                    ((1205, 22), (256, 256), True)]  # fmt: skip
    assert estimate.fwhm_pix == pytest.approx(2.2, rel=0.05)
    assert [region.box for region in estimate.regions] == [
        (0, 533, 0, 300), (533, 1067, 0, 300), (1067, 1600, 0, 300)
    ]  # fmt: skip
    # the keyword comes first: nothing is measured
    monkeypatch.setattr(store, "measure_mosaic_psf", lambda info: pytest.fail("measured"))
    assert store.resolve_mosaic_psf(info) is info
    given = store.resolve_mosaic_psf(info, 3.0)
    assert given.psf_fwhm_pix == 3.0 and given.psf == {"fwhm_pix": 3.0, "source": "--psf-fwhm"}


def test_ingest_records_the_resolved_psf(good_mosaic, tmp_path):
    from survey_seg.store import resolve_mosaic_psf

    path, _ = good_mosaic
    info = resolve_mosaic_psf(inspect_fits_mosaic(path))  # 6 blobs on noise: no star to measure
    assert info.psf_fwhm_pix is None
    assert info.psf["source"] == "none" and info.psf["n_stars"] < info.psf["min_stars"]
    store = _ingest(path, tmp_path)
    assert store.attrs["psf"] is None  # not resolved: no keyword
    out = tmp_path / "resolved"
    out.mkdir()
    attrs = ingest_mosaic(info, out, tile_size=100).attrs
    assert attrs["psf_fwhm_pix"] is None and attrs["psf"] == info.psf


def test_correlated_noise_is_measured_at_ingest_and_scales_the_variance(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(5)
    kernel = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    scales = {}
    for name, noise in (
        ("white", rng.normal(0.0, 1.0, SHAPE)),
        ("drizzled", ndimage.convolve(rng.normal(0.0, 1.0, SHAPE), kernel / np.hypot.reduce(
            kernel.ravel()))),
    ):  # fmt: skip
        path = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(noise.astype(np.float32), header=wcs_header(PSFFWHM=1.8)).writeto(path)
        store = _ingest(path, tmp_path / name)
        measured = store.attrs["noise_correlation"]
        assert measured["kernel_fwhm_pix"] == 1.8
        scales[name] = store.noise_scale
        window = store.read_window(make_tile_grid(SHAPE, tile_size=100, halo=30)[0])
        tile = make_tile_grid(SHAPE, tile_size=100, halo=30)[0]
        rms = interpolate_mesh(store.mesh.rms, 32, tile.origin, window.image.shape)
        finite = np.isfinite(window.image)
        np.testing.assert_allclose(
            window.variance[finite], (rms**2 * store.noise_scale**2)[finite], rtol=1e-5
        )
        assert window.noise_scale == store.noise_scale  # a pixel's own noise can be had back
    assert scales["white"] == pytest.approx(1.0, abs=0.05)
    assert scales["drizzled"] > 1.6  # a PSF-sized sum is ~1.9 times noisier than white noise
