"""Callbacks that every `segen train` run gets: they implement segen's promises about runs
(an interrupted run can be resumed; a diverged run stops and keeps its last good checkpoint)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segen.errors import SegenError


class NonFiniteLossError(SegenError):
    """The training loss became NaN or infinite."""


def resume_hint(trainer: pl.Trainer) -> tuple[Path | None, str]:
    """(last.ckpt path, the command that resumes this run)."""
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is None or not getattr(ckpt_cb, "dirpath", None):
        return None, ""
    last = Path(ckpt_cb.dirpath) / "last.ckpt"
    return last, f"segen train resume={last.parent.parent}"


class SaveOnInterrupt(pl.Callback):
    """On Ctrl-C (SIGINT) or SIGTERM: write last.ckpt and say, in one line, how to resume."""

    def __init__(self):
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        last, command = resume_hint(trainer)
        if last is None:
            return
        trainer.save_checkpoint(last, weights_only=False)  # the full state: weights, optimizers, loops, RNG
        self.saved = last
        if trainer.is_global_zero:
            what = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else "SIGTERM"
            print(
                f"segen train: stopped by {what} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                f"saved {last}; resume with: {command}",
                file=sys.stderr,
                flush=True,
            )


class StopOnNonFiniteLoss(pl.Callback):
    """Stop when the training loss turns NaN/inf, before a checkpoint can store broken weights.

    Each step only ORs a flag on the device (no host sync); the flag is read at the logging
    cadence and always before validation and epoch end, where checkpoints are written
    (Lightning runs checkpoint callbacks after all others).
    """

    def __init__(self, check_every_n_steps: int = 50):
        self.check_every_n_steps = check_every_n_steps
        self._bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self._bad is None or not bool(self._bad):
            return
        last, _ = resume_hint(trainer)
        kept = f"the last good checkpoint is {last}" if last is not None and last.is_file() else "no checkpoint was written"
        raise NonFiniteLossError(
            f"training loss became NaN/inf by epoch {trainer.current_epoch}, step {trainer.global_step}; stopped, "
            f"{kept}; lower model.optimizer.lr or set trainer.gradient_clip_val"
        )


class FlushLogsOnCheckpoint(pl.Callback):
    """Write buffered logger rows whenever a checkpoint is saved (the CSV logger otherwise
    flushes every 100 steps), so a run killed after a checkpoint has logs up to that
    checkpoint, and a resumed run's metrics.csv has no gap."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()
