"""``horovodrun`` argv from a launch plan (pure)."""

from __future__ import annotations

from hvdtrain.errors import HvdtrainError
from hvdtrain.launch.plan import ElasticSettings, LaunchPlan, Part, env_prefix


def elastic_part(elastic: ElasticSettings) -> Part:
    return Part(("--min-np", str(elastic.min_np), "--max-np", str(elastic.max_np), "--host-discovery-script",
                 str(elastic.discovery_script)),
                "elastic: lost workers are dropped, new hosts are added, down to --min-np")


def horovodrun_parts(plan: LaunchPlan) -> list[Part]:
    if plan.oversubscribe:
        raise HvdtrainError("horovodrun cannot run more ranks than slots",
                            "add slots with -H host:slots, or use --launcher mpirun --oversubscribe")
    parts = [
        *env_prefix(plan, "horovodrun"),
        Part(("horovodrun", "-np", str(plan.np)), "number of ranks" + (" to start with" if plan.elastic else "")),
        elastic_part(plan.elastic) if plan.elastic else
        Part(("-H", ",".join(str(host) for host in plan.hosts)), f"hosts:slots ({plan.hosts_from})"),
        Part(("--gloo",), "Horovod's own launcher and Gloo rendezvous (no mpirun, needed for elastic jobs)"),
        Part(("--disable-cache",), "check hosts and interfaces on every launch; a cached check goes stale"),
    ]
    if plan.ssh.options:
        raise HvdtrainError("horovodrun cannot pass --ssh-option to ssh",
                            "put the options in ~/.ssh/config for those hosts, or use --launcher mpirun")
    if plan.ssh.port is not None:
        parts.append(Part(("--ssh-port", str(plan.ssh.port)), "ssh port of the hosts"))
    if plan.ssh.identity is not None:
        parts.append(Part(("--ssh-identity-file", str(plan.ssh.identity)), "ssh key for the hosts"))
    if plan.network_interface:
        parts.append(Part(("--network-interfaces", plan.network_interface), "the network the ranks talk over"))
    if plan.launcher_args:
        parts.append(Part(plan.launcher_args, "passed through from --mpi-args"))
    return [*parts, plan.rank_command]
