"""InfoGAN's categorical latent code on model=dcgan (`model.latent_code_classes`): the code read
from the noise, the discriminator's Q head, Q's loss in both nets' steps, and sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.errors import ConfigError
from segen.models import cgan, dcgan
from segen.tasks.gan import ConditionalGANTask, GANTask

K = 5


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def coded_task(**kwargs) -> GANTask:
    g = dcgan.Generator(1, 28, latent_dim=8, width=4, code_classes=K)
    d = dcgan.Discriminator(1, 28, width=4, norm="spectral", code_classes=K)
    return GANTask(g, d, adam, adam, loss="hinge", latent_code_classes=K, **kwargs)


def test_code_is_uniform_one_hot_and_settable():
    g = dcgan.Generator(1, 28, latent_dim=8, width=4, code_classes=K)
    z = torch.randn(20000, 8, generator=torch.Generator().manual_seed(0))
    codes = g.code(z)
    share = torch.bincount(codes, minlength=K).float() / len(z)
    assert torch.allclose(share, torch.full((K,), 1 / K), atol=0.015)  # floor(K * Phi(u)) is uniform
    one_hot = g.code_one_hot(z)
    assert one_hot.shape == (len(z), K) and torch.equal(one_hot.long(), F.one_hot(codes, K))
    wanted = torch.arange(2 * K) % K
    assert torch.equal(g.code(g.with_codes(z[: 2 * K], wanted)), wanted)
    # The net sees the other noise entries and the one-hot code: latent_dim - 1 + K inputs.
    assert g.layers[0].in_channels == 8 - 1 + K
    assert g(z[:3]).shape == (3, 1, 28, 28)


def test_code_through_conditional_batchnorm():
    g = dcgan.Generator(1, 28, latent_dim=8, width=4, code_classes=K, code_input="cbn")
    assert g.layers[0].in_channels == 8 - 1  # the code is not an input: it picks every BatchNorm's scale and shift
    norms = [m for m in g.modules() if isinstance(m, dcgan.ConditionalBatchNorm2d)]
    assert norms and all(m.scale.num_embeddings == K for m in norms)
    z = torch.randn(4, 8)
    g.eval()
    with torch.no_grad():
        for m in norms:
            m.shift.weight.normal_()  # make the codes differ
        same_noise = z.repeat(2, 1)
        images = g(g.with_codes(same_noise, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])))
    assert not torch.allclose(images[:4], images[4:])  # the code changes the image
    with pytest.raises(ValueError, match="code_input"):
        dcgan.Generator(1, 28, latent_dim=8, code_classes=K, code_input="film")


def test_q_head_shapes_and_no_spectral_norm():
    d = dcgan.Discriminator(1, 28, width=4, norm="spectral", code_classes=K)
    logits, code_logits = d.forward_with_code_logits(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3,) and code_logits.shape == (3, K)
    assert not any("parametrizations" in name for name, _ in d.code_head.named_parameters())
    assert any("parametrizations" in name for name, _ in d.features.named_parameters())
    with pytest.raises(ValueError, match="code_classes"):
        dcgan.Discriminator(1, 28, width=4).forward_with_code_logits(torch.randn(1, 1, 28, 28))


def test_q_loss_reaches_both_nets_grads():
    torch.manual_seed(0)
    task = coded_task()
    z = torch.randn(4, 8)
    codes = task.generator.code(z)
    fake = task.generator(z)
    # D's step: Q's loss on detached fakes trains Q and D's shared features, not G.
    _, q_loss = task._discriminate(fake.detach(), codes)
    q_loss.backward()
    assert task.discriminator.code_head[-1].weight.grad.abs().sum() > 0
    assert task.discriminator.features[0].parametrizations.weight.original.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.generator.parameters())
    # G's step: the same loss through the fakes reaches G's weights.
    task.discriminator.zero_grad(set_to_none=True)
    _, q_loss = task._discriminate(task.generator(z), codes)
    q_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.generator.parameters())
    # Real images carry no code: no Q loss.
    assert task._discriminate(torch.randn(2, 1, 28, 28), None)[1] is None


def test_sampling_draws_codes_from_the_seeded_noise_and_grid_rows_are_codes():
    torch.manual_seed(0)
    task = coded_task(ema_decay=0.99)
    noise = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    again = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(task.sample(noise), task.sample(again))  # same seed, same codes, same images
    assert torch.equal(task.generator.code(noise), task.generator.code(again))
    # The per-epoch grid: one row of 8 per code value.
    assert task.grid_noise.shape == (K * 8, 8)
    assert torch.equal(task.generator.code(task.grid_noise), torch.arange(K).repeat_interleave(8))


def test_code_settings_are_config_errors():
    g, d = dcgan.Generator(1, 28, latent_dim=8, width=4, code_classes=K), dcgan.Discriminator(1, 28, width=4)
    with pytest.raises(ConfigError, match="latent_code_classes"):
        GANTask(g, d, adam, adam, latent_code_classes=K)  # D without Q
    with pytest.raises(ConfigError, match="latent_code_classes"):
        GANTask(dcgan.Generator(1, 28, latent_dim=8, width=4), dcgan.Discriminator(1, 28, width=4), adam, adam, latent_code_classes=K)
    with pytest.raises(ConfigError, match="code_loss_weight"):
        coded_task(code_loss_weight=-1)
    cg, cd = cgan.Generator(1, 28, num_classes=K, latent_dim=8, width=4), cgan.Discriminator(1, 28, num_classes=K, width=4)
    with pytest.raises(ConfigError, match="latent_code_classes"):
        ConditionalGANTask(cg, cd, adam, adam, latent_code_classes=K)
    with pytest.raises(ValueError, match="latent_dim"):
        dcgan.Generator(1, 28, latent_dim=1, code_classes=K)


def test_config_knob_reaches_both_nets():
    cfg = OmegaConf.load(config_dir() / "model" / "dcgan.yaml")
    root = OmegaConf.create({"model": cfg})
    assert root.model.latent_code_classes is None  # off by default: the paper's DCGAN
    root.model.latent_code_classes = 10
    bind_data(root.model, DataInfo(name="digits", channels=1, image_size=(28, 28), class_names=tuple("0123456789")))
    task = build(root.model, "model")
    assert task.code_classes == task.generator.code_classes == task.discriminator.code_classes == 10
    assert task.code_loss_weight == 1.0
