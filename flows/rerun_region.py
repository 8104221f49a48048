"""Flow ``rerun_region``: re-screen exactly the tiles of an earlier run that meet a region.

Run it as::

    python -m flows.rerun_region OUT_DIR --region cone:150.1,2.2,0.01 [--method unet --model M]

The tiles that meet the region get a new ``run_id`` in ``tiles.parquet``; every
other row and pixel of the outputs is left byte for byte as it was.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
)
from survey_seg.errors import SurveySegError
from survey_seg.pipeline import RunSummary, new_run_id, plan_rerun

__all__ = ["RerunParameters", "main", "rerun_region"]


class RerunParameters(BaseModel):
    """Parameters of :func:`rerun_region`, validated before any work starts."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Field(description="output directory of an earlier run")
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
        if not (Path(out_dir) / "manifest.json").is_file():
            raise ValueError(f"{out_dir} holds no survey-seg run (no manifest.json)")
        return out_dir

    @field_validator("region")
    @classmethod
    def _region_parses(cls, region: str) -> str:
        return check_region(region)


@flow(name="rerun-region", log_prints=True)
def rerun_region(parameters: RerunParameters) -> RunSummary:
    """Re-screen the tiles of ``parameters.out_dir`` that meet the region; merge."""
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
    print(f"{summary.out_dir}: {summary.n_screened} tiles rescreened, {summary.n_failed} failed")
    return 1 if summary.n_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
