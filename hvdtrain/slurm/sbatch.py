"""sbatch scripts: a frozen spec, rendered purely from the templates in ``hvdtrain/slurm/templates/`` (package data).

Every value that comes from a user is shell-quoted in the script (the ``q`` filter); ``#SBATCH``
lines come out in a fixed order, so renders compare with golden files.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

import hvdtrain
from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import DEFAULT_RUNS_DIR
from hvdtrain.job.signals import DEFAULT_PREEMPT_SIGNAL, PREEMPTED_EXIT, preempt_signal_problem

TEMPLATES = Path(__file__).resolve().parent / "templates"
LAUNCHERS = ("mpirun", "srun", "horovodrun")
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}")
# srun --mpi plugins (srun --mpi=list): none, pmi2, cray_shasta, pmix and its versions.
_MPI_PLUGIN = re.compile(r"none|pmi2|cray_shasta|pmix(_v\d+)?")


def _has_control(text: str) -> bool:
    """A newline or another control character: in an #SBATCH line it would start a line of code."""
    return any(ord(char) < 32 or ord(char) == 127 for char in text)


@dataclass(frozen=True)
class SbatchSpec:
    """One batch job: resources, preemption handling, and the command every rank runs."""

    command: tuple[str, ...]
    launcher: str = "mpirun"
    job_name: str = "hvdtrain"
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    output: str = f"{DEFAULT_RUNS_DIR}/slurm-%j.out"
    error: str | None = None
    signal: str = DEFAULT_PREEMPT_SIGNAL
    signal_lead_s: int = 120
    requeue: bool = True
    max_requeues: int = 3
    max_restarts: int = 0  # hvdtrain run --max-restarts: restarts after a failed rank, in the allocation
    mpi_plugin: str = "pmix"
    run_dir: str = DEFAULT_RUNS_DIR
    extra: tuple[str, ...] = ()  # more #SBATCH arguments, e.g. --exclusive
    hvdtrain: str = "hvdtrain"
    produced_by: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.command:
            raise HvdtrainError("no command for the job", "put it after --, e.g. -- hvdtrain train --epochs 10")
        if self.launcher not in LAUNCHERS:
            raise HvdtrainError(f"unknown launcher {self.launcher!r}", f"use one of {', '.join(LAUNCHERS)}")
        for flag, value in (("--nodes", self.nodes), ("--ntasks-per-node", self.ntasks_per_node),
                            ("--cpus-per-task", self.cpus_per_task), ("--gpus-per-node", self.gpus_per_node),
                            ("--signal-lead", self.signal_lead_s)):
            if value is not None and value < 1:
                raise HvdtrainError(f"{flag} {value} must be at least 1", f"use {flag} 1 or more")
        if self.max_requeues < 0:
            raise HvdtrainError(f"--max-requeues {self.max_requeues} is negative", "use 0 to never requeue")
        if self.max_restarts < 0:
            raise HvdtrainError(f"--max-restarts {self.max_restarts} is negative", "use 0 to never restart")
        for flag, text in (("--job-name", self.job_name), ("--partition", self.partition),
                           ("--account", self.account), ("--output", self.output), ("--error", self.error)):
            if text is not None and _has_control(text):
                # An #SBATCH line is not shell: quoting cannot stop a newline from starting a line of code.
                raise HvdtrainError(f"{flag} {text!r} holds a newline or another control character",
                                    f"give {flag} a value on one line, without control characters")
        if "/" in self.job_name:
            raise HvdtrainError(f"--job-name {self.job_name!r} holds a /",
                                "name the job with letters, digits, - and _ (it names a file in hvdtrain-runs/)")
        if not _MPI_PLUGIN.fullmatch(self.mpi_plugin):
            raise HvdtrainError(f"--mpi-plugin {self.mpi_plugin!r} is not a Slurm MPI plugin",
                                "use pmix, pmix_v4, pmi2, cray_shasta or none (srun --mpi=list shows yours)")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise HvdtrainError(f"--time {self.time!r} is not a Slurm time", "e.g. 1:00:00, 90, or 2-00:00:00")
        problem = preempt_signal_problem(self.signal)
        if problem:
            raise HvdtrainError(f"--signal {problem}", f"use --signal {DEFAULT_PREEMPT_SIGNAL}")
        for arg in self.extra:
            if not arg.startswith("--") or _has_control(arg):
                raise HvdtrainError(f"--sbatch-arg {arg!r} is not one sbatch option", "e.g. --sbatch-arg=--exclusive")

    @property
    def ntasks(self) -> int:
        return self.nodes * self.ntasks_per_node


def build_directives(spec: SbatchSpec) -> list[str]:
    """``#SBATCH`` lines, sorted by option name, every value shell-quoted."""
    options: dict[str, str | None] = {
        "--job-name": spec.job_name, "--nodes": str(spec.nodes), "--ntasks-per-node": str(spec.ntasks_per_node),
        "--output": spec.output, "--error": spec.error, "--time": spec.time, "--partition": spec.partition,
        "--account": spec.account,
        "--cpus-per-task": str(spec.cpus_per_task) if spec.cpus_per_task else None,
        "--gpus-per-node": str(spec.gpus_per_node) if spec.gpus_per_node else None,
        "--signal": f"B:{spec.signal}@{spec.signal_lead_s}",
    }
    if spec.requeue:
        options["--open-mode"] = "append"  # a requeued job keeps its job id, so its output file
    lines = [f"#SBATCH {name}={shlex.quote(value)}" for name, value in sorted(options.items()) if value is not None]
    if spec.requeue:
        lines.append("#SBATCH --requeue")
    return lines + [f"#SBATCH {shlex.quote(arg)}" for arg in spec.extra]


def build_requeue_block(spec: SbatchSpec) -> str:
    """Shell that requeues a preempted job, at most ``max_requeues`` times (SLURM_RESTART_COUNT)."""
    if not spec.requeue:
        return ""
    return "\n".join([
        f'if [ "$status" -eq {PREEMPTED_EXIT} ]; then',
        f'  if [ "${{SLURM_RESTART_COUNT:-0}}" -lt {spec.max_requeues} ]; then',
        '    echo "hvdtrain: checkpoint saved on preemption; requeueing job $SLURM_JOB_ID'
        f' (restart $((${{SLURM_RESTART_COUNT:-0}} + 1)) of {spec.max_requeues})"',
        '    scontrol requeue "$SLURM_JOB_ID"',
        "    exit 0",
        "  fi",
        f'  echo "hvdtrain: preempted, and all {spec.max_requeues} requeues are used up" >&2',
        "fi",
    ])


def _quote(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return shlex.join(str(item) for item in value)
    return shlex.quote(str(value))


def render_script(spec: SbatchSpec, template: str) -> str:
    """The batch script: ``template`` (Jinja2, undefined names are errors) filled from ``spec``."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     autoescape=False)
    environment.filters["q"] = _quote
    header = [f"# Generated by hvdtrain {hvdtrain.__version__} from the {spec.launcher} template."]
    if spec.produced_by:
        header.append(f"# Command: {shlex.join(spec.produced_by)}".replace("\n", " "))
    try:
        return environment.from_string(template).render(
            spec=spec, header="\n".join(header), directives="\n".join(build_directives(spec)),
            requeue=build_requeue_block(spec), preempted_exit=PREEMPTED_EXIT)
    except jinja2.TemplateError as exc:
        raise HvdtrainError(f"sbatch template: {exc}",
                            "use the variables of the templates in hvdtrain/slurm/templates/") from None


def read_template(launcher: str, path: Path | None) -> str:
    source = path or TEMPLATES / f"{launcher}.sbatch"
    try:
        return source.read_text()
    except OSError as exc:
        raise HvdtrainError(f"cannot read sbatch template {source} ({exc.strerror})",
                            "give --template PATH, or reinstall hvdtrain from its repository") from None


def trainer_signal(command: tuple[str, ...]) -> str | None:
    """The signal an ``hvdtrain train`` in ``command`` was told to stop on (--preempt-signal), or
    None when it was not (it then stops on the job's, which the templates export), when the command
    is no such trainer, or when its signal cannot be known here (it comes from a --config file)."""
    args = list(command)
    starts = [i for i in range(1, len(args)) if args[i] == "train" and Path(args[i - 1]).name == "hvdtrain"]
    if not starts or "--config" in args[starts[0]:]:
        return None
    options = args[starts[0] + 1:]
    for index, arg in enumerate(options):
        if arg == "--preempt-signal" and index + 1 < len(options):
            return options[index + 1]
        if arg.startswith("--preempt-signal="):
            return arg.split("=", 1)[1]
    return None


def signal_mismatch(spec: SbatchSpec) -> tuple[str, str] | None:
    """(problem, fix) when Slurm would warn the job with a signal its trainer does not stop on:
    the warning would kill the ranks instead of making them save a checkpoint."""
    trainer = trainer_signal(spec.command)
    if trainer is None or trainer == spec.signal or spec.signal == "TERM":  # the trainer always stops on TERM
        return None
    return (f"the job is warned with --signal {spec.signal} but hvdtrain train stops on {trainer}",
            f"add --preempt-signal {spec.signal} to the train command, or use --signal {trainer}")


def lint_script(spec: SbatchSpec, script: str) -> list[str]:
    """Problems a user would otherwise find after waiting in the queue (pure; bash -n is separate)."""
    problems = []
    mismatch = signal_mismatch(spec)
    if mismatch:
        problems.append(f"{mismatch[0]} (fix: {mismatch[1]})")
    if spec.requeue and "--signal=" not in script:
        problems.append("requeue is on but no --signal: the job gets no warning before it is stopped")
    if "--ntasks=" in script and "--ntasks-per-node=" not in script:
        problems.append("--ntasks without --ntasks-per-node: Slurm may put the ranks anywhere")
    if spec.gpus_per_node and spec.gpus_per_node != spec.ntasks_per_node:
        problems.append(f"{spec.gpus_per_node} GPUs per node but {spec.ntasks_per_node} ranks per node: "
                        "hvdtrain uses one GPU per rank")
    if spec.launcher == "horovodrun" and spec.gpus_per_node and spec.nodes > 1 and "--exclusive" not in spec.extra:
        problems.append("horovodrun starts the other nodes' ranks over ssh, outside the job's Slurm step: on a "
                        "node shared with other jobs they see, and may take, those jobs' GPUs (use --launcher "
                        "srun or mpirun, whose ranks Slurm confines to this job's GPUs, or --sbatch-arg=--exclusive)")
    launches = re.findall(r"-np \S+|--ntasks=\S+", script.split("#SBATCH")[-1])
    if any("SLURM_NTASKS" not in launch and launch.split("=")[-1].split()[-1] != str(spec.ntasks)
           for launch in launches):
        problems.append(f"the launch line does not start {spec.ntasks} ranks (nodes x ntasks-per-node)")
    return problems
