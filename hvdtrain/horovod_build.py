"""Build Horovod 0.28.1 against the installed torch, cache the wheel, and install it.

Horovod's last release compiles with ``-std=c++14`` while torch >= 2.1 headers need C++17
(upstream issue 3996, fixed after the release). We move the sdist to C++17 (``SOURCE_PATCHES``),
build a wheel with PyTorch + MPI + Gloo support, and keep it in a cache keyed by everything the
binary depends on, so a second install takes seconds.

Run by ``make install`` as ``python -m hvdtrain.horovod_build`` with the virtualenv's Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from hvdtrain.detect import detect_mpi

HOROVOD_VERSION = "0.28.1"
# (file in the sdist, text before, text after). Horovod's own code and its bundled gloo must
# agree on C++17: a C++11 gloo defines Store::kDefaultTimeout out of line, which collides at link
# time with the inline definition C++17 code emits (the same clash as pytorch issue 90448).
SOURCE_PATCHES = (
    ("CMakeLists.txt", "set(CMAKE_CXX_STANDARD 14)", "set(CMAKE_CXX_STANDARD 17)"),
    ("horovod/torch/CMakeLists.txt", "set(CMAKE_CXX_STANDARD 14)", "set(CMAKE_CXX_STANDARD 17)"),
    ("third_party/gloo/CMakeLists.txt", "-std=c++11", "-std=c++17"),
)


@dataclass(frozen=True)
class BuildTarget:
    """What a Horovod binary is built against; two equal targets can share one wheel."""

    horovod: str
    torch: str
    mpi: str
    python_abi: str
    gpu_operations: str  # "NCCL" when gradients are all-reduced between GPUs, else ""

    @property
    def cache_key(self) -> str:
        mpi = self.mpi.replace(" ", "-")
        gpu = self.gpu_operations.lower() or "cpu"
        return f"horovod-{self.horovod}_torch-{self.torch}_{mpi}_{self.python_abi}_{gpu}"


def default_cache_dir(env: dict[str, str]) -> Path:
    """``$HVDTRAIN_CACHE`` or ``$XDG_CACHE_HOME/hvdtrain`` or ``~/.cache/hvdtrain``."""
    if env.get("HVDTRAIN_CACHE"):
        return Path(env["HVDTRAIN_CACHE"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hvdtrain"


def installed_build_info_path(prefix: str) -> Path:
    """Where the build record of the installed Horovod lives inside an environment."""
    return Path(prefix) / "share" / "hvdtrain" / "horovod-build.json"


def choose_gpu_operations(cuda_available: bool, nccl_home: str | None) -> str:
    """NCCL all-reduce between GPUs when torch sees CUDA and NCCL headers are found."""
    return "NCCL" if cuda_available and nccl_home else ""


def build_env(target: BuildTarget, nccl_home: str | None, base: dict[str, str]) -> dict[str, str]:
    """The environment for ``pip wheel`` that selects Horovod's frameworks and collectives."""
    env = dict(base)
    env.update(
        HOROVOD_WITH_PYTORCH="1",
        HOROVOD_WITH_MPI="1",
        HOROVOD_WITH_GLOO="1",
        HOROVOD_WITHOUT_TENSORFLOW="1",
        HOROVOD_WITHOUT_MXNET="1",
    )
    if target.gpu_operations:
        env["HOROVOD_GPU_OPERATIONS"] = target.gpu_operations
        if nccl_home:
            env["HOROVOD_NCCL_HOME"] = nccl_home
    return env


def patch_source(text: str, name: str, before: str, after: str) -> str:
    """Apply one ``SOURCE_PATCHES`` entry; applying it twice changes nothing."""
    if after in text and before not in text:
        return text
    if before not in text:
        raise RuntimeError(f"{name}: expected {before!r}; is this the Horovod {HOROVOD_VERSION} sdist?")
    return text.replace(before, after)


def detect_target() -> tuple[BuildTarget, str | None]:
    """Probe torch, MPI, Python and NCCL; return the target and the NCCL home, if any."""
    import torch

    mpi = detect_mpi()
    if mpi is None:
        raise RuntimeError("mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev)")
    nccl_home = os.environ.get("HOROVOD_NCCL_HOME") or _pip_nccl_home()
    gpu = choose_gpu_operations(torch.cuda.is_available(), nccl_home)
    abi = f"cp{sys.version_info.major}{sys.version_info.minor}"
    target = BuildTarget(HOROVOD_VERSION, torch.__version__, mpi.label, abi, gpu)
    return target, nccl_home


def _pip_nccl_home() -> str | None:
    """The include/lib tree of the ``nvidia-nccl-*`` wheel that CUDA builds of torch pull in."""
    candidate = Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "nccl"
    return str(candidate) if (candidate / "include" / "nccl.h").exists() else None


def _run(argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{argv[0]} {argv[1]} failed (exit {done.returncode}); log: {log}\n{tail}")


def build_wheel(target: BuildTarget, nccl_home: str | None, dest: Path) -> Path:
    """Download the sdist, patch it to C++17, build the wheel into ``dest``; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    log = dest / "build.log"
    log.write_text("")
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="hvdtrain-horovod-") as tmp:
        work = Path(tmp)
        _run([*pip, "download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
              f"horovod=={target.horovod}"], log)
        sdist = next(work.glob("horovod-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = work / f"horovod-{target.horovod}"
        for name, before, after in SOURCE_PATCHES:
            path = source / name
            path.write_text(patch_source(path.read_text(), name, before, after))
        env = build_env(target, nccl_home, dict(os.environ))
        _run([*pip, "wheel", "--no-build-isolation", "--no-deps", "-w", str(dest), str(source)], log, env=env)
    return next(dest.glob("horovod-*.whl"))


def build_record(target: BuildTarget) -> dict[str, object]:
    """What the wheel was built against, as saved next to it and inside the environment."""
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False)
    first = compiler.stdout.splitlines()[0] if compiler.stdout else "unknown"
    return {**asdict(target), "compiler": first, "cache_key": target.cache_key}


def ensure_horovod(cache_root: Path) -> str:
    """Install a Horovod built for this environment, building it only when no cached wheel fits."""
    target, nccl_home = detect_target()
    installed = installed_build_info_path(sys.prefix)
    if installed.exists() and json.loads(installed.read_text()).get("cache_key") == target.cache_key:
        return f"Horovod {target.horovod} already installed for {target.cache_key}"
    slot = cache_root / "wheels" / target.cache_key
    wheels = sorted(slot.glob("horovod-*.whl"))
    action = "reused cached wheel"
    if not wheels:
        wheels = [build_wheel(target, nccl_home, slot)]
        (slot / "build-info.json").write_text(json.dumps(build_record(target), indent=2) + "\n")
        action = "built wheel"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                    str(wheels[0])], check=True)
    installed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(slot / "build-info.json", installed)
    return f"Horovod {target.horovod}: {action} {wheels[0]}"


if __name__ == "__main__":
    try:
        print(ensure_horovod(default_cache_dir(dict(os.environ))))
    except RuntimeError as exc:
        sys.exit(f"hvdtrain: Horovod build failed: {exc}")
