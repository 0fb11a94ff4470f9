"""``hvdtrain bench``: all-reduce bandwidth per backend, and the scaling model."""

from __future__ import annotations

from pathlib import Path

import click

from hvdtrain.bench.allreduce import BACKENDS
from hvdtrain.bench.model import GRADIENT_BYTES
from hvdtrain.errors import HvdtrainError


@click.group()
def bench() -> None:
    """Measure all-reduce backends and training side by side; model scaling beyond this machine.

    \b
    Example:
      hvdtrain bench allreduce -np 2 --out bench-out
    """


@bench.command()
@click.option("-np", "--np", "np_", type=click.IntRange(min=2), default=2, show_default=True,
              help="Ranks, all on this machine.")
@click.option("--sizes", default="4K,64K,1M,16M,64M", show_default=True, help="Message sizes (K, M, G = 1024^n).")
@click.option("--backends", default=",".join(BACKENDS), show_default=True,
              help="paired: Horovod Sum and raw MPI alternating in one job, so both meet the same machine.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Every backend once per round; each time is the median over rounds.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"),
              show_default=True, help="allreduce.json, allreduce.csv, allreduce.png and per-rank logs.")
def allreduce(np_: int, sizes: str, backends: str, rounds: int, out: Path) -> None:
    """Time all-reduce per backend and size; write JSON, CSV and a plot; print a table.

    \b
    Example:
      hvdtrain bench allreduce -np 2 --sizes 4K,64K,1M,16M --out bench-out
    """
    from hvdtrain.bench.allreduce import parse_sizes, render_table, run_allreduce_bench

    chosen = [name.strip() for name in backends.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BACKENDS]
    if unknown or not chosen:
        raise HvdtrainError(f"unknown backend {unknown[0] if unknown else '(none)'!r}",
                            f"choose from {','.join(BACKENDS)}")
    click.echo(render_table(run_allreduce_bench(np_, parse_sizes(sizes), chosen, rounds, out)))
    click.echo(f"wrote {out / 'allreduce.json'}, {out / 'allreduce.csv'}, {out / 'allreduce.png'}")


@bench.command()
@click.option("-np", "--np", "np_", type=click.IntRange(min=2), default=2, show_default=True,
              help="Ranks, all on this machine.")
@click.option("--models", default="resnet,wide_mlp,deep_narrow", show_default=True,
              help="resnet (compute-bound), wide_mlp (~50M parameters), deep_narrow (many small layers).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds of every configuration; the tables report medians.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Per rank.")
@click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Horovod timeline of hvdtrain's first round here.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"),
              show_default=True, help="train.json and train.png.")
def train(np_: int, models: str, rounds: int, batch_size: int, timeline: Path | None, out: Path) -> None:
    """hvdtrain vs torch DDP, N independent processes, a plain loop, and hvdtrain at np=1.

    \b
    Example:
      hvdtrain bench train -np 2 --rounds 3 --out bench-out
    """
    from hvdtrain.bench.training import render_train_table, run_train_bench
    from hvdtrain.bench.workloads import WORKLOADS

    chosen = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in WORKLOADS]
    if unknown or not chosen:
        raise HvdtrainError(f"unknown benchmark model {unknown[0] if unknown else '(none)'!r}",
                            f"choose from {','.join(WORKLOADS)}")
    click.echo(render_train_table(run_train_bench(np_, chosen, rounds, batch_size, out, timeline)))
    click.echo(f"wrote {out / 'train.json'}, {out / 'train.png'}")


@bench.command()
@click.option("-np", "--np", "np_", type=click.IntRange(min=2), default=2, show_default=True,
              help="Ranks, all on this machine.")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="How long each rank sleeps.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds of every configuration; the tables report medians.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-out"),
              show_default=True, help="idle.json.")
def idle(np_: int, seconds: float, rounds: int, out: Path) -> None:
    """CPU per rank of a Horovod job that does nothing: patched wait (sleep) against upstream's (spin).

    \b
    Example:
      hvdtrain bench idle -np 2 --seconds 5 --rounds 3
    """
    from hvdtrain.bench.idle import render_idle_table, run_idle_bench

    click.echo(render_idle_table(run_idle_bench(np_, seconds, rounds, out)))
    click.echo(f"wrote {out / 'idle.json'}")


@bench.command()
@click.option("--params", type=float, required=True, help="Model parameters, e.g. 44.5e6.")
@click.option("--step-time", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Seconds of compute per step on one worker.")
@click.option("--nodes", default="2,4,8,16,32,64,128,256", show_default=True, help="Worker counts.")
@click.option("--bandwidth", type=click.FloatRange(min=0, min_open=True), required=True, help="GB/s per link.")
@click.option("--latency", type=click.FloatRange(min=0), default=10.0, show_default=True, help="Microseconds.")
@click.option("--bytes-per-param", type=click.Choice(["2", "4"]), default=str(GRADIENT_BYTES), show_default=True,
              help="Bytes per gradient element: 4 (float32) or 2 (fp16 compression).")
def model(params: float, step_time: float, nodes: str, bandwidth: float, latency: float, bytes_per_param: str) -> None:
    """Predict scaling efficiency with a ring all-reduce model. A MODEL, not a measurement.

    \b
    Example (ResNet-101 on 25 GbE, see docs/performance.md):
      hvdtrain bench model --params 44.5e6 --step-time 0.49 --bandwidth 3.125 --latency 25
    """
    from hvdtrain.bench.model import predict

    try:
        counts = [int(item) for item in nodes.split(",")]
    except ValueError:
        raise HvdtrainError(f"--nodes {nodes!r} is not a list of numbers", "e.g. --nodes 2,4,8") from None
    if min(counts) < 1:
        raise HvdtrainError("--nodes must all be at least 1", "e.g. --nodes 2,4,8")
    click.echo("MODEL (ring all-reduce, alpha-beta; not a measurement)")
    click.echo(f"{'workers':>8}  {'comm s/step':>12}  {'eff. no overlap':>16}  {'eff. full overlap':>18}")
    for count in counts:
        p = predict(params, step_time, count, bandwidth, latency, int(bytes_per_param))
        click.echo(f"{count:>8}  {p.comm_s:>12.4f}  {p.efficiency_no_overlap:>16.3f}  "
                   f"{p.efficiency_full_overlap:>18.3f}")
