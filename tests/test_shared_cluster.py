"""What another user of the machine can do to your job: a second, ordinary user (made with useradd)
plants folders and links where your run would write, or a wheel in a build cache. Your files stay
as they were, and nothing planted is installed."""

import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import HVDTRAIN, cli, hvdtrain

from hvdtrain.install.build import cached_wheel
from hvdtrain.install.cache import private_folder, trusted_owners

ATTACKER = "hvdtrain-attacker"


@pytest.fixture(scope="module")
def attacker():
    """An ordinary second user, and a way to run commands as them (removed afterwards)."""
    made = False
    try:
        pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", ATTACKER], check=True)
        made = True
    entry = pwd.getpwnam(ATTACKER)

    def run_as(*argv, cwd="/"):
        return subprocess.run(["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                               *argv], cwd=cwd, capture_output=True, text=True, check=True)

    yield run_as
    if made:
        subprocess.run(["userdel", ATTACKER], check=False)


@pytest.fixture
def shared():
    """A folder anyone may write in, as a group-writable project folder is for its group (in /tmp:
    pytest's own folders are private)."""
    folder = Path(tempfile.mkdtemp(prefix="hvdtrain-shared-"))
    os.chmod(folder, 0o1777)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def victim_file(tmp_path):
    secret = tmp_path / "home" / "authorized_keys"
    secret.parent.mkdir()
    secret.write_text("ssh-ed25519 AAAA mine\n")
    return secret


def test_a_run_folder_planted_by_another_user_is_refused(attacker, shared, victim_file):
    run_dir = shared / "run"
    attacker("mkdir", str(run_dir))
    attacker("ln", "-s", str(victim_file), str(run_dir / "rank-0.log"))
    done = hvdtrain("run", "-np", "1", "--output-dir", str(run_dir), "--", sys.executable, "-c", "print('x' * 80)")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"run folder {run_dir} is not yours alone" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert victim_file.read_text() == "ssh-ed25519 AAAA mine\n"


def test_a_shared_folder_of_yours_is_refused_and_a_private_one_is_taken(shared, tmp_path):
    open_dir = shared / "open"
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o777)
    done = hvdtrain("run", "-np", "1", "--output-dir", str(open_dir), "--", "true")
    assert done.returncode == 2 and "is not yours alone" in done.stderr
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "rank-0.log").write_text("the earlier attempt's lines\n")
    done = hvdtrain("run", "-np", "1", "--output-dir", str(private), "--", sys.executable, "-c", "print('again')")
    assert done.returncode == 0, done.stderr
    assert (private / "rank-0.log").read_text() == "the earlier attempt's lines\nagain\n"  # appended, not truncated


def test_a_new_run_folder_is_private_and_unpredictable(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "HVDTRAIN_RUNS_DIR": str(runs)}
    for _ in range(2):
        done = subprocess.run([HVDTRAIN, "run", "-np", "1", "--", "true"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    folders = sorted(runs.iterdir())
    assert len(folders) == 2 and all(len(folder.name.split("-")) == 5 for folder in folders)  # run-DATE-TIME-PID-RANDOM
    assert all(os.stat(folder).st_mode & 0o777 == 0o700 for folder in folders)
    assert all(os.stat(log).st_mode & 0o777 == 0o600 for log in runs.glob("*/rank-0.log"))


def test_a_failure_report_prints_no_control_characters():
    from hvdtrain.job.failure import printable

    assert printable("rank 1 on \x1b]0;pwned\x07node\r") == "rank 1 on ?]0;pwned?node?"


def _cache_key(cache):
    done = cli("build-horovod", "--dry-run", "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    return re.search(r"cache key: (\S+)", done.stdout)[1]


def _plant_wheel(slot, data=b"PK not a real wheel"):
    """A wheel and a build record that names it with its true sha256, as a build leaves them."""
    wheel = slot / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(data)
    (slot / "horovod-build.json").write_text(json.dumps({"wheel": wheel.name,
                                                         "wheel_sha256": hashlib.sha256(data).hexdigest()}))
    return wheel


def test_a_wheel_another_user_put_in_the_cache_is_refused(attacker, shared):
    """The attacker makes the slot in a cache folder anyone may write, with a consistent record:
    refused by owner, with one line; trusted once --shared-cache names them."""
    cache = shared / "cache"
    key = _cache_key(cache)
    attacker("sh", "-c", 'umask 022 && mkdir -p "$0" && printf "PK planted" > "$0/$1" && printf "$2" > "$0/$3"',
             str(cache / "wheels" / key), "horovod-0.0.0-py3-none-any.whl",
             json.dumps({"wheel": "horovod-0.0.0-py3-none-any.whl",
                         "wheel_sha256": hashlib.sha256(b"PK planted").hexdigest()}), "horovod-build.json")
    done = cli("build-horovod", "--dry-run", "--cache-dir", str(cache))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{cache} belongs to {ATTACKER}, not to you" in done.stderr and "--shared-cache OWNER" in done.stderr
    slot = cache / "wheels" / key
    assert cached_wheel(cache, slot, trusted_owners(ATTACKER)) == slot / "horovod-0.0.0-py3-none-any.whl"
    assert cli("build-horovod", "--dry-run", "--cache-dir", str(cache), "--shared-cache", ATTACKER).returncode == 0


def test_a_group_writable_cache_is_refused(tmp_path):
    cache = tmp_path / "cache"
    slot = cache / "wheels" / _cache_key(cache)
    slot.mkdir(parents=True)
    _plant_wheel(slot)
    assert cached_wheel(cache, slot, {os.getuid()}) == slot / "horovod-0.28.1-cp311-cp311-linux_x86_64.whl"
    os.chmod(cache / "wheels", 0o775)
    done = cli("build-horovod", "--dry-run", "--cache-dir", str(cache))
    assert done.returncode == 2 and f"{cache / 'wheels'} is writable by group or others" in done.stderr


def test_a_tampered_wheel_or_sdist_in_your_own_cache_is_refused(tmp_path):
    cache = tmp_path / "cache"
    slot = cache / "wheels" / _cache_key(cache)
    slot.mkdir(parents=True)
    wheel = _plant_wheel(slot)
    with wheel.open("ab") as file:
        file.write(b"\0")  # changed after the build recorded its hash
    done = cli("build-horovod", "--dry-run", "--cache-dir", str(cache))
    assert done.returncode == 2 and f"{wheel} has sha256" in done.stderr and "recorded when it was built" in done.stderr
    sdist = cache / "sdist" / "horovod-0.28.1.tar.gz"
    sdist.parent.mkdir()
    sdist.write_bytes(b"not Horovod's release")
    done = cli("build-horovod", "--rebuild", "--cache-dir", str(cache))  # refused before anything compiles
    assert done.returncode == 2 and f"{sdist} has sha256" in done.stderr and "pinned for Horovod's release" in \
        done.stderr, done.stderr
    assert not list(slot.glob("*.whl"))[1:] and "compiling" not in (slot / "build.log").read_text()


def test_cache_folders_hvdtrain_makes_are_private(tmp_path):
    cache = tmp_path / "new" / "cache"
    private_folder(cache / "wheels" / "slot", {os.getuid()})
    assert all(stat.S_IMODE(os.stat(folder).st_mode) == 0o700
               for folder in (tmp_path / "new", cache, cache / "wheels", cache / "wheels" / "slot"))
