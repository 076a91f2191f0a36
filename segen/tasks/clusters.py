"""The image clusters a self-conditioned GAN uses as its latent code (Liu et al. 2020).

Self-conditioning ("Diverse Image Generation via Self-Conditioned GANs", CVPR 2020) labels
every training image with its k-means cluster and trains a conditional GAN on those labels:
the generator draws a cluster, then an image of that cluster. That is a discrete choice of
mode, where a continuous noise alone has to blend modes (a 4 into a 9) somewhere in between.

`ImageClusters` holds the clustering and labels any batch with it:
- first in pixel space (the images as D sees them), fitted when training starts;
- then, optionally, on the discriminator's features (`refit`), as the paper reclusters during
  training: a frozen snapshot of D's feature layers becomes the encoder, so real images keep
  the same code between refits. Each refit's clusters are matched to the previous ones by
  overlap (the Hungarian method), so code k keeps meaning what it meant for the generator.
Everything is kept in the task's state_dict, so a resumed run continues with the same clusters.

`ClusterLabels` makes the clusters a label source of the conditional GAN (segen/tasks/conditioning.py):
real images carry their cluster, fakes the code G drew from its noise (segen/models/latent_code.py,
drawn as often as its cluster holds training images), and D is cgan's projection discriminator
with the dual-projection term on the clusters: the cgan recipe trained on cluster labels.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from segen.console import note
from segen.errors import ConfigError
from segen.tasks.conditioning import AdversarialOnly, NoLabels, class_term
from segen.tasks.kmeans import kmeans, nearest

PIXELS, ENCODER = 0, 1  # the feature space the centroids live in
BATCH = 512  # images per encoder pass while refitting
MAX_CLUSTER_IMAGES = 20_000  # images that fit the clusters (a seeded subset beyond it)


class ImageClusters(nn.Module):
    """k-means clusters of images `(N, C, S, S)` in [-1, 1]; `assign(images)` -> codes `(N,)`."""

    def __init__(self, k: int, image_shape: tuple[int, int, int], encoder: nn.Module | None = None):
        super().__init__()
        self.k = k
        self.register_buffer("pixel_centroids", torch.zeros(k, int(torch.tensor(image_shape).prod())))
        self.register_buffer("space", torch.tensor(PIXELS))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("refits", torch.zeros((), dtype=torch.long))  # how many refits are done
        self.encoder = None
        if encoder is not None:  # a frozen copy, overwritten with D's weights at each refit
            self.encoder = copy.deepcopy(encoder).requires_grad_(False).eval()
            with torch.no_grad():
                dim = self.encoder(torch.zeros(1, *image_shape)).numel()
            self.register_buffer("encoder_centroids", torch.zeros(k, dim))

    def train(self, mode: bool = True):
        """The encoder stays in eval mode: its BatchNorm statistics and spectral norms are frozen."""
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(N, D)`: pixels, or the encoder's feature map flattened to unit length."""
        if self.space == ENCODER:
            return F.normalize(self.encoder(images).flatten(1), dim=1)
        return images.flatten(1)

    def centroids(self) -> torch.Tensor:
        return self.encoder_centroids if self.space == ENCODER else self.pixel_centroids

    @torch.no_grad()
    def assign(self, images: torch.Tensor) -> torch.Tensor:
        """Each image's code: the index of its nearest centroid (fp32 also inside a bf16 training
        step, like the features the centroids were fitted on)."""
        with torch.autocast(images.device.type, enabled=False):
            out = [nearest(self.features(chunk.float()), self.centroids()) for chunk in images.split(BATCH)]
        return torch.cat(out)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, fit_on: int, seed: int = 0) -> torch.Tensor:
        """k-means in pixel space on a seeded subset of `fit_on` images; returns the cluster sizes `(k,)` over all."""
        subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:fit_on]
        self.pixel_centroids.copy_(kmeans(images[subset].flatten(1), self.k, seed=seed))
        self.space.fill_(PIXELS)
        self.fitted.fill_(True)
        return torch.bincount(self.assign(images), minlength=self.k)

    @torch.no_grad()
    def refit(self, features_of: nn.Module, images: torch.Tensor, fit_on: int, seed: int = 0) -> tuple[torch.Tensor, float]:
        """Recluster on `features_of`'s features (D's feature layers, copied into the encoder).

        Returns the new cluster sizes `(k,)` and the share of images whose code changed.
        """
        if self.encoder is None:
            raise ValueError("refit needs an encoder (ImageClusters(..., encoder=D's feature layers))")
        before = self.assign(images)
        self.encoder.load_state_dict(features_of.state_dict())
        self.space.fill_(ENCODER)
        features = torch.cat([self.features(chunk) for chunk in images.split(BATCH)])
        subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:fit_on]
        centroids = kmeans(features[subset].cpu(), self.k, seed=seed).to(features.device)
        after = nearest(features, centroids)
        order = match_clusters(before, after, self.k)  # new cluster order[j] takes old code j
        self.encoder_centroids.copy_(centroids[order])
        self.refits += 1
        codes = self.assign(images)
        return torch.bincount(codes, minlength=self.k), float((codes != before).float().mean())


def match_clusters(before: torch.Tensor, after: torch.Tensor, k: int) -> torch.Tensor:
    """`order` `(k,)` with new cluster order[j] given old code j, maximizing the images that keep their code."""
    from scipy.optimize import linear_sum_assignment

    overlap = torch.zeros(k, k, dtype=torch.long)
    overlap.index_put_((before.cpu(), after.cpu()), torch.ones(len(before), dtype=torch.long), accumulate=True)
    rows, cols = linear_sum_assignment(overlap.numpy(), maximize=True)
    return torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]


class ClusterLabels(NoLabels):
    """Self-conditioning's label source: clusters fitted on the training images' pixels when
    training starts, refitted on D's features at each `recluster_at` fraction of the run."""

    def __init__(self, k: int, image_shape: tuple[int, int, int], features: nn.Module, recluster_at: list[float]):
        super().__init__()
        self.recluster_at = recluster_at
        self.clusters = ImageClusters(k, image_shape, encoder=features if recluster_at else None)

    def real(self, images: torch.Tensor, batch_labels: torch.Tensor) -> torch.Tensor:
        return self.clusters.assign(images)

    def fake(self, generator: nn.Module, z: torch.Tensor, batch_labels: torch.Tensor):
        return None, generator.code(z)  # G reads its code from the noise; D sees it

    def on_fit_start(self, task) -> None:
        if self.clusters.fitted:  # a resumed run has its clusters already
            return
        images = cluster_images(task)
        if len(images) < self.clusters.k:
            raise ConfigError(
                f"model.latent_code_classes={self.clusters.k} clusters need at least as many training images, but the "
                f"training split has {len(images)}; lower model.latent_code_classes or train on more images"
            )
        sizes = self._follow(task, self.clusters.fit(images, MAX_CLUSTER_IMAGES))
        say(task, f"Self-conditioning: {self.clusters.k} k-means clusters of {int(sizes.sum())} training images (pixels), sizes {sizes.tolist()}")

    def on_train_epoch_end(self, task) -> None:
        """On every rank (they must keep the same clusters): refit on D's features at each
        `recluster_at` fraction of the run, at the first epoch end past it; the run's length is
        `trainer.max_epochs` or `trainer.max_steps`, whichever ends it first."""
        done = int(self.clusters.refits)
        if done >= len(self.recluster_at):
            return
        trainer, share = task.trainer, self.recluster_at[done]
        by_epochs = trainer.max_epochs is not None and trainer.max_epochs > 0 and task.current_epoch + 1 >= round(share * trainer.max_epochs)
        by_steps = trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= round(share * trainer.max_steps)
        if not (by_epochs or by_steps):
            return
        sizes, changed = self.clusters.refit(task.discriminator.features, cluster_images(task), MAX_CLUSTER_IMAGES)
        sizes = self._follow(task, sizes)
        say(task, f"Self-conditioning: reclustered on D's features after epoch {task.current_epoch}: "
                  f"{changed:.1%} of the images changed code, sizes {sizes.tolist()}")

    def _follow(self, task, sizes: torch.Tensor) -> torch.Tensor:
        """Every rank takes rank 0's clusters; G (and its average) draws each code as often as its
        cluster holds training images. Returns the sizes (rank 0's)."""
        state, sizes = task.trainer.strategy.broadcast((self.clusters.state_dict(), sizes.cpu()), src=0)
        self.clusters.load_state_dict(state)
        for net in {id(task.generator): task.generator, id(task.sampler): task.sampler}.values():
            net.noise_code.set_prior(sizes.float() / sizes.sum())
        return sizes


def cluster_images(task) -> torch.Tensor:
    """The training images as D sees them: in [-1, 1], at G's size, on the task's device."""
    x = task.trainer.datamodule.split_images("train").to(task.device).float() / 127.5 - 1
    size = task.generator.image_size
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def say(task, text: str) -> None:
    if task.trainer.is_global_zero:
        note(text)


def self_conditioning(generator: nn.Module, discriminator: nn.Module, k: int, weight: float, recluster_at) -> tuple[ClusterLabels, AdversarialOnly]:
    """The label source and term of self-conditioning on `k` clusters; ConfigError unless the nets fit it."""
    if getattr(generator, "code_classes", None) != k or getattr(discriminator, "num_classes", None) != k:
        raise ConfigError(
            f"model.latent_code=clusters with model.latent_code_classes={k} needs a generator with a {k}-value code and a "
            f"discriminator conditioned on {k} clusters (configs/model/dcgan.yaml ties them)"
        )
    term = class_term(discriminator, weight, "code", "code_loss_weight")
    shape = (generator.channels, generator.image_size, generator.image_size)
    return ClusterLabels(k, shape, discriminator.features, recluster_at), term
