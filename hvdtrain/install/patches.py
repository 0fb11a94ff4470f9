"""Our changes to Horovod's sdist, kept as unified diffs in ``patches/`` and applied with ``patch -p1``,
the way spack and conda-forge keep theirs. Each file starts with what it changes and why."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from hvdtrain.errors import HvdtrainError

PATCH_DIR = Path(__file__).resolve().parent / "patches"


def patch_files() -> list[Path]:
    """Every patch, in the order it is applied (by name)."""
    return sorted(PATCH_DIR.glob("*.patch"))


def patches_digest(paths: Sequence[Path]) -> str:
    """A short sha256 over the patches' names and texts: part of the build's cache key."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def apply_patches(source: Path, paths: Sequence[Path], patch: str = "patch") -> None:
    """Apply each patch to an unpacked sdist; one that does not apply cleanly stops the build."""
    for path in paths:
        done = subprocess.run([patch, "-p1", "--forward", "--batch", "-i", str(path)], cwd=source,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stdout + done.stderr).strip().splitlines()[-1:]
            raise HvdtrainError(f"patch {path.name} does not apply to {source.name}: {' '.join(last)}",
                                "build the Horovod version hvdtrain's patches are written for")
