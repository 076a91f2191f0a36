"""The task contract: the one interface between segen's commands and a model kind.

A task (a LightningModule) is the only place that knows what its model kind is. `segen train`,
`segen eval`, `segen sample` and the callbacks ask it, through the members below, what data it
needs, how it is scored, what it writes, and whether training ends with a test pass; they never
test classes or look up attributes to guess. A new model kind implements this class (or reuses
a task that does); docs/extending.md walks through it.

The heavy lifting of `evaluate` and `write_samples` lives in one module per model kind
(`segen/evaluation/*.py`, `segen/outputs/*.py`), so the LightningModule stays about training.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
from omegaconf import DictConfig

from segen.data.info import DataInfo
from segen.errors import ConfigError, IncompatibleError
from segen.reports import SPLITS, Evaluation, Table  # noqa: F401 (the contract's types)


class Task(pl.LightningModule):
    """Base of every segen task; subclasses set the class attributes and implement the methods.

    - `needs`: the targets the data must serve (`DataInfo.targets`), checked before any work.
    - `batch_target`: what a training batch's second element is ("labels", "masks") or None.
    - `image_range`: "standardized" (mean/std of the data) or "symmetric" ([-1, 1], for tanh
      generators).
    - `test_after_fit`: whether `segen train test=true` ends with a test pass.
    - `eval_split`: the split `segen eval` scores when `split=` is not given.
    - `generates`: whether `sample(noise, labels)` draws images (FID callback, `segen sample`).
    - `segments`: whether `predict_masks(images, datamodule)` and `mask_features(images,
      datamodule)` segment uint8 images (a segmenter that can judge generated images: the
      FCN-score of `segen eval` for pix2pix).
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    batch_target: ClassVar[str | None] = None
    image_range: ClassVar[str] = "standardized"
    test_after_fit: ClassVar[bool] = True
    eval_split: ClassVar[str] = "test"
    generates: ClassVar[bool] = False
    segments: ClassVar[bool] = False

    def log_reduced(self, values: dict, **kwargs) -> None:
        """Log epoch values read from a torchmetrics `compute()`, which already reduced them over
        the ranks: identical on each, so syncing by max changes no bit, and Lightning does not
        warn under DDP that they were logged unsynced."""
        self.log_dict(values, sync_dist=True, reduce_fx="max", **kwargs)

    # -- before any work: data compatibility and the data's form -------------------------------------
    @classmethod
    def check_data(cls, info: DataInfo, model: str, data: str) -> None:
        """Fail in one line when `data` cannot serve this task."""
        for need in sorted(cls.needs - info.targets):
            from segen.data.catalog import datasets_with

            others = ", ".join(datasets_with(need)) or "none"
            raise IncompatibleError(f"model={model} needs {need}, which data={data} does not provide; choose a dataset with {need}: {others}")

    @classmethod
    def fit_data(cls, datamodule) -> None:
        """Set the datamodule's batch target and image range for this task (before `setup`)."""
        if cls.batch_target is not None:
            datamodule.use_target(cls.batch_target)
        if cls.image_range == "symmetric":
            datamodule.use_symmetric_range()

    # -- segen train: what it shows of the task's progress --------------------------------------------
    def epoch_picture(self, moment: str, batch):
        """A `segen.viz.Picture` of the task's progress, or None. `moment` is "train_epoch_end",
        or "validation" with the epoch's first validation `batch`; segen.callbacks.EpochPictures
        asks at both and writes (and logs) what it gets."""
        return None

    # -- segen eval -----------------------------------------------------------------------------------
    @classmethod
    def check_eval_request(cls, cfg: DictConfig) -> None:
        """Fail on an impossible `segen eval` request before the model or data are loaded."""
        if cfg.split not in SPLITS:
            raise ConfigError(f"split={cfg.split} is not a split; use split=test, split=val or split=train")

    def evaluate(self, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
        """Score this model as `segen eval` does (cfg: the eval command's config; model, data:
        the config choices the checkpoint was trained with, for titles and messages)."""
        raise NotImplementedError

    def image_classifier(self):
        """The network, when this task is an image classifier whose `features(x)` (penultimate
        layer, `feature_dim` wide) and `head(features)` can score generators; else None."""
        return None

    # -- segen sample ---------------------------------------------------------------------------------
    @classmethod
    def check_sample_request(cls, cfg: DictConfig, model: str) -> None:
        """Fail on an impossible `segen sample` request before the model or data are loaded;
        tasks that write samples override this (and `write_samples`)."""
        raise IncompatibleError(
            f"{model} is not a generative model and predicts no masks, so there is nothing to sample; "
            f"use `segen eval ckpt={cfg.ckpt}` to evaluate it, or pass a generator or segmenter checkpoint"
        )

    def write_samples(self, cfg: DictConfig, datamodule, out: Path, model: str) -> list[Path]:
        """Write what `segen sample` makes for this model into `out`; return the paths."""
        raise NotImplementedError

    # -- segen export ---------------------------------------------------------------------------------
    def export_spec(self, datamodule):
        """The inference network to export (`segen.export.ExportSpec`): module, example inputs,
        names, free axes and the JSON sidecar that says how to call it without segen."""
        raise IncompatibleError(f"{type(self).__name__} does not say what its inference network is, so it cannot be exported")
