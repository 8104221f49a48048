"""Tests of the quick-look report."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from survey_seg.errors import OutputError
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.report import FIGURES, make_report
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(mosaic, out):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no source was detected", truncation
        return run_survey(mosaic, out, RunConfig(tile_size=128, halo=64, method="classical"))


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory):
    """A classical run of a 256 x 256 simulated mosaic."""
    root = tmp_path_factory.mktemp("report_sim")
    config = SimulationConfig(size=256, seed=3, n_satellite_trails=4, n_holes=8)
    paths = write_simulation(simulate_mosaic(config), root / "sim")
    summary = _run(paths["mosaic"], root / "out")
    return root / "out", summary


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """A classical run of a pure-noise mosaic with a TAN WCS: no sources."""
    root = tmp_path_factory.mktemp("report_noise")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [64.5, 64.5]
    wcs.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    image = np.random.default_rng(0).normal(0.0, 0.01, (128, 192)).astype(np.float32)
    path = root / "noise.fits"
    fits.PrimaryHDU(image, header=wcs.to_header()).writeto(path)
    _run(path, root / "out")
    return root / "out"


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, path


def test_report_writes_html_and_figures(simulated_run):
    out, summary = simulated_run
    html_path = make_report(out)
    assert html_path == out / "report.html"
    for name in FIGURES:
        _check_png(out / "report" / name)
    page = html_path.read_text()
    for name in FIGURES:
        assert f'src="report/{name}"' in page
    assert "mosaic.fits" in page
    assert f"<td>Sources</td><td>{summary.n_sources}</td>" in page
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["sha256"] in page
    assert "NO_DATA" in page and "REJECTED" in page
    assert "<script" not in page


def test_report_title_is_escaped(simulated_run):
    out, _ = simulated_run
    page = make_report(out, title="<b>A & B</b>").read_text()
    assert "&lt;b&gt;A &amp; B&lt;/b&gt;" in page
    assert "<b>A & B</b>" not in page


def test_report_decimates_large_mosaics(simulated_run):
    out, _ = simulated_run
    from matplotlib.image import imread

    make_report(out, max_pixels=2048)
    full = imread(out / "report" / "mosaic_mask.png")
    make_report(out, max_pixels=100)
    small = imread(out / "report" / "mosaic_mask.png")
    _check_png(out / "report" / "mosaic_mask.png")
    assert small.shape == full.shape  # same figure, binned image
    assert "binned 3 x 3" in (out / "report.html").read_text()


def test_binning_reads_by_strips():
    from survey_seg.report import _block_reduce

    image = np.arange(35 * 21, dtype=np.float32).reshape(35, 21)
    binned = _block_reduce(image, 4, "mean")
    assert binned.shape == (9, 6)
    assert binned[0, 0] == pytest.approx(image[:4, :4].mean())
    assert binned[-1, -1] == pytest.approx(image[32:, 20:].mean())
    mask = np.zeros((35, 21), dtype=np.uint32)
    mask[5, 6] = 8
    mask[6, 7] = 2
    reduced = _block_reduce(mask, 4, "or")
    assert reduced.dtype == np.uint32
    assert reduced[1, 1] == 10 and reduced.sum() == 10


def test_report_of_a_run_without_sources(noise_run):
    html_path = make_report(noise_run)
    for name in FIGURES:
        _check_png(noise_run / "report" / name)
    page = html_path.read_text()
    assert "<td>Sources</td><td>0</td>" in page
    assert "none" in page


def test_not_a_run_directory(tmp_path):
    with pytest.raises(OutputError, match=r"manifest\.json"):
        make_report(tmp_path)
    with pytest.raises(OutputError, match="not a directory"):
        make_report(tmp_path / "missing")


def test_unfinished_run(simulated_run, tmp_path):
    out, _ = simulated_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "tiles.parquet").unlink()
    with pytest.raises(OutputError, match=r"tiles\.parquet.*--resume"):
        make_report(copy)


def test_report_never_writes_through_a_link(noise_run, tmp_path):
    """A report.html planted as a link to a file outside the run is refused, the
    file untouched; a link planted among the figures is replaced, not followed."""
    copy = tmp_path / "copy"
    shutil.copytree(noise_run, copy)
    precious = tmp_path / "thesis.tex"
    precious.write_text("precious")
    (copy / "report.html").unlink(missing_ok=True)
    (copy / "report.html").symlink_to(precious)
    with pytest.raises(OutputError, match=r"report\.html is a symbolic link.*remove the link"):
        make_report(copy)
    (copy / "report.html").unlink()
    (copy / "report").mkdir(exist_ok=True)
    figure = copy / "report" / "histograms.png"
    figure.unlink(missing_ok=True)
    figure.symlink_to(precious)
    make_report(copy)
    assert precious.read_text() == "precious"
    assert not figure.is_symlink()
    _check_png(figure)


@pytest.mark.parametrize(("value", "error"), [(8, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_max_pixels(simulated_run, value, error):
    out, _ = simulated_run
    with pytest.raises(error, match="max_pixels"):
        make_report(out, max_pixels=value)
