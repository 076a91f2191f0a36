"""A frozen first layer that whitens the image's small patches (`model.net.whiten=true`).

From airbench94 (Jordan 2024, arXiv 2404.00498; itself after tysam-code's hlb-CIFAR10): the
first conv's filters are the eigenvectors of the training images' 2x2-patch second-moment
matrix, each scaled by 1/sqrt(eigenvalue + eps), and their negatives (so that the GELU after
it keeps both signs): 2 x C x 2 x 2 channels whose outputs have unit variance and no
correlation. The net then starts from decorrelated inputs instead of learning that itself;
airbench finds this worth about a third of its epochs. The filters are computed once, from
the training data, when training starts (`fit_whitening`), and never trained; the bias is
trained for the first `bias_epochs` epochs, as airbench does, then frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 5e-4  # airbench's: keeps the near-zero eigenvalues' directions from blowing up


def patch_moments(images: torch.Tensor, kernel: int, chunk: int = 1000) -> torch.Tensor:
    """The uncentered second-moment matrix `(D, D)`, D = C * k * k, of every k x k patch (stride 1,
    no padding) of float `images (N, C, H, W)`, accumulated in float64 a chunk at a time (all
    patches of 5,000 CIFAR images at once would take 230 MB)."""
    total = torch.zeros(images.shape[1] * kernel * kernel, images.shape[1] * kernel * kernel, dtype=torch.float64)
    count = 0
    for part in images.split(chunk):
        # (n, C*k*k, L): columns are patches, rows ordered (channel, row, column) like a conv weight.
        cols = F.unfold(part.double(), kernel).transpose(1, 2).reshape(-1, total.shape[0])
        total += cols.T @ cols
        count += len(cols)
    return total / count


def whitening_filters(images: torch.Tensor, kernel: int, eps: float = EPS) -> torch.Tensor:
    """Conv weights `(2D, C, k, k)`: the patch eigenvectors (largest eigenvalue first) divided by
    sqrt(eigenvalue + eps), then the same filters negated."""
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_moments(images, kernel))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)).T
    filters = filters.reshape(-1, images.shape[1], kernel, kernel).float()
    return torch.cat([filters, -filters])


class PatchWhitening(nn.Module):
    """conv k x k (no padding) with frozen whitening filters, fitted by `fit(images)`."""

    def __init__(self, in_channels: int, kernel: int = 2, bias_epochs: int = 3):
        super().__init__()
        self.kernel, self.bias_epochs = kernel, bias_epochs
        self.out_channels = 2 * in_channels * kernel * kernel
        # A buffer, not a parameter: no optimizer ever sees it. Saved, so a resumed or
        # evaluated net keeps the filters of the data it was trained on.
        self.register_buffer("weight", torch.zeros(self.out_channels, in_channels, kernel, kernel))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from float (normalized) training images `(N, C, H, W)`."""
        self.weight.copy_(whitening_filters(images.float().cpu(), self.kernel).to(self.weight.device))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def whitening_layers(net: nn.Module) -> list[PatchWhitening]:
    return [m for m in net.modules() if isinstance(m, PatchWhitening)]


def fit_whitening(net: nn.Module, images) -> bool:
    """Fit every not-yet-fitted whitening layer of `net` from `images()` (a callable, so that no
    data is read for nets without one, or when a resumed checkpoint brought its filters along).
    Returns whether anything was fitted."""
    layers = [layer for layer in whitening_layers(net) if not bool(layer.fitted)]
    if not layers:
        return False
    data = images()
    for layer in layers:
        layer.fit(data)
    return True


def drop_frozen_bias_grads(net: nn.Module, epoch: int) -> None:
    """From epoch `bias_epochs` on, the whitening biases get no update: their gradient is dropped
    before the optimizer step (SGD then skips them, as airbench's requires_grad=False does),
    which, unlike switching requires_grad mid-run, DDP also accepts."""
    for layer in whitening_layers(net):
        if epoch >= layer.bias_epochs:
            layer.bias.grad = None
