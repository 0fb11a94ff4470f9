"""What another user of the machine can do to your job: a second, ordinary user (made with useradd)
plants folders and links where your run would write. Your files stay as they were."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import HVDTRAIN, hvdtrain

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
