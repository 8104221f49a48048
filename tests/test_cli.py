"""Tests of the ``survey-seg`` command line, as a user meets it.

A few cases run the real console entry in a subprocess; the rest call
:func:`survey_seg.cli.main` in-process, which is much faster.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from survey_seg import __version__
from survey_seg.cli import main
from survey_seg.masks import MaskBit
from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation
from survey_seg.store import OutputStore, inspect_fits_mosaic

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(
    r"^screened (\d+) tiles \((\d+) already done, (\d+) failed\) in [\d.]+ s: "
    r"\d+ sources, \d+ blended, \d+ clumps; tiles: .+$",
    re.MULTILINE,
)
FAST = [
    "--tile-size", "128", "--halo", "64", "--cluster", "serial", "--no-progress", "--no-report",
    "--method", "classical",
]  # fmt: skip


def _cli(*args) -> subprocess.CompletedProcess:
    """Run ``python -m survey_seg.cli ARGS`` as a user would."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "survey_seg.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
        check=False,
    )


def _main(capsys, *args) -> tuple[int, str, str]:
    """Run :func:`main` in-process; returns ``(status, stdout, stderr)``."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own exits (usage errors, --version)
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def _assert_one_line_error(status, stderr: str, *words: str) -> None:
    assert status == 2, stderr
    assert stderr.startswith("survey-seg: error: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, f"{word!r} not in {stderr!r}"


def _snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (and the set of its folders)."""
    snapshot = {}
    for path in sorted(directory.rglob("*")):
        key = str(path.relative_to(directory))
        snapshot[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return snapshot


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> Path:
    """A 256 x 256 simulated mosaic on disk (4 tiles of 128)."""
    directory = tmp_path_factory.mktemp("cli_sim")
    return Path(
        write_simulation(simulate_mosaic(SimulationConfig(size=256, seed=3)), directory)["mosaic"]
    )


@pytest.fixture(scope="module")
def earlier_run(mosaic, tmp_path_factory) -> Path:
    """A finished run; bad commands pointed at it with --force must leave it as it is."""
    out = tmp_path_factory.mktemp("cli_run") / "out"
    assert main(["run", str(mosaic), "--out", str(out), *FAST]) == 0
    assert (out / "manifest.json").exists()
    return out


def _header(**override) -> fits.Header:
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 150.1, 2.2
    header["CRPIX1"], header["CRPIX2"] = 150.5, 150.5
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -2.8e-5, 0.0, 0.0, 2.8e-5
    for key, value in override.items():
        header[key] = value
    return header


def _image(shape=(300, 300)) -> np.ndarray:
    return np.random.default_rng(0).normal(10.0, 1.0, shape).astype(np.float32)


def _write(path: Path, *hdus) -> Path:
    fits.HDUList(list(hdus)).writeto(path)
    return path


def _not_fits(d: Path) -> Path:
    (d / "notes.fits").write_text("a shopping list\n")
    return d / "notes.fits"


def _truncated(d: Path) -> Path:
    data = _write(d / "good.fits", fits.PrimaryHDU(_image(), _header())).read_bytes()
    (d / "cut.fits").write_bytes(data[: len(data) // 2])
    return d / "cut.fits"


def _no_image(d: Path) -> Path:
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(2))])
    return _write(d / "table.fits", fits.PrimaryHDU(), table)


def _cube(d: Path) -> Path:
    return _write(d / "cube.fits", fits.PrimaryHDU(np.stack([_image()] * 3), _header()))


def _line(d: Path) -> Path:
    return _write(d / "line.fits", fits.PrimaryHDU(_image()[0], _header()))


def _zero_size(d: Path) -> Path:
    return _write(d / "zero.fits", fits.PrimaryHDU(np.zeros((0, 300), np.float32), _header()))


def _all_inf(d: Path) -> Path:
    return _write(d / "inf.fits", fits.PrimaryHDU(np.full((300, 300), np.inf), _header()))


def _all_nan(d: Path) -> Path:
    nan = np.full((300, 300), np.nan, np.float32)
    return _write(d / "nan.fits", fits.PrimaryHDU(nan, _header()))


def _no_wcs(d: Path) -> Path:
    return _write(d / "nowcs.fits", fits.PrimaryHDU(_image()))


def _bad_projection(d: Path) -> Path:
    header = _header(CTYPE1="RA---XYZ", CTYPE2="DEC--XYZ")
    return _write(d / "xyz.fits", fits.PrimaryHDU(_image(), header))


def _text_crval(d: Path) -> Path:
    return _write(d / "crval.fits", fits.PrimaryHDU(_image(), _header(CRVAL2="two")))


def _missing(d: Path) -> Path:
    return d / "missing.fits"


BAD_MOSAICS = {
    "not FITS": (_not_fits, ["not a FITS file", "pass a FITS mosaic"]),
    "truncated": (_truncated, ["truncated", "regenerate"]),
    "no image HDU": (_no_image, ["no image HDU", "IMAGE extension"]),
    "1-D": (_line, ["1-D", "2-D plane"]),
    "3-D": (_cube, ["3-D", "2-D plane"]),
    "zero size": (_zero_size, ["zero-size", "non-empty image"]),
    "all NaN": (_all_nan, ["no finite pixel"]),
    "all inf": (_all_inf, ["no finite pixel"]),
    "no WCS": (_no_wcs, ["no celestial WCS", "add the WCS"]),
    "malformed WCS": (_bad_projection, ["malformed WCS", "XYZ", "CTYPE"]),
    "text CRVAL": (_text_crval, ["malformed WCS", "CRVAL2", "numeric"]),
    "missing": (_missing, ["does not exist", "check the path"]),
}

BAD_OPTIONS = {
    "tile larger than image": (["--tile-size", "4096"], ["larger than the image", "--tile-size"]),
    "region outside": (["--region", "cone:10,-40,0.01"], ["does not meet the mosaic footprint"]),
    "bad region syntax": (["--region", "cone:1,2"], ["cone", "3 numbers", "accepted forms"]),
    "halo too small": (["--halo", "4"], ["--halo 4", "or more"]),
    "bad integer": (["--tile-size", "big"], ["--tile-size", "invalid int value", "--help"]),
    "unknown method": (["--method", "magic"], ["--method", "invalid choice", "--help"]),
    "negative PSF": (["--psf-fwhm", "-1"], ["--psf-fwhm -1.0", "FWHM in pixels"]),
    "PSF not a number": (["--psf-fwhm", "wide"], ["--psf-fwhm", "invalid float value"]),
}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", list(BAD_MOSAICS))
def test_bad_mosaic_is_one_line_and_leaves_earlier_output(case, earlier_run, tmp_path, capsys):
    build, words = BAD_MOSAICS[case]
    before = _snapshot(earlier_run)
    status, out, err = _main(capsys, "run", build(tmp_path), "--out", earlier_run, "--force", *FAST)
    _assert_one_line_error(status, err, *words)
    assert out == ""
    assert _snapshot(earlier_run) == before


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_is_one_line_and_leaves_earlier_output(case, mosaic, earlier_run, capsys):
    options, words = BAD_OPTIONS[case]
    before = _snapshot(earlier_run)
    status, out, err = _main(
        capsys, "run", mosaic, "--out", earlier_run, "--force", *FAST, *options
    )
    _assert_one_line_error(status, err, *words)
    assert out == ""
    assert _snapshot(earlier_run) == before


def _model_copy(directory: Path, edit, name: str | None = None) -> Path:
    """A copy of a shipped model (configs and weights; default: the default model's
    config, else config ``name``) with ``edit`` applied."""
    import shutil

    from survey_seg.inference import DEFAULT_MODEL

    copy = directory / "model"
    shutil.copytree(DEFAULT_MODEL.parent, copy)
    config = json.loads((DEFAULT_MODEL.parent / (name or DEFAULT_MODEL.name)).read_text())
    edit(config, copy / config["weights"])
    path = copy / "model.json"
    path.write_text(json.dumps(config))
    return path


def _flip_last_byte(config: dict, weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


BAD_MODELS = {
    "wrong hash": (_flip_last_byte, ["sha256", "changed or corrupted", "reinstall"], None),
    "clump network's wrong hash": (  # the four-pass pair, whose clump map is a second network's
        lambda c, w: _flip_last_byte(c, w.parent / "clumps.pt"),
        ["clumps.pt has sha256", "changed or corrupted", "reinstall"],
        "screening.json",
    ),
    "unknown key": (lambda c, w: c.update(treshold=0.5), ["unknown keys", "'treshold'"], None),
    "unknown threshold": (
        lambda c, w: c["thresholds"].update(clumps=0.5),
        ["unknown thresholds keys", "'clumps'", "use only"],
        None,
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_is_one_line_and_leaves_earlier_output(
    case, mosaic, earlier_run, tmp_path, capsys
):
    edit, words, name = BAD_MODELS[case]
    model = _model_copy(tmp_path, edit, name)
    before = _snapshot(earlier_run)
    options = [*FAST[:-2], "--method", "unet", "--model", model]
    status, out, err = _main(capsys, "run", mosaic, "--out", earlier_run, "--force", *options)
    _assert_one_line_error(status, err, str(model.parent), *words)
    assert out == ""
    assert _snapshot(earlier_run) == before


@pytest.mark.parametrize("option", [["--flips", "2"], ["--model", "screening.json"]])
def test_network_option_for_the_classical_method_is_one_line(option, mosaic, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, *FAST, *option)
    _assert_one_line_error(status, err, f"{option[0]} applies to the unet method", "drop it")
    assert stdout == "" and not out.exists()


def test_integer_big_endian_data_with_inf_pixels_is_accepted(tmp_path, capsys):
    """Integer, big-endian images are converted; inf pixels become no data."""
    image = np.random.default_rng(1).normal(1000.0, 10.0, (256, 256))
    big_endian = image.astype(">i2")
    path = _write(tmp_path / "int16.fits", fits.PrimaryHDU(big_endian, _header()))
    status, stdout, err = _main(capsys, "run", path, "--out", tmp_path / "out", *FAST)
    assert status == 0, err
    assert SUMMARY.search(stdout).groups() == ("4", "0", "0")
    floats = image.astype(">f4")
    floats[10:12, 20:30] = np.inf
    path = _write(tmp_path / "inf.fits", fits.PrimaryHDU(floats, _header()))
    status, stdout, err = _main(capsys, "run", path, "--out", tmp_path / "out_inf", *FAST)
    assert status == 0, err
    mask, _ = OutputStore(tmp_path / "out_inf").read_masks()
    assert (mask[10:12, 20:30] & MaskBit.NO_DATA).all()


def test_failed_tile_exits_1_and_resume_reruns_it(mosaic, tmp_path, capsys, monkeypatch):
    from survey_seg import pipeline

    screen = pipeline.screen_tile
    attempts = []

    def poisoned(window, tile, *args, **kwargs):
        if tile.index == 2:
            attempts.append(tile.index)
            raise ValueError("bad pixels in tile 2")
        return screen(window, tile, *args, **kwargs)

    monkeypatch.setattr(pipeline, "screen_tile", poisoned)
    out = tmp_path / "out"
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, *FAST)
    assert status == 1
    assert SUMMARY.search(stdout).groups() == ("3", "0", "1")
    assert err == "survey-seg: 1 tiles failed (see tiles.parquet); rerun with --resume\n"
    assert len(attempts) == pipeline.TILE_RETRIES + 1
    monkeypatch.setattr(pipeline, "screen_tile", screen)
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, "--resume", *FAST)
    assert status == 0, err
    assert SUMMARY.search(stdout).groups() == ("1", "3", "0")


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_output_filling_up_mid_run_is_one_line_and_resume_finishes(
    error_number, mosaic, tmp_path, capsys, monkeypatch
):
    from survey_seg import store

    write = store.atomic_write_bytes
    budget = [1 + 3 * 2]  # the manifest, then two tiles of three files

    def failing_write(path, data):
        if budget[0] <= 0:
            raise OSError(error_number, os.strerror(error_number), str(path))
        budget[0] -= 1
        write(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", failing_write)
    out = tmp_path / "out"
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, *FAST)
    _assert_one_line_error(
        status, err, "cannot write to the output directory", os.strerror(error_number), "--resume"
    )
    assert stdout == ""
    finished = sorted(p.name for p in (out / "tiles").glob("*.json"))
    assert len(finished) == 2 and not list(out.rglob("*.tmp"))
    assert not (out / "run.lock").exists()
    monkeypatch.setattr(store, "atomic_write_bytes", write)
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, "--resume", *FAST)
    assert status == 0, err
    assert SUMMARY.search(stdout).groups() == ("2", "2", "0")


def test_resume_and_force_together_are_refused(mosaic, earlier_run, capsys):
    before = _snapshot(earlier_run)
    status, _, err = _main(
        capsys, "run", mosaic, "--out", earlier_run, "--resume", "--force", *FAST
    )
    _assert_one_line_error(status, err, "--resume", "--force", "pass one of them")
    assert _snapshot(earlier_run) == before


def test_second_run_without_resume_or_force_is_refused(mosaic, earlier_run, capsys):
    before = _snapshot(earlier_run)
    status, _, err = _main(capsys, "run", mosaic, "--out", earlier_run, *FAST)
    _assert_one_line_error(status, err, "already holds a run", "--resume", "--force")
    assert _snapshot(earlier_run) == before


def test_output_under_a_regular_file_is_refused(mosaic, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    status, _, err = _main(capsys, "run", mosaic, "--out", a_file / "out", *FAST)
    _assert_one_line_error(status, err, "cannot write", "--out")
    assert a_file.read_text() == "mine"
    status, _, err = _main(capsys, "run", mosaic, "--out", a_file, *FAST)
    _assert_one_line_error(status, err, "not a directory", "another --out")
    assert a_file.read_text() == "mine"


def test_unwritable_output_directory_is_refused(mosaic, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        status, _, err = _main(capsys, "run", mosaic, "--out", parent / "out", *FAST)
        _assert_one_line_error(status, err, "cannot write", "writable --out")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o700)


def test_output_directory_holding_other_files_is_refused(mosaic, tmp_path, capsys):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    status, _, err = _main(capsys, "run", mosaic, "--out", stranger, "--force", *FAST)
    _assert_one_line_error(status, err, "holds no survey-seg run", "new or empty --out")
    assert [p.name for p in stranger.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["run"],
        ["run", "mosaic.fits"],
        ["simulate", "out", "--size", "many"],
    ],
)
def test_usage_errors_are_one_line(argv, capsys):
    status, out, err = _main(capsys, *argv)
    _assert_one_line_error(status, err, "--help")
    assert out == ""


def test_bad_simulation_size_is_one_line(tmp_path, capsys):
    status, _, err = _main(capsys, "simulate", tmp_path / "sim", "--size", "-5")
    _assert_one_line_error(status, err, "size")
    assert not (tmp_path / "sim" / "mosaic.fits").exists()


@pytest.mark.parametrize(
    ("task", "weight", "named"),
    [
        ("screening", "clump", "HEAD=WEIGHT"),
        ("screening", "clump=heavy", "HEAD=WEIGHT"),
        ("screening", "clumps=2", "unknown head"),
        ("blends", "artefact=2", "does not train head 'artefact'"),
    ],
)
def test_bad_head_weight_is_one_line(task, weight, named, tmp_path, capsys):
    out = tmp_path / "train"
    status, _, err = _main(capsys, "train", task, "--out", out, "--head-weight", weight)
    _assert_one_line_error(status, err, named)
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--width", "0"), ("--depth", "-1")])
def test_bad_network_size_is_one_line(option, value, tmp_path, capsys):
    out = tmp_path / "train"
    status, _, err = _main(capsys, "train", "clumps", "--out", out, option, value)
    _assert_one_line_error(status, err, "width and depth must be positive")
    assert not out.exists()


def test_bad_crowded_density_is_one_line(tmp_path, capsys):
    out = tmp_path / "train"
    status, _, err = _main(
        capsys, "train", "screening", "--out", out, "--crowded-density", "5000", "500"
    )
    _assert_one_line_error(status, err, "crowded_density")
    assert not out.exists()


# --------------------------------------------------------------------------- good runs


def test_train_builds_the_network_size_asked_for(tmp_path, capsys):
    out = tmp_path / "train"
    status, stdout, err = _main(
        capsys, "train", "clumps", "--out", out, "--steps", "1", "--batch-size", "1",
        "--width", "4", "--depth", "2", "--no-progress",
    )  # fmt: skip
    assert status == 0, err
    assert "trained clumps" in stdout
    config = json.loads((out / "clumps.json").read_text())
    assert config["architecture"] == {"width": 4, "depth": 2, "stamp_size": 64}
    assert config["heads"] == ["clump", "segmentation"]


def test_calibrate_quality_writes_a_calibrated_model_or_names_the_missing_one(
    write_model, tmp_path, capsys
):
    from survey_seg.models.unet import UNetConfig

    status, _, err = _main(capsys, "calibrate-quality", tmp_path / "nope.json", "--out", tmp_path)
    _assert_one_line_error(status, err, "nope.json does not exist")
    model = write_model(tmp_path, config=UNetConfig(width=4, depth=2, stamp_size=64))
    status, stdout, err = _main(
        capsys, "calibrate-quality", model, "--out", tmp_path / "cal", "--scenes", "2",
        "--validation-scenes", "2", "--threads", "1",
    )  # fmt: skip
    assert status == 0, err
    assert "calibrated stamp head" in stdout and "flagged fraction: ECE" in stdout
    assert "stamp_calibration" in json.loads((tmp_path / "cal" / "tiny.json").read_text())


def test_run_force_rescreens_and_clean_replaces_an_earlier_run(mosaic, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, err = _main(capsys, "run", mosaic, "--out", out, *FAST)
    assert status == 0, err
    assert SUMMARY.search(stdout).groups() == ("4", "0", "0")
    assert f"outputs in {out}" in stdout
    assert "Traceback" not in err
    status, stdout, _ = _main(capsys, "run", mosaic, "--out", out, "--force", *FAST)
    assert status == 0
    assert "--force: screening 4 of 4 tiles again" in stdout
    assert SUMMARY.search(stdout).groups() == ("4", "0", "0")
    status, stdout, _ = _main(capsys, "run", mosaic, "--out", out, "--clean", *FAST)
    assert status == 0
    assert f"--clean: discarding the earlier run in {out}" in stdout
    assert SUMMARY.search(stdout).groups() == ("4", "0", "0")
    status, stdout, _ = _main(capsys, "run", mosaic, "--out", out, "--resume", *FAST)
    assert status == 0
    assert SUMMARY.search(stdout).groups() == ("0", "4", "0")


def test_run_force_on_a_region_keeps_the_other_tiles(mosaic, earlier_run, tmp_path, capsys):
    """The README's `run --force --region` left only the region's tiles in the catalogs."""
    import shutil

    import pandas as pd

    out = tmp_path / "out"
    shutil.copytree(earlier_run, out)
    before = {name: (out / name).read_bytes() for name in ("sources.parquet", "clumps.parquet")}
    tiles = pd.read_parquet(out / "tiles.parquet")
    mask, segmentation = OutputStore(out).read_masks()
    status, stdout, err = _main(
        capsys, "run", mosaic, "--out", out, "--force", "--region", "tiles:1", *FAST
    )
    assert status == 0, err
    assert "--force: screening 1 of 4 tiles again; the others keep their results" in stdout
    after = pd.read_parquet(out / "tiles.parquet")
    assert len(after) == len(tiles) == 4
    assert after.loc[after["run_id"] != tiles["run_id"], "tile_id"].tolist() == [1]
    for name, data in before.items():  # same input and method: the same rows, byte for byte
        assert (out / name).read_bytes() == data, name
    np.testing.assert_array_equal(OutputStore(out).read_masks()[0], mask)
    np.testing.assert_array_equal(OutputStore(out).read_masks()[1], segmentation)


def test_run_writes_the_report_unless_told_not_to(mosaic, tmp_path, capsys):
    fast = [option for option in FAST if option != "--no-report"]
    status, stdout, err = _main(capsys, "run", mosaic, "--out", tmp_path / "out", *fast)
    assert status == 0, err
    assert f"report: {tmp_path / 'out' / 'report.html'}" in stdout
    assert (tmp_path / "out" / "report.html").is_file()
    status, stdout, _ = _main(capsys, "run", mosaic, "--out", tmp_path / "quiet", *FAST)
    assert status == 0 and "report:" not in stdout
    assert not (tmp_path / "quiet" / "report.html").exists()


def test_help_and_usage_errors_load_neither_torch_nor_dask():
    """`survey-seg --help` took 5-11 s and 350 MB: it imported torch and dask."""
    code = (
        "import sys\n"
        "from survey_seg.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['run', 'x.fits'], ['inject', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'dask', 'distributed', 'zarr', 'astropy', 'pandas',\n"
        "                     'galsim')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "the following arguments are required: --out" in result.stderr


def test_zero_point_and_flux_unit(tmp_path, capsys):
    """Without MAGZERO every mag was NaN with no warning and no way to give one; the flux
    unit was 'adu' whatever BUNIT said."""
    from astropy.table import Table

    sim = simulate_mosaic(SimulationConfig(size=256, seed=5))
    paths = write_simulation(sim, tmp_path / "sim")
    with fits.open(paths["mosaic"], mode="update") as hdus:
        del hdus[0].header["MAGZERO"]
        hdus[0].header["BUNIT"] = "nanomaggy"
    status, _, err = _main(capsys, "run", paths["mosaic"], "--out", tmp_path / "a", *FAST)
    assert status == 0
    assert "no zero-point keyword (MAGZERO, MAGZP, PHOTZP" in err and "--zero-point" in err
    assert "so every mag is NaN" in err
    status, _, err = _main(
        capsys, "run", paths["mosaic"], "--out", tmp_path / "b", "--zero-point", "22.5", *FAST
    )
    assert status == 0 and "MAGZERO" not in err
    sources = Table.read(tmp_path / "b" / "sources.fits")
    positive = sources["flux"] > 0
    np.testing.assert_allclose(
        sources["mag"][positive], 22.5 - 2.5 * np.log10(sources["flux"][positive])
    )
    assert str(sources["flux"].unit) == "nanomaggy"
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["photometry"] == {
        "flux_unit": "nanomaggy", "flux_unit_from": "BUNIT",
        "zero_point": 22.5, "zero_point_from": "--zero-point",
    }  # fmt: skip
    status, _, err = _main(
        capsys, "run", paths["mosaic"], "--out", tmp_path / "c", "--zero-point", "nan", *FAST
    )
    _assert_one_line_error(status, err, "--zero-point nan is not a magnitude")
    # 2MASS and ZTF write MAGZP, ESO products PHOTZP: the mags come from them too
    with fits.open(paths["mosaic"], mode="update") as hdus:
        hdus[0].header["MAGZP"] = 19.98
    status, _, err = _main(capsys, "run", paths["mosaic"], "--out", tmp_path / "d", *FAST)
    assert status == 0 and "zero-point keyword" not in err
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["photometry"]["zero_point"] == 19.98
    assert manifest["photometry"]["zero_point_from"] == "MAGZP"


def test_run_on_a_region_screens_its_tiles(mosaic, tmp_path, capsys):
    status, stdout, err = _main(
        capsys, "run", mosaic, "--out", tmp_path / "out", "--region", "tiles:1,2", *FAST
    )
    assert status == 0, err
    assert SUMMARY.search(stdout).group(1) == "2"


def test_demo_runs_end_to_end(tmp_path, capsys):
    status, stdout, err = _main(
        capsys, "demo", tmp_path / "demo", "--size", "256", "--seed", "4", *FAST
    )
    assert status == 0, err
    assert "against the truth: completeness" in stdout
    assert (tmp_path / "demo" / "run" / "sources.parquet").exists()


# --------------------------------------------------------------------------- real console entry


def test_console_version():
    result = _cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"survey-seg {__version__}"


def test_console_simulate_then_run_then_rerun(tmp_path, mosaic):
    sim = tmp_path / "sim"
    result = _cli("simulate", sim, "--size", "256", "--seed", "3")
    assert result.returncode == 0, result.stderr
    names = {p.name for p in sim.iterdir()}
    assert {
        "mosaic.fits",
        "truth_sources.parquet",
        "truth_clumps.parquet",
        "truth_mask.fits",
    } <= names
    assert "mosaic:" in result.stdout
    assert inspect_fits_mosaic(sim / "mosaic.fits").shape == (256, 256)
    # the same seed as the in-process fixture gives the same pixels
    np.testing.assert_array_equal(fits.getdata(sim / "mosaic.fits"), fits.getdata(mosaic))

    out = tmp_path / "out"
    result = _cli("run", sim / "mosaic.fits", "--out", out, *FAST)
    assert result.returncode == 0, result.stderr
    assert SUMMARY.search(result.stdout).groups() == ("4", "0", "0")
    assert "Traceback" not in result.stderr
    for name in ("sources.parquet", "sources.fits", "tiles.parquet", "manifest.json"):
        assert (out / name).exists(), name

    before = _snapshot(out)
    result = _cli("run", sim / "mosaic.fits", "--out", out, *FAST)
    _assert_one_line_error(result.returncode, result.stderr, "--resume", "--force")
    assert _snapshot(out) == before


def test_console_bad_input_and_conflicting_flags(tmp_path, earlier_run, mosaic):
    before = _snapshot(earlier_run)
    result = _cli("run", _not_fits(tmp_path), "--out", earlier_run, "--force", *FAST)
    _assert_one_line_error(result.returncode, result.stderr, "not a FITS file")
    assert result.stdout == ""
    result = _cli("run", mosaic, "--out", earlier_run, "--resume", "--force", *FAST)
    _assert_one_line_error(result.returncode, result.stderr, "--resume", "--force")
    result = _cli("run", mosaic)
    _assert_one_line_error(result.returncode, result.stderr, "--out", "--help")
    assert _snapshot(earlier_run) == before


def test_resume_of_a_finished_run_on_a_local_cluster_shuts_down_quietly(mosaic, tmp_path, capsys):
    """`--resume` on a finished run printed dask heartbeat tracebacks and 'Worker process
    still alive ..., killing': the cluster closed while its workers still loaded torch."""
    out = tmp_path / "out"
    unet = [*FAST[:-2], "--method", "unet", "--flips", "1"]
    status, _, err = _main(capsys, "run", mosaic, "--out", out, *unet)
    assert status == 0, err
    local = [option for option in unet if option not in ("--cluster", "serial")]
    result = _cli("run", mosaic, "--out", out, "--resume", *local, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert SUMMARY.search(result.stdout).groups() == ("0", "4", "0")
    assert "still alive" not in result.stderr and "ERROR" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- noise and mask files


def _coadd(directory: Path, mosaic: Path) -> tuple[Path, np.ndarray]:
    """The image of ``mosaic`` alone (as SWarp writes a coadd), and its variance."""
    with fits.open(mosaic) as hdus:
        image = _write(directory / "coadd.fits", fits.PrimaryHDU(hdus[0].data, hdus[0].header))
        return image, hdus["VARIANCE"].data.astype(np.float32)


def test_swarp_weight_file_is_read_recorded_and_checked_on_resume(mosaic, tmp_path, capsys):
    import zarr

    image, variance = _coadd(tmp_path, mosaic)
    weight = np.float32(1.0) / variance
    weight[:, :5] = 0.0  # outside the footprint
    weight_file = _write(tmp_path / "coadd.weight.fits", fits.PrimaryHDU(weight))
    out = tmp_path / "out"
    status, stdout, err = _main(capsys, "run", image, "--out", out, *FAST, "--weight", weight_file)
    assert status == 0, err
    stored = zarr.open_group(out / "mosaic.zarr", mode="r")["variance"][...]
    with np.errstate(divide="ignore"):
        expected = np.where(weight > 0, np.float32(1.0) / weight, np.float32(np.nan))
    np.testing.assert_array_equal(stored, expected)
    mask, _ = OutputStore(out).read_masks()
    assert (mask[:, :5] & MaskBit.NO_DATA).all()
    manifest = json.loads((out / "manifest.json").read_text())
    noise = manifest["input"]["noise"]
    assert noise["source"] == f"file {weight_file.resolve()}, HDU 0"
    assert noise["kind"] == "weight" and noise["convention"].startswith("inverse variance")
    assert noise["sha256"] == hashlib.sha256(weight_file.read_bytes()).hexdigest()
    assert manifest["input"]["sha256"] != manifest["input"]["image"]["sha256"]
    assert manifest["config"]["weight_file"] == str(weight_file.resolve())
    status, stdout, err = _main(
        capsys, "run", image, "--out", out, "--resume", *FAST, "--weight", weight_file
    )
    assert status == 0, err
    assert SUMMARY.search(stdout).groups() == ("0", "4", "0")
    _write(tmp_path / "new.weight.fits", fits.PrimaryHDU(weight * 2)).replace(weight_file)
    before = _snapshot(out)
    status, stdout, err = _main(
        capsys, "run", image, "--out", out, "--resume", *FAST, "--weight", weight_file
    )
    _assert_one_line_error(status, err, "another mosaic or other parameters", "--force")
    assert _snapshot(out) == before


def test_euclid_rms_and_flag_files_screen_as_an_explicit_variance_and_mask(
    mosaic, tmp_path, capsys
):
    import pandas as pd

    image, variance = _coadd(tmp_path, mosaic)
    rms = np.sqrt(variance)
    rms_file = _write(tmp_path / "coadd.rms.fits", fits.PrimaryHDU(rms))
    flags = np.zeros(variance.shape, np.int32)
    flags[100:140, 30:34] = 8
    flag_file = _write(tmp_path / "coadd.flag.fits", fits.PrimaryHDU(flags))
    with fits.open(image) as hdus:
        reference = _write(
            tmp_path / "reference.fits",
            fits.PrimaryHDU(hdus[0].data, hdus[0].header),
            fits.ImageHDU(rms * rms, name="VARIANCE"),
            fits.ImageHDU(flags, name="FLAG"),
        )
    out = tmp_path / "out"
    options = ["--rms", rms_file, "--mask", flag_file]
    status, _, err = _main(capsys, "run", image, "--out", out, *FAST, *options)
    assert status == 0, err
    status, _, err = _main(capsys, "run", reference, "--out", tmp_path / "reference", *FAST)
    assert status == 0, err
    assert len(pd.read_parquet(out / "sources.parquet")) > 5
    for name in ("sources.parquet", "clumps.parquet"):
        expected = pd.read_parquet(tmp_path / "reference" / name)
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), expected)
    mask, segmentation = OutputStore(out).read_masks()
    expected_mask, expected_segmentation = OutputStore(tmp_path / "reference").read_masks()
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(segmentation, expected_segmentation)
    assert (mask[100:140, 30:34] & MaskBit.BAD).all()
    manifest = json.loads((out / "manifest.json").read_text())["input"]
    assert manifest["noise"]["source"] == f"file {rms_file.resolve()}, HDU 0"
    assert manifest["noise"]["convention"] == "sigma: variance = rms**2"
    assert manifest["mask"]["source"] == f"file {flag_file.resolve()}, HDU 0"


def _wrong_shape_weight(d: Path) -> list:
    return ["--weight", _write(d / "w.fits", fits.PrimaryHDU(np.ones((128, 256), np.float32)))]


def _float_mask(d: Path) -> list:
    return ["--mask", _write(d / "flag.fits", fits.PrimaryHDU(np.zeros((256, 256), np.float32)))]


BAD_PLANE_OPTIONS = {
    "missing weight file": (
        lambda d: ["--weight", d / "nowhere.weight.fits"],
        ["nowhere.weight.fits", "(--weight) does not exist", "check the path"],
    ),
    "weight of another shape": (
        _wrong_shape_weight,
        ["w.fits (--weight)", "(128, 256)", "(256, 256)", "weight map of this mosaic"],
    ),
    "float mask": (_float_mask, ["flag.fits (--mask)", "float32", "integer image"]),
    "weight and rms": (
        lambda d: ["--weight", d / "a.fits", "--rms", d / "b.fits"],
        ["--weight and --rms", "pass one of them"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_PLANE_OPTIONS))
def test_bad_weight_or_mask_file_is_one_line_and_leaves_earlier_output(
    case, mosaic, earlier_run, tmp_path, capsys
):
    build, words = BAD_PLANE_OPTIONS[case]
    before = _snapshot(earlier_run)
    status, out, err = _main(
        capsys, "run", mosaic, "--out", earlier_run, "--force", *FAST, *build(tmp_path)
    )
    _assert_one_line_error(status, err, *words)
    assert out == ""
    assert _snapshot(earlier_run) == before


def test_an_image_smaller_than_the_default_tile_runs_with_defaults(tmp_path, capsys):
    """A 496 x 682 image (as SDSS's) was refused with the default 512-pixel tiles; an
    explicit --tile-size larger than the image is still refused."""
    header = _header(CRPIX1=341.5, CRPIX2=248.5)
    mosaic = _write(tmp_path / "small.fits", fits.PrimaryHDU(_image((496, 682)), header))
    fast = [o for o in FAST if o not in ("--tile-size", "128")]
    status, stdout, err = _main(capsys, "run", mosaic, "--out", tmp_path / "a", *fast)
    assert status == 0, err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["tile_size"] == 496
    assert SUMMARY.search(stdout).group(1) == "2"
    status, stdout, err = _main(
        capsys, "run", mosaic, "--out", tmp_path / "b", *fast[:-2], "--method", "unet"
    )
    assert status == 0, err
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["tile_size"] == 496
    status, _, err = _main(
        capsys, "run", mosaic, "--out", tmp_path / "c", *fast, "--tile-size", "512"
    )
    _assert_one_line_error(status, err, "tile size 512 is larger than the image", "<= 496")


def test_a_warning_raised_by_several_runs_is_printed_once(capsys):
    from survey_seg.cli import _print_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        for message in ("no zero point", "few stars", "no zero point"):
            warnings.warn(message, stacklevel=1)
    _print_warnings(caught)
    assert capsys.readouterr().err.splitlines() == [
        "survey-seg: warning: no zero point",
        "survey-seg: warning: few stars",
    ]
