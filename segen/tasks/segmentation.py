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
from torchmetrics.classification import MulticlassConfusionMatrix

from segen.data.info import IGNORE_INDEX
from segen.perf import logging_this_step
from segen.tasks.supervised import SupervisedTask


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


class SegmentationTask(SupervisedTask):
    """Trains any `nn.Module` mapping images to per-pixel logits `(N, K, H, W)`; exposes `num_classes`.

    Loss: cross-entropy (optionally class-weighted) + `dice_weight` x soft Dice; 255 = ignore.
    Logs `train/loss`, `val/loss`, `val/miou`, `val/pixel_acc`, and at test time `test/miou`,
    `test/pixel_acc` and `test/iou/<class name>`. When masks are larger than the images (labels
    at the original resolution), logits are upsampled bilinearly to the mask size before scoring.
    """

    needs = frozenset({"masks"})
    batch_target = "masks"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 0.0,
        monitor: str = "val/miou",
        monitor_mode: str = "max",
    ):
        super().__init__(net, optimizer, scheduler, monitor, monitor_mode)
        self.dice_weight = dice_weight
        n = net.num_classes
        if class_weights is not None and len(class_weights) != n:
            raise ValueError(f"class_weights needs {n} entries (one per class), got {len(class_weights)}")
        weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        # One confusion matrix per split (summed over ranks by `compute()`); IoU is read from it.
        self.val_confmat = MulticlassConfusionMatrix(num_classes=n, ignore_index=IGNORE_INDEX)
        self.test_confmat = MulticlassConfusionMatrix(num_classes=n, ignore_index=IGNORE_INDEX)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

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

    def _eval_step(self, batch, metric: MulticlassConfusionMatrix, stage: str):
        images, masks = batch
        logits = self.resize_logits(self(images), masks.shape[-2:])
        metric.update(logits.argmax(1), masks)
        valid = (masks != IGNORE_INDEX).any()
        if valid:  # a batch of void pixels only has no loss
            self.log(f"{stage}/loss", self.loss(logits, masks), batch_size=len(images), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_confmat, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_confmat, "test")

    def on_validation_epoch_end(self):
        scores = iou_from_confmat(self.val_confmat.compute())
        self.val_confmat.reset()
        self.log("val/miou", scores["miou"].float(), prog_bar=True)
        self.log("val/pixel_acc", scores["pixel_acc"].float())

    def on_test_epoch_end(self):
        scores = iou_from_confmat(self.test_confmat.compute())
        self.test_confmat.reset()
        names = self.class_names()
        self.log("test/miou", scores["miou"].float())
        self.log("test/pixel_acc", scores["pixel_acc"].float())
        self.log_dict({f"test/iou/{names[i]}": v.float() for i, v in enumerate(scores["iou"])})

    @staticmethod
    def output_class_names(info) -> tuple[str, ...]:
        return info.mask_class_names

    @classmethod
    def check_sample_request(cls, cfg, model: str) -> None:
        from segen.outputs.masks import check_request

        check_request(cfg, model)

    def write_samples(self, cfg, datamodule, out, model):
        from segen.outputs.masks import write_masks

        return write_masks(self, cfg, datamodule, out)
