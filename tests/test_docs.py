"""The documentation: the site builds with no broken link or page left out, its runnable blocks
give the output they show, every option and API function is documented from the code, and the
README's install commands match the Makefile and setup.cfg."""

import configparser
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
from conftest import REPO, cli

import hvdtrain
from hvdtrain.cli.main import cli as hvdtrain_cli
from hvdtrain.install.toolchain import TORCH_FLOOR
from hvdtrain.reference import environment_page

MKDOCS = str(Path(sys.executable).parent / "mkdocs")
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}  # a plugin's banner, not our warnings
README = (REPO / "README.md").read_text()


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **QUIET}, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    commands = (tmp_path / "reference" / "cli" / "index.html").read_text()
    assert all(f"hvdtrain {name}" in commands for name, command in hvdtrain_cli.commands.items() if not command.hidden)
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    assert all(name in api for name in ("setup", "shard", "wrap_optimizer", "epochs", "batches", "rewind"))
    assert "HVDTRAIN_PREEMPT_SIGNAL" in (tmp_path / "reference" / "environment" / "index.html").read_text()


def _runnable_blocks():
    """(page, commands with the output each block shows) for each block marked <!-- runnable -->."""
    for page in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"<!-- runnable -->\n```\w*\n(.*?)```", page.read_text(), re.S):
            text = block.replace("\\\n", " ")
            steps: list[tuple[str, list[str]]] = []
            for line in text.splitlines():
                if line.startswith("$ "):
                    steps.append((line[2:], []))
                else:
                    steps[-1][1].append(" ".join(line.split()))
            yield page.name, steps


def test_every_runnable_block_prints_what_it_shows():
    blocks = list(_runnable_blocks())
    assert len(blocks) >= 2
    for page, steps in blocks:
        for command, expected in steps:
            argv = shlex.split(command)
            assert argv[0] == "hvdtrain", f"{page}: only hvdtrain commands run here: {command}"
            done = cli(*argv[1:])
            shown = [" ".join(line.split()) for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            for line in expected:  # "..." stands for anything
                pattern = re.compile(".*".join(map(re.escape, line.split("..."))))
                assert any(pattern.fullmatch(out) for out in shown), f"{page}: {command}\n{line}\n{shown}"


def _commands(group: click.Group, path: str = "hvdtrain"):
    for name, command in group.commands.items():
        if command.hidden:
            continue
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")


def test_every_command_and_option_is_documented():
    undocumented = []
    for path, command in _commands(hvdtrain_cli):
        if not (command.help or "").strip():
            undocumented.append(path)
        undocumented += [f"{path} {param.opts[0]}" for param in command.params
                         if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()]
    assert undocumented == []


def test_every_api_function_is_documented():
    missing = [name for name in hvdtrain.API if not inspect.getdoc(getattr(hvdtrain, name))]
    missing += [f"Run.{name}" for name, member in vars(hvdtrain.Run).items()
                if not name.startswith("_") and callable(member) and not inspect.getdoc(member)]
    assert missing == []


def test_every_variable_the_code_names_is_in_the_environment_reference():
    named = set()
    for source in (REPO / "hvdtrain").rglob("*.py"):
        named |= set(re.findall(r'"(HVDTRAIN_[A-Z_]*[A-Z])"', source.read_text()))
    page = environment_page()
    assert named and [name for name in sorted(named) if f"`{name}`" not in page] == []


def test_the_readme_is_short_and_its_install_commands_match_the_build():
    assert len(README.splitlines()) <= 200
    phony = re.search(r"^\.PHONY: (.*)$", (REPO / "Makefile").read_text(), re.M)[1].split()
    targets = set(re.findall(r"(?:^|`)make ([a-z-]+)", README, re.M))
    assert {"demo", "test", "docs", "test-gpu"} <= targets and targets <= set(phony), targets - set(phony)
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extras = set(setup["options.extras_require"])
    for listed in re.findall(r"hvdtrain\[([a-z,]+)\]", README):
        assert set(listed.split(",")) <= extras, listed
    floor = ".".join(map(str, TORCH_FLOOR))
    assert f"torch: CPU or CUDA, {floor} or later" in README and f"torch {floor} or newer" in README
    assert f"torch>={floor}" in setup["options"]["install_requires"]
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert link.startswith("http") or (REPO / link).exists(), link
