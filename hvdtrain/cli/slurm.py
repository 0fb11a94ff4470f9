"""``hvdtrain slurm``: render, lint, submit, follow, cancel and read batch jobs."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from hvdtrain.cli.options import COMMAND_CONTEXT, F, defaults_of
from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import DEFAULT_RUNS_DIR, hvdtrain_executable
from hvdtrain.job.signals import PREEMPT_SIGNALS
from hvdtrain.slurm import jobs
from hvdtrain.slurm.sbatch import LAUNCHERS, SbatchSpec, lint_script, read_template, render_script, signal_mismatch

_default = defaults_of(SbatchSpec)


def job_options(func: F) -> F:
    """The resources and preemption handling of a job (shared by render and submit); each
    option is named after its ``SbatchSpec`` field, whose default it shows."""
    options = [
        click.option("--launcher", type=click.Choice(LAUNCHERS), default=_default("launcher"), show_default=True,
                     help="Which template starts the ranks inside the allocation."),
        click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Your own template (same variables as hvdtrain/slurm/templates/*.sbatch)."),
        click.option("--job-name", default=_default("job_name"), show_default=True,
                     help="The job's name in the queue (no / or control characters)."),
        click.option("--nodes", type=int, default=_default("nodes"), show_default=True, help="Nodes to allocate."),
        click.option("--ntasks-per-node", type=int, default=_default("ntasks_per_node"), show_default=True,
                     help="Ranks per node."),
        click.option("--cpus-per-task", type=int, default=_default("cpus_per_task"), help="Cores per rank."),
        click.option("--gpus-per-node", type=int, default=_default("gpus_per_node"),
                     help="GPUs per node: one per rank (--ntasks-per-node), or --lint says why not."),
        click.option("--time", default=_default("time"), help="Wall-clock limit, e.g. 1:00:00."),
        click.option("--partition", default=_default("partition"), help="The partition (queue) to submit to."),
        click.option("--account", default=_default("account"), help="The account the job is charged to."),
        click.option("--output", default=_default("output"), show_default=True, help="Job output."),
        click.option("--error", default=_default("error"), help="Job error output [default: with --output]."),
        click.option("--signal", type=click.Choice(PREEMPT_SIGNALS), default=_default("signal"), show_default=True,
                     help="Signal Slurm sends before the time limit or on preemption; the script gets it in "
                          "$HVDTRAIN_PREEMPT_SIGNAL, and hvdtrain.Run and hvdtrain train stop on it."),
        click.option("--signal-lead", "signal_lead_s", type=int, default=_default("signal_lead_s"),
                     show_default=True, help="Seconds of warning."),
        click.option("--requeue/--no-requeue", default=_default("requeue"), show_default=True,
                     help="Requeue the job when it stops on the signal after saving a checkpoint."),
        click.option("--max-requeues", type=int, default=_default("max_requeues"), show_default=True,
                     help="Requeues after preemptions (SLURM_RESTART_COUNT)."),
        click.option("--max-restarts", type=int, default=_default("max_restarts"), show_default=True,
                     help="Restarts after a failed rank, within the allocation (hvdtrain run --max-restarts); "
                          "a budget of their own, apart from --max-requeues."),
        click.option("--mpi-plugin", default=_default("mpi_plugin"), show_default=True,
                     help="srun --mpi plugin (srun launcher)."),
        click.option("--sbatch-arg", "extra", multiple=True, help="More #SBATCH options (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_spec(command: tuple[str, ...], options: dict[str, Any]) -> SbatchSpec:
    fields = {key: value for key, value in options.items() if key != "template"}
    return SbatchSpec(command=command, **{**fields, "extra": tuple(fields["extra"])},
                      hvdtrain=hvdtrain_executable(), produced_by=("hvdtrain", *sys.argv[1:]))


def render(command: tuple[str, ...], options: dict[str, Any]) -> tuple[SbatchSpec, str]:
    spec = build_spec(command, options)
    return spec, render_script(spec, read_template(spec.launcher, options["template"]))


def bash_syntax_problems(script: str) -> list[str]:
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    return [f"bash -n: {line}" for line in done.stderr.strip().splitlines()]


@click.group()
def slurm() -> None:
    """Batch jobs on Slurm: render sbatch scripts, submit, follow, cancel, read logs.

    \b
    Example:
      hvdtrain slurm submit --nodes 2 --ntasks-per-node 4 --time 1:00:00 -- hvdtrain train --epochs 5
    """


@slurm.command("render", context_settings=COMMAND_CONTEXT)
@job_options
@click.option("--lint", is_flag=True, help="Also check the script; exit 1 if it has problems.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def render_command(ctx: click.Context, /, command: tuple[str, ...], lint: bool, **options: Any) -> None:
    """Print the sbatch script for COMMAND.

    \b
    Example:
      hvdtrain slurm render --nodes 2 --ntasks-per-node 4 --time 1:00:00 --lint -- \\
        hvdtrain train --checkpoint-dir ckpt --auto-resume --epochs 90
    """
    spec, script = render(command, options)
    click.echo(script, nl=False)
    if lint:
        problems = lint_script(spec, script) + bash_syntax_problems(script)
        for problem in problems:
            click.echo(f"lint: {problem}", err=True)
        ctx.exit(1 if problems else 0)


@slurm.command(context_settings=COMMAND_CONTEXT)
@job_options
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit non-zero unless it COMPLETED.")
@click.option("--dry-run", is_flag=True, help="Print the script and the sbatch command; submit nothing.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx: click.Context, /, command: tuple[str, ...], wait: bool, dry_run: bool, **options: Any) -> None:
    """Render the script, keep a copy next to the job's output, and give the text to sbatch.

    \b
    Example:
      hvdtrain slurm submit --nodes 2 --ntasks-per-node 4 --time 1:00:00 --wait -- \\
        hvdtrain train --checkpoint-dir ckpt --auto-resume --epochs 90 --out runs/big
    """
    spec, script = render(command, options)
    mismatch = signal_mismatch(spec)
    if mismatch:  # the job would be killed on its warning instead of saving a checkpoint
        raise HvdtrainError(*mismatch)
    path = Path(DEFAULT_RUNS_DIR) / f"{spec.job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}.sbatch"
    if dry_run:
        click.echo(script, nl=False)
        click.echo(f"# would run: sbatch --parsable < {shlex.quote(str(path))}")
        return
    write_record(path, script)
    job_id = jobs.submit_script(script)
    click.echo(job_id)
    if wait:
        fields = jobs.wait_for_job(job_id)
        state = fields.get("JobState", "?")
        click.echo(f"job {job_id}: {state} (exit {fields.get('ExitCode')}, restarts {fields.get('Restarts')}); "
                   f"output: {fields.get('StdOut')}", err=state != "COMPLETED")
        ctx.exit(0 if state == "COMPLETED" else 1)


def write_record(path: Path, script: str) -> None:
    """The submitted script, kept for the user: a new file (never through a link, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HvdtrainError(f"cannot create {path} ({exc.strerror})", "submit again (it picks a new name)") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(script)


@slurm.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's state, nodes, run time, restarts and output file.

    \b
    Example:
      hvdtrain slurm status 1234
    """
    fields = jobs.show_job(job_id)
    if fields is None:
        raise HvdtrainError(f"job {job_id} is not known to Slurm", "it may have ended long ago; see its output file")
    for key in ("JobId", "JobName", "JobState", "Reason", "NodeList", "RunTime", "TimeLimit", "Restarts",
                "ExitCode", "StdOut"):
        click.echo(f"{key:<10} {fields.get(key, '-')}")


@slurm.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job.

    \b
    Example:
      hvdtrain slurm cancel 1234
    """
    jobs.cancel_job(job_id)
    click.echo(f"cancelled {job_id}")


@slurm.command()
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="Keep printing until the job ends.")
def logs(job_id: str, follow: bool) -> None:
    """Print a job's output file.

    \b
    Example:
      hvdtrain slurm logs 1234 --follow
    """
    fields = jobs.show_job(job_id)
    if fields is None:
        raise HvdtrainError(f"job {job_id} is not known to Slurm", "open its output file directly")
    path, offset = Path(fields["StdOut"]), 0
    while True:
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if not follow or (fields or {}).get("JobState") in jobs.TERMINAL:
            return
        time.sleep(1.0)
        fields = jobs.show_job(job_id)
