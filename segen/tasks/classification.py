"""`model=cnn`'s task: cross-entropy classification with accuracy metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from segen.models.whitening import drop_frozen_bias_grads, fit_whitening
from segen.outputs.labels import check_request, write_predictions
from segen.perf import logging_this_step
from segen.tasks.supervised import SupervisedTask
from segen.tasks.tta import check_tta, tta_logits

WHITENING_IMAGES = 5000  # airbench fits its whitening layer on the first 5,000 training images


class ClassificationTask(SupervisedTask):
    """Trains any `nn.Module` that maps images to class logits; exposes `num_classes`.

    Logs `train/loss`, `val/loss`, `val/acc`, `test/loss`, `test/acc` and per-class test
    accuracy as `test/acc/<class name>`. `tta` (none | mirror | mirror_translate,
    segen/tasks/tta.py) is the test-time augmentation of the test pass (validation uses none).
    A net with patch-whitening layers (segen/models/whitening.py) has them fitted on the
    training split when training starts, unless they came fitted from a checkpoint.
    """

    needs = frozenset({"labels"})
    batch_target = "labels"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable,
        scheduler: Callable | None = None,
        label_smoothing: float = 0.0,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        tta: str = "none",
    ):
        super().__init__(net, optimizer, scheduler, monitor, monitor_mode)
        self.label_smoothing = label_smoothing
        self.tta = check_tta(tta)
        n = net.num_classes
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_class_acc = MulticlassAccuracy(num_classes=n, average=None)

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule

        def training_images() -> torch.Tensor:
            return dm.normalize(dm.split_images("train")[:WHITENING_IMAGES])

        fit_whitening(self.net, training_images)

    def on_before_optimizer_step(self, optimizer) -> None:
        drop_frozen_bias_grads(self.net, self.current_epoch)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels, label_smoothing=self.label_smoothing)
        if logging_this_step(self):
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.val_acc.update(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        images, labels = batch
        logits = tta_logits(self, images, self.tta)
        self.test_acc.update(logits, labels)
        self.test_class_acc.update(logits, labels)
        self.log("test/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("test/acc", self.test_acc)

    def on_test_epoch_end(self):
        per_class = self.test_class_acc.compute()
        names = self.class_names()
        self.log_reduced({f"test/acc/{names[i]}": acc for i, acc in enumerate(per_class)})
        self.test_class_acc.reset()

    @staticmethod
    def output_class_names(info) -> tuple[str, ...]:
        return info.class_names

    def evaluate(self, cfg: DictConfig, datamodule, model: str, data: str):
        """`segen eval`: scored with `eval.tta` when given, else with the checkpoint's `model.tta`."""
        requested = (cfg.get("eval") or {}).get("tta")
        if requested is not None:
            self.tta = check_tta(requested)
        result = super().evaluate(cfg, datamodule, model, data)
        result.report["tta"] = self.tta
        if self.tta != "none":
            result.notes.append(f"[bold]Test-time augmentation:[/] {self.tta}")
        return result

    def image_classifier(self):
        return self.net

    # -- segen sample: the class of each image, by the dataset's class names ----------------------
    @classmethod
    def check_sample_request(cls, cfg: DictConfig, model: str) -> None:
        check_request(cfg, model)

    def write_samples(self, cfg: DictConfig, datamodule, out: Path, model: str) -> list[Path]:
        return write_predictions(self, cfg, datamodule, out)

    def export_spec(self, datamodule):
        """`segen export`: the net's logits for standardized images; batch size is free."""
        from segen.export import ExportSpec, image_input

        info = datamodule.info
        size, channels = info.image_size, info.channels

        def images(batch: int) -> tuple[torch.Tensor, ...]:
            return (torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(batch)),)

        names = list(info.class_names)
        return ExportSpec(
            module=self.net,
            example_inputs=images(2),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            check_inputs=images,
            sidecar={
                "task": "classification",
                "input": image_input("images", channels, size, datamodule.mean, datamodule.std),
                "output": {"name": "logits", "shape": ["batch", len(names)], "dtype": "float32",
                           "meaning": "class scores; argmax is the predicted class, softmax gives probabilities"},
                "class_names": names,
            },
        )

