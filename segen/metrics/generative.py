"""Scoring a generator: which real images, which fakes, and every score from one feature pass.

Shared by `segen eval` (segen/evaluation/generator.py) and the `val/fid` training callback.

- Real side: `n_real` images of a split, the first `n_real` of a fixed (seed 0) permutation, so
  the subset is the same every run, whatever `seed=` is, and its features can be cached.
- Fake side: `n_fake` images from the task's sampler (the EMA generator when there is one,
  `GANTask.sample`), noise drawn from a generator seeded with `seed`; a cgan gets balanced
  labels `0, 1, ..., K-1, 0, 1, ...`. Generated batch by batch: only features are kept.
"""

from __future__ import annotations

import torch

from segen.metrics.features import FeatureNet, extract
from segen.metrics.scores import (
    class_consistency,
    frechet_distance,
    inception_score,
    kernel_distance,
)
from segen.viz import to_uint8

REAL_SUBSET = "first n_real of a seed-0 permutation of the split"
IS_SPLITS = 10
KID_SUBSETS = 100


def real_subset(images: torch.Tensor, n_real: int) -> torch.Tensor:
    """`n_real` images of `images` (all of them, in order, when there are no more)."""
    if n_real >= len(images):
        return images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[:n_real].sort().values]


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
) -> dict[str, float]:
    """Generate `n_fake` images and score them against `real` features.

    Keys: `fid`, `kid/mean`, `kid/std`, `is/mean`, `is/std`, `class_consistency` and
    `class_consistency/<class>` (cgan; needs `net` to be a classifier over the same classes).
    """
    labels = fake_labels(n_fake, task.num_classes)
    features, logits = extract(net, generated_batches(task, n_fake, seed, batch_size, labels), device)
    scores: dict[str, float] = {}
    if fid:
        scores["fid"] = frechet_distance(real, features)
    if kid:
        scores["kid/mean"], scores["kid/std"] = kernel_distance(real, features, KID_SUBSETS, seed=seed)
    if inception:
        scores["is/mean"], scores["is/std"] = inception_score(logits, IS_SPLITS, seed=seed)
    if consistency and labels is not None:
        overall, per_class = class_consistency(logits, labels, logits.shape[1])
        scores["class_consistency"] = overall
        names = class_names or [str(i) for i in range(len(per_class))]
        scores.update({f"class_consistency/{names[i]}": v for i, v in enumerate(per_class) if i < task.num_classes})
    return scores
