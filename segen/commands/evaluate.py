"""`segen eval ckpt=PATH`: rebuild the model and data from the checkpoint, report its metrics.

What is computed belongs to the task (`Task.evaluate`: test metrics for classifiers and
segmenters, FID/KID/IS for generators); this command checks the request, restores, prints
the tables and writes `metrics.json` into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict

from segen.checkpoint import load_checkpoint
from segen.commands.common import quiet_lightning, restore, run_dir, stored_task_class
from segen.console import console, is_rank_zero, metrics_table
from segen.io import write_json


def main(cfg: DictConfig) -> dict[str, float]:
    start = time.time()
    ckpt = load_checkpoint(cfg.ckpt)
    cls = stored_task_class(ckpt)
    with open_dict(cfg):  # split= for every kind; null: the kind's own (Task.eval_split)
        cfg.split = cfg.split or (cfg.get("eval") or {}).get("split") or cls.eval_split
    cls.check_eval_request(cfg)  # impossible requests fail before any work
    quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    run_cfg, task, datamodule = restore(cfg, ckpt)
    model, data = run_cfg.choices.get("model"), run_cfg.choices.get("data")
    result = task.evaluate(cfg, datamodule, model, data)

    for note in result.notes:
        console.print(note, soft_wrap=True)
    for table in result.tables:
        console.print(metrics_table(table.title, table.rows, names=table.columns))
    elapsed = round(time.time() - start, 3)
    report = {"ckpt": str(cfg.ckpt), "model": model, "data": data, **result.report, "metrics": result.metrics, "elapsed_s": elapsed}
    if is_rank_zero():  # under DDP every rank gets here; one writes
        path = write_json(run_dir() / "metrics.json", report)
        console.print(f"[bold]Wrote[/] {path} in {elapsed:.1f} s", soft_wrap=True)
        curves = training_curves(Path(cfg.ckpt))
        if curves is not None:
            console.print(f"[bold]Training curves:[/] {curves}", soft_wrap=True)
    return result.metrics


def training_curves(ckpt: Path) -> Path | None:
    """`curves.png` of the run a checkpoint came from (`<run>/checkpoints/x.ckpt`), so an
    evaluation shows how the model got there. Only pointed at: the training run's files are
    its own, and an evaluation never rewrites them."""
    path = ckpt.expanduser().resolve()
    curves = path.parent.parent / "curves.png"
    return curves if path.parent.name == "checkpoints" and curves.is_file() else None
