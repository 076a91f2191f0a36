"""Test-only callbacks, injected with `+callbacks.x._target_=fault_injection.X` (Lightning) or
`+hydra.callbacks.x._target_=fault_injection.X` (Hydra): they make a run fail at an exact point,
the way real runs fail (signals, diverging weights, a full disk)."""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.experimental.callback import Callback


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


class FailWrites(Callback):
    """A Hydra callback (`+hydra.callbacks.x._target_=fault_injection.FailWrites`) that makes
    the disk fail under segen's writes, as a full disk does: from the `after`+1-th time a file
    whose name matches `name` (a glob; under `folder` when given) is flushed to disk, `fsync`
    raises OSError(`error`). It runs at job start, before data, callbacks or checkpoints exist,
    so every write site can be hit."""

    def __init__(self, name: str = "*", folder: str | None = None, after: int = 0, error: str = "ENOSPC"):
        self.name, self.folder, self.after, self.errno = name, folder, after, getattr(errno, error)

    def on_job_start(self, config, **kwargs) -> None:
        real_fsync, seen = os.fsync, [0]

        def fsync(fd: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            # segen.io.atomic_write writes `.<name>.<random>.tmp` beside the target
            target = path.name[1:].rsplit(".", 2)[0] if path.name.startswith(".") and path.name.endswith(".tmp") else None
            inside = self.folder is None or str(path).startswith(str(Path(self.folder).absolute()))
            if target is not None and inside and fnmatch.fnmatch(target, self.name):
                seen[0] += 1
                if seen[0] > self.after:
                    raise OSError(self.errno, os.strerror(self.errno))
            real_fsync(fd)

        os.fsync = fsync
