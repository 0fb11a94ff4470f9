"""Slurm ``srun`` argv from a launch plan (pure)."""

from __future__ import annotations

from hvdtrain.launch.plan import LaunchPlan, Part, env_prefix


def srun_parts(plan: LaunchPlan, mpi_plugin: str) -> list[Part]:
    parts = [
        *env_prefix(plan, "srun"),  # not --export=NAME=VALUE: Slurm splits that at every comma
        Part(("srun", f"--ntasks={plan.np}"), "number of ranks"),
        Part((f"--mpi={mpi_plugin}",), "how MPI inside each rank finds its peers (from srun --mpi=list)"),
        Part(("--cpu-bind=none",), "Slurm binds nothing: each rank binds itself to its share of the node's cores"),
        Part(("--kill-on-bad-exit=1",), "one failed rank ends the whole step"),
        Part(("--export=ALL",), "ranks inherit this environment"),
    ]
    if plan.oversubscribe:
        parts.append(Part(("--overcommit",), "more ranks than allocated CPUs, as you asked"))
    if plan.hosts_from == "user":
        nodes = ",".join(host.name for host in plan.hosts)
        parts.append(Part((f"--nodelist={nodes}", f"--nodes={len(plan.hosts)}"), "the hosts you named"))
    if plan.tag_output:
        parts.append(Part(("--label",), "prefix each output line with the rank"))
    if plan.launcher_args:
        parts.append(Part(plan.launcher_args, "passed through from --mpi-args"))
    return [*parts, plan.rank_command]
