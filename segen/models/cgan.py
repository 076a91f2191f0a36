"""`model=cgan`: class-conditional DCGAN nets, built from segen/models/dcgan.py's blocks.

Generator conditioning (`conditioning=`):
- "embed": a learned label embedding is joined to z (Mirza & Osindero 2014, with an embedding
  in place of the one-hot vector), and the DCGAN generator runs on the longer code.
- "cbn": conditional BatchNorm, every BatchNorm's scale and shift are looked up per class
  (de Vries et al. 2017; as in SNGAN/BigGAN), so the label acts at every resolution.
- "onehot": the label's one-hot vector joined to z (Mirza & Osindero 2014 as written; InfoGAN's
  way of feeding its code, segen/models/latent_code.py).

Discriminator conditioning (`conditioning=`; `norm=` "batch" or "spectral" as in dcgan.py):
- "projection": logit = head(phi(x)) + <embed(y), sum-pooled phi(x)> (Miyato & Koyama 2018),
  so D scores how well the image's features match the class. The inner products with every
  class's embedding are also class logits (`class_logits`), which the task can train as a
  classifier: "dual projection" (Han et al. 2021), see `model.class_loss_weight`.
- "concat": a label embedding, broadcast over the image, joined to the input channels.

The labels need not be classes of the data: a self-conditioned dcgan trains these nets on the
images' k-means clusters (segen/tasks/clusters.py), with the code read from the noise.

`num_classes` comes from the data (configs/model/cgan.yaml has `???` for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from segen.models import dcgan
from segen.models.dcgan import ConditionalBatchNorm2d

G_CONDITIONINGS = ("embed", "cbn", "onehot")


def projection(features: torch.Tensor, embedding: nn.Embedding, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection discriminator's class term (Miyato & Koyama 2018): <embed(label), sum-pooled features>.

    Returns (the term for each image's own label `(N,)`, the terms for every label `(N, K)`, which
    are also class logits).
    """
    logits = features.sum(dim=(2, 3)) @ embedding.weight.t()
    return logits.gather(1, labels[:, None]).squeeze(1), logits


class Generator(nn.Module):
    """(z `(N, latent_dim)`, labels `(N,)` long) -> images `(N, channels, size, size)` in [-1, 1]."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        latent_dim: int = 100,
        width: int = 64,
        widths: Sequence[int] | None = None,
        conditioning: str = "embed",
        embed_dim: int = 50,
    ):
        super().__init__()
        if conditioning not in G_CONDITIONINGS:
            raise ValueError(f"generator conditioning must be one of {G_CONDITIONINGS}, got {conditioning!r}")
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        self.num_classes, self.conditioning = num_classes, conditioning
        if conditioning == "embed":
            self.embed = nn.Embedding(num_classes, embed_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1.0)  # on the scale of z ~ N(0, 1)
            self.net = dcgan.Generator(channels, image_size, latent_dim + embed_dim, width, widths)
        elif conditioning == "onehot":
            self.net = dcgan.Generator(channels, image_size, latent_dim + num_classes, width, widths)
        else:
            norm = partial(ConditionalBatchNorm2d, num_classes=num_classes)
            self.net = dcgan.Generator(channels, image_size, latent_dim, width, widths, norm=norm)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "embed":
            return self.net(torch.cat([z, self.embed(labels)], dim=1))
        if self.conditioning == "onehot":  # written with a comparison: it exports to ONNX as is
            one_hot = labels[:, None] == torch.arange(self.num_classes, device=labels.device)
            return self.net(torch.cat([z.flatten(1), one_hot.to(z.dtype)], dim=1))
        return self.net.run_layers(z, labels)


class Discriminator(nn.Module):
    """(images, labels `(N,)` long) -> one logit per image `(N,)`."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        width: int = 64,
        widths: Sequence[int] | None = None,
        conditioning: str = "projection",
        embed_dim: int = 8,
        norm: str = "batch",
    ):
        super().__init__()
        if conditioning not in ("projection", "concat"):
            raise ValueError(f"discriminator conditioning must be 'projection' or 'concat', got {conditioning!r}")
        self.channels, self.image_size = channels, image_size
        self.num_classes, self.conditioning = num_classes, conditioning
        if conditioning == "projection":
            self.net = dcgan.Discriminator(channels, image_size, width, widths, norm)
            self.embed = nn.Embedding(num_classes, self.net.feature_dim)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
            if norm == "spectral":  # the class embedding is a weight of D too (as in SNGAN's projection D)
                dcgan.spectral_normalize(self.embed)
        else:
            self.net = dcgan.Discriminator(channels + embed_dim, image_size, width, widths, norm)
            self.embed = nn.Embedding(num_classes, embed_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1.0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "concat":
            maps = self.embed(labels)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            return self.net(torch.cat([x, maps], dim=1))
        return self.forward_with_class_logits(x, labels)[0]

    def forward_with_class_logits(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit `(N,)`, class logits `(N, num_classes)`) from one pass; projection D only.

        Class k's logit is <embed(k), sum-pooled phi(x)>, the projection term D would add if
        the image were labelled k; the real/fake logit uses the given label's.
        """
        if self.conditioning != "projection":
            raise ValueError("class logits need conditioning='projection'")
        h = self.net.features(x)
        term, class_logits = projection(h, self.embed, labels)
        return self.net.head(h).flatten() + term, class_logits

    @property
    def features(self) -> nn.Module:
        """The feature layers the projection reads (phi); what self-conditioning reclusters on."""
        return self.net.features
