"""``--config`` files: YAML of ``option: value`` lines in, option names out; and the effective
options written back as such a file (``--print-config``)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hvdtrain.errors import HvdtrainError


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise HvdtrainError(f"--config {path}: cannot read ({exc.strerror})", "check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise HvdtrainError(f"--config {where}: not valid YAML ({getattr(exc, 'problem', exc)})",
                            "write one 'option: value' per line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HvdtrainError(f"--config {path}: expected 'option: value' lines, got a {type(data).__name__}",
                            "write e.g. 'epochs: 10'")
    return data


def normalize_config(data: Mapping[str, Any], known: set[str], source: str) -> dict[str, Any]:
    """Config keys (``batch-size`` or ``batch_size``) -> option names; unknown keys get a hint."""
    result = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean '{close[0].replace('_', '-')}'?" if close else "see hvdtrain train --help"
            raise HvdtrainError(f"{source}: unknown option {key!r}", hint)
        result[name] = value
    return result


def render_effective(options: Mapping[str, Any], order: list[str]) -> str:
    """The options, in ``order``, as a YAML config that ``--config`` reads back."""
    plain = {key.replace("_", "-"): str(options[key]) if isinstance(options[key], Path) else options[key]
             for key in order if key in options}
    return str(yaml.safe_dump(plain, sort_keys=False))
