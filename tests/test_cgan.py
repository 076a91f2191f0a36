"""Conditional nets: shapes, the label really steers the output, dcgan blocks are reused."""

from __future__ import annotations

import pytest
import torch

from segen.models import dcgan
from segen.models.cgan import ConditionalBatchNorm2d, Discriminator, Generator


@pytest.mark.parametrize("conditioning", ["embed", "cbn", "onehot"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_generator_shapes(conditioning, channels, size):
    g = Generator(channels, size, num_classes=4, latent_dim=16, width=8, conditioning=conditioning)
    out = g(torch.randn(3, 16), torch.tensor([0, 1, 3]))
    assert out.shape == (3, channels, size, size)
    assert isinstance(g.net, dcgan.Generator)  # built from the DCGAN blocks, not a copy


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_discriminator_shapes(conditioning, channels, size):
    d = Discriminator(channels, size, num_classes=4, width=8, conditioning=conditioning)
    assert d(torch.randn(3, channels, size, size), torch.tensor([0, 1, 3])).shape == (3,)
    assert isinstance(d.net, dcgan.Discriminator)


@pytest.mark.parametrize("conditioning", ["embed", "cbn", "onehot"])
def test_changing_only_the_label_changes_the_image(conditioning):
    torch.manual_seed(0)
    g = Generator(3, 32, num_classes=10, latent_dim=16, width=8, conditioning=conditioning)
    if conditioning == "cbn":  # make the per-class affines differ, as training would
        for m in g.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                torch.nn.init.normal_(m.scale.weight, 1.0, 0.5)
    g.eval()
    z = torch.randn(1, 16).repeat(10, 1)
    out = g(z, torch.arange(10))
    for i in range(1, 10):
        assert not torch.allclose(out[0], out[i], atol=1e-4)
    assert torch.equal(out[:1], g(z[:1], torch.tensor([0])))  # same label, same noise: same image


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_discriminator_uses_the_label(conditioning):
    torch.manual_seed(0)
    d = Discriminator(3, 32, num_classes=4, width=8, conditioning=conditioning).eval()
    x = torch.randn(1, 3, 32, 32).repeat(4, 1, 1, 1)
    scores = d(x, torch.arange(4))
    assert len(set(scores.tolist())) == 4


def test_bad_conditioning_is_a_value_error():
    with pytest.raises(ValueError, match="conditioning"):
        Generator(3, 32, num_classes=4, conditioning="film")
    with pytest.raises(ValueError, match="conditioning"):
        Discriminator(3, 32, num_classes=4, conditioning="ac")


def test_spectral_projection_discriminator_normalizes_the_class_embedding():
    torch.manual_seed(0)
    d = Discriminator(3, 32, num_classes=4, width=8, conditioning="projection", norm="spectral")
    for _ in range(30):
        out = d(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4,) and d.net.norm == "spectral"
    sigma = torch.linalg.matrix_norm(d.embed.weight.detach(), ord=2).item()
    assert abs(sigma - 1) < 0.05, sigma


def test_class_logits_are_the_projection_terms_of_every_label():
    """Class k's logit is what D's score gains when the label is k: D(x, k) - D(x, j) = c_k - c_j."""
    torch.manual_seed(0)
    d = Discriminator(3, 32, num_classes=4, width=8, conditioning="projection", norm="spectral").eval()
    x = torch.randn(5, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 1])
    logits, class_logits = d.forward_with_class_logits(x, labels)
    assert class_logits.shape == (5, 4)
    assert torch.allclose(logits, d(x, labels), atol=1e-5)
    scores = torch.stack([d(x, torch.full((5,), k)) for k in range(4)], dim=1)
    assert torch.allclose(scores - scores[:, :1], class_logits - class_logits[:, :1], atol=1e-4)
    with pytest.raises(ValueError, match="projection"):
        Discriminator(3, 32, num_classes=4, width=8, conditioning="concat").forward_with_class_logits(x, labels)


def test_onehot_joins_the_labels_one_hot_vector_to_the_noise():
    g = Generator(1, 28, num_classes=5, latent_dim=7, width=4, conditioning="onehot").eval()
    assert g.net.layers[0].in_channels == 7 + 5  # the noise and the one-hot label
    z, labels = torch.randn(3, 7), torch.tensor([0, 4, 2])
    joined = torch.cat([z, torch.nn.functional.one_hot(labels, 5).float()], dim=1)
    assert torch.equal(g(z, labels), g.net(joined))
