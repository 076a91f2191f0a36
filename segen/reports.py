"""What an evaluation returns, shared by the tasks that produce it and the modules that compute
it (segen/evaluation/) without either importing the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")  # the splits every dataset serves and `split=` names


@dataclass
class Table:
    """Rows of a table `segen eval` prints: `{row name: value}` under two column names, or
    `{row name: (value, value, ...)}` under one more column name per value (None: empty)."""

    title: str
    rows: dict[str, Any]
    columns: tuple[str, ...] = ("metric", "value")


@dataclass
class Evaluation:
    """What `evaluate` returns: the metrics (flat, `split/metric[/class]`), the tables to print,
    notes to print before them, and what `metrics.json` records beside the metrics."""

    metrics: dict[str, float]
    tables: list[Table]
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
