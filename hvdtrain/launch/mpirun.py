"""Open MPI ``mpirun`` argv from a launch plan (pure)."""

from __future__ import annotations

from hvdtrain.launch.plan import ENV_REASONS, LaunchPlan, Part, forward_reason

# With Open MPI's default busy-polling a rank waiting in the all-reduce spins on a core another
# rank computes on. Yielding when idle and not binding ranks to cores made the built-in CNN train
# 1.25x faster at 2 ranks on 2 cores (docs/performance.md, "Why these mpirun flags").
CPU_FRIENDLY_MCA = (("mpi_yield_when_idle", "1"),)


def mpirun_parts(plan: LaunchPlan, mpirun: str = "mpirun") -> list[Part]:
    parts = [
        Part((mpirun, "-np", str(plan.np)), "number of ranks"),
        Part(("-H", ",".join(str(host) for host in plan.hosts)), f"hosts:slots ({plan.hosts_from})"),
        Part(("--bind-to", "none"), "Open MPI binds nothing: each rank binds itself to its share of the node's cores"),
        Part(("--map-by", "slot"), "fill each host's slots in order, so neighbouring ranks share a node"),
    ]
    if plan.oversubscribe:
        parts.append(Part(("--oversubscribe",), "more ranks than slots, as you asked"))
    if plan.as_root:
        parts.append(Part(("--allow-run-as-root",), "you are root, and Open MPI refuses root otherwise"))
    for name, value in CPU_FRIENDLY_MCA:
        parts.append(Part(("--mca", name, value), "a waiting rank yields its core instead of busy-polling"))
    if not plan.ssh.is_default:
        parts.append(Part(("--mca", "plm_rsh_args", " ".join(plan.ssh.args())), "how mpirun's ssh reaches the hosts"))
    if plan.network_interface:
        for component in ("oob_tcp_if_include", "btl_tcp_if_include"):
            parts.append(Part(("--mca", component, plan.network_interface), "the network the ranks talk over"))
    parts += [Part(("-x", name), f"forward: {forward_reason(name)}") for name in plan.env_names]
    parts += [Part(("-x", f"{name}={value}"), ENV_REASONS.get(name, "set in every rank"))
              for name, value in plan.all_env_values]
    if plan.tag_output:
        parts.append(Part(("--tag-output",), "prefix each output line with [job,rank]"))
    if plan.launcher_args:
        parts.append(Part(plan.launcher_args, "passed through from --mpi-args"))
    return [*parts, plan.rank_command]
