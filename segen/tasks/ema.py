"""An exponential moving average of a task's generator: what the GAN and pix2pix tasks sample from.

Averaged weights give smoother, usually better samples than the last step's (Yazici et al.
2019; BigGAN, StyleGAN). `GeneratorEMA` is a mixin for a LightningModule that has
`self.generator`: it keeps `generator_ema`, a `torch.optim.swa_utils.AveragedModel` of it
(weights and buffers, fp32 like the live weights; saved in the state_dict) and says which of
the two produces outputs (`sampler`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from segen.errors import ConfigError


def warm_ema(decay: float):
    """`AveragedModel`'s `multi_avg_fn`: `get_ema_multi_avg_fn` at decay min(decay, (1 + n) / (10 + n))
    for the n-th update, TensorFlow's ExponentialMovingAverage(num_updates=...) warm-up: early on,
    the average follows fast instead of dragging the random initial weights along. Integer buffers
    (BatchNorm's counters) are copied, not averaged."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], live: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # one call per dtype: counters
            for a, b in zip(averaged, live, strict=True):
                a.copy_(b)
            return
        n = float(n_averaged)  # the copy counts as one average: the n-th update sees n
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, live, n_averaged)

    return update


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
            # A frozen copy whose weights trail the generator's, buffers too (BatchNorm statistics).
            self.generator_ema = AveragedModel(self.generator, multi_avg_fn=warm_ema(decay), use_buffers=True)
            self.generator_ema.requires_grad_(False).eval()
            self.generator_ema.n_averaged.fill_(1)  # it starts as a copy: an average of one
            self.register_load_state_dict_pre_hook(_ema_from_segen_0_1)

    def step_ema(self) -> None:
        if self.ema_decay is not None:
            self.generator_ema.update_parameters(self.generator)

    @property
    def ema_updates(self) -> int:
        """How many updates the average has had."""
        return int(self.generator_ema.n_averaged) - 1

    @property
    def sampler(self) -> nn.Module:
        """The generator used for outputs: the EMA copy when there is one."""
        return self.generator_ema.module if self.ema_decay is not None else self.generator


def _ema_from_segen_0_1(module, state_dict, prefix, *args) -> None:
    """segen 0.1.0 kept the average's weights at `generator_ema.*` and its update count in `ema_updates`."""
    old = prefix + "ema_updates"
    if old not in state_dict:
        return
    state_dict[prefix + "generator_ema.n_averaged"] = state_dict.pop(old) + 1
    head = prefix + "generator_ema."
    for key in [k for k in state_dict if k.startswith(head) and not k.startswith(head + "module.") and k != head + "n_averaged"]:
        state_dict[head + "module." + key[len(head) :]] = state_dict.pop(key)
