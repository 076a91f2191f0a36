"""IoU from a confusion matrix, as cityscapesScripts computes it: what `val/miou` and the
FCN-score report."""

from __future__ import annotations

import math

import torch


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
