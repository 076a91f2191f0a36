"""InfoGAN's categorical latent code on model=dcgan (`model.latent_code_classes`): the code read
from the noise (segen/models/latent_code.py), the discriminator's Q head, Q's loss in both nets'
steps (segen/tasks/infogan.py), and sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.errors import ConfigError
from segen.models import cgan, dcgan, latent_code
from segen.tasks.gan import ConditionalGANTask, GANTask

K = 5


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def coded_task(**kwargs) -> GANTask:
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K)
    d = latent_code.discriminator(1, 28, width=4, norm="spectral", code_classes=K)
    return GANTask(g, d, adam, adam, loss="hinge", latent_code_classes=K, **kwargs)


def test_code_is_uniform_one_hot_and_settable():
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K)
    assert isinstance(g.net, cgan.Generator) and g.net.conditioning == "onehot"  # cgan's generator on the code
    z = torch.randn(20000, 8, generator=torch.Generator().manual_seed(0))
    codes = g.code(z)
    share = torch.bincount(codes, minlength=K).float() / len(z)
    assert torch.allclose(share, torch.full((K,), 1 / K), atol=0.015)  # floor(K * Phi(u)) is uniform
    wanted = torch.arange(2 * K) % K
    assert torch.equal(g.code(g.noise_code.with_codes(z[: 2 * K], wanted)), wanted)
    # The net sees the other noise entries and the one-hot code: latent_dim - 1 + K inputs.
    layers = g.net.net.layers
    assert layers[0].in_channels == 8 - 1 + K
    g.eval()
    joined = torch.cat([z[:3, :-1], F.one_hot(codes[:3], K).float()], dim=1)
    assert torch.equal(g(z[:3]), layers(joined[:, :, None, None]))
    assert g(z[:3]).shape == (3, 1, 28, 28)


def test_code_through_conditional_batchnorm():
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K, code_input="cbn")
    assert g.net.net.layers[0].in_channels == 8 - 1  # the code is not an input: it picks every BatchNorm's scale and shift
    norms = [m for m in g.modules() if isinstance(m, dcgan.ConditionalBatchNorm2d)]
    assert norms and all(m.scale.num_embeddings == K for m in norms)
    z = torch.randn(4, 8)
    g.eval()
    with torch.no_grad():
        for m in norms:
            m.shift.weight.normal_()  # make the codes differ
        same_noise = z.repeat(2, 1)
        images = g(g.noise_code.with_codes(same_noise, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])))
    assert not torch.allclose(images[:4], images[4:])  # the code changes the image
    with pytest.raises(ValueError, match="code_input"):
        latent_code.generator(1, 28, latent_dim=8, code_classes=K, code_input="film")


def test_q_head_shapes_and_no_spectral_norm():
    d = latent_code.discriminator(1, 28, width=4, norm="spectral", code_classes=K)
    assert isinstance(d, latent_code.QDiscriminator) and isinstance(d, dcgan.Discriminator)
    logits, code_logits = d.forward_with_code_logits(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3,) and code_logits.shape == (3, K)
    assert not any("parametrizations" in name for name, _ in d.code_head.named_parameters())
    assert any("parametrizations" in name for name, _ in d.features.named_parameters())
    assert not hasattr(dcgan.Discriminator(1, 28, width=4), "code_head")  # the plain DCGAN D has no Q


def test_q_loss_reaches_both_nets_grads():
    torch.manual_seed(0)
    task = coded_task()
    z = torch.randn(4, 8)
    codes = task.generator.code(z)
    fake = task.generator(z)
    assert torch.equal(codes, task.generator.code(z))
    # D's step: Q's loss on detached fakes trains Q and D's shared features, not G.
    _, losses = task._discriminate(fake.detach(), None, z)
    assert torch.allclose(losses["code"], F.cross_entropy(task.discriminator.forward_with_code_logits(fake.detach())[1], codes))
    losses["code"].backward()
    assert task.discriminator.code_head[-1].weight.grad.abs().sum() > 0
    assert task.discriminator.features[0].parametrizations.weight.original.grad.abs().sum() > 0
    assert all(p.grad is None for p in task.generator.parameters())
    # G's step: the same loss through the fakes reaches G's weights.
    task.discriminator.zero_grad(set_to_none=True)
    _, losses = task._discriminate(task.generator(z), None, z, for_g=True)
    losses["code"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in task.generator.parameters())
    # Real images carry no code: no Q loss; and D sees no labels.
    assert task._discriminate(torch.randn(2, 1, 28, 28), None)[1] == {}
    assert task.label_source.fake(task.generator, z, torch.zeros(4)) == (None, None)


def test_sampling_draws_codes_from_the_seeded_noise_and_grid_rows_are_codes():
    torch.manual_seed(0)
    task = coded_task(ema_decay=0.99)
    noise = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    again = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(task.sample(noise), task.sample(again))  # same seed, same codes, same images
    assert torch.equal(task.generator.code(noise), task.generator.code(again))
    # The per-epoch grid: one row of 8 per code value.
    assert task.grid_noise.shape == (K * 8, 8)
    grid = task.sampler.noise_code.with_codes(task.grid_noise, task.grid_labels)
    assert torch.equal(task.generator.code(grid), torch.arange(K).repeat_interleave(8))


def test_code_settings_are_config_errors():
    g, d = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K), dcgan.Discriminator(1, 28, width=4)
    with pytest.raises(ConfigError, match="latent_code=infogan with model.latent_code_classes=5 needs a discriminator with Q's head"):
        GANTask(g, d, adam, adam, latent_code_classes=K)  # D without Q
    with pytest.raises(ConfigError, match="latent_code_classes=5 but the generator's code has None values"):
        GANTask(dcgan.Generator(1, 28, latent_dim=8, width=4), dcgan.Discriminator(1, 28, width=4), adam, adam, latent_code_classes=K)
    with pytest.raises(ConfigError, match="latent_code_classes=None but the generator.s code has 5 values"):
        GANTask(g, latent_code.discriminator(1, 28, width=4, code_classes=K), adam, adam)
    with pytest.raises(ConfigError, match="code_loss_weight"):
        coded_task(code_loss_weight=-1)
    cg, cd = cgan.Generator(1, 28, num_classes=K, latent_dim=8, width=4), cgan.Discriminator(1, 28, num_classes=K, width=4)
    with pytest.raises(ConfigError, match="latent_code_classes"):
        ConditionalGANTask(cg, cd, adam, adam, latent_code_classes=K)
    with pytest.raises(ValueError, match="latent_dim"):
        latent_code.generator(1, 28, latent_dim=1, code_classes=K)


def test_config_knob_reaches_both_nets():
    cfg = OmegaConf.load(config_dir() / "model" / "dcgan.yaml")
    root = OmegaConf.create({"model": cfg})
    assert root.model.latent_code_classes is None  # off by default: the paper's DCGAN
    root.model.latent_code_classes = 10
    bind_data(root.model, DataInfo(name="digits", channels=1, image_size=(28, 28), class_names=tuple("0123456789")))
    task = build(root.model, "model")
    assert task.code_classes == task.generator.code_classes == task.discriminator.code_classes == 10
    assert task.code_loss_weight == task.term.weight == 1.0
