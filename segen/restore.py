"""Rebuild a trained task from its checkpoint: the one function that does it.

`segen eval`, `segen sample` and `segen export` restore the checkpoint they are given; the
judges of other models (a classifier's features for FID, a segmenter for the FCN-score) restore
theirs the same way. The task class comes from the stored model config's `_target_`, so nothing
here imports a task module: any layer may call it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from segen.checkpoint import checkpoint_config, load_checkpoint
from segen.config import build


def task_class(model_cfg: DictConfig):
    """The task class a model config builds (its `_target_`), without building it."""
    from hydra.utils import get_class

    return get_class(model_cfg._target_)


def fit_data_to_task(model_cfg: DictConfig, datamodule, model_name: str, data_name: str) -> None:
    """Check that the data can serve the task and set its batch target and image range, before
    any heavy work; an incompatible pair fails in one line (`Task.check_data`)."""
    cls = task_class(model_cfg)
    cls.check_data(datamodule.info, model_name, data_name)
    cls.fit_data(datamodule)


def restore_task(ckpt: dict | str | Path, run_cfg: DictConfig | None = None, stored: dict[str, str] | None = None):
    """`(run config with its group choices, task with the checkpoint's weights, datamodule fitted
    to it)` from a checkpoint (a path or the loaded dict); `run_cfg`/`stored` replace the
    checkpoint's own config and choices when a command edited them (`data.*` overrides)."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if run_cfg is None:
        run_cfg, stored = checkpoint_config(ckpt)
    stored = dict(stored or {})
    datamodule = build(run_cfg.data, "data")
    # What the datamodule saved with the checkpoint (a folder dataset's class names): the data
    # folder need not be there any more to name the classes.
    datamodule.load_state_dict(ckpt.get(type(datamodule).__qualname__) or {})
    fit_data_to_task(run_cfg.model, datamodule, stored.get("model"), stored.get("data"))
    task = build(run_cfg.model, "model")
    task.load_state_dict(ckpt["state_dict"])
    with open_dict(run_cfg):
        run_cfg.choices = stored
    return run_cfg, task, datamodule
