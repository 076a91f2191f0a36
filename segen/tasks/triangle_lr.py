"""airbench94's LR schedule: linear from `start` x lr up to lr at `pct_start` of the run, then
linear down to `end` x lr at its last step (`model.scheduler` of cnn_cifar10).

A multiplier on each parameter group's own lr, unlike OneCycleLR, which sets every group to one
`max_lr` (and so would undo decoupled_sgd's faster BatchNorm group). Steps per batch; the run
length comes from `build_optimizers` (`total_steps`).
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from segen.errors import ConfigError


def triangle(step: int, total_steps: int, start: float, peak: float, end: float) -> float:
    """The multiplier at `step` (0 .. total_steps); held at `end` past the run."""
    top = int(peak * total_steps)
    if step < top:
        return start + (1 - start) * step / top
    if step >= total_steps:
        return end
    return 1 + (end - 1) * (step - top) / (total_steps - top)


class TriangleLR(LambdaLR):
    """`pct_start` is OneCycleLR's name for where the peak is. `max_lr` must be null: unlike
    OneCycleLR's, the peak is each group's own lr (a value here would only mislead)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, start: float = 0.2, pct_start: float = 0.23,
                 end: float = 0.07, max_lr: None = None, last_epoch: int = -1):
        if max_lr is not None:
            raise ConfigError("model.scheduler: TriangleLR peaks at each parameter group's own lr; set model.scheduler.max_lr=null and the lr on the optimizer")
        if not (0 < pct_start < 1 and start >= 0 and end >= 0):
            raise ConfigError(f"model.scheduler: TriangleLR needs 0 < pct_start < 1 and start, end >= 0; got {pct_start}, {start}, {end}")
        self.total_steps = total_steps
        super().__init__(optimizer, lambda step: triangle(step, total_steps, start, pct_start, end), last_epoch)
