"""Speed knobs that are not Trainer arguments, as one callback configured by `configs/perf/`.

`precision` and cudnn `benchmark` are `pl.Trainer` arguments (configs/trainer/); the rest live
here so the trainer config stays plain Trainer arguments that `segen eval` can reuse. Each knob
also works on a CPU, where it is merely slower or a no-op, so every combination can be tested
without a GPU.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric

MATMUL_PRECISIONS = ("highest", "high", "medium")


def logging_this_step(module: pl.LightningModule) -> bool:
    """Whether Lightning writes logs after this batch (every `log_every_n_steps` batches).

    Training steps call `self.log` only then: the logger sees the same values, and the other
    steps skip its bookkeeping (~0.1 ms per call, a few % of a small CPU step).
    """
    connector = getattr(module.trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def networks(task: nn.Module) -> list[nn.Module]:
    """The task's trainable networks (`net`, or `generator` and `discriminator`, ...): its direct
    children that hold parameters, metrics excluded."""
    return [m for m in task.children() if not isinstance(m, Metric) and any(True for _ in m.parameters())]


class PerformanceKnobs(pl.Callback):
    """Apply `channels_last`, `compile` and `float32_matmul_precision` before the first step."""

    def __init__(self, channels_last: bool = False, compile: bool = False, float32_matmul_precision: str | None = None):
        from segen.errors import ConfigError

        if float32_matmul_precision not in (None, *MATMUL_PRECISIONS):
            raise ConfigError(f"perf.float32_matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)} or null, got {float32_matmul_precision!r}")
        self.channels_last = channels_last
        self.compile = compile
        self.float32_matmul_precision = float32_matmul_precision
        self._applied = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._applied:  # fit then test on the same task: convert and compile once
            return
        self._applied = True
        if self.float32_matmul_precision:
            torch.set_float32_matmul_precision(self.float32_matmul_precision)
        if self.channels_last:
            # 4-D weights in NHWC; convolutions then produce NHWC activations, which tensor
            # cores read without transposes. Moving to the device later keeps the layout.
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            # Module.compile compiles in place: state_dict keys stay `net.*`, so checkpoints
            # load into an uncompiled model for `segen sample`/`eval`.
            for net in networks(pl_module):
                net.compile()


class RichProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's rich progress bar, reading the logged metrics every `metrics_every_n_steps`
    batches (and at epoch ends) instead of after every batch.

    Reading them turns each logged tensor into a Python float: on a GPU that is a host sync per
    step, which stalls the queue of kernels that otherwise runs ahead of Python.
    """

    def __init__(self, metrics_every_n_steps: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.metrics_every_n_steps = max(1, metrics_every_n_steps)
        self._skip_metrics = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._skip_metrics = (batch_idx + 1) % self.metrics_every_n_steps != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False

    def _update_metrics(self, trainer, pl_module) -> None:
        if not self._skip_metrics:
            super()._update_metrics(trainer, pl_module)


class FirstStepTime(pl.Callback):
    """Append the wall-clock time (`time.time()`) of the first training step to `path`;
    `scripts/bench.py` uses it to measure start-up of `segen train`."""

    def __init__(self, path: str):
        self.path = path
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._done:
            self._done = True
            with open(self.path, "a") as f:
                f.write(f"{time.time()}\n")
