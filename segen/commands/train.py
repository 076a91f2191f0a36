"""`segen train`: build data, task, callbacks, loggers and Trainer from the config, then fit."""

from __future__ import annotations

import os

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segen.callbacks import (
    FlushLogsOnCheckpoint,
    ResumeReport,
    SaveOnInterrupt,
    StopOnNonFiniteLoss,
)
from segen.checkpoint import (
    AtomicCheckpointIO,
    ConfigInCheckpoint,
    RNGStateInCheckpoint,
    checkpoint_config,
    load_checkpoint,
)
from segen.commands.common import choices, quiet_lightning, run_dir
from segen.config import bind_data, build
from segen.console import NOISE, drop_lightning_lines, note, print_config_tree
from segen.errors import IncompatibleError
from segen.loggers import LogSteps
from segen.perf import apply_fast_path
from segen.restore import fit_data_to_task
from segen.sweep import RunResult
from segen.trackers import finish_run, log_config


def resume_point(cfg: DictConfig, picked: dict[str, str]) -> tuple[DictConfig, str | None, list[str]]:
    """`(config, checkpoint, changes)` of a run that continues from `ckpt=`: the checkpoint is
    checked to be safe to load and of this model, and the config becomes the one stored in it,
    with what this command changed on top (segen/resume.py `resumed_config`)."""
    if not cfg.get("ckpt"):
        return cfg, None, []
    from hydra.core.hydra_config import HydraConfig

    from segen.resume import resumed_config

    ckpt = load_checkpoint(cfg.ckpt)
    _, stored = checkpoint_config(ckpt)
    model_name = picked.get("model")
    if stored.get("model") != model_name:
        raise IncompatibleError(f"ckpt={cfg.ckpt} holds a {stored.get('model')} model, not {model_name}; pass model={stored.get('model')} or another checkpoint")
    resumed, _, changes = resumed_config(cfg, ckpt, list(HydraConfig.get().overrides.task), set(picked))
    return resumed, str(cfg.ckpt), changes


def run_test_pass(trainer: pl.Trainer, task, datamodule, best: str) -> dict | None:
    """Score `best` (else the final weights) on the split the test pass really reads, and say
    which: `{"split", "num_images", "checkpoint", "metrics"}`; None when the data has no test
    split here (a copy without CamVid's published test files), which is said in one line."""
    scored = datamodule.scored_split("test")
    if not datamodule.has_split("test"):
        note(f"No {scored} split in this copy of data={datamodule.info.name}: the test pass is skipped (`segen eval split=test` scores it once the files are there)")
        return None
    results = trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=True)
    return {
        "split": scored,
        "num_images": len(datamodule.split_images("test")),
        "checkpoint": "best.ckpt" if best else "the final weights (no best.ckpt was written)",
        "metrics": {k: float(v) for k, v in (results[0] if results else {}).items()},
    }


def main(cfg: DictConfig) -> RunResult:
    out = run_dir()
    quiet_lightning()
    drop_lightning_lines(*NOISE)
    picked = choices()
    cfg, resume_from, changes = resume_point(cfg, picked)
    note(apply_fast_path(cfg).line())  # precision/channels_last "auto" resolved: segen/perf.py
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # Built first: a tracker whose package is missing fails here, before data is touched.
    loggers = [build(c, "logger") for c in (cfg.get("logger") or {}).values() if c is not None]

    datamodule = build(cfg.data, "data")
    fit_data_to_task(cfg.model, datamodule, picked.get("model"), picked.get("data"))
    bind_data(cfg.model, datamodule.info)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        # Download/verify now, so missing data fails in one line before the Trainer starts;
        # Lightning calls it again later, which is then a cheap no-op.
        datamodule.prepare_data()
    print_config_tree(cfg, save_to=out / "config_tree.log", choices=picked)

    task = build(cfg.model, "model")
    callbacks = [build(c, "callbacks") for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # segen's own guarantees: config + RNG state in every checkpoint, save on Ctrl-C/SIGTERM,
    # stop on NaN before a checkpoint stores it.
    interrupt = SaveOnInterrupt()
    callbacks += [ConfigInCheckpoint(cfg, picked), RNGStateInCheckpoint(), FlushLogsOnCheckpoint(), LogSteps(), interrupt,
                  StopOnNonFiniteLoss(cfg.trainer.get("log_every_n_steps") or 50)]
    if resume_from:
        callbacks.append(ResumeReport(resume_from, changes))
    for callback in callbacks:
        # Nothing ranks checkpoints: a keep-the-best-one callback would only copy last.ckpt. One
        # that keeps every checkpoint (save_top_k=-1, e.g. snapshots every N epochs) is left alone.
        if isinstance(callback, pl.callbacks.ModelCheckpoint) and callback.monitor is None and callback.save_top_k == 1:
            callback.save_top_k = 0
    if cfg.get("perf") is not None:  # channels_last / compile / matmul precision: segen/perf.py
        callbacks.append(build(cfg.perf, "perf"))
    trainer: pl.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    log_config(trainer.loggers, cfg, picked)  # the resolved config as flat params: segen/trackers.py

    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from)
    except SystemExit as stop:  # Lightning exits this way on Ctrl-C and SIGTERM
        if interrupt.saved is None:
            raise
        raise SystemExit(143 if isinstance(stop, SIGTERMException) else 130) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test_pass = None
    # Tasks with no test metric (GANs: `segen eval` scores them) skip `test: true`.
    if cfg.get("test") and not trainer.interrupted and task.test_after_fit:
        test_pass = run_test_pass(trainer, task, datamodule, best)
        if test_pass is not None:
            metrics.update(test_pass.pop("metrics"))

    report = finish_run(trainer, out, metrics, best, test_pass)  # metrics.json, curves.png, tracker artifacts
    note(f"Run directory: {out}")
    if best:
        note(f"Best checkpoint: {best}")
    else:
        why = "model.monitor is null: nothing ranks checkpoints" if task.monitor is None else "no validation score was logged"
        note(f"Best checkpoint: none ({why}); the newest weights are {out / 'checkpoints' / 'last.ckpt'}")
    if test_pass is not None:
        scored, count, weights = test_pass["split"], test_pass["num_images"], test_pass["checkpoint"]
        if scored == "test":
            note(f"The test split ({count} images) was scored with {weights}")
        else:
            note(f"The test pass scored the {scored} split, not test ({count} images, data.test_split={scored}), with {weights}")
    # float() of it is the objective (best monitored value) that an Optuna sweep optimizes.
    return RunResult(metrics, objective=report["best_score"] if report["best_score"] is not None else metrics.get(str(task.monitor)))
