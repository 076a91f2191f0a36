"""FID, KID, IS, class consistency and the confident share from features extracted once.

The formulas are torchmetrics' own (`FrechetInceptionDistance`, `KernelInceptionDistance`,
`InceptionScore`, `MulticlassAccuracy`). Each metric is given a pass-through "feature extractor"
(torchmetrics' custom-extractor support), so the features of a batch are computed once by
segen/metrics/features.py and shared by all metrics, and cached real features can be fed in
without running any network.

Random subsets (KID) and splits (IS) are drawn from a generator seeded with `seed`, so a score
is a function of its inputs; the global RNG is left as it was.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Precomputed(nn.Module):
    """A torchmetrics feature extractor whose inputs already are the features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # torchmetrics reads it instead of probing with a dummy image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between feature sets `(N, d)` and `(M, d)`: torchmetrics' formula, in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least 2 real and 2 fake feature vectors")
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]))
    # float64 features make torchmetrics return a float64 result; its sums are float64 anyway.
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_subset_size(n_real: int, n_fake: int, subset_size: int = 1000) -> int:
    """torchmetrics' default subset of 1000, or all samples of the smaller side when fewer."""
    return min(subset_size, n_real, n_fake)


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets): cubic polynomial kernel MMD^2, unbiased."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = kid_subset_size(len(real), len(fake), subset_size)
    if size < 2:
        raise ValueError("KID needs at least 2 real and 2 fake feature vectors")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS (mean, std over `splits` chunks) from unnormalized logits `(N, K)`."""
    from torchmetrics.image.inception import InceptionScore

    splits = max(1, min(splits, len(logits)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=splits)
    metric.update(logits.double())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # std of one split
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), (float(std) if splits > 1 else 0.0)


def class_consistency(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """The share of images whose predicted class is the one they were generated for (overall,
    and per class): the classifier's accuracy with the requested labels as ground truth."""
    from torchmetrics.classification import MulticlassAccuracy

    overall = MulticlassAccuracy(num_classes=num_classes, average="micro")
    per_class = MulticlassAccuracy(num_classes=num_classes, average=None)
    overall.update(logits, labels)
    per_class.update(logits, labels)
    return float(overall.compute()), [float(v) for v in per_class.compute()]


def confident_share(logits: torch.Tensor, threshold: float) -> float:
    """The share of images whose most likely class has softmax probability above `threshold`:
    how often a classifier of the data would commit to one class for them."""
    if len(logits) == 0:
        raise ValueError("the confident share needs at least one image")
    top = torch.softmax(logits.double(), dim=1).amax(dim=1)
    return float((top > threshold).double().mean())
