import json
import shutil

import numpy as np
import pandas as pd
import pytest

from survey_seg.errors import InputError, OutputError
from survey_seg.masks import MaskBit
from survey_seg.pipeline import OUTPUT_NAMES, RunConfig, plan_rerun, plan_run, run_survey
from survey_seg.store import OutputStore

MEASURED = ["x", "y", "ra", "dec", "x_peak", "y_peak", "flux", "flux_err", "area", "a", "b",
            "theta", "is_blended", "n_clumps", "truncated"]  # fmt: skip
IGNORED_PLANES = np.uint32(MaskBit.EDGE | MaskBit.REJECTED)


def _run(mosaic, out, **config):
    run_survey(mosaic, out, RunConfig(**{"method": "classical", **config}), clean=out.exists())
    sources = pd.read_parquet(out / "sources.parquet")
    mask, segmentation = OutputStore(out).read_masks()
    return sources, mask, segmentation


def _canonical_segmentation(segmentation, sources):
    """Segmentation relabelled by each source's peak pixel: independent of tile ids."""
    lookup = dict(zip(sources["id"], sources["y_peak"] * 100_000 + sources["x_peak"], strict=True))
    lookup[0] = 0
    ids, inverse = np.unique(segmentation, return_inverse=True)
    return np.array([lookup[i] for i in ids])[inverse].reshape(segmentation.shape)


@pytest.fixture(scope="module")
def whole_image(small_simulation, tmp_path_factory):
    _, mosaic = small_simulation
    out = tmp_path_factory.mktemp("whole") / "out"
    return _run(mosaic, out, tile_size=512, halo=64)


@pytest.mark.parametrize(("tile_size", "halo"), [(128, 64), (160, 48), (256, 96), (200, 40)])
def test_tiled_screening_equals_whole_image(
    small_simulation, whole_image, tmp_path, tile_size, halo
):
    _, mosaic = small_simulation
    sources, mask, segmentation = _run(mosaic, tmp_path / "out", tile_size=tile_size, halo=halo)
    whole_sources, whole_mask, whole_segmentation = whole_image
    assert len(whole_sources) > 30
    key = ["y_peak", "x_peak"]
    tiled = sources.sort_values(key).reset_index(drop=True)
    whole = whole_sources.sort_values(key).reset_index(drop=True)
    assert len(tiled) == len(whole)
    assert not tiled["id"].duplicated().any()
    for column in MEASURED:
        np.testing.assert_array_equal(tiled[column], whole[column], err_msg=column)
    # EDGE depends on the halo width and REJECTED on each tile's verdict
    np.testing.assert_array_equal(
        tiled["flags"] & ~IGNORED_PLANES, whole["flags"] & ~IGNORED_PLANES
    )
    # the same pixels carry the same sources, and the same planes
    np.testing.assert_array_equal(
        _canonical_segmentation(segmentation, sources),
        _canonical_segmentation(whole_segmentation, whole_sources),
    )
    np.testing.assert_array_equal(mask & ~IGNORED_PLANES, whole_mask & ~IGNORED_PLANES)
    # blend groups partition the sources alike
    groups = tiled.groupby("blend_group").size().sort_values().to_numpy()
    whole_groups = whole.groupby("blend_group").size().sort_values().to_numpy()
    np.testing.assert_array_equal(groups, whole_groups)


def test_each_object_reported_once_by_the_tile_holding_its_centroid(small_simulation, tmp_path):
    _, mosaic = small_simulation
    sources, _, segmentation = _run(mosaic, tmp_path / "out", tile_size=128, halo=64)
    col = np.floor((sources["x"] + 0.5) / 128).astype(int)
    row = np.floor((sources["y"] + 0.5) / 128).astype(int)
    np.testing.assert_array_equal(sources["tile_id"], row * 4 + col)
    np.testing.assert_array_equal(sources["id"].to_numpy() >> 32, sources["tile_id"])
    # every id in the segmentation is a reported source, and vice versa
    assert set(np.unique(segmentation)) - {0} == set(sources["id"])


def test_sky_coordinates_agree_with_astropy_on_the_full_mosaic(small_simulation, tmp_path):
    sim, mosaic = small_simulation
    sources, _, _ = _run(mosaic, tmp_path / "out", tile_size=128, halo=64)
    ra, dec = sim.wcs.all_pix2world(sources["x"], sources["y"], 0)
    np.testing.assert_allclose(sources["ra"], ra, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sources["dec"], dec, rtol=0, atol=1e-10)


def test_running_twice_gives_identical_catalogs(small_simulation, whole_image, tmp_path):
    _, mosaic = small_simulation
    first = tmp_path / "first"
    _run(mosaic, first, tile_size=256, halo=64)
    _run(mosaic, tmp_path / "second", tile_size=256, halo=64)
    for name in ("sources.parquet", "clumps.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(first / name), pd.read_parquet(tmp_path / "second" / name)
        )


def test_resume_after_interruption_skips_finished_tiles(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    config = RunConfig(method="classical", tile_size=128, halo=64)
    run_survey(mosaic, out, config)
    reference = pd.read_parquet(out / "sources.parquet")
    reference_masks = OutputStore(out).read_masks()
    # an interrupted run: five tiles never recorded, their pixels never written
    store = OutputStore(out)
    for index in (0, 5, 6, 9, 15):
        store.tile_paths(index)["record"].unlink()
        tile_slices = (slice(128 * (index // 4), 128 * (index // 4 + 1)),
                       slice(128 * (index % 4), 128 * (index % 4 + 1)))  # fmt: skip
        import zarr

        root = zarr.open_group(out / "masks.zarr", mode="r+")
        root["segmentation"][tile_slices] = 0
        root["mask"][tile_slices] = 0
    (out / "sources.parquet").unlink()
    with pytest.raises(OutputError, match="--resume"):
        plan_run(mosaic, out, config)
    summary = run_survey(mosaic, out, config, resume=True)
    assert summary.n_screened == 5
    assert summary.n_skipped == 11
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sources.parquet"), reference)
    for after, before in zip(OutputStore(out).read_masks(), reference_masks, strict=True):
        np.testing.assert_array_equal(after, before)


def test_second_run_on_a_locked_output_refuses_and_a_dead_runs_lock_is_taken_over(
    small_simulation, tmp_path
):
    import socket
    import subprocess
    import sys

    _, mosaic = small_simulation
    out = tmp_path / "out"
    config = RunConfig(method="classical", tile_size=256, halo=64)
    run_survey(mosaic, out, config)
    assert not (out / "run.lock").exists()  # a finished run lets go of its lock
    before = (out / "sources.parquet").read_bytes()
    # a live run (a real process) holds the output directory
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = {"run_id": "live", "pid": holder.pid, "host": socket.gethostname()}
    (out / "run.lock").write_text(json.dumps(lock))
    try:
        for options in ({"resume": True}, {"force": True}, {"clean": True}):
            with pytest.raises(OutputError, match=r"another survey-seg run \(live"):
                run_survey(mosaic, out, config, **options)
        assert (out / "sources.parquet").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # that run died: resuming takes its lock over and finishes
    summary = run_survey(mosaic, out, config, resume=True)
    assert summary.n_skipped == 4 and not (out / "run.lock").exists()
    assert (out / "sources.parquet").read_bytes() == before


def test_resume_refuses_other_parameters(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64))
    with pytest.raises(OutputError, match="other parameters"):
        plan_run(mosaic, out, RunConfig(method="classical", tile_size=128, halo=64), resume=True)


def test_region_screens_only_the_tiles_it_meets(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    summary = run_survey(
        mosaic, out, RunConfig(method="classical", tile_size=128, halo=64, region="tiles:1,6")
    )
    assert summary.n_screened == 2
    tiles = pd.read_parquet(out / "tiles.parquet")
    assert tiles["tile_id"].tolist() == [1, 6]
    assert set(pd.read_parquet(out / "sources.parquet")["tile_id"]) <= {1, 6}


def test_bad_input_leaves_earlier_output_untouched(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    not_fits = tmp_path / "broken.fits"
    not_fits.write_text("not a FITS file")
    with pytest.raises(InputError, match="not a FITS file"):
        run_survey(not_fits, out, RunConfig(method="classical", tile_size=256, halo=64), clean=True)
    with pytest.raises(InputError, match="larger than the image"):
        run_survey(mosaic, out, RunConfig(method="classical", tile_size=4096, halo=64), clean=True)
    with pytest.raises(InputError, match="cone"):
        run_survey(mosaic, out, RunConfig(method="classical", region="cone:1,2"), clean=True)
    with pytest.raises(InputError, match="footprint"):
        run_survey(
            mosaic, out, RunConfig(method="classical", region="cone:10,-40,0.01"), clean=True
        )
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_output_directory_rules(small_simulation, tmp_path):
    _, mosaic = small_simulation
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds no survey-seg run"):
        plan_run(mosaic, stranger)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        plan_run(mosaic, a_file)
    for options in ({"resume": True, "force": True}, {"force": True, "clean": True}):
        with pytest.raises(InputError, match="exclude each other"):
            plan_run(mosaic, tmp_path / "new", **options)


def test_links_in_the_output_directory_are_refused_and_never_followed(small_simulation, tmp_path):
    """No user-made path leads a write or a --force removal outside the output directory."""
    _, mosaic = small_simulation
    config = RunConfig(method="classical", tile_size=128, halo=64)
    out = tmp_path / "out"
    run_survey(mosaic, out, config)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    # a link among the entries a run writes: refused, by run, --force and rerun alike
    shutil.rmtree(out / "tiles")
    (out / "tiles").symlink_to(elsewhere, target_is_directory=True)
    for plan in (
        lambda: plan_run(mosaic, out, config, force=True),
        lambda: plan_run(mosaic, out, config, clean=True),
        lambda: plan_run(mosaic, out, config, resume=True),
        lambda: plan_rerun(out, "tiles:1"),
    ):
        with pytest.raises(OutputError, match=r"tiles is a symbolic link.*remove the link"):
            plan()
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]
    # a link to a file deep inside: the atomic write replaces the link, not its target
    run_survey(mosaic, tmp_path / "out2", config)
    record = tmp_path / "out2" / "tiles" / "000001.json"
    record.unlink()
    record.symlink_to(elsewhere / "keep.txt")
    run_survey(mosaic, tmp_path / "out2", config, resume=True)
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert not record.is_symlink() and json.loads(record.read_text())["status"] == "done"


def test_clean_removes_the_earlier_report(small_simulation, tmp_path):
    from survey_seg.store import REPORT_DIR, REPORT_HTML

    assert {REPORT_HTML, REPORT_DIR} <= set(OUTPUT_NAMES)
    _, mosaic = small_simulation
    config = RunConfig(method="classical", tile_size=128, halo=64)
    out = tmp_path / "out"
    run_survey(mosaic, out, config)
    (out / REPORT_HTML).write_text("<p>old run</p>")
    run_survey(mosaic, out, config, clean=True)
    assert not (out / REPORT_HTML).exists()


def test_unknown_precision_is_refused_before_any_work(small_simulation, tmp_path):
    _, mosaic = small_simulation
    with pytest.raises(InputError, match="precision 'half' is unknown"):
        plan_run(mosaic, tmp_path / "out", RunConfig(method="classical", precision="half"))
    assert not (tmp_path / "out").exists()


def test_halo_smaller_than_the_method_needs_is_refused(small_simulation, tmp_path):
    _, mosaic = small_simulation
    with pytest.raises(InputError, match="--halo"):
        plan_run(mosaic, tmp_path / "out", RunConfig(method="classical", halo=8))


def test_manifest_carries_provenance(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["input"]["sha256"] and manifest["package_version"]
    assert manifest["method"]["method"] == "classical"
    assert manifest["summary"]["n_sources"] == len(pd.read_parquet(out / "sources.parquet"))
    # FITS copies of the catalogs
    from astropy.table import Table

    assert len(Table.read(out / "sources.fits")) == manifest["summary"]["n_sources"]
    shutil.rmtree(out)


def test_paths_given_as_pathlib_paths_are_kept_as_strings(tmp_path):
    from pathlib import Path

    as_paths = RunConfig(model=Path("m.json"), mask_file=tmp_path / "flag.fits")
    as_strings = RunConfig(model="m.json", mask_file=str(tmp_path / "flag.fits"))
    assert as_paths == as_strings
    assert as_paths.result_key("0" * 64, {}) == as_strings.result_key("0" * 64, {})
    json.dumps(as_paths.__dict__)  # the manifest records the config as JSON


def test_region_rerun_touches_exactly_its_tiles(small_simulation, tmp_path):
    from survey_seg.pipeline import execute_run

    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=128, halo=64))
    sources = pd.read_parquet(out / "sources.parquet")
    tiles = pd.read_parquet(out / "tiles.parquet")
    mask, segmentation = OutputStore(out).read_masks()
    plan = plan_rerun(out, "tiles:5,6")
    assert plan.selected == (5, 6) and plan.mode == "rerun"
    summary = execute_run(plan)
    assert summary.n_screened == 2 and summary.n_skipped == 0
    after = pd.read_parquet(out / "tiles.parquet")
    changed = after["run_id"] != tiles["run_id"]
    assert after.loc[changed, "tile_id"].tolist() == [5, 6]
    # every other row and pixel is exactly as before (and the rerun tiles too: same input)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sources.parquet"), sources)
    new_mask, new_segmentation = OutputStore(out).read_masks()
    np.testing.assert_array_equal(new_mask, mask)
    np.testing.assert_array_equal(new_segmentation, segmentation)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2


def test_region_rerun_needs_an_earlier_run(tmp_path):
    with pytest.raises(OutputError, match="holds no survey-seg run"):
        plan_rerun(tmp_path, "tiles:1")


def _tile_files(out):
    return {p.name: p.read_bytes() for p in sorted((out / "tiles").iterdir())}


def test_force_with_a_region_rescreens_its_tiles_and_keeps_every_other(small_simulation, tmp_path):
    """`run --force --region` on an earlier run (a README example) used to discard every
    tile outside the region: rows, tile records and pixels."""
    from astropy.wcs.utils import pixel_to_skycoord

    from survey_seg.store import MosaicStore

    _, mosaic = small_simulation
    out = tmp_path / "out"
    config = RunConfig(method="classical", tile_size=128, halo=64)
    run_survey(mosaic, out, config)
    sources = pd.read_parquet(out / "sources.parquet")
    tiles = pd.read_parquet(out / "tiles.parquet")
    mask, segmentation = OutputStore(out).read_masks()
    files = _tile_files(out)
    centre = pixel_to_skycoord(192, 320, MosaicStore(out / "mosaic.zarr").wcs, origin=0)
    region = f"cone:{centre.ra.deg},{centre.dec.deg},0.0005"  # inside tile 9's core
    plan = plan_run(mosaic, out, RunConfig(**{**config.__dict__, "region": region}), force=True)
    assert plan.mode == "rerun" and plan.selected == (9,)
    summary = run_survey(mosaic, out, plan.config, force=True)
    assert summary.n_screened == 1 and summary.n_tiles == 1
    after = pd.read_parquet(out / "tiles.parquet")
    assert len(after) == len(tiles) == 16
    assert after.loc[after["run_id"] != tiles["run_id"], "tile_id"].tolist() == [9]
    # every other tile's files are byte for byte as they were
    after_files = _tile_files(out)
    assert {n for n in files if files[n] != after_files[n]} <= {"000009.json"}
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sources.parquet"), sources)
    new_mask, new_segmentation = OutputStore(out).read_masks()
    np.testing.assert_array_equal(new_mask, mask)
    np.testing.assert_array_equal(new_segmentation, segmentation)


def test_force_on_another_tiling_is_refused_and_names_clean(small_simulation, tmp_path):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=128, halo=64))
    before = _tile_files(out)
    with pytest.raises(OutputError, match=r"another tiling \(--tile-size 128 -> 256\).*--clean"):
        run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64), force=True)
    assert _tile_files(out) == before
    summary = run_survey(
        mosaic, out, RunConfig(method="classical", tile_size=256, halo=64), clean=True
    )
    assert summary.n_screened == 4 and len(pd.read_parquet(out / "tiles.parquet")) == 4


def test_outputs_are_readable_by_the_group_under_umask_022(small_simulation, tmp_path):
    """Every output was 0600 (mkstemp) whatever the umask."""
    import os
    import stat

    _, mosaic = small_simulation
    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64))
    finally:
        os.umask(previous)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 20
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written}
    assert {mode for mode in modes.values()} == {"0o644"}, modes


def test_fits_products_carry_units_provenance_and_the_masks(
    small_simulation, tmp_path, assert_column_metadata
):
    """sources.fits, clumps.fits and masks.fits: described, with the run's provenance."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from survey_seg import __version__
    from survey_seg.catalog import CATALOGS
    from survey_seg.masks import MaskBit

    _, mosaic = small_simulation
    out = tmp_path / "out"
    run_survey(mosaic, out, RunConfig(method="classical", tile_size=256, halo=64))
    manifest = json.loads((out / "manifest.json").read_text())
    assert "masks.fits" in OUTPUT_NAMES
    for name, columns in CATALOGS.items():
        assert_column_metadata(out / f"{name}.parquet", columns)
        if name == "tiles":
            continue
        with fits.open(out / f"{name}.fits") as hdus:
            primary = hdus[0].header
            assert primary["SSEG_VER"] == manifest["package_version"] == __version__
            assert primary["MOSAISHA"] == manifest["input"]["sha256"]
            assert primary["MOSAIC"] == manifest["input"]["path"]
            assert primary["RUN_ID"] == manifest["run_id"]
            assert primary["METHOD"] == "classical"
            assert (primary["TILESIZE"], primary["HALO"]) == (256, 64)
            header = hdus[1].header
            for index, column in enumerate(columns, start=1):
                assert header[f"TTYPE{index}"] == column.name
                assert header.get(f"TUNIT{index}") == (column.unit or None), column.name
                assert header[f"TCOMM{index}"] == column.description, column.name
    sources = pd.read_parquet(out / "sources.parquet")
    mask, segmentation = OutputStore(out).read_masks()
    with fits.open(out / "masks.fits") as hdus:
        hdus.verify("exception")
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "MASK", "SEGMENT"]  # no quality head
        assert hdus[0].header["MOSAISHA"] == manifest["input"]["sha256"]
        assert hdus["MASK"].data.dtype == np.uint32
        np.testing.assert_array_equal(hdus["MASK"].data, mask)
        np.testing.assert_array_equal(hdus["SEGMENT"].data, segmentation)
        assert hdus["MASK"].header["MSKBIT7"] == MaskBit.DETECTED.name
        for name in ("MASK", "SEGMENT"):
            ra, dec = WCS(hdus[name].header).pixel_to_world_values(sources["x"], sources["y"])
            np.testing.assert_allclose(ra, sources["ra"], rtol=0, atol=1e-8)
            np.testing.assert_allclose(dec, sources["dec"], rtol=0, atol=1e-8)
    assert len(sources) > 30
    assert set(np.unique(segmentation)) - {0} == set(sources["id"])
    shutil.rmtree(out)
    # without FITS copies, no FITS product at all
    config = RunConfig(method="classical", tile_size=256, halo=64, fits_copies=False)
    run_survey(mosaic, out, config)
    assert not list(out.glob("*.fits"))


def test_a_corrupt_manifest_is_refused_by_resume_and_force_and_discarded_by_clean(
    small_simulation, tmp_path
):
    _, mosaic = small_simulation
    out = tmp_path / "out"
    config = RunConfig(method="classical", tile_size=256, halo=64)
    run_survey(mosaic, out, config)
    (out / "manifest.json").write_text("{ half a manif")
    for options in ({"resume": True}, {"force": True}):
        with pytest.raises(OutputError, match=r"corrupt.*--clean"):
            plan_run(mosaic, out, config, **options)
    summary = run_survey(mosaic, out, config, clean=True)
    assert summary.n_screened == 4
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


@pytest.fixture(scope="module")
def survey_layouts(tmp_path_factory):
    """One simulated 256 x 256 mosaic written in the layouts of real surveys.

    Its variance is rounded to powers of 4, so that it is exact as sigma (ERR) and
    as weight (WGT). Returns the paths (``hst``: SCI, ERR, DQ; ``des``: SCI, MSK,
    WGT; ``reference``: the image with an explicit VARIANCE HDU and a MASK HDU;
    ``plain``: image and VARIANCE only), the flags and the flagged source's peak.
    """
    from astropy.io import fits

    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    directory = tmp_path_factory.mktemp("layouts")
    sim = simulate_mosaic(SimulationConfig(size=256, seed=3))
    with fits.open(write_simulation(sim, directory)["mosaic"]) as hdus:
        image, header = hdus[0].data.astype(np.float32), hdus[0].header.copy()
        variance = np.float32(4.0) ** np.round(np.log(hdus[1].data) / np.log(4.0))
    variance = variance.astype(np.float32)
    truth = sim.truth_sources
    inside = truth[truth["x"].between(8, 247) & truth["y"].between(8, 247)]
    brightest = inside.loc[inside["flux"].idxmax()]
    peak = (round(brightest["y"]), round(brightest["x"]))
    flags = np.zeros(image.shape, np.int16)
    flags[peak[0] - 4 : peak[0] + 5, peak[1] - 4 : peak[1] + 5] = 4096
    flags[20:230, 150] = 1  # a hot column
    empty = fits.PrimaryHDU()

    def write(name, *hdus):
        fits.HDUList(list(hdus)).writeto(directory / name)
        return directory / name

    sci = fits.ImageHDU(image, header, name="SCI")
    paths = {
        "hst": write(
            "hst.fits",
            empty,
            sci,
            fits.ImageHDU(np.sqrt(variance), name="ERR"),
            fits.ImageHDU(flags, name="DQ"),
        ),
        "des": write(
            "des.fits",
            empty,
            sci,
            fits.ImageHDU(flags.astype(np.int32), name="MSK"),
            fits.ImageHDU(np.float32(1.0) / variance, name="WGT"),
        ),
        "reference": write(
            "reference.fits",
            fits.PrimaryHDU(image, header),
            fits.ImageHDU(variance, name="VARIANCE"),
            fits.ImageHDU(flags, name="MASK"),
        ),
        "plain": write(
            "plain.fits", fits.PrimaryHDU(image, header), fits.ImageHDU(variance, name="VARIANCE")
        ),
    }
    return paths, flags, peak


@pytest.mark.parametrize(
    ("layout", "noise", "kind", "mask"),
    [("hst", "HDU 2 (ERR)", "rms", "HDU 3 (DQ)"), ("des", "HDU 3 (WGT)", "weight", "HDU 2 (MSK)")],
)
def test_survey_layouts_screen_as_an_explicit_variance_and_their_flags_are_bad(
    survey_layouts, tmp_path, layout, noise, kind, mask
):
    paths, flags, peak = survey_layouts
    grid = {"tile_size": 128, "halo": 64}
    sources, planes, segmentation = _run(paths[layout], tmp_path / layout, **grid)
    expected, expected_planes, expected_segmentation = _run(
        paths["reference"], tmp_path / "reference", **grid
    )
    assert len(sources) > 5
    pd.testing.assert_frame_equal(sources, expected)
    np.testing.assert_array_equal(planes, expected_planes)
    np.testing.assert_array_equal(segmentation, expected_segmentation)
    flagged = flags != 0
    assert (planes[flagged] & MaskBit.BAD).all()
    assert not (planes[flagged] & MaskBit.NO_DATA).any()
    assert not segmentation[flagged].any()  # left out of detection and measurement
    _, unmasked_planes, unmasked_segmentation = _run(paths["plain"], tmp_path / "plain", **grid)
    assert unmasked_segmentation[peak] and not unmasked_planes[peak] & MaskBit.BAD
    manifest = json.loads((tmp_path / layout / "manifest.json").read_text())
    assert manifest["input"]["image"]["source"] == "HDU 1 (SCI) of the mosaic"
    assert manifest["input"]["noise"]["source"] == f"{noise} of the mosaic"
    assert manifest["input"]["noise"]["kind"] == kind
    assert manifest["input"]["mask"]["source"] == f"{mask} of the mosaic"
    assert "non-zero: BAD" in manifest["input"]["mask"]["convention"]
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())["input"]
    assert plain["mask"] == {"source": "none"}


def test_a_region_rerun_reads_the_weight_and_mask_files_of_the_run(
    survey_layouts, tmp_path, monkeypatch
):
    from astropy.io import fits

    paths, flags, _ = survey_layouts
    with fits.open(paths["reference"]) as hdus:
        fits.PrimaryHDU(hdus[0].data, hdus[0].header).writeto(tmp_path / "coadd.fits")
        fits.PrimaryHDU(np.float32(1.0) / hdus[1].data).writeto(tmp_path / "coadd.weight.fits")
    fits.PrimaryHDU(flags).writeto(tmp_path / "coadd.flag.fits")
    monkeypatch.chdir(tmp_path)  # relative paths, as typed on a command line
    config = RunConfig(
        method="classical",
        tile_size=128,
        halo=64,
        weight_file="coadd.weight.fits",
        mask_file="coadd.flag.fits",
    )
    run_survey("coadd.fits", tmp_path / "out", config)
    monkeypatch.chdir(tmp_path.parent)
    plan = plan_rerun(tmp_path / "out", "tiles:0")
    assert plan.mosaic.noise.path == tmp_path / "coadd.weight.fits"
    assert plan.mosaic.mask.path == tmp_path / "coadd.flag.fits"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert plan.result_key == manifest["result_key"]
    assert manifest["config"]["weight_file"] == str(tmp_path / "coadd.weight.fits")


@pytest.fixture(scope="module")
def starry_mosaics(tmp_path_factory):
    """A star-rich simulated mosaic (PSF 2.5 pix FWHM) without PSFFWHM, and with PSFFWHM 2.2."""
    from astropy.io import fits

    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    directory = tmp_path_factory.mktemp("starry")
    config = SimulationConfig(size=512, seed=21, psf_fwhm_pix=2.5, star_density=120.0)
    mosaic = write_simulation(simulate_mosaic(config), directory)["mosaic"]
    paths = {}
    for name, keyword in (("bare", None), ("keyword", 2.2)):
        with fits.open(mosaic) as hdus:
            del hdus[0].header["PSFFWHM"]
            if keyword is not None:
                hdus[0].header["PSFFWHM"] = keyword
            paths[name] = directory / f"{name}.fits"
            hdus.writeto(paths[name])
    return paths


def test_a_mosaic_without_psf_keyword_gets_the_psf_measured_on_its_stars(
    starry_mosaics, tmp_path, recwarn
):
    from survey_seg.store import MosaicStore

    out = tmp_path / "out"
    config = RunConfig(method="classical", tile_size=256, fits_copies=False)
    run_survey(starry_mosaics["bare"], out, config)
    record = json.loads((out / "manifest.json").read_text())["input"]
    assert record["psf_fwhm_pix"] == pytest.approx(2.5, rel=0.03)
    psf = record["psf"]
    assert psf["source"] == "measured" and psf["fwhm_pix"] == record["psf_fwhm_pix"]
    assert psf["n_stars"] >= 10 and psf["beta"] == pytest.approx(3.0, rel=0.15)
    assert [region["measured"] for region in psf["regions"]] == [True]
    attrs = MosaicStore(out / "mosaic.zarr").attrs  # what the workers build the method with
    assert attrs["psf_fwhm_pix"] == record["psf_fwhm_pix"] and attrs["psf"] == psf
    assert not [w for w in recwarn if "PSF" in str(w.message)]  # the classical method has none


def test_psf_option_beats_keyword_beats_measurement(starry_mosaics, tmp_path):
    from survey_seg.pipeline import _manifest

    def planned(name, psf_fwhm=None):
        plan = plan_run(starry_mosaics[name], tmp_path / "out", RunConfig(psf_fwhm=psf_fwhm))
        psf = _manifest(plan, "run", status="running", previous=None)["input"]["psf"]
        assert plan.mosaic.psf_fwhm_pix == psf["fwhm_pix"] == plan.method_provenance["psf_fwhm_pix"]
        return psf

    measured = planned("bare")
    assert measured["source"] == "measured"
    assert measured["fwhm_pix"] == pytest.approx(2.5, rel=0.03)
    assert planned("keyword") == {"fwhm_pix": 2.2, "source": "PSFFWHM"}
    assert planned("keyword", 3.1) == {"fwhm_pix": 3.1, "source": "--psf-fwhm"}
    assert planned("bare", 3.1) == {"fwhm_pix": 3.1, "source": "--psf-fwhm"}
