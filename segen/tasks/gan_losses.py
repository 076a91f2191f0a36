"""The adversarial losses of the GAN tasks (segen/tasks/gan.py, segen/tasks/pix2pix.py): `model.loss`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge", "lsgan")


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's loss on real and fake logits; summed over both halves (as in pytorch/examples/dcgan).
    In fp32 under bf16 autocast: its means and softplus are not on autocast's fp32 list."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":  # Lim & Ye 2017; used by SNGAN and BigGAN
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "lsgan":  # Mao et al. 2017: least squares to the targets 1 (real) and 0 (fake)
        return (real - 1).pow(2).mean() + fake.pow(2).mean()
    # BCE written with softplus: -log sigmoid(r) - log(1 - sigmoid(f)), stable for any logit.
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """G's loss; "bce" is the non-saturating -log D(G(z)) of Goodfellow et al. 2014, sec. 3."""
    fake = fake.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return (fake - 1).pow(2).mean()
    return F.softplus(-fake).mean()
