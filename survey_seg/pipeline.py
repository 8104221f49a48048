"""A whole run: validate, ingest, screen every selected tile on dask, merge.

:func:`plan_run` validates all input and the output directory without writing
anything; :func:`execute_run` does the work. A bad input therefore never
touches an earlier output, even with ``clean``. The dask client is passed in by
the caller (see :mod:`survey_seg.cluster`); without one, tiles run in-process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from survey_seg import __version__
from survey_seg.config import RunConfig, check_run_config, default_halo, default_tile_size
from survey_seg.errors import InputError, OutputError
from survey_seg.merge import merge_clumps, merge_sources, tiles_table
from survey_seg.methods import make_method
from survey_seg.screen import ScreeningMethod, screen_tile
from survey_seg.store import (
    MASKS_STORE,
    MOSAIC_STORE,
    PSF_FWHM_KEY,
    REPORT_DIR,
    REPORT_HTML,
    RUN_LOCK,
    ZERO_POINT_KEYS,
    MosaicInfo,
    MosaicStore,
    OutputStore,
    WindowData,
    acquire_run_lock,
    check_lock_held_by,
    check_no_links,
    check_run_lock,
    ingest_mosaic,
    inspect_fits_mosaic,
    is_output_failure,
    output_failures,
    release_run_lock,
    resolve_mosaic_psf,
    wcs_to_attrs,
)
from survey_seg.tiling import TileGrid, make_tile_grid, parse_region, select_tiles

__all__ = [
    "RunConfig",
    "RunPlan",
    "RunSummary",
    "execute_run",
    "finish_run",
    "new_run_id",
    "pending_tiles",
    "photometry",
    "plan_rerun",
    "plan_run",
    "prepare_outputs",
    "run_survey",
    "screen_plans_tiles",
    "screen_tiles",
    "wait_for_warm_up",
    "warm_up_workers",
]

TILE_RETRIES = 2
"""Retries of a tile whose screening raised, before it is recorded as failed."""
OUTPUT_NAMES = (
    MOSAIC_STORE,
    MASKS_STORE,
    "tiles",
    "sources.parquet",
    "sources.fits",
    "clumps.parquet",
    "clumps.fits",
    "tiles.parquet",
    "masks.fits",
    "manifest.json",
    REPORT_HTML,
    REPORT_DIR,
)


@dataclass(frozen=True)
class RunPlan:
    """A validated run, ready to execute."""

    mosaic: MosaicInfo
    out_dir: Path
    config: RunConfig
    grid: TileGrid
    selected: tuple[int, ...]
    method_provenance: dict
    result_key: str
    mode: str
    """``new``, ``resume``, ``clean`` (an earlier run discarded first) or ``rerun`` (tiles
    of an earlier run screened again, the others kept)."""


@dataclass
class RunSummary:
    """What a run did."""

    out_dir: Path
    run_id: str
    n_tiles: int
    n_screened: int
    n_skipped: int
    n_failed: int
    n_sources: int
    n_blended: int
    n_clumps: int
    verdicts: dict[str, int]
    wall_seconds: float
    merge_seconds: float = 0.0
    """Of the wall time, building the global tables from the tile records."""
    ingest_seconds: float = 0.0
    """Of the wall time, copying the FITS mosaic into Zarr (0 when it was current)."""
    warnings: list[str] = field(default_factory=list)


def plan_run(
    mosaic_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    clean: bool = False,
) -> RunPlan:
    """Validate a run without writing anything.

    Parameters
    ----------
    mosaic_path : path-like
        FITS mosaic.
    out_dir : path-like
        Output directory: new, empty, or an earlier run's (with ``resume``,
        ``force`` or ``clean``).
    config : RunConfig, optional
        Run parameters.
    resume : bool
        Finish the earlier run in ``out_dir``: screen its unfinished tiles.
    force : bool
        Screen the selected tiles again (those meeting ``config.region``, else
        all) though they are finished, keeping every other tile's rows and
        pixels; the earlier run must have the same tiling.
    clean : bool
        Discard the earlier run in ``out_dir``, every tile of it, and start anew.

    Returns
    -------
    RunPlan

    Raises
    ------
    InputError, OutputError
        One-line messages naming the problem and the fix.
    """
    config = config or RunConfig()
    chosen = [flag for flag, on in (("--resume", resume), ("--force", force), ("--clean", clean))
              if on]  # fmt: skip
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} exclude each other; pass one of them")
    check_run_config(config)
    _make_method(config)  # a bad method or model is refused before the mosaic is read
    mosaic, config = _inspect_mosaic(mosaic_path, config)
    method = _make_method(config, mosaic.psf_fwhm_pix)
    alignment = getattr(method, "alignment", 1)
    if config.tile_size is None:
        config = replace(config, tile_size=default_tile_size(mosaic.shape, alignment))
    if config.halo is None:
        config = replace(config, halo=default_halo(method.halo_required, alignment))
    grid = make_tile_grid(
        mosaic.shape, tile_size=config.tile_size, halo=config.halo, wcs=mosaic.wcs
    )
    if config.halo < method.halo_required:
        raise InputError(
            f"--halo {config.halo} is smaller than the {config.method} method needs "
            f"({method.halo_required} pixels); use --halo {method.halo_required} or more"
        )
    if config.tile_size % alignment or config.halo % alignment:
        raise InputError(
            f"the {config.method} method needs --tile-size and --halo that are multiples of "
            f"{alignment}, got {config.tile_size} and {config.halo}"
        )
    if config.background_cell < 8:
        raise InputError(f"background cell {config.background_cell} is too small; use >= 8")
    if config.region:
        selected = tuple(tile.index for tile in select_tiles(grid, parse_region(config.region)))
    else:
        selected = tuple(range(len(grid)))
    provenance = method.provenance()
    key = config.result_key(mosaic.sha256, provenance)
    out = Path(out_dir)
    mode = _check_output_dir(
        out, mosaic, config, key, resume=resume, force=force, clean=clean,
        every_tile=len(selected) == len(grid),
    )  # fmt: skip
    return RunPlan(mosaic, out, config, grid, selected, provenance, key, mode)


def plan_rerun(
    out_dir: str | os.PathLike,
    region: str,
    *,
    method: str | None = None,
    model: str | None = None,
    mosaic_path: str | os.PathLike | None = None,
) -> RunPlan:
    """Validate a rerun of exactly the tiles of an earlier run that meet ``region``.

    The rerun keeps the earlier run's tiling and parameters; ``method`` and
    ``model`` may change (a new model), and the mosaic may have been
    recalibrated (it is then ingested again). Every other tile's rows and pixels
    stay as they are.

    Parameters
    ----------
    out_dir : path-like
        Output directory of an earlier run.
    region : str
        ``cone:``, ``box:`` or ``tiles:`` region.
    method, model : str, optional
        Screening method and model config (default: the earlier run's).
    mosaic_path : path-like, optional
        The mosaic (default: the path recorded in the manifest).

    Returns
    -------
    RunPlan
    """
    out = Path(out_dir)
    manifest = OutputStore(out).read_manifest() if out.is_dir() else None
    if manifest is None:
        raise OutputError(
            f"{out} holds no survey-seg run (no manifest.json); screen the mosaic first with "
            "`survey-seg run` or the reprocess flow"
        )
    check_run_lock(out)
    check_no_links(out, OUTPUT_NAMES)
    recorded = dict(manifest["config"])
    config = RunConfig.from_record(
        {
            **recorded,
            "region": region,
            "method": method or recorded["method"],
            "model": model if method or model else recorded.get("model"),
            # flips belong to the recorded network: a new method or model takes its own
            "flips": None if method or model else recorded.get("flips"),
        }
    )
    mosaic, config = _inspect_mosaic(mosaic_path or manifest["input"]["path"], config)
    grid = make_tile_grid(
        mosaic.shape, tile_size=config.tile_size, halo=config.halo, wcs=mosaic.wcs
    )
    if grid.n_rows != manifest["grid"]["n_rows"] or grid.n_cols != manifest["grid"]["n_cols"]:
        raise InputError(
            f"the mosaic {mosaic.path} no longer has the shape of the run in {out}; "
            "reprocess it into a new output directory"
        )
    method_object = _make_method(config, mosaic.psf_fwhm_pix)
    selected = tuple(tile.index for tile in select_tiles(grid, parse_region(region)))
    provenance = method_object.provenance()
    key = config.result_key(mosaic.sha256, provenance)
    return RunPlan(mosaic, out, config, grid, selected, provenance, key, "rerun")


def _inspect_mosaic(
    mosaic_path: str | os.PathLike, config: RunConfig
) -> tuple[MosaicInfo, RunConfig]:
    """The validated mosaic with its separate noise and mask files, and ``config``.

    The mosaic's PSF is the run's: ``--psf-fwhm``, else its ``PSFFWHM`` keyword,
    else measured on its stars (:func:`~survey_seg.store.resolve_mosaic_psf`).
    The returned config names those files by absolute path: the manifest records
    it, so that a rerun from another directory finds them again.
    """
    files = {
        name: os.path.abspath(path)
        for name in ("weight_file", "rms_file", "mask_file")
        if (path := getattr(config, name)) is not None
    }
    mosaic = inspect_fits_mosaic(
        mosaic_path,
        weight=files.get("weight_file"),
        rms=files.get("rms_file"),
        mask=files.get("mask_file"),
    )
    return resolve_mosaic_psf(mosaic, config.psf_fwhm), replace(config, **files)


def _check_output_dir(
    out: Path,
    mosaic: MosaicInfo,
    config: RunConfig,
    key: str,
    *,
    resume: bool,
    force: bool,
    clean: bool,
    every_tile: bool,
) -> str:
    """The plan's mode for ``out``: ``new``, ``resume``, ``rerun`` (force) or ``clean``."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory; choose another --out")
    existing = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_create_file(existing):
        raise OutputError(f"cannot write to {existing}; choose a writable --out directory")
    check_run_lock(out)
    if out.exists():
        check_no_links(out, OUTPUT_NAMES)
    if not out.exists() or not any(p.name != RUN_LOCK for p in out.iterdir()):
        return "new"
    store = OutputStore(out)
    if clean and store.manifest_path.is_file():
        return "clean"  # even when the manifest is unreadable: it is discarded
    manifest = store.read_manifest()
    if manifest is None:
        raise OutputError(
            f"{out} is not empty and holds no survey-seg run; choose a new or empty --out"
        )
    if force:
        _check_same_tiling(out, manifest, mosaic, config, every_tile=every_tile)
        return "rerun"
    if not resume:
        raise OutputError(
            f"{out} already holds a run ({manifest.get('run_id', '?')}); pass --resume to "
            "finish it, --force to screen tiles again (keeping the others' results) or "
            "--clean to discard it"
        )
    if (
        manifest.get("input", {}).get("sha256") != mosaic.sha256
        or manifest.get("result_key") != key
    ):
        raise OutputError(
            f"{out} holds a run of another mosaic or other parameters; pass --force to "
            "screen its tiles again with these, --clean to discard it, or choose another --out"
        )
    return "resume"


def _check_same_tiling(
    out: Path, manifest: dict, mosaic: MosaicInfo, config: RunConfig, *, every_tile: bool
) -> None:
    """Refuse ``--force`` when the earlier run's tiles cannot be kept beside new ones.

    The tiles must have the same cores and halos (same mosaic shape, tile size,
    halo and background cells). Unless every tile is screened again, the mosaic
    must also cover the same sky (a recalibrated mosaic may differ in its pixels).
    """
    recorded = manifest.get("config", {})
    tiling = {
        "mosaic shape": (list(manifest.get("input", {}).get("shape", [])), list(mosaic.shape)),
        "--tile-size": (recorded.get("tile_size"), config.tile_size),
        "--halo": (recorded.get("halo"), config.halo),
        "background cell": (recorded.get("background_cell"), config.background_cell),
    }
    changed = [f"{name} {old} -> {new}" for name, (old, new) in tiling.items() if old != new]
    if not changed and not every_tile and manifest.get("input", {}).get("sha256") != mosaic.sha256:
        try:
            earlier_wcs = MosaicStore(out / MOSAIC_STORE).attrs.get("wcs")
        except Exception:  # no readable ingest: its tiles cannot be matched to this mosaic
            earlier_wcs = None
        if earlier_wcs != wcs_to_attrs(mosaic.wcs):
            changed.append("the mosaic's WCS")
    if changed:
        raise OutputError(
            f"{out} holds a run of another tiling ({', '.join(changed)}), whose finished tiles "
            "--force would keep; pass --clean to discard that run and start a new one, or "
            "choose another --out"
        )


def _can_create_file(directory: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".survey-seg-write-test"):
            return True
    except OSError:
        return False


def execute_run(
    plan: RunPlan,
    *,
    client=None,
    progress: bool = False,
    run_id: str | None = None,
    before_screening: Callable[[RunPlan], None] | None = None,
) -> RunSummary:
    """Ingest, screen the plan's tiles (skipping finished ones on resume), merge.

    The composition of :func:`prepare_outputs`, :func:`pending_tiles`,
    :func:`screen_tiles` and :func:`finish_run`, which the Prefect flows call
    one by one.

    Parameters
    ----------
    plan : RunPlan
        From :func:`plan_run` or :func:`plan_rerun`.
    client : distributed.Client, optional
        Where tiles run; in this process when None.
    progress : bool
        Show a progress bar over tiles.
    run_id : str, optional
        Id recorded for the tiles this run screens; a new one by default.
    before_screening : callable, optional
        Called with the plan once the mosaic is ingested, before any tile is
        screened (an injection run writes its catalog there); what it raises ends
        the run, its lock released.

    Returns
    -------
    RunSummary
    """
    started = time.perf_counter()
    run_id = run_id or new_run_id()
    nothing_to_do = plan.mode == "resume" and not pending_tiles(plan)[0]
    warming = warm_up_workers(plan, client) if client is not None and not nothing_to_do else []
    try:
        ingest_seconds = prepare_outputs(plan, run_id)
        if before_screening is not None:
            before_screening(plan)
        todo, finished = pending_tiles(plan)
        failed = screen_tiles(plan, todo, run_id, client=client, progress=progress)
        return finish_run(
            plan,
            run_id,
            n_screened=len(todo) - len(failed),
            n_skipped=len(finished),
            n_failed=len(failed),
            started=started,
            ingest_seconds=ingest_seconds,
        )
    finally:
        wait_for_warm_up(client, warming)
        release_run_lock(plan.out_dir, run_id)


def warm_up_workers(plan: RunPlan, client) -> list:
    """Have every worker load the plan's method now, without waiting for it.

    Importing torch and loading the network take seconds per worker; started
    before the ingest, they overlap with it instead of delaying the first tiles.
    A method that fails to load fails again, with its message, in the tile tasks.

    Returns
    -------
    list of distributed.Future
        Hold them until the tiles are submitted: dask cancels a dropped future.
    """
    return [
        client.submit(
            _load_method,
            plan.config,
            workers=[worker],
            allow_other_workers=False,
            pure=False,
        )
        for worker in client.scheduler_info()["workers"]
    ]


def wait_for_warm_up(client, warming: list, timeout: float = 60.0) -> None:
    """End the warm-ups of :func:`warm_up_workers`: cancel the queued, wait for the running.

    A worker still loading torch when the cluster closes is killed by its nanny
    ("Worker process still alive ..., killing") and the scheduler logs failed
    heartbeats: a run with few or no tiles to screen ends before its warm-ups. A
    warm-up whose worker died is not waited for; an error of one is not raised.
    """
    if not warming:
        return
    client.cancel(warming)  # a queued warm-up never starts; a running one goes on
    _wait_until_stopped(client, {future.key for future in warming}, timeout=timeout)


def _load_method(config: RunConfig) -> None:
    _make_method(config)


def _make_method(config: RunConfig, mosaic_psf_fwhm: float | None = None) -> ScreeningMethod:
    """The run's screening method (loaded once per process: the weights are cached).

    Its PSF is ``config.psf_fwhm`` when given, else the mosaic's ``mosaic_psf_fwhm``
    (its ``PSFFWHM`` keyword, or measured on its stars).
    """
    return make_method(
        config.method,
        model=config.model,
        precision=config.precision,
        flips=config.flips,
        psf_fwhm_pix=config.psf_fwhm if config.psf_fwhm is not None else mosaic_psf_fwhm,
    )


def prepare_outputs(plan: RunPlan, run_id: str) -> float:
    """Make the output directory ready: discard (clean), ingest, create the masks.

    Takes the output directory's run lock first (released by :func:`finish_run`),
    then writes the manifest with status ``running``.

    Returns
    -------
    float
        Seconds spent ingesting the mosaic (0 when the store was current).
    """
    with output_failures(plan.out_dir):
        out = OutputStore(plan.out_dir)
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        acquire_run_lock(plan.out_dir, run_id)
        if plan.mode == "clean":
            _remove_outputs(plan.out_dir)
        manifest = _manifest(plan, run_id, status="running", previous=_previous(plan, out))
        out.write_manifest(manifest)
        ingest_start = time.perf_counter()
        ingested = not _ingest_is_current(plan.out_dir / MOSAIC_STORE, plan)
        if ingested:
            ingest_mosaic(
                plan.mosaic,
                plan.out_dir,
                tile_size=plan.config.tile_size,
                background_cell=plan.config.background_cell,
            )
        if plan.mode in ("new", "clean") or not (plan.out_dir / MASKS_STORE).exists():
            out.create_masks(
                plan.mosaic.shape,
                plan.config.tile_size,
                plan.mosaic.wcs,
                quality_stamp=_quality_stamp(plan),
            )
    return time.perf_counter() - ingest_start if ingested else 0.0


def pending_tiles(plan: RunPlan) -> tuple[list[int], list[int]]:
    """Split the plan's tiles into ``(to screen, already finished)``.

    A tile is finished when its record says done with the plan's result key (same
    input, parameters and model). A region rerun screens all its tiles again.
    """
    if plan.mode == "rerun":
        return list(plan.selected), []
    out = OutputStore(plan.out_dir)
    finished = [
        index
        for index in plan.selected
        if (record := out.read_tile_record(index)) is not None
        and record.get("status") == "done"
        and record.get("result_key") == plan.result_key
    ]
    done = set(finished)
    return [index for index in plan.selected if index not in done], finished


def screen_tiles(
    plan: RunPlan, tiles: list[int], run_id: str, *, client=None, progress: bool = False
) -> list[int]:
    """Screen ``tiles`` (on dask when a client is given); return the tiles that failed.

    A failed tile (after dask's retries) gets a record with status ``failed`` and
    the reason, and the others go on. A full or unwritable output directory stops
    the run at once with an :class:`~survey_seg.errors.OutputError`; the tiles
    finished before it keep their outputs.
    """
    return screen_plans_tiles([(plan, tiles)], run_id, client=client, progress=progress)[0]


def screen_plans_tiles(
    work: Sequence[tuple[RunPlan, Sequence[int]]],
    run_id: str,
    *,
    client=None,
    progress: bool = False,
) -> list[list[int]]:
    """Screen the tiles of several plans together; return each plan's failed tiles.

    All the tiles go to the cluster at once (one submission, so that the workers
    never wait for one mosaic to end before starting the next); in this process
    when ``client`` is None. Failures are handled as :func:`screen_tiles` does.

    Parameters
    ----------
    work : sequence of (RunPlan, sequence of int)
        Each plan with the tiles of it to screen (e.g. from :func:`pending_tiles`);
        every plan's output directory is prepared (:func:`prepare_outputs`) and
        locked by ``run_id``.
    run_id : str
        The run that holds every plan's lock.
    client : distributed.Client, optional
    progress : bool
        Show one progress bar over all tiles.

    Returns
    -------
    list of list of int
        The failed tiles of each plan, in the order of ``work``.
    """
    work = [(plan, [int(index) for index in tiles]) for plan, tiles in work]
    jobs = [
        (index, (str(plan.out_dir), plan.config, run_id, plan.result_key))
        for plan, tiles in work
        for index in tiles
    ]
    owners = [position for position, (_, tiles) in enumerate(work) for _ in tiles]
    failed: list[list[int]] = [[] for _ in work]
    if not jobs:
        return failed
    where = os.path.commonpath([str(plan.out_dir.resolve()) for plan, _ in work])
    with output_failures(where):
        for job, error in _run_tile_jobs(jobs, client=client, progress=progress):
            if error is None:
                continue
            if is_output_failure(error):
                raise error
            plan, index = work[owners[job]][0], jobs[job][0]
            failed[owners[job]].append(index)
            reason = f"{type(error).__name__}: {error}"
            OutputStore(plan.out_dir).write_tile_result(
                index, *_empty_tables(), _failed_record(plan, index, run_id, reason)
            )
    return failed


def finish_run(
    plan: RunPlan,
    run_id: str,
    *,
    n_screened: int,
    n_skipped: int,
    n_failed: int,
    started: float,
    ingest_seconds: float = 0.0,
) -> RunSummary:
    """Merge every finished tile into the global tables and close the manifest."""
    out = OutputStore(plan.out_dir)
    previous = _previous(plan, out)
    merge_start = time.perf_counter()
    with output_failures(plan.out_dir):
        provenance = _manifest(plan, run_id, status="running", previous=previous)
        summary = merge_run(plan, out, provenance=provenance)
        summary.merge_seconds = time.perf_counter() - merge_start
        summary.ingest_seconds = ingest_seconds
        summary.run_id = run_id
        summary.n_screened = n_screened
        summary.n_skipped = n_skipped
        summary.n_failed = n_failed
        summary.wall_seconds = time.perf_counter() - started
        status = "complete" if not n_failed else "partial"
        manifest = _manifest(plan, run_id, status=status, previous=previous, summary=summary)
        out.write_manifest(manifest)
    release_run_lock(plan.out_dir, run_id)
    return summary


def _quality_stamp(plan: RunPlan) -> int | None:
    """Native stamp side of the method's quality head, when the tiling aligns with its stamps.

    A binned screening takes its stamps from a pass over the native pixels, and an
    upsampled one pools its fine stamps back to the network's side: a stamp is the
    network's side of native pixels either way.
    """
    stamp = plan.method_provenance.get("architecture", {}).get("stamp_size")
    aligned = stamp and not plan.config.tile_size % stamp and not plan.config.halo % stamp
    return int(stamp) if aligned else None


def _previous(plan: RunPlan, out: OutputStore) -> dict | None:
    """The earlier manifest whose run history this run continues."""
    return out.read_manifest() if plan.mode in ("resume", "rerun") else None


def run_survey(
    mosaic_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    client=None,
    resume: bool = False,
    force: bool = False,
    clean: bool = False,
    progress: bool = False,
) -> RunSummary:
    """Validate, then execute a run: :func:`plan_run` followed by :func:`execute_run`."""
    plan = plan_run(mosaic_path, out_dir, config, resume=resume, force=force, clean=clean)
    return execute_run(plan, client=client, progress=progress)


def merge_run(plan: RunPlan, out: OutputStore, *, provenance: dict | None = None) -> RunSummary:
    """Build the global catalogs and the tile table from every finished tile record.

    With FITS copies, also export the masks as ``masks.fits``; ``provenance`` (the
    run manifest) is summarised in the header of every FITS product.
    """
    records, source_tables, clump_tables = [], [], []
    for index in range(len(plan.grid)):
        record = out.read_tile_record(index)
        if record is None:
            continue
        records.append(record)
        if record.get("status") == "done":
            sources, clumps = out.read_tile_tables(index)
            source_tables.append(sources)
            clump_tables.append(clumps)
    sources = merge_sources(source_tables)
    clumps = merge_clumps(clump_tables, sources)
    tiles = tiles_table(records)
    fits_copies = plan.config.fits_copies
    flux_unit = getattr(plan.mosaic, "flux_unit", None)
    for table, name in ((sources, "sources"), (clumps, "clumps")):
        out.write_table(
            table, name, fits_copy=fits_copies, flux_unit=flux_unit, provenance=provenance
        )
    out.write_table(tiles, "tiles", fits_copy=False)
    if fits_copies:
        out.write_masks_fits(provenance=provenance)
    verdicts = tiles["verdict"].value_counts().to_dict() if len(tiles) else {}
    messages = []
    n_truncated = sum(int(r.get("n_truncated", 0)) for r in records)
    if n_truncated:
        messages.append(
            f"{n_truncated} sources reach the edge of their tile window and may be cut; "
            f"rerun with a larger --halo (now {plan.config.halo})"
        )
    if not len(sources):
        messages.append("no source was detected in the screened tiles")
    if "psf_fwhm_pix" in plan.method_provenance and plan.method_provenance["psf_fwhm_pix"] is None:
        n_stars = (getattr(plan.mosaic, "psf", None) or {}).get("n_stars", 0)
        messages.append(
            f"too few isolated stars ({n_stars}) to measure the PSF, so the network's "
            "thresholds for its training PSF were used; give --psf-fwhm PIX or a "
            f"{PSF_FWHM_KEY} keyword"
        )
    if photometry(plan)["zero_point"] is None and len(sources):
        messages.append(
            f"the mosaic has no zero-point keyword ({', '.join(ZERO_POINT_KEYS)}), so every "
            "mag is NaN; give the zero point with --zero-point MAG (e.g. 22.5 for nanomaggies)"
        )
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return RunSummary(
        out_dir=plan.out_dir,
        run_id="",
        n_tiles=len(plan.selected),
        n_screened=0,
        n_skipped=0,
        n_failed=0,
        n_sources=len(sources),
        n_blended=int(sources["is_blended"].sum()),
        n_clumps=len(clumps),
        verdicts={str(k): int(v) for k, v in verdicts.items()},
        wall_seconds=0.0,
        warnings=messages,
    )


# --------------------------------------------------------------------------- tile tasks


@lru_cache(maxsize=4)
def _worker_context(out_dir: str, config: RunConfig):
    """Per-process cache: the mosaic store, the grid and the method load once per worker."""
    mosaic = MosaicStore(Path(out_dir) / MOSAIC_STORE)
    grid = make_tile_grid(
        mosaic.shape, tile_size=config.tile_size, halo=config.halo, wcs=mosaic.wcs
    )
    method = _make_method(config, mosaic.psf_fwhm_pix)
    return mosaic, grid, method, OutputStore(out_dir)


def screen_and_store(
    tile_index: int, out_dir: str, config: RunConfig, run_id: str, result_key: str
) -> dict:
    """Screen one tile and write its results; runs on a worker. Returns its record."""
    mosaic, grid, method, out = _worker_context(out_dir, config)
    tile = grid[tile_index]
    read_start = time.perf_counter()
    window, skipped = _prepared_window(mosaic.read_window(tile), tile, config)
    seconds_read = time.perf_counter() - read_start
    zero_point = config.zero_point if config.zero_point is not None else mosaic.zero_point
    result = screen_tile(
        window, tile, grid, method, saturation=mosaic.saturation, zero_point=zero_point
    )
    write_start = time.perf_counter()
    check_lock_held_by(out_dir, run_id)  # a task outliving its run writes nothing
    out.write_core(tile, result.mask, result.segmentation, result.quality)
    record = {
        **_tile_geometry(tile),
        **result.stats,
        "seconds_read": seconds_read,
        "seconds_write": time.perf_counter() - write_start,
        "run_id": run_id,
        "status": "done",
        "error": "",
        "result_key": result_key,
    }
    if config.injection_catalog is not None:
        record["injection_skipped"] = skipped
    out.write_tile_result(
        tile_index, result.sources, result.clumps, record, flux_unit=mosaic.flux_unit
    )
    return record


def _prepared_window(window: WindowData, tile, config: RunConfig) -> tuple[WindowData, list]:
    """The window with the run's injected objects drawn in, negated for a negative pass.

    Returns the window and the ``injection_id`` of the objects GalSim failed to draw.
    """
    skipped: list[int] = []
    image, background = window.image, window.background
    if config.injection_catalog is not None:
        from survey_seg.inject import render_window

        rendered = render_window(
            _injection_catalog(config.injection_catalog),
            tile.origin,
            tile.window_shape,
            psf_fwhm_pix=config.injection_psf_fwhm,
            psf_beta=config.injection_psf_beta,
            gain=config.injection_gain,
        )
        image = image + rendered.image
        skipped = list(rendered.skipped)
    if config.negate:
        image, background = -image, -background
    return replace(window, image=image, background=background), skipped


@lru_cache(maxsize=2)
def _injection_catalog(path: str):
    """The injection catalog, read once per worker."""
    import pandas as pd

    return pd.read_parquet(path)


def _run_tile_jobs(
    jobs: list[tuple[int, tuple]], *, client, progress: bool
) -> Iterator[tuple[int, BaseException | None]]:
    """Yield ``(job, exception or None)`` as tiles finish, on dask or in-process.

    ``jobs`` holds ``(tile index, task arguments)``, the arguments of
    :func:`screen_and_store` after the tile index; ``job`` is a position in it.
    """
    bar = _progress_bar(len(jobs), enabled=progress)
    try:
        if client is None:
            for job, (index, task_args) in enumerate(jobs):
                yield job, _screen_with_retries(index, task_args)
                bar.update(1)
            return
        from distributed import as_completed

        columns = list(zip(*[(index, *task_args) for index, task_args in jobs], strict=True))
        futures = client.map(
            screen_and_store,
            *[list(column) for column in columns],
            retries=TILE_RETRIES,
            pure=False,
        )
        job_of = {future.key: job for job, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                job = job_of[future.key]
                if future.status == "error":
                    yield job, future.exception()
                else:
                    yield job, None
                bar.update(1)
        finally:  # the caller stopped early (output full): start no more tiles
            pending = [future for future in futures if not future.done()]
            if pending:
                client.cancel(pending)
                _wait_until_stopped(client, {future.key for future in pending})
    finally:
        bar.close()


def _wait_until_stopped(client, keys: set, timeout: float = 120.0) -> None:
    """Wait until no worker still runs one of ``keys``.

    Cancelling a task does not stop it once it runs: a tile in flight when the run
    stops would still write its record and masks after the run lock is released.
    """
    deadline = time.monotonic() + timeout
    while any(client.run(_running_keys, keys).values()) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running_keys(keys: set, dask_worker=None) -> list:
    """The ``keys`` that this dask worker is executing now."""
    running = [*dask_worker.state.executing, *dask_worker.state.long_running]
    return [task.key for task in running if task.key in keys]


def _screen_with_retries(index: int, task_args: tuple) -> Exception | None:
    """Screen a tile in this process, retried as dask would; the last error or None."""
    error = None
    for _ in range(TILE_RETRIES + 1):
        try:
            screen_and_store(index, *task_args)
            return None
        except Exception as caught:  # a failing tile must not stop the survey
            error = caught
            if is_output_failure(caught):
                break
    return error


def _progress_bar(total: int, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tile", desc="screening", disable=not enabled)


# --------------------------------------------------------------------------- helpers


def photometry(plan: RunPlan) -> dict:
    """The run's flux unit and zero point, and where each comes from."""
    if plan.config.zero_point is not None:
        zero_point, zero_point_from = plan.config.zero_point, "--zero-point"
    elif plan.mosaic.zero_point is not None:
        zero_point = plan.mosaic.zero_point
        zero_point_from = plan.mosaic.zero_point_key
    else:
        zero_point, zero_point_from = None, None
    return {
        "flux_unit": plan.mosaic.flux_unit or "adu",
        "flux_unit_from": "BUNIT" if plan.mosaic.flux_unit else None,
        "zero_point": zero_point,
        "zero_point_from": zero_point_from,
    }


def _tile_geometry(tile) -> dict:
    return {
        "tile_id": tile.index,
        "row": tile.row,
        "col": tile.col,
        "x0": tile.x0,
        "x1": tile.x1,
        "y0": tile.y0,
        "y1": tile.y1,
    }


def _failed_record(plan: RunPlan, index: int, run_id: str, error: str) -> dict:
    return {
        **_tile_geometry(plan.grid[index]),
        "run_id": run_id,
        "status": "failed",
        "verdict": "",
        "error": error[:500],
        "result_key": plan.result_key,
    }


def _empty_tables():
    from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS, empty_table

    return empty_table(SOURCE_COLUMNS), empty_table(CLUMP_COLUMNS)


def _ingest_is_current(path: Path, plan: RunPlan) -> bool:
    if plan.mode not in ("resume", "rerun") or not path.exists():
        return False
    try:
        attrs = MosaicStore(path).attrs
    except Exception:  # an interrupted ingest: redo it
        return False
    return (
        attrs.get("source_sha256") == plan.mosaic.sha256
        and attrs.get("psf_fwhm_pix") == plan.mosaic.psf_fwhm_pix  # the workers' PSF
        and attrs.get("tile_size") == plan.config.tile_size
        and attrs.get("background_cell") == plan.config.background_cell
    )


def _remove_outputs(out_dir: Path) -> None:
    """Remove what an earlier run wrote (and nothing else)."""
    for name in OUTPUT_NAMES:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():  # a link goes, never its target
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def new_run_id() -> str:
    """A new run id: UTC time stamp and a random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def _noise_correlation(plan: RunPlan) -> dict | None:
    """The ingest's noise-correlation measurement (None before the ingest)."""
    path = plan.out_dir / MOSAIC_STORE
    if not (path / "zarr.json").is_file():
        return None
    return MosaicStore(path).attrs.get("noise_correlation")


def _manifest(
    plan: RunPlan,
    run_id: str,
    *,
    status: str,
    previous: dict | None,
    summary: RunSummary | None = None,
) -> dict:
    runs: list[str] = list(previous.get("runs", [])) if previous else []
    if run_id not in runs:
        runs.append(run_id)
    manifest = {
        "format": "survey-seg run manifest 1",
        "package_version": __version__,
        "run_id": run_id,
        "runs": runs,
        "status": status,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": {
            "path": str(plan.mosaic.path.resolve()),
            "sha256": plan.mosaic.sha256,
            "shape": list(plan.mosaic.shape),
            "saturation": plan.mosaic.saturation,
            "zero_point": plan.mosaic.zero_point,
            "pixel_scale_arcsec": plan.mosaic.pixel_scale_arcsec,
            "psf_fwhm_pix": plan.mosaic.psf_fwhm_pix,
            "psf": plan.mosaic.psf,  # its source, and the fit when measured
            "flux_unit": plan.mosaic.flux_unit,
            "noise_correlation": _noise_correlation(plan),
            **plan.mosaic.describe_planes(),  # image, noise and mask: source, convention
        },
        "photometry": photometry(plan),
        "config": asdict(plan.config),
        "method": plan.method_provenance,
        "result_key": plan.result_key,
        "grid": {
            "n_rows": plan.grid.n_rows,
            "n_cols": plan.grid.n_cols,
            "tile_size": plan.grid.tile_size,
            "halo": plan.grid.halo,
        },
        "selected_tiles": list(plan.selected),
    }
    if summary is not None:
        manifest["summary"] = {k: v for k, v in asdict(summary).items() if k not in ("out_dir",)}
    return manifest
