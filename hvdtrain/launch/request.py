"""``hvdtrain run`` as data: the user's options in, the exact request to execute out (pure).

``plan_run`` decides everything (hosts, environment, tuning, launcher, argv); ``execute`` in
``launch.execute`` runs exactly that request, and ``--dry-run`` prints it. Probes of the machine
are made before, by ``launch.detect.probe_launchers``, and passed in.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host
from hvdtrain.job.paths import RunPaths
from hvdtrain.launch.choose import LauncherChoice, build_parts, choose_launcher, render_explanation
from hvdtrain.launch.detect import LauncherProbes
from hvdtrain.launch.discovery import discovery_wrapper
from hvdtrain.launch.plan import (
    DEFAULT_STALL_TIMEOUT_S,
    ElasticSettings,
    LaunchPlan,
    Part,
    build_plan,
    flatten,
    horovod_tuning,
    launch_env,
    parse_env_flags,
    placement_settings,
    supervisor_prefix,
)
from hvdtrain.launch.ssh import DEFAULT_SSH, SshSettings
from hvdtrain.slurm.nodelist import hosts_from_slurm, slurm_job


@dataclass(frozen=True)
class RunOptions:
    """What the user asked ``hvdtrain run`` for. These defaults are the CLI's defaults."""

    np: int
    command: tuple[str, ...]
    hosts: tuple[Host, ...] | None = None  # -H or --hostfile
    launcher: str = "auto"
    env_flags: tuple[str, ...] = ()
    output_dir: Path | None = None
    stall_timeout: int = DEFAULT_STALL_TIMEOUT_S
    tag_output: bool = False
    timeline: Path | None = None
    mpi_args: str = ""
    fusion_threshold_mb: float | None = None
    cycle_time_ms: float | None = None
    autotune: bool = False
    horovod_wait: str | None = None
    horovod_allreduce: str | None = None
    ssh: SshSettings = DEFAULT_SSH
    network_interface: str | None = None
    oversubscribe: bool = False
    elastic: bool = False
    min_np: int | None = None
    max_np: int | None = None
    host_discovery_script: Path | None = None


@dataclass(frozen=True)
class RunRequest:
    """Exactly what ``execute`` starts: one launcher argv, its environment, the run directory."""

    plan: LaunchPlan
    choice: LauncherChoice
    parts: tuple[Part, ...]
    env: Mapping[str, str] = field(repr=False)
    paths: RunPaths
    scripts: tuple[tuple[Path, str], ...] = ()  # made in the run folder before the launch: path, text

    @property
    def argv(self) -> list[str]:
        return flatten(self.parts)

    def render(self, explain: bool) -> str:
        """The command line (``--dry-run``), or why each part is in it (``--explain``)."""
        return render_explanation(list(self.parts), self.choice) if explain else shlex.join(self.argv)


def plan_run(options: RunOptions, env: Mapping[str, str], probes: LauncherProbes, paths: RunPaths,
             uid: int, hvdtrain_exe: str, python: str) -> RunRequest:
    """The request for ``options`` in this environment. Hosts: the user's, else the Slurm
    allocation's, else this machine."""
    names, values = parse_env_flags(options.env_flags)
    # -x NAME=VALUE: set in the launcher's environment and forwarded by name, so the value (a token,
    # say) never sits in the launcher's command line, which every user of the node can read.
    launcher_env = {**launch_env(env, python), **dict(values)}
    job = slurm_job(launcher_env)
    tuning = horovod_tuning(options.fusion_threshold_mb, options.cycle_time_ms, options.autotune, launcher_env,
                            options.horovod_wait, options.horovod_allreduce)
    plan = build_plan(
        options.np, options.hosts, options.command, launcher_env, uid,
        slurm_hosts=hosts_from_slurm(launcher_env) if job else None,
        env_flags=(*names, *(name for name, _ in values), *tuning, *placement_settings(launcher_env)),
        supervisor=supervisor_prefix(hvdtrain_exe, paths.root), stall_timeout=options.stall_timeout,
        tag_output=options.tag_output, timeline=options.timeline, launcher_args=split_args(options.mpi_args),
        ssh=options.ssh, network_interface=options.network_interface, oversubscribe=options.oversubscribe,
        elastic=elastic_settings(options, paths))
    choice = choose_launcher(options.launcher, job, probes.srun_plugins, probes.mpi, elastic=options.elastic)
    if choice.name == "horovodrun":
        launcher_env = allowed_env(launcher_env, plan)
    scripts = ((paths.discovery, discovery_wrapper(hvdtrain_exe, options.host_discovery_script)),) \
        if plan.elastic and options.host_discovery_script else ()
    return RunRequest(plan, choice, tuple(build_parts(plan, choice)), launcher_env, paths, scripts)


# What horovodrun itself needs beyond what the ranks get: it writes every variable of its
# environment, as NAME=VALUE, into each rank's command line (ssh's too), which anyone on the node
# can read, so it gets these and the plan's forwarded names, never the whole environment.
LAUNCHER_ONLY_ENV = ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TMPDIR", "SSH_AUTH_SOCK")


def allowed_env(env: Mapping[str, str], plan: LaunchPlan) -> dict[str, str]:
    wanted = {*LAUNCHER_ONLY_ENV, *plan.env_names}
    return {name: value for name, value in env.items() if name in wanted}


def elastic_settings(options: RunOptions, paths: RunPaths) -> ElasticSettings | None:
    """horovodrun's elastic settings; it runs the discovery wrapper in the run folder, which runs
    the user's script."""
    script = options.host_discovery_script
    if not options.elastic:
        if options.min_np is not None or options.max_np is not None or script is not None:
            raise HvdtrainError("--min-np, --max-np and --host-discovery-script belong to elastic jobs",
                                "add --elastic")
        return None
    if script is None:
        raise HvdtrainError("--elastic needs --host-discovery-script", "give an executable that prints host:slots")
    if not os.access(script, os.X_OK) or not script.is_file():
        raise HvdtrainError(f"host discovery script {script} is not an executable file", f"chmod +x {script}")
    return ElasticSettings(options.min_np or 1, options.max_np or options.np, paths.discovery)


def split_args(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise HvdtrainError(f"--mpi-args {text!r}: {exc}", "balance the quotes in --mpi-args") from None
