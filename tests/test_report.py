"""Tests of the quick-look report."""

from __future__ import annotations

import html
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from survey_seg import report
from survey_seg.errors import OutputError
from survey_seg.masks import MaskBit
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.report import FIGURES, FULL_RESOLUTION_FIGURE, make_report
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation
from survey_seg.store import OutputStore

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


# --------------------------------------------------------------------------- issue 19: figures


@pytest.fixture(scope="module")
def rotated_run(tmp_path_factory):
    """A pure-noise 128 x 320 mosaic at Dec -45.5 whose WCS is turned by 90 degrees:
    RA runs up the image, so "RA (ICRS)" and long Dec labels stand on the left edge."""
    root = tmp_path_factory.mktemp("report_rotated")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [300.0, -45.5]
    wcs.wcs.crpix = [160.5, 64.5]
    scale = 0.1 / 3600
    wcs.wcs.cd = [[0.0, scale], [scale, 0.0]]
    image = np.random.default_rng(1).normal(0.0, 0.01, (128, 320)).astype(np.float32)
    path = root / "rotated.fits"
    fits.PrimaryHDU(image, header=wcs.to_header()).writeto(path)
    _run(path, root / "out")
    return root / "out"


@pytest.fixture(scope="module")
def simulated_report(simulated_run):
    """The report of ``simulated_run``: its page, and its full-resolution PNG read at once
    (None when there is none), before later tests rewrite the report."""
    from matplotlib.image import imread

    out, _ = simulated_run
    page = make_report(out).read_text()
    full = out / "report" / FULL_RESOLUTION_FIGURE
    return page, imread(full) if full.is_file() else None


def _caption(page, name):
    """The text of the figcaption of figure ``name``."""
    start = page.index(f"<figcaption><b>{name}</b>")
    return page[start : page.index("</figcaption>", start)]


def _mosaic_figure(out):
    run = report._Run(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run, *report._figure_mosaic(run, run.binned(2048))


def test_mosaic_caption_states_the_binning_used(simulated_run, monkeypatch):
    """A mosaic larger than the figure's panel is binned to fit it, never resampled by
    dropping pixels, and the caption gives the factor and the scale measured on the
    figure (the report used to say "full resolution" of a 2048-pixel mosaic drawn
    740 pixels wide)."""
    out, _ = simulated_run
    monkeypatch.setattr(report, "MOSAIC_PANEL_PX", (100, 100), raising=False)  # as 2048 in 780
    page = make_report(out).read_text()
    caption = _caption(page, "mosaic_mask.png")
    assert "binned 3 x 3" in caption  # ceil(256 / 100)
    assert "full resolution" not in page.split("<h2>")[0].replace(FULL_RESOLUTION_FIGURE, "")

    run, figure, scale = _mosaic_figure(out)
    ax = figure.axes[0]
    assert scale.factor == 3
    assert ax.images[0].get_array().shape == (86, 86)  # the drawn array: binned 3 x 3
    per_bin = ax.get_window_extent().width / 86
    assert per_bin >= 1.0  # enlarged, so no bin is dropped
    assert scale.png_per_bin == pytest.approx(per_bin)
    assert f"drawn on {per_bin:.3g} x {per_bin:.3g} PNG pixels" in caption
    assert f"{3 / per_bin:.3g} mosaic pixels per PNG pixel" in caption
    assert f"({3 / per_bin * run.pixel_scale:.3g} arcsec per PNG pixel)" in caption


def test_full_resolution_png(simulated_run, simulated_report):
    """mosaic_mask_full.png has one pixel per mosaic pixel, north up as in the figure,
    with the artefact planes in the figure's colours, and is linked from the page."""
    out, _ = simulated_run
    page, full = simulated_report
    assert full is not None
    assert full.shape == (256, 256, 3)
    assert f'href="report/{FULL_RESOLUTION_FIGURE}"' in page
    assert "256 x 256 PNG pixels, one per mosaic pixel" in _caption(page, "mosaic_mask.png")
    mask, _ = OutputStore(out).read_masks()
    cosmic = (mask & np.uint32(int(MaskBit.CR))) != 0
    assert cosmic.sum() > 10
    cyan = np.all(np.round(full * 255) == (0, 229, 255), axis=-1)  # CR is drawn opaque
    assert np.array_equal(cyan, cosmic[::-1])  # PNG row 0 is the mosaic's top row


def test_full_resolution_png_left_out_above_the_limit(simulated_run, monkeypatch):
    out, _ = simulated_run
    stale = out / "report" / FULL_RESOLUTION_FIGURE
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"an older report's PNG")
    monkeypatch.setattr(report, "FULL_RESOLUTION_MAX_PIXELS", 128 * 128, raising=False)
    page = make_report(out).read_text()
    assert not stale.exists()
    assert f'href="report/{FULL_RESOLUTION_FIGURE}"' not in page
    for text in (page.split("<h2>")[0], _caption(page, "mosaic_mask.png")):
        assert "o full-resolution PNG is written" in text  # "No" or "no"
        assert "65,536 pixels, more than the limit of 128 x 128 pixels" in text


def test_png_writer_streams_strips():
    import io

    from matplotlib.image import imread

    rgb = np.random.default_rng(0).integers(0, 256, (37, 11, 3), dtype=np.uint8)
    stream = io.BytesIO()
    report._write_png(stream, 11, 37, (rgb[k : k + 5] for k in range(0, 37, 5)))
    stream.seek(0)
    assert np.array_equal(np.round(imread(stream, format="png") * 255), rgb)
    with pytest.raises(ValueError, match="36 rows"):
        report._write_png(io.BytesIO(), 11, 37, [rgb[:36]])


def test_tile_ids_are_readable(simulated_run, monkeypatch):
    """Tile ids are white with a black outline, sized to the tiles on screen, and left
    out with a note when the tiles are too small to label."""
    out, _ = simulated_run
    run, figure, scale = _mosaic_figure(out)
    names = {str(t) for t in run.tiles["tile_id"]}
    ids = [t for t in figure.axes[0].texts if t.get_text() in names]
    assert sorted(t.get_text() for t in ids) == sorted(names)
    for text in ids:
        assert text.get_color() == "white"
        assert [type(e).__name__ for e in text.get_path_effects()] == ["withStroke"]
        assert text.get_fontsize() >= report.TILE_ID_MIN_POINTS
    assert scale.tile_note == ""

    monkeypatch.setattr(report, "TILE_ID_MIN_POINTS", 60.0)  # as for tiles of ~10 pixels
    _, figure, scale = _mosaic_figure(out)
    assert not [t for t in figure.axes[0].texts if t.get_text() in names]
    assert "tile ids are not drawn" in scale.tile_note


def _inside(box, width, height, slack=0.01):
    """Whether a bounding box in inches lies inside a figure (to a pixel)."""
    return box.x0 >= -slack and box.y0 >= -slack and max(box.x1 - width, box.y1 - height) <= slack


def test_labels_are_inside_the_figures_of_a_non_square_mosaic(rotated_run):
    """On a 320 x 128 mosaic in the south with RA up the image, every label of the
    mosaic and quality figures lies inside the figure, and the PNGs have a white
    margin all round (the RA label used to be cut at the left edge)."""
    from matplotlib.image import imread

    make_report(rotated_run)
    for name in ("mosaic_mask.png", "quality_map.png"):
        image = imread(rotated_run / "report" / name)[..., :3]
        edges = (image[:4], image[-4:], image[:, :4], image[:, -4:])
        frame = np.concatenate([edge.reshape(-1, 3) for edge in edges])
        assert np.all(frame == 1.0), f"{name}: something is cut at the edge"

    run = report._Run(rotated_run)
    binned = run.binned(2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        figures = [
            report._figure_mosaic(run, binned)[0],
            report._figure_quality(run, binned, {}),
        ]
    for figure in figures:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        width, height = figure.get_size_inches()
        assert _inside(figure.get_tightbbox(renderer), width, height)
        inches = figure.dpi_scale_trans.inverted()
        panels = [ax for ax in figure.axes if hasattr(ax, "coords")]
        assert panels
        for ax in panels:
            assert ax.coords[0].get_axislabel() == "RA (ICRS)"
            # the panel's tick and axis labels, the RA label on the left among them
            box = ax.get_tightbbox(renderer)
            assert box.x0 < ax.get_window_extent().x0 - 40
            assert _inside(box.transformed(inches), width, height)


def test_quality_caption_states_the_verdict_rule(simulated_run, simulated_report):
    """The verdict comes from flagged_fraction, the union of no data and artefacts, not
    from the larger of the two fractions; the tile table bears the caption out."""
    out, _ = simulated_run
    page, _ = simulated_report
    caption = _caption(page, "quality_map.png")
    assert "larger of" not in caption
    assert "flagged_fraction" in caption
    assert "no data or an artefact" in caption
    assert "never above their sum" in caption
    import pandas as pd

    tiles = pd.read_parquet(out / "tiles.parquet")
    low = np.maximum(tiles["artefact_fraction"], tiles["no_data_fraction"])
    high = tiles["artefact_fraction"] + tiles["no_data_fraction"]
    assert np.all(tiles["flagged_fraction"] >= low - 1e-12)
    assert np.all(tiles["flagged_fraction"] <= high + 1e-12)


def test_report_states_the_flux_unit_and_zero_point(simulated_run, tmp_path):
    """The report said 'adu' and 'MAGZERO' whatever the run used."""
    import json
    import shutil

    out, _ = simulated_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["photometry"] = {
        "flux_unit": "nanomaggy", "flux_unit_from": "BUNIT",
        "zero_point": 22.5, "zero_point_from": "--zero-point",
    }  # fmt: skip
    (copy / "manifest.json").write_text(json.dumps(manifest))
    page = make_report(copy).read_text()
    assert "<td>flux unit</td><td>nanomaggy</td>" in page
    assert "<td>zero point</td><td>22.5 (--zero-point)</td>" in page
    manifest["photometry"]["zero_point"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "none: mag is NaN (give --zero-point)" in make_report(copy).read_text()


@pytest.fixture(scope="module")
def injected_run(tmp_path_factory):
    """An injection run (``survey-seg inject``) of a 256 x 256 simulated mosaic."""
    from survey_seg.injection import run_injection

    root = tmp_path_factory.mktemp("report_inject")
    paths = write_simulation(simulate_mosaic(SimulationConfig(size=256, seed=3)), root / "sim")
    config = RunConfig(tile_size=128, halo=64, method="classical")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        summary = run_injection(paths["mosaic"], root / "inj", config, seed=1, density=500.0)
    return root / "inj", summary


def test_injection_section_of_an_injected_run(injected_run):
    from survey_seg import injection

    out, summary = injected_run
    assert report.INJECTION_FILES == (
        injection.INJECTION_JSON,
        injection.INJECTION_TABLE,
        injection.INJECTION_TILES,
    )
    page = make_report(out).read_text()
    assert "<h2>Injection-recovery</h2>" in page
    for name in report.INJECTION_FIGURES:
        _check_png(out / "report" / name)
        assert f'src="report/{name}"' in page
        assert html.escape(report.CAPTIONS[name][:60]) in page
    assert f"<td>n_injected</td><td>{summary['n_injected']}</td>" in page
    assert "<td>completeness_by_snr 50-100</td>" in page
    assert f"<td>psf_beta</td><td>{summary['psf_beta']:g}</td>" in page
    per_tile = pd.read_parquet(out / injection.INJECTION_TILES)
    tiles = pd.read_parquet(out / "tiles.parquet")
    assert per_tile["tile_id"].tolist() == tiles["tile_id"].tolist()
    assert per_tile["n_injected"].sum() == summary["n_injected"]
    assert per_tile["large_shattered"].sum() == summary["large_shattered"]


def test_no_injection_section_for_a_plain_run(simulated_run):
    out, _ = simulated_run
    page = make_report(out).read_text()
    assert "Injection-recovery" not in page
    assert not any((out / "report" / name).exists() for name in report.INJECTION_FIGURES)


def test_psf_row_says_the_value_and_where_it_came_from():
    measured = {
        "fwhm_pix": 2.49, "source": "measured", "n_stars": 23, "beta": 2.95, "scatter_pix": 0.02,
        "ellipticity": 0.01, "regions": [{"fwhm_pix": 2.45, "measured": True},
                                         {"fwhm_pix": 2.55, "measured": True}],
    }  # fmt: skip
    text = report._psf({"psf_fwhm_pix": 2.49, "psf": measured})
    assert text.startswith("2.49 (measured on 23 stars: Moffat beta 2.95")
    assert "2 regions 2.45 to 2.55" in text
    narrow = dict(measured, fwhm_pix=0.5, beta=None, ellipticity=None, regions=[])
    text = report._psf({"psf_fwhm_pix": 0.5, "psf": narrow})
    assert text == "0.5 (measured on 23 stars: undersampled: width only, scatter 0.02)"
    option = {"psf_fwhm_pix": 3.1, "psf": {"fwhm_pix": 3.1, "source": "--psf-fwhm"}}
    assert report._psf(option) == "3.1 (--psf-fwhm)"
    assert report._psf({"psf_fwhm_pix": 1.8}) == "1.8 (PSFFWHM)"  # a run older than the record
    none = {"psf_fwhm_pix": None, "psf": {"fwhm_pix": None, "source": "none", "n_stars": 3}}
    assert report._psf(none).startswith("none: too few isolated stars (3)")
    assert report._psf({}).startswith("none;")


def test_quality_figure_shows_the_classifiers_estimate_after_a_network_run(simulated_run):
    out, _ = simulated_run
    run = report._Run(out)
    binned = run.binned(2048)

    def panel_titles():
        figure = report._figure_quality(run, binned, {})
        return [ax.get_title() for ax in figure.axes if hasattr(ax, "coords")]

    assert run.tiles["predicted_flagged_fraction"].isna().all()  # classical: no classifier
    assert len(panel_titles()) == 3
    run.tiles["predicted_flagged_fraction"] = np.linspace(0.0, 0.3, len(run.tiles))
    titles = panel_titles()
    assert len(titles) == 4 and "Classifier" in titles[2] and titles[-1] == "Tile verdict"
