"""What Horovod compiles with: the C++ standard, the compiler, the CUDA toolkit, NCCL, GPU archs.

Parsers are pure; the ``find_*`` functions only read the files they are pointed at, so tests
build fake trees instead of patching anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import HvdtrainError

GIB = 1 << 30
# A C++20 translation unit that includes torch's headers peaks near 2 GiB in GCC.
MEMORY_PER_COMPILE_JOB = 2 * GIB
DEFAULT_CUDA_ROOT = Path("/usr/local/cuda")
CUDA_FIX = "`module load cuda`, set CUDA_HOME=/path/to/cuda, or build without GPUs: hvdtrain build-horovod --cpu-only"


def parse_version_tuple(version: str) -> tuple[int, ...]:
    """``"2.14.1+cu130"`` -> ``(2, 14, 1)``; the local part and pre-release tags are ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


# The oldest torch hvdtrain supports (setup.cfg says the same): before 2.6, torch.load(weights_only=True),
# which loads every checkpoint, could be made to run code (CVE-2025-32434).
TORCH_FLOOR = (2, 6)


def cxx_standard_for_torch(torch_version: str) -> int:
    """The C++ standard torch's headers need: 20 from torch 2.14 on, 17 before."""
    version = parse_version_tuple(torch_version)
    floor = ".".join(map(str, TORCH_FLOOR))
    if version < TORCH_FLOOR:
        raise HvdtrainError(f"torch {torch_version} is older than {floor}, the oldest hvdtrain supports "
                            "(its checkpoint loading can be made to run code)", f"pip install 'torch>={floor}'")
    return 20 if version >= (2, 14) else 17


def parse_compiler_id(version_text: str) -> str:
    """``c++ --version`` -> ``gcc-12.2.0`` or ``clang-14.0.6``: names the compiler in the cache key."""
    first = (version_text.strip().splitlines() or [""])[0]
    kind = "clang" if "clang" in first else "gcc" if re.search(r"g\+\+|gcc|GCC|c\+\+", first) else "cc"
    versions = re.findall(r"\d+\.\d+(?:\.\d+)?", first)
    return f"{kind}-{versions[-1]}" if versions else kind


def parse_arch_flags(text: str) -> tuple[int, ...]:
    """torch's compiled GPU archs (``"sm_75 sm_80 sm_90a compute_120"``) -> ``(75, 80, 90, 120)``."""
    return tuple(sorted({int(number) for number in re.findall(r"(?:sm|compute)_(\d+)", text)}))


def parallel_jobs(cpus: int, memory_bytes: int) -> int:
    """Compile jobs the machine can carry: one per core, at most one per 2 GiB of memory."""
    return max(1, min(cpus, memory_bytes // MEMORY_PER_COMPILE_JOB))


def parse_define(header: str, name: str) -> int | None:
    match = re.search(rf"^\s*#\s*define\s+{name}\s+(\d+)", header, re.MULTILINE)
    return int(match.group(1)) if match else None


def parse_cuda_version(cuda_h: str) -> str | None:
    """``#define CUDA_VERSION 13000`` in ``cuda.h`` -> ``"13.0"``."""
    code = parse_define(cuda_h, "CUDA_VERSION")
    return f"{code // 1000}.{code % 1000 // 10}" if code else None


def parse_nccl_version(nccl_h: str) -> str | None:
    """``NCCL_MAJOR``/``NCCL_MINOR``/``NCCL_PATCH`` in ``nccl.h`` -> ``"2.30.7"``."""
    parts = [parse_define(nccl_h, f"NCCL_{name}") for name in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(str(part) for part in parts) if all(part is not None for part in parts) else None


def is_cuda_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda_runtime.h").is_file()


def nvcc_root(nvcc: Path, depth: int = 4) -> Path | None:
    """The toolkit root behind an ``nvcc``: follows symlinks, and wrapper scripts that exec the real one."""
    real = nvcc.resolve()
    if is_cuda_toolkit(real.parent.parent):
        return real.parent.parent
    if depth == 0 or not real.is_file():
        return None
    head = real.read_bytes()[:4096]
    if not head.startswith(b"#!"):
        return None
    for target in re.findall(rb"(/[^\s\"';]+/bin/nvcc)\b", head):
        root = nvcc_root(Path(target.decode()), depth - 1)
        if root is not None:
            return root
    return None


def find_cuda_home(env: Mapping[str, str], nvcc_on_path: str | None,
                   default: Path = DEFAULT_CUDA_ROOT) -> Path | None:
    """The CUDA toolkit root: ``CUDA_HOME``, ``CUDA_PATH``, ``nvcc`` on PATH (through wrappers), then
    ``/usr/local/cuda``. A variable the user set that is no toolkit is an error, not skipped."""
    for name in ("HOROVOD_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"):
        if env.get(name):
            root = Path(env[name])
            if not is_cuda_toolkit(root):
                raise HvdtrainError(f"{name}={root} is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h)",
                                    f"point {name} at the toolkit root, or {CUDA_FIX}")
            return root
    behind_nvcc = nvcc_root(Path(nvcc_on_path)) if nvcc_on_path else None
    if behind_nvcc is not None:
        return behind_nvcc
    return default if is_cuda_toolkit(default) else None


def read_cuda_version(root: Path) -> str | None:
    header = root / "include" / "cuda.h"
    return parse_cuda_version(header.read_text(errors="replace")) if header.is_file() else None


@dataclass(frozen=True)
class Nccl:
    """An NCCL install: its header folder, its shared or static library, and its version."""

    include: Path
    library: Path
    version: str
    source: str  # "HOROVOD_NCCL_HOME" or "the nvidia-nccl wheel"

    @property
    def needs_link(self) -> bool:
        """The wheel ships only ``libnccl.so.2``; CMake looks for ``libnccl.so``."""
        return self.library.name not in ("libnccl.so", "libnccl_static.a")


def _nccl_in(root: Path, source: str) -> Nccl | None:
    header = root / "include" / "nccl.h"
    libraries = [root / "lib" / name for name in ("libnccl.so", "libnccl_static.a", "libnccl.so.2")]
    library = next((path for path in libraries if path.exists()), None)
    if not header.is_file() or library is None:
        return None
    version = parse_nccl_version(header.read_text(errors="replace")) or "unknown"
    return Nccl(header.parent, library, version, source)


def find_nccl(env: Mapping[str, str], site_dirs: Iterable[Path]) -> Nccl | None:
    """``HOROVOD_NCCL_HOME``, else the ``nvidia/nccl`` tree that CUDA builds of torch pull in."""
    if env.get("HOROVOD_NCCL_HOME"):
        home = Path(env["HOROVOD_NCCL_HOME"])
        found = _nccl_in(home, "HOROVOD_NCCL_HOME")
        if found is None:
            raise HvdtrainError(f"HOROVOD_NCCL_HOME={home} has no include/nccl.h and lib/libnccl.so*",
                                "point it at the NCCL root, or unset it to use the nvidia-nccl wheel beside torch")
        return found
    for site in site_dirs:
        found = _nccl_in(site / "nvidia" / "nccl", "the nvidia-nccl wheel")
        if found is not None:
            return found
    return None
