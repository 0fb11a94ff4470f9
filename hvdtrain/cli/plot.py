"""``hvdtrain plot``: a training run's metrics as a PNG."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write [default: OUT_DIR/metrics.png].")
def plot(out_dir: Path, output: Path | None) -> None:
    """Plot the loss per step, and loss, accuracy and throughput per epoch, from OUT_DIR/metrics.jsonl.

    \b
    Example:
      hvdtrain plot runs/demo      # writes runs/demo/metrics.png
    """
    from hvdtrain.train.plot import plot_metrics, read_metrics

    target = output or out_dir / "metrics.png"
    plot_metrics(read_metrics(out_dir), target, title=str(out_dir))
    click.echo(str(target))
