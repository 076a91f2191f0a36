"""Pieces the commands share: run-dir lookup, compatibility checks, model rebuild from ckpt."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from segen.checkpoint import checkpoint_config, load_checkpoint
from segen.config import build
from segen.errors import ConfigError, IncompatibleError


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}


def task_class(model_cfg: DictConfig):
    """The task class a model config builds (its `_target_`), without building it."""
    from hydra.utils import get_class

    return get_class(model_cfg._target_)


def stored_task_class(ckpt: dict):
    """The task class of a loaded checkpoint."""
    run_cfg, _ = checkpoint_config(ckpt)
    return task_class(run_cfg.model)


def fit_data_to_task(model_cfg: DictConfig, datamodule, model_name: str, data_name: str) -> None:
    """Check that the data can serve the task and set its batch target and image range, before
    any heavy work; an incompatible pair fails in one line (`Task.check_data`)."""
    cls = task_class(model_cfg)
    cls.check_data(datamodule.info, model_name, data_name)
    cls.fit_data(datamodule)


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
    return rebuild(ckpt, run_cfg, stored)


def rebuild(ckpt: dict, run_cfg: DictConfig, stored: dict[str, str]):
    """(run config with `choices`, task with the checkpoint's weights, datamodule fitted to it)."""
    datamodule = build(run_cfg.data, "data")
    fit_data_to_task(run_cfg.model, datamodule, stored.get("model"), stored.get("data"))
    task = build(run_cfg.model, "model")
    task.load_state_dict(ckpt["state_dict"])
    with open_dict(run_cfg):
        run_cfg.choices = stored
    return run_cfg, task, datamodule


def load_task(path) -> tuple[DictConfig, object, object]:
    """`restore` for scripts and tests: the checkpoint alone, no overrides, no Hydra app."""
    ckpt = load_checkpoint(path)
    return rebuild(ckpt, *checkpoint_config(ckpt))


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
