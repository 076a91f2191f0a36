"""`segen train`: build data, task, callbacks, loggers and Trainer from the config, then fit."""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig

from segen.checkpoint import ConfigInCheckpoint
from segen.commands.common import choices, prepare_data_for_task, quiet_lightning, run_dir
from segen.config import bind_data_info, build
from segen.console import console, print_config_tree


def main(cfg: DictConfig) -> dict[str, float]:
    out = run_dir()
    quiet_lightning()
    picked = choices()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build(cfg.data, "data")
    prepare_data_for_task(cfg.model, datamodule, picked.get("model"), picked.get("data"))
    bind_data_info(cfg.model, datamodule.info)
    print_config_tree(cfg, save_to=out / "config_tree.log")

    task = build(cfg.model, "model")
    callbacks = [build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(ConfigInCheckpoint(cfg, picked))
    loggers = [build(c, "logger") for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams({"choices": picked, "seed": cfg.seed})

    trainer.fit(task, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test") and not trainer.interrupted:
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})

    console.print(f"[bold]Run directory:[/] {out}")
    if best:
        console.print(f"[bold]Best checkpoint:[/] {best}")
    return metrics
