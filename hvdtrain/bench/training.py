"""``hvdtrain bench train``: hvdtrain against torch DDP, the N-independent-process limit, a plain
loop, itself at np=1, and itself with upstream's waiting or Horovod's per-tensor all-reduces, in
interleaved rounds so drift in the machine hits every one alike."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hvdtrain.bench.workloads import WORKLOADS
from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import hvdtrain_executable
from hvdtrain.launch.plan import UPSTREAM_VARIANTS, switch_flags

# The same binary with some of our patches switched back to upstream's behaviour: hvdtrain_upstream
# with all of them (busy waiting, MPI_Allreduce), hvdtrain_mpi with MPI_Allreduce only.
VARIANTS = {f"hvdtrain_{name}": switches for name, switches in UPSTREAM_VARIANTS.items()}
# hvdtrain_per_tensor: Horovod's DistributedOptimizer, one all-reduce per gradient (--bucket-mb 0).
CONFIGS = ("hvdtrain", *VARIANTS, "hvdtrain_per_tensor", "ddp", "independent", "plain", "hvdtrain_np1")
EPOCHS = 2  # the first warms up; the second is timed
# Every configuration steps the same SGD, unscaled by the world size. The LR changes the values a
# step computes with, and with them its speed: pinned to one core, hvdtrain's loop trained resnet
# 4% faster at its default LR (0.05) than the baseline loop at 0.01, and as fast at 0.01. A speed
# ratio must not compare two LRs.
OPTIMIZER = ("--lr", "0.01", "--momentum", "0.9")


def build_argv(config: str, workload: str, np_: int, out: Path, batch_size: int,
               timeline: Path | None = None) -> list[str]:
    """The command that measures one configuration (pure)."""
    model, dataset = WORKLOADS[workload]
    hvdtrain = hvdtrain_executable()
    ranks = 1 if config in ("plain", "hvdtrain_np1") else np_
    run = [hvdtrain, "run", "-np", str(ranks), "--output-dir", str(out / "logs")]
    if timeline is not None:
        run += ["--timeline", str(timeline)]
    if config.startswith("hvdtrain"):
        run += switch_flags(VARIANTS.get(config, ()))
        per_tensor = ["--bucket-mb", "0"] if config == "hvdtrain_per_tensor" else []
        return [*run, "--", hvdtrain, "train", "--model", model, "--dataset", dataset, "--epochs", str(EPOCHS),
                "--batch-size", str(batch_size), *OPTIMIZER, "--no-lr-scaling", "--threads-per-rank", "1",
                "--eval-every", str(EPOCHS), *per_tensor, "--out", str(out)]
    worker = [sys.executable, "-m", "hvdtrain.bench.baseline_worker", "--mode", config, "--model", model,
              "--dataset", dataset, "--epochs", str(EPOCHS), "--batch-size", str(batch_size), *OPTIMIZER,
              "--out", str(out / "speed")]
    return worker if config == "plain" else [*run, "--", *worker]


def lockstep_ceiling(step_seconds: Sequence[Sequence[float]]) -> float:
    """The best efficiency any synchronous data-parallel training could reach on these ranks.

    ``step_seconds`` holds each rank's step times, measured while the ranks trained independently.
    In lockstep, step i of every rank ends with the slowest rank's step i, even if communication
    were free. Returns lockstep throughput / independent throughput, with equal batches on every
    rank and steps paired by index.
    """
    steps = min(len(times) for times in step_seconds)
    lockstep = len(step_seconds) / sum(max(times[i] for times in step_seconds) for i in range(steps))
    independent = sum(1 / sum(times[:steps]) for times in step_seconds)
    return lockstep / independent


def read_results(config: str, out: Path) -> tuple[float, float | None]:
    """Samples/s of all ranks together in the timed epoch, and for ``independent`` the lockstep
    ceiling of its ranks' step times (else None)."""
    if config.startswith("hvdtrain"):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return float(json.loads(lines[-1])["samples_per_sec"]), None
    ranks = [json.loads(path.read_text()) for path in out.glob("speed.rank*")]
    ceiling = lockstep_ceiling([rank["step_seconds"] for rank in ranks]) if config == "independent" else None
    return float(sum(rank["samples_per_sec"] for rank in ranks)), ceiling


def measure(config: str, workload: str, np_: int, batch_size: int,
            timeline: Path | None = None) -> tuple[float, float | None]:
    """Samples/s of one run, and for ``independent`` its lockstep ceiling (else None). A failed run's
    logs are kept and named in the error."""
    out = Path(tempfile.mkdtemp(prefix="hvdtrain-bench-"))
    done = subprocess.run(build_argv(config, workload, np_, out, batch_size, timeline), capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise HvdtrainError(f"bench train: {config} on {workload} failed (exit {done.returncode}); its logs are "
                            f"kept in {out}", (done.stderr.strip().splitlines() or ["no output"])[-1])
    results = read_results(config, out)
    shutil.rmtree(out)
    return results


# ratio name -> (numerator, denominator) configurations
RATIOS = {"vs_ddp": ("hvdtrain", "ddp"),
          **{f"vs_{name}": ("hvdtrain", f"hvdtrain_{name}") for name in UPSTREAM_VARIANTS},
          "vs_per_tensor": ("hvdtrain", "hvdtrain_per_tensor"), "efficiency": ("hvdtrain", "independent"),
          "overhead_np1": ("hvdtrain_np1", "plain")}


def summarize(samples: Mapping[str, Sequence[float]], ceilings: Sequence[float]) -> dict[str, Any]:
    """Median and spread (half the range) per configuration, and the ratios users compare.

    ``samples[config][r]`` is round r's speed. A ratio is the median over rounds of that round's
    ratio: the configurations of one round run one after the other, so drift in the machine that
    hits a round hits both sides of its ratio. ``lockstep_ceiling`` is the median of the rounds'
    ceilings, and ``of_ceiling`` the median of each round's efficiency over its own ceiling: how
    much of what synchronous training can reach on these ranks hvdtrain reached.
    """
    configs = {name: {"samples_per_sec": statistics.median(values),
                      "spread": (max(values) - min(values)) / 2} for name, values in samples.items()}
    per_round = {name: [a / b for a, b in zip(samples[top], samples[bottom], strict=True)]
                 for name, (top, bottom) in RATIOS.items()}
    per_round["lockstep_ceiling"] = list(ceilings)
    per_round["of_ceiling"] = [e / c for e, c in zip(per_round["efficiency"], ceilings, strict=True)]
    return {"configs": configs, "ratios": {name: statistics.median(values) for name, values in per_round.items()}}


def run_train_bench(np_: int, workloads: Sequence[str], rounds: int, batch_size: int, out: Path,
                    timeline: Path | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[str, list[float]]] = {w: {c: [] for c in CONFIGS} for w in workloads}
    ceilings: dict[str, list[float]] = {w: [] for w in workloads}
    for round_index in range(rounds):
        for workload in workloads:
            for config in CONFIGS:
                trace = timeline if timeline and round_index == 0 and config == "hvdtrain" else None
                speed, ceiling = measure(config, workload, np_, batch_size, trace)
                samples[workload][config].append(speed)
                if ceiling is not None:
                    ceilings[workload].append(ceiling)
    report = {"world_size": np_, "rounds": rounds, "batch_size": batch_size,
              "models": {workload: summarize(samples[workload], ceilings[workload]) for workload in workloads}}
    (out / "train.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_train(report, out / "train.png")
    return report


def render_train_table(report: Mapping[str, Any]) -> str:
    lines = [f"training throughput, samples/s (median of {report['rounds']} rounds +- half range), "
             f"np={report['world_size']}, batch {report['batch_size']} per rank",
             f"{'model':<12}" + "".join(f"{name:>20}" for name in CONFIGS) +
             f"{'vs DDP':>9}{'vs upstr.':>10}{'vs mpi':>9}{'vs tensor':>11}{'eff.':>7}{'ceiling':>9}"
             f"{'of ceil.':>10}{'np1/plain':>11}"]
    for name, model in report["models"].items():
        cells = "".join(f"{model['configs'][c]['samples_per_sec']:>13.0f} +-{model['configs'][c]['spread']:>4.0f}"
                        for c in CONFIGS)
        ratios = model["ratios"]
        lines.append(f"{name:<12}{cells}{ratios['vs_ddp']:>9.2f}{ratios['vs_upstream']:>10.2f}"
                     f"{ratios['vs_mpi']:>9.2f}"
                     f"{ratios['vs_per_tensor']:>11.2f}{ratios['efficiency']:>7.2f}"
                     f"{ratios['lockstep_ceiling']:>9.2f}{ratios['of_ceiling']:>10.2f}{ratios['overhead_np1']:>11.2f}")
    return "\n".join(lines)


def plot_train(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(report["models"])
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), dpi=100, squeeze=False)
    for axis, name in zip(axes[0], models, strict=True):
        configs = report["models"][name]["configs"]
        axis.bar(list(CONFIGS), [configs[c]["samples_per_sec"] for c in CONFIGS],
                 yerr=[configs[c]["spread"] for c in CONFIGS], color="tab:blue")
        axis.set(title=name, ylabel="samples/s")
        axis.tick_params(axis="x", labelrotation=30)
    figure.suptitle(f"training throughput, np={report['world_size']}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
