"""InfoGAN's categorical code (Chen et al. 2016): `model=dcgan model.latent_code_classes=K`.

The generator's noise carries a code (segen/models/latent_code.py), drawn uniformly and free for
G to use; D's head Q learns to read it back from the fakes. `code_loss_weight` x Q's
cross-entropy is added to D's loss (training D's features and Q) and to G's (G keeps the code
recognizable). Real images carry no code, and D sees no labels: unsupervised, the code need not
match any label.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from segen.errors import ConfigError
from segen.tasks.conditioning import AdversarialOnly, NoLabels


class InfoGANCode(AdversarialOnly):
    """Q's cross-entropy on the fakes' codes, in D's step and G's."""

    name = "code"

    def __init__(self, generator: nn.Module, weight: float):
        self.generator, self.weight = generator, weight  # a reference: the task holds (and saves) G

    def fake(self, discriminator, images, labels, z, for_g):
        logits, code_logits = discriminator.forward_with_code_logits(images)
        return logits, {self.name: F.cross_entropy(code_logits, self.generator.code(z))}


def infogan(generator: nn.Module, discriminator: nn.Module, classes: int, weight: float, recluster_at) -> tuple[NoLabels, AdversarialOnly]:
    """The label source and term of InfoGAN's code; ConfigError unless the nets have it."""
    if recluster_at:
        raise ConfigError("model.recluster_at needs self-conditioning: model.latent_code=clusters and model.latent_code_classes=K")
    if not hasattr(discriminator, "forward_with_code_logits") or getattr(discriminator, "code_classes", None) != classes:
        raise ConfigError(
            f"model.latent_code=infogan with model.latent_code_classes={classes} needs a discriminator with Q's head for "
            f"{classes} code values (segen.models.latent_code.QDiscriminator; configs/model/dcgan.yaml ties them)"
        )
    return NoLabels(), (InfoGANCode(generator, weight) if weight > 0 else AdversarialOnly())
