"""Test hosts on this machine: network namespaces on a bridge, each with its own sshd.

Every namespace is a separate network host (own address, own port 22, own hostname through a
UTS namespace) sharing this machine's filesystem, so the same virtualenv runs everywhere, as on
a cluster with a shared home. Interfaces inside the namespaces carry the bridge's name: Horovod's
launcher needs one interface name common to every host, the launching one included.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.launch.ssh import SshSettings

BRIDGE = "hvdbr0"
SUBNET = "10.77.0"
KEYS = Path.home() / ".cache" / "hvdtrain" / "testhosts"  # stable keys: known_hosts stays valid


@dataclass(frozen=True)
class TestHosts:
    reachable: tuple[str, ...]  # addresses with an sshd
    silent: str  # an address with nothing listening
    ssh: SshSettings
    interface: str = BRIDGE


def _ip(*args: str, netns: str | None = None, check: bool = True) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=check, capture_output=True, text=True)


def _teardown(names: list[str]) -> None:
    for name in names:
        _ip("netns", "del", name, check=False)
    _ip("link", "del", BRIDGE, check=False)


def _keys() -> None:
    KEYS.mkdir(parents=True, exist_ok=True)
    KEYS.chmod(0o700)
    for name in ("host_key", "client_key"):
        if not (KEYS / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(KEYS / name)], check=True)
    (KEYS / "authorized_keys").write_text((KEYS / "client_key.pub").read_text())


def _sshd_config(state: Path) -> Path:
    config = state / "sshd_config"
    config.write_text(f"Port 22\nHostKey {KEYS / 'host_key'}\nAuthorizedKeysFile {KEYS / 'authorized_keys'}\n"
                      "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\n"
                      "UsePAM no\nAcceptEnv *\n")
    return config


@contextmanager
def test_hosts(state: Path, count: int = 2) -> Iterator[TestHosts]:
    """``count`` hosts with sshd plus one without, on 10.77.0.0/24; removed on exit."""
    names = [f"hvdt{i}" for i in range(2, count + 3)]
    _teardown(names)  # leftovers of an interrupted run
    _keys()
    Path("/run/sshd").mkdir(exist_ok=True)
    config = _sshd_config(state)
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    pids: list[Path] = []
    try:
        for index, name in enumerate(names, start=2):
            address = f"{SUBNET}.{index}"
            _ip("netns", "add", name)
            _ip("link", "add", f"{name}v", "type", "veth", "peer", "name", BRIDGE, "netns", name)
            _ip("link", "set", f"{name}v", "master", BRIDGE, "up")
            _ip("addr", "add", f"{address}/24", "dev", BRIDGE, netns=name)
            _ip("link", "set", BRIDGE, "up", netns=name)
            _ip("link", "set", "lo", "up", netns=name)
            if name == names[-1]:
                continue  # the silent host: reachable network, no sshd
            pid = state / f"sshd-{name}.pid"
            # The hostname is the address: Gloo resolves each host's own name to find its address.
            subprocess.run(["ip", "netns", "exec", name, "unshare", "--uts", "sh", "-c",
                            'hostname "$1" && exec /usr/sbin/sshd -f "$2" -o PidFile="$3" -E "$4"', "sh",
                            address, str(config), str(pid), str(state / f"sshd-{name}.log")], check=True)
            pids.append(pid)
        _wait_for(pids)
        yield TestHosts(reachable=tuple(f"{SUBNET}.{i}" for i in range(2, count + 2)),
                        silent=f"{SUBNET}.{count + 2}",
                        ssh=SshSettings(identity=KEYS / "client_key",
                                        options=("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null",
                                                 "LogLevel=ERROR")))
    finally:
        for pid in pids:
            if pid.exists():
                subprocess.run(["kill", pid.read_text().strip()], check=False)
        _teardown(names)


def _wait_for(pids: list[Path], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(pid.exists() for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not start within {timeout_s} s: {pids}")
        time.sleep(0.05)
