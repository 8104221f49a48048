"""The ``survey-seg`` command.

``survey-seg simulate OUT_DIR``
    Write a simulated mosaic and its truth.
``survey-seg run MOSAIC.fits --out OUT_DIR``
    Screen a mosaic tile by tile on a dask cluster and merge the results.
``survey-seg inject MOSAIC.fits --out OUT_DIR``
    Inject synthetic objects, screen the mosaic and its negative, count what returns.
``survey-seg demo [OUT_DIR]``
    Simulate a mosaic, screen it on a local cluster, score it against the truth.
``survey-seg train TASK --out DIR``
    Train a network on simulated scenes.
``survey-seg report OUT_DIR``
    Write ``OUT_DIR/report.html`` with quick-look PNGs.
``survey-seg certs DIR``
    Create a CA and one certificate for TLS between dask scheduler, workers and client.

Problems a user can fix print one line naming the problem and the fix, and exit
with status 2; a run in which some tiles failed exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from survey_seg import __version__
from survey_seg.errors import InputError, SurveySegError

__all__ = ["main"]

EXIT_TILES_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SurveySegError as error:
        print(f"survey-seg: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("survey-seg: interrupted; finish the run with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the bad argument and where to read the usage; exit 2."""
        self.exit(
            EXIT_USAGE,
            f"survey-seg: error: {_one_line(message)}; see '{self.prog} --help'\n",
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="survey-seg",
        description="Screen sky-survey mosaics for data quality, blends and clumps.",
    )
    parser.add_argument("--version", action="version", version=f"survey-seg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write a simulated mosaic and its truth")
    simulate.add_argument("out_dir", type=Path, help="directory for mosaic.fits and truth files")
    simulate.add_argument("--size", type=int, default=2048, help="mosaic side in pixels")
    simulate.add_argument("--seed", type=int, default=0, help="random seed")
    simulate.set_defaults(handler=_simulate)

    run = commands.add_parser("run", help="screen a FITS mosaic, or a survey of many")
    run.add_argument(
        "mosaic",
        nargs="+",
        help="FITS mosaic with a celestial WCS; several, a glob ('tiles/*.fits') or a list "
        "file (@list.txt, one path a line) screen a survey into OUT/mosaics/<name>/ and "
        "merge survey catalogs",
    )
    run.add_argument("--out", type=Path, required=True, help="output directory")
    _add_run_options(run)
    run.set_defaults(handler=_run_command)

    inject = commands.add_parser(
        "inject",
        help="inject synthetic objects, screen the mosaic and its negative, count what returns",
    )
    inject.add_argument("mosaic", type=Path, help="FITS mosaic with a celestial WCS")
    inject.add_argument("--out", type=Path, required=True, help="new output directory")
    inject.add_argument("--seed", type=int, default=0, help="seed of the injected objects")
    inject.add_argument(
        "--density",
        type=float,
        default=None,
        metavar="PER_MPIX",
        help="injected objects per million pixels (default 400)",
    )
    inject.add_argument(
        "--gain",
        type=float,
        default=None,
        metavar="E_PER_UNIT",
        help="electrons per image unit: Poisson noise on the injected objects "
        "(default: the GAIN keyword where the pixels are counts, else none)",
    )
    _add_run_options(inject, output_options=False)
    inject.set_defaults(handler=_inject)

    train = commands.add_parser("train", help="train a network on simulated scenes")
    train.add_argument("task", choices=("screening", "quality", "blends", "clumps"))
    train.add_argument("--out", type=Path, required=True, help="directory for weights and config")
    train.add_argument("--steps", type=int, default=4000, help="optimiser steps")
    train.add_argument("--batch-size", type=int, default=8, help="crops per step")
    train.add_argument("--seed", type=int, default=0, help="seed of scenes and weights")
    train.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    train.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--init", help="weight file to fine-tune from")
    train.add_argument("--width", type=int, default=16, help="channels of the U-Net's first level")
    train.add_argument("--depth", type=int, default=3, help="pooling steps of the U-Net")
    train.add_argument(
        "--offset-head",
        action="store_true",
        help="also train the offset head (each pixel's vector to its object's centre), "
        "which keeps large galaxies whole; --init weights without it grow it",
    )
    train.add_argument(
        "--boundary-head",
        action="store_true",
        help="also train the boundary head (where an object's pixels border another "
        "object's); --init weights without it grow it",
    )
    train.add_argument(
        "--jitter", type=float, default=0.25, help="largest relative PSF and noise change"
    )
    train.add_argument(
        "--galsim-fraction",
        type=float,
        default=0.0,
        help="fraction of scene galaxies drawn by GalSim as bulge + disk or knotty (default 0)",
    )
    train.add_argument(
        "--crowded-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes that are also crowded star fields (default 0)",
    )
    train.add_argument(
        "--crowded-density",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="stars per million pixels of a crowded scene, drawn log-uniformly "
        "(default: survey_seg.train.CROWDED_STAR_DENSITY, 500 5000)",
    )
    train.add_argument(
        "--correlated-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes whose noise is correlated, as a drizzle's (default 0)",
    )
    train.add_argument(
        "--large-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes that also hold large galaxies, 4-20 PSF FWHM (default 0)",
    )
    train.add_argument(
        "--large-clumpy-fraction",
        type=float,
        default=0.0,
        help="fraction of those large galaxies that are clumpy, clumps of 8-15 %% of "
        "the host's light (default 0)",
    )
    train.add_argument(
        "--undersampled-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes shown as an undersampled mosaic is screened: averaged "
        "in 2 x 2 blocks, then upsampled by 2 (default 0)",
    )
    train.add_argument(
        "--varied-psf-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes whose PSF is a Moffat of beta 2-5 or a Kolmogorov, "
        "elliptical up to 0.15 (default 0)",
    )
    train.add_argument(
        "--wide-psf-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes shown as a mosaic with a PSF 2-4 times wider is "
        "screened: simulated with that PSF, then binned back with its truth (default 0)",
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument(
        "--data-workers",
        type=int,
        default=0,
        metavar="N",
        help="processes that simulate batches ahead of the optimiser (default 0: none)",
    )
    train.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="model config to distil: the network also learns its averaged predictions",
    )
    train.add_argument(
        "--distill-weight",
        type=float,
        default=0.5,
        help="share of the loss that is distillation with --teacher (default 0.5)",
    )
    train.add_argument(
        "--truth-taught-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="with --teacher, weight of the pixels of knotty irregulars, which the "
        "distillation learns from the truth (default 1: as any pixel)",
    )
    train.add_argument(
        "--pair-truth-fwhm",
        type=float,
        default=0.0,
        metavar="F",
        help="with --teacher, also learn from the truth the objects with a neighbour "
        "within F PSF FWHM, weighted as the knots are (default 0: none)",
    )
    train.add_argument(
        "--head-weight",
        action="append",
        default=[],
        metavar="HEAD=W",
        help=(
            "loss weight of one head, replacing the task's (repeatable), e.g. clump=2; "
            "0 leaves the head untrained"
        ),
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_train)

    average = commands.add_parser(
        "average-weights",
        help="write the weighted mean of networks fine-tuned from one start (a model soup)",
    )
    average.add_argument("weights", type=Path, nargs="+", help="weight files (.pt)")
    average.add_argument(
        "--fractions", type=float, nargs="+", required=True, help="one per file, summing to 1"
    )
    average.add_argument("--out", type=Path, required=True, help="weight file to write")
    average.set_defaults(handler=_average_weights)

    calibrate = commands.add_parser(
        "calibrate-quality",
        help="refit a model's data-quality stamp head on simulated scenes and calibrate it",
    )
    calibrate.add_argument(
        "model", type=Path, help="model config (e.g. the shipped screening.json)"
    )
    calibrate.add_argument("--out", type=Path, required=True, help="directory for the new model")
    calibrate.add_argument("--scenes", type=int, default=400, help="training scenes (512^2)")
    calibrate.add_argument(
        "--validation-scenes", type=int, default=160, help="validation scenes, for the temperatures"
    )
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the scenes")
    calibrate.add_argument(
        "--wide-psf-fraction",
        type=float,
        default=0.0,
        help="fraction of scenes seen binned, as a mosaic with a PSF 2-4 times wider is "
        "screened (default 0)",
    )
    calibrate.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    calibrate.set_defaults(handler=_calibrate_quality)

    report = commands.add_parser("report", help="write OUT/report.html with quick-look PNGs")
    report.add_argument("out_dir", type=Path, help="output directory of a run")
    report.set_defaults(handler=_report)

    demo = commands.add_parser("demo", help="simulate a mosaic, screen it, score it")
    demo.add_argument("out_dir", type=Path, nargs="?", default=Path("demo-out"))
    demo.add_argument("--size", type=int, default=2048, help="mosaic side in pixels")
    demo.add_argument("--seed", type=int, default=1, help="simulation seed")
    _add_run_options(demo, output_options=False)
    demo.set_defaults(handler=_demo, default_workers=2)

    certs = commands.add_parser(
        "certs", help="create TLS certificates for the dask scheduler, workers and client"
    )
    certs.add_argument("directory", type=Path, help="directory for ca.pem, cert.pem, key.pem")
    certs.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="DNS name or IP address the certificate names (repeat; default localhost, 127.0.0.1)",
    )
    certs.add_argument("--days", type=int, default=825, help="validity in days")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files")
    certs.set_defaults(handler=_certs)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, *, output_options: bool = True) -> None:
    from survey_seg.config import add_run_arguments

    add_run_arguments(parser, output_options=output_options)
    parser.add_argument("--workers", type=int, metavar="N", help="dask worker processes")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="use a running dask scheduler")
    parser.add_argument(
        "--cluster",
        choices=("auto", "local", "cuda", "serial"),
        default=None,
        help="auto (default): GPUs when present, else local processes; serial: no dask",
    )
    parser.add_argument(
        "--cluster-spec",
        type=Path,
        metavar="FILE",
        help="cluster spec YAML (e.g. deploy/clusters/slurm.yaml); not with --cluster, "
        "--workers or --scheduler",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--no-report", action="store_true", help="do not write OUT/report.html at the end"
    )


def _simulate(args: argparse.Namespace) -> int:
    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    config = _simulation_config(SimulationConfig, args.size, args.seed)
    started = time.perf_counter()
    paths = write_simulation(simulate_mosaic(config), args.out_dir)
    print(f"simulated {args.size} x {args.size} pixels in {time.perf_counter() - started:.1f} s")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from survey_seg.models.unet import UNetConfig
    from survey_seg.train import TrainConfig, loss_weights, train

    try:
        config = TrainConfig(
            architecture=UNetConfig(
                width=args.width,
                depth=args.depth,
                offset_head=args.offset_head,
                boundary_head=args.boundary_head,
            ),
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            learning_rate=args.learning_rate,
            init_weights=args.init,
            condition_jitter=args.jitter,
            galsim_fraction=args.galsim_fraction,
            crowded_fraction=args.crowded_fraction,
            **({"crowded_density": tuple(args.crowded_density)} if args.crowded_density else {}),
            correlated_fraction=args.correlated_fraction,
            large_fraction=args.large_fraction,
            large_clumpy_fraction=args.large_clumpy_fraction,
            undersampled_fraction=args.undersampled_fraction,
            wide_psf_fraction=args.wide_psf_fraction,
            varied_psf_fraction=args.varied_psf_fraction,
            threads=args.threads,
            data_workers=args.data_workers,
            head_weights=_head_weights(args.head_weight),
            teacher=str(args.teacher) if args.teacher else None,
            distill_weight=args.distill_weight,
            truth_taught_weight=args.truth_taught_weight,
            pair_truth_fwhm=args.pair_truth_fwhm,
        )
        loss_weights(args.task, config)  # a head the task does not train
    except ValueError as error:
        raise _UsageError(str(error)) from None
    result = train(
        args.task,
        args.out,
        config,
        progress=not args.no_progress,
        log=lambda line: print(line, flush=True),
    )
    print(f"trained {args.task} in {result.seconds:.0f} s: {result.config_path}")
    return 0


def _average_weights(args: argparse.Namespace) -> int:
    from survey_seg.train import average_weights

    missing = [str(path) for path in args.weights if not path.is_file()]
    if missing:
        raise _UsageError(f"weight file(s) {', '.join(missing)} do not exist")
    try:
        sha256 = average_weights(args.weights, args.fractions, args.out)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    print(f"wrote {args.out} (sha256 {sha256}); put that sha256 in its model config")
    return 0


def _calibrate_quality(args: argparse.Namespace) -> int:
    from survey_seg.stamp_head import StampHeadConfig, calibrate_stamp_head

    if not args.model.is_file():
        raise _UsageError(f"model config {args.model} does not exist; give a model's .json")
    try:
        config = StampHeadConfig(
            scenes=args.scenes,
            validation_scenes=args.validation_scenes,
            seed=args.seed,
            wide_psf_fraction=args.wide_psf_fraction,
        )
    except ValueError as error:
        raise _UsageError(str(error)) from None
    path = calibrate_stamp_head(
        args.model, args.out, config, threads=args.threads, log=lambda line: print(line, flush=True)
    )
    print(f"calibrated stamp head: {path}")
    return 0


def _head_weights(items: list[str]) -> dict[str, float] | None:
    """``["clump=2", ...]`` as ``{"clump": 2.0}``; a usage error names a bad item."""
    weights = {}
    for item in items:
        head, sep, value = item.partition("=")
        try:
            weights[head.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise _UsageError(f"--head-weight {item!r}: write HEAD=WEIGHT, e.g. clump=2")
    return weights or None


def _report(args: argparse.Namespace) -> int:
    if (args.out_dir / "survey.json").is_file():  # a survey: its own report
        from survey_seg.survey_report import make_survey_report

        print(f"report: {make_survey_report(args.out_dir)}")
        return 0
    from survey_seg.report import make_report

    print(f"report: {make_report(args.out_dir)}")
    return 0


def _simulation_config(config_class, size: int, seed: int):
    try:
        return config_class(size=size, seed=seed)
    except ValueError as error:
        raise _UsageError(str(error)) from None


class _UsageError(SurveySegError):
    """A bad command-line value."""


def _run_command(args: argparse.Namespace) -> int:
    """``run``: one mosaic as ever, a survey for several (or a glob or list file)."""
    from survey_seg.survey_run import expand_mosaic_arguments

    mosaics, survey = expand_mosaic_arguments(args.mosaic)
    if not survey:
        args.mosaic = mosaics[0]
        return _run(args)
    args.mosaic = mosaics
    return _run_survey(args)


def _run_survey(args: argparse.Namespace) -> int:
    from survey_seg.config import run_config_from_args
    from survey_seg.survey_run import execute_survey, plan_survey

    cluster = _cluster_spec(args)
    config = run_config_from_args(args)
    plan = plan_survey(
        args.mosaic,
        args.out,
        config,
        resume=getattr(args, "resume", False),
        force=getattr(args, "force", False),
        clean=args.clean,
    )
    if plan.mode == "clean":
        print(f"--clean: discarding the earlier survey in {plan.out_dir}")
    if config.region:
        screened = [name for name, run in zip(plan.names, plan.plans, strict=True) if run]
        n_tiles = sum(len(run.selected) for run in plan.plans if run)
        print(
            f"--region: screening {n_tiles} tiles of {len(screened)} of {len(plan.names)} "
            "mosaics; every other tile keeps its results"
        )
    with _client(cluster) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        summary = execute_survey(plan, client=client, progress=not args.no_progress)
    print(
        f"screened {summary.n_screened} tiles of {summary.n_mosaics} mosaics "
        f"({summary.n_skipped} already done, {summary.n_failed_tiles} failed) in "
        f"{summary.wall_seconds:.1f} s: {summary.n_sources} sources and {summary.n_clumps} "
        "clumps in the survey catalogs (each object once)"
    )
    print(f"outputs in {summary.out_dir} (survey.json; mosaics/<name>/ for each mosaic)")
    if not args.no_report and (summary.out_dir / "survey.json").is_file():
        from survey_seg.survey_report import make_survey_report

        print(f"report: {make_survey_report(summary.out_dir)}")
    _print_warnings(caught)
    for message in summary.warnings:
        print(f"survey-seg: {message}", file=sys.stderr)
    if not summary.ok:
        print(
            f"survey-seg: {len(summary.failed_mosaics)} mosaics and {summary.n_failed_tiles} "
            "tiles failed (see survey.json and tiles.parquet); rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_TILES_FAILED
    return 0


def _run(args: argparse.Namespace, *, clean: bool | None = None):
    from survey_seg.config import run_config_from_args
    from survey_seg.pipeline import execute_run, plan_run

    cluster = _cluster_spec(args)
    config = run_config_from_args(args)
    plan = plan_run(
        args.mosaic,
        args.out,
        config,
        resume=getattr(args, "resume", False),
        force=getattr(args, "force", False),
        clean=args.clean if clean is None else clean,
    )
    if plan.mode == "clean":
        print(f"--clean: discarding the earlier run in {plan.out_dir}")
    elif plan.mode == "rerun":
        print(
            f"--force: screening {len(plan.selected)} of {len(plan.grid)} tiles again; "
            "the others keep their results"
        )
    with _client(cluster) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        summary = execute_run(plan, client=client, progress=not args.no_progress)
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none"
    print(
        f"screened {summary.n_screened} tiles ({summary.n_skipped} already done, "
        f"{summary.n_failed} failed) in {summary.wall_seconds:.1f} s: {summary.n_sources} "
        f"sources, {summary.n_blended} blended, {summary.n_clumps} clumps; tiles: {verdicts}"
    )
    print(f"outputs in {summary.out_dir}")
    if not args.no_report:
        from survey_seg.report import make_report

        print(f"report: {make_report(summary.out_dir)}")
    _print_warnings(caught)
    if summary.n_failed:
        print(
            f"survey-seg: {summary.n_failed} tiles failed (see tiles.parquet); rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_TILES_FAILED
    return 0


def _inject(args: argparse.Namespace) -> int:
    from survey_seg.config import run_config_from_args
    from survey_seg.injection import DEFAULT_DENSITY, INJECTION_JSON, run_injection

    cluster = _cluster_spec(args)
    config = run_config_from_args(args)
    density = DEFAULT_DENSITY if args.density is None else args.density
    with _client(cluster) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        summary = run_injection(
            args.mosaic,
            args.out,
            config,
            seed=args.seed,
            density=density,
            gain=args.gain,
            client=client,
            progress=not args.no_progress,
        )
    shown = ("completeness", "pair_recall", "clump_completeness", "spurious_fraction")
    print(
        f"injected {summary['n_injected']} objects ({summary['n_skipped']} not drawn); "
        + ", ".join(f"{key} {_shown(summary[key])}" for key in shown)
    )
    print(f"outputs in {args.out}; summary: {args.out / INJECTION_JSON}")
    if not args.no_report:
        from survey_seg.report import make_report

        print(f"report: {make_report(args.out)}")
    _print_warnings(caught)
    return 0


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once, in the order first raised.

    An injection screens the mosaic twice (injected and negated) and a
    survey every mosaic: the same advice would otherwise be printed once a run.
    """
    for message in dict.fromkeys(str(warning.message) for warning in caught):
        print(f"survey-seg: warning: {message}", file=sys.stderr)


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cluster_spec(args: argparse.Namespace):
    """The run's cluster spec from the options (None: in this process, no dask).

    Checked before anything is written, so that a clash of options costs nothing.
    """
    from survey_seg.cluster import ClusterSpec, check_spec_file_alone

    if args.cluster_spec is not None:
        others = {
            "--cluster": args.cluster,
            "--workers": args.workers,
            "--scheduler": args.scheduler,
        }
        try:
            check_spec_file_alone("--cluster-spec", others)
        except InputError as error:
            raise _UsageError(str(error)) from None
        return ClusterSpec.from_file(args.cluster_spec)
    if args.scheduler:
        return ClusterSpec(kind="address", address=args.scheduler)
    if args.cluster == "serial":
        return None
    workers = args.workers if args.workers is not None else getattr(args, "default_workers", None)
    return ClusterSpec(kind=args.cluster or "auto", n_workers=workers)


def _client(spec):
    """A dask client for ``spec``, or None in a null context for serial runs."""
    import contextlib

    from survey_seg.cluster import dask_client

    return contextlib.nullcontext(None) if spec is None else dask_client(spec)


def _certs(args: argparse.Namespace) -> int:
    from survey_seg.security import write_tls_certificates

    kwargs = {"hosts": args.host} if args.host else {}
    paths = write_tls_certificates(
        args.directory, days=args.days, overwrite=args.overwrite, **kwargs
    )
    paths = {role: path.resolve() for role, path in paths.items()}
    print(
        f"wrote {paths['ca_file']}, {paths['cert']}, {paths['key']} "
        f"(and {paths['ca_key']}, which only signs new certificates: keep it off the cluster)"
    )
    print(
        f"cluster spec: tls_ca_file: {paths['ca_file']}, tls_cert: {paths['cert']}, "
        f"tls_key: {paths['key']} (the same paths on every node)"
    )
    print(
        "Kubernetes: kubectl -n survey create secret generic survey-seg-dask-tls "
        + " ".join(f"--from-file={paths[role]}" for role in ("ca_file", "cert", "key"))
    )
    print("then: kubectl apply -f deploy/kubernetes/dask-cluster.yaml")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from survey_seg.evaluate import score_catalog
    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    _cluster_spec(args)  # a clash of cluster options is refused before simulating
    started = time.perf_counter()
    simulation_dir = args.out_dir / "simulation"
    config = _simulation_config(SimulationConfig, args.size, args.seed)
    sim = simulate_mosaic(config)
    paths = write_simulation(sim, simulation_dir)
    print(f"simulated a {args.size} x {args.size} mosaic: {paths['mosaic']}")
    args.mosaic = paths["mosaic"]
    args.out = args.out_dir / "run"
    status = _run(args, clean=(args.out / "manifest.json").exists())
    import pandas as pd

    sources = pd.read_parquet(args.out / "sources.parquet")
    score = score_catalog(
        sources,
        sim.truth_sources,
        pixel_scale_arcsec=config.pixel_scale_arcsec,
        truth_mask=sim.truth_mask,
    )
    print(
        f"against the truth: completeness {score.completeness:.3f} (S/N > 10), "
        f"purity {score.purity:.3f}, blend recall {score.blend_recall:.3f} "
        f"({score.n_close_pairs} pairs closer than 1.5 arcsec)"
    )
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
