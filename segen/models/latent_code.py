"""A categorical latent code read from the noise: what `model=dcgan model.latent_code_classes=K` adds.

The generator's last noise entry u ~ N(0, 1) becomes a code c in 0..K-1 (`NoiseCode`: code k
for bounds[k-1] <= u < bounds[k], the normal quantiles of a prior, uniform by default, so that
c = floor(K * Phi(u))), and a class-conditional generator (segen/models/cgan.py) draws an image
of code c from the other entries (`CodedGenerator`). Because the code is a function of the
noise, the generator still maps N(0, 1) noise `(N, latent_dim)` to images, so everything that
samples or exports it is unchanged.

What the code means is the task's (segen/tasks/gan.py picks it by `model.latent_code`):
- "infogan" (Chen et al. 2016): drawn uniformly; D grows a head Q that reads it back from the
  fakes (`QDiscriminator`, trained by segen/tasks/infogan.py). A discrete choice of mode, where
  a continuous z alone maps poorly onto disconnected classes (it blends them).
- "clusters" (self-conditioning, Liu et al. 2020): code k is the k-th k-means cluster of the
  training images (segen/tasks/clusters.py), drawn as often as the cluster holds images
  (`NoiseCode.set_prior`), and D is cgan's projection discriminator on the clusters.

`generator` and `discriminator` are what configs/model/dcgan.yaml builds: the plain DCGAN nets
without a code, these with one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segen.models import cgan, dcgan

CODE_INPUTS = {"concat": "onehot", "cbn": "cbn"}  # model.generator.code_input -> cgan.Generator's conditioning


class NoiseCode(nn.Module):
    """The code `(N,)` long of noise `z` `(N, latent_dim)`, read from its last entry; `bounds` (saved
    with the weights) set how often each code value is drawn."""

    def __init__(self, classes: int):
        super().__init__()
        if classes < 2:
            raise ValueError(f"code_classes must be >= 2 (or None: no latent code), got {classes}")
        self.classes = classes
        self.register_buffer("bounds", torch.empty(classes - 1))
        self.set_prior(torch.full((classes,), 1.0 / classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z.flatten(1)[:, -1:] >= self.bounds).sum(dim=1)

    def set_prior(self, probs: torch.Tensor) -> None:
        """Draw code k with probability `probs[k]` (e.g. the share of the training images in
        cluster k): the bounds become the normal quantiles of the cumulative sums."""
        probs = probs.to(torch.float64).clamp_min(0)
        cumulative = (probs.cumsum(0) / probs.sum())[:-1].clamp(1e-12, 1 - 1e-12)
        self.bounds.copy_(torch.special.ndtri(cumulative).to(self.bounds.dtype))

    def prior(self) -> torch.Tensor:
        """`(K,)` probability of each code value under N(0, 1) noise."""
        edges = torch.special.ndtr(self.bounds.to(torch.float64).cpu())
        return torch.diff(edges, prepend=edges.new_zeros(1), append=edges.new_ones(1))

    def with_codes(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """A copy of `z` whose code entry is the middle (in probability) of each of `codes`' bins."""
        edges = torch.special.ndtr(self.bounds.to(torch.float64).cpu())
        lower = torch.cat([edges.new_zeros(1), edges])[codes.cpu()]
        upper = torch.cat([edges, edges.new_ones(1)])[codes.cpu()]
        out = z.clone()
        out[:, -1] = torch.special.ndtri((lower + upper) / 2).to(z.dtype).to(z.device)
        return out


class CodedGenerator(nn.Module):
    """noise `(N, latent_dim)` -> images: `net` (a class-conditional generator on `latent_dim - 1`
    noise entries) draws an image of the code that `noise_code` reads from the last entry."""

    num_classes = None  # takes noise only: the code is in it

    def __init__(self, net: nn.Module, code: NoiseCode):
        super().__init__()
        if net.num_classes != code.classes:
            raise ValueError(f"the generator has {net.num_classes} classes but the code {code.classes} values")
        # Not `code`: torch.fx's GraphModule (what ONNX export traces into) has an attribute of that name.
        self.net, self.noise_code = net, code
        self.channels, self.image_size, self.latent_dim = net.channels, net.image_size, net.latent_dim + 1
        self.code_classes = code.classes
        self.register_load_state_dict_pre_hook(_coded_generator_from_segen_0_1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        return self.net(z[:, :-1], self.noise_code(z))

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """The code `(N,)` long of noise `z` `(N, latent_dim)`."""
        return self.noise_code(z)

def _coded_generator_from_segen_0_1(module, state_dict, prefix, *args) -> None:
    """segen 0.1.0 kept the code inside dcgan.Generator: `layers.*` and `code_bounds` (absent
    before the prior was saved: a uniform code, the default)."""
    for key in [k for k in state_dict if k.startswith(prefix + "layers.")]:
        state_dict[prefix + "net.net." + key[len(prefix) :]] = state_dict.pop(key)
    if prefix + "code_bounds" in state_dict:
        state_dict[prefix + "noise_code.bounds"] = state_dict.pop(prefix + "code_bounds")
    elif prefix + "noise_code.bounds" not in state_dict and prefix + "net.net.layers.0.weight" in state_dict:
        state_dict[prefix + "noise_code.bounds"] = module.noise_code.bounds.detach().clone()


class QDiscriminator(dcgan.Discriminator):
    """The DCGAN discriminator with InfoGAN's Q: `code_head` maps D's features to the code's K
    logits (`forward_with_code_logits`). Q is never spectrally normalized: it is a classifier,
    not part of D's real/fake critic."""

    def __init__(self, channels: int, image_size: int, code_classes: int, width: int = 64, widths: Sequence[int] | None = None,
                 norm: str = "batch", code_hidden: int = 128):
        super().__init__(channels, image_size, width, widths, norm)
        if code_classes < 2:
            raise ValueError(f"code_classes must be >= 2 (or None: no latent code), got {code_classes}")
        self.code_classes = code_classes
        # A hidden layer over the whole feature map, then the code's logits.
        self.code_head = nn.Sequential(
            nn.Conv2d(self.feature_dim, code_hidden, self.start_size, 1, 0), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(),
            nn.Linear(code_hidden, code_classes),
        )
        self.code_head.apply(dcgan.init_weights)

    def forward_with_code_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit `(N,)`, code logits `(N, code_classes)`) from one pass."""
        h = self.features(x)
        return self.head(h).flatten(), self.code_head(h)


def q_discriminator(channels, image_size, code_classes, width, widths, norm, code_hidden) -> nn.Module:
    return QDiscriminator(channels, image_size, code_classes, width, widths, norm, code_hidden)


def cluster_discriminator(channels, image_size, code_classes, width, widths, norm, code_hidden) -> nn.Module:
    """cgan's projection discriminator, on the code's K values (self-conditioning)."""
    return ClusterDiscriminator(channels, image_size, code_classes, width, widths, conditioning="projection", norm=norm)


class ClusterDiscriminator(cgan.Discriminator):
    """cgan's projection discriminator on the clusters; reads segen 0.1.0's layout, which kept its
    embedding as `code_embed` beside dcgan.Discriminator's `features` and `head`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_pre_hook(_cluster_discriminator_from_segen_0_1)


def _cluster_discriminator_from_segen_0_1(module, state_dict, prefix, *args) -> None:
    for old, new in (("features.", "net.features."), ("head.", "net.head."), ("code_embed.", "embed.")):
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


DISCRIMINATORS = {"infogan": q_discriminator, "clusters": cluster_discriminator}  # model.latent_code -> D with the code


def generator(channels: int, image_size: int, latent_dim: int = 100, width: int = 64, widths: Sequence[int] | None = None,
              code_classes: int | None = None, code_input: str = "concat") -> nn.Module:
    """configs/model/dcgan.yaml's generator: the DCGAN generator, or with `code_classes` a
    `CodedGenerator` that takes the code through `code_input` (concat: its one-hot joins the
    noise, as in InfoGAN; cbn: a scale and shift per code value in every layer)."""
    if code_classes is None:
        return dcgan.Generator(channels, image_size, latent_dim, width, widths)
    if code_input not in CODE_INPUTS:
        raise ValueError(f"code_input must be one of {tuple(CODE_INPUTS)}, got {code_input!r}")
    if latent_dim < 2:
        raise ValueError(f"a latent code takes one noise entry, so latent_dim must be >= 2, got {latent_dim}")
    code = NoiseCode(code_classes)
    net = cgan.Generator(channels, image_size, code_classes, latent_dim - 1, width, widths, conditioning=CODE_INPUTS[code_input])
    return CodedGenerator(net, code)


def discriminator(channels: int, image_size: int, width: int = 64, widths: Sequence[int] | None = None, norm: str = "batch",
                  code_classes: int | None = None, latent_code: str = "infogan", code_hidden: int = 128) -> nn.Module:
    """configs/model/dcgan.yaml's discriminator: the DCGAN discriminator, or with `code_classes`
    the one `latent_code` needs (infogan: with Q; clusters: the projection D on the code)."""
    if code_classes is None:
        return dcgan.Discriminator(channels, image_size, width, widths, norm)
    try:
        make = DISCRIMINATORS[latent_code]
    except KeyError:
        raise ValueError(f"latent_code must be one of {tuple(DISCRIMINATORS)}, got {latent_code!r}") from None
    return make(channels, image_size, code_classes, width, widths, norm, code_hidden)
