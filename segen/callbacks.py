"""Callbacks that every `segen train` run gets: they implement segen's promises about runs
(an interrupted run can be resumed; a diverged run stops and keeps its last good checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from segen.console import drop_lightning_lines, note
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
            note(
                f"segen train: stopped by {what} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                f"saved {last}; resume with: {command}",
                stderr=True,
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


class ValidateFinalStep(pl.Callback):
    """Validate the final weights of a run that `trainer.max_steps` stops mid-epoch.

    Lightning validates at epoch ends only, so such a run ended with weights no validation had
    seen: best.ckpt was missing (no monitored value yet) or older than the final weights, and
    the test pass silently used other weights. Asking the trainer to stop at the final step
    (`trainer.should_stop`, as early stopping does) makes Lightning validate first, and the
    checkpoint callbacks then see the final score.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class ResumeReport(pl.Callback):
    """One true line when a run resumes, in place of Lightning's generic ones.

    What is restored: weights, optimizer and LR-scheduler states, step counters, RNG states and
    best.ckpt tracking. An end-of-epoch checkpoint continues exactly as if the run never
    stopped. A mid-epoch one (Ctrl-C, SIGTERM, `last_checkpoint.every_n_train_steps`) does not:
    the training loader cannot resume inside its shuffled order, so the rest of that epoch is
    drawn from a new shuffle (Lightning still counts the remaining batches right).
    """

    def __init__(self, ckpt_path: str, changes: list[str] | None = None):
        self.ckpt_path = ckpt_path
        self.changes = list(changes or [])  # what the resume command changed in the stored config
        self._stored: dict = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Said better by the line below; the directory is the run's own on purpose.
        drop_lightning_lines("Checkpoint directory", "ended before the epoch ended", "Restoring states from", "Restored all states from")

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        batches = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        self._stored = {"epoch": checkpoint.get("epoch"), "step": checkpoint.get("global_step"),
                        "batches_done": batches.get("current", {}).get("processed")}

    def on_train_start(self, trainer, pl_module) -> None:
        self._report(trainer, finished=trainer.fit_loop.done)

    def on_fit_end(self, trainer, pl_module) -> None:
        # A finished run's fit loop is skipped (no on_train_start): nothing was left to train.
        self._report(trainer, finished=True)

    def _report(self, trainer, finished: bool) -> None:
        if not trainer.is_global_zero or self._stored.get("reported"):
            return
        self._stored["reported"] = True
        epoch, step, done = self._stored.get("epoch"), self._stored.get("step"), self._stored.get("batches_done")
        line = (f"segen train: resumed from {self.ckpt_path} (epoch {epoch}, step {step}): weights, optimizers, "
                f"LR schedules, RNG states and best.ckpt tracking restored; ")
        total = trainer.num_training_batches
        if finished:
            line += "nothing left to train"
        elif done is not None and 0 < done < total:
            line += (f"saved mid-epoch (after batch {done} of {total}): the rest of epoch {epoch} is drawn from a "
                     "new shuffle, so this run will differ slightly from one that never stopped")
        else:
            line += "continues exactly as if it had never stopped"
        line += (f"; with the checkpoint's config, changed by: {', '.join(self.changes)}" if self.changes
                 else "; with the checkpoint's config, unchanged")
        note(line)


class EpochPictures(pl.Callback):
    """Each epoch, the picture a task draws of its progress (`Task.epoch_picture`: a GAN's fixed
    samples, pix2pix's label | generated | real rows, a segmenter's overlays), written to
    `<run dir>/samples/<stem>.png` and sent to the trackers. The task only draws; writing and
    logging live here. Rank 0 only, and not during the sanity check."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, pl_module, "train_epoch_end", None)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0:
            self._draw(trainer, pl_module, "validation", batch)

    def _draw(self, trainer, pl_module, moment: str, batch) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or not hasattr(pl_module, "epoch_picture"):
            return
        picture = pl_module.epoch_picture(moment, batch)
        if picture is None:
            return
        from torchvision.utils import make_grid

        from segen.trackers import log_image
        from segen.viz import legend, save_grid

        path = save_grid(picture.images, Path(trainer.default_root_dir) / "samples" / f"{picture.stem}.png", nrow=picture.nrow)
        if picture.legend is not None:
            legend(path, *picture.legend)
        log_image(trainer.loggers, picture.key, make_grid(picture.images, nrow=picture.nrow, padding=2, pad_value=255), trainer.global_step)
