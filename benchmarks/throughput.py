"""Throughput and memory of survey-seg against SEP and photutils on simulated mosaics.

For each ``--sizes`` side (default 4096 and 8192) one nominal mosaic is simulated
(seed 931) and written as ``mosaic.fits``; then, on that same file, one after the
other:

- ``survey-seg``: ``survey-seg run`` with the default network on ``--workers``
  dask worker processes (``--cluster local``, or ``cuda`` for
  ``LocalCUDACluster``), ``--tile-size`` (default survey-seg's, 512) and the
  network's halo (at least 64), started as a subprocess of this script (``python
  -m survey_seg.cli``, so the same ``survey_seg`` as this script's). Its
  ``wall_s`` is end to end: interpreter start, validation, ingest (FITS to
  Zarr), cluster start, screening, merge and cluster shutdown.
- ``sep``: background, then extraction with matched filter, deblending and a
  segmentation map (as in ``benchmarks/quality.py``); ``photutils``:
  Background2D, detect_sources and deblend_sources (SourceFinder) and a
  SourceCatalog (as there). Each runs in a subprocess of its own, in one
  process as users run them; its ``wall_s`` starts before reading the FITS file
  with astropy (the read is included) and ends with the catalog, imports excluded.

Printed per size and method:

- ``wall_s``: wall seconds as above; ``Mpix/s``: mosaic pixels (1e6) per wall
  second; ``vs_sep``: that rate over SEP's.
- ``driver_MiB``: peak resident memory of the method's main process (survey-seg:
  the ``survey-seg run`` process, which also hosts the dask scheduler, ingests
  and merges); ``worker_MiB``: the largest peak over the dask worker processes
  (its descendants started by ``multiprocessing.spawn``). Peaks are the
  kernel's high-water mark (``VmHWM`` of ``/proc/PID/status``, Linux): read every
  0.1 s while a survey-seg process lives, and by SEP's and photutils' processes
  themselves when done. Host memory only: GPU memory is not counted.

The survey-seg time split, in seconds and % of ``wall_s``: the busy time of the
workers, summed over the tiles of ``tiles.parquet`` and divided by the number of
workers, gives each component's share of the wall time:

- ``network``: the network's forward pass (``seconds_network``);
- ``pre/post``: the rest of screening a tile (``seconds - seconds_network``):
  network input, background, deblending, measurement, masks;
- ``zarr_io``: reading tile windows (``seconds_read``) and writing tile cores
  (``seconds_write``), plus the ingest FITS -> Zarr. The run records no ingest
  time, so the ingest is timed again here, alone, on the same file
  (``survey_seg.store.ingest_mosaic``), and printed on a line of its own;
- ``merge``: building the global tables (``summary.merge_seconds`` of
  ``manifest.json``);
- ``orchestration``: the rest of the wall time: interpreter start and imports,
  validating and hashing the FITS file, cluster start and shutdown, the workers'
  imports and model loading, scheduling, per-tile table writes, idle workers.

Scaling (when ``--workers`` > 1): survey-seg on the ``--scaling-size`` mosaic
with 1 worker and with ``--workers``; ``Mpix/s`` of each (end to end) and their
ratio.

Inference alone: ``survey_seg.inference.load_predictor(device=--device)
.predict(planes)`` on random ``(3, tile + 2 halo, tile + 2 halo)`` windows after
one warm-up call, repeated for at least 5 s; ``Mpix/s`` of tile cores, with the
device and torch's thread count.

Finally the targets, as a PASS/FAIL checklist: on the smallest size (4096 by
default) survey-seg's ``Mpix/s`` >= 0.5 x SEP's and >= 5 x photutils'; on every
size orchestration plus Zarr I/O <= 15 % of the wall time; the worker peak on the
largest size (8192) at most 10 % above the smallest size's, and under 2 GiB; N
workers >= 0.85 N x the ``Mpix/s`` of one (1.7 x for 2).

``--device cpu`` (the default unless ``--cluster cuda``) hides the GPUs from the
survey-seg runs (``CUDA_VISIBLE_DEVICES=""``); ``--device cuda`` lets its workers
use them. On a one-GPU machine::

    python benchmarks/throughput.py --cluster cuda --workers 1 --no-scaling

Usage::

    python benchmarks/throughput.py [--sizes 4096 8192] [--workers 2]
        [--cluster {local,cuda}] [--device {cpu,cuda}] [--tile-size 512]
        [--scaling-size 4096 | --no-scaling] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

if TYPE_CHECKING:
    import pandas as pd

# pandas, torch and survey_seg are imported where used: the SEP and photutils
# subprocesses run this file too, and their peak memory should hold only numpy,
# astropy and their own package

SEED = 931
HALO = 64
MIB = 2**20
SAMPLE_SECONDS = 0.1
INFERENCE_SECONDS = 5.0

SEP_RATIO = 0.5
PHOTUTILS_RATIO = 5.0
MAX_OVERHEAD = 0.15
MAX_MEMORY_GROWTH = 0.10
MAX_WORKER_BYTES = 2 * 2**30
SCALING_EFFICIENCY = 0.85

SPLIT_ROWS = ("network", "pre/post", "zarr_io", "ingest", "merge", "orchestration", "wall")
"""Lines of the time split: ``ingest`` is part of ``zarr_io``, the others add up to ``wall``."""


# ------------------------------------------------------------------------ baselines


def high_water_mark(pid: int) -> int:
    """Peak resident memory of a live process in bytes (``VmHWM``; Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmHWM in /proc/{pid}/status")


def sep_catalog(image: np.ndarray, variance: np.ndarray) -> int:
    """Run SEP as in ``benchmarks/quality.py``; returns the number of sources."""
    import sep

    image = image.astype(np.float64)  # native byte order, as SEP needs
    mask = ~np.isfinite(image) | ~(variance > 0)
    image = np.where(mask, 0.0, image)
    # the defaults (300,000 pixels, 1,024 sub-objects) overflow on large mosaics
    sep.set_extract_pixstack(max(sep.get_extract_pixstack(), image.size // 10))
    sep.set_sub_object_limit(4096)
    background = sep.Background(image, mask=mask, bw=64, bh=64)
    objects, _ = sep.extract(
        image - background.back(), 1.5,
        err=np.sqrt(np.where(mask, np.inf, variance)).astype(np.float64),
        mask=mask, minarea=5, deblend_nthresh=32, deblend_cont=0.005, segmentation_map=True,
    )  # fmt: skip
    return len(objects)


def photutils_catalog(image: np.ndarray, variance: np.ndarray) -> int:
    """Run photutils as in ``benchmarks/quality.py``; returns the number of sources."""
    from astropy.convolution import convolve
    from astropy.utils.exceptions import AstropyDeprecationWarning
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        image = image.astype(np.float32)  # native byte order
        mask = ~np.isfinite(image) | ~(variance > 0)
        image = np.where(mask, 0.0, image)
        background = Background2D(image, 64, mask=mask, bkg_estimator=MedianBackground())
        data = image - background.background
        convolved = convolve(data, make_2dgaussian_kernel(1.8, size=5))
        threshold = 1.5 * np.sqrt(np.where(mask, np.inf, variance))
        finder = SourceFinder(npixels=5, nlevels=32, contrast=0.005, progress_bar=False)
        segments = finder(convolved, threshold, mask=mask)
        if segments is None:
            return 0
        table = SourceCatalog(data, segments, convolved_data=convolved).to_table(
            columns=["xcentroid", "ycentroid"]
        )
        return len(table)


BASELINES = {"sep": sep_catalog, "photutils": photutils_catalog}
BASELINE_MODULES = {
    "sep": ("sep",),
    "photutils": ("astropy.convolution", "photutils.background", "photutils.segmentation"),
}


def baseline_main(method: str, mosaic: Path) -> None:
    """Run one baseline on ``mosaic`` and print its time, sources and peak memory as JSON."""
    from astropy.io import fits

    for module in BASELINE_MODULES[method]:  # imports before the clock starts
        import_module(module)
    start = time.perf_counter()
    with fits.open(mosaic, memmap=False) as hdus:
        image, variance = hdus[0].data, hdus["VARIANCE"].data
    n_sources = BASELINES[method](image, variance)
    seconds = time.perf_counter() - start
    # not ru_maxrss: it keeps the high-water mark of the parent that forked this process
    peak = high_water_mark(os.getpid())
    print(json.dumps({"seconds": seconds, "n_sources": n_sources, "peak_bytes": peak}))


def run_baseline(method: str, mosaic: Path) -> dict[str, float]:
    """:func:`baseline_main` in a subprocess of its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--_baseline", method, str(mosaic)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{method} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    return {
        "seconds": result["seconds"],
        "n_sources": result["n_sources"],
        "driver_peak": result["peak_bytes"],
    }


# ------------------------------------------------------------------------ survey-seg


class PeakMemory:
    """Peak resident memory of a process and of its dask workers, sampled in a thread.

    Parameters
    ----------
    pid : int
        The driver process; its descendants started by ``multiprocessing.spawn``
        are its workers (the resource tracker is not).
    """

    def __init__(self, pid: int):
        self.driver = psutil.Process(pid)
        self.peaks: dict[int, int] = {}
        self.workers: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.driver, *self.driver.children(recursive=True)]
            except psutil.Error:  # the driver has exited
                processes = []
            for process in processes:
                try:
                    if process.pid != self.driver.pid and process.pid not in self.workers:
                        if "spawn_main" not in " ".join(process.cmdline()):
                            continue
                        self.workers.add(process.pid)
                    peak = high_water_mark(process.pid)
                except (psutil.Error, OSError):  # it exited between listing and reading
                    continue
                self.peaks[process.pid] = max(peak, self.peaks.get(process.pid, 0))
            self._stop.wait(SAMPLE_SECONDS)

    @property
    def driver_peak(self) -> int:
        """Peak of the driver process in bytes."""
        return self.peaks.get(self.driver.pid, 0)

    @property
    def worker_peak(self) -> int:
        """Largest peak over the worker processes in bytes."""
        return max((self.peaks.get(pid, 0) for pid in self.workers), default=0)


def run_survey_seg(
    mosaic: Path,
    out: Path,
    *,
    workers: int,
    cluster: str,
    tile_size: int,
    halo: int,
    env: dict[str, str],
) -> dict[str, float]:
    """``survey-seg run`` in a subprocess: wall time, peak memory and time split."""
    command = [
        sys.executable, "-m", "survey_seg.cli", "run", str(mosaic), "--out", str(out),
        "--workers", str(workers), "--cluster", cluster, "--tile-size", str(tile_size),
        "--halo", str(halo), "--no-progress", "--no-report", "--clean",
    ]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    with PeakMemory(process.pid) as memory:
        output, _ = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"survey-seg run failed (exit {process.returncode}):\n{output[-3000:]}")
    import pandas as pd

    tiles = pd.read_parquet(out / "tiles.parquet")
    tiles = tiles[tiles["status"] == "done"]
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    n_workers = len(memory.workers)
    return {
        "seconds": seconds,
        "driver_peak": memory.driver_peak,
        "worker_peak": memory.worker_peak,
        "n_sources": summary["n_sources"],
        "network": tiles["seconds_network"].sum() / n_workers,
        "pre/post": (tiles["seconds"] - tiles["seconds_network"]).sum() / n_workers,
        "tile_io": (tiles["seconds_read"] + tiles["seconds_write"]).sum() / n_workers,
        "merge": summary["merge_seconds"],
    }


def time_ingest(mosaic: Path, directory: Path, tile_size: int) -> float:
    """Seconds of ingesting ``mosaic`` into a Zarr store, as a run does."""
    from survey_seg.pipeline import RunConfig
    from survey_seg.store import ingest_mosaic, inspect_fits_mosaic

    info = inspect_fits_mosaic(mosaic)
    directory.mkdir(exist_ok=True)
    start = time.perf_counter()
    ingest_mosaic(info, directory, tile_size=tile_size, background_cell=RunConfig().background_cell)
    return time.perf_counter() - start


def time_split(run: dict[str, float], ingest_seconds: float) -> dict[str, float]:
    """Seconds of each line of :data:`SPLIT_ROWS`."""
    split = {
        "network": run["network"],
        "pre/post": run["pre/post"],
        "zarr_io": run["tile_io"] + ingest_seconds,
        "merge": run["merge"],
    }
    split["orchestration"] = run["seconds"] - sum(split.values())
    return {**split, "ingest": ingest_seconds, "wall": run["seconds"]}


def inference_rate(device: str, tile_size: int, halo: int) -> dict[str, object]:
    """Mpix/s of tile cores of the network alone on ``device``, after a warm-up call."""
    import torch

    from survey_seg.inference import load_predictor

    predictor = load_predictor(device=device)
    side = tile_size + 2 * halo
    planes = np.zeros((3, side, side), dtype=np.float32)
    planes[0] = np.random.default_rng(0).standard_normal((side, side))
    planes[2] = 1.0
    predictor.predict(planes)
    calls = 0
    start = time.perf_counter()
    while calls < 3 or time.perf_counter() - start < INFERENCE_SECONDS:
        predictor.predict(planes)  # returns numpy arrays: a GPU has finished
        calls += 1
    seconds = time.perf_counter() - start
    return {
        "device": str(predictor.device),
        "torch_threads": torch.get_num_threads(),
        "window": side,
        "calls": calls,
        "seconds": seconds,
        "core_mpix_per_s": calls * tile_size**2 / seconds / 1e6,
    }


# ------------------------------------------------------------------------ report


def write_mosaic(size: int, directory: Path) -> Path:
    """Simulate the benchmark mosaic of side ``size`` into ``directory``; its FITS path."""
    from survey_seg.simulate import SimulationConfig, simulate_mosaic, write_simulation

    sim = simulate_mosaic(SimulationConfig(size=size, seed=SEED))
    return write_simulation(sim, directory)["mosaic"]


def rate_table(results: dict[int, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """One line per size and method: sources, wall time, Mpix/s, ratio to SEP, peak memory."""
    import pandas as pd

    rows = []
    for size, methods in results.items():
        for method, result in methods.items():
            rate = size * size / 1e6 / result["seconds"]
            rows.append(
                {
                    "size": size,
                    "method": method,
                    "sources": result["n_sources"],
                    "wall_s": result["seconds"],
                    "Mpix/s": rate,
                    "vs_sep": methods["sep"]["seconds"] / result["seconds"],
                    "driver_MiB": result["driver_peak"] / MIB,
                    "worker_MiB": result.get("worker_peak", math.nan) / MIB,
                }
            )
    return pd.DataFrame(rows)


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def checklist(
    table: pd.DataFrame,
    splits: dict[int, dict[str, float]],
    scaling: dict[str, float] | None,
    workers: int,
) -> list[dict[str, object]]:
    """The targets, each with its measured value and status."""
    table = table.set_index(["size", "method"])
    small, large = min(splits), max(splits)
    items: list[dict[str, object]] = []

    def add(check: str, value: float, ok: bool | None) -> None:
        items.append({"check": check, "value": value, "status": _status(ok)})

    for method, target in (("sep", SEP_RATIO), ("photutils", PHOTUTILS_RATIO)):
        ratio = table.loc[(small, "survey-seg"), "Mpix/s"] / table.loc[(small, method), "Mpix/s"]
        add(f"Mpix/s >= {target:g} x {method} at {small}^2", ratio, ratio >= target)
    for size, split in splits.items():
        share = (split["orchestration"] + split["zarr_io"]) / split["wall"]
        check = f"orchestration + Zarr I/O <= {MAX_OVERHEAD:.0%} of wall at {size}^2"
        add(check, share, share <= MAX_OVERHEAD)
    peak_small = table.loc[(small, "survey-seg"), "worker_MiB"]
    peak_large = table.loc[(large, "survey-seg"), "worker_MiB"]
    growth = peak_large / peak_small - 1
    ok = growth <= MAX_MEMORY_GROWTH if large != small else None
    add(f"worker peak at {large}^2 <= {MAX_MEMORY_GROWTH:.0%} above {small}^2's", growth, ok)
    check = f"worker peak at {large}^2 < {MAX_WORKER_BYTES / 2**30:g} GiB"
    add(check, peak_large / 1024, peak_large * MIB < MAX_WORKER_BYTES)
    target = SCALING_EFFICIENCY * workers
    ratio = scaling["ratio"] if scaling else math.nan
    ok = ratio >= target if scaling else None
    add(f"{workers} workers >= {target:.3g} x 1 worker's Mpix/s", ratio, ok)
    return items


def print_report(
    table: pd.DataFrame,
    splits: dict[int, dict[str, float]],
    scaling: dict[str, float] | None,
    inference: dict[str, object],
    items: list[dict[str, object]],
    workers: int,
) -> None:
    """Print the rate table, the time split, the scaling, inference alone and the targets."""
    print("\nthroughput (Mpix = 1e6 pixels; MiB: peak resident memory per process):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))

    print(f"\nsurvey-seg time split (worker busy time / {workers} workers; ingest timed alone):")
    print(f"  {'':<14}" + "".join(f"{f'{size}^2':>18}" for size in splits))
    for name in SPLIT_ROWS:
        label = "  of it ingest" if name == "ingest" else name
        cells = [
            f"{split[name]:8.1f} s {100 * split[name] / split['wall']:5.1f} %"
            for split in splits.values()
        ]
        print(f"  {label:<14}" + "".join(f"{cell:>18}" for cell in cells))

    if scaling:
        print(
            f"\nscaling at {scaling['size']}^2: 1 worker {scaling['mpix_per_s_1']:.2f} Mpix/s, "
            f"{workers} workers {scaling['mpix_per_s_n']:.2f} Mpix/s: {scaling['ratio']:.2f} x"
        )
    print(
        f"\ninference alone on {inference['device']} ({inference['torch_threads']} torch "
        f"threads), {inference['window']}^2 windows: {inference['core_mpix_per_s']:.2f} Mpix/s "
        f"of cores ({inference['calls']} calls in {inference['seconds']:.1f} s)"
    )

    print("\ntargets:")
    for item in items:
        print(f"  {item['status']:4}  {item['check']:<52} {item['value']:.3g}")
    statuses = [item["status"] for item in items]
    verdict = "PASS" if all(s == "PASS" for s in statuses) else "FAIL"
    print(
        f"  overall {verdict}: {statuses.count('PASS')} pass, {statuses.count('FAIL')} fail, "
        f"{statuses.count('n/a')} not measured"
    )


# ------------------------------------------------------------------------ main


def main() -> None:
    from survey_seg.config import DEFAULT_TILE_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[4096, 8192], help="mosaic sides in pixels"
    )
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes")
    parser.add_argument(
        "--cluster", choices=("local", "cuda"), default="local", help="survey-seg run --cluster"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="cpu (GPUs hidden from the runs) or cuda; default cuda with --cluster cuda",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE_SIZE,
        help="tile core side in pixels (default: survey-seg's)",
    )
    parser.add_argument(
        "--scaling-size", type=int, default=4096, help="mosaic side of the 1-worker run"
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1-worker run")
    parser.add_argument(
        "--workdir", type=Path, help="keep mosaics and outputs here (default: a temporary dir)"
    )
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--_baseline", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._baseline:
        baseline_main(args._baseline[0], Path(args._baseline[1]))
        return

    import torch

    from survey_seg.network import NetworkScreener

    device = args.device or ("cuda" if args.cluster == "cuda" else "cpu")
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    halo = max(HALO, NetworkScreener(device="cpu").halo_required)
    options = {"cluster": args.cluster, "tile_size": args.tile_size, "halo": halo, "env": env}
    print(
        f"survey-seg: {args.workers} workers, --cluster {args.cluster}, device {device}, "
        f"tiles {args.tile_size} + halo {halo}; {os.cpu_count()} cores, {gpus} GPUs",
        flush=True,
    )

    sizes = sorted(set(args.sizes))
    results: dict[int, dict[str, dict[str, float]]] = {}
    splits: dict[int, dict[str, float]] = {}
    scaling = None
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for size in sizes:
            mosaic = write_mosaic(size, work / f"mosaic-{size}")
            run = run_survey_seg(mosaic, work / f"run-{size}", workers=args.workers, **options)
            print(f"  {size}^2 survey-seg: {run['seconds']:.1f} s", flush=True)
            ingest = time_ingest(mosaic, work / f"ingest-{size}", args.tile_size)
            splits[size] = time_split(run, ingest)
            results[size] = {"survey-seg": run}
            for method in BASELINES:
                results[size][method] = run_baseline(method, mosaic)
                print(f"  {size}^2 {method}: {results[size][method]['seconds']:.1f} s", flush=True)
        if args.workers > 1 and not args.no_scaling:
            size = args.scaling_size
            mosaic = work / f"mosaic-{size}" / "mosaic.fits"
            if size not in results:
                write_mosaic(size, mosaic.parent)
                many = run_survey_seg(mosaic, work / f"run-{size}", workers=args.workers, **options)
            else:
                many = results[size]["survey-seg"]
            one = run_survey_seg(mosaic, work / f"run-{size}-1", workers=1, **options)
            print(f"  {size}^2 survey-seg, 1 worker: {one['seconds']:.1f} s", flush=True)
            rate_one, rate_many = (size * size / 1e6 / r["seconds"] for r in (one, many))
            scaling = {
                "size": size,
                "workers": args.workers,
                "mpix_per_s_1": rate_one,
                "mpix_per_s_n": rate_many,
                "ratio": rate_many / rate_one,
            }
    inference = inference_rate(device, args.tile_size, halo)

    table = rate_table(results)
    items = checklist(table, splits, scaling, args.workers)
    print_report(table, splits, scaling, inference, items, args.workers)

    if args.json:
        document = {
            "settings": {
                "sizes": sizes,
                "workers": args.workers,
                "cluster": args.cluster,
                "device": device,
                "tile_size": args.tile_size,
                "halo": halo,
                "seed": SEED,
                "cpu_count": os.cpu_count(),
                "gpus": gpus,
            },
            "runs": table.to_dict(orient="records"),
            "split_seconds": splits,
            "scaling": scaling,
            "inference": inference,
            "checklist": items,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from quality import jsonable  # benchmarks/quality.py, beside this script

        args.json.write_text(json.dumps(jsonable(document), indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
