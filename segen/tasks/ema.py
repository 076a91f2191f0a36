"""An exponential moving average of a task's generator: what the GAN and pix2pix tasks sample from.

Averaged weights give smoother, usually better samples than the last step's (Yazici et al.
2019; BigGAN, StyleGAN). `GeneratorEMA` is a mixin for a LightningModule that has
`self.generator`: it keeps a frozen copy that trails it (saved in the state_dict) and says
which of the two produces outputs (`sampler`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from segen.errors import ConfigError


@torch.no_grad()
def update_ema(average: nn.Module, live: nn.Module, decay: float, updates: torch.Tensor) -> None:
    """One step of an exponential moving average of `live`'s weights into `average`.

    Warm-up as in TensorFlow's ExponentialMovingAverage(num_updates=...): early on, the
    average follows fast instead of dragging the random initial weights along. `updates` is a
    counter buffer of the task (saved in checkpoints, so a resumed run continues the warm-up).
    """
    updates += 1
    n = float(updates)
    decay = min(decay, (1 + n) / (10 + n))
    for ema, weight in zip(average.parameters(), live.parameters(), strict=True):
        ema.lerp_(weight, 1 - decay)
    for ema, buffer in zip(average.buffers(), live.buffers(), strict=True):
        if ema.is_floating_point():  # BatchNorm running statistics
            ema.lerp_(buffer, 1 - decay)
        else:  # counters
            ema.copy_(buffer)


def check_ema_decay(decay: float | None) -> None:
    if decay is not None and not 0 < decay < 1:
        raise ConfigError(f"model.ema_decay must be in (0, 1) or null, got {decay}")


class GeneratorEMA:
    """Mixin: `init_ema(decay)` after `self.generator` is set, `step_ema()` after each G step."""

    generator: nn.Module
    ema_decay: float | None = None

    def init_ema(self, decay: float | None) -> None:
        check_ema_decay(decay)
        self.ema_decay = decay
        if decay is not None:
            # A frozen copy whose weights trail the generator's; saved in the state_dict.
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def step_ema(self) -> None:
        if self.ema_decay is not None:
            update_ema(self.generator_ema, self.generator, self.ema_decay, self.ema_updates)

    @property
    def sampler(self) -> nn.Module:
        """The generator used for outputs: the EMA copy when there is one."""
        return self.generator_ema if self.ema_decay is not None else self.generator
