"""The pieces of the cnn_cifar10 recipe (airbench94's training, rebuilt in segen), each checked
against an independent computation: the whitening layer (numpy eigenvectors of the patch
moments, and whitened outputs), test-time augmentation (logits averaged by hand), the 2-px
translate with and without flips, decoupled SGD (airbench's own summed-loss SGD), the
triangular LR (numpy interpolation), lookahead (airbench's update by hand), and the recipe
itself through the CLI on the CIFAR-10 pickle fixture."""

from __future__ import annotations

import json
import math
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from segen.data.cifar10 import CIFAR10DataModule
from segen.models.cnn import CNN
from segen.models.whitening import EPS, PatchWhitening, whitening_filters
from segen.tasks.tta import tta_logits


def fixture_images(root, count: int = 200) -> torch.Tensor:
    """Normalized training images of the CIFAR-10 pickle fixture, read by the real datamodule."""
    dm = CIFAR10DataModule(str(root), download=False, verify_checksums=False, val_split=10)
    dm.setup("fit")
    return dm.normalize(dm.split_images("train")[:count])


def numpy_patch_eigen(images: np.ndarray, k: int = 2):
    """Eigenvalues (descending) and eigenvectors (columns) of the uncentered moment matrix of every
    k x k patch, the patch read (channel, row, column), with loops instead of unfold."""
    n, c, h, w = images.shape
    patches = [images[:, :, i : i + k, j : j + k].reshape(n, c * k * k) for i in range(h - k + 1) for j in range(w - k + 1)]
    flat = np.concatenate(patches).astype(np.float64)
    values, vectors = np.linalg.eigh(flat.T @ flat / len(flat))
    return values[::-1], vectors[:, ::-1]


def test_whitening_filters_are_the_scaled_patch_eigenvectors_and_their_negatives(cifar10_root):
    images = fixture_images(cifar10_root)
    filters = whitening_filters(images, kernel=2).double().reshape(24, 12).numpy()
    values, vectors = numpy_patch_eigen(images.numpy())
    expected = (vectors / np.sqrt(values + EPS)).T  # one filter per row, largest eigenvalue first
    signs = np.sign(np.sum(filters[:12] * expected, axis=1))  # an eigenvector's sign is arbitrary
    assert np.all(signs != 0)
    np.testing.assert_allclose(filters[:12], signs[:, None] * expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(filters[12:], -filters[:12])


def test_the_fitted_layer_whitens_the_patches(cifar10_root):
    images = fixture_images(cifar10_root)
    layer = PatchWhitening(3)
    assert not bool(layer.fitted)
    layer.fit(images)
    assert bool(layer.fitted)
    with torch.no_grad():
        out = layer(images)[:, :12].double()  # the second 12 channels are the negatives
    assert out.shape == (len(images), 12, 31, 31)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).numpy()
    moments = flat.T @ flat / len(flat)
    values, _ = numpy_patch_eigen(images.numpy())
    # Exactly diag(lambda / (lambda + eps)): uncorrelated, unit variance where lambda >> eps.
    np.testing.assert_allclose(moments, np.diag(values / (values + EPS)), atol=2e-4)
    strong = values > 100 * EPS
    assert strong.sum() >= 6
    np.testing.assert_allclose(np.diag(moments)[strong], 1.0, atol=0.011)


def test_the_airbench_net_is_the_papers_shape():
    net = CNN(3, 10, widths=[64, 256, 256], pool=[True] * 3, residual=[False] * 3, stage="group", activation="gelu",
              bn_scale=False, bn_momentum=0.4, whiten=True, head_scale=1 / 9)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    # airbench94's make_net94: 1,971,352 trainable (convs 1,967,616, BN biases 1,152, whitening
    # bias 24, linear 2,560); its linear has no bias, segen's has 10.
    assert trainable == 1_971_352 + 10
    frozen_bn = [m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and not any(w.requires_grad for w in frozen_bn)


def shift_by_hand(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved down by dy and right by dx pixels (|d| <= 1), edges reflected, by numpy."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    h, w = images.shape[-2:]
    return padded[:, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


def test_tta_logits_are_the_mean_over_flipped_and_translated_copies():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()  # neither flip- nor shift-invariant
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    x = images.numpy()
    plain = logits(x)
    mirror = (plain + logits(x[..., ::-1])) / 2
    shifted = [shift_by_hand(x, 1, 1), shift_by_hand(x, -1, -1)]
    translate = np.mean([(logits(s) + logits(s[..., ::-1])) / 2 for s in shifted], axis=0)
    with torch.no_grad():
        np.testing.assert_allclose(tta_logits(net, images, "none").numpy(), plain, rtol=1e-10)
        np.testing.assert_allclose(tta_logits(net, images, "mirror").numpy(), mirror, rtol=1e-10)
        np.testing.assert_allclose(tta_logits(net, images, "mirror_translate").numpy(), (mirror + translate) / 2, rtol=1e-10)
    assert not np.allclose(mirror, plain) and not np.allclose(translate, mirror)


def translates(image: np.ndarray, pad: int = 2) -> list[np.ndarray]:
    """Every crop of the reflect-padded image: the 25 translates by up to 2 px, by numpy."""
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    h, w = image.shape[-2:]
    return [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]


def which_translate(out: np.ndarray, image: np.ndarray) -> tuple[bool, bool]:
    """(out is a translate of image, out is a translate of its mirror)."""
    return (any(np.array_equal(out, t) for t in translates(image)),
            any(np.array_equal(out, t) for t in translates(image[..., ::-1])))


@pytest.mark.parametrize("hflip", [False, True])
def test_the_recipes_translate_moves_by_up_to_2_px_and_flips_only_when_asked(hflip):
    dm = CIFAR10DataModule("/nonexistent", download=False, crop_padding=2, hflip=hflip)
    dm.trainer = SimpleNamespace(training=True)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer((images, torch.zeros(64, dtype=torch.long)), 0)[0].numpy()
    plain = dm.normalize(images).numpy()
    kinds = [which_translate(o, p) for o, p in zip(out, plain, strict=True)]
    assert all(a or b for a, b in kinds)
    mirrored_only = sum(b and not a for a, b in kinds)
    assert (mirrored_only > 10) if hflip else (mirrored_only == 0)
    moved = sum(not np.array_equal(o, p) for o, p in zip(out, plain, strict=True))
    assert moved > 50  # 24 of the 25 offsets move the image


def test_alternating_flips_show_each_image_the_other_way_each_epoch_and_keep_the_split_unflipped(cifar10_root):
    epoch = {"now": 0}
    dm = CIFAR10DataModule(str(cifar10_root), download=False, verify_checksums=False, val_split=10, hflip="alternate", crop_padding=0)
    dm.setup("fit")
    split = dm.splits["train"]
    split.epoch = lambda: epoch["now"]  # the trainer's epoch, by hand
    indices = list(range(len(split)))
    originals = split.images.clone()
    seen = []
    for now in range(3):
        epoch["now"] = now
        images, labels = split.__getitems__(indices)
        assert torch.equal(labels, split.targets)
        flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(images, originals, strict=True)])
        assert all(torch.equal(a, b) or f for a, b, f in zip(images, originals, flipped, strict=True))
        seen.append(flipped)
    assert 0.3 < seen[0].float().mean() < 0.7
    assert torch.equal(seen[1], ~seen[0]) and torch.equal(seen[2], seen[0])
    assert torch.equal(split.images, originals) and torch.equal(dm.split_images("train"), originals)
    # The batch path adds no random flip on top: the device-side augment leaves the images as gathered.
    dm.trainer = SimpleNamespace(training=True, current_epoch=1)
    images, labels = split.__getitems__(indices[:32])
    out = dm.on_after_batch_transfer((images, labels), 0)[0]
    assert torch.equal(out, dm.normalize(images))


def test_alternate_flips_are_refused_where_the_split_is_not_in_memory():
    from segen.data.camvid import CamVidDataModule
    from segen.errors import DataError

    with pytest.raises(DataError, match="hflip=alternate"):
        CamVidDataModule("/nonexistent", hflip="alternate")


def airbench_sgd(net: nn.Module, batch_size: int) -> torch.optim.SGD:
    """airbench94's optimizer as its train() builds it (for a loss summed over the batch)."""
    momentum, lr, wd, bias_scaler = 0.85, 11.5, 0.0153, 64.0
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = lr / kilostep, wd * batch_size / kilostep
    norms = [p for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters() if p.requires_grad]
    others = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in norms)]
    groups = [dict(params=norms, lr=lr * bias_scaler, weight_decay=wd / (lr * bias_scaler)), dict(params=others, lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD(groups, momentum=momentum, nesterov=True)


def test_decoupled_sgd_on_the_mean_loss_steps_as_airbench_on_the_summed_loss():
    from segen.tasks.decoupled_sgd import decoupled_sgd

    torch.manual_seed(0)
    make = partial(CNN, 3, 10, widths=[8, 16], pool=[True, True], residual=[False, False], stage="group", activation="gelu", bn_scale=False)
    ours, theirs = make(), make()
    theirs.load_state_dict(ours.state_dict())
    start = ours.head[1].weight.detach().clone()
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    opt_ours = decoupled_sgd(ours, lr=11.5, weight_decay=0.0153, momentum=0.85, batch_size=16, bias_scaler=64.0)
    opt_theirs = airbench_sgd(theirs, batch_size=16)
    for _ in range(3):
        for net, opt, reduction in ((ours, opt_ours, "mean"), (theirs, opt_theirs, "sum")):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y, label_smoothing=0.2, reduction=reduction).backward()
            opt.step()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6), name
    assert not torch.allclose(ours.head[1].weight, start)  # it did step


def test_triangle_lr_is_airbenchs_interpolated_schedule():
    from segen.tasks.triangle_lr import TriangleLR

    total = 476
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": 2.0}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}])
    sched = TriangleLR(opt, total_steps=total, start=0.2, pct_start=0.23, end=0.07)
    seen = []
    for _ in range(total + 1):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])
    np.testing.assert_allclose(np.array(seen), expected[:, None] * np.array([2.0, 0.5]), rtol=1e-12)


def test_lookahead_pulls_the_weights_as_airbench_does():
    from segen.lookahead import Lookahead

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    total, every, base = 12, 5, 0.95**5
    callback = Lookahead(every=every, base=base)
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=total)
    callback.on_train_start(trainer, module)
    slow = {k: v.clone() for k, v in module.state_dict().items()}  # airbench's LookaheadState, by hand
    for step in range(1, total + 1):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p))  # stands in for an optimizer step
            module[1].running_mean.add_(1.0)
        live = {k: v.clone() for k, v in module.state_dict().items()}
        expected = live
        if step % every == 0 or step == total:
            decays = ([base * (step / total) ** 3] if step % every == 0 else []) + ([1.0] if step == total else [])
            for decay in decays:
                for k in slow:
                    if slow[k].is_floating_point():
                        slow[k] = slow[k] + (1 - decay) * (expected[k] - slow[k])
                        expected[k] = slow[k].clone()
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, None, step)
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                assert torch.allclose(v, expected[k], atol=1e-6), (step, k)
    assert math.isclose(float(module[1].running_mean[0]), float(slow["1.running_mean"][0]), rel_tol=1e-6)


def compose_train(*overrides: str):
    from hydra import compose, initialize_config_dir

    from segen.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        return compose(config_name="train", overrides=["model=cnn", "data=cifar10", *overrides])


def test_cnn_cifar10_composes_airbenchs_settings_and_resnet9_stays_a_named_recipe():
    cfg = compose_train()
    net, model = cfg.model.net, cfg.model
    assert (net.stage, net.whiten, net.activation, net.bn_scale, list(net.widths)) == ("group", True, "gelu", False, [64, 256, 256])
    assert model.optimizer._target_ == "segen.tasks.decoupled_sgd.decoupled_sgd" and model.optimizer.momentum == 0.85
    assert model.optimizer.batch_size == cfg.data.batch_size == 1024
    assert model.scheduler._target_ == "segen.tasks.triangle_lr.TriangleLR"
    assert (model.label_smoothing, model.tta, cfg.data.crop_padding, cfg.data.hflip) == (0.2, "mirror_translate", 2, "alternate")
    assert cfg.callbacks.lookahead._target_ == "segen.lookahead.Lookahead"
    old = compose_train("recipe=cnn_cifar10_resnet9")
    assert (old.model.net.stage, old.model.net.whiten, old.trainer.max_epochs) == ("resnet", False, 24)
    assert old.model.optimizer._target_ == "torch.optim.AdamW" and "lookahead" not in old.callbacks


def test_the_recipe_trains_through_the_cli_fits_whitening_and_eval_applies_tta(tmp_path, cifar10_root):
    from conftest import run_segen

    from segen.restore import restore_task

    run = tmp_path / "run"
    data = (f"paths.data_dir={cifar10_root}", "data.verify_checksums=false", "data.download=false")
    result = run_segen("train", "model=cnn", "data=cifar10", *data, "trainer.max_steps=2", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    report = json.loads((run / "metrics.json").read_text())
    assert "test/acc" in report["metrics"]

    # The whitening layer was fitted at fit start, from the training split (normalized).
    _, task, dm = restore_task(ckpt)
    layer = task.net.features[0]
    assert isinstance(layer, PatchWhitening) and bool(layer.fitted)
    dm.setup("fit")
    expected = whitening_filters(dm.normalize(dm.split_images("train")[:5000]), 2)
    assert torch.allclose(layer.weight, expected, atol=1e-5)

    # segen eval with eval.tta: the accuracy of the hand-averaged logits over the test split.
    out = tmp_path / "eval"
    result = run_segen("eval", f"ckpt={ckpt}", "eval.tta=mirror", "trainer.precision=32-true", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((out / "metrics.json").read_text())
    task.eval()
    test = dm.normalize(dm.split_images("test"))
    labels = dm.splits["test"].targets
    with torch.no_grad():
        logits = (task.net(test) + task.net(test.flip(-1))) / 2
    assert scored["tta"] == "mirror"
    assert scored["metrics"]["test/acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()), abs=1e-6)
