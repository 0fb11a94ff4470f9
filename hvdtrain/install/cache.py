"""The build cache is trusted by owner, mode and sha256, never by file name.

A wheel in the cache is installed into the user's environment and runs in every rank, so a folder
of it that someone else owns, or that group or others may write, is refused: anyone who can write
there could plant a ``horovod-0.0.0-*.whl``. A team shares one cache that one owner writes and the
others only read (``build-horovod --shared-cache OWNER``). Folders hvdtrain makes are 0700.
The Horovod sdist must have the sha256 pinned in ``plan.py`` after every download and before
every use; a built wheel must have the name and sha256 recorded when it was built.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import stat
from collections.abc import Collection
from pathlib import Path

from hvdtrain.errors import HvdtrainError


def trusted_owners(shared_cache: str | None) -> frozenset[int]:
    """This user, and the owner named by ``--shared-cache`` (a user name or uid)."""
    if shared_cache is None:
        return frozenset({os.getuid()})
    try:
        owner = pwd.getpwuid(int(shared_cache)) if shared_cache.isdigit() else pwd.getpwnam(shared_cache)
    except KeyError:
        raise HvdtrainError(f"--shared-cache {shared_cache!r} is not a user on this machine",
                            "name the user who builds the team's cache") from None
    return frozenset({os.getuid(), owner.pw_uid})


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_trusted(path: Path, info: os.stat_result, trusted: Collection[int]) -> None:
    """``path`` (described by ``info``, from lstat or fstat) may be trusted: not a link, owned by a
    trusted user, not writable by group or others."""
    if stat.S_ISLNK(info.st_mode):
        raise HvdtrainError(f"{path} in the build cache is a symbolic link", f"remove it: rm {path}")
    if info.st_uid not in trusted:
        raise HvdtrainError(f"{path} belongs to {_owner_name(info.st_uid)}, not to you: a wheel planted there "
                            "would run in every rank", "use a cache of your own (--cache-dir or HVDTRAIN_CACHE), "
                            "or --shared-cache OWNER when OWNER keeps it for your team")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise HvdtrainError(f"{path} is writable by group or others: anyone who can write there could plant "
                            "a wheel that runs in every rank", f"chmod go-w {path}, or use a cache of your own")


def private_folder(path: Path, trusted: Collection[int]) -> Path:
    """``path``, made with mode 0700 where it is missing (its missing parents too); an existing
    one is checked with ``check_trusted``."""
    missing = [folder for folder in (path, *path.parents) if not os.path.lexists(folder)]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked below like any existing one
            folder.mkdir(mode=0o700)
    check_trusted(path, os.lstat(path), trusted)
    return path


def verified_sha256(path: Path, trusted: Collection[int]) -> str:
    """The sha256 of the file ``path``, read without following a link, after its owner and mode passed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HvdtrainError(f"{path} in the build cache is not a regular file", f"remove it: rm -r {path}")
        check_trusted(path, info, trusted)
        digest = hashlib.sha256()
        while chunk := file.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()


def check_sha256(path: Path, expected: str, trusted: Collection[int], why: str, fix: str) -> None:
    actual = verified_sha256(path, trusted)
    if actual != expected:
        raise HvdtrainError(f"{path} has sha256 {actual[:16]}..., not the {expected[:16]}... {why}", fix)
