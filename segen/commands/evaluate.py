"""`segen eval ckpt=PATH`: rebuild the model and data from the checkpoint, report metrics."""

from __future__ import annotations

import json
import time

import pytorch_lightning as pl
from omegaconf import DictConfig

from segen.commands.common import quiet_lightning, restore, run_dir
from segen.config import build
from segen.console import console, metrics_table
from segen.errors import ConfigError


def main(cfg: DictConfig) -> dict[str, float]:
    from segen.commands import evaluate_gan

    if evaluate_gan.handles(cfg.ckpt):  # generators: FID/KID/IS (segen/commands/evaluate_gan.py)
        return evaluate_gan.main(cfg)
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split} is not a split; use split=test, split=val or split=train")
    start = time.time()
    quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    run_cfg, task, datamodule = restore(cfg)
    datamodule.eval_split = cfg.split
    trainer: pl.Trainer = build(
        cfg.trainer, "trainer", logger=False, enable_checkpointing=False,
        callbacks=[pl.callbacks.RichProgressBar()],
    )
    results = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    metrics = {k.replace("test/", f"{cfg.split}/", 1): float(v) for k, v in results.items()}

    # Keys are "<split>/<metric>" or, per class, "<split>/<metric>/<class name>".
    overall = {k: v for k, v in metrics.items() if k.count("/") == 1}
    # Segmentation data can score at the training size or the labels' own (data.eval_resolution).
    resolution = getattr(datamodule, "resolution_text", None)
    if resolution:
        console.print(f"[bold]Resolution:[/] {resolution}")
    console.print(metrics_table(f"{run_cfg.choices.get('model')} on {run_cfg.choices.get('data')}, {cfg.split} split", overall))
    per_class: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.count("/") == 2:
            _, metric, name = key.split("/", 2)
            per_class.setdefault(metric, {})[name] = value
    for metric, rows in per_class.items():
        console.print(metrics_table(f"per-class {metric}", rows, names=("class", metric)))

    report = {
        "ckpt": str(cfg.ckpt),
        "model": run_cfg.choices.get("model"),
        "data": run_cfg.choices.get("data"),
        "split": cfg.split,
        "num_images": len(datamodule.splits[cfg.split]),
        **({"resolution": resolution} if resolution else {}),
        "metrics": metrics,
        "elapsed_s": round(time.time() - start, 3),
    }
    if trainer.is_global_zero:  # under DDP every rank gets here; one writes
        path = run_dir() / "metrics.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"[bold]Wrote[/] {path}")
    return metrics
