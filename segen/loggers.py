"""Lightning's loggers, as segen runs need them, and the one way every log counts steps and epochs.

Steps: Lightning writes each row at its count of training batches, but `trainer.max_steps` and
`trainer.global_step` count optimizer steps: a GAN takes two per batch (D's and G's), so a run
of `max_steps=300` logged up to "step 150". `LogSteps` gives every logger (metrics.csv,
TensorBoard, MLflow, W&B) the optimizer step instead, and the epoch (numbered from 0, as the
progress bar and samples/epoch_000.png number it), and writes a row at every epoch end, also for
epochs shorter than `trainer.log_every_n_steps` batches.

CSV, changed to append: a resumed run must not erase its own history. Lightning's CSVLogger
deletes an existing metrics.csv when it starts in a non-empty folder; `segen train
resume=RUN_DIR` logs into the original run directory, so this logger reads the existing header
and appends to the file instead. TensorBoard: says where its logs are and how to view them.
"""

from __future__ import annotations

import csv

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from segen.console import drop_lightning_lines
from segen.perf import logging_this_step


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Called by the parent's __init__ in place of deleting metrics.csv: adopt its columns so
        # new rows append under the same header (a new column rewrites it, keeping old rows).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class CSVLogger(_LightningCSVLogger):
    """`metrics.csv` in the run directory, appended to across resumes."""

    _last_row: tuple | None = None

    def log_metrics(self, metrics, step=None) -> None:
        # Logged values arrive as floats: the epoch is written as the whole number it is.
        epoch = metrics.get("epoch")
        if isinstance(epoch, float) and epoch.is_integer():
            metrics = {**metrics, "epoch": int(epoch)}
        row = (step, metrics.get("epoch"))
        if set(metrics) <= {"epoch"} and row == self._last_row:
            return  # an epoch-end row (LogSteps) right after a row of that same step says nothing new
        self._last_row = row
        super().log_metrics(metrics, step)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger that says, once, where its logs go and how to view them."""

    _announced = False

    def log_hyperparams(self, params, metrics=None) -> None:
        super().log_hyperparams(params, metrics)
        if not self._announced:
            self._announced = True
            from segen.console import note

            note(f"TensorBoard logs: {self.log_dir}; view them with: tensorboard --logdir {self.log_dir}")


# Keys `LogSteps` logs for the loggers' rows; they are bookkeeping, not metrics of the run.
STEP_KEYS = ("step", "epoch")


class LogSteps(pl.Callback):
    """Each logged row's `step` is `trainer.global_step` (the optimizer steps done when it was
    written) and its `epoch` the epoch it belongs to; one row more at every epoch end.

    Lightning uses a logged `step` value as the row's step (and then adds no `epoch` of its
    own, so both are logged). Only on the batches Lightning writes logs for. Epochs shorter
    than `trainer.log_every_n_steps` batches (a recipe's 50 on a small copy of its data) log
    once an epoch instead, so that every epoch has its losses in metrics.csv."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        drop_lightning_lines("is smaller than the logging interval")  # on_train_start shortens the interval instead

    def on_train_start(self, trainer, pl_module) -> None:
        per_epoch = trainer.num_training_batches
        if isinstance(per_epoch, int) and 0 < per_epoch < trainer.log_every_n_steps:
            trainer.log_every_n_steps = per_epoch

    def _log(self, pl_module: pl.LightningModule, trainer: pl.Trainer, on_epoch: bool) -> None:
        for key, value in zip(STEP_KEYS, (trainer.global_step, trainer.current_epoch), strict=True):
            pl_module.log(key, float(value), on_step=not on_epoch, on_epoch=on_epoch, reduce_fx="max",
                          sync_dist=on_epoch and trainer.world_size > 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.loggers and logging_this_step(pl_module):
            self._log(pl_module, trainer, on_epoch=False)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.loggers and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._log(pl_module, trainer, on_epoch=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.loggers:
            self._log(pl_module, trainer, on_epoch=True)
