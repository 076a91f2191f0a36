"""`segen train`: build data, task, callbacks, loggers and Trainer from the config, then fit."""

from __future__ import annotations

import os

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities.model_helpers import is_overridden

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
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        # Download/verify now, so missing data fails in one line before the Trainer starts;
        # Lightning calls it again later, which is then a cheap no-op.
        datamodule.prepare_data()
    print_config_tree(cfg, save_to=out / "config_tree.log")

    task = build(cfg.model, "model")
    callbacks = [build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(ConfigInCheckpoint(cfg, picked))
    if cfg.get("perf") is not None:  # channels_last / compile / matmul precision: segen/perf.py
        callbacks.append(build(cfg.perf, "perf"))
    loggers = [build(c, "logger") for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams({"choices": picked, "seed": cfg.seed})

    trainer.fit(task, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    # Tasks without a test step (GANs: no test metric yet) skip `test: true`.
    if cfg.get("test") and not trainer.interrupted and is_overridden("test_step", task):
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=True)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})

    console.print(f"[bold]Run directory:[/] {out}")
    if best:
        console.print(f"[bold]Best checkpoint:[/] {best}")
    return metrics
