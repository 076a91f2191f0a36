"""`model=unet`'s task: per-pixel classification scored like the Cityscapes benchmark.

IoU follows cityscapesScripts' evalPixelLevelSemanticLabeling: one confusion matrix is
accumulated over every pixel of the split (pixels labelled 255 are skipped), per-class
IoU = TP / (TP + FP + FN) is read from it, and the mean is taken over the classes that occur
in the ground truth or the prediction (an absent class has IoU NaN and is left out). This is
not the mean of per-image IoUs that `torchmetrics.segmentation.MeanIoU` reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import JaccardIndex

from segen.data.in_memory import IGNORE_INDEX
from segen.errors import ConfigError, IncompatibleError
from segen.perf import logging_this_step
from segen.tasks.supervised import SupervisedTask

# Class weights computed from the training split: SegNet's median frequency balancing.
CLASS_WEIGHT_RULES = ("median_frequency",)


def iou_from_confmat(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class IoU (NaN for classes absent from prediction and truth), their mean over present
    classes, and pixel accuracy, from a confusion matrix with rows = truth, columns = prediction."""
    confmat = confmat.double()
    tp = confmat.diag()
    union = confmat.sum(0) + confmat.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    miou = iou[present].mean() if present.any() else torch.tensor(math.nan, dtype=torch.float64)
    total = confmat.sum()
    acc = tp.sum() / total if total > 0 else torch.tensor(math.nan, dtype=torch.float64)
    return {"iou": iou, "miou": miou, "pixel_acc": acc}


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice averaged over classes (Milletari et al., 2016); ignored pixels do not count."""
    valid = (masks != ignore_index).unsqueeze(1)
    probs = logits.softmax(1) * valid
    onehot = F.one_hot(masks.clamp(max=logits.shape[1] - 1) * valid[:, 0], logits.shape[1]).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def summed_confmat(metric: JaccardIndex) -> torch.Tensor:
    """The metric's confusion matrix summed over all processes (under DDP), as `compute()` sees it."""
    with metric.sync_context(should_sync=metric.sync_on_compute, should_unsync=True):
        return metric.confmat.clone()


class SegmentationTask(SupervisedTask):
    """Trains any `nn.Module` mapping images to per-pixel logits `(N, K, H, W)`; exposes `num_classes`.

    Loss: cross-entropy (optionally class-weighted: a list, or `median_frequency` from the
    datamodule's `class_pixel_weights()`) + `dice_weight` x soft Dice; 255 = ignore.
    Logs `train/loss`, `val/loss`, `val/miou`, `val/pixel_acc`, and at test time `test/miou`,
    `test/pixel_acc` and `test/iou/<class name>`. When masks are larger than the images (labels
    at the original resolution), logits are upsampled bilinearly to the mask size before scoring.
    """

    requires = ("masks",)  # the data serves per-pixel masks as targets

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        class_weights: Sequence[float] | str | None = None,
        dice_weight: float = 0.0,
        monitor: str = "val/miou",
        monitor_mode: str = "max",
    ):
        super().__init__(net, optimizer, scheduler, monitor, monitor_mode)
        self.dice_weight = dice_weight
        n = net.num_classes
        # A name is resolved from the training data in `setup`; a list is used as given.
        self.class_weight_rule = class_weights if isinstance(class_weights, str) else None
        if self.class_weight_rule is not None and self.class_weight_rule not in CLASS_WEIGHT_RULES:
            raise ConfigError(f"model.class_weights={class_weights} is not known; use a list of {n} weights, null, or one of {', '.join(CLASS_WEIGHT_RULES)}")
        if class_weights is not None and self.class_weight_rule is None and len(class_weights) != n:
            raise ValueError(f"class_weights needs {n} entries (one per class), got {len(class_weights)}")
        weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None and self.class_weight_rule is None else None
        self.register_buffer("class_weights", weights, persistent=False)
        # average=None keeps the confusion matrix; the macro mean is taken in `iou_from_confmat`.
        self.val_iou = JaccardIndex(task="multiclass", num_classes=n, ignore_index=IGNORE_INDEX, average=None)
        self.test_iou = JaccardIndex(task="multiclass", num_classes=n, ignore_index=IGNORE_INDEX, average=None)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def setup(self, stage: str) -> None:
        if self.class_weight_rule is None or self.class_weights is not None:
            return
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "class_pixel_weights"):
            raise IncompatibleError(f"model.class_weights={self.class_weight_rule} needs a dataset that counts its class pixels (cityscapes, camvid)")
        dm.setup(stage)
        self.class_weights = dm.class_pixel_weights().to(self.device)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, masks, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, masks)
        return loss

    @staticmethod
    def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx):
        images, masks = batch
        loss = self.loss(self(images), masks)
        if logging_this_step(self):
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, metric: JaccardIndex, stage: str):
        images, masks = batch
        logits = self.resize_logits(self(images), masks.shape[-2:])
        metric.update(logits.argmax(1), masks)
        valid = (masks != IGNORE_INDEX).any()
        if valid:  # a batch of void pixels only has no loss
            self.log(f"{stage}/loss", self.loss(logits, masks), batch_size=len(images), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_iou, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_iou, "test")

    def on_validation_epoch_end(self):
        scores = iou_from_confmat(summed_confmat(self.val_iou))
        self.val_iou.reset()
        self.log("val/miou", scores["miou"].float(), prog_bar=True)
        self.log("val/pixel_acc", scores["pixel_acc"].float())

    def on_test_epoch_end(self):
        scores = iou_from_confmat(summed_confmat(self.test_iou))
        self.test_iou.reset()
        names = self.class_names()
        self.log("test/miou", scores["miou"].float())
        self.log("test/pixel_acc", scores["pixel_acc"].float())
        self.log_dict({f"test/iou/{names[i]}": v.float() for i, v in enumerate(scores["iou"])})

    def class_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "mask_class_names", None)
        return list(names) if names is not None else [str(i) for i in range(self.num_classes)]


