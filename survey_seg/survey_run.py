"""Survey runs: many overlapping mosaics screened as one survey, merged into survey products.

:func:`plan_survey` validates every mosaic and the output directory without
writing anything; :func:`execute_survey` ingests each mosaic, screens the tiles
of all mosaics together (one submission to the dask cluster), merges each
mosaic's run, then builds the survey products (:func:`merge_survey`)::

    OUT/survey.json                 the survey manifest (mosaics, footprints, products)
    OUT/mosaics/<name>/             each mosaic's run, as `survey-seg run` writes it,
                                    its sources and clumps with an is_primary column
    OUT/catalogs/sources, clumps    the survey catalogs: primary rows only, in the HATS
                                    layout (survey_seg.hats_catalog)
    OUT/tiles.parquet               every tile of every mosaic, with its mosaic
    OUT/quality_map.fits            HEALPix map of flagged fraction, verdict and, where
                                    an injection run is there, completeness
    OUT/accepted.moc.fits           MOC of the accepted area

A mosaic's name is its file name without the FITS suffix; the primary rule
(:mod:`survey_seg.survey`) decides which mosaic reports each sky position. A
mosaic that fails (its ingest or merge raised) is recorded and the others go
on; ``resume`` finishes it. Every product is replaced atomically, the catalogs
as a whole, so a merge killed half way leaves the previous products readable
and ``resume`` redoes it with the same result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from survey_seg import __version__
from survey_seg.catalog import CLUMP_COLUMNS, SOURCE_COLUMNS, SURVEY_COLUMNS, TILE_COLUMNS
from survey_seg.config import RunConfig
from survey_seg.errors import InputError, OutputError
from survey_seg.files import atomic_write_bytes
from survey_seg.pipeline import (
    RunPlan,
    RunSummary,
    finish_run,
    new_run_id,
    pending_tiles,
    plan_rerun,
    plan_run,
    prepare_outputs,
    screen_plans_tiles,
    wait_for_warm_up,
    warm_up_workers,
)
from survey_seg.store import (
    OutputStore,
    acquire_run_lock,
    check_no_links,
    check_run_lock,
    output_failures,
    release_run_lock,
)
from survey_seg.survey import PRIMARY_RULE, MosaicFootprint, primary_mask
from survey_seg.tiling import (
    BoxRegion,
    ConeRegion,
    TileListRegion,
    make_tile_grid,
    parse_region,
)

__all__ = [
    "CATALOGS_DIR",
    "MOSAICS_DIR",
    "SURVEY_MANIFEST",
    "SurveyPlan",
    "SurveySummary",
    "execute_survey",
    "expand_mosaic_arguments",
    "merge_survey",
    "mosaic_name",
    "plan_survey",
    "plan_survey_rerun",
    "read_survey_manifest",
    "run_survey_mosaics",
    "summary_record",
    "update_survey_products",
]

SURVEY_MANIFEST = "survey.json"
MOSAICS_DIR = "mosaics"
CATALOGS_DIR = "catalogs"
SURVEY_TILES = "tiles.parquet"
QUALITY_MAP = "quality_map.fits"
ACCEPTED_MOC = "accepted.moc.fits"
SURVEY_OUTPUTS = (SURVEY_MANIFEST, SURVEY_TILES, QUALITY_MAP, ACCEPTED_MOC, CATALOGS_DIR)
"""What a survey writes in ``OUT`` beside ``mosaics/`` (and ``run.lock`` while it runs)."""
VERDICT_CODES = {"accept": 0, "inspect": 1, "reject": 2}
"""``VERDICT`` of the quality map; -1 where the tile has no verdict (failed, not screened)."""
_FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts")


@dataclass(frozen=True)
class SurveyPlan:
    """A validated survey run, ready to execute.

    Attributes
    ----------
    out_dir : pathlib.Path
        The survey's output directory.
    names : tuple of str
        Mosaic names, sorted.
    paths : tuple of pathlib.Path
        The FITS mosaics, in the order of ``names``.
    footprints : tuple of MosaicFootprint
        Their footprints, as the survey manifest records them.
    plans : tuple of RunPlan or None
        Each mosaic's run; None for a mosaic that a region does not meet.
    mode : str
        ``new``, ``resume``, ``rerun`` (force) or ``clean``.
    """

    out_dir: Path
    names: tuple[str, ...]
    paths: tuple[Path, ...]
    footprints: tuple[MosaicFootprint, ...]
    plans: tuple[RunPlan | None, ...]
    mode: str


@dataclass
class SurveySummary:
    """What a survey run did."""

    out_dir: Path
    run_id: str
    n_mosaics: int
    n_tiles: int
    n_screened: int
    n_skipped: int
    n_failed_tiles: int
    failed_mosaics: dict[str, str]
    n_sources: int
    n_clumps: int
    wall_seconds: float
    screen_seconds: float = 0.0
    """Of the wall time, screening the tiles of all mosaics."""
    merge_seconds: float = 0.0
    """Of the wall time, building the survey products."""
    mosaics: dict[str, RunSummary] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No mosaic and no tile failed."""
        return not self.failed_mosaics and not self.n_failed_tiles


def mosaic_name(path: str | os.PathLike) -> str:
    """The survey name of a mosaic: its file name without the FITS suffix."""
    name = Path(path).name
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def expand_mosaic_arguments(items: Sequence[str | os.PathLike]) -> tuple[list[Path], bool]:
    """The mosaics named on a command line, and whether they make a survey.

    Each item is a FITS path, a glob pattern (``*``, ``?`` or ``[``; matches
    sorted) or ``@FILE``, a list file of one path a line (blank lines and ``#``
    comments skipped; relative paths from the list file's directory). A survey
    is more than one mosaic, or any glob or list file.

    Raises
    ------
    InputError
        A glob that matches nothing, an unreadable or empty list file.
    """
    import glob

    mosaics: list[Path] = []
    survey = len(items) > 1
    for item in (str(item) for item in items):
        if item.startswith("@"):
            survey = True
            listing = Path(item[1:])
            try:
                lines = listing.read_text().splitlines()
            except OSError as error:
                raise InputError(
                    f"cannot read the mosaic list {listing} ({error.strerror}); check the path"
                ) from None
            named = [line.split("#", 1)[0].strip() for line in lines]
            named = [line for line in named if line]
            if not named:
                raise InputError(f"the mosaic list {listing} names no mosaic; one path a line")
            mosaics += [
                listing.parent / line if not Path(line).is_absolute() else Path(line)
                for line in named
            ]
        elif glob.has_magic(item):
            survey = True
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"no file matches {item!r}; check the pattern")
            mosaics += [Path(match) for match in matches]
        else:
            mosaics.append(Path(item))
    return mosaics, survey


def read_survey_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The survey manifest ``OUT/survey.json``, or None when there is none."""
    path = Path(out_dir) / SURVEY_MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise OutputError(f"{path} is corrupt ({error}); rerun the survey with --clean") from None


def plan_survey(
    mosaics: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    clean: bool = False,
) -> SurveyPlan:
    """Validate a survey run without writing anything.

    Parameters
    ----------
    mosaics : sequence of path-like
        The FITS mosaics; their names (file names without the suffix) must differ.
    out_dir : path-like
        New or empty, or an earlier survey's (with ``resume``, ``force`` or ``clean``).
    config : RunConfig, optional
        Run parameters, the same for every mosaic. A ``cone:`` or ``box:`` region
        selects, in every mosaic, the tiles that meet it; mosaics it does not
        meet are not screened (they keep their results).
    resume, force, clean : bool
        As for one mosaic (:func:`~survey_seg.pipeline.plan_run`), for every mosaic.

    Returns
    -------
    SurveyPlan

    Raises
    ------
    InputError, OutputError
        One-line messages naming the problem and the fix; every bad mosaic is named.
    """
    config = config or RunConfig()
    paths = [Path(path) for path in mosaics]
    if not paths:
        raise InputError("a survey needs at least one mosaic; give the FITS files")
    names = [mosaic_name(path) for path in paths]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InputError(
            f"mosaics {duplicated} appear more than once by name (file name without suffix); "
            "each mosaic's outputs go to OUT/mosaics/<name>: rename the files so they differ"
        )
    region = _sky_region(config.region) if config.region else None
    out = Path(out_dir)
    mode = _check_survey_dir(out, names, resume=resume, force=force, clean=clean)
    order = sorted(range(len(paths)), key=lambda i: names[i])
    paths = [paths[i] for i in order]
    names = [names[i] for i in order]
    plans: list[RunPlan | None] = []
    footprints = []
    errors = []
    for name, path in zip(names, paths, strict=True):
        try:
            plan = plan_run(
                path, out / MOSAICS_DIR / name, config, resume=resume, force=force, clean=clean
            )
            footprints.append(_footprint(name, plan))
            # a region selects the tiles it meets; a mosaic it misses is not screened
            plans.append(plan if plan.selected else None)
        except (InputError, OutputError) as error:
            errors.append((path, error))
    if errors:
        path, first = errors[0]
        more = f" (and {len(errors) - 1} more mosaics)" if len(errors) > 1 else ""
        raise type(first)(f"{path}: {first}{more}")
    if region is not None and not any(plans):
        raise InputError(
            f"region {config.region} meets none of the {len(paths)} mosaics; check the coordinates"
        )
    return SurveyPlan(out, tuple(names), tuple(paths), tuple(footprints), tuple(plans), mode)


def plan_survey_rerun(
    out_dir: str | os.PathLike,
    region: str,
    *,
    method: str | None = None,
    model: str | None = None,
) -> SurveyPlan:
    """Validate a rerun of exactly the tiles of every mosaic of a survey that meet ``region``.

    Each mosaic is rerun as :func:`~survey_seg.pipeline.plan_rerun` reruns one
    (its recorded tiling and parameters; ``method`` and ``model`` may change);
    :func:`execute_survey` then updates the survey products, rewriting only
    the catalog partitions that change.

    Parameters
    ----------
    out_dir : path-like
        A survey's output directory.
    region : str
        A sky region: ``cone:`` or ``box:``.
    method, model : str, optional
        Screening method and model config (default: each mosaic's earlier ones).

    Returns
    -------
    SurveyPlan
        ``plans`` is None for the mosaics the region does not meet.
    """
    out = Path(out_dir)
    manifest = read_survey_manifest(out) if out.is_dir() else None
    if manifest is None:
        raise OutputError(
            f"{out} holds no survey (no {SURVEY_MANIFEST}); screen the mosaics first with "
            "`survey-seg run A.fits B.fits ... --out OUT`"
        )
    _sky_region(region)
    check_run_lock(out)
    mosaics = sorted(manifest["mosaics"], key=lambda entry: entry["name"])
    failed = [m["name"] for m in mosaics if m.get("status") == "failed"]
    if failed:
        raise OutputError(
            f"the survey in {out} has failed mosaics {failed}; finish them with "
            "`survey-seg run ... --resume` before a region rerun"
        )
    plans = []
    for entry in mosaics:
        plan = plan_rerun(out / entry["out"], region, method=method, model=model)
        plans.append(plan if plan.selected else None)
    if not any(plans):
        raise InputError(
            f"region {region} meets none of the {len(mosaics)} mosaics; check the coordinates"
        )
    return SurveyPlan(
        out,
        tuple(entry["name"] for entry in mosaics),
        tuple(Path(entry["path"]) for entry in mosaics),
        tuple(MosaicFootprint.from_record(entry["footprint"]) for entry in mosaics),
        tuple(plans),
        "rerun",
    )


def _sky_region(region: str) -> ConeRegion | BoxRegion:
    """The parsed region, refused when it names tiles (they belong to one mosaic)."""
    parsed = parse_region(region)
    if isinstance(parsed, TileListRegion):
        raise InputError(
            "--region tiles:... names tiles of one mosaic; on a survey give a sky region "
            "(cone:RA,DEC,RADIUS_DEG or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX)"
        )
    return parsed


def _footprint(name: str, plan: RunPlan) -> MosaicFootprint:
    """The mosaic's footprint as the survey manifest records it (a record read back)."""
    wcs = plan.mosaic.wcs.deepcopy()
    wcs.pixel_shape = (plan.mosaic.shape[1], plan.mosaic.shape[0])
    return MosaicFootprint.from_record(MosaicFootprint(name, wcs, plan.mosaic.shape).to_record())


def _check_survey_dir(
    out: Path, names: list[str], *, resume: bool, force: bool, clean: bool
) -> str:
    """The survey's mode for ``out``: ``new``, ``resume``, ``rerun`` or ``clean``."""
    flags = (("--resume", resume), ("--force", force), ("--clean", clean))
    chosen = [flag for flag, on in flags if on]
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} exclude each other; pass one of them")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory; choose another --out")
    if not out.exists():
        return "new"
    check_run_lock(out)
    check_no_links(out, (MOSAICS_DIR, SURVEY_MANIFEST, SURVEY_TILES, QUALITY_MAP, ACCEPTED_MOC))
    if (out / "manifest.json").exists():
        raise OutputError(
            f"{out} holds the run of a single mosaic; give a survey its own --out directory"
        )
    manifest = read_survey_manifest(out)
    if manifest is None:
        if any(entry.name not in (MOSAICS_DIR, "run.lock") for entry in out.iterdir()):
            raise OutputError(
                f"{out} is not empty and holds no survey-seg survey; choose a new or empty --out"
            )
        return "new" if not clean else "clean"
    if clean:
        return "clean"
    if not (resume or force):
        raise OutputError(
            f"{out} already holds a survey ({manifest.get('run_id', '?')}); pass --resume to "
            "finish it, --force to screen tiles again (keeping the others' results) or "
            "--clean to discard it"
        )
    missing = sorted({m["name"] for m in manifest.get("mosaics", [])} - set(names))
    if missing:
        raise InputError(
            f"{out} holds a survey that also has the mosaics {missing}; give every mosaic of the "
            "survey (they are listed in survey.json), or --clean to start a new survey"
        )
    return "resume" if resume else "rerun"


def run_survey_mosaics(
    mosaics: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    client=None,
    resume: bool = False,
    force: bool = False,
    clean: bool = False,
    progress: bool = False,
) -> SurveySummary:
    """Validate, then execute a survey run: :func:`plan_survey` then :func:`execute_survey`."""
    plan = plan_survey(mosaics, out_dir, config, resume=resume, force=force, clean=clean)
    return execute_survey(plan, client=client, progress=progress)


def execute_survey(plan: SurveyPlan, *, client=None, progress: bool = False) -> SurveySummary:
    """Ingest every mosaic, screen all their tiles together, merge each, build the products.

    Parameters
    ----------
    plan : SurveyPlan
        From :func:`plan_survey`.
    client : distributed.Client, optional
        Where tiles run; in this process when None.
    progress : bool
        One progress bar over the tiles of all mosaics.

    Returns
    -------
    SurveySummary
        ``failed_mosaics`` names the mosaics whose ingest or merge failed, with
        the reason; their tiles are not in the survey products until a
        ``resume`` finishes them.
    """
    started = time.perf_counter()
    run_id = new_run_id()
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    acquire_run_lock(out, run_id)
    failed: dict[str, str] = {}
    summaries: dict[str, RunSummary] = {}
    counts = {"n_tiles": 0, "n_screened": 0, "n_skipped": 0, "n_failed_tiles": 0}
    active = [(name, p) for name, p in zip(plan.names, plan.plans, strict=True) if p is not None]
    warming = warm_up_workers(active[0][1], client) if client is not None and active else []
    try:
        previous = read_survey_manifest(out) if plan.mode in ("resume", "rerun") else None
        with output_failures(out):
            if plan.mode == "clean":
                _remove_survey_outputs(out, read_survey_manifest(out), keep=plan.names)
            _write_manifest(out, plan, run_id, previous, status="running")
        prepared = []
        for name, run_plan in active:
            try:
                ingest_seconds = prepare_outputs(run_plan, run_id)
                prepared.append((name, run_plan, pending_tiles(run_plan), ingest_seconds))
            except OutputError:
                raise
            except Exception as error:  # one mosaic's failure must not stop the survey
                failed[name] = f"{type(error).__name__}: {error}"[:500]
                release_run_lock(run_plan.out_dir, run_id)
        screen_start = time.perf_counter()
        failed_tiles = screen_plans_tiles(
            [(run_plan, todo) for _, run_plan, (todo, _), _ in prepared],
            run_id,
            client=client,
            progress=progress,
        )
        screen_seconds = time.perf_counter() - screen_start
        for (name, run_plan, (todo, finished), ingest_seconds), bad in zip(
            prepared, failed_tiles, strict=True
        ):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # summarised per mosaic below
                    summary = finish_run(
                        run_plan,
                        run_id,
                        n_screened=len(todo) - len(bad),
                        n_skipped=len(finished),
                        n_failed=len(bad),
                        started=started,
                        ingest_seconds=ingest_seconds,
                    )
                summaries[name] = summary
                counts["n_tiles"] += summary.n_tiles
                counts["n_screened"] += summary.n_screened
                counts["n_skipped"] += summary.n_skipped
                counts["n_failed_tiles"] += summary.n_failed
            except OutputError:
                raise
            except Exception as error:
                failed[name] = f"{type(error).__name__}: {error}"[:500]
        for _, run_plan in active:
            release_run_lock(run_plan.out_dir, run_id)
        merge_start = time.perf_counter()
        with output_failures(out):
            products = merge_survey(out, plan.footprints, previous=previous)
            status = "complete" if not failed and not counts["n_failed_tiles"] else "partial"
            _write_manifest(
                out,
                plan,
                run_id,
                previous,
                status=status,
                products=products,
                failed=failed,
                summaries=summaries,
            )
        messages = [f"mosaic {name} failed: {reason}" for name, reason in failed.items()]
        return SurveySummary(
            out_dir=out,
            run_id=run_id,
            n_mosaics=len(plan.names),
            failed_mosaics=failed,
            n_sources=products["catalogs"]["sources"]["n_rows"],
            n_clumps=products["catalogs"]["clumps"]["n_rows"],
            wall_seconds=time.perf_counter() - started,
            screen_seconds=screen_seconds,
            merge_seconds=time.perf_counter() - merge_start,
            mosaics=summaries,
            warnings=messages,
            **counts,
        )
    finally:
        wait_for_warm_up(client, warming)
        for _, run_plan in active:
            release_run_lock(run_plan.out_dir, run_id)
        release_run_lock(out, run_id)


def update_survey_products(out_dir: str | os.PathLike) -> dict:
    """Rebuild a finished survey's products from its mosaics' runs as they are now.

    For what changed beside the survey run: an injection run written into
    ``OUT/mosaics/<name>/injection/`` after it (the quality map gets its
    completeness). Nothing is screened; the catalogs rewrite only the partitions
    that change. The same as ``--resume`` with every tile finished.

    Parameters
    ----------
    out_dir : path-like
        A survey's output directory.

    Returns
    -------
    dict
        The new ``products`` record of ``survey.json``.
    """
    out = Path(out_dir)
    manifest = read_survey_manifest(out)
    if manifest is None:
        raise OutputError(f"{out} holds no survey (no {SURVEY_MANIFEST}); run the survey first")
    footprints = [MosaicFootprint.from_record(m["footprint"]) for m in manifest["mosaics"]]
    run_id = new_run_id()
    acquire_run_lock(out, run_id)
    try:
        with output_failures(out):
            products = merge_survey(out, footprints, previous=manifest)
            updated = {
                **manifest,
                "products": products,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            atomic_write_bytes(out / SURVEY_MANIFEST, json.dumps(updated, indent=2).encode())
    finally:
        release_run_lock(out, run_id)
    return products


def _remove_survey_outputs(out: Path, manifest: dict | None, keep: Sequence[str]) -> None:
    """Remove the survey products and the runs of recorded mosaics no longer in the survey."""
    for name in SURVEY_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for entry in (manifest or {}).get("mosaics", []):
        name = entry.get("name", "")
        directory = out / MOSAICS_DIR / name
        if name and name not in keep and "/" not in name and directory.is_dir():
            shutil.rmtree(directory)


def _write_manifest(
    out: Path,
    plan: SurveyPlan,
    run_id: str,
    previous: dict | None,
    *,
    status: str,
    products: dict | None = None,
    failed: dict[str, str] | None = None,
    summaries: dict[str, RunSummary] | None = None,
) -> None:
    runs = list((previous or {}).get("runs", []))
    if run_id not in runs:
        runs.append(run_id)
    failed = failed or {}
    summaries = summaries or {}
    recorded = {entry["name"]: entry for entry in (previous or {}).get("mosaics", [])}
    mosaics = []
    for name, path, footprint, run_plan in zip(
        plan.names, plan.paths, plan.footprints, plan.plans, strict=True
    ):
        entry = {
            "name": name,
            "path": str(path.resolve()),
            "out": f"{MOSAICS_DIR}/{name}",
            "footprint": footprint.to_record(),
            "screened_in_this_run": run_plan is not None,
        }
        if name in failed:
            entry["status"], entry["error"] = "failed", failed[name]
        elif name in summaries:
            summary = summaries[name]
            entry["status"] = "partial" if summary.n_failed else "complete"
            entry["n_failed_tiles"] = summary.n_failed
        elif run_plan is None:  # not screened now: as the earlier run left it
            earlier = recorded.get(name, {})
            entry.update(
                {k: earlier[k] for k in ("status", "error", "n_failed_tiles") if k in earlier}
            )
        mosaics.append(entry)
    manifest = {
        "format": "survey-seg survey manifest 1",
        "package_version": __version__,
        "run_id": run_id,
        "runs": runs,
        "status": status,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "primary_rule": PRIMARY_RULE,
        "mosaics": mosaics,
        "products": products if products is not None else (previous or {}).get("products"),
    }
    atomic_write_bytes(out / SURVEY_MANIFEST, json.dumps(manifest, indent=2).encode())


# --------------------------------------------------------------------------- survey merge


def merge_survey(
    out_dir: str | os.PathLike,
    footprints: Sequence[MosaicFootprint],
    *,
    previous: dict | None = None,
) -> dict:
    """Build the survey products from the runs in ``OUT/mosaics/`` (see the module notes).

    Flags ``is_primary`` in each mosaic's ``sources`` and ``clumps`` tables
    (rewritten only when the flags change), then writes the survey catalogs of
    the primary rows (HATS), the survey tile table, the quality map and the MOC
    of the accepted area. Mosaics without a finished run are left out (their
    footprints still decide the primary mosaic, so no other mosaic reports
    their objects). Deterministic: the same runs give the same products.

    Parameters
    ----------
    out_dir : path-like
        The survey's output directory.
    footprints : sequence of MosaicFootprint
        Every mosaic of the survey.
    previous : dict, optional
        The earlier survey manifest: its partition and map orders are kept, so
        that an update rewrites only what changed.

    Returns
    -------
    dict
        The ``products`` record of the survey manifest.
    """
    from survey_seg.hats_catalog import partition_order_for, write_hats_catalog
    from survey_seg.sky_map import map_order_for

    out = Path(out_dir)
    footprints = list(footprints)
    sources, clumps, tiles, runs = [], [], [], {}
    flux_units = set()
    for footprint in footprints:
        directory = out / MOSAICS_DIR / footprint.name
        store = OutputStore(directory)
        manifest = store.read_manifest() if directory.is_dir() else None
        if manifest is None or not (directory / "sources.parquet").is_file():
            continue
        runs[footprint.name] = manifest
        flux_units.add(manifest.get("photometry", {}).get("flux_unit") or "adu")
        mosaic_sources, mosaic_clumps = _flag_primary(store, manifest, footprint, footprints)
        sources.append(_with_mosaic(mosaic_sources[mosaic_sources["is_primary"]], footprint))
        clumps.append(_with_mosaic(mosaic_clumps[mosaic_clumps["is_primary"]], footprint))
        mosaic_tiles = pd.read_parquet(directory / SURVEY_TILES)
        tiles.append(_with_mosaic(mosaic_tiles, footprint))
    recorded = (previous or {}).get("products") or {}
    diameter = float(np.median([2.0 * footprint.radius for footprint in footprints]))
    partition_order = recorded.get("partition_order", partition_order_for(diameter))
    tile_sides = [
        run["config"]["tile_size"] * run["input"]["pixel_scale_arcsec"] / 3600.0
        for run in runs.values()
    ]
    tile_side = min(tile_sides, default=diameter / 4.0)
    map_order = recorded.get("map_order", map_order_for(tile_side))
    flux_unit = flux_units.pop() if len(flux_units) == 1 else None
    catalogs = {}
    for name, parts, schema in (
        ("sources", sources, SOURCE_COLUMNS),
        ("clumps", clumps, CLUMP_COLUMNS),
    ):
        columns = (SURVEY_COLUMNS[0], *_with_unit(schema, flux_unit))
        table = _concat(parts, columns)
        update = write_hats_catalog(
            table,
            out / CATALOGS_DIR / name,
            name=name,
            order=int(partition_order),
            columns=columns,
            sort_by=("mosaic", "id"),
        )
        catalogs[name] = {
            "path": f"{CATALOGS_DIR}/{name}",
            "version": update.version,
            "n_rows": update.n_rows,
            "n_partitions": len(update.partitions),
            "rewritten": list(update.rewritten),
            "removed": list(update.removed),
        }
    survey_tiles = _concat(tiles, (SURVEY_COLUMNS[0], *TILE_COLUMNS))
    OutputStore(out).write_table(survey_tiles, "tiles", fits_copy=False)
    injected = _injected_by_tile(out, footprints, runs)
    quality = _write_quality_map(out, footprints, runs, survey_tiles, injected, int(map_order))
    return {
        "partition_order": int(partition_order),
        "map_order": int(map_order),
        "flux_unit": flux_unit,
        "catalogs": catalogs,
        "tiles": SURVEY_TILES,
        "quality_map": quality,
        "mosaics_merged": sorted(runs),
    }


def _with_unit(columns, flux_unit: str | None):
    from survey_seg.catalog import FLUX_COLUMNS

    if flux_unit is None:
        return columns
    return tuple(replace(c, unit=flux_unit) if c.name in FLUX_COLUMNS else c for c in columns)


def _flag_primary(
    store: OutputStore,
    manifest: dict,
    footprint: MosaicFootprint,
    footprints: Sequence[MosaicFootprint],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mosaic's sources and clumps with ``is_primary``, written back when it changed."""
    tables = {}
    for name in ("sources", "clumps"):
        tables[name] = pd.read_parquet(store.root / f"{name}.parquet")
    sources, clumps = tables["sources"], tables["clumps"]
    ra, dec = sources["ra"].to_numpy(), sources["dec"].to_numpy()
    primary = primary_mask(ra, dec, footprint, footprints)
    primary_ids = sources["id"].to_numpy()[primary]
    flags = {
        "sources": primary,
        "clumps": np.isin(clumps["host_id"].to_numpy(), primary_ids),
    }
    unit = manifest.get("input", {}).get("flux_unit")
    fits_copies = bool(manifest.get("config", {}).get("fits_copies", True))
    for name, table in tables.items():
        flag = flags[name]
        if "is_primary" in table.columns and np.array_equal(table["is_primary"].to_numpy(), flag):
            continue
        table = table.drop(columns=["is_primary"], errors="ignore")
        table["is_primary"] = flag
        store.write_table(table, name, fits_copy=fits_copies, flux_unit=unit, provenance=manifest)
        tables[name] = table
    return tables["sources"], tables["clumps"]


def _with_mosaic(table: pd.DataFrame, footprint: MosaicFootprint) -> pd.DataFrame:
    table = table.drop(columns=["is_primary"], errors="ignore").copy()
    table.insert(0, "mosaic", footprint.name)
    return table.reset_index(drop=True)


def _concat(parts: list[pd.DataFrame], columns) -> pd.DataFrame:
    from survey_seg.catalog import conform, empty_table

    parts = [part for part in parts if len(part)]
    if not parts:
        return empty_table(columns)
    return conform(pd.concat(parts, ignore_index=True), columns)


def _tile_grid(footprint: MosaicFootprint, run: dict):
    """The tile grid of ``footprint``'s run (its recorded tile size and halo)."""
    config = run["config"]
    return make_tile_grid(
        footprint.shape, tile_size=config["tile_size"], halo=config["halo"], wcs=footprint.wcs
    )


def _injected_by_tile(
    out: Path, footprints: Sequence[MosaicFootprint], runs: dict[str, dict]
) -> pd.DataFrame:
    """Injection-recovery counts per tile of the mosaics whose injection run is there.

    Reads ``OUT/mosaics/<name>/injection/injection.parquet`` (written by the
    flows' ``inject`` or ``survey-seg inject``); counts the objects that its
    ``completeness`` counts, each in the tile of the survey run that owns it,
    where the mosaic is primary for its position (so an object in an overlap is
    counted once). Columns ``mosaic``, ``tile_id``, ``n_injected``, ``n_recovered``.
    """
    from survey_seg.inject import completeness_rows
    from survey_seg.injection import INJECTION_DIR, INJECTION_TABLE

    parts = []
    for footprint in footprints:
        path = out / MOSAICS_DIR / footprint.name / INJECTION_DIR / INJECTION_TABLE
        run = runs.get(footprint.name)
        if run is None or not path.is_file():
            continue
        rows = completeness_rows(pd.read_parquet(path))
        rows = rows[primary_mask(rows["ra"], rows["dec"], footprint, footprints)]
        owner = _tile_grid(footprint, run).owner_index(rows["x"], rows["y"])
        counts = (
            pd.DataFrame({"tile_id": owner, "recovered": rows["recovered"].to_numpy(bool)})
            .groupby("tile_id")["recovered"]
            .agg(n_injected="size", n_recovered="sum")
            .reset_index()
        )
        counts.insert(0, "mosaic", footprint.name)
        parts.append(counts)
    columns = ["mosaic", "tile_id", "n_injected", "n_recovered"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _write_quality_map(
    out: Path,
    footprints: Sequence[MosaicFootprint],
    runs: dict[str, dict],
    tiles: pd.DataFrame,
    injected: pd.DataFrame,
    order: int,
) -> dict:
    """``quality_map.fits`` and ``accepted.moc.fits``; their record for the manifest."""
    from survey_seg.sky_map import (
        MapColumn,
        covered_pixels,
        pixel_area_deg2,
        write_healpix_map,
        write_moc,
    )

    covered = covered_pixels(footprints, order)
    n = len(covered.pixels)
    flagged = np.full(n, np.nan, dtype=np.float32)
    verdict = np.full(n, -1, dtype=np.int32)
    tile_id = np.full(n, -1, dtype=np.int32)
    completeness = np.full(n, np.nan, dtype=np.float32)
    n_injected = np.zeros(n, dtype=np.int32)
    mosaic_index = np.full(n, -1, dtype=np.int32)
    by_name = {footprint.name: i for i, footprint in enumerate(footprints)}
    for footprint in footprints:
        here = covered.mosaic == footprint.name
        mosaic_index[here] = by_name[footprint.name]
        run = runs.get(footprint.name)
        if run is None or not here.any():
            continue
        x, y = footprint.wcs.all_world2pix(covered.ra[here], covered.dec[here], 0)
        owner = _tile_grid(footprint, run).owner_index(x, y)
        tile_id[here] = owner
        mine = tiles[tiles["mosaic"] == footprint.name].set_index("tile_id")
        known = np.isin(owner, mine.index.to_numpy())
        rows = mine.reindex(owner[known])
        values = flagged[here]
        values[known] = rows["flagged_fraction"].to_numpy(dtype=np.float32)
        flagged[here] = values
        codes = verdict[here]
        codes[known] = [VERDICT_CODES.get(str(v), -1) for v in rows["verdict"]]
        verdict[here] = codes
        counts = injected[injected["mosaic"] == footprint.name].set_index("tile_id")
        if len(counts):
            counts = counts.reindex(owner)
            total = counts["n_injected"].fillna(0).to_numpy(dtype=np.int32)
            n_injected[here] = total
            with np.errstate(invalid="ignore", divide="ignore"):
                fraction = counts["n_recovered"].to_numpy(dtype=np.float64) / total
            completeness[here] = np.where(total > 0, fraction, np.nan)
    columns = [
        MapColumn("FLAGGED", flagged, "", "flagged fraction of the tile (no data or artefact)"),
        MapColumn("VERDICT", verdict, "", "tile verdict: 0 accept 1 inspect 2 reject -1 none"),
        MapColumn(
            "COMPLETENESS",
            completeness,
            "",
            "injection completeness (S/N >= 10 singles) of the tile; NaN: no injection there",
        ),
        MapColumn("N_INJECTED", n_injected, "", "injected objects the completeness counts"),
        MapColumn("MOSAIC", mosaic_index, "", "primary mosaic: index in survey.json mosaics"),
        MapColumn("TILE", tile_id, "", "tile_id in that mosaic's tiles.parquet"),
    ]
    write_healpix_map(out / QUALITY_MAP, order, covered.pixels, columns)
    accepted = covered.pixels[verdict == VERDICT_CODES["accept"]]
    write_moc(out / ACCEPTED_MOC, order, accepted)
    area = pixel_area_deg2(order)
    return {
        "path": QUALITY_MAP,
        "moc": ACCEPTED_MOC,
        "order": order,
        "n_pixels": n,
        "covered_deg2": n * area,
        "accepted_deg2": len(accepted) * area,
        "verdict_pixels": {
            name: int((verdict == code).sum()) for name, code in VERDICT_CODES.items()
        },
        "injection": _injection_record(injected),
    }


def _injection_record(injected: pd.DataFrame) -> dict | None:
    """Overall completeness of the injected objects the map counts; None without any."""
    total = int(injected["n_injected"].sum()) if len(injected) else 0
    if total == 0:
        return None
    return {
        "mosaics": sorted(set(injected["mosaic"])),
        "n_injected": total,
        "completeness": float(injected["n_recovered"].sum() / total),
    }


def summary_record(summary: SurveySummary) -> dict:
    """A JSON-serialisable view of a survey summary (for flows' artifacts)."""
    record = asdict(summary)
    record["out_dir"] = str(summary.out_dir)
    record["mosaics"] = {name: s.n_sources for name, s in summary.mosaics.items()}
    return record
