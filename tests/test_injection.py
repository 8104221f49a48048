from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_seg.cli import main
from survey_seg.config import RunConfig
from survey_seg.errors import InputError, OutputError
from survey_seg.evaluate import score_catalog
from survey_seg.inject import WHOLE_KINDS, make_injection_catalog, render_window
from survey_seg.injection import (
    INJECTION_CATALOG,
    INJECTION_JSON,
    INJECTION_TABLE,
    NEGATIVE_DIR,
    run_injection,
)
from survey_seg.pipeline import _prepared_window, run_survey
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation
from survey_seg.store import MOSAIC_STORE, MosaicStore
from survey_seg.tiling import make_tile_grid

CLASSICAL = RunConfig(method="classical")
SUMMARY_KEYS = {
    "psf_fwhm_pix",
    "completeness",
    "completeness_by_snr",
    "pair_recall",
    "pair_recall_by_separation",
    "pair_recall_resolved",
    "large_total",
    "large_shattered",
    "clump_completeness",
    "clump_purity",
    "spurious_fraction",
}


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """A simulated mosaic, a real run of it, then an injection run beside it."""
    root = tmp_path_factory.mktemp("injection")
    sim = simulate_mosaic(SimulationConfig(size=320, seed=12))
    mosaic = Path(write_simulation(sim, root / "sim")["mosaic"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_survey(mosaic, root / "real", CLASSICAL)
        before = {name: _tree(root / name) for name in ("sim", "real")}
        summary = run_injection(mosaic, root / "inj", CLASSICAL, seed=3, density=300.0)
    return root, mosaic, before, summary


def test_injection_summary_and_tables(injected):
    root, _, _, summary = injected
    out = root / "inj"
    assert json.loads((out / INJECTION_JSON).read_text()) == summary
    assert SUMMARY_KEYS <= set(summary)
    assert summary["psf_fwhm_pix"] == pytest.approx(1.8)  # the mosaic's PSFFWHM
    assert summary["completeness_by_snr"]["50-100"] >= 0.8
    assert summary["completeness"] >= 0.7
    assert summary["n_skipped"] == 0
    assert 0.0 <= summary["spurious_fraction"] <= 0.2
    catalog = pd.read_parquet(out / INJECTION_CATALOG)
    table = pd.read_parquet(out / INJECTION_TABLE)
    assert len(table) == len(catalog) == summary["n_injected"]
    sources = pd.read_parquet(out / "sources.parquet")
    found = table[table["matched_source_id"] >= 0]
    assert set(found["matched_source_id"]) <= set(sources["id"])
    assert not found["matched_source_id"].duplicated().any()
    pairs = table[table["kind"] == "pair"]
    assert (pairs["pair_partner_id"] >= 0).all()
    assert (out / NEGATIVE_DIR / "sources.parquet").is_file()
    whole = table[table["kind"].isin(WHOLE_KINDS) & table["recovered"]]
    assert len(whole) and (whole["n_own_sources"] >= 1).all()  # its match is its own
    assert (whole["n_own_sources"] <= whole["n_sources_in_footprint"]).all()
    assert (whole["shattered"] == (whole["n_own_sources"] > 1)).all()
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == [
        "masks.zarr", "mosaic.zarr", NEGATIVE_DIR, "tiles"
    ]  # fmt: skip


def test_sources_are_attributed_alike_whole_or_a_strip_of_rows_at_a_time(injected, monkeypatch):
    """Whose light each source is does not depend on the strips the mosaic is read in,
    peaks on a strip's edge included."""
    import survey_seg.injection as injection

    root, _, _, _ = injected
    out = root / "inj"
    catalog = pd.read_parquet(out / INJECTION_CATALOG)
    sources = pd.read_parquet(out / "sources.parquet")
    whole = injection.attribute_sources(out, catalog, sources, psf_fwhm_pix=1.8, psf_beta=3.0)
    monkeypatch.setattr(injection, "_VALID_ROWS", 37)
    strips = injection.attribute_sources(out, catalog, sources, psf_fwhm_pix=1.8, psf_beta=3.0)
    pd.testing.assert_frame_equal(strips, whole)
    assert list(whole.columns) == ["injected_fraction", "on_real_peak"]
    assert whole["on_real_peak"].any() and not whole["on_real_peak"].all()
    assert (whole["injected_fraction"] > 0.5).any()


def test_injected_snr_counts_correlated_noise_at_its_strength_on_the_psf_scale(injected):
    """On a drizzled image the per-pixel RMS understates the noise a matched filter
    sees; the injected S/N uses the RMS scaled by the mosaic's noise_scale."""
    from types import SimpleNamespace

    from survey_seg.injection import _sky_noise

    root, _, _, summary = injected
    white = SimpleNamespace(mesh=SimpleNamespace(rms=np.array([[2.0, 4.0, 3.0]])), noise_scale=1.0)
    drizzled = SimpleNamespace(mesh=white.mesh, noise_scale=1.9)
    assert _sky_noise(white) == 3.0
    assert _sky_noise(drizzled) == pytest.approx(3.0 * 1.9)
    assert summary["noise_scale"] == MosaicStore(root / "inj" / MOSAIC_STORE).noise_scale >= 1.0


def test_injection_gain_from_the_option_or_the_counts_gain_keyword(injected):
    from dataclasses import replace

    from survey_seg.injection import _injection_gain
    from survey_seg.store import inspect_fits_mosaic

    _, mosaic, _, summary = injected
    assert (summary["gain"], summary["gain_from"]) == (1500.0, "GAIN")  # simulated, in adu
    info = inspect_fits_mosaic(mosaic)
    assert _injection_gain(4.0, info) == (4.0, "--gain")
    calibrated = replace(info, flux_unit="MJy/sr")
    with pytest.warns(UserWarning, match=r"GAIN keyword \(1500\) is per raw count.*--gain"):
        assert _injection_gain(None, calibrated) == (None, "none")
    assert _injection_gain(None, replace(info, gain=None)) == (None, "none")


def test_objects_are_drawn_with_the_measured_beta_where_the_psf_was_measured(injected):
    from dataclasses import replace

    from survey_seg.injection import _injection_beta
    from survey_seg.psf import UNDERSAMPLED_BETA
    from survey_seg.store import inspect_fits_mosaic

    root, mosaic, _, summary = injected
    assert summary["psf_beta"] == 3.0  # a PSFFWHM keyword: no beta to go by
    manifest = json.loads((root / "inj" / "manifest.json").read_text())
    assert manifest["config"]["injection_psf_beta"] == 3.0
    info = inspect_fits_mosaic(mosaic)
    measured = replace(info, psf={"fwhm_pix": 0.7, "source": "measured", "beta": 2.3})
    assert _injection_beta(RunConfig(), measured) == 2.3
    assert _injection_beta(RunConfig(psf_fwhm=2.0), measured) == 3.0  # not the stars' FWHM
    width_only = replace(info, psf={"fwhm_pix": 0.5, "source": "measured", "beta": None})
    assert _injection_beta(RunConfig(), width_only) == UNDERSAMPLED_BETA


def test_injection_leaves_the_real_run_and_the_input_untouched(injected):
    root, mosaic, before, _ = injected
    assert {name: _tree(root / name) for name in ("sim", "real")} == before
    assert sorted(p.name for p in root.iterdir()) == ["inj", "real", "sim"]  # nothing outside
    with pytest.raises(OutputError, match="not a new or empty directory"):
        run_injection(mosaic, root / "real", CLASSICAL)
    assert _tree(root / "real") == before["real"]


def test_bad_density_writes_nothing(injected, tmp_path):
    _, mosaic, _, _ = injected
    with pytest.raises(InputError, match="places no object"):
        run_injection(mosaic, tmp_path / "none", CLASSICAL, density=1.0)
    assert not (tmp_path / "none").exists()
    with pytest.raises(InputError, match="fit in the valid pixels"):
        run_injection(mosaic, tmp_path / "full", CLASSICAL, density=1e6)
    assert not (tmp_path / "full").exists()
    with pytest.raises(InputError, match="drop --region"):
        run_injection(mosaic, tmp_path / "region", RunConfig(method="classical", region="tiles:0"))
    assert not (tmp_path / "region").exists()


def test_windows_get_the_objects_and_the_negative_pass_negates(injected):
    root, _, _, _ = injected
    out = root / "inj"
    store = MosaicStore(out / MOSAIC_STORE)
    grid = make_tile_grid(store.shape, tile_size=160, halo=32, wcs=store.wcs)
    tile = grid[3]
    catalog = pd.read_parquet(out / INJECTION_CATALOG)
    config = RunConfig(
        method="classical", injection_catalog=str(out / INJECTION_CATALOG), injection_psf_fwhm=1.8
    )
    window = store.read_window(tile)
    drawn, skipped = _prepared_window(window, tile, config)
    objects = render_window(catalog, tile.origin, tile.window_shape, psf_fwhm_pix=1.8).image
    assert skipped == [] and objects.sum() > 0
    np.testing.assert_allclose(drawn.image, window.image + objects, equal_nan=True)
    negated, _ = _prepared_window(window, tile, RunConfig(method="classical", negate=True))
    np.testing.assert_array_equal(negated.image, -window.image)
    np.testing.assert_array_equal(negated.background, -window.background)
    np.testing.assert_array_equal(negated.variance, window.variance)


def test_injection_psf_is_checked():
    from survey_seg.config import check_run_config

    with pytest.raises(InputError, match="injection PSF"):
        check_run_config(RunConfig(injection_catalog="x.parquet"))


def test_cli_inject(injected, tmp_path, capsys):
    _, mosaic, _, _ = injected
    out = tmp_path / "cli"
    status = main(
        ["inject", str(mosaic), "--out", str(out), "--seed", "2", "--density", "150",
         "--method", "classical", "--cluster", "serial", "--no-progress", "--no-report"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "completeness" in captured.out
    assert json.loads((out / INJECTION_JSON).read_text())["density_per_mpix"] == 150.0
    status = main(["inject", str(mosaic), "--out", str(out), "--cluster", "serial"])
    assert status == 2
    assert "not a new or empty directory" in capsys.readouterr().err


def test_catalog_of_an_ingested_mosaic_avoids_its_nan_pixels(injected):
    root, _, _, _ = injected
    store = MosaicStore(root / "inj" / MOSAIC_STORE)
    image = store.read_image()
    valid = np.isfinite(image)
    catalog = make_injection_catalog(
        store.shape, store.wcs, valid, psf_fwhm_pix=1.8, noise_sigma=1.0, seed=0
    )
    assert valid[np.rint(catalog["y"]).astype(int), np.rint(catalog["x"]).astype(int)].all()


def test_an_object_galsim_fails_to_draw_is_skipped_and_counted(injected, tmp_path, monkeypatch):
    from survey_seg import inject

    _, mosaic, _, _ = injected
    draw = inject._draw_object

    def failing(obj, *args):
        if obj.injection_id == 0:
            raise inject.galsim.GalSimFFTSizeError("too big", 99999)
        return draw(obj, *args)

    monkeypatch.setattr(inject, "_draw_object", failing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        summary = run_injection(mosaic, tmp_path / "out", CLASSICAL, density=100.0, gain=2.0)
    assert summary["n_skipped"] == 1 and summary["gain"] == 2.0
    table = pd.read_parquet(tmp_path / "out" / INJECTION_TABLE).set_index("injection_id")
    assert not table.at[0, "drawn"] and not table.at[0, "recovered"]
    assert table["drawn"].sum() == len(table) - 1
    with pytest.raises(InputError, match="gain"):
        run_injection(mosaic, tmp_path / "bad", CLASSICAL, gain=-1.0)
    assert not (tmp_path / "bad").exists()


def test_injected_snr_is_the_matched_filter_snr_of_the_drawn_object():
    from survey_seg.inject import injection_stamp_half, matched_filter_snr
    from survey_seg.simulate import mosaic_wcs

    shape = (256, 256)
    catalog = make_injection_catalog(
        shape, mosaic_wcs(shape), np.ones(shape, dtype=bool), psf_fwhm_pix=1.8,
        noise_sigma=0.01, seed=4, density_per_mpix=400.0, gain=100.0,
    )  # fmt: skip
    for obj in catalog.itertuples(index=False):
        half = injection_stamp_half(obj.half_light_radius_pix, 1.8)
        origin = (round(obj.y) - half, round(obj.x) - half)
        one = catalog[catalog["injection_id"] == obj.injection_id]
        stamp = render_window(one, origin, (2 * half + 1,) * 2, psf_fwhm_pix=1.8).image
        assert matched_filter_snr(stamp, 0.01, 100.0) == pytest.approx(obj.snr, rel=1e-3)


GALAXY_KINDS = ("sersic", "bulge_disk", "inclined_disk", "knotty", "large", "clumpy")


def test_injection_completeness_agrees_with_the_truth(tmp_path):
    """Completeness of S/N >= 10 galaxies: injected ones against a simulation's truth.

    Both count the same S/N (the matched-filter S/N of the drawn object, sky and its
    own Poisson noise with the simulation's gain) and isolated objects: injected
    singles are placed apart, so the truth galaxies compared are those without a
    neighbour within 1.5 arcsec (blended truth galaxies are pair recall's business,
    and lower the truth's completeness over all galaxies by 0.1-0.2 at the default
    blend fraction). The truth is scored by :func:`score_catalog` on a run of the
    mosaic without injection (injected objects fall on real ones and would take
    their detections). Three seeds pooled.
    """
    found = {"truth": [], "injected": []}
    for seed in (1, 2, 3):
        sim = simulate_mosaic(
            SimulationConfig(size=512, seed=seed, blend_fraction=0.0, galaxy_density=500.0)
        )
        mosaic = write_simulation(sim, tmp_path / f"sim{seed}")["mosaic"]
        out = tmp_path / f"inj{seed}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            run_injection(mosaic, out, CLASSICAL, seed=seed, density=600.0, gain=sim.config.gain)
            run_survey(mosaic, tmp_path / f"run{seed}", CLASSICAL)
        table = pd.read_parquet(out / INJECTION_TABLE)
        real = pd.read_parquet(tmp_path / f"run{seed}" / "sources.parquet")
        truth = sim.truth_sources
        isolated = truth[(truth["kind"] == "galaxy") & (truth["n_neighbours_1p5arcsec"] == 0)]
        score = score_catalog(real, isolated, pixel_scale_arcsec=sim.config.pixel_scale_arcsec)
        found["truth"].append((score.completeness * score.n_truth, score.n_truth))
        galaxies = table[table["kind"].isin(GALAXY_KINDS) & table["drawn"] & (table["snr"] >= 10)]
        found["injected"].append((galaxies["recovered"].sum(), len(galaxies)))
    truth_hits, n_truth = np.sum(found["truth"], axis=0)
    injected_hits, n_injected = np.sum(found["injected"], axis=0)
    assert n_truth >= 150 and n_injected >= 150
    assert injected_hits / n_injected == pytest.approx(truth_hits / n_truth, abs=0.03)
