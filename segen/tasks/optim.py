"""Finish the `_partial_` optimizer and scheduler configs with the module's own parameters."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from segen.errors import ConfigError

MIN_SCHEDULE_STEPS = 20


def build_optimizers(params, optimizer: Callable, scheduler: Callable | None, total_steps: int, module=None) -> dict:
    """Return Lightning's `configure_optimizers` dict.

    An optimizer factory that takes `module` instead of `params` (segen/tasks/decoupled_sgd.py,
    which puts BatchNorm parameters in a group of their own) is given the whole module. Schedulers that need the run length get it here, by keyword: `total_steps` (OneCycleLR),
    `T_max` (CosineAnnealingLR) or `total_iters` (PolynomialLR, LinearLR). They step per batch.
    """
    takes_module = module is not None and "module" in inspect.signature(getattr(optimizer, "func", optimizer)).parameters
    opt = optimizer(module=module) if takes_module else optimizer(params=params)
    if scheduler is None:
        return {"optimizer": opt}
    if not math.isfinite(total_steps):
        raise ConfigError("the LR schedule needs a finite run; set trainer.max_epochs or trainer.max_steps, or model.scheduler=null")
    # A schedule shorter than a few steps degenerates (OneCycleLR divides by its warm-up
    # length); smoke runs with a handful of steps just see the first part of a longer one.
    total_steps = max(int(total_steps), MIN_SCHEDULE_STEPS)
    accepted = inspect.signature(getattr(scheduler, "func", scheduler)).parameters
    given = getattr(scheduler, "keywords", {})
    length = {k: total_steps for k in ("total_steps", "T_max", "total_iters") if k in accepted and k not in given}
    sched: torch.optim.lr_scheduler.LRScheduler = scheduler(optimizer=opt, **length)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_resumed_schedule(config: dict, stored: list[dict] | None) -> None:
    """A resumed run whose schedule would be longer than the stored one fails in one line:
    Lightning restores the stored schedule (its length included), which would stop with
    PyTorch's "Tried to step N times" once the old length is passed."""
    sched = (config.get("lr_scheduler") or {}).get("scheduler")
    if sched is None or not stored:
        return
    for key in ("total_steps", "T_max", "total_iters"):
        new, old = getattr(sched, key, None), stored[0].get(key)
        if new is not None and old is not None and new > old:
            raise ConfigError(
                f"this run's LR schedule ({type(sched).__name__}) was built for {old} steps and cannot stretch to {new} on resume; "
                "resume with the run's own trainer.max_epochs / trainer.max_steps, or start a new run"
            )
