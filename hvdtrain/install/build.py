"""The edge of the install: probe this environment, then fetch, patch, build, cache and install Horovod.

The decisions live in ``plan.py``; this module runs the commands. Wheels are cached under
``$HVDTRAIN_CACHE`` (default ``~/.cache/hvdtrain``) by ``BuildTarget.cache_key``, so a second
environment with the same torch, MPI, compiler, CUDA and NCCL installs in seconds; what may be
trusted there is ``cache.py``'s to say.
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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from hvdtrain.atomic import write_atomic
from hvdtrain.errors import HvdtrainError
from hvdtrain.install.cache import check_sha256, check_trusted, private_folder, verified_sha256
from hvdtrain.install.patches import apply_patches
from hvdtrain.install.plan import HOROVOD_SDIST_SHA256, HOROVOD_VERSION, TOOL_HINTS, BuildPlan, Probes
from hvdtrain.install.toolchain import find_cuda_home, find_nccl, parse_arch_flags, read_cuda_version
from hvdtrain.launch.detect import detect_mpi

RECORD = "horovod-build.json"
CACHE_VARIABLE = "HVDTRAIN_CACHE"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$HVDTRAIN_CACHE`` or ``$XDG_CACHE_HOME/hvdtrain`` or ``~/.cache/hvdtrain``."""
    if env.get(CACHE_VARIABLE):
        return Path(env[CACHE_VARIABLE])
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


def cached_wheel(cache_root: Path, slot: Path, trusted: Collection[int]) -> Path | None:
    """The wheel built for this slot, when its record names it and it still has the recorded
    sha256; None when there is none (or a record from before hvdtrain recorded one); refused
    when the cache or the wheel cannot be trusted."""
    for folder in (cache_root, slot.parent, slot):
        if not os.path.lexists(folder):
            return None
        check_trusted(folder, os.lstat(folder), trusted)
    record = slot / RECORD
    if not os.path.lexists(record):
        return None
    verified_sha256(record, trusted)  # the record's owner and mode, before believing it
    built = json.loads(record.read_text())
    if not {"wheel", "wheel_sha256"} <= built.keys():
        return None
    wheel = slot / Path(built["wheel"]).name
    if not os.path.lexists(wheel):
        return None
    check_sha256(wheel, built["wheel_sha256"], trusted, "recorded when it was built",
                 f"delete {slot}, or run with --rebuild")
    return wheel


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


def fetch_sdist(cache_root: Path, log: Path, env: Mapping[str, str], trusted: Collection[int]) -> Path:
    """Horovod's source release, downloaded once into the cache, with the pinned sha256."""
    folder = private_folder(cache_root / "sdist", trusted)
    sdist = folder / f"horovod-{HOROVOD_VERSION}.tar.gz"
    if not os.path.lexists(sdist):
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(folder),
                f"horovod=={HOROVOD_VERSION}"]
        _run_logged("downloading the Horovod sdist", argv, log, env)
    check_sha256(sdist, HOROVOD_SDIST_SHA256, trusted, "pinned for Horovod's release",
                 f"delete {sdist}, and check which index pip downloads from (pip config list)")
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


def link_nccl(plan: BuildPlan, trusted: Collection[int]) -> None:
    """The nvidia-nccl wheel ships only ``libnccl.so.2``: give CMake a ``libnccl.so`` of this target's own."""
    if plan.nccl is None or not plan.nccl.needs_link:
        return
    lib = private_folder(Path(plan.env["HOROVOD_NCCL_LIB"]), trusted)
    for name in ("libnccl.so", plan.nccl.library.name):
        (lib / name).unlink(missing_ok=True)
        (lib / name).symlink_to(plan.nccl.library)


def build_env(plan: BuildPlan, base: Mapping[str, str]) -> dict[str, str]:
    env = {name: value for name, value in base.items() if name not in plan.unset}
    return {**env, **plan.env}


def build_wheel(plan: BuildPlan, cache_root: Path, env: Mapping[str, str], patches: Sequence[Path],
                trusted: Collection[int]) -> Path:
    """Fetch, apply ``patches`` and compile; the wheel and its record (with the wheel's name and
    sha256) land in the cache slot. Returns the wheel."""
    slot = private_folder(wheel_slot(cache_root, plan), trusted)
    log = slot / "build.log"
    write_atomic(log, "")
    sdist = fetch_sdist(cache_root, log, env, trusted)
    with tempfile.TemporaryDirectory(prefix="hvdtrain-horovod-") as tmp:
        source = extract_sdist(sdist, Path(tmp) / "source")
        apply_patches(source, patches)
        link_nccl(plan, trusted)
        out = Path(tmp) / "wheel"
        argv = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(out), str(source)]
        _run_logged("compiling Horovod", argv, log, build_env(plan, env))
        (built,) = out.glob("horovod-*.whl")
        wheel = slot / built.name
        write_atomic(wheel, built.read_bytes())
    record = {**asdict(plan.target), "cache_key": plan.target.cache_key,
              "nccl_library": str(plan.nccl.library) if plan.nccl else None,
              "wheel": wheel.name, "wheel_sha256": verified_sha256(wheel, trusted)}
    write_atomic(slot / RECORD, json.dumps(record, indent=2) + "\n")
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
