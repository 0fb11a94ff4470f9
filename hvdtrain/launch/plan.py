"""The launch plan: everything needed to start N ranks, decided before anything runs.

Launcher builders turn a plan into ``Part``s, each a run of argv elements with the reason it is
there, so ``--dry-run`` prints the command and ``--explain`` says why each flag is in it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host, check_np
from hvdtrain.job.cores import BIND_VARIABLE
from hvdtrain.launch.ssh import DEFAULT_SSH, SshSettings


@dataclass(frozen=True)
class HorovodSwitch:
    """A run-time switch of one of hvdtrain's patches to Horovod (hvdtrain/install/patches): the
    variable the patched Horovod reads, the ``hvdtrain run`` option that sets it, hvdtrain's mode and
    upstream's, and why hvdtrain's is the default (for --explain)."""

    variable: str
    option: str
    default: str
    upstream: str
    why: str

    @property
    def modes(self) -> tuple[str, str]:
        return (self.default, self.upstream)


# wait-without-spinning.patch: "sleep" runs a round only when there is work, its background thread
# polls (yielding the core) while the rank is busy and sleeps once it has been idle for 100 ms, and a
# thread waiting for a result blocks and ends the cycle; "spin" is upstream's busy waiting.
WAIT = HorovodSwitch("HVDTRAIN_HOROVOD_WAIT", "--horovod-wait", "sleep", "spin",
                     "idle Horovod threads sleep instead of busy-polling a core the model needs, busy ones poll "
                     "only while there is work, and a thread waiting for a result blocks and starts its round at "
                     "once (spin: upstream)")
# within-node-shared-memory-allreduce.patch: "shm" sums float32/float64 all-reduces through a shared
# memory segment when every rank runs on one node; "mpi" is upstream's MPI_Allreduce.
ALLREDUCE = HorovodSwitch("HVDTRAIN_HOROVOD_ALLREDUCE", "--horovod-allreduce", "shm", "mpi",
                          "ranks that share one node sum float gradients through shared memory instead of "
                          "MPI_Allreduce: Horovod's 1 MiB all-reduce 2x faster, 16 MiB 3x (mpi: upstream)")
SWITCHES = (WAIT, ALLREDUCE)
# The builds the benchmarks compare hvdtrain's against, by name: the switches each turns back to
# upstream's mode (all of them; the all-reduce's data step only).
UPSTREAM_VARIANTS = {"upstream": SWITCHES, "mpi": (ALLREDUCE,)}


def switch_flags(upstream: Sequence[HorovodSwitch] = ()) -> tuple[str, ...]:
    """``hvdtrain run`` options setting every switch: upstream's mode for those in ``upstream``,
    hvdtrain's for the others (so the user's environment does not decide a benchmark's column)."""
    return tuple(arg for switch in SWITCHES
                 for arg in (switch.option, switch.upstream if switch in upstream else switch.default))
# Environment the ranks need, forwarded by name (with the caller's value) when set, and why (--explain).
FORWARDED_ENV = {
    "PATH": "programs: the ranks run this install's hvdtrain and python",
    "LD_LIBRARY_PATH": "shared libraries (MPI, CUDA, NCCL) where the caller finds them",
    "PYTHONPATH": "your modules, where the caller imports them",
    "VIRTUAL_ENV": "the virtualenv the caller runs in",
    "HOROVOD_*": "Horovod's settings",
    "HVDTRAIN_*": "hvdtrain's settings (patch switches, core binding, preemption signal, trackers)",
    "NCCL_*": "NCCL's settings: network interface, debug output, protocols of the GPU all-reduce",
    "UCX_*": "UCX's transports (InfiniBand, shared memory)",
    "FI_*": "libfabric's providers (EFA, Slingshot)",
    "CUDA_*": "CUDA's settings (not CUDA_VISIBLE_DEVICES: each node's scheduler sets its own)",
    "TORCH_*": "torch's settings",
    "PYTORCH_*": "PyTorch's settings (CUDA allocator, ...)",
    "OMP_*": "OpenMP's threads",
    "MKL_*": "MKL's threads",
    "WANDB_*": "Weights & Biases",
    "MLFLOW_*": "MLflow's tracking server and experiment",
}
NOT_FORWARDED = ("CUDA_VISIBLE_DEVICES",)  # the GPUs of the caller's node mean nothing on another node
LAUNCHERS = ("mpirun", "horovodrun", "srun", "mpiexec")
# End a job whose ranks wait this long for one that never joins a collective (0: only warn).
DEFAULT_STALL_TIMEOUT_S = 300
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Part:
    """A run of argv elements and why they are there."""

    args: tuple[str, ...]
    why: str

    def __post_init__(self) -> None:
        if not self.why.strip():  # --explain promises a reason for every argument
            raise ValueError(f"launch part {self.args} has no reason")


@dataclass(frozen=True)
class ElasticSettings:
    """horovodrun --min-np/--max-np/--host-discovery-script: the world may shrink and grow."""

    min_np: int
    max_np: int
    discovery_script: Path

    def check(self, np: int) -> None:
        if not 1 <= self.min_np <= np <= self.max_np:
            raise HvdtrainError(f"elastic sizes must satisfy 1 <= --min-np ({self.min_np}) <= -np ({np}) "
                                f"<= --max-np ({self.max_np})", "e.g. --min-np 1 -np 2 --max-np 4")


@dataclass(frozen=True)
class LaunchPlan:
    """N ranks of one command on some hosts, and how to start them."""

    np: int
    hosts: tuple[Host, ...]
    command: tuple[str, ...]
    hosts_from: str = "default"  # "default" (this machine), "user" (-H/--hostfile) or "slurm"
    env_names: tuple[str, ...] = ()  # forwarded with their current values
    env_values: tuple[tuple[str, str], ...] = ()  # -x NAME=VALUE
    as_root: bool = False
    supervisor: tuple[str, ...] = ()  # argv prefix that runs each rank under `hvdtrain supervise`
    stall_timeout: int = DEFAULT_STALL_TIMEOUT_S  # seconds; 0 leaves Horovod's stall check at warn-only
    tag_output: bool = False
    timeline: Path | None = None
    launcher_args: tuple[str, ...] = ()
    ssh: SshSettings = DEFAULT_SSH
    network_interface: str | None = None
    oversubscribe: bool = False
    elastic: ElasticSettings | None = None

    def __post_init__(self) -> None:
        if not self.command:
            raise HvdtrainError("no command to launch", "put it after --, e.g. hvdtrain run -np 2 -- hvdtrain train")
        check_np(self.np, self.hosts, self.oversubscribe)
        if self.network_interface is not None:
            check_interface(self.network_interface)
        if self.elastic is not None:
            self.elastic.check(self.np)

    @property
    def all_env_values(self) -> tuple[tuple[str, str], ...]:
        """-x values plus the settings hvdtrain controls (timeline, stall shutdown, and the network
        interface for NCCL and Gloo unless the caller set those variables, which go as they are)."""
        timeline = (("HOROVOD_TIMELINE", str(self.timeline)),) if self.timeline else ()
        given = {*self.env_names, *(name for name, _ in self.env_values)}
        interface = tuple((name, self.network_interface) for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
                          if self.network_interface and name not in given)
        return self.env_values + timeline + stall_settings(self.stall_timeout) + interface

    @property
    def rank_command(self) -> Part:
        why = "each rank under hvdtrain's supervisor (per-rank log and failure report)" if self.supervisor \
            else "the program every rank runs"
        return Part(self.supervisor + self.command, why)


def stall_settings(timeout_s: int) -> tuple[tuple[str, str], ...]:
    """Horovod warns about a collective some ranks never join after CHECK seconds and, with a
    SHUTDOWN time, ends the job after it (by default it only warns, forever)."""
    if timeout_s <= 0:
        return ()
    return (("HOROVOD_STALL_CHECK_TIME_SECONDS", str(max(1, min(60, timeout_s // 2)))),
            ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", str(timeout_s)))


# Horovod's background thread gathers requests every cycle (Horovod's default: 1 ms), which puts
# a floor under each all-reduce's latency. Measured here: 0.1 ms cut a 64 KiB all-reduce from
# about 1.2 ms to 0.4-0.6 ms, and training was no slower (docs/performance.md). With our patch's
# sleeping wait, a synchronous all-reduce ends the cycle early, so the cycle is only the window in
# which asynchronous requests (gradients during backward) share a round; 0.1, 0.3 and 1 ms then
# trained alike here.
DEFAULT_CYCLE_TIME_MS = 0.1
# Why each variable hvdtrain sets is there, for --explain.
ENV_REASONS = {
    "HOROVOD_CYCLE_TIME": f"Horovod batches requests every {DEFAULT_CYCLE_TIME_MS:g} ms instead of 1 ms: "
                          "lower all-reduce latency",
    **{switch.variable: switch.why for switch in SWITCHES},
    BIND_VARIABLE: "the launcher binds nothing; each rank binds itself and its threads to an even share of "
                   "its node's cores (0: no binding)",
    "NCCL_SOCKET_IFNAME": "NCCL's bootstrap and socket traffic over the --network-interface (else it may pick an "
                          "interface the other nodes cannot reach, and hang)",
    "GLOO_SOCKET_IFNAME": "Gloo's traffic over the --network-interface",
}
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")  # a Linux interface name (IFNAMSIZ - 1)


def check_interface(name: str) -> None:
    if not _INTERFACE.fullmatch(name):
        raise HvdtrainError(f"--network-interface {name!r} is not a network interface name",
                            "use a name `ip link` shows, e.g. ib0 or eth0")


def horovod_tuning(fusion_threshold_mb: float | None, cycle_time_ms: float | None,
                   autotune: bool, env: Mapping[str, str], wait: str | None = None,
                   allreduce: str | None = None) -> tuple[str, ...]:
    """``NAME=VALUE`` settings of Horovod's runtime, for ``-x``. The cycle time defaults to
    hvdtrain's unless the user set HOROVOD_CYCLE_TIME or asked Horovod to tune it; each switch of
    our patches (``wait``, ``allreduce``) to hvdtrain's mode unless the user exported its variable."""
    settings = []
    if fusion_threshold_mb is not None:
        settings.append(f"HOROVOD_FUSION_THRESHOLD={int(fusion_threshold_mb * 2**20)}")
    if cycle_time_ms is None and not autotune and "HOROVOD_CYCLE_TIME" not in env:
        cycle_time_ms = DEFAULT_CYCLE_TIME_MS
    if cycle_time_ms is not None:
        settings.append(f"HOROVOD_CYCLE_TIME={cycle_time_ms:g}")
    if autotune:
        settings.append("HOROVOD_AUTOTUNE=1")
    for switch, mode in zip(SWITCHES, (wait, allreduce), strict=True):
        if mode is None and switch.variable not in env:
            mode = switch.default
        if mode is not None:
            settings.append(f"{switch.variable}={mode}")
    return tuple(settings)


def placement_settings(env: Mapping[str, str]) -> tuple[str, ...]:
    """Ranks bind themselves to their share of the cores (hvdtrain.job.cores) unless the user
    exported HVDTRAIN_BIND_CORES."""
    return () if BIND_VARIABLE in env else (f"{BIND_VARIABLE}=1",)


def supervisor_prefix(hvdtrain_exe: str, run_dir: Path) -> tuple[str, ...]:
    return (hvdtrain_exe, "supervise", "--run-dir", str(run_dir), "--")


def env_prefix(plan: LaunchPlan, launcher: str) -> list[Part]:
    """``env NAME=VALUE`` before a launcher that hands its whole environment to the ranks."""
    if not plan.all_env_values:
        return []
    return [Part(("env", *(f"{name}={value}" for name, value in plan.all_env_values)),
                 f"set for {launcher}, which passes its environment to every rank")]


def flatten(parts: Sequence[Part]) -> list[str]:
    return [arg for part in parts for arg in part.args]


# Search paths: an empty entry means the working folder, which a rank must never search by accident.
PATH_VARIABLES = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH")


def launch_env(env: Mapping[str, str], python: str) -> dict[str, str]:
    """The launcher's environment: this install's ``bin`` first on PATH, so ``horovodrun`` and the
    ranks' ``hvdtrain`` resolve to the same virtualenv as the ``hvdtrain`` that launched them; no
    empty entry in any search path."""
    cleaned = {name: [part for part in env[name].split(":") if part] for name in PATH_VARIABLES if name in env}
    bin_dir = str(Path(python).parent)
    path = cleaned.setdefault("PATH", [])
    if bin_dir not in path:
        path.insert(0, bin_dir)
    return {**env, **{name: ":".join(parts) for name, parts in cleaned.items()}}


def select_env_names(env: Mapping[str, str], patterns: Iterable[str] = FORWARDED_ENV) -> tuple[str, ...]:
    """The names in ``env`` that match the forwarding patterns, sorted for a stable argv."""
    chosen = tuple(patterns)
    return tuple(sorted(name for name in env if name not in NOT_FORWARDED
                        and any(fnmatch.fnmatchcase(name, pattern) for pattern in chosen)))


def forward_reason(name: str) -> str:
    """Why ``name`` is forwarded, for --explain."""
    return next((why for pattern, why in FORWARDED_ENV.items() if fnmatch.fnmatchcase(name, pattern)),
                "you asked for it (-x)")


def parse_env_flags(flags: Sequence[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """``-x NAME`` forwards a variable, ``-x PREFIX_*`` every one that starts so, ``-x NAME=VALUE``
    sets one; names must be valid."""
    names: list[str] = []
    values: list[tuple[str, str]] = []
    for flag in flags:
        name, sep, value = flag.partition("=")
        if not _ENV_NAME.match(name.removesuffix("*") if not sep else name):
            raise HvdtrainError(f"-x {flag!r}: {name!r} is not an environment variable name",
                                "use -x NAME, -x PREFIX_* or -x NAME=VALUE with letters, digits and _")
        if sep:
            values.append((name, value))
        else:
            names.append(name)
    return tuple(names), tuple(values)


def build_plan(np: int, hosts: tuple[Host, ...] | None, command: tuple[str, ...], env: Mapping[str, str],
               uid: int, slurm_hosts: tuple[Host, ...] | None = None, env_flags: Sequence[str] = (),
               supervisor: tuple[str, ...] = (), stall_timeout: int = DEFAULT_STALL_TIMEOUT_S,
               tag_output: bool = False,
               timeline: Path | None = None,
               launcher_args: tuple[str, ...] = (), ssh: SshSettings = DEFAULT_SSH,
               network_interface: str | None = None, oversubscribe: bool = False,
               elastic: ElasticSettings | None = None) -> LaunchPlan:
    """A plan from the user's flags. Hosts: the user's, else the Slurm allocation's, else
    ``localhost`` with one slot per rank."""
    if hosts:
        chosen, source = hosts, "user"
    elif slurm_hosts:
        chosen, source = slurm_hosts, "slurm"
    else:
        chosen, source = (Host("localhost", max(np, 1)),), "default"
    names, values = parse_env_flags(env_flags)
    patterns = [name for name in names if name.endswith("*")]
    exact = {name for name in names if not name.endswith("*")}
    set_here = {name for name, _ in values}  # -x NAME=VALUE wins over the caller's NAME
    forwarded = tuple(sorted((set(select_env_names(env, [*FORWARDED_ENV, *patterns])) | exact) - set_here))
    return LaunchPlan(np=np, hosts=chosen, command=command, hosts_from=source, env_names=forwarded,
                      env_values=values, as_root=uid == 0, supervisor=supervisor, stall_timeout=stall_timeout,
                      tag_output=tag_output,
                      timeline=timeline, launcher_args=launcher_args, ssh=ssh, network_interface=network_interface,
                      oversubscribe=oversubscribe, elastic=elastic)
