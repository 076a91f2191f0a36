"""Lookahead with a growing average (`callbacks.lookahead`, on in the cnn_cifar10 recipe).

airbench94's (Jordan 2024; Zhang et al. 2019's Lookahead): every `every` optimizer steps, a slow
copy of the weights moves toward the live ones, `slow <- decay * slow + (1 - decay) * live`, and
the live weights are reset to it; the decay grows as `base * (step / total)**3`, so early steps
keep nearly all their progress and the last ones are averaged. After the final step the live
weights are the slow copy. BatchNorm's running statistics are averaged with the weights (every
floating-point tensor of the task's state_dict), as airbench does. Works for any task; the slow
copy is saved with the run, so a resumed run continues it.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class Lookahead(pl.Callback):
    def __init__(self, every: int = 5, base: float = 0.95**5):
        if every < 1 or not 0 <= base <= 1:
            raise ValueError(f"Lookahead needs every >= 1 and 0 <= base <= 1, got every={every}, base={base}")
        self.every, self.base = every, base
        self.slow: dict[str, torch.Tensor] | None = None
        self._done = -1  # the last optimizer step handled (a batch end without a step is skipped)

    def _live(self, pl_module) -> dict[str, torch.Tensor]:
        return {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, pl_module) -> None:
        live = self._live(pl_module)
        if self.slow is None:
            self.slow = {k: v.detach().clone() for k, v in live.items()}
        else:  # resumed: the stored copy, on the live weights' devices
            self.slow = {k: self.slow[k].to(v.device) for k, v in live.items()}

    @torch.no_grad()
    def _pull(self, pl_module, decay: float) -> None:
        for key, live in self._live(pl_module).items():
            slow = self.slow[key]
            slow.lerp_(live, 1 - decay)
            live.copy_(slow)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._done or self.slow is None:
            return
        self._done = step
        total = trainer.estimated_stepping_batches
        if step % self.every == 0:
            self._pull(pl_module, self.base * min(step / total, 1.0) ** 3)
        if step >= total:
            self._pull(pl_module, 1.0)  # the slow copy becomes the final weights

    def state_dict(self) -> dict:
        return {"slow": self.slow, "done": self._done}

    def load_state_dict(self, state_dict: dict) -> None:
        self.slow, self._done = state_dict.get("slow"), state_dict.get("done", -1)
