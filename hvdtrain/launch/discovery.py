"""Elastic jobs' host discovery: horovodrun runs a script and puts the names it prints into ssh
and shell command lines unquoted. So horovodrun runs a wrapper hvdtrain writes into the run folder,
which runs the user's script (no shell) and passes on only the lines that are valid ``host:slots``."""

from __future__ import annotations

import shlex
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import parse_host_list


def discovery_wrapper(hvdtrain_exe: str, script: Path) -> str:
    """The wrapper's text: ``hvdtrain discover-hosts SCRIPT``."""
    return (f"#!/bin/sh\n# hvdtrain: runs your host discovery script; passes on only valid host:slots lines\n"
            f"exec {shlex.join([hvdtrain_exe, 'discover-hosts', str(script)])}\n")


def valid_hosts(output: str) -> tuple[list[str], list[str]]:
    """The ``host:slots`` lines of a discovery script's output that name one valid host (as
    ``-H`` would parse it), and a reason for each line that does not."""
    hosts: list[str] = []
    rejected: list[str] = []
    for line in filter(None, (line.strip() for line in output.splitlines())):
        try:
            (host,) = parse_host_list(line)
        except (HvdtrainError, ValueError) as error:
            rejected.append(f"{line!r}: {error}")
            continue
        if ":" in host.name:  # horovodrun splits host:slots at the colon
            rejected.append(f"{line!r}: horovodrun takes no IPv6 address; use the host's name")
            continue
        hosts.append(str(host))
    return hosts, rejected
