"""``hvdtrain run``: options to a ``RunRequest`` (pure), then execute it; and ``supervise``, the
hidden command every launcher starts for a rank."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import click

from hvdtrain.cli.options import COMMAND_CONTEXT, defaults_of, host_options, resolve_hosts, ssh_options
from hvdtrain.job.paths import RunPaths, hvdtrain_executable
from hvdtrain.job.signals import PREEMPTED_EXIT
from hvdtrain.launch.plan import ALLREDUCE, LAUNCHERS, WAIT
from hvdtrain.launch.request import RunOptions
from hvdtrain.launch.ssh import SshSettings

_default = defaults_of(RunOptions)


@click.command(context_settings=COMMAND_CONTEXT)
@click.option("-np", "--np", "np_", type=int, required=True, help="Number of ranks.")
@host_options
@click.option("--launcher", type=click.Choice(["auto", *LAUNCHERS]), default=_default("launcher"), show_default=True,
              help="auto: srun inside a Slurm job with PMIx, else mpirun (mpiexec for MPICH).")
@click.option("-x", "env_flags", multiple=True, metavar="NAME[=VALUE]",
              help="Forward NAME, or set NAME=VALUE, in every rank (repeatable).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Per-rank logs and reports, and failure.json if the job fails "
                   "[default: $HVDTRAIN_RUNS_DIR or ./hvdtrain-runs, then run-TIME-PID].")
@click.option("--stall-timeout", type=click.IntRange(min=0), default=_default("stall_timeout"), show_default=True,
              help="End the job when ranks wait this long for a rank that never joins a collective (0: never).")
@click.option("--tag-output", is_flag=True, help="Prefix each output line with its rank.")
@click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Horovod timeline (chrome://tracing JSON) here.")
@click.option("--mpi-args", default=_default("mpi_args"), metavar="'ARGS'",
              help="Extra launcher arguments, split like a shell would.")
@click.option("--fusion-threshold-mb", type=click.FloatRange(min=0), default=None,
              help="Horovod tensor fusion buffer (HOROVOD_FUSION_THRESHOLD) [Horovod: 128].")
@click.option("--cycle-time-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="How often Horovod's background thread batches requests (HOROVOD_CYCLE_TIME) "
                   "[default: 0.1 unless HOROVOD_CYCLE_TIME is set or --autotune; Horovod: 1].")
@click.option("--autotune", is_flag=True, help="Let Horovod tune fusion and cycle time while training.")
@click.option(WAIT.option, type=click.Choice(WAIT.modes), default=None,
              help=f"sleep: idle Horovod threads block instead of busy-polling (hvdtrain's build); spin: upstream's "
                   f"behaviour ({WAIT.variable}) [default: sleep unless {WAIT.variable} is set].")
@click.option(ALLREDUCE.option, type=click.Choice(ALLREDUCE.modes), default=None,
              help=f"shm: ranks on one node sum float all-reduces through shared memory (hvdtrain's build); mpi: "
                   f"upstream's MPI_Allreduce ({ALLREDUCE.variable}) [default: shm unless {ALLREDUCE.variable} "
                   "is set].")
@ssh_options
@click.option("--network-interface", default=None, metavar="IFACE",
              help="Network interface the ranks talk over (e.g. ib0).")
@click.option("--oversubscribe", is_flag=True, help="Allow more ranks than slots.")
@click.option("--elastic", is_flag=True, help="Elastic job through horovodrun: survive lost workers.")
@click.option("--min-np", type=int, default=None, help="With --elastic: fewest ranks to go on with [default: 1].")
@click.option("--max-np", type=int, default=None, help="With --elastic: most ranks [default: -np].")
@click.option("--host-discovery-script", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --elastic: executable that prints the available host:slots, one per line.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="When a rank fails, end the job, report the root cause, and start the whole job again, at "
                   "most this many times (never after bad input, exit 2, or a preemption, exit 75). A script "
                   "with hvdtrain.Run, or hvdtrain train --auto-resume, resumes from its newest checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the command and exit.")
@click.option("--explain", is_flag=True, help="Say which launcher and why each argument is there.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, /, np_: int, hosts: str | None, hostfile: Path | None, ssh_port: int | None,
        ssh_identity: Path | None, ssh_option: tuple[str, ...], max_restarts: int, dry_run: bool, explain: bool,
        command: tuple[str, ...], **flags: object) -> None:
    """Start NP ranks of COMMAND with mpirun, srun, horovodrun or mpiexec; exit with the job's status.

    Hosts: -H or --hostfile, else the Slurm allocation, else NP slots on this machine.

    \b
    Example:
      hvdtrain run -np 4 -H node1:2,node2:2 -- hvdtrain train --epochs 5
      hvdtrain run -np 8 --hostfile hostfiles/two-nodes --dry-run --explain -- hvdtrain train
    """
    from hvdtrain.job.failure import write_failure_report
    from hvdtrain.launch.detect import probe_launchers
    from hvdtrain.launch.execute import execute
    from hvdtrain.launch.request import plan_run
    from hvdtrain.slurm.nodelist import slurm_job

    options = RunOptions(np=np_, command=command, hosts=resolve_hosts(hosts, hostfile),
                         ssh=SshSettings(ssh_port, ssh_identity, ssh_option), **flags)  # type: ignore[arg-type]
    paths = RunPaths(options.output_dir.absolute()) if options.output_dir else \
        RunPaths.new(os.environ, Path.cwd().absolute(), time.strftime("%Y%m%d-%H%M%S"), os.getpid(),
                     secrets.token_hex(4))
    probes = probe_launchers(options.launcher, slurm_job(os.environ) is not None)
    request = plan_run(options, os.environ, probes, paths, os.getuid(), hvdtrain_executable(), sys.executable)
    if dry_run:
        click.echo(request.render(explain))
        return
    if explain:
        click.echo(request.render(explain=True), err=True)
    first = paths
    for attempt in range(max_restarts + 1):
        if attempt:  # each attempt keeps its own logs and reports, beside the first's
            paths = first.restart(attempt)
            request = plan_run(options, os.environ, probes, paths, os.getuid(), hvdtrain_executable(), sys.executable)
        outcome = execute(request)
        code = outcome.code
        if code == PREEMPTED_EXIT:
            click.echo(f"hvdtrain: the job stopped on a preemption signal after saving a checkpoint (exit {code})",
                       err=True)
        elif code != 0:
            click.echo(write_failure_report(paths, request.plan.np, code), err=True)
        if not restartable(code, outcome.signalled) or attempt == max_restarts:
            break
        click.echo(f"hvdtrain: restarting the job ({attempt + 1} of {max_restarts}); logs: {paths.root}", err=True)
    ctx.exit(code)


def restartable(code: int, signalled: bool) -> bool:
    """A failed rank: yes. Success, bad input (2), a preemption (75), or a job that was told to
    stop (Ctrl-C, scancel): no."""
    return code not in (0, 2, PREEMPTED_EXIT) and not signalled


@click.command(hidden=True, context_settings=COMMAND_CONTEXT)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def supervise(ctx: click.Context, run_dir: Path, command: tuple[str, ...]) -> None:
    """Run one rank of a job, log it and report how it ended (started by `hvdtrain run`)."""
    from hvdtrain.job.supervisor import supervise as run_supervised

    ctx.exit(run_supervised(command, run_dir, os.environ))


@click.command("discover-hosts", hidden=True, context_settings=COMMAND_CONTEXT)
@click.argument("script", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def discover_hosts(ctx: click.Context, script: Path) -> None:
    """Run an elastic job's host discovery script; print only its valid host:slots lines (horovodrun
    runs this through the wrapper `hvdtrain run --elastic` writes)."""
    from hvdtrain.job.failure import printable
    from hvdtrain.launch.discovery import valid_hosts

    done = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=False)
    hosts, rejected = valid_hosts(done.stdout)
    for reason in rejected:
        click.echo(f"hvdtrain: ignoring a line of {script}: {printable(reason)}", err=True)
    click.echo("".join(f"{host}\n" for host in hosts), nl=False)
    ctx.exit(done.returncode)
