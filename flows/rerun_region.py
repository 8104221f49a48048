"""Flow ``rerun_region``: re-screen exactly the tiles of an earlier run that meet a region.

Run it as::

    python -m flows.rerun_region OUT_DIR --region cone:150.1,2.2,0.01 [--method unet --model M]

The tiles that meet the region get a new ``run_id`` in ``tiles.parquet``; every
other row and pixel of the outputs is left byte for byte as it was. On a survey
(``OUT_DIR/survey.json``) the region reruns the tiles of every mosaic that meet
it, and the survey catalogs and quality map are updated (only the catalog
partitions that change are rewritten).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from flows.common import (
    ClusterParameters,
    add_cluster_arguments,
    check_region,
    cluster_client,
    first_error,
    prefect_api,
    publish_summary,
    report_task,
    run_plan_on_cluster,
    survey_report_task,
    survey_rerun_task,
)
from survey_seg.errors import SurveySegError
from survey_seg.pipeline import RunSummary, new_run_id, plan_rerun
from survey_seg.survey_run import SURVEY_MANIFEST, SurveySummary, plan_survey_rerun

__all__ = ["RerunParameters", "main", "rerun_region"]


class RerunParameters(BaseModel):
    """Parameters of :func:`rerun_region`, validated before any work starts."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Field(description="output directory of an earlier run or survey")
    region: str = Field(description="cone:, box: or tiles: region")
    method: Literal["unet", "classical"] | None = Field(default=None, description="new method")
    model: str | None = Field(default=None, description="new model config")
    mosaic: Path | None = Field(default=None, description="recalibrated mosaic (default: same)")
    batch_size: int = Field(default=32, ge=1)
    cluster: ClusterParameters = Field(default_factory=ClusterParameters)
    report: bool = True

    @field_validator("out_dir")
    @classmethod
    def _is_a_run(cls, out_dir: Path) -> Path:
        if not any((Path(out_dir) / name).is_file() for name in ("manifest.json", SURVEY_MANIFEST)):
            raise ValueError(
                f"{out_dir} holds no survey-seg run (no manifest.json) and no survey "
                f"(no {SURVEY_MANIFEST})"
            )
        return out_dir

    @property
    def is_survey(self) -> bool:
        """Whether ``out_dir`` holds a survey of several mosaics."""
        return (self.out_dir / SURVEY_MANIFEST).is_file()

    @model_validator(mode="after")
    def _one_mosaic_to_recalibrate(self) -> RerunParameters:
        if self.mosaic is not None and self.is_survey:
            raise ValueError(
                "mosaic replaces the mosaic of a single run; a survey's recalibrated mosaics "
                "are rerun with reprocess_survey (region, force) on the new files"
            )
        return self

    @field_validator("region")
    @classmethod
    def _region_parses(cls, region: str) -> str:
        return check_region(region)


@flow(name="rerun-region", log_prints=True)
def rerun_region(parameters: RerunParameters) -> RunSummary | SurveySummary:
    """Re-screen the tiles of ``parameters.out_dir`` that meet the region; merge."""
    if parameters.is_survey:
        return _rerun_survey_region(parameters)
    plan = plan_rerun(
        parameters.out_dir, parameters.region, method=parameters.method, model=parameters.model,
        mosaic_path=parameters.mosaic,
    )  # fmt: skip
    get_run_logger().info("rerunning %d tiles: %s", len(plan.selected), list(plan.selected))
    with cluster_client(parameters.cluster) as client:
        summary = run_plan_on_cluster(
            plan, list(plan.selected), 0, new_run_id(), client, parameters.batch_size
        )
    report = report_task(plan.out_dir) if parameters.report else None
    publish_summary(summary, report, key="rerun-summary")
    return summary


def _rerun_survey_region(parameters: RerunParameters) -> SurveySummary:
    """The region's tiles in every mosaic of a survey; the survey products updated."""
    plan = plan_survey_rerun(
        parameters.out_dir, parameters.region, method=parameters.method, model=parameters.model
    )
    for name, mosaic_plan in zip(plan.names, plan.plans, strict=True):
        if mosaic_plan is not None:
            get_run_logger().info("%s: rerunning tiles %s", name, list(mosaic_plan.selected))
    with cluster_client(parameters.cluster) as client:
        survey = survey_rerun_task(plan, client)
    for name, summary in survey.mosaics.items():
        report = report_task(summary.out_dir) if parameters.report else None
        publish_summary(summary, report, key=f"rerun-summary-{name}".lower().replace("_", "-"))
    if parameters.report:
        survey_report_task(parameters.out_dir)
    return survey


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of the flow; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.rerun_region",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", type=Path, help="output directory of an earlier run")
    parser.add_argument("--region", required=True, help="cone:RA,DEC,R | box:... | tiles:...")
    parser.add_argument("--method")
    parser.add_argument("--model")
    parser.add_argument("--mosaic", type=Path, help="recalibrated mosaic")
    add_cluster_arguments(parser)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    try:
        parameters = RerunParameters(
            out_dir=args.out_dir, region=args.region, method=args.method, model=args.model,
            mosaic=args.mosaic, batch_size=args.batch_size, report=not args.no_report,
            cluster=ClusterParameters.from_args(args),
        )  # fmt: skip
    except ValidationError as error:
        print(f"rerun_region: error: {first_error(error)}", file=sys.stderr)
        return 2
    try:
        with prefect_api():
            summary = rerun_region(parameters)
    except SurveySegError as error:
        print(f"rerun_region: error: {error}", file=sys.stderr)
        return 2
    if isinstance(summary, SurveySummary):
        failed = summary.n_failed_tiles + len(summary.failed_mosaics)
        print(
            f"{summary.out_dir}: {summary.n_screened} tiles rescreened in "
            f"{len(summary.mosaics)} mosaics, {failed} failed; {summary.n_sources} primary sources"
        )
        return 0 if summary.ok else 1
    print(f"{summary.out_dir}: {summary.n_screened} tiles rescreened, {summary.n_failed} failed")
    return 1 if summary.n_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
