"""`model=unet`'s task: per-pixel classification scored like the Cityscapes benchmark.

IoU follows cityscapesScripts' evalPixelLevelSemanticLabeling: one confusion matrix is
accumulated over every pixel of the split (pixels labelled 255 are skipped), per-class
IoU = TP / (TP + FP + FN) is read from it, and the mean is taken over the classes that occur
in the ground truth or the prediction (an absent class has IoU NaN and is left out). This is
not the mean of per-image IoUs that `torchmetrics.segmentation.MeanIoU` reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from segen.data.info import IGNORE_INDEX
from segen.errors import ConfigError, IncompatibleError
from segen.metrics.iou import iou_from_confmat
from segen.perf import logging_this_step
from segen.tasks.supervised import SupervisedTask
from segen.viz import Picture

# Class weights computed from the training split: SegNet's median frequency balancing.
CLASS_WEIGHT_RULES = ("median_frequency",)


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice averaged over classes (Milletari et al., 2016); ignored pixels do not count."""
    valid = (masks != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid  # fp32 under bf16 autocast, like the cross-entropy
    onehot = F.one_hot(masks.clamp(max=logits.shape[1] - 1) * valid[:, 0], logits.shape[1]).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


class SegmentationTask(SupervisedTask):
    """Trains any `nn.Module` mapping images to per-pixel logits `(N, K, H, W)`; exposes `num_classes`.

    Loss: cross-entropy (optionally class-weighted: a list, or `median_frequency` from the
    datamodule's `class_pixel_weights()`) + `dice_weight` x soft Dice; 255 = ignore.
    Logs `train/loss`, `val/loss`, `val/miou`, `val/pixel_acc`, and at test time `test/miou`,
    `test/pixel_acc` and `test/iou/<class name>`. When masks are larger than the images (labels
    at the original resolution), logits are upsampled bilinearly to the mask size before scoring.
    """

    needs = frozenset({"masks"})
    batch_target = "masks"
    segments = True

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
        # One confusion matrix per split (summed over ranks by `compute()`); IoU is read from it.
        self.val_confmat = MulticlassConfusionMatrix(num_classes=n, ignore_index=IGNORE_INDEX)
        self.test_confmat = MulticlassConfusionMatrix(num_classes=n, ignore_index=IGNORE_INDEX)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def setup(self, stage: str) -> None:
        if self.class_weight_rule is None or self.class_weights is not None:
            return
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            raise IncompatibleError(f"model.class_weights={self.class_weight_rule} needs the training data to count class pixels in")
        self.class_weights = dm.class_pixel_weights().to(self.device)  # the datamodule reads its own split

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
        self.log_reduced({"val/miou": scores["miou"].float()}, prog_bar=True)
        self.log_reduced({"val/pixel_acc": scores["pixel_acc"].float()})

    def on_test_epoch_end(self):
        scores = iou_from_confmat(self.test_confmat.compute())
        self.test_confmat.reset()
        names = self.class_names()
        self.log_reduced({"test/miou": scores["miou"].float(), "test/pixel_acc": scores["pixel_acc"].float()})
        self.log_reduced({f"test/iou/{names[i]}": v.float() for i, v in enumerate(scores["iou"])})

    @torch.no_grad()
    def predict_masks(self, images: torch.Tensor, datamodule, batch_size: int = 32) -> torch.Tensor:
        """uint8 images `(N, C, H, W)` -> predicted train ids `(N, H, W)` at the images' size (they
        are resized to the training size and standardized as in training; the contract's
        `segments`)."""
        from segen.outputs.masks import predict

        out = [predict(self, datamodule, images[i : i + batch_size].to(self.device)).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, *images.shape[-2:], dtype=torch.long)

    @torch.no_grad()
    def mask_features(self, images: torch.Tensor, datamodule) -> torch.Tensor:
        """uint8 images -> the net's pooled features `(N, d)` (its `features`), for FID in the
        segmenter's own feature space."""
        self.eval()
        x = datamodule.normalize(images.to(self.device))
        size = datamodule.info.image_size
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.net.features(x).float().cpu()

    @staticmethod
    def output_class_names(info) -> tuple[str, ...]:
        return info.mask_class_names

    @classmethod
    def check_sample_request(cls, cfg, model: str) -> None:
        if cfg.get("format") == "freemask":  # FreeMask's filter of a synthetic folder
            from segen.outputs.freemask import check_request as check_filter

            return check_filter(cfg)
        from segen.outputs.masks import check_request

        check_request(cfg, model)

    def write_samples(self, cfg, datamodule, out, model):
        if cfg.get("format") == "freemask":
            from segen.outputs.freemask import write_filtered

            return write_filtered(self, cfg, datamodule, out)
        from segen.outputs.masks import write_masks

        return write_masks(self, cfg, datamodule, out)


    def export_spec(self, datamodule):
        """`segen export`: per-pixel logits; batch, height and width are free (H and W multiples of
        2**depth for a U-Net, whose padding to such a multiple stays in PyTorch)."""
        from segen.export import ExportSpec, image_input
        info = datamodule.info
        size, channels = info.image_size, info.channels
        multiple = 2 ** int(getattr(self.net, "depth", 0))
        if size[0] % multiple or size[1] % multiple:  # export at the nearest larger valid size
            size = (size[0] + -size[0] % multiple, size[1] + -size[1] % multiple)

        def images(batch: int, height: int = size[0]) -> tuple[torch.Tensor, ...]:
            return (torch.randn(batch, channels, height, size[1], generator=torch.Generator().manual_seed(batch)),)

        names = list(info.mask_class_names)
        palette = info.mask_palette()
        free = {0: "batch", 2: "height", 3: "width"} if multiple > 1 else {0: "batch"}
        return ExportSpec(
            module=self.net,
            example_inputs=images(2),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": free, "logits": free},
            axis_multiples={"height": multiple, "width": multiple} if multiple > 1 else {},
            check_inputs=lambda batch: images(batch, size[0] + multiple),  # another batch and height
            sidecar={
                "task": "segmentation",
                "input": image_input("images", channels, size, datamodule.mean, datamodule.std, multiple if multiple > 1 else None),
                "output": {"name": "logits", "shape": ["batch", len(names), "height", "width"], "dtype": "float32",
                           "meaning": "per-pixel class scores; argmax over axis 1 is the mask of class indices"},
                "class_names": names,
                "palette": [[int(c) for c in rgb] for rgb in palette],
            },
        )

    def epoch_picture(self, moment: str, batch) -> Picture | None:
        """Once per validation (its first batch): the first images with their true masks (top
        row) and predicted masks (bottom row) overlaid."""
        if moment != "validation":
            return None
        from segen.viz import overlay

        images, masks = batch[0][:8], batch[1][:8]
        with torch.no_grad():
            predicted = self(images).argmax(1)
        if masks.shape[-2:] != images.shape[-2:]:  # labels kept at their own resolution
            masks = F.interpolate(masks[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0].long()
        dm = self.trainer.datamodule
        mean = torch.tensor(dm.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(dm.std, device=images.device).view(1, -1, 1, 1)
        pixels = ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).cpu()
        palette = dm.info.mask_palette()
        rows = torch.cat([overlay(pixels, masks, palette), overlay(pixels, predicted, palette)])
        return Picture(rows, len(pixels), f"overlays_epoch_{self.current_epoch:03d}", "val/overlays")
