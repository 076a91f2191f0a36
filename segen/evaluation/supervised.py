"""`segen eval` for classifiers and segmenters: Lightning's test loop on the chosen split.

The task's `test_step`s log `test/<metric>` and, per class, `test/<metric>/<class name>`; here
they are renamed after the split (`val/miou`, ...) and split into an overall table and one
table per per-class metric.
"""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig

from segen.config import build
from segen.reports import Evaluation, Table


def evaluate_supervised(task, cfg: DictConfig, datamodule, title: str) -> Evaluation:
    datamodule.eval_split = cfg.split
    # Named after the split really scored: Cityscapes' `split=test` scores val, and says so.
    scored = datamodule.scored_split(cfg.split)
    num_images = len(datamodule.split_images(cfg.split))  # a missing split fails here, in one line
    trainer: pl.Trainer = build(
        cfg.trainer, "trainer", logger=False, enable_checkpointing=False, enable_model_summary=False,
        callbacks=[pl.callbacks.RichProgressBar()],
    )
    results = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    metrics = {k.replace("test/", f"{scored}/", 1): float(v) for k, v in results.items()}

    overall = {k: v for k, v in metrics.items() if k.count("/") == 1}
    tables = [Table(f"{title}, {scored} split", overall)]
    per_class: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.count("/") == 2:
            _, metric, name = key.split("/", 2)
            per_class.setdefault(metric, {})[name] = value
    tables += [Table(f"per-class {metric}", rows, ("class", metric)) for metric, rows in per_class.items()]

    resolution = datamodule.info.scoring_resolution
    report = {"split": scored, "num_images": num_images}
    if resolution:
        report["resolution"] = resolution
    notes = [f"[bold]Resolution:[/] {resolution}"] if resolution else []
    if scored != cfg.split:
        notes.append(f"[bold]Split:[/] split={cfg.split} scores the {scored} split (data.test_split={scored}: this dataset publishes no {cfg.split} labels)")
    return Evaluation(metrics, tables, report, notes)
