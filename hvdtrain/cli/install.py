"""``hvdtrain build-horovod``: a Horovod for the torch, MPI, compiler and CUDA of this environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hvdtrain.install.build import (
    build_wheel,
    cached_wheel,
    default_cache_dir,
    detect_probes,
    install_wheel,
    is_installed,
    wheel_slot,
)
from hvdtrain.install.cache import trusted_owners
from hvdtrain.install.patches import patch_files, patches_digest
from hvdtrain.install.plan import plan_build, render_plan


@click.command("build-horovod")
@click.option("--cpu-only", is_flag=True,
              help="Build without NCCL even for a CUDA build of torch (for nodes without GPUs).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where built wheels are kept [default: $HVDTRAIN_CACHE or ~/.cache/hvdtrain].")
@click.option("--shared-cache", default=None, metavar="OWNER",
              help="Trust a cache folder that OWNER (a user name or uid) keeps for the team, besides your own.")
@click.option("--rebuild", is_flag=True, help="Compile again even when a cached wheel fits.")
@click.option("--dry-run", is_flag=True, help="Print what would be built, with which variables, and exit.")
def build_horovod(cpu_only: bool, cache_dir: Path | None, shared_cache: str | None, rebuild: bool,
                  dry_run: bool) -> None:
    """Build Horovod 0.28.1 for this Python's torch (or reuse a cached build) and install it here.

    Detects the torch version (C++17 below 2.14, C++20 from 2.14), a CUDA build of torch and its
    toolkit (HOROVOD_CUDA_HOME, CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda), NCCL
    (HOROVOD_NCCL_HOME or the nvidia-nccl wheel beside torch), torch's GPU architectures and the
    compile jobs the cores and memory allow. Works on a login node without a GPU. A cache folder,
    wheel or sdist owned by someone else (unless --shared-cache names them), writable by group or
    others, or not matching its sha256, is refused.

    \b
    Example:
      pip install hvdtrain && hvdtrain build-horovod
      CUDA_HOME=/opt/cuda-13.0 hvdtrain build-horovod --dry-run
    """
    env = dict(os.environ)
    cache_root = cache_dir or default_cache_dir(env)
    trusted = trusted_owners(shared_cache)
    patches = patch_files()
    plan = plan_build(detect_probes(env), cpu_only, patches_digest(patches),
                      nccl_link_dir=cache_root / "nccl-links")
    slot = wheel_slot(cache_root, plan)
    wheel = None if rebuild else cached_wheel(cache_root, slot, trusted)
    installed = not rebuild and is_installed(plan, sys.prefix)
    action = "already installed" if installed else f"install the cached wheel {wheel}" if wheel \
        else f"compile into {slot} (log: {slot / 'build.log'})"
    text = render_plan(plan, action)
    click.echo(text if dry_run else text.splitlines()[0])
    if dry_run:
        return
    if installed:
        click.echo(f"Horovod is already installed for this target ({plan.target.cache_key})")
        return
    compiled = wheel is None
    if wheel is None:
        click.echo(f"Compiling Horovod with {plan.env['MAKEFLAGS']} (a few minutes); log: {slot / 'build.log'}")
        wheel = build_wheel(plan, cache_root, env, patches, trusted)
    install_wheel(wheel, sys.prefix)
    click.echo(f"Installed {wheel.name} ({'compiled' if compiled else 'from the cache'}) into {sys.prefix}")
