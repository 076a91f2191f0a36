"""What the supervised tasks share: one `net`, one optimizer + schedule, one headline metric."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn

from segen.tasks.base import Evaluation, Task
from segen.tasks.optim import build_optimizers, check_resumed_schedule


class SupervisedTask(Task):
    """Base of the classification and segmentation tasks: one `net` trained on (image, target).

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
        config = build_optimizers(self.parameters(), self.optimizer, self.scheduler, self.trainer.estimated_stepping_batches, module=self)
        check_resumed_schedule(config, getattr(self, "_resumed_schedules", None))
        return config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Lightning calls this before `configure_optimizers` when a run resumes: keep the stored
        schedule's state, whose length the new schedule is checked against."""
        super().on_load_checkpoint(checkpoint)
        self._resumed_schedules = checkpoint.get("lr_schedulers")

    def evaluate(self, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
        from segen.evaluation.supervised import evaluate_supervised

        return evaluate_supervised(self, cfg, datamodule, f"{model} on {data}")

    def class_names(self) -> list[str]:
        """Names of the net's output classes, from the data this task is trained or tested on."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        names = self.output_class_names(dm.info) if dm is not None else ()
        return list(names) if len(names) == self.net.num_classes else [str(i) for i in range(self.net.num_classes)]

    @staticmethod
    def output_class_names(info) -> tuple[str, ...]:
        raise NotImplementedError
