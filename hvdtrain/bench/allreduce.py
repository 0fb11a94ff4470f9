"""``hvdtrain bench allreduce``: bandwidth and latency per backend, with nccl-tests' definitions.

algbw = bytes / time; busbw = algbw * 2(n-1)/n (what each link carries in a ring all-reduce);
time is the slowest rank's median, and with several rounds (every backend once per round, so
drift in the machine hits all alike) the median over rounds. A latency + size/bandwidth
(alpha-beta) line is fitted per backend, weighted so that small and large messages count alike.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import hvdtrain_executable
from hvdtrain.launch.plan import UPSTREAM_VARIANTS, switch_flags

# horovod_sum on the same binary with some of our patches switched back to upstream's behaviour:
# horovod_upstream with all of them (busy waiting, MPI_Allreduce), horovod_mpi with MPI_Allreduce only.
VARIANTS = {f"horovod_{name}": switches for name, switches in UPSTREAM_VARIANTS.items()}
BACKENDS = ("horovod_sum", *VARIANTS, "horovod_avg", "horovod_grouped", "mpi", "gloo", "paired")
# paired: Horovod Sum and raw MPI alternating in one job (allreduce_worker), in two columns.
PAIRED = ("paired_horovod", "paired_mpi")
COLUMNS = tuple(name for name in BACKENDS if name != "paired") + PAIRED
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_sizes(text: str) -> list[int]:
    """``4K,1M,256M`` -> bytes (K, M, G are powers of 1024)."""
    sizes = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)([KMG]?)B?\s*", item.upper())
        if not match or int(match.group(1)) == 0:
            raise HvdtrainError(f"bad message size {item!r} in --sizes", "write sizes like 4K,64K,1M,16M")
        sizes.append(int(match.group(1)) * _UNITS[match.group(2)])
    return sizes


def bandwidths(nbytes: int, time_us: float, world_size: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s."""
    algbw = nbytes / (time_us * 1e-6) / 1e9
    return algbw, algbw * 2 * (world_size - 1) / world_size


def fit_alpha_beta(points: Sequence[tuple[int, float]]) -> dict[str, float]:
    """time = alpha + bytes / beta, least squares on relative error; alpha in us, beta in GB/s."""
    x = np.array([nbytes for nbytes, _ in points], dtype=float)
    t = np.array([time_us for _, time_us in points], dtype=float)
    slope, intercept = np.polyfit(x, t, 1, w=1.0 / t)
    return {"alpha_us": float(max(intercept, 0.0)), "beta_gbps": float(1e-3 / slope) if slope > 0 else float("inf")}


def combine_rounds(rounds: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The median time per (backend, bytes) over rounds, in the first round's order."""
    times: dict[tuple[str, int], list[float]] = {}
    for rows in rounds:
        for row in rows:
            times.setdefault((row["backend"], row["bytes"]), []).append(row["time_us"])
    return [{"backend": backend, "bytes": nbytes, "time_us": statistics.median(values)}
            for (backend, nbytes), values in times.items()]


def build_report(world_size: int, raw: Sequence[Mapping[str, Any]], rounds: int = 1) -> dict[str, Any]:
    """``allreduce.json``: every measurement with its bandwidths, and the fit per backend."""
    results = []
    for row in raw:
        algbw, busbw = bandwidths(row["bytes"], row["time_us"], world_size)
        results.append({"backend": row["backend"], "bytes": row["bytes"], "time_us": row["time_us"],
                        "algbw_gbps": algbw, "busbw_gbps": busbw})
    backends = sorted({row["backend"] for row in results}, key=list(COLUMNS).index)
    fit = {name: fit_alpha_beta([(r["bytes"], r["time_us"]) for r in results if r["backend"] == name])
           for name in backends}
    return {"world_size": world_size, "rounds": rounds, "results": results, "fit": fit}


def render_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["backend", "bytes", "time_us", "algbw_gbps", "busbw_gbps"])
    writer.writeheader()
    writer.writerows(report["results"])
    return out.getvalue()


def render_table(report: Mapping[str, Any]) -> str:
    backends = list(report["fit"])
    sizes = sorted({row["bytes"] for row in report["results"]})
    cell = {(row["backend"], row["bytes"]): row for row in report["results"]}
    lines = [f"all-reduce, {report['world_size']} ranks: time (us) / busbw (GB/s), "
             f"median of {report['rounds']} round(s)",
             f"{'bytes':>10}  " + "  ".join(f"{name:>20}" for name in backends)]
    for size in sizes:
        lines.append(f"{size:>10}  " + "  ".join(
            f"{cell[(name, size)]['time_us']:>10.1f} / {cell[(name, size)]['busbw_gbps']:>7.3f}" for name in backends))
    lines.append("fit (alpha us, beta GB/s): " + ", ".join(
        f"{name} {fit['alpha_us']:.1f}, {fit['beta_gbps']:.2f}" for name, fit in report["fit"].items()))
    if set(PAIRED) <= set(backends):
        horovod, mpi = PAIRED
        lines.append("paired (one job), Horovod's time over raw MPI's: " + ", ".join(
            f"{size} {cell[(horovod, size)]['time_us'] / cell[(mpi, size)]['time_us']:.2f}x" for size in sizes))
    return "\n".join(lines)


def plot_report(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bus, latency) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for name in report["fit"]:
        rows = [row for row in report["results"] if row["backend"] == name]
        bus.plot([r["bytes"] for r in rows], [r["busbw_gbps"] for r in rows], marker="o", label=name)
        latency.plot([r["bytes"] for r in rows], [r["time_us"] for r in rows], marker="o", label=name)
    bus.set(xscale="log", xlabel="bytes", ylabel="busbw (GB/s)", title="bus bandwidth")
    latency.set(xscale="log", yscale="log", xlabel="bytes", ylabel="time (us)", title="time per all-reduce")
    bus.legend()
    figure.suptitle(f"all-reduce, {report['world_size']} ranks")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run_backend(np_: int, backend: str, sizes: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """One job per backend under ``hvdtrain run``; returns rank 0's measurements."""
    result = out / f"raw-{backend}.json"
    switches = switch_flags(VARIANTS.get(backend, ()))
    argv = [hvdtrain_executable(), "run", "-np", str(np_), *switches, "--output-dir",
            str(out / "logs" / backend), "--", sys.executable, "-m", "hvdtrain.bench.allreduce_worker",
            "--backend", "horovod_sum" if backend in VARIANTS else backend, "--sizes", ",".join(map(str, sizes)),
            "--out", str(result)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HvdtrainError(f"the {backend} benchmark failed (exit {done.returncode}); logs in {out / 'logs'}",
                            (done.stderr.strip().splitlines() or ["see the logs"])[-1])
    rows: list[dict[str, Any]] = json.loads(result.read_text())["results"]
    return rows if backend == "paired" else [{**row, "backend": backend} for row in rows]


def run_allreduce_bench(np_: int, sizes: Sequence[int], backends: Sequence[str], rounds: int,
                        out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    raw = combine_rounds([[row for backend in backends for row in run_backend(np_, backend, sizes, out)]
                          for _ in range(rounds)])
    report = build_report(np_, raw, rounds)
    (out / "allreduce.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "allreduce.csv").write_text(render_csv(report))
    plot_report(report, out / "allreduce.png")
    return report
