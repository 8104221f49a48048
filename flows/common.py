"""What the flows share: cluster parameters, the run's Prefect API, tile batches, tasks."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_type_hints

from prefect import get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from survey_seg.cluster import ClusterSpec, check_spec_file_alone, dask_client
from survey_seg.config import OUTPUT_OPTIONS, RUN_OPTIONS, RunConfig, check_run_config
from survey_seg.errors import InputError, SurveySegError
from survey_seg.pipeline import (
    RunPlan,
    RunSummary,
    finish_run,
    prepare_outputs,
    screen_tiles,
    wait_for_warm_up,
    warm_up_workers,
)
from survey_seg.store import release_run_lock
from survey_seg.tiling import parse_region

__all__ = [
    "ClusterParameters",
    "RunParameters",
    "add_cluster_arguments",
    "batches",
    "check_region",
    "cluster_client",
    "first_error",
    "inject_task",
    "prefect_api",
    "publish_summary",
    "quiet_dask_logs",
    "run_plan_on_cluster",
]

SERVER_START_TIMEOUT = 90.0
DASK_LOG_LEVEL_VARIABLE = "DASK_LOGGING__DISTRIBUTED"
"""Environment variable of dask's ``logging.distributed`` level (read by every worker)."""


class ClusterParameters(BaseModel):
    """Where the tiles run (see :class:`survey_seg.cluster.ClusterSpec`).

    Either a cluster spec file (``spec_file``, e.g. ``deploy/clusters/slurm.yaml``,
    with TLS, SLURM or any other kind) or the other fields, not both.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "local", "cuda", "address"] = "auto"
    workers: int | None = Field(default=None, ge=1, description="worker processes")
    threads_per_worker: int = Field(default=1, ge=1)
    address: str | None = Field(default=None, description="scheduler address for kind=address")
    spec_file: str | None = Field(
        default=None, description="cluster spec YAML (deploy/clusters/*.yaml) instead of the rest"
    )

    @field_validator("spec_file")
    @classmethod
    def _spec_file_reads(cls, spec_file: str | None) -> str | None:
        if spec_file is not None:
            ClusterSpec.from_file(spec_file)  # InputError is a ValueError: names the problem
        return spec_file

    @model_validator(mode="after")
    def _spec_file_alone(self) -> ClusterParameters:
        if self.spec_file is None:
            return self
        defaults = type(self).model_fields
        check_spec_file_alone(
            f"spec_file {self.spec_file}",
            {
                name: getattr(self, name)
                for name in ("kind", "workers", "threads_per_worker", "address")
                if getattr(self, name) != defaults[name].default
            },
        )
        return self

    @classmethod
    def from_args(cls, args) -> ClusterParameters:
        """From the options added by :func:`add_cluster_arguments` (only those given)."""
        given = {
            "spec_file": None if args.cluster_spec is None else str(args.cluster_spec),
            "kind": "address" if args.scheduler else args.cluster,
            "workers": args.workers,
            "address": args.scheduler,
        }
        return cls(**{name: value for name, value in given.items() if value is not None})

    def spec(self) -> ClusterSpec:
        """The library's cluster spec (read from ``spec_file`` when it is set)."""
        if self.spec_file is not None:
            return ClusterSpec.from_file(self.spec_file)
        return ClusterSpec(
            kind=self.kind,
            n_workers=self.workers,
            threads_per_worker=self.threads_per_worker,
            address=self.address,
        )


def _run_option_fields() -> dict[str, Any]:
    """Pydantic fields of the options of ``survey-seg run``.

    One per entry of :data:`RUN_OPTIONS` and :data:`OUTPUT_OPTIONS`, with the
    command line's types, defaults, choices and help.
    """
    hints = get_type_hints(RunConfig)
    defaults = RunConfig()
    fields: dict[str, Any] = {}
    for option in RUN_OPTIONS:
        default = getattr(defaults, option.field)
        kind = Literal[option.choices] if option.choices else hints[option.field]  # type: ignore[valid-type]
        if option.choices and default is None:
            kind = kind | None
        fields[option.field] = (kind, Field(default=default, description=option.help))
    for output in OUTPUT_OPTIONS:
        fields[output.name] = (bool, Field(default=False, description=output.help))
    return fields


class _RunParametersBase(BaseModel):
    """Validation of the run options as a whole (the fields are added below)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _options_usable(self) -> _RunParametersBase:
        chosen = [output.flag for output in OUTPUT_OPTIONS if getattr(self, output.name)]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} exclude each other; pass one of them")
        check_run_config(self.run_config())  # InputError is a ValueError: names the fix
        check_region(self.region)
        return self

    def run_config(self) -> RunConfig:
        """The library's run configuration."""
        return RunConfig(**{option.field: getattr(self, option.field) for option in RUN_OPTIONS})

    def output_options(self) -> dict[str, bool]:
        """``resume``, ``force`` and ``clean``, as ``plan_run`` takes them."""
        return {output.name: getattr(self, output.name) for output in OUTPUT_OPTIONS}


RunParameters = create_model(
    "RunParameters",
    __base__=_RunParametersBase,
    __doc__="The options of ``survey-seg run``, from the one definition in survey_seg.config.",
    **_run_option_fields(),
)


def check_region(value: str | None) -> str | None:
    """Pydantic validator body: a region must parse (error names the accepted forms)."""
    if value is not None:
        parse_region(value)
    return value


def add_cluster_arguments(parser) -> None:
    """The command-line options of where tiles run and how they are batched."""
    parser.add_argument("--workers", type=int, help="dask worker processes")
    parser.add_argument("--scheduler", help="address of a running dask scheduler")
    parser.add_argument("--cluster", choices=("auto", "local", "cuda"), help="default: auto")
    parser.add_argument(
        "--cluster-spec",
        metavar="FILE",
        help="cluster spec YAML (deploy/clusters/*.yaml, TLS included); not with --cluster, "
        "--workers or --scheduler",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="tiles per Prefect task")


def batches(tiles: list[int], size: int) -> list[list[int]]:
    """Consecutive batches of at most ``size`` tiles (a Prefect task costs ~0.2 s)."""
    return [tiles[i : i + size] for i in range(0, len(tiles), size)]


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """One Prefect API for the whole run.

    ``PREFECT_API_URL`` when set; otherwise a local server started for the run
    (on 127.0.0.1, a free port, a throw-away database) and stopped after it. The
    URL is exported so that dask workers started inside share it rather than
    each starting a temporary server of its own.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    with tempfile.TemporaryDirectory(prefix="survey-seg-prefect-") as home:
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "false"}  # fmt: skip
        log = open(Path(home) / "server.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_for(url, server, Path(home) / "server.log")
            os.environ["PREFECT_API_URL"] = url
            with temporary_settings(updates={PREFECT_API_URL: url}):
                try:
                    yield url
                finally:
                    _drain_prefect_workers()
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


def _drain_prefect_workers() -> None:
    """Send the logs and events still queued before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-500:]
            raise RuntimeError(f"the local Prefect server exited: {tail}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"the local Prefect server did not answer at {url} in time")


def quiet_dask_logs() -> None:
    """Let dask print its warnings and errors under Prefect, not its INFO chatter.

    Prefect's console handler sits on the root logger and prints every record that
    reaches it. dask's ``distributed`` loggers are at INFO, and ``LocalCluster``'s
    ``silence_logs`` quiets only dask's own handlers, which dask does not add when
    the root logger has one; so a flow would print every scheduler, nanny and worker
    start, connection and shutdown (and INFO tracebacks of connections closed during
    shutdown). This sets the level of the ``distributed`` loggers here and, through
    :data:`DASK_LOG_LEVEL_VARIABLE`, in the worker processes a local cluster spawns:
    ``warning`` unless that variable is set (``info`` or ``debug`` to debug a cluster).

    Raises
    ------
    InputError
        The variable holds no logging level.
    """
    level = os.environ.setdefault(DASK_LOG_LEVEL_VARIABLE, "warning")
    if level.upper() not in logging.getLevelNamesMapping():
        raise InputError(
            f"{DASK_LOG_LEVEL_VARIABLE}={level!r} is not a logging level; set it to debug, "
            "info, warning or error, or unset it"
        )
    logging.getLogger("distributed").setLevel(level.upper())


@contextlib.contextmanager
def cluster_client(parameters: ClusterParameters):
    """The dask client of the run, workers sharing the run's Prefect API.

    dask logs only warnings and errors (see :func:`quiet_dask_logs`).
    """
    quiet_dask_logs()
    with dask_client(parameters.spec()) as client:
        yield client


@task(name="prepare-outputs", cache_policy=NO_CACHE)
def prepare_task(plan: RunPlan, run_id: str) -> float:
    """Replace (force), ingest and create the output arrays; return the ingest seconds."""
    return prepare_outputs(plan, run_id)


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient failures, not those the user must fix.

    A lost connection is worth a retry; a :class:`~survey_seg.errors.SurveySegError`
    (a full disk, a run lock taken by another run) would only be repeated.
    """
    return not isinstance(state.data, SurveySegError)


@task(
    name="screen-batch",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_user_error,
)
def screen_batch_task(
    plan: RunPlan, tiles: list[int], run_id: str, scheduler: str, security=None
) -> list[int]:
    """Screen one batch of tiles on the dask cluster; return the failed ones.

    ``security`` is the run client's :class:`distributed.Security` (TLS clusters).
    """
    from distributed import Client

    with Client(scheduler, set_as_default=False, security=security) as client:
        return screen_tiles(plan, tiles, run_id, client=client)


@task(name="merge", cache_policy=NO_CACHE)
def merge_task(
    plan: RunPlan,
    run_id: str,
    n_screened: int,
    n_skipped: int,
    n_failed: int,
    started: float,
    ingest_seconds: float,
) -> RunSummary:
    """Merge every finished tile into the global catalogs."""
    return finish_run(
        plan, run_id, n_screened=n_screened, n_skipped=n_skipped, n_failed=n_failed,
        started=started, ingest_seconds=ingest_seconds,
    )  # fmt: skip


@task(name="report", cache_policy=NO_CACHE)
def report_task(out_dir: Path) -> Path:
    """Write OUT/report.html and its quick-look PNGs."""
    from survey_seg.report import make_report

    return make_report(out_dir)


@task(name="survey-report", cache_policy=NO_CACHE)
def survey_report_task(out_dir: Path) -> Path:
    """Write a survey's OUT/report.html and its sky plot."""
    from survey_seg.survey_report import make_survey_report

    return make_survey_report(out_dir)


@task(name="survey", cache_policy=NO_CACHE)
def survey_task(
    mosaics: list[Path], out_dir: Path, config: RunConfig, client, options: dict[str, bool]
):
    """Screen many mosaics as one survey (``survey-seg run A.fits B.fits ...``)."""
    from survey_seg.survey_run import run_survey_mosaics

    return run_survey_mosaics(mosaics, out_dir, config, client=client, **options)


@task(name="survey-rerun", cache_policy=NO_CACHE)
def survey_rerun_task(plan, client):
    """Rerun a region of a survey (:func:`survey_seg.survey_run.plan_survey_rerun`'s plan)."""
    from survey_seg.survey_run import execute_survey

    return execute_survey(plan, client=client)


@task(name="update-survey-products", cache_policy=NO_CACHE)
def update_survey_task(out_dir: Path) -> dict:
    """Rebuild a survey's products (after injection runs were added to its mosaics)."""
    from survey_seg.survey_run import update_survey_products

    return update_survey_products(out_dir)


@task(name="inject", cache_policy=NO_CACHE)
def inject_task(
    mosaic: Path,
    out_dir: Path,
    config: RunConfig,
    seed: int,
    density: float,
    gain: float | None,
    client,
) -> dict:
    """Injection-recovery run of ``mosaic`` into ``out_dir`` (``survey-seg inject``)."""
    from survey_seg.injection import run_injection

    return run_injection(
        mosaic, out_dir, config, seed=seed, density=density, gain=gain, client=client
    )


def run_plan_on_cluster(
    plan: RunPlan, tiles: list[int], skipped: int, run_id: str, client, batch_size: int
) -> RunSummary:
    """Prepare, screen ``tiles`` in batches mapped as Prefect tasks, merge."""
    started = time.perf_counter()
    warming = warm_up_workers(plan, client) if tiles else []  # held: dask cancels a dropped one
    try:
        ingest_seconds = prepare_task(plan, run_id)
        scheduler = client.scheduler.address
        futures = screen_batch_task.map(
            plan=plan, tiles=batches(tiles, batch_size), run_id=run_id, scheduler=scheduler,
            security=unmapped(client.security),
        )  # fmt: skip
        failed = [tile for result in futures.result() for tile in result]
        return merge_task(
            plan, run_id, len(tiles) - len(failed), skipped, len(failed), started, ingest_seconds
        )
    finally:
        wait_for_warm_up(client, warming)
        release_run_lock(plan.out_dir, run_id)  # also when a task failed for good


def publish_summary(summary: RunSummary, report: Path | None, *, key: str) -> None:
    """Prefect artifacts: a summary table and where the report is."""
    per_tile = summary.wall_seconds / max(summary.n_screened, 1)
    create_table_artifact(
        key=key,
        table=[
            {"quantity": "tiles accepted", "value": summary.verdicts.get("accept", 0)},
            {"quantity": "tiles to inspect", "value": summary.verdicts.get("inspect", 0)},
            {"quantity": "tiles rejected", "value": summary.verdicts.get("reject", 0)},
            {"quantity": "tiles failed", "value": summary.n_failed},
            {"quantity": "sources", "value": summary.n_sources},
            {"quantity": "blended sources", "value": summary.n_blended},
            {"quantity": "clumps", "value": summary.n_clumps},
            {"quantity": "seconds per screened tile", "value": round(per_tile, 3)},
        ],
        description=f"survey-seg run {summary.run_id} in {summary.out_dir}",
    )
    if report is not None:
        create_markdown_artifact(
            key=f"{key}-report",
            markdown=f"Report: [{report}]({report.resolve().as_uri()})",
            description="quick-look report of the run",
        )
    get_run_logger().info(
        "%d sources, %d blended, %d clumps; %s", summary.n_sources, summary.n_blended,
        summary.n_clumps, summary.verdicts,
    )  # fmt: skip


def first_error(error: ValidationError) -> str:
    """One line from a pydantic validation error: where, and what is wrong."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
