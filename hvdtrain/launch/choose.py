"""Which launcher starts the ranks, and the argv it gets (pure: probes are passed in)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hvdtrain.errors import HvdtrainError
from hvdtrain.launch.detect import MpiInfo
from hvdtrain.launch.horovodrun import horovodrun_parts
from hvdtrain.launch.mpiexec import mpiexec_parts
from hvdtrain.launch.mpirun import mpirun_parts
from hvdtrain.launch.plan import LaunchPlan, Part
from hvdtrain.launch.srun import srun_parts
from hvdtrain.slurm.nodelist import SlurmJob

# Debian's Open MPI has no Slurm PMI-1/2 support, so pmi2 starts ranks that never find each other.
USABLE_SRUN_PLUGINS = ("pmix", "pmix_v5", "pmix_v4", "pmix_v3")


@dataclass(frozen=True)
class LauncherChoice:
    name: str
    why: str
    srun_plugin: str = ""


def pick_srun_plugin(plugins: tuple[str, ...]) -> str:
    return next((plugin for plugin in USABLE_SRUN_PLUGINS if plugin in plugins), "")


def choose_launcher(requested: str, slurm: SlurmJob | None, srun_plugins: tuple[str, ...] | None,
                    mpi: MpiInfo | None, elastic: bool = False) -> LauncherChoice:
    """``auto``: horovodrun for elastic jobs, srun inside a Slurm job when it offers PMIx, MPICH's
    mpiexec when that is the MPI, else Open MPI's mpirun. An explicit choice is checked."""
    if elastic:
        if requested not in ("auto", "horovodrun"):
            raise HvdtrainError(f"--elastic needs horovodrun, not --launcher {requested}",
                                "drop --launcher or use --launcher horovodrun")
        return LauncherChoice("horovodrun", "elastic jobs need Horovod's own launcher")
    plugin = pick_srun_plugin(srun_plugins or ())
    job = slurm.job_id if slurm else None
    if requested == "srun" or (requested == "auto" and job and plugin):
        if not plugin:
            offered = ", ".join(srun_plugins) if srun_plugins else "srun not found"
            raise HvdtrainError(f"srun offers no PMIx plugin ({offered})",
                                "use --launcher mpirun, or ask your admins for Slurm's PMIx plugin")
        return LauncherChoice("srun", f"inside Slurm job {job}, and srun offers --mpi={plugin}", plugin)
    if requested != "auto":
        return LauncherChoice(requested, "chosen with --launcher")
    if mpi is not None and mpi.flavor == "mpich":
        return LauncherChoice("mpiexec", f"the MPI on PATH is MPICH {mpi.version}")
    if job:
        return LauncherChoice("mpirun", f"inside Slurm job {job}, but srun offers no PMIx plugin")
    return LauncherChoice("mpirun", "Open MPI's mpirun (no Slurm job around this command)")


def build_parts(plan: LaunchPlan, choice: LauncherChoice) -> list[Part]:
    if choice.name == "srun":
        return srun_parts(plan, choice.srun_plugin)
    if choice.name == "horovodrun":
        return horovodrun_parts(plan)
    if choice.name == "mpiexec":
        return mpiexec_parts(plan)
    return mpirun_parts(plan)


def render_explanation(parts: list[Part], choice: LauncherChoice) -> str:
    """One line per part: the arguments, then why."""
    lines = [f"# launcher: {choice.name} ({choice.why})"]
    lines += [f"{shlex.join(part.args):<50}  # {part.why}" for part in parts]
    return "\n".join(lines)
