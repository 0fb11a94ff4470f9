"""Preflight: before burning an allocation, check that every host answers over ssh and runs the
same Python, torch, Horovod and MPI as this one (``hvdtrain doctor --hostfile``)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hvdtrain.hosts.host import Host
from hvdtrain.launch.ssh import SshSettings, build_ssh_argv

# doctor --json fields that must agree between hosts for ranks to work together.
COMPARED = ("python", "torch", "horovod", "mpirun", "mpi_built", "gloo_built", "nccl_built",
            "built_against_torch", "built_against_mpi")
SSH_FAILED = 255  # ssh's own exit status when it cannot connect or authenticate


@dataclass(frozen=True)
class HostCheck:
    host: str
    reachable: bool
    problem: str  # empty when the host is fine
    mismatches: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problem and not self.mismatches


def compare_reports(local: Mapping[str, Any], remote: Mapping[str, Any]) -> tuple[str, ...]:
    """``field: here X, there Y`` for every compared field that differs."""
    return tuple(f"{field}: here {local.get(field)}, there {remote.get(field)}"
                 for field in COMPARED if local.get(field) != remote.get(field))


def interpret(host: str, returncode: int, stdout: str, stderr: str, local: Mapping[str, Any],
              seconds: float) -> HostCheck:
    """Turn one ``ssh host hvdtrain doctor --json`` into a verdict."""
    last_error = (stderr.strip().splitlines() or [f"exit status {returncode}"])[-1]
    if returncode == SSH_FAILED:
        return HostCheck(host, False, f"ssh failed: {last_error}", (), seconds)
    try:
        remote = json.loads(stdout)
    except json.JSONDecodeError:
        return HostCheck(host, True, f"hvdtrain doctor did not run there: {last_error}", (), seconds)
    problem = "; ".join(remote.get("problems", []))
    return HostCheck(host, True, problem, compare_reports(local, remote), seconds)


def check_host(host: str, remote_command: Sequence[str], settings: SshSettings, local: Mapping[str, Any],
               timeout_s: int) -> HostCheck:
    argv = build_ssh_argv(host, remote_command, settings, timeout_s=min(timeout_s, 10))
    start = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        return HostCheck(host, False, f"no answer within {timeout_s} s", (), time.monotonic() - start)
    return interpret(host, done.returncode, done.stdout, done.stderr, local, time.monotonic() - start)


def run_preflight(hosts: Sequence[Host], remote_command: Sequence[str], settings: SshSettings,
                  local: Mapping[str, Any], timeout_s: int) -> list[HostCheck]:
    """Check every host at once; the slowest host bounds the wait, not their sum."""
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        futures = [pool.submit(check_host, host.name, remote_command, settings, local, timeout_s)
                   for host in hosts]
        return [future.result() for future in futures]


def render_table(checks: Sequence[HostCheck]) -> str:
    width = max(len("host"), *(len(check.host) for check in checks))
    lines = [f"{'host':<{width}}  ssh  versions  time   verdict"]
    for check in checks:
        ssh = "ok" if check.reachable else "FAIL"
        versions = "-" if not check.reachable or check.problem.startswith("hvdtrain doctor did not run") \
            else "same" if not check.mismatches else "DIFFER"
        verdict = "ok" if check.ok else "; ".join(filter(None, (check.problem, *check.mismatches)))
        lines.append(f"{check.host:<{width}}  {ssh:<4} {versions:<9} {check.seconds:5.1f}s {verdict}")
    return "\n".join(lines)
