"""Pieces the commands share: run-dir lookup, compatibility checks, and `restore` (a checkpoint's
task with this command's `data.*`/`model.*` edits, through segen/restore.py)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from segen.checkpoint import checkpoint_config, load_checkpoint
from segen.errors import ConfigError, IncompatibleError
from segen.restore import fit_data_to_task, restore_task, task_class  # noqa: F401 (fit_data_to_task: scripts)


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def stored_task_class(ckpt: dict):
    """The task class of a loaded checkpoint."""
    run_cfg, _ = checkpoint_config(ckpt)
    return task_class(run_cfg.model)


def restore(cfg: DictConfig, ckpt: dict | None = None):
    """Rebuild (run config, task with weights, datamodule) from `cfg.ckpt` (or the already
    loaded `ckpt`).

    The checkpoint's config is the base; `data.*`/`model.*` overrides given to this command
    apply on top (unknown keys are an error); `data=X` swaps the dataset; `model=X` must agree.
    """
    ckpt = ckpt if ckpt is not None else load_checkpoint(cfg.ckpt)
    run_cfg, stored = checkpoint_config(ckpt)
    chosen = choices()
    if chosen.get("model") not in (None, "None", stored.get("model")):
        raise IncompatibleError(
            f"model={chosen['model']} contradicts the checkpoint, which holds a {stored.get('model')} model; drop model= or pass a {chosen['model']} checkpoint"
        )
    for group in ("model", "data"):
        override = cfg.get(group) or {}
        if group == "data" and chosen.get("data") not in (None, "None", stored.get("data")):
            run_cfg.data = override
            stored["data"] = chosen["data"]
            continue
        OmegaConf.set_struct(run_cfg[group], True)
        try:
            run_cfg[group] = OmegaConf.merge(run_cfg[group], override)
        except Exception as err:  # omegaconf raises ConfigKeyError/ValidationError subclasses
            raise ConfigError(f"cannot apply {group} overrides to this checkpoint's config: {str(err).splitlines()[0]}") from None
        OmegaConf.set_struct(run_cfg[group], False)
    return restore_task(ckpt, run_cfg, stored)


_LIGHTNING_NOISE = (
    "litlogger",  # an advert printed on every run
    "already configured with model summary",  # we configure RichModelSummary on purpose
    "LeafSpec",  # a Lightning-internal deprecation
    "does not have many workers",  # in-memory tensor loaders need none
    "to estimate number of stepping batches",  # the LR schedules ask Lightning for the run's length
)


def quiet_lightning() -> None:
    """Drop Lightning messages that say nothing about this run, so the ones that do stand out."""
    from segen.console import NOISE, drop_lightning_lines

    drop_lightning_lines(*_LIGHTNING_NOISE, *NOISE)
