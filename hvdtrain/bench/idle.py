"""``hvdtrain bench idle``: the CPU an idle Horovod job takes per rank, with the patched wait ("sleep") and
with upstream's busy waiting ("spin"), on the same binary, in interleaved rounds."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import hvdtrain_executable
from hvdtrain.launch.plan import WAIT


def build_idle_argv(np_: int, mode: str, seconds: float, out: Path) -> list[str]:
    """The job that sleeps under ``hvdtrain run`` with one wait mode (pure)."""
    hvdtrain = hvdtrain_executable()
    return [hvdtrain, "run", "-np", str(np_), WAIT.option, mode, "--output-dir", str(out / "logs"), "--",
            sys.executable, "-m", "hvdtrain.bench.idle_worker", "--seconds", str(seconds), "--out", str(out)]


def measure_idle(np_: int, mode: str, seconds: float) -> list[float]:
    """Each rank's CPU time over wall time while it sleeps, rank order."""
    with tempfile.TemporaryDirectory(prefix="hvdtrain-idle-") as tmp:
        out = Path(tmp)
        done = subprocess.run(build_idle_argv(np_, mode, seconds, out), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HvdtrainError(f"bench idle: the {mode} job failed (exit {done.returncode})",
                                (done.stderr.strip().splitlines() or ["no output"])[-1])
        return [json.loads((out / f"idle.rank{rank}.json").read_text())["cpu_fraction"] for rank in range(np_)]


def run_idle_bench(np_: int, seconds: float, rounds: int, out: Path,
                   modes: Sequence[str] = WAIT.modes) -> dict[str, Any]:
    """Per mode, the median over rounds of each rank's CPU fraction; written to ``idle.json``."""
    samples: dict[str, list[list[float]]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            samples[mode].append(measure_idle(np_, mode, seconds))
    report = {"world_size": np_, "seconds": seconds, "rounds": rounds,
              "cpu_fraction": {mode: [statistics.median(values) for values in zip(*runs, strict=True)]
                               for mode, runs in samples.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def render_idle_table(report: dict[str, Any]) -> str:
    lines = [f"idle job, {report['world_size']} ranks sleeping {report['seconds']:g} s: CPU per rank "
             f"(fraction of a core, median of {report['rounds']} rounds)"]
    lines += [f"{mode:>6}  " + "  ".join(f"rank {rank}: {value:.3f}" for rank, value in enumerate(values))
              for mode, values in report["cpu_fraction"].items()]
    return "\n".join(lines)
