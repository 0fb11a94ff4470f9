"""The edge of the install: probe this environment, then fetch, patch, build, cache and install Horovod.

The decisions live in ``plan.py``; this module runs the commands. Wheels are cached under
``$HVDTRAIN_CACHE`` (default ``~/.cache/hvdtrain``) by ``BuildTarget.cache_key``, so a second
environment with the same torch, MPI, compiler, CUDA and NCCL installs in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.install.patches import apply_patches
from hvdtrain.install.plan import HOROVOD_VERSION, TOOL_HINTS, BuildPlan, Probes
from hvdtrain.install.toolchain import find_cuda_home, find_nccl, parse_arch_flags, read_cuda_version
from hvdtrain.launch.detect import detect_mpi

RECORD = "horovod-build.json"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$HVDTRAIN_CACHE`` or ``$XDG_CACHE_HOME/hvdtrain`` or ``~/.cache/hvdtrain``."""
    if env.get("HVDTRAIN_CACHE"):
        return Path(env["HVDTRAIN_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hvdtrain"


def installed_build_info_path(prefix: str) -> Path:
    """Where the build record of the installed Horovod lives inside an environment."""
    return Path(prefix) / "share" / "hvdtrain" / RECORD


def read_installed_record(prefix: str) -> dict[str, object]:
    path = installed_build_info_path(prefix)
    return json.loads(path.read_text()) if path.exists() else {}  # type: ignore[no-any-return]


def detect_torch() -> tuple[str | None, str | None, tuple[int, ...], list[Path]]:
    """torch's version, the CUDA it was built with, its GPU archs and its site folder (all empty without torch).
    Read from the build, not the node: a login node without a GPU gets the same answers as a GPU node."""
    try:
        import torch
    except ImportError:
        return None, None, (), []
    cuda: str | None = torch.version.cuda
    archs = parse_arch_flags(torch._C._cuda_getArchFlags() or "") if cuda else ()
    return torch.__version__, cuda, archs, [Path(torch.__file__).parent.parent]


def detect_probes(env: Mapping[str, str]) -> Probes:
    """Ask this Python and the PATH everything ``plan_build`` needs."""
    torch, torch_cuda, archs, beside_torch = detect_torch()
    mpi = detect_mpi()
    compiler = env.get("CXX") or "c++"
    tools = {tool: shutil.which(tool) for tool in TOOL_HINTS} | {"c++": shutil.which(compiler)}
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False) \
        if tools["c++"] else None
    cuda_home = find_cuda_home(env, shutil.which("nvcc")) if torch_cuda else None
    return Probes(
        torch=torch, torch_cuda=torch_cuda, torch_archs=archs,
        python_abi=f"cp{sys.version_info.major}{sys.version_info.minor}", mpi=mpi.label if mpi else None,
        tools=tools, python_headers=(Path(sysconfig.get_paths()["include"]) / "Python.h").is_file(),
        compiler_version=version.stdout if version else "", cuda_home=cuda_home,
        cuda_version=read_cuda_version(cuda_home) if cuda_home else None,
        nccl=find_nccl(env, [*beside_torch, *map(Path, site.getsitepackages())]) if torch_cuda else None,
        cpus=len(os.sched_getaffinity(0)), memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        env=dict(env))


def wheel_slot(cache_root: Path, plan: BuildPlan) -> Path:
    return cache_root / "wheels" / plan.target.cache_key


def cached_wheel(slot: Path) -> Path | None:
    wheels = sorted(slot.glob("horovod-*.whl"))
    return wheels[0] if wheels and (slot / RECORD).exists() else None


def is_installed(plan: BuildPlan, prefix: str) -> bool:
    """The environment already holds a Horovod built for exactly this target."""
    try:
        version = metadata.version("horovod")
    except metadata.PackageNotFoundError:
        return False
    return version == HOROVOD_VERSION and read_installed_record(prefix).get("cache_key") == plan.target.cache_key


def _run_logged(what: str, argv: list[str], log: Path, env: Mapping[str, str]) -> None:
    """Run one build step with its output appended to ``log``; a failure names the first error line."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env), check=False)
    if done.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        first_error = next((line.strip() for line in lines if re.search(r"\berror\b", line, re.IGNORECASE)),
                           lines[-1] if lines else "no output")
        raise HvdtrainError(f"{what} failed: {first_error[:300]}", f"the whole log is {log}")


def fetch_sdist(cache_root: Path, log: Path, env: Mapping[str, str]) -> Path:
    """Horovod's source release, downloaded once into the cache."""
    folder = cache_root / "sdist"
    sdist = folder / f"horovod-{HOROVOD_VERSION}.tar.gz"
    if not sdist.exists():
        folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder),
                f"horovod=={HOROVOD_VERSION}"]
        _run_logged("downloading the Horovod sdist", argv, log, env)
    return sdist


def extract_sdist(sdist: Path, folder: Path) -> Path:
    """Unpack the sdist safely; Pythons before 3.11.4 (Debian 12 has 3.11.2) lack tarfile's filters."""
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(folder, filter="data")
        else:
            unsafe = [member.name for member in archive.getmembers() if member.name.startswith("/")
                      or ".." in Path(member.name).parts or not (member.isfile() or member.isdir())]
            if unsafe:
                raise HvdtrainError(f"{sdist.name} holds an unsafe entry {unsafe[0]!r}",
                                    f"delete {sdist} and run again to download it afresh")
            archive.extractall(folder)  # every member was checked above
    return folder / f"horovod-{HOROVOD_VERSION}"


def link_nccl(plan: BuildPlan) -> None:
    """The nvidia-nccl wheel ships only ``libnccl.so.2``: give CMake a build-private ``libnccl.so``."""
    if plan.nccl is None or not plan.nccl.needs_link:
        return
    lib = Path(plan.env["HOROVOD_NCCL_LIB"])
    lib.mkdir(parents=True, exist_ok=True)
    for name in ("libnccl.so", plan.nccl.library.name):
        (lib / name).unlink(missing_ok=True)
        (lib / name).symlink_to(plan.nccl.library)


def build_env(plan: BuildPlan, base: Mapping[str, str]) -> dict[str, str]:
    env = {name: value for name, value in base.items() if name not in plan.unset}
    return {**env, **plan.env}


def build_wheel(plan: BuildPlan, cache_root: Path, env: Mapping[str, str], patches: Sequence[Path]) -> Path:
    """Fetch, apply ``patches`` and compile; the wheel and its record land in the cache slot. Returns the wheel."""
    slot = wheel_slot(cache_root, plan)
    slot.mkdir(parents=True, exist_ok=True)
    log = slot / "build.log"
    log.write_text("")
    sdist = fetch_sdist(cache_root, log, env)
    with tempfile.TemporaryDirectory(prefix="hvdtrain-horovod-") as tmp:
        source = extract_sdist(sdist, Path(tmp))
        apply_patches(source, patches)
        link_nccl(plan)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(slot), str(source)]
        _run_logged("compiling Horovod", argv, log, build_env(plan, env))
    wheel = next(slot.glob("horovod-*.whl"))
    record = {**asdict(plan.target), "cache_key": plan.target.cache_key,
              "nccl_library": str(plan.nccl.library) if plan.nccl else None}
    (slot / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return wheel


def install_wheel(wheel: Path, prefix: str) -> None:
    """Install the wheel into this Python and copy its record where ``doctor`` reads it."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                           str(wheel)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HvdtrainError(f"pip could not install {wheel.name}: {last}", "check that this environment is writable")
    record = installed_build_info_path(prefix)
    record.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel.parent / RECORD, record)
