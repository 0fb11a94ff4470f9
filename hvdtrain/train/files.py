"""Datasets from files: ``npz:PATH`` (arrays x, y, optional x_val, y_val) and ``csv:PATH``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from hvdtrain.errors import HvdtrainError


def _labels(values: np.ndarray, source: str) -> torch.Tensor:
    if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
        raise HvdtrainError(f"{source}: labels must be whole class numbers", "use 0, 1, 2, ... as labels")
    labels = torch.as_tensor(values.astype(np.int64))
    if len(labels) and labels.min() < 0:
        raise HvdtrainError(f"{source}: labels must not be negative", "use 0, 1, 2, ... as labels")
    return labels


def _pair(x: np.ndarray, y: np.ndarray, source: str) -> TensorDataset:
    if len(x) != len(y):
        raise HvdtrainError(f"{source}: {len(x)} inputs but {len(y)} labels", "give one label per input")
    return TensorDataset(torch.as_tensor(np.asarray(x, dtype=np.float32)), _labels(np.asarray(y), source))


def read_npz(path: Path) -> tuple[TensorDataset, TensorDataset | None]:
    """(train, val or None) from a ``.npz`` holding x, y and optionally x_val, y_val."""
    source = f"npz:{path}"
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise HvdtrainError(f"{source}: cannot read ({exc})", "write it with numpy.savez(PATH, x=..., y=...)") \
            from None
    missing = [name for name in ("x", "y") if name not in arrays.files]
    if missing:
        raise HvdtrainError(f"{source} has no array {missing[0]!r} (it has: {', '.join(arrays.files) or 'none'})",
                            "save inputs as x and labels as y, e.g. numpy.savez(PATH, x=x, y=y)")
    train = _pair(arrays["x"], arrays["y"], source)
    if ("x_val" in arrays.files) != ("y_val" in arrays.files):
        raise HvdtrainError(f"{source}: x_val and y_val come together", "save both or neither")
    val = _pair(arrays["x_val"], arrays["y_val"], source) if "x_val" in arrays.files else None
    return train, val


def read_csv(path: Path, label_column: str) -> TensorDataset:
    """All rows of a CSV with a header: numeric feature columns and one label column."""
    source = f"csv:{path}"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise HvdtrainError(f"{source}: cannot read ({exc.strerror})", "check the path") from None
    if len(rows) < 2:
        raise HvdtrainError(f"{source}: needs a header row and at least one data row", "add them")
    header, body = rows[0], rows[1:]
    if label_column not in header:
        raise HvdtrainError(f"{source} has no column {label_column!r} (columns: {', '.join(header)})",
                            "name the label column with --label-column")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise HvdtrainError(f"{source}:{number}: {len(row)} cells, but the header has {len(header)}",
                                "give every row one cell per column")
    index = header.index(label_column)
    try:
        table = np.array([[float(cell) for cell in row] for row in body], dtype=np.float64)
    except ValueError as exc:
        raise HvdtrainError(f"{source}: every cell must be a number ({exc})", "encode categories as numbers") \
            from None
    return _pair(np.delete(table, index, axis=1), table[:, index], source)
