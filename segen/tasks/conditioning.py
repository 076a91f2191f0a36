"""What a GAN's images carry to the discriminator, and what else D's answers are scored for.

The adversarial step (segen/tasks/gan.py) is one for every GAN; two small pieces say how it is
conditioned:
- a label source: the labels real images carry and the labels G is given and D sees with the
  fakes. `NoLabels` (dcgan); `DataLabels`, the data's classes (cgan: fakes take the batch's own
  labels, so they follow the data's class frequencies); `ClusterLabels` (segen/tasks/clusters.py),
  the images' k-means clusters standing in for classes (self-conditioning).
- a term: what D is asked besides real or fake. `AdversarialOnly`; `DualProjection` (Han et al.
  2021, P2GAN): a projection D's class embeddings also classify real images (cross-entropy)
  and G is rewarded when D puts its fakes in their class, an AC-GAN-style term that needs no
  extra weights; InfoGAN's Q (segen/tasks/infogan.py).
Each term returns D's logits and its losses by name (unweighted; logged as train/d_<name>_loss
and train/g_<name>_loss); the step adds `weight` x each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segen.errors import ConfigError

Labels = torch.Tensor | None


def critic(discriminator: nn.Module, images: torch.Tensor, labels: Labels) -> torch.Tensor:
    """D's real/fake logits, conditioned on `labels` when the images carry them."""
    return discriminator(images) if labels is None else discriminator(images, labels)


class NoLabels(nn.Module):
    """dcgan: no image carries a label."""

    def real(self, images: torch.Tensor, batch_labels: torch.Tensor) -> Labels:
        return None

    def fake(self, generator: nn.Module, z: torch.Tensor, batch_labels: torch.Tensor) -> tuple[Labels, Labels]:
        """(the labels G is given, the labels D sees with the fakes)."""
        return None, None

    def on_fit_start(self, task) -> None:
        pass

    def on_train_epoch_end(self, task) -> None:
        pass


class DataLabels(NoLabels):
    """cgan: real images carry their class; each fake the class of the real image beside it."""

    def real(self, images: torch.Tensor, batch_labels: torch.Tensor) -> Labels:
        return batch_labels

    def fake(self, generator: nn.Module, z: torch.Tensor, batch_labels: torch.Tensor) -> tuple[Labels, Labels]:
        return batch_labels, batch_labels


class AdversarialOnly:
    """D says real or fake, nothing else."""

    name, weight = "", 0.0

    def real(self, discriminator: nn.Module, images: torch.Tensor, labels: Labels) -> tuple[torch.Tensor, dict]:
        return critic(discriminator, images, labels), {}

    def fake(self, discriminator: nn.Module, images: torch.Tensor, labels: Labels, z: torch.Tensor, for_g: bool) -> tuple[torch.Tensor, dict]:
        """D on fakes, in D's step (`for_g=False`, the fakes detached) or G's."""
        return critic(discriminator, images, labels), {}


class DualProjection(AdversarialOnly):
    """A projection D's class logits as a classifier: D learns it on real images only (the
    fakes' labels are G's claims), G is rewarded when D puts its fakes in their class."""

    def __init__(self, weight: float, name: str):
        self.weight, self.name = weight, name

    def real(self, discriminator, images, labels):
        logits, class_logits = discriminator.forward_with_class_logits(images, labels)
        return logits, {self.name: F.cross_entropy(class_logits, labels)}

    def fake(self, discriminator, images, labels, z, for_g):
        if not for_g:
            return critic(discriminator, images, labels), {}
        return self.real(discriminator, images, labels)


def class_term(discriminator: nn.Module, weight: float, name: str, key: str) -> AdversarialOnly:
    """`DualProjection` at `weight` (the config's `model.<key>`) when it is > 0, on a projection D."""
    if weight < 0:
        raise ConfigError(f"model.{key} must be >= 0, got {weight}")
    if weight == 0:
        return AdversarialOnly()
    if not hasattr(discriminator, "forward_with_class_logits"):
        raise ConfigError(f"model.{key} > 0 needs a class-conditional discriminator; use model=cgan or set it to 0")
    if getattr(discriminator, "conditioning", None) != "projection":
        raise ConfigError(
            f"model.{key} > 0 needs model.discriminator.conditioning=projection (its class embeddings "
            f"are the classifier); add model.{key}=0 to use another conditioning"
        )
    return DualProjection(weight, name)
