"""k-means on image tensors: the clusters a self-conditioned GAN uses as its latent code.

Self-conditioning (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs")
labels every training image with its k-means cluster and trains a conditional GAN on those
labels, so the generator draws a cluster first and then an image of that cluster: a discrete
choice of mode, where a continuous noise alone blends modes. Small enough to write here (torch
only, a few thousand to tens of thousands of images); scikit-learn is not a dependency.
"""

from __future__ import annotations

import torch


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 100, restarts: int = 3) -> torch.Tensor:
    """Centroids `(k, D)` of the rows of `x` `(N, D)`: k-means++ seeding then Lloyd's iterations,
    the best of `restarts` runs by inertia (sum of squared distances). Deterministic for a seed."""
    if len(x) < k:
        raise ValueError(f"k-means with {k} clusters needs at least {k} images, got {len(x)}")
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in range(restarts):
        centroids = _seed_plus_plus(x, k, gen)
        for _ in range(iterations):
            assign = nearest(x, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k)
            # An emptied cluster keeps its centroid (k-means++ makes that rare).
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
            if torch.equal(moved, centroids):
                break
            centroids = moved
        inertia = float(torch.cdist(x, centroids).min(dim=1).values.square().sum())
        if inertia < best_inertia:
            best, best_inertia = centroids, inertia
    return best


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """`(N,)` long: the index of the centroid nearest to each row of `x`."""
    return torch.cdist(x.float(), centroids.to(x.device, torch.float32)).argmin(dim=1)


def _seed_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ (Arthur & Vassilvitskii 2007): each next centroid drawn with probability
    proportional to its squared distance from the centroids so far."""
    chosen = [int(torch.randint(len(x), (1,), generator=gen))]
    dist = torch.cdist(x, x[chosen]).squeeze(1).square()
    for _ in range(k - 1):
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        index = int(torch.multinomial(weights, 1, generator=gen))
        chosen.append(index)
        dist = torch.minimum(dist, torch.cdist(x, x[index : index + 1]).squeeze(1).square())
    return x[chosen].clone()
