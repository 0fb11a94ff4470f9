"""The ``hvdtrain`` command group and its entry point, ``main(argv)``: the one place that turns
an ``HvdtrainError`` into one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click

import hvdtrain
from hvdtrain.cli.bench import bench
from hvdtrain.cli.doctor import doctor
from hvdtrain.cli.hostfile import hostfile
from hvdtrain.cli.install import build_horovod
from hvdtrain.cli.plot import plot
from hvdtrain.cli.run import discover_hosts, run, supervise
from hvdtrain.cli.slurm import slurm
from hvdtrain.cli.train import train
from hvdtrain.errors import HvdtrainError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(hvdtrain.__version__, prog_name="hvdtrain")
def cli() -> None:
    """Data-parallel PyTorch training with Horovod, MPI and Slurm.

    \b
    Example:
      hvdtrain doctor
      hvdtrain run -np 2 -- hvdtrain train --model cnn --dataset digits --out runs/demo
    """


for command in (doctor, run, hostfile, train, slurm, bench, build_horovod, plot, supervise, discover_hosts):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2."""
    try:
        code = cli.main(args=argv, prog_name="hvdtrain", standalone_mode=False)
    except HvdtrainError as exc:
        click.echo(f"hvdtrain: error: {exc}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "hvdtrain"
        click.echo(f"{where}: error: {exc.format_message()} (see `{where} --help`)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"hvdtrain: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("hvdtrain: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
