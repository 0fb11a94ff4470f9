"""Every entry of tests/data/bad_inputs.yaml: one line naming the problem, exit 2, no traceback,
nothing written; and hypothesis fuzzing of the parsers behind them."""

import contextlib
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO, cli
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import parse_host_list
from hvdtrain.hosts.hostfile import parse_hostfile
from hvdtrain.slurm.nodelist import expand_nodelist, expand_tasks_per_node, hosts_from_nodelist

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "bad_inputs.yaml").read_text())


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


@pytest.mark.parametrize("case", CORPUS, ids=[" ".join(case["args"])[:60] for case in CORPUS])
def test_bad_input(case, tmp_path):
    for name, content in case.get("files", {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    before = _files(tmp_path)
    args = [arg.replace("{hostfiles}", str(REPO / "hostfiles")) for arg in case["args"]]
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SLURM_")}
    done = cli(*args, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert case["message"] in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _files(tmp_path) == before  # nothing written, nothing lost


def test_the_corpus_is_big_and_covers_every_command():
    assert len(CORPUS) >= 50
    assert {case["args"][0] for case in CORPUS} >= {"train", "run", "doctor", "hostfile", "plot"}


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
SHAPED = st.lists(st.sampled_from(["node", "01", "[", "]", "-", ",", ":", "(", "x", ")", "2", " ", "slots=",
                                   "max_slots=", "\n", "#", "{", "}", "\"", "a.b"]), max_size=30).map("".join)


def _only_our_error(parse, text):
    with contextlib.suppress(HvdtrainError):
        parse(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, SHAPED))
def test_fuzz_hostfile_parsers(text):
    _only_our_error(lambda t: parse_hostfile(t, "fuzz"), text)
    _only_our_error(parse_host_list, text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, SHAPED), st.one_of(TEXT, SHAPED))
def test_fuzz_slurm_parsers(nodelist, tasks):
    _only_our_error(expand_nodelist, nodelist)
    _only_our_error(expand_tasks_per_node, tasks)
    _only_our_error(lambda t: hosts_from_nodelist(t, tasks), nodelist)
