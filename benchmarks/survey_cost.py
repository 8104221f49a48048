"""Hours and device-hours to screen Euclid Wide with survey-seg, from measured throughput.

The survey is ``--area-deg2`` (default 14,000 deg^2) at ``--pixel-scale``
(default 0.1 arcsec per pixel): ``area * (3600 / scale)^2`` pixels, 1.81e13 by
default, for one band, with no overlap between mosaics.

Throughput comes from the JSON files of ``benchmarks/throughput.py`` (one
measured with ``--device cpu``, one with ``--device cuda``, or either), or is
given directly:

- CPU: survey-seg's end-to-end ``Mpix/s`` on the largest mosaic of the file
  (where fixed start-up costs weigh least), divided by the cores it used (its
  workers, at most the machine's cores; one thread each): Mpix/s per core, or
  ``--cpu-mpix-per-s``. A node of ``--cores-per-node`` cores (default 64) is
  projected to ``per core * cores per node * efficiency``.
- GPU: the same end-to-end ``Mpix/s`` divided by the machine's GPUs: Mpix/s per
  GPU, or ``--gpu-mpix-per-s``. Without either, the GPU rows say "not
  measured".

Scaling to n GPUs or n nodes is assumed linear, discounted by
``--scaling-efficiency`` (default 0.9) for n > 1; the projection from a few
measured cores to a node is discounted by it too. The figures given on the
command line take precedence over the files.

Printed: the pixel count, where each rate comes from, and a markdown table with,
per configuration (1, 8 and 64 GPUs; 1, 8 and 64 CPU nodes), the Mpix/s of one
device or node in that configuration (efficiency included), the wall hours
(``pixels / (n * rate)``) and the device-hours (GPU-hours or node-hours: ``n *
hours``).

Usage::

    python benchmarks/survey_cost.py [THROUGHPUT_JSON ...] [--cpu-mpix-per-s X]
        [--gpu-mpix-per-s Y] [--area-deg2 14000] [--pixel-scale 0.1]
        [--cores-per-node 64] [--scaling-efficiency 0.9] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COUNTS = (1, 8, 64)
"""Numbers of GPUs and of CPU nodes in the table."""


def survey_pixels(area_deg2: float, pixel_scale_arcsec: float) -> float:
    """Pixels covering ``area_deg2`` square degrees at ``pixel_scale_arcsec``."""
    return area_deg2 * (3600.0 / pixel_scale_arcsec) ** 2


def measured_rates(paths: list[Path]) -> dict[str, tuple[float, str]]:
    """Mpix/s per CPU core and per GPU from throughput JSON files, each with its source.

    Returns
    -------
    dict
        ``{"cpu": (rate, description), "gpu": (rate, description)}``, for the
        kinds measured.
    """
    rates: dict[str, tuple[float, str]] = {}
    for path in paths:
        document = json.loads(path.read_text())
        settings = document["settings"]
        run = max(
            (row for row in document["runs"] if row["method"] == "survey-seg"),
            key=lambda row: row["size"],
        )
        if settings["device"] == "cuda":
            kind, unit, units = "gpu", "GPU", settings["gpus"]
        else:
            kind, unit, units = "cpu", "core", min(settings["workers"], settings["cpu_count"])
        if kind in rates:
            raise SystemExit(
                f"{path} and an earlier file are both {kind.upper()} measurements; give one of each"
            )
        rate = run["Mpix/s"] / units
        rates[kind] = (
            rate,
            f"{path}: {run['Mpix/s']:.3g} Mpix/s end to end on a {run['size']}^2 mosaic, "
            f"{settings['workers']} workers, {units} {unit}(s): {rate:.3g} Mpix/s per {unit}",
        )
    return rates


def cost_table(
    pixels: float,
    gpu_rate: float | None,
    core_rate: float | None,
    *,
    cores_per_node: int,
    efficiency: float,
) -> list[dict[str, object]]:
    """Rows for 1, 8 and 64 GPUs and CPU nodes; no numbers where the rate is None."""
    node_rate = core_rate * cores_per_node * efficiency if core_rate else None
    kinds = (
        ("GPU", gpu_rate, "GPU{s}"),
        ("node", node_rate, f"CPU node{{s}} ({cores_per_node} cores)"),
    )
    rows = []
    for unit, rate, name in kinds:
        for n in COUNTS:
            per_unit = rate * (efficiency if n > 1 else 1.0) if rate else None
            hours = pixels / (n * per_unit * 1e6) / 3600 if per_unit else None
            rows.append(
                {
                    "configuration": f"{n} " + name.format(s="s" if n > 1 else ""),
                    "unit": unit,
                    "n": n,
                    "mpix_per_s": per_unit,
                    "hours": hours,
                    "device_hours": n * hours if hours else None,
                }
            )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| configuration | Mpix/s per device or node | hours wall | device-hours |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        if row["mpix_per_s"] is None:
            cells = ["not measured", "-", "-"]
        else:
            cells = [
                f"{row['mpix_per_s']:.3g}",
                f"{row['hours']:,.1f}",
                f"{row['device_hours']:,.0f} {row['unit']}-h",
            ]
        lines.append(f"| {row['configuration']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="*", help="JSON of benchmarks/throughput.py")
    parser.add_argument("--cpu-mpix-per-s", type=float, help="measured Mpix/s per CPU core")
    parser.add_argument("--gpu-mpix-per-s", type=float, help="measured Mpix/s per GPU")
    parser.add_argument("--area-deg2", type=float, default=14_000.0, help="survey area")
    parser.add_argument(
        "--pixel-scale", type=float, default=0.1, help="arcsec per pixel (Euclid VIS: 0.1)"
    )
    parser.add_argument("--cores-per-node", type=int, default=64, help="cores of a CPU node")
    parser.add_argument(
        "--scaling-efficiency",
        type=float,
        default=0.9,
        help="fraction of linear scaling kept beyond the measured configuration",
    )
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    args = parser.parse_args()

    rates = measured_rates(args.files)
    for kind, figure in (("cpu", args.cpu_mpix_per_s), ("gpu", args.gpu_mpix_per_s)):
        if figure is not None:
            unit = "core" if kind == "cpu" else "GPU"
            rates[kind] = (figure, f"--{kind}-mpix-per-s: {figure:.3g} Mpix/s per {unit}")
    pixels = survey_pixels(args.area_deg2, args.pixel_scale)
    print(
        f"survey: {args.area_deg2:,.0f} deg^2 at {args.pixel_scale:g} arcsec/pixel = "
        f"{pixels:.3g} pixels (one band, no overlap)"
    )
    for kind in ("cpu", "gpu"):
        source = rates[kind][1] if kind in rates else "not measured"
        print(f"{kind.upper()}: {source}")
    print(
        f"scaling: linear x {args.scaling_efficiency:g} beyond one device or node, and from "
        f"the measured cores to a {args.cores_per_node}-core node\n"
    )
    gpu_rate = rates["gpu"][0] if "gpu" in rates else None
    core_rate = rates["cpu"][0] if "cpu" in rates else None
    rows = cost_table(
        pixels,
        gpu_rate,
        core_rate,
        cores_per_node=args.cores_per_node,
        efficiency=args.scaling_efficiency,
    )
    print(markdown(rows))

    if args.json:
        document = {
            "settings": {
                "area_deg2": args.area_deg2,
                "pixel_scale_arcsec": args.pixel_scale,
                "cores_per_node": args.cores_per_node,
                "scaling_efficiency": args.scaling_efficiency,
                "files": [str(path) for path in args.files],
            },
            "pixels": pixels,
            "mpix_per_s_per_core": core_rate,
            "mpix_per_s_per_gpu": gpu_rate,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
