"""`curves.png`: a run's logged losses and metrics at a glance, read back from its metrics.csv.

One panel per metric family, so that lines that belong together share axes: `train/loss` with
`val/loss`, `train/d_loss` with `train/g_loss`, `train/d_real` with `train/d_fake`, `val/acc`
alone. x is the optimizer step (`trainer.global_step`: two per batch for a GAN, as segen/loggers.py
writes metrics.csv); dotted vertical lines mark where each epoch ended; the title says how far the
run went (metrics.json's `progress`: steps, batches, epochs). Test metrics (one number at the
end) and per-class breakdowns (`test/acc/circle`) are left to metrics.json.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

CURVES_FILE = "curves.png"
STAGES = ("train", "val")


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} from a run's metrics.csv (one sparse row per log call);
    also `"epoch"` for the rows of training (all but the test pass's)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(float(row.get("step") or "nan"))
            except ValueError:
                continue
            values = {}
            for key, text in row.items():
                if key in ("step", None) or not text:
                    continue
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
            if any(k.split("/")[0] not in (*STAGES, "epoch") for k in values):  # the test row, after training
                values.pop("epoch", None)
            for key, value in values.items():
                if not math.isnan(value):
                    series[key].append((step, value))
    return dict(series)


def family(metric: str) -> str | None:
    """The panel a metric goes to, or None when it is not plotted.

    `train/loss` and `val/loss` -> "loss"; `train/d_real` and `train/d_fake` -> "d_*"
    (a `<net>_<what>` name groups by net when it is not a loss); `val/acc` -> "acc".
    """
    parts = metric.split("/")
    if len(parts) != 2 or parts[0] not in STAGES:
        return None
    name = parts[1]
    if name.endswith("loss"):
        return "loss"
    if "_" in name and len(name.split("_", 1)[0]) == 1:  # d_real, g_norm: one letter names the net
        return f"{name.split('_', 1)[0]}_*"
    return name


def panels(series: dict[str, list[tuple[int, float]]]) -> dict[str, list[str]]:
    """{panel title: [metrics]} in a stable order: losses first, then the rest by name."""
    groups: dict[str, list[str]] = defaultdict(list)
    for metric in sorted(series):
        key = family(metric)
        if key is not None and series[metric]:
            groups[key].append(metric)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "loss", kv[0])))


def epoch_ends(series: dict[str, list[tuple[int, float]]]) -> list[int]:
    """Steps at which an epoch ended (the last step logged with each epoch number)."""
    last: dict[int, int] = {}
    for step, epoch in series.get("epoch", []):
        last[int(epoch)] = max(step, last.get(int(epoch), step))
    return [last[e] for e in sorted(last)]


def run_title(run_dir: Path, series: dict[str, list[tuple[int, float]]]) -> str:
    """`<run>: 300 steps (150 batches), 5.56 epochs of 27 batches` from metrics.json's `progress`;
    without one, what metrics.csv says: its last step and how many epochs ended."""
    report = run_dir / "metrics.json"
    done = json.loads(report.read_text()).get("progress") if report.is_file() else None
    if done:
        steps, batches, per_epoch = done["steps"], done["batches"], done["batches_per_epoch"]
        text = f"{run_dir.name}: {steps} step{'s' if steps != 1 else ''}"
        text += f" ({batches} batches)" if batches != steps else ""
        if done.get("epochs") is None:
            return text
        return text + f", {done['epochs']:.3g} epoch{'s' if done['epochs'] != 1 else ''} of {per_epoch} batches"
    steps = max((step for points in series.values() for step, _ in points), default=0)
    ends = len(epoch_ends(series))
    return f"{run_dir.name}: {steps} steps, {ends} epoch end{'s' if ends != 1 else ''}"


def write_curves(run_dir: str | Path) -> Path | None:
    """Write `<run_dir>/curves.png` from `<run_dir>/metrics.csv`; None when there is nothing to plot."""
    run_dir = Path(run_dir)
    source = run_dir / "metrics.csv"
    if not source.is_file():
        return None
    series = read_metrics(source)
    groups = panels(series)
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.4 * rows), squeeze=False)
    ends = epoch_ends(series)
    for ax, (title, metrics) in zip(axes.flat, groups.items(), strict=False):
        for metric in metrics:
            steps, values = zip(*series[metric], strict=True)
            # Few points (validation once per epoch, smoke runs) would be invisible as bare lines.
            ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=4, linewidth=1.5, label=metric)
        for step in ends[:-1] if len(ends) <= 50 else []:
            ax.axvline(step, color="0.8", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(run_title(run_dir, series), fontsize=10)
    fig.tight_layout()
    out = run_dir / CURVES_FILE
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
