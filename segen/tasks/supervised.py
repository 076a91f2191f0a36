"""What the supervised tasks share: one `net`, one optimizer + schedule, one headline metric."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from segen.tasks.optim import build_optimizers


class SupervisedTask(pl.LightningModule):
    """Base of the classification and segmentation tasks.

    `optimizer`/`scheduler` are `_partial_` configs finished here with the net's parameters and
    the run length; `monitor`/`monitor_mode` name the metric that picks best.ckpt (read by
    configs/callbacks/default.yaml).
    """

    def __init__(self, net: nn.Module, optimizer: Callable, scheduler: Callable | None, monitor: str, monitor_mode: str):
        super().__init__()
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.monitor, self.monitor_mode = monitor, monitor_mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def configure_optimizers(self):
        return build_optimizers(self.parameters(), self.optimizer, self.scheduler, self.trainer.estimated_stepping_batches)
