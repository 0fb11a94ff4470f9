"""``hvdtrain plot``: metrics.jsonl -> one PNG (loss per step; loss, accuracy and throughput per epoch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hvdtrain.errors import HvdtrainError

FIGSIZE_IN = (16.0, 4.0)
DPI = 100  # 1600 x 400 pixels


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise HvdtrainError(f"cannot read {path} ({exc.strerror})",
                            "give the --out directory of an hvdtrain train run") from None
    try:
        rows = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise HvdtrainError(f"{path}:{exc.lineno}: not a JSON line", "was the file edited by hand?") from None
    if not rows:
        raise HvdtrainError(f"{path} has no epochs yet", "plot after the first epoch ends")
    return rows


def _series(rows: list[dict[str, Any]], key: str, x: str = "epoch") -> tuple[list[int], list[float]]:
    points = [(row[x], row[key]) for row in rows if row.get(key) is not None and x in row]
    return [place for place, _ in points], [value for _, value in points]


def plot_metrics(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (steps, loss, accuracy, speed) = plt.subplots(1, 4, figsize=FIGSIZE_IN, dpi=DPI)
    steps.plot(*_series(rows, "loss", x="step"), color="tab:blue")
    steps.set(title="training loss", xlabel="optimizer step")
    loss.plot(*_series(rows, "train_loss"), marker="o", label="train")
    loss.plot(*_series(rows, "val_loss"), marker="o", label="validation")
    loss.set(title="loss", xlabel="epoch")
    loss.legend()
    accuracy.plot(*_series(rows, "val_acc"), marker="o", color="tab:green")
    accuracy.set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    speed.bar(*_series([row for row in rows if "train_loss" in row], "samples_per_sec"), color="tab:gray")
    speed.set(title=f"samples/s ({rows[-1].get('world_size', '?')} ranks)", xlabel="epoch")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
