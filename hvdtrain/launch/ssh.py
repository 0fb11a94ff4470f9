"""How hvdtrain and the launchers reach other hosts over ssh (pure: argv only)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import HvdtrainError

_OPTION = re.compile(r"^[A-Za-z]+=\S+$")
# Options whose value ssh hands to a shell: not from a command-line flag (use ~/.ssh/config).
_RUNS_COMMANDS = {"proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand", "match"}


@dataclass(frozen=True)
class SshSettings:
    """Port, identity file and extra ``-o KEY=VALUE`` options for every ssh hvdtrain starts."""

    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.port is not None and not 0 < self.port < 65536:
            raise HvdtrainError(f"--ssh-port {self.port} is not a TCP port", "use a port between 1 and 65535")
        # Open MPI splits plm_rsh_args at whitespace, with no quoting: refuse what it would mangle.
        if self.identity is not None and re.search(r"\s", str(self.identity)):
            raise HvdtrainError(f"--ssh-identity {str(self.identity)!r} contains whitespace",
                                "move the key to a path without spaces")
        for option in self.options:
            if not _OPTION.match(option):
                raise HvdtrainError(f"--ssh-option {option!r} is not KEY=VALUE",
                                    "e.g. --ssh-option StrictHostKeyChecking=accept-new")
            if option.split("=", 1)[0].lower() in _RUNS_COMMANDS:
                raise HvdtrainError(f"--ssh-option {option!r} would run a command",
                                    "set it in ~/.ssh/config for the host instead")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_SSH

    def args(self) -> list[str]:
        """The ssh flags, without the host or command."""
        argv = ["-p", str(self.port)] if self.port is not None else []
        if self.identity is not None:
            argv += ["-i", str(self.identity)]
        for option in self.options:
            argv += ["-o", option]
        return argv


DEFAULT_SSH = SshSettings()  # ssh's own defaults and ~/.ssh/config


def build_ssh_argv(host: str, remote: Sequence[str], settings: SshSettings, timeout_s: int) -> list[str]:
    """ssh that never prompts (BatchMode), gives up connecting after ``timeout_s``, and runs
    ``remote`` shell-quoted, since the remote side hands it to a shell."""
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout_s}", *settings.args(), host, "--",
            shlex.join(remote)]
