"""MPICH (Hydra) ``mpiexec`` argv from a launch plan (pure).

hvdtrain's Horovod is built against Open MPI; this builder serves sites whose Horovod uses MPICH.
"""

from __future__ import annotations

from hvdtrain.launch.plan import ENV_REASONS, LaunchPlan, Part


def mpiexec_parts(plan: LaunchPlan) -> list[Part]:
    parts = [
        Part(("mpiexec", "-n", str(plan.np)), "number of ranks"),
        Part(("-hosts", ",".join(str(host) for host in plan.hosts)), f"hosts:slots ({plan.hosts_from})"),
    ]
    slots = {host.slots for host in plan.hosts}
    if len(slots) == 1:
        parts.append(Part(("-ppn", str(slots.pop())), "ranks per node"))
    if plan.env_names:
        parts.append(Part(("-genvlist", ",".join(plan.env_names)), "forward these variables to every rank"))
    for name, value in plan.all_env_values:
        parts.append(Part(("-genv", name, value), ENV_REASONS.get(name, "set in every rank")))
    if plan.tag_output:
        parts.append(Part(("-prepend-rank",), "prefix each output line with the rank"))
    if plan.launcher_args:
        parts.append(Part(plan.launcher_args, "passed through from --mpi-args"))
    return [*parts, plan.rank_command]
