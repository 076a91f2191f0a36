"""The GAN task: losses, EMA, safe checkpoints, data checks, and CLI smoke runs on every dataset."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.errors import ConfigError, IncompatibleError
from segen.models import cgan, dcgan
from segen.restore import task_class
from segen.tasks.gan import ConditionalGANTask, GANTask, discriminator_loss, generator_loss


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def small_task(conditional: bool = False, **kwargs) -> GANTask:
    if conditional:
        g = cgan.Generator(3, 32, num_classes=4, latent_dim=8, width=4)
        d = cgan.Discriminator(3, 32, num_classes=4, width=4)
        return ConditionalGANTask(g, d, adam, adam, **kwargs)
    return GANTask(dcgan.Generator(3, 32, latent_dim=8, width=4), dcgan.Discriminator(3, 32, width=4), adam, adam, **kwargs)


def test_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = -(sig(real).log().mean() + (1 - sig(fake)).log().mean())
    assert torch.allclose(discriminator_loss("bce", real, fake), expected_d)
    assert torch.allclose(generator_loss("bce", fake), -sig(fake).log().mean())  # non-saturating
    assert torch.allclose(discriminator_loss("hinge", real, fake), torch.tensor((0 + 2) / 2 + (1.5 + 0) / 2))
    assert torch.allclose(generator_loss("hinge", fake), -fake.mean())
    assert math.isclose(discriminator_loss("bce", torch.zeros(3), torch.zeros(3)).item(), 2 * math.log(2), rel_tol=1e-6)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="loss"):
        small_task(loss="wasserstein")
    with pytest.raises(ConfigError, match="d_steps"):
        small_task(d_steps=0)
    with pytest.raises(ConfigError, match="ema_decay"):
        small_task(ema_decay=1.5)
    with pytest.raises(ConfigError, match="conditional"):
        ConditionalGANTask(dcgan.Generator(3, 32), dcgan.Discriminator(3, 32), adam, adam)


def test_task_declares_its_data_needs():
    assert GANTask.image_range == ConditionalGANTask.image_range == "symmetric"
    assert GANTask.needs == set() and ConditionalGANTask.needs == {"labels"}
    assert not GANTask.test_after_fit and GANTask.generates

    unlabelled = DataInfo(name="unlabelled", channels=3, image_size=(32, 32), mask_class_names=("void", "thing"))
    node = OmegaConf.create({"_target_": "segen.tasks.gan.ConditionalGANTask"})
    with pytest.raises(IncompatibleError, match="model=cgan needs labels, which data=unlabelled does not provide; choose a dataset with labels: cifar10, folder, mnist, shapes"):
        task_class(node).check_data(unlabelled, "cgan", "unlabelled")
    GANTask.check_data(unlabelled, "dcgan", "unlabelled")  # any images will do


def test_ema_trails_the_generator_and_checkpoints_load_weights_only(tmp_path):
    torch.manual_seed(0)
    task = small_task(ema_decay=0.9)
    with torch.no_grad():
        for p in task.generator.parameters():
            p.add_(1.0)
    for _ in range(3):
        task.step_ema()
    live, ema = next(task.generator.parameters()), next(task.generator_ema.parameters())
    assert not torch.equal(live, ema) and int(task.ema_updates) == 3
    assert all(not p.requires_grad for p in task.generator_ema.parameters())
    path = tmp_path / "gan.pt"
    torch.save({"state_dict": task.state_dict()}, path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert any(k.startswith("generator_ema.") for k in state) and "grid_noise" not in state
    fresh = small_task(ema_decay=0.9)
    fresh.load_state_dict(state)
    assert torch.equal(next(fresh.generator_ema.parameters()), ema)


@pytest.mark.parametrize("conditional", [False, True])
def test_sample_depends_only_on_noise_and_label(conditional):
    torch.manual_seed(0)
    task = small_task(conditional)
    noise = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1]) if conditional else None
    images = task.sample(noise, labels, batch_size=4)
    assert images.shape == (6, 3, 32, 32)
    single = task.sample(noise[5:], labels[5:] if conditional else None)
    assert torch.equal(images[5:], single)  # eval-mode BN: no dependence on the batch
    assert task.generator.training  # sampling leaves the training mode as it was


@pytest.mark.parametrize("name", ["dcgan", "cgan"])
def test_model_configs_build_with_the_papers_defaults(name):
    """dcgan.yaml: Radford et al. (BatchNorm D, BCE); cgan.yaml: Miyato & Koyama (conditional
    BatchNorm G, spectrally normalized projection D, hinge loss). Both: Adam(2e-4, 0.5/0.999)."""
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    root = OmegaConf.create({"model": cfg})
    bind_data(root.model, DataInfo(name="four", channels=3, image_size=(32, 32), class_names=("a", "b", "c", "d")))
    assert root.model.generator.image_size == 32 and root.model.discriminator.channels == 3
    task = build(root.model, "model")
    assert task.generator.channels == 3 and task.num_classes == (4 if name == "cgan" else None)
    opt_g, opt_d = task.configure_optimizers()
    for opt in (opt_g, opt_d):
        assert opt.defaults["lr"] == 2e-4 and tuple(opt.defaults["betas"]) == (0.5, 0.999)
    assert task.monitor is None and task.ema_decay is None
    assert task.generator.latent_dim == 100
    if name == "dcgan":
        assert task.loss == "bce" and task.discriminator.norm == "batch"
    else:
        assert task.loss == "hinge" and task.generator.conditioning == "cbn" and task.class_loss_weight == 1.0
        assert task.discriminator.conditioning == "projection" and task.discriminator.net.norm == "spectral"


def read_metrics(run: Path) -> dict[str, list[float]]:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in rows[0]}


def check_run(result, run: Path, rows: int, size: int, channels: int) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    # No metric ranks a GAN's checkpoints (model.monitor=null): no best.ckpt beside last.ckpt.
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "checkpoints" / "best.ckpt").exists()
    assert "Best checkpoint: none (model.monitor is null" in " ".join(result.stdout.split())
    grid = Image.open(run / "samples" / "epoch_000.png")
    assert grid.size == (8 * (size + 2) + 2, rows * (size + 2) + 2)
    assert grid.mode == "RGB"  # torchvision's make_grid repeats grey images to 3 channels
    metrics = read_metrics(run)
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert metrics.get(key) and all(math.isfinite(v) for v in metrics[key]), key
    assert not any(k.startswith("test/") for k in metrics)  # no test step: `test: true` is skipped
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert any(k.startswith("generator.") for k in state["state_dict"])


SMALL = ["debug=smoke", "trainer.limit_train_batches=2", "model.generator.width=8", "model.discriminator.width=8"]


@pytest.mark.parametrize("model,rows", [("dcgan", 8), ("cgan", 4)])
def test_train_smoke_on_shapes(segen, tmp_path, model, rows):
    run = tmp_path / "run"
    result = segen("train", f"model={model}", "data=shapes", "debug=smoke", f"hydra.run.dir={run}", cwd=tmp_path)
    check_run(result, run, rows=rows, size=32, channels=3)
    class_losses = {k: v for k, v in read_metrics(run).items() if k.endswith("_class_loss") and v}
    # cgan's default dual projection logs D's and G's class losses; dcgan has no classes.
    assert sorted(class_losses) == (["train/d_class_loss", "train/g_class_loss"] if model == "cgan" else [])


def test_dcgan_smoke_on_mnist_fixture(segen, tmp_path, mnist_root):
    run = tmp_path / "run"
    result = segen(
        "train", "model=dcgan", "data=mnist", *SMALL, f"data.data_dir={mnist_root}", "data.download=false",
        "data.val_split=50", "model.latent_code_classes=10", f"hydra.run.dir={run}", cwd=tmp_path,
    )
    # InfoGAN's 10-value latent code through the CLI: one grid row per value, Q's losses logged.
    check_run(result, run, rows=10, size=28, channels=1)
    metrics = read_metrics(run)
    assert all(metrics.get(k) for k in ("train/d_code_loss", "train/g_code_loss"))


def test_cgan_smoke_on_mnist_fixture_has_a_row_per_digit(segen, tmp_path, mnist_root):
    run = tmp_path / "run"
    result = segen(
        "train", "model=cgan", "data=mnist", *SMALL, f"data.data_dir={mnist_root}", "data.download=false",
        "data.val_split=50", "model.generator.conditioning=cbn", f"hydra.run.dir={run}", cwd=tmp_path,
    )
    check_run(result, run, rows=10, size=28, channels=1)
    # The EMA copy and other frozen modules are in eval mode on purpose: Lightning's warning about it is not shown.
    assert "in eval mode" not in result.stderr + result.stdout


@pytest.mark.slow
def test_dcgan_smoke_on_cifar10_fixture_with_hinge_and_ema(segen, tmp_path, cifar10_root):
    run = tmp_path / "run"
    result = segen(
        "train", "model=dcgan", "data=cifar10", *SMALL, f"data.data_dir={cifar10_root}", "data.download=false",
        "data.verify_checksums=false", "data.val_split=50", "model.loss=hinge", "model.ema_decay=0.99",
        "model.d_steps=2", f"hydra.run.dir={run}", cwd=tmp_path,
    )
    check_run(result, run, rows=8, size=32, channels=3)


def test_generator_at_another_size_than_the_data(segen, tmp_path):
    run = tmp_path / "run"
    result = segen("train", "model=dcgan", "data=shapes", *SMALL, "model.generator.image_size=64", f"hydra.run.dir={run}", cwd=tmp_path)
    check_run(result, run, rows=8, size=64, channels=3)


def test_class_loss_settings_are_checked():
    with pytest.raises(ConfigError, match="class_loss_weight must be >= 0"):
        small_task(True, class_loss_weight=-1.0)
    with pytest.raises(ConfigError, match="model=cgan"):
        small_task(False, class_loss_weight=1.0)
    g = cgan.Generator(3, 32, num_classes=4, latent_dim=8, width=4)
    d = cgan.Discriminator(3, 32, num_classes=4, width=4, conditioning="concat")
    with pytest.raises(ConfigError, match="conditioning=projection"):
        ConditionalGANTask(g, d, adam, adam, class_loss_weight=1.0)


def test_class_loss_teaches_the_discriminator_to_classify_real_images(tmp_path):
    """Dual projection: after a few steps on two trivially different classes (dark vs light
    images), D's class logits put every real image in its class; both class losses are logged."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    labels = torch.arange(2).repeat(32)
    images = (labels.float() * 2 - 1).view(-1, 1, 1, 1).expand(-1, 3, 32, 32) * 0.8
    images = images + 0.1 * torch.randn_like(images)
    g = cgan.Generator(3, 32, num_classes=2, latent_dim=8, width=4, conditioning="cbn")
    d = cgan.Discriminator(3, 32, num_classes=2, width=4, norm="spectral")
    task = ConditionalGANTask(g, d, adam, adam, loss="hinge", class_loss_weight=1.0)
    trainer = pl.Trainer(
        max_steps=60, logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(task, DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True))
    d.eval()
    with torch.no_grad():
        _, class_logits = d.forward_with_class_logits(images, labels)
    assert (class_logits.argmax(1) == labels).all()
    metrics = read_metrics(Path(trainer.logger.log_dir))
    assert metrics["train/d_class_loss"][-1] < metrics["train/d_class_loss"][0] and metrics["train/g_class_loss"]
