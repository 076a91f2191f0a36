"""Lightning's loggers, as segen runs need them.

CSV, changed to append: a resumed run must not erase its own history. Lightning's CSVLogger
deletes an existing metrics.csv when it starts in a non-empty folder; `segen train
resume=RUN_DIR` logs into the original run directory, so this logger reads the existing header
and appends to the file instead. TensorBoard: says where its logs are and how to view them.
"""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Called by the parent's __init__ in place of deleting metrics.csv: adopt its columns so
        # new rows append under the same header (a new column rewrites it, keeping old rows).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class CSVLogger(_LightningCSVLogger):
    """`metrics.csv` in the run directory, appended to across resumes."""

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
