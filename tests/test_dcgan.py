"""DCGAN nets: output shapes for every supported (channels, size), the paper's init and layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segen.models.dcgan import Discriminator, Generator, stage_plan


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_generator_and_discriminator_shapes(channels, size):
    g = Generator(channels, size, latent_dim=16, width=8)
    d = Discriminator(channels, size, width=8)
    images = g(torch.randn(5, 16))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    assert d(images).shape == (5,)


def test_stage_plan_and_unsupported_sizes():
    assert stage_plan(28) == (7, 2)
    assert stage_plan(32) == (4, 3)
    assert stage_plan(64) == (4, 4)
    for bad in (8, 30, 100):
        with pytest.raises(ValueError, match="image_size"):
            Generator(3, bad)


def test_paper_layers_and_init():
    torch.manual_seed(0)
    g, d = Generator(3, 64), Discriminator(3, 64)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]  # ngf*8 ... ngf, as in the paper
    assert isinstance(g.layers[-1], nn.Tanh)
    assert isinstance(d.features[0], nn.Conv2d) and not isinstance(d.features[1], nn.BatchNorm2d)  # no BN on D's input
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, nn.LeakyReLU))
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(weights.std().item() - 0.02) < 0.001 and abs(weights.mean().item()) < 0.001


def test_widths_are_configurable():
    g = Generator(1, 28, latent_dim=10, widths=[40, 20])
    assert [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)] == [40, 20, 1]
    with pytest.raises(ValueError, match="widths"):
        Generator(1, 28, widths=[40, 20, 10])


@pytest.mark.parametrize("size", [28, 32])
def test_spectral_norm_discriminator_bounds_every_weight(size):
    """norm=spectral: no BatchNorm, and every weight's largest singular value is ~1 once the
    power iteration has run (it runs one step per training-mode forward)."""
    torch.manual_seed(0)
    d = Discriminator(3, size, width=8, norm="spectral")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    for _ in range(30):
        out = d(torch.randn(4, 3, size, size))
    assert out.shape == (4,)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(d.features) // 2 + 1  # every conv of features and the head
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
        assert abs(sigma - 1) < 0.05, sigma
    with pytest.raises(ValueError, match="norm"):
        Discriminator(3, 32, norm="layer")
