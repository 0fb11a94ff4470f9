"""Open MPI ``mpirun`` argv from a launch plan (pure)."""

from __future__ import annotations

from hvdtrain.launch.plan import LaunchPlan

# With Open MPI's default busy-polling a rank waiting in the all-reduce spins on a core another
# rank computes on. Yielding when idle and not binding ranks to cores made the built-in CNN train
# 1.25x faster at 2 ranks on 2 cores (README, "Why these mpirun flags").
CPU_FRIENDLY_MCA = (("mpi_yield_when_idle", "1"),)


def build_mpirun_argv(plan: LaunchPlan, mpirun: str = "mpirun") -> list[str]:
    argv = [mpirun, "-np", str(plan.np), "-H", ",".join(str(host) for host in plan.hosts),
            "--bind-to", "none", "--map-by", "slot"]
    if plan.as_root:
        argv.append("--allow-run-as-root")
    for name, value in CPU_FRIENDLY_MCA:
        argv += ["--mca", name, value]
    for name in plan.env_names:
        argv += ["-x", name]
    return argv + list(plan.command)
