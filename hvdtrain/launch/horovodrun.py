"""``horovodrun`` argv from a launch plan (pure)."""

from __future__ import annotations

from hvdtrain.launch.plan import LaunchPlan, Part, env_prefix


def horovodrun_parts(plan: LaunchPlan) -> list[Part]:
    parts = [
        *env_prefix(plan, "horovodrun"),
        Part(("horovodrun", "-np", str(plan.np)), "number of ranks"),
        Part(("-H", ",".join(str(host) for host in plan.hosts)), f"hosts:slots ({plan.hosts_from})"),
        Part(("--gloo",), "Horovod's own launcher and Gloo rendezvous (no mpirun, needed for elastic jobs)"),
    ]
    if plan.output_dir:
        parts.append(Part(("--output-filename", str(plan.output_dir)), "one log directory per rank"))
    if plan.launcher_args:
        parts.append(Part(plan.launcher_args, "passed through from --mpi-args"))
    return [*parts, Part(plan.command, "the program every rank runs")]
