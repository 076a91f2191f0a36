"""Finish the `_partial_` optimizer and scheduler configs with the module's own parameters."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from segen.errors import ConfigError

MIN_SCHEDULE_STEPS = 20


def build_optimizers(params, optimizer: Callable, scheduler: Callable | None, total_steps: int) -> dict:
    """Return Lightning's `configure_optimizers` dict.

    Schedulers that need the run length get it here, by keyword: `total_steps` (OneCycleLR),
    `T_max` (CosineAnnealingLR) or `total_iters` (PolynomialLR, LinearLR). They step per batch.
    """
    opt = optimizer(params=params)
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
