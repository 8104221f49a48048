import json
import math
import os

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from scipy.spatial import cKDTree

from survey_seg.catalog import SURVEY_COLUMNS
from survey_seg.cli import main
from survey_seg.errors import InputError, OutputError
from survey_seg.hats_catalog import catalog_version_dir
from survey_seg.pipeline import RunConfig, run_survey
from survey_seg.simulate import SimulationConfig
from survey_seg.simulate_survey import SurveySimulationConfig, simulate_survey, write_survey
from survey_seg.sky_map import pixel_area_deg2
from survey_seg.survey import MosaicFootprint
from survey_seg.survey_run import (
    execute_survey,
    expand_mosaic_arguments,
    plan_survey,
    plan_survey_rerun,
    read_survey_manifest,
    run_survey_mosaics,
    update_survey_products,
)
from survey_seg.tiling import make_tile_grid, parse_region, select_tiles

FAST = ["--method", "classical", "--tile-size", "128", "--cluster", "serial", "--no-progress"]
CONFIG = RunConfig(method="classical", tile_size=128)
DENSE = SimulationConfig(galaxy_density=800.0, star_density=60.0)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Four mosaics cut from one sky: overlapping pairwise and all four at one corner."""
    survey = simulate_survey(SurveySimulationConfig(seed=1, simulation=DENSE))
    paths = write_survey(survey, tmp_path_factory.mktemp("survey_sim"))
    return survey, [paths[name] for name in "abcd"]


@pytest.fixture(scope="module")
def survey_out(simulated, tmp_path_factory):
    """The survey screened from the command line (classical, in this process)."""
    _, paths = simulated
    out = tmp_path_factory.mktemp("survey") / "out"
    assert main(["run", *map(str, paths), "--out", str(out), *FAST]) == 0
    return out


def _footprints(out):
    return [
        MosaicFootprint.from_record(m["footprint"]) for m in read_survey_manifest(out)["mosaics"]
    ]


def _survey_table(out, name):
    table = pads.dataset(out / "catalogs" / name / "dataset", format="parquet").to_table()
    frame = table.to_pandas().drop(columns=["_healpix_29"])
    return frame.sort_values(["mosaic", "id"]).reset_index(drop=True)


def _primary_rows(out, name):
    parts = []
    for mosaic in "abcd":
        table = pd.read_parquet(out / "mosaics" / mosaic / f"{name}.parquet")
        table = table[table["is_primary"]].drop(columns=["is_primary"])
        table.insert(0, "mosaic", mosaic)
        parts.append(table)
    return pd.concat(parts).sort_values(["mosaic", "id"]).reset_index(drop=True)


def _xyz(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.c_[np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]


def _chord(arcsec):
    return 2 * math.sin(math.radians(arcsec / 3600) / 2)


def _catalog_files(out):
    """Each partition file of both survey catalogs: its bytes and its inode."""
    files = {}
    for name in ("sources", "clumps"):
        version = (out / "catalogs" / name).resolve()
        for path in sorted(version.rglob("Npix=*.parquet")):
            files[f"{name}/{path.relative_to(version)}"] = (path.read_bytes(), path.stat().st_ino)
    return files


def test_each_object_is_in_the_survey_catalog_at_most_once(simulated, survey_out):
    survey, _ = simulated
    everything = pd.concat(
        pd.read_parquet(survey_out / "mosaics" / m / "sources.parquet").assign(mosaic=m)
        for m in "abcd"
    )
    catalog = _survey_table(survey_out, "sources")
    # the overlaps do report objects twice; the survey catalog does not
    tree = cKDTree(_xyz(everything["ra"], everything["dec"]))
    pairs = np.array(sorted(tree.query_pairs(_chord(0.2))))
    mosaic = everything["mosaic"].to_numpy()
    assert (mosaic[pairs[:, 0]] != mosaic[pairs[:, 1]]).sum() > 20
    tree = cKDTree(_xyz(catalog["ra"], catalog["dec"]))
    pairs = np.array(sorted(tree.query_pairs(_chord(0.2))), dtype=int).reshape(-1, 2)
    mosaic = catalog["mosaic"].to_numpy()
    assert not (mosaic[pairs[:, 0]] != mosaic[pairs[:, 1]]).any()
    truth = survey.truth_sources[survey.truth_sources["snr"] > 10]
    in_union = np.any([f.contains(truth["ra"], truth["dec"]) for f in _footprints(survey_out)], 0)
    truth = truth[in_union]
    matched = tree.query_ball_point(_xyz(truth["ra"], truth["dec"]), _chord(0.3))
    assert max(len(set(mosaic[rows])) for rows in matched) == 1
    assert np.mean([len(rows) > 0 for rows in matched]) > 0.8
    assert set(catalog["mosaic"]) == set("abcd")


def test_the_survey_catalog_is_the_union_of_the_primary_rows(survey_out, assert_column_metadata):
    for name in ("sources", "clumps"):
        pd.testing.assert_frame_equal(
            _survey_table(survey_out, name), _primary_rows(survey_out, name), check_dtype=False
        )
    sources = pd.read_parquet(survey_out / "mosaics" / "a" / "sources.parquet")
    assert 0 < sources["is_primary"].sum() < len(sources)
    assert_column_metadata(survey_out / "mosaics" / "a" / "sources.parquet", SURVEY_COLUMNS[1:])
    for mosaic in "abcd":  # a clump is primary when its host is
        directory = survey_out / "mosaics" / mosaic
        hosts = pd.read_parquet(directory / "sources.parquet").set_index("id")["is_primary"]
        clumps = pd.read_parquet(directory / "clumps.parquet")
        np.testing.assert_array_equal(clumps["is_primary"], hosts[clumps["host_id"]].to_numpy())
    tiles = pd.read_parquet(survey_out / "tiles.parquet")
    assert tiles.groupby("mosaic").size().to_dict() == {"a": 9, "b": 9, "c": 9, "d": 4}
    assert_column_metadata(survey_out / "tiles.parquet", SURVEY_COLUMNS[:1])


def test_lsdb_opens_the_catalog_and_a_cone_matches_the_primary_rows(survey_out):
    import lsdb

    ra, dec = np.mean([f.center for f in _footprints(survey_out)], axis=0)
    radius = 15.0
    catalog = lsdb.open_catalog(survey_out / "catalogs" / "sources")
    cone = catalog.cone_search(ra, dec, radius).compute()
    rows = _primary_rows(survey_out, "sources")
    points = SkyCoord(rows["ra"], rows["dec"], unit="deg")
    near = points.separation(SkyCoord(ra, dec, unit="deg")).arcsec <= radius
    assert near.sum() > 10
    got = sorted(zip(cone["mosaic"], cone["id"], strict=True))
    assert got == sorted(zip(rows["mosaic"][near], rows["id"][near], strict=True))
    assert len(set(cone["mosaic"])) == 4  # the corner all four mosaics share


def test_the_healpix_map_covers_the_union_of_footprints(survey_out):
    from astropy_healpix import HEALPix

    footprints = _footprints(survey_out)
    with fits.open(survey_out / "quality_map.fits") as hdus:
        header, data = hdus[1].header, hdus[1].data
        assert (header["PIXTYPE"], header["ORDERING"], header["COORDSYS"]) == (
            "HEALPIX",
            "NESTED",
            "C",
        )
        assert header["INDXSCHM"] == "EXPLICIT"
        order = int(np.log2(header["NSIDE"]))
        pixels, verdict = np.array(data["PIXEL"]), np.array(data["VERDICT"])
    # 128-pixel tiles of 0.1 arcsec: pixels at most half a tile wide
    healpix = HEALPix(nside=2**order, order="nested", frame="icrs")
    assert 3.0 < healpix.pixel_resolution.to_value("arcsec") <= 6.4
    # the union's area on a fine grid, each footprint tested by astropy alone
    centre = SkyCoord(*np.mean([f.center for f in footprints], axis=0), unit="deg")
    offsets = np.arange(-60.0, 60.0, 0.25) / 3600.0
    dx, dy = np.meshgrid(offsets, offsets)
    grid = centre.spherical_offsets_by(dx.ravel() * u.deg, dy.ravel() * u.deg)
    inside = np.zeros(len(grid), bool)
    for footprint in footprints:
        x, y = footprint.wcs.world_to_pixel(grid)
        ny, nx = footprint.shape
        inside |= (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    union_deg2 = inside.sum() * (0.25 / 3600) ** 2
    area = pixel_area_deg2(order)
    # pixels crossed by the union's boundary: corners not all on one side
    candidates = healpix.cone_search_skycoord(centre, 90 * u.arcsec)
    corners = healpix.boundaries_skycoord(candidates, step=1)
    corner_in = np.zeros(corners.shape, bool)
    for footprint in footprints:
        x, y = footprint.wcs.world_to_pixel(corners)
        ny, nx = footprint.shape
        corner_in |= (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    boundary = (corner_in.any(axis=1) & ~corner_in.all(axis=1)).sum()
    assert abs(len(pixels) * area - union_deg2) <= boundary * area
    covered = set(pixels.tolist())
    assert set(candidates[corner_in.all(axis=1)].tolist()) <= covered
    assert not set(candidates[~corner_in.any(axis=1)].tolist()) & covered
    # the verdict of each pixel is its tile's; the MOC is the accepted pixels
    assert set(verdict) <= {0, 1, 2}
    from mocpy import MOC

    moc = MOC.from_fits(survey_out / "accepted.moc.fits")
    assert moc.sky_fraction * 4 * math.pi * math.degrees(1) ** 2 == pytest.approx(
        (verdict == 0).sum() * area, rel=1e-9
    )


def test_resume_after_a_merge_killed_half_way_gives_identical_products(
    simulated, survey_out, tmp_path, monkeypatch
):
    import shutil

    import survey_seg.hats_catalog as hats_catalog

    _, paths = simulated
    out = tmp_path / "out"
    shutil.copytree(survey_out, out, symlinks=True)
    before = _catalog_files(out)
    version = catalog_version_dir(out / "catalogs" / "sources")
    calls = []

    def killed(link, target):
        calls.append(target)
        raise KeyboardInterrupt  # the process dies before the new version is in place

    monkeypatch.setattr(hats_catalog, "_swap_link", killed)
    with pytest.raises(KeyboardInterrupt):
        run_survey_mosaics(paths, out, CONFIG, resume=True)
    assert calls and catalog_version_dir(out / "catalogs" / "sources") == version
    assert _catalog_files(out) == before  # the previous catalog, whole
    monkeypatch.undo()
    summary = run_survey_mosaics(paths, out, CONFIG, resume=True)
    assert summary.ok and summary.n_screened == 0 and summary.n_skipped == 31
    after = _catalog_files(out)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    manifest = read_survey_manifest(out)
    assert manifest["status"] == "complete"
    # nothing changed: every partition is the previous file, linked, not rewritten
    assert all(not c["rewritten"] for c in manifest["products"]["catalogs"].values())
    assert [v[1] for v in after.values()] == [v[1] for v in before.values()]


def test_a_region_rerun_screens_exactly_the_tiles_of_each_mosaic_that_meet_it(
    simulated, survey_out, tmp_path
):
    import shutil

    _, paths = simulated
    out = tmp_path / "out"
    shutil.copytree(survey_out, out, symlinks=True)
    footprints = _footprints(out)
    ra, dec = np.mean([f.center for f in footprints], axis=0)
    region = f"cone:{ra},{dec},0.002"
    before = {m: pd.read_parquet(out / "mosaics" / m / "tiles.parquet") for m in "abcd"}
    catalogs = _catalog_files(out)
    summary = run_survey_mosaics(
        paths, out, RunConfig(method="classical", tile_size=128, region=region), force=True
    )
    for footprint in footprints:
        after = pd.read_parquet(out / "mosaics" / footprint.name / "tiles.parquet")
        grid = make_tile_grid(footprint.shape, tile_size=128, halo=64, wcs=footprint.wcs)
        expected = {tile.index for tile in select_tiles(grid, parse_region(region))}
        rerun = set(after["tile_id"][after["run_id"] == summary.run_id])
        assert rerun == expected and 0 < len(expected) < len(grid)
        kept = ~after["tile_id"].isin(expected)
        pd.testing.assert_frame_equal(
            after[kept].reset_index(drop=True),
            before[footprint.name][kept].reset_index(drop=True),
        )
    # the same screening again: every row and partition as it was, byte for byte
    assert {k: v[0] for k, v in _catalog_files(out).items()} == {
        k: v[0] for k, v in catalogs.items()
    }


def test_a_region_rerun_with_a_new_method_rewrites_only_the_partitions_that_change(
    simulated, survey_out, tmp_path
):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(survey_out, out, symlinks=True)
    footprints = _footprints(out)
    ra, dec = np.mean([f.center for f in footprints], axis=0)
    region = f"cone:{ra},{dec},0.002"
    before = _catalog_files(out)
    sources_before = _survey_table(out, "sources")
    with pytest.raises(InputError, match="sky region"):
        plan_survey_rerun(out, "tiles:0")
    with pytest.raises(OutputError, match="no survey"):
        plan_survey_rerun(tmp_path, region)
    plan = plan_survey_rerun(out, region, method="unet")
    assert plan.mode == "rerun" and all(plan.plans)  # the corner all four share
    summary = execute_survey(plan)
    assert summary.ok and summary.n_screened == sum(len(p.selected) for p in plan.plans)
    # the rows of the tiles outside the region are as they were
    sources_after = _survey_table(out, "sources")
    for mosaic_plan in plan.plans:
        name = mosaic_plan.out_dir.name
        kept_before = sources_before[
            (sources_before["mosaic"] == name)
            & ~sources_before["tile_id"].isin(mosaic_plan.selected)
        ]
        kept_after = sources_after[
            (sources_after["mosaic"] == name) & ~sources_after["tile_id"].isin(mosaic_plan.selected)
        ]
        pd.testing.assert_frame_equal(
            kept_after.reset_index(drop=True), kept_before.reset_index(drop=True)
        )
        tiles = pd.read_parquet(out / "mosaics" / name / "tiles.parquet")
        rerun = tiles["tile_id"].isin(mosaic_plan.selected)
        assert (tiles["run_id"][rerun] == summary.run_id).all()
        # the network estimates the flagged fraction, the classical method does not
        assert tiles["predicted_flagged_fraction"][rerun].notna().all()
        assert tiles["predicted_flagged_fraction"][~rerun].isna().all()
    assert not sources_after.equals(sources_before)
    # only the partitions whose rows changed are new files; the others are links
    after = _catalog_files(out)
    catalogs = read_survey_manifest(out)["products"]["catalogs"]
    rewritten = {
        key
        for key in after
        if key.startswith("sources/")
        and int(key.split("Npix=")[1].split(".")[0]) in catalogs["sources"]["rewritten"]
    }
    assert rewritten and len(rewritten) < len([k for k in after if k.startswith("sources/")])
    for key, (content, inode) in after.items():
        if key in rewritten:
            assert content != before[key][0]
        elif key.startswith("sources/"):
            assert (content, inode) == before[key]
    assert all(m["status"] == "complete" for m in read_survey_manifest(out)["mosaics"])


def test_one_mosaic_that_fails_does_not_stop_the_others_and_resume_finishes_it(
    simulated, survey_out, tmp_path, monkeypatch
):
    import survey_seg.survey_run as survey_run

    _, paths = simulated
    out = tmp_path / "out"
    prepare = survey_run.prepare_outputs

    def unreadable_c(plan, run_id):
        if plan.out_dir.name == "c":
            raise OSError("c.fits: read error (the disk went away)")
        return prepare(plan, run_id)

    monkeypatch.setattr(survey_run, "prepare_outputs", unreadable_c)
    assert main(["run", *map(str, paths), "--out", str(out), *FAST]) == 1
    manifest = read_survey_manifest(out)
    status = {m["name"]: m["status"] for m in manifest["mosaics"]}
    assert status == {"a": "complete", "b": "complete", "c": "failed", "d": "complete"}
    assert "disk went away" in manifest["mosaics"][2]["error"] and manifest["status"] == "partial"
    partial = _survey_table(out, "sources")
    assert set(partial["mosaic"]) == {"a", "b", "d"}
    # the others do not report what c is primary for
    full = _survey_table(survey_out, "sources")
    assert len(partial) == (full["mosaic"] != "c").sum()
    with pytest.raises(OutputError, match="failed mosaics"):
        plan_survey_rerun(out, "cone:0,0,1")
    monkeypatch.undo()
    assert main(["run", *map(str, paths), "--out", str(out), *FAST, "--resume"]) == 0
    assert read_survey_manifest(out)["status"] == "complete"
    for name in ("sources", "clumps"):
        pd.testing.assert_frame_equal(_survey_table(out, name), _survey_table(survey_out, name))


@pytest.mark.filterwarnings("ignore:no source was detected")  # the negated mosaic's run
def test_the_quality_map_has_the_completeness_where_injection_ran(simulated, survey_out, tmp_path):
    import shutil

    from survey_seg.inject import completeness_rows
    from survey_seg.injection import INJECTION_DIR, INJECTION_TABLE, run_injection
    from survey_seg.survey import primary_mask

    _, paths = simulated
    out = tmp_path / "out"
    shutil.copytree(survey_out, out, symlinks=True)
    catalogs = _catalog_files(out)
    run_injection(paths[0], out / "mosaics" / "a" / INJECTION_DIR, CONFIG, seed=3, density=400)
    products = update_survey_products(out)
    footprints = _footprints(out)
    with fits.open(out / "quality_map.fits") as hdus:
        data = hdus[1].data
        completeness = np.array(data["COMPLETENESS"])
        n_injected, mosaic = np.array(data["N_INJECTED"]), np.array(data["MOSAIC"])
    measured = np.isfinite(completeness)
    assert measured.any() and (mosaic[measured] == 0).all()  # only where a is primary
    assert ((completeness[measured] >= 0) & (completeness[measured] <= 1)).all()
    assert (n_injected[~measured] == 0).all() and (n_injected[measured] > 0).all()
    rows = completeness_rows(pd.read_parquet(out / "mosaics/a" / INJECTION_DIR / INJECTION_TABLE))
    rows = rows[primary_mask(rows["ra"], rows["dec"], footprints[0], footprints)]
    record = products["quality_map"]["injection"]
    assert record["n_injected"] == len(rows) > 10 and record["mosaics"] == ["a"]
    assert record["completeness"] == pytest.approx(rows["recovered"].mean())
    assert _catalog_files(out) == catalogs  # nothing else changed
    from survey_seg.survey_report import make_survey_report

    assert "completeness " in make_survey_report(out).read_text()


def test_survey_inputs_and_outputs_are_checked_before_anything_is_written(
    simulated, survey_out, small_simulation, tmp_path
):
    _, paths = simulated
    with pytest.raises(InputError, match="rename the files"):
        plan_survey([paths[0], paths[0]], tmp_path / "x", CONFIG)
    with pytest.raises(InputError, match="sky region"):
        plan_survey(paths, tmp_path / "x", RunConfig(method="classical", region="tiles:0"))
    with pytest.raises(OutputError, match="--resume"):
        plan_survey(paths, survey_out, CONFIG)
    with pytest.raises(InputError, match="every mosaic of the"):
        plan_survey(paths[:3], survey_out, CONFIG, resume=True)
    single = tmp_path / "single"
    run_survey(small_simulation[1], single, RunConfig(method="classical"))
    with pytest.raises(OutputError, match="single mosaic"):
        plan_survey(paths, single, CONFIG, resume=True)
    assert not (tmp_path / "x").exists()
    listing = tmp_path / "list.txt"
    listing.write_text(f"# the survey\n{paths[1]}\n\n{os.path.relpath(paths[0], tmp_path)}\n")
    listed, survey = expand_mosaic_arguments([f"@{listing}"])
    assert [path.resolve() for path in listed] == [paths[1], paths[0]] and survey
    pattern = str(paths[0].parent / "[ab].fits")
    assert expand_mosaic_arguments([pattern]) == (paths[:2], True)
    assert expand_mosaic_arguments([str(paths[0])]) == ([paths[0]], False)
    with pytest.raises(InputError, match="no file matches"):
        expand_mosaic_arguments([str(tmp_path / "*.fits")])


def test_the_survey_manifest_records_the_rule_and_the_mosaics(survey_out):
    manifest = json.loads((survey_out / "survey.json").read_text())
    assert "nearest" in manifest["primary_rule"]
    assert [m["name"] for m in manifest["mosaics"]] == list("abcd")
    assert all(m["status"] == "complete" for m in manifest["mosaics"])
    products = manifest["products"]
    assert products["catalogs"]["sources"]["n_rows"] == len(_survey_table(survey_out, "sources"))
    assert "string" in str(pq.read_schema(survey_out / "tiles.parquet").field("mosaic").type)


def test_the_survey_report_shows_its_mosaics_and_the_quality_map_on_the_sky(
    survey_out, tmp_path, capsys
):
    from survey_seg.survey_report import SKY_PLOT, SURVEY_REPORT, make_survey_report

    page = (survey_out / SURVEY_REPORT).read_text()
    for name in "abcd":
        assert f"<td>{name}</td>" in page
    assert SKY_PLOT in page and "HEALPix order" in page
    assert (survey_out / SKY_PLOT).read_bytes().startswith(b"\x89PNG")
    assert main(["report", str(survey_out)]) == 0
    assert f"report: {survey_out / SURVEY_REPORT}" in capsys.readouterr().out
    with pytest.raises(InputError, match=r"no survey\.json"):
        make_survey_report(tmp_path)
