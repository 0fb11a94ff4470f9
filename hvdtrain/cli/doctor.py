"""``hvdtrain doctor``: does this install (and every host's) fit together?"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from hvdtrain.cli.options import host_options, resolve_hosts, ssh_options
from hvdtrain.job.paths import hvdtrain_executable
from hvdtrain.launch.plan import check_interface
from hvdtrain.launch.ssh import SshSettings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@host_options
@ssh_options
@click.option("--timeout", type=click.IntRange(min=1), default=30, show_default=True,
              help="Seconds to wait for each host.")
@click.option("--network-interface", default=None, metavar="IFACE",
              help="Also check that this interface (the job's --network-interface) exists on every host.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, hosts: str | None, hostfile: Path | None, ssh_port: int | None,
           ssh_identity: Path | None, ssh_option: tuple[str, ...], timeout: int, network_interface: str | None
           ) -> None:
    """Check that Horovod, torch and MPI on this machine (and on every host) fit together.

    Exits 0 when Horovod can run, 1 with one line per problem and its fix. With -H or
    --hostfile, also checks every host over ssh, in parallel, and prints a table. On a GPU
    node, shows the GPU and cores each local rank takes with one rank per GPU.

    \b
    Example:
      hvdtrain doctor
      hvdtrain doctor --hostfile hostfiles/two-nodes --timeout 20 --network-interface ib0
    """
    from hvdtrain.install.doctor import advise, collect_facts, diagnose, render_json, render_text

    if network_interface is not None:
        check_interface(network_interface)
    targets = resolve_hosts(hosts, hostfile)
    ssh = SshSettings(ssh_port, ssh_identity, ssh_option)
    facts = collect_facts()
    problems, warnings = diagnose(facts, network_interface if targets is None else None), advise(facts)
    report = render_json(facts, problems, warnings)
    if targets is None:
        click.echo(report if as_json else render_text(facts, problems, warnings))
        ctx.exit(1 if problems else 0)
    from hvdtrain.install.preflight import render_table, run_preflight

    remote = [hvdtrain_executable(), "doctor", "--json"]
    remote += ["--network-interface", network_interface] if network_interface is not None else []
    checks = run_preflight(targets, remote, ssh, json.loads(report), timeout)
    if as_json:
        click.echo(json.dumps({"local": json.loads(report), "hosts": [asdict(c) for c in checks]}, indent=2))
    else:
        click.echo(render_table(checks))
        for problem in problems:
            click.echo(f"problem here: {problem}")
    ctx.exit(0 if not problems and all(check.ok for check in checks) else 1)
