"""Test-only callbacks, injected with `+callbacks.x._target_=fault_injection.X`: they make a
training run fail at an exact step, the way real runs fail (signals, diverging weights)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl
import torch


class SignalAtStep(pl.Callback):
    """Send this process `signal_name` (SIGKILL, SIGINT, SIGTERM) once `global_step` reaches `step`."""

    def __init__(self, step: int, signal_name: str):
        self.step, self.signal = step, getattr(signal, signal_name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class PoisonAtStep(pl.Callback):
    """Fill the weights with NaN at `step`, as a diverging run would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class RecordLastCheckpoint(pl.Callback):
    """At each epoch start, append "epoch global_step" as stored in `path` (last.ckpt) to `out`:
    what a run killed at that moment would resume from."""

    def __init__(self, path: str, out: str):
        self.path, self.out = path, out

    def on_train_epoch_start(self, trainer, pl_module):
        if os.path.isfile(self.path):
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
            with open(self.out, "a") as f:
                f.write(f"{ckpt['epoch']} {ckpt['global_step']}\n")
