"""A user's install, for real: a fresh venv with the user's own torch, hvdtrain from its wheel (not
editable), `hvdtrain build-horovod`, then doctor, the conformance check on 2 ranks and 2-rank training.

Two builds: torch 2.13 CPU (C++17) and the CUDA build of torch 2.14.1 with NCCL (C++20), with no
CUDA_HOME set by hand. Wheels are cached under HVDTRAIN_CACHE (default ~/.cache/hvdtrain), so a
second run on the same machine installs Horovod without compiling.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_install import PATCHES

pytestmark = pytest.mark.mpi
CUDA_VARIABLES = ("CUDA_HOME", "CUDA_PATH", "HOROVOD_CUDA_HOME", "HOROVOD_NCCL_HOME", "HOROVOD_GPU_OPERATIONS",
                  "VIRTUAL_ENV", "PYTHONPATH")


def run(argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def torch_fingerprint(venv: Path) -> str:
    """torch's version and the hash of its installed-files record: any reinstall changes it."""
    (record,) = (venv / "lib").glob("python3*/site-packages/torch-*.dist-info/RECORD")
    return f"{record.parent.name} {hashlib.sha256(record.read_bytes()).hexdigest()}"


IMPORT_ALL = """
import importlib, pkgutil, hvdtrain
names = [info.name for info in pkgutil.walk_packages(hvdtrain.__path__, "hvdtrain.")
         if info.name != "hvdtrain.__main__"]
for name in names:
    importlib.import_module(name)
print(hvdtrain.__file__, ",".join(names))
"""
# Every folder of the checkout that is a package must arrive in the wheel, and import.
SUBPACKAGES = sorted(f"hvdtrain.{init.parent.name}" for init in (REPO / "hvdtrain").glob("*/__init__.py"))


def check_installed_package(venv: Path, env: dict[str, str], cwd: Path) -> None:
    """The wheel, not the checkout: every module imports from site-packages, templates and patches came along."""
    located, imported = run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], env, timeout=300, cwd=cwd).split()
    names = imported.split(",")
    assert "/site-packages/hvdtrain/" in located and len(names) >= 60, (located, names)
    assert set(SUBPACKAGES) <= set(names) and len(SUBPACKAGES) == 9, SUBPACKAGES
    script = run([str(venv / "bin" / "hvdtrain"), "slurm", "render", "--nodes", "2", "--", "hvdtrain", "train"],
                 env, timeout=60, cwd=cwd)
    assert script.startswith("#!/bin/bash") and "hostfile from-slurm" in script
    site = Path(located).parent
    assert sorted(path.name for path in (site / "install" / "patches").glob("*.patch")) == PATCHES


@pytest.fixture(scope="session")
def hvdtrain_wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # setuptools packs whatever its build/lib holds, modules since removed from the tree included
    shutil.rmtree(REPO / "build", ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
         str(REPO)], dict(os.environ), timeout=300)
    (wheel,) = dist.glob("hvdtrain-*.whl")
    return wheel


@pytest.mark.parametrize(("torch", "nccl"), [("2.13.0", False), ("2.14.1", True)],
                         ids=["torch2.13-cpu", "torch2.14.1-cuda"])
def test_fresh_venv_wheel_build_and_train(tmp_path, hvdtrain_wheel, torch, nccl):
    venv = tmp_path / "venv"
    env = {name: value for name, value in os.environ.items() if name not in CUDA_VARIABLES}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    try:
        run([sys.executable, "-m", "venv", str(venv)], env, timeout=120)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run([*pip, f"torch=={torch}"], env, timeout=900)
        before = torch_fingerprint(venv)
        run([*pip, str(hvdtrain_wheel)], env, timeout=600)
        assert torch_fingerprint(venv) == before, "installing hvdtrain replaced the user's torch"

        hvdtrain = str(venv / "bin" / "hvdtrain")
        if not nccl:
            check_installed_package(venv, env, tmp_path)
        built = run([hvdtrain, "build-horovod"], env, timeout=1800, cwd=tmp_path)
        assert "Installed horovod-0.28.1" in built, built
        assert ("NCCL 2.30.7 with CUDA 13.0" if nccl else "CPU only") in built.splitlines()[0]
        assert "Horovod is already installed" in run([hvdtrain, "build-horovod"], env, timeout=300, cwd=tmp_path)

        done = subprocess.run([hvdtrain, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=120,
                              cwd=tmp_path, check=False)
        report = json.loads(done.stdout)
        assert report["problems"] == [] and done.returncode == 0, done.stdout + done.stderr
        assert report["torch"].startswith(torch) and report["built_against_torch"] == report["torch"]
        assert report["torch_ops"] and report["mpi_built"] and report["gloo_built"]
        assert report["nccl_built"] is nccl and report["gpu_operations"] == ("NCCL" if nccl else "")
        if nccl:
            assert report["nccl_version"] == "2.30.7" and report["built_against_cuda"] == "13.0"
            assert report["libcuda"] or "no GPU driver loads on this node" in report["warnings"][0]

        as_root = ["--allow-run-as-root"] if os.getuid() == 0 else []
        for wait, allreduce in (("sleep", "shm"), ("spin", "mpi")):  # our patches, and upstream's behaviour
            conformance = tmp_path / f"conformance-{wait}"  # on the same binary
            run(["mpirun", *as_root, "-np", "2", "--bind-to", "none", "-x", f"HVDTRAIN_HOROVOD_WAIT={wait}",
                 "-x", f"HVDTRAIN_HOROVOD_ALLREDUCE={allreduce}", str(venv / "bin" / "python"),
                 str(REPO / "tests" / "conformance_worker.py"), str(conformance)], env, timeout=300)
            for rank in (0, 1):
                result = json.loads((conformance / f"rank-{rank}.json").read_text())
                assert result["size"] == 2 and bool(result["nccl_built"]) is nccl
                assert all(outcome == "ok" for outcome in result["checks"].values()), (wait, result["checks"])

        out = tmp_path / "train"
        run([hvdtrain, "run", "-np", "2", "--", hvdtrain, "train", "--model", "mlp", "--dataset", "digits",
             "--epochs", "2", "--batch-size", "32", "--out", str(out)], env, timeout=600, cwd=tmp_path)
        summary = json.loads((out / "summary.json").read_text())
        assert len(summary["rank_checksums"]) == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}
        assert summary["final_val_acc"] > 0.5, summary
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a CUDA torch venv is 5.5 GB
