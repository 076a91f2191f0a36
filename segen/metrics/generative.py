"""Scoring a generator: which real images, which fakes, and every score from one feature pass.

Shared by `segen eval` (segen/evaluation/generator.py) and the `val/fid` training callback.

- Real side: `n_real` images of a split, the first `n_real` of a fixed (seed 0) permutation, so
  the subset is the same every run, whatever `seed=` is, and its features can be cached.
- Fake side: `n_fake` images from the task's sampler (the EMA generator when there is one,
  `GANTask.sample`), noise drawn from a generator seeded with `seed`; a cgan gets balanced
  labels `0, 1, ..., K-1, 0, 1, ...`. Generated batch by batch: only features are kept.
- The floor: the same scores between two disjoint halves of the real set (a seed-0 split), so
  a generator's FID reads against what real images of this size score against each other,
  and its confident share against the classifier's on real images.
"""

from __future__ import annotations

import torch

from segen.metrics.features import FeatureNet, extract
from segen.metrics.scores import (
    class_consistency,
    confident_share,
    frechet_distance,
    inception_score,
    kernel_distance,
)
from segen.viz import to_uint8

REAL_SUBSET = "first n_real of a seed-0 permutation of the split"
REAL_HALVES = "the real set split in two disjoint halves of n_real // 2 by a seed-0 permutation"
IS_SPLITS = 10
KID_SUBSETS = 100


def real_subset(images: torch.Tensor, n_real: int) -> torch.Tensor:
    """`n_real` images of `images` (all of them, in order, when there are no more)."""
    if n_real >= len(images):
        return images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[:n_real].sort().values]


def real_halves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets of `n // 2` each, from a fixed (seed 0) permutation of 0..n-1."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    half = n // 2
    return order[:half].sort().values, order[half : 2 * half].sort().values


def score_real(
    features: torch.Tensor,
    logits: torch.Tensor | None = None,
    seed: int = 0,
    fid: bool = True,
    kid: bool = True,
    confidence_threshold: float | None = None,
    inception: bool = False,
) -> dict[str, float]:
    """The real side's own scores: `fid/floor` and `kid/floor/{mean,std}` between the two halves
    of `real_halves` (needs at least 4 images); with `logits`, `confident/real`, the confident
    share on the real images (with `confidence_threshold`), and `is/real/{mean,std}`, their
    Inception Score (with `inception`)."""
    scores: dict[str, float] = {}
    if fid or kid:
        a, b = real_halves(len(features))
        if len(a) < 2:
            raise ValueError("the FID/KID floor needs at least 4 real images (two halves of 2)")
        if fid:
            scores["fid/floor"] = frechet_distance(features[a], features[b])
        if kid:
            scores["kid/floor/mean"], scores["kid/floor/std"] = kernel_distance(features[a], features[b], KID_SUBSETS, seed=seed)
    if confidence_threshold is not None and logits is not None:
        scores["confident/real"] = confident_share(logits, confidence_threshold)
    if inception and logits is not None:
        scores["is/real/mean"], scores["is/real/std"] = inception_score(logits, IS_SPLITS, seed=seed)
    return scores


def fake_labels(n: int, num_classes: int | None) -> torch.Tensor | None:
    """Balanced class labels for a conditional generator (None for an unconditional one)."""
    return None if num_classes is None else torch.arange(n) % num_classes


def generated_batches(task, n: int, seed: int, batch_size: int, labels: torch.Tensor | None = None):
    """uint8 images from `task.sample`, `batch_size` at a time, for noise seeded with `seed`."""
    noise = torch.randn(n, task.latent_dim, generator=torch.Generator().manual_seed(int(seed)))
    for start in range(0, n, batch_size):
        y = labels[start : start + batch_size] if labels is not None else None
        yield to_uint8(task.sample(noise[start : start + batch_size], y, batch_size=batch_size))


def score_generator(
    task,
    net: FeatureNet,
    real: torch.Tensor,
    n_fake: int,
    seed: int = 0,
    batch_size: int = 250,
    fid: bool = True,
    kid: bool = True,
    inception: bool = False,
    consistency: bool = False,
    class_names: list[str] | None = None,
    device: torch.device | str = "cpu",
    confidence_threshold: float | None = None,
) -> dict[str, float]:
    """Generate `n_fake` images and score them against `real` features.

    Keys: `fid`, `kid/mean`, `kid/std`, `is/mean`, `is/std`, `confident` (the share of images
    whose top class probability exceeds `confidence_threshold`; for a classifier `net`),
    `class_consistency` and `class_consistency/<class>` (cgan; needs `net` to be a classifier
    over the same classes).
    """
    labels = fake_labels(n_fake, task.num_classes)
    features, logits = extract(net, generated_batches(task, n_fake, seed, batch_size, labels), device)
    scores: dict[str, float] = {}
    if fid:
        scores["fid"] = frechet_distance(real, features)
    if kid:
        scores["kid/mean"], scores["kid/std"] = kernel_distance(real, features, KID_SUBSETS, seed=seed)
    if confidence_threshold is not None:
        scores["confident"] = confident_share(logits, confidence_threshold)
    if inception:
        scores["is/mean"], scores["is/std"] = inception_score(logits, IS_SPLITS, seed=seed)
    if consistency and labels is not None:
        overall, per_class = class_consistency(logits, labels, logits.shape[1])
        scores["class_consistency"] = overall
        names = class_names or [str(i) for i in range(len(per_class))]
        scores.update({f"class_consistency/{names[i]}": v for i, v in enumerate(per_class) if i < task.num_classes})
    return scores
