"""Segmentation task: IoU against an independent numpy computation, losses, the unet CLI on shapes."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from segen.tasks.segmentation import SegmentationTask, dice_loss, iou_from_confmat

K = 6  # classes; class 4 never occurs in truth or prediction, class 5 only in truth


def numpy_iou(preds: np.ndarray, truth: np.ndarray, k: int, ignore: int = 255):
    """cityscapesScripts' protocol, written out: one confusion matrix over all valid pixels."""
    valid = truth != ignore
    conf = np.bincount(truth[valid].astype(np.int64) * k + preds[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    denom = tp + fp + fn
    iou = np.full(k, np.nan)
    iou[denom > 0] = tp[denom > 0] / denom[denom > 0]
    return iou, np.nanmean(iou), tp.sum() / valid.sum()


def make_split(seed: int = 0, n: int = 10, size: tuple[int, int] = (9, 13)):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, size=(n, *size))
    truth[rng.random((n, *size)) < 0.2] = 255  # ignored pixels
    truth[0, :2, :3] = 5  # a class only the ground truth has
    preds = np.where(rng.random((n, *size)) < 0.6, np.where(truth == 255, 0, truth), rng.integers(0, 4, size=(n, *size)))
    preds[truth == 5] = 1
    return preds, truth


class OneHotNet(nn.Module):
    """A fake "model" whose prediction is written in the input: logits = one-hot(channel 0)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.one_hot(x[:, 0].long(), self.num_classes).permute(0, 3, 1, 2).float() + 0 * self.dummy


class ListBatches(torch.utils.data.Dataset):
    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.masks[i]


def run_test_loop(preds: np.ndarray, truth: np.ndarray, batch_size: int = 3) -> dict[str, float]:
    task = SegmentationTask(OneHotNet(K), optimizer=partial(torch.optim.SGD, lr=0.1))
    images = torch.from_numpy(preds).float()[:, None]
    masks = torch.from_numpy(truth).long()
    loader = DataLoader(ListBatches(images, masks), batch_size=batch_size)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    return {k: float(v) for k, v in trainer.test(task, dataloaders=loader, verbose=False)[0].items()}


def test_iou_over_the_split_matches_numpy_confusion_matrix():
    preds, truth = make_split()
    iou, miou, acc = numpy_iou(preds, truth, K)
    assert np.isnan(iou[4]) and iou[5] == 0.0  # absent class left out; truth-only class counts as 0
    logged = run_test_loop(preds, truth)
    assert logged["test/miou"] == pytest.approx(miou, abs=1e-6)
    assert logged["test/pixel_acc"] == pytest.approx(acc, abs=1e-6)
    for c in range(K):
        if np.isnan(iou[c]):
            assert math.isnan(logged[f"test/iou/{c}"])
        else:
            assert logged[f"test/iou/{c}"] == pytest.approx(iou[c], abs=1e-6)


def test_iou_is_accumulated_over_the_split_not_averaged_per_batch():
    preds, truth = make_split(seed=1)
    whole = run_test_loop(preds, truth, batch_size=len(preds))
    batched = run_test_loop(preds, truth, batch_size=1)
    assert batched["test/miou"] == pytest.approx(whole["test/miou"], abs=1e-6)
    per_image = np.nanmean([numpy_iou(p[None], t[None], K)[1] for p, t in zip(preds, truth, strict=True)])
    assert abs(per_image - whole["test/miou"]) > 1e-3  # the protocol differs from per-image means


def test_iou_from_confmat_edge_cases():
    empty = iou_from_confmat(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(empty["miou"]) and torch.isnan(empty["iou"]).all()
    perfect = iou_from_confmat(torch.diag(torch.tensor([5, 0, 7])))
    assert perfect["miou"] == 1.0 and torch.isnan(perfect["iou"][1])


def test_logits_are_upsampled_to_full_resolution_labels():
    task = SegmentationTask(OneHotNet(3), optimizer=partial(torch.optim.SGD, lr=0.1))
    logits = torch.zeros(1, 3, 4, 8)
    logits[:, 2] = 1
    assert task.resize_logits(logits, (16, 32)).argmax(1).eq(2).all()


def test_losses_ignore_void_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    masks = torch.randint(0, 4, (2, 5, 5))
    masked = masks.clone()
    masked[:, :2] = 255
    # Changing the logits where the mask says "ignore" changes neither loss.
    other = logits.clone()
    other[:, :, :2] = 10 * torch.randn_like(other[:, :, :2])
    task = SegmentationTask(OneHotNet(4), optimizer=partial(torch.optim.SGD, lr=0.1), dice_weight=0.5, class_weights=[1, 2, 1, 1])
    assert task.loss(logits, masked) == pytest.approx(float(task.loss(other, masked)), rel=1e-6)
    assert float(dice_loss(logits, masked)) == pytest.approx(float(dice_loss(other, masked)), rel=1e-6)
    perfect = F.one_hot(masks, 4).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, masks)) < 1e-3


def test_class_weights_must_match_classes():
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationTask(OneHotNet(4), optimizer=partial(torch.optim.SGD, lr=0.1), class_weights=[1.0, 2.0])


@pytest.mark.slow  # two CLI processes: ~30-60 s on a 2-core CPU
def test_unet_on_shapes_trains_evaluates_and_samples(segen, tmp_path: Path):
    run = tmp_path / "run"
    train = segen(
        "train", "model=unet", "data=shapes", f"hydra.run.dir={run}", "debug=smoke",
        "data.num_train=200", "data.num_test=64", "model.net.base_width=4", "model.net.depth=2",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    ev = segen("eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    for name in ("per-class iou", "background", "circle", "cross", "miou", "pixel_acc"):
        assert name in ev.stdout, name
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= report["metrics"]["test/miou"] <= 1

    # Sampling: rebuild from the checkpoint as `segen sample` does, then write pictures.
    from omegaconf import OmegaConf

    task, dm, run_cfg = restore_without_hydra(ckpt)
    out = tmp_path / "samples"
    written = task.write_samples(OmegaConf.create({"n": 12, "ckpt": str(ckpt)}), dm, out, "unet")
    assert {p.relative_to(out).as_posix() for p in written} >= {"images/val_0000_mask.png", "images/val_0000_overlay.png", "grid.png"}
    from PIL import Image

    with Image.open(out / "images" / "val_0000_mask.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    with Image.open(out / "grid.png") as im:  # 12 rows of image|prediction|truth, 2 side by side, + legend
        width, height = im.size
    assert 384 <= width <= 2 * height, (width, height)
    ids = task.write_samples(OmegaConf.create({"n": 2, "format": "labelids"}), dm, tmp_path / "ids", "unet")
    with Image.open(ids[0]) as im:
        assert im.mode == "L" and max(im.getdata()) < 5


def restore_without_hydra(ckpt: Path):
    """What `segen sample` rebuilds from a checkpoint, minus the Hydra run context."""
    from segen.restore import restore_task

    run_cfg, task, dm = restore_task(ckpt)
    return task, dm, run_cfg
