"""Flow ``reprocess_survey``: ingest mosaics, screen every tile on dask, merge, report.

Run it as::

    python -m flows.reprocess MOSAIC.fits [MOSAIC2.fits ...] --out OUT_DIR [options]
    # several mosaics are one survey: OUT_DIR/mosaics/<name>/ and the survey products
    python -m flows.reprocess --simulate 2048 --out demo-out      # the embedded demo
    python -m flows.reprocess MOSAIC.fits --out OUT_DIR --inject  # and OUT_DIR/injection/

Without ``PREFECT_API_URL`` the command starts one local Prefect API for the run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import Field, ValidationError, field_validator, model_validator

from flows.common import (
    ClusterParameters,
    RunParameters,
    add_cluster_arguments,
    cluster_client,
    first_error,
    inject_task,
    prefect_api,
    publish_summary,
    report_task,
    run_plan_on_cluster,
    survey_report_task,
    survey_task,
    update_survey_task,
)
from survey_seg.config import RunConfig, add_run_arguments, run_options_from_args
from survey_seg.errors import SurveySegError
from survey_seg.injection import DEFAULT_DENSITY, INJECTION_DIR
from survey_seg.pipeline import RunSummary, new_run_id, pending_tiles, plan_run
from survey_seg.survey_run import MOSAICS_DIR, mosaic_name

__all__ = ["ReprocessParameters", "main", "reprocess_survey"]


class ReprocessParameters(RunParameters):
    """Parameters of :func:`reprocess_survey`, validated before any work starts.

    The run options (``tile_size`` ... ``region``, ``resume``, ``force``, ``clean``)
    are those of ``survey-seg run``, from one definition (:class:`RunParameters`).
    With ``inject``, each mosaic also gets an injection-recovery run (``survey-seg
    inject`` with the same run options) in ``<its output directory>/injection/``.
    """

    mosaics: list[Path] = Field(min_length=1, description="FITS mosaics to screen")
    out_dir: Path = Field(
        description="output directory (with several mosaics: a survey, OUT/mosaics/<name>/)"
    )
    batch_size: int = Field(default=32, ge=1, description="tiles per Prefect task")
    cluster: ClusterParameters = Field(default_factory=ClusterParameters)
    report: bool = True
    inject: bool = Field(default=False, description="also an injection run into OUT/injection/")
    inject_seed: int = Field(default=0, ge=0, description="seed of the injected objects")
    inject_density: float = Field(
        default=DEFAULT_DENSITY, gt=0, description="injected objects per million pixels"
    )
    inject_gain: float | None = Field(
        default=None,
        gt=0,
        description="electrons per image unit of the injected objects' Poisson noise "
        "(default: the GAIN keyword where the pixels are counts)",
    )

    @field_validator("mosaics")
    @classmethod
    def _mosaics_exist(cls, mosaics: list[Path]) -> list[Path]:
        for path in mosaics:
            if not Path(path).is_file():
                raise ValueError(f"mosaic {path} does not exist; check the path")
        names = [mosaic_name(p) for p in mosaics]
        if len(set(names)) != len(names):
            raise ValueError(
                "mosaics must have distinct file names (each gets OUT/mosaics/<name>/)"
            )
        return mosaics

    @model_validator(mode="after")
    def _injection_usable(self) -> ReprocessParameters:
        if not self.inject:
            return self
        if self.region is not None:
            raise ValueError(
                "inject screens the whole mosaic, so that every injected object is counted; "
                "drop region or inject"
            )
        for mosaic in self.mosaics:
            target = self.injection_dir(mosaic)
            if self.clean or not target.exists():
                continue
            if not target.is_dir() or any(target.iterdir()):
                raise ValueError(
                    f"{target} holds an earlier injection run, which only clean discards; "
                    "set clean=True, remove it, or set inject=False"
                )
        return self

    def output_dir(self, mosaic: Path) -> Path:
        """Where the results of ``mosaic`` go (a survey's: ``OUT/mosaics/<name>/``)."""
        if len(self.mosaics) == 1:
            return self.out_dir
        return self.out_dir / MOSAICS_DIR / mosaic_name(mosaic)

    def injection_dir(self, mosaic: Path) -> Path:
        """Where the injection run of ``mosaic`` goes (with ``inject``)."""
        return self.output_dir(mosaic) / INJECTION_DIR


@flow(name="reprocess-survey", log_prints=True)
def reprocess_survey(parameters: ReprocessParameters) -> list[RunSummary]:
    """Screen every tile of every mosaic and merge the results.

    Every mosaic and output directory is validated before any of them is
    touched; tiles already finished with the same input and model are skipped.
    """
    logger = get_run_logger()
    config = parameters.run_config()
    if len(parameters.mosaics) > 1:
        return _reprocess_as_survey(parameters, config)
    plans = [
        plan_run(mosaic, parameters.output_dir(mosaic), config, **parameters.output_options())
        for mosaic in parameters.mosaics
    ]  # fmt: skip
    summaries = []
    with cluster_client(parameters.cluster) as client:
        for plan in plans:
            run_id = new_run_id()
            todo, finished = pending_tiles(plan)
            logger.info("%s: %d tiles to screen, %d already done", plan.mosaic.path, len(todo),
                        len(finished))  # fmt: skip
            summary = run_plan_on_cluster(
                plan, todo, len(finished), run_id, client, parameters.batch_size
            )
            report = report_task(plan.out_dir) if parameters.report else None
            publish_summary(summary, report, key=f"survey-summary-{Path(plan.mosaic.path).stem}"
                            .lower().replace("_", "-"))  # fmt: skip
            summaries.append(summary)
            if parameters.inject:
                _inject(parameters, Path(plan.mosaic.path), config, client)
    return summaries


def _reprocess_as_survey(parameters: ReprocessParameters, config: RunConfig) -> list[RunSummary]:
    """Several mosaics: one survey run (tiles of all mosaics together, survey products)."""
    logger = get_run_logger()
    with cluster_client(parameters.cluster) as client:
        survey = survey_task(
            list(parameters.mosaics), parameters.out_dir, config, client,
            parameters.output_options(),
        )  # fmt: skip
        logger.info(
            "survey %s: %d mosaics, %d tiles screened, %d skipped, %d failed; %d primary "
            "sources", survey.out_dir, survey.n_mosaics, survey.n_screened, survey.n_skipped,
            survey.n_failed_tiles, survey.n_sources,
        )  # fmt: skip
        for name, error in survey.failed_mosaics.items():
            logger.error("mosaic %s failed: %s", name, error)
        summaries = []
        for mosaic in parameters.mosaics:
            summary = survey.mosaics.get(mosaic_name(mosaic))
            if summary is None:  # failed, or not met by the region
                continue
            out = parameters.output_dir(mosaic)
            report = report_task(out) if parameters.report else None
            publish_summary(summary, report, key=f"survey-summary-{mosaic_name(mosaic)}"
                            .lower().replace("_", "-"))  # fmt: skip
            summaries.append(summary)
            if parameters.inject:
                _inject(parameters, Path(mosaic), config, client)
    if parameters.inject and summaries:
        update_survey_task(parameters.out_dir)  # the quality map gets the completeness
    if parameters.report and (parameters.out_dir / "survey.json").is_file():
        survey_report_task(parameters.out_dir)
    if not survey.ok:
        raise RuntimeError(
            f"the survey in {survey.out_dir} has failed mosaics or tiles "
            f"({', '.join(survey.failed_mosaics) or 'tiles'}); fix them and rerun with resume"
        )
    return summaries


def _inject(parameters: ReprocessParameters, mosaic: Path, config: RunConfig, client) -> None:
    """The injection run of ``mosaic`` (``survey-seg inject``) and its report.

    With ``clean``, an earlier injection run in the same place is discarded first.
    """
    out = parameters.injection_dir(mosaic)
    if parameters.clean and out.exists():
        get_run_logger().info("clean: discarding the earlier injection run in %s", out)
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        else:
            out.unlink()
    summary = inject_task(
        mosaic, out, config, parameters.inject_seed, parameters.inject_density,
        parameters.inject_gain, client,
    )  # fmt: skip
    get_run_logger().info(
        "%s: injected %d objects; completeness %s, pair recall %s, spurious fraction %s",
        mosaic, summary["n_injected"], summary["completeness"], summary["pair_recall"],
        summary["spurious_fraction"],
    )  # fmt: skip
    if parameters.report:
        report_task(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the flow; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.reprocess",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("mosaics", nargs="*", type=Path, help="FITS mosaics")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--simulate", type=int, metavar="SIZE",
                        help="first simulate a SIZE x SIZE mosaic into OUT/simulation")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="simulation seed")
    add_run_arguments(parser)
    add_cluster_arguments(parser)
    parser.add_argument("--no-report", action="store_true", help="write no report.html")
    parser.add_argument("--inject", action="store_true",
                        help="also an injection run of each mosaic, in OUT/injection/")  # fmt: skip
    parser.add_argument("--inject-seed", type=int, default=0, help="seed of the injected objects")
    parser.add_argument("--inject-density", type=float, default=DEFAULT_DENSITY,
                        help="objects per million pixels (default %(default)g)")  # fmt: skip
    parser.add_argument("--inject-gain", type=float, default=None, metavar="E_PER_UNIT",
                        help="electrons per image unit of the injected objects' Poisson noise "
                        "(default: the GAIN keyword where the pixels are counts)")  # fmt: skip
    args = parser.parse_args(argv)
    mosaics = list(args.mosaics)
    out = args.out
    try:
        if args.simulate:
            mosaics.append(_simulate(out / "simulation", args.simulate, args.seed))
            out = out / "run"
        parameters = ReprocessParameters(
            mosaics=mosaics, out_dir=out, **run_options_from_args(args),
            resume=args.resume, force=args.force,
            clean=args.clean or bool(args.simulate and (out / "manifest.json").exists()),
            batch_size=args.batch_size, report=not args.no_report,
            cluster=ClusterParameters.from_args(args), inject=args.inject,
            inject_seed=args.inject_seed, inject_density=args.inject_density,
            inject_gain=args.inject_gain,
        )  # fmt: skip
    except ValidationError as error:
        print(f"reprocess: error: {first_error(error)}", file=sys.stderr)
        return 2
    try:
        with prefect_api() as url:
            print(f"Prefect API: {url}")
            summaries = reprocess_survey(parameters)
    except SurveySegError as error:
        print(f"reprocess: error: {error}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(
            f"{summary.out_dir}: {summary.n_screened} tiles screened, {summary.n_skipped} "
            f"skipped, {summary.n_failed} failed; {summary.n_sources} sources, "
            f"{summary.n_blended} blended, {summary.n_clumps} clumps "
            f"in {summary.wall_seconds:.1f} s"
        )
    return 1 if any(s.n_failed for s in summaries) else 0


def _simulate(directory: Path, size: int, seed: int) -> Path:
    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    return write_simulation(simulate_mosaic(SimulationConfig(size=size, seed=seed)), directory)[
        "mosaic"
    ]


if __name__ == "__main__":
    raise SystemExit(main())
