"""``hvdtrain hostfile``: read, check and convert hostfiles, and write one for a Slurm allocation."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hvdtrain.hosts.host import check_np
from hvdtrain.hosts.hostfile import FORMATS, format_hosts, read_hostfile
from hvdtrain.hosts.layout import assign_ranks


@click.group()
def hostfile() -> None:
    """Read, check and convert hostfiles (Open MPI, MPICH, Horovod -H, JSON).

    \b
    Example:
      hvdtrain hostfile show hostfiles/commented -np 6
    """


@hostfile.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="openmpi", show_default=True,
              help="The hostfile format to print.")
@click.option("-np", "--np", "np_", type=int, default=None, help="Also show the rank layout for NP ranks.")
@click.option("--map-by", type=click.Choice(["slot", "node"]), default="slot", show_default=True,
              help="Fill each host's slots in order (slot), or one rank per host in turn (node).")
def show(path: Path, fmt: str, np_: int | None, map_by: str) -> None:
    """Parse and validate PATH, print it in FORMAT, and the rank layout for -np.

    \b
    Example:
      hvdtrain hostfile show hostfiles/commented -np 6
    """
    hosts = read_hostfile(path)
    click.echo(format_hosts(hosts, fmt), nl=False)
    if np_ is not None:
        check_np(np_, hosts)
        click.echo("rank  local_rank  local_size  cross_rank  cross_size  host")
        for slot in assign_ranks(hosts, np_, map_by):
            click.echo(f"{slot.rank:>4}  {slot.local_rank:>10}  {slot.local_size:>10}  {slot.cross_rank:>10}  "
                       f"{slot.cross_size:>10}  {slot.host}")


@hostfile.command("from-slurm")
@click.option("--nodelist", default=None, help="Slurm hostlist [default: $SLURM_JOB_NODELIST].")
@click.option("--tasks-per-node", default=None, help="e.g. 2(x3),1 [default: $SLURM_TASKS_PER_NODE].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="openmpi", show_default=True,
              help="The hostfile format to print.")
@click.option("--hostnames", is_flag=True,
              help="Use each node's NodeHostname (from scontrol) instead of its Slurm node name.")
def from_slurm(nodelist: str | None, tasks_per_node: str | None, fmt: str, hostnames: bool) -> None:
    """Print the hostfile of a Slurm allocation (inside sbatch/salloc, or from explicit values).

    \b
    Example:
      hvdtrain hostfile from-slurm > hosts   # inside an allocation
      hvdtrain hostfile from-slurm --nodelist 'node[01-03]' --tasks-per-node '4(x3)' --format mpich
    """
    from hvdtrain.slurm.jobs import show_nodes
    from hvdtrain.slurm.nodelist import hosts_from_slurm, parse_node_hostnames, to_hostnames

    hosts = hosts_from_slurm(os.environ, nodelist, tasks_per_node)
    if hostnames:
        hosts = to_hostnames(hosts, parse_node_hostnames(show_nodes()))
    click.echo(format_hosts(hosts, fmt), nl=False)


@hostfile.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "fmt", type=click.Choice(FORMATS), required=True, help="The format to write.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of standard output.")
def convert(path: Path, fmt: str, output: Path | None) -> None:
    """Rewrite the hostfile PATH in another format.

    \b
    Example:
      hvdtrain hostfile convert hostfiles/two-nodes --to mpich -o hosts.mpich
    """
    text = format_hosts(read_hostfile(path), fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
