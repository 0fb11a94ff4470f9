"""The ``hvdtrain`` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

import hvdtrain
from hvdtrain.bench.command import bench
from hvdtrain.errors import HvdtrainError
from hvdtrain.failure import PREEMPTED_EXIT, default_run_dir, write_failure_report
from hvdtrain.hostfile import read_hostfile
from hvdtrain.hostfile_command import hostfile
from hvdtrain.hosts import Host, parse_host_list
from hvdtrain.install.command import build_horovod
from hvdtrain.launch.choose import build_parts, choose_launcher, render_explanation
from hvdtrain.launch.execute import run_argv
from hvdtrain.launch.plan import (
    LAUNCHERS,
    WAIT_MODES,
    ElasticSettings,
    build_plan,
    flatten,
    horovod_tuning,
    launch_env,
    supervisor_prefix,
)
from hvdtrain.slurm.command import slurm
from hvdtrain.ssh import SshSettings
from hvdtrain.train.command import train

F = TypeVar("F", bound=Callable[..., Any])


def host_options(func: F) -> F:
    """-H and --hostfile, shared by every command that targets hosts."""
    func = click.option("--hostfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="A hostfile in any format `hvdtrain hostfile show` reads.")(func)
    return click.option("-H", "--hosts", default=None, metavar="HOST:SLOTS,...",
                        help="Hosts and their slots, e.g. node1:4,node2:4.")(func)


def ssh_options(func: F) -> F:
    """How to reach other hosts over ssh, shared by run and doctor."""
    func = click.option("--ssh-option", "ssh_option", multiple=True, metavar="KEY=VALUE",
                        help="Extra ssh -o option (repeatable).")(func)
    func = click.option("--ssh-identity", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="ssh private key for the hosts.")(func)
    return click.option("--ssh-port", type=int, default=None, help="ssh port of the hosts.")(func)


def resolve_hosts(hosts: str | None, hostfile: Path | None) -> tuple[Host, ...] | None:
    if hosts and hostfile:
        raise HvdtrainError("-H and --hostfile both name hosts", "give one of them")
    return parse_host_list(hosts) if hosts else read_hostfile(hostfile) if hostfile else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(hvdtrain.__version__, prog_name="hvdtrain")
def cli() -> None:
    """Data-parallel PyTorch training with Horovod, MPI and Slurm.

    \b
    Example:
      hvdtrain doctor
      hvdtrain run -np 2 -- hvdtrain train --model cnn --dataset digits --out runs/demo
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@host_options
@ssh_options
@click.option("--timeout", type=click.IntRange(min=1), default=30, show_default=True,
              help="Seconds to wait for each host.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, hosts: str | None, hostfile: Path | None, ssh_port: int | None,
           ssh_identity: Path | None, ssh_option: tuple[str, ...], timeout: int) -> None:
    """Check that Horovod, torch and MPI on this machine (and on every host) fit together.

    Exits 0 when Horovod can run, 1 with one line per problem and its fix. With -H or
    --hostfile, also checks every host over ssh, in parallel, and prints a table.

    \b
    Example:
      hvdtrain doctor
      hvdtrain doctor --hostfile hostfiles/two-nodes --timeout 20
    """
    from hvdtrain.doctor import advise, collect_facts, diagnose, render_json, render_text

    targets = resolve_hosts(hosts, hostfile)
    ssh = SshSettings(ssh_port, ssh_identity, ssh_option)
    facts = collect_facts()
    problems, warnings = diagnose(facts), advise(facts)
    report = render_json(facts, problems, warnings)
    if targets is None:
        click.echo(report if as_json else render_text(facts, problems, warnings))
        ctx.exit(1 if problems else 0)
    from hvdtrain.preflight import render_table, run_preflight

    remote = [str(Path(sys.executable).parent / "hvdtrain"), "doctor", "--json"]
    checks = run_preflight(targets, remote, ssh, json.loads(report), timeout)
    if as_json:
        click.echo(json.dumps({"local": json.loads(report), "hosts": [asdict(c) for c in checks]}, indent=2))
    else:
        click.echo(render_table(checks))
        for problem in problems:
            click.echo(f"problem here: {problem}")
    ctx.exit(0 if not problems and all(check.ok for check in checks) else 1)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-np", "--np", "np_", type=int, required=True, help="Number of ranks.")
@host_options
@click.option("--launcher", type=click.Choice(["auto", *LAUNCHERS]), default="auto", show_default=True,
              help="auto: srun inside a Slurm job with PMIx, else mpirun (mpiexec for MPICH).")
@click.option("-x", "env_flags", multiple=True, metavar="NAME[=VALUE]",
              help="Forward NAME, or set NAME=VALUE, in every rank (repeatable).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Per-rank logs and reports, and failure.json if the job fails "
                   "[default: $HVDTRAIN_RUNS_DIR or ./hvdtrain-runs, then run-TIME-PID].")
@click.option("--stall-timeout", type=click.IntRange(min=0), default=300, show_default=True,
              help="End the job when ranks wait this long for a rank that never joins a collective (0: never).")
@click.option("--tag-output", is_flag=True, help="Prefix each output line with its rank.")
@click.option("--timeline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Horovod timeline (chrome://tracing JSON) here.")
@click.option("--mpi-args", default="", metavar="'ARGS'", help="Extra launcher arguments, split like a shell would.")
@click.option("--fusion-threshold-mb", type=click.FloatRange(min=0), default=None,
              help="Horovod tensor fusion buffer (HOROVOD_FUSION_THRESHOLD) [Horovod: 128].")
@click.option("--cycle-time-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="How often Horovod's background thread batches requests (HOROVOD_CYCLE_TIME) "
                   "[default: 0.1 unless HOROVOD_CYCLE_TIME is set or --autotune; Horovod: 1].")
@click.option("--autotune", is_flag=True, help="Let Horovod tune fusion and cycle time while training.")
@click.option("--horovod-wait", type=click.Choice(WAIT_MODES), default=None,
              help="sleep: idle Horovod threads block instead of busy-polling (hvdtrain's build); spin: upstream's "
                   "behaviour (HVDTRAIN_HOROVOD_WAIT) [default: sleep unless HVDTRAIN_HOROVOD_WAIT is set].")
@ssh_options
@click.option("--network-interface", default=None, metavar="IFACE",
              help="Network interface the ranks talk over (e.g. ib0).")
@click.option("--oversubscribe", is_flag=True, help="Allow more ranks than slots.")
@click.option("--elastic", is_flag=True, help="Elastic job through horovodrun: survive lost workers.")
@click.option("--min-np", type=int, default=None, help="With --elastic: fewest ranks to go on with [default: 1].")
@click.option("--max-np", type=int, default=None, help="With --elastic: most ranks [default: -np].")
@click.option("--host-discovery-script", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --elastic: executable that prints the available host:slots, one per line.")
@click.option("--dry-run", is_flag=True, help="Print the command and exit.")
@click.option("--explain", is_flag=True, help="Say which launcher and why each argument is there.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, np_: int, hosts: str | None, hostfile: Path | None, launcher: str,
        env_flags: tuple[str, ...], output_dir: Path | None, stall_timeout: int, tag_output: bool,
        timeline: Path | None,
        mpi_args: str, fusion_threshold_mb: float | None, cycle_time_ms: float | None, autotune: bool,
        horovod_wait: str | None,
        ssh_port: int | None, ssh_identity: Path | None, ssh_option: tuple[str, ...],
        network_interface: str | None, oversubscribe: bool, elastic: bool, min_np: int | None,
        max_np: int | None, host_discovery_script: Path | None, dry_run: bool, explain: bool,
        command: tuple[str, ...]) -> None:
    """Start NP ranks of COMMAND with mpirun, srun, horovodrun or mpiexec; exit with the job's status.

    Hosts: -H or --hostfile, else the Slurm allocation, else NP slots on this machine.

    \b
    Example:
      hvdtrain run -np 4 -H node1:2,node2:2 -- hvdtrain train --epochs 5
      hvdtrain run -np 8 --hostfile hostfiles/two-nodes --dry-run --explain -- hvdtrain train
    """
    from hvdtrain.detect import detect_mpi, detect_srun_mpi_plugins
    from hvdtrain.slurm.nodelist import hosts_from_slurm

    chosen = resolve_hosts(hosts, hostfile)
    env = launch_env(os.environ, sys.executable)
    run_dir = (output_dir or default_run_dir(env, Path.cwd(), time.strftime("%Y%m%d-%H%M%S"), os.getpid())).absolute()
    in_slurm = "SLURM_JOB_NODELIST" in env
    tuning = horovod_tuning(fusion_threshold_mb, cycle_time_ms, autotune, env, horovod_wait)
    plan = build_plan(np_, chosen, command, env, os.getuid(),
                      slurm_hosts=hosts_from_slurm(env) if in_slurm else None, env_flags=(*env_flags, *tuning),
                      supervisor=supervisor_prefix(str(Path(sys.executable).parent / "hvdtrain"), run_dir),
                      stall_timeout=stall_timeout, tag_output=tag_output, timeline=timeline,
                      launcher_args=tuple(_split_args(mpi_args)),
                      ssh=SshSettings(ssh_port, ssh_identity, ssh_option), network_interface=network_interface,
                      oversubscribe=oversubscribe,
                      elastic=elastic_settings(elastic, np_, min_np, max_np, host_discovery_script))
    probe_srun = launcher == "srun" or (launcher == "auto" and "SLURM_JOB_ID" in env)
    choice = choose_launcher(launcher, env, detect_srun_mpi_plugins() if probe_srun else None,
                             detect_mpi() if launcher == "auto" else None, elastic=elastic)
    parts = build_parts(plan, choice)
    if dry_run:
        click.echo(render_explanation(parts, choice) if explain else shlex.join(flatten(parts)))
        return
    if explain:
        click.echo(render_explanation(parts, choice), err=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    code = run_argv(flatten(parts), env)
    if code == PREEMPTED_EXIT:
        click.echo(f"hvdtrain: the job stopped on a preemption signal after saving a checkpoint (exit {code})",
                   err=True)
    elif code != 0:
        click.echo(write_failure_report(run_dir, plan.np, code), err=True)
    ctx.exit(code)


def elastic_settings(elastic: bool, np_: int, min_np: int | None, max_np: int | None,
                     script: Path | None) -> ElasticSettings | None:
    if not elastic:
        if min_np is not None or max_np is not None or script is not None:
            raise HvdtrainError("--min-np, --max-np and --host-discovery-script belong to elastic jobs",
                                "add --elastic")
        return None
    if script is None:
        raise HvdtrainError("--elastic needs --host-discovery-script", "give an executable that prints host:slots")
    if not os.access(script, os.X_OK) or not script.is_file():
        raise HvdtrainError(f"host discovery script {script} is not an executable file", f"chmod +x {script}")
    return ElasticSettings(min_np or 1, max_np or np_, script.absolute())


def _split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise HvdtrainError(f"--mpi-args {text!r}: {exc}", "balance the quotes in --mpi-args") from None


cli.add_command(hostfile)
cli.add_command(train)
cli.add_command(slurm)
cli.add_command(bench)
cli.add_command(build_horovod)


@cli.command(hidden=True, context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def supervise(ctx: click.Context, run_dir: Path, command: tuple[str, ...]) -> None:
    """Run one rank of a job, log it and report how it ended (started by `hvdtrain run`)."""
    from hvdtrain.supervisor import supervise as run_supervised

    ctx.exit(run_supervised(command, run_dir, os.environ))


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write [default: OUT_DIR/metrics.png].")
def plot(out_dir: Path, output: Path | None) -> None:
    """Plot loss, accuracy and throughput per epoch from OUT_DIR/metrics.jsonl.

    \b
    Example:
      hvdtrain plot runs/demo      # writes runs/demo/metrics.png
    """
    from hvdtrain.plot import plot_metrics, read_metrics

    target = output or out_dir / "metrics.png"
    plot_metrics(read_metrics(out_dir), target, title=str(out_dir))
    click.echo(str(target))


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
