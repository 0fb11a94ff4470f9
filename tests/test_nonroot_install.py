"""`make install` as a cluster user has it: not root, no dpkg, apt-get or sudo on PATH, the build tools
there (as after `module load`), then a 2-rank run. Also: a missing tool gets one line naming the fix."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.mpi
USER = "hvdtrain-user"
HIDDEN = ("dpkg", "apt", "sudo")  # names starting with these are left off the user's PATH


def shim_path(folder: Path, path: str) -> Path:
    """A folder of links to every program on ``path`` except the Debian and sudo tools."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in reversed(path.split(":")):
        if not os.path.isdir(directory) or directory.startswith("/root"):
            continue
        for entry in os.scandir(directory):
            if not entry.name.startswith(HIDDEN) and os.access(entry.path, os.X_OK):
                link = folder / entry.name
                link.unlink(missing_ok=True)
                link.symlink_to(entry.path)
    return folder


def copy_checkout(destination: Path) -> None:
    """What a fresh clone of this working tree holds: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def as_user(argv: list[str], env: dict[str, str], timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    account = pwd.getpwnam(USER)
    return subprocess.run(argv, user=account.pw_uid, group=account.pw_gid, extra_groups=[], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_missing_tool_without_apt_names_the_fix(tmp_path):
    bare = shim_path(tmp_path / "bin", os.environ["PATH"])
    done = subprocess.run([str(REPO / "scripts" / "ensure-tools"), "mpicc=libopenmpi-dev", "no-such-tool=foo-dev"],
                          env={"PATH": str(bare)}, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "missing: no-such-tool." in done.stderr
    assert "module load" in done.stderr and "foo-dev" in done.stderr and "libopenmpi-dev" not in done.stderr


def test_make_install_as_a_user_without_root_or_debian_tools():
    assert os.getuid() == 0, "this test creates a user: run make test as root, as CI does (like the Slurm tests)"
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    account = pwd.getpwnam(USER)
    home = Path(account.pw_dir)
    work = home / f"try-{uuid.uuid4().hex[:8]}"
    try:
        checkout = work / "hvdtrain"
        copy_checkout(checkout)
        path = shim_path(work / "bin", os.environ["PATH"])
        # The CPU wheel `make install` built for this same torch, MPI and compiler: the user's build reuses it
        # (compiling is proven by test_build_matrix); the sdist comes along for a cache miss.
        cache = work / "cache"
        root_cache = Path(os.environ.get("HVDTRAIN_CACHE") or Path.home() / ".cache" / "hvdtrain")
        for slot in (root_cache / "wheels").glob("*torch-2.13.0*_cpu_*"):
            shutil.copytree(slot, cache / "wheels" / slot.name)
        subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(work)], check=True)
        # The machine's pip settings (where torch's wheel lies on disk) as a site's pip config would give them.
        pip = {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
        env = {**pip, "HOME": str(home), "PATH": str(path), "HVDTRAIN_CACHE": str(cache),
               "PYTHON": "/usr/bin/python3", "LANG": "C.UTF-8"}
        for tool in ("apt-get", "dpkg-query", "sudo"):
            assert as_user(["sh", "-c", f"command -v {tool}"], env, 30, work).returncode != 0

        done = as_user(["make", "install"], env, 1800, checkout)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "Installing what is missing" not in done.stdout
        assert "Installed horovod-0.28.1" in done.stdout or "already installed" in done.stdout, done.stdout[-2000:]

        hvdtrain = str(checkout / ".venv" / "bin" / "hvdtrain")
        out = work / "out"
        done = as_user([hvdtrain, "run", "-np", "2", "--", hvdtrain, "train", "--model", "mlp", "--dataset", "digits",
                        "--epochs", "2", "--batch-size", "32", "--out", str(out)], env, 600, checkout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}
        assert "--allow-run-as-root" not in as_user([hvdtrain, "run", "-np", "2", "--dry-run", "--", "true"], env, 60,
                                                    checkout).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
