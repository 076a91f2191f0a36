"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentation on every image D sees.

A discriminator trained on a few thousand images for many epochs memorizes them; its verdicts
then stop telling the generator anything about shape. DiffAugment shifts, cuts out or
recolors every image D sees (real and generated, in D's step and in G's step) with fresh random
parameters each time. Because the operations are differentiable, G's gradient flows back
through them, and because fakes are augmented too, G is never pushed to produce augmented
images (no "leaking"): only the original distribution matches the augmented real one.

The policies are the paper's, on images in [-1, 1] (segen's GAN range), from the authors'
`DiffAugment_pytorch.py` (https://github.com/mit-han-lab/data-efficient-gans):
- `translation`: shift by up to 1/8 of the side in x and y, the uncovered border filled with 0;
- `cutout`: zero a square of half the side at a random centre;
- `color`: random brightness (+-0.5), saturation (x0 to x2) and contrast (x0.5 to x1.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str | Sequence[str] | None) -> tuple[str, ...]:
    """["translation", "cutout"] or "translation,cutout" -> ("translation", "cutout"); None, "" or [] -> ().

    Unknown names raise ValueError.
    """
    items = policy.split(",") if isinstance(policy, str) else list(policy or [])
    names = tuple(str(p).strip() for p in items if str(p).strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """`x` `(N, C, H, W)` with each of `policy`'s operations applied, fresh parameters per image."""
    for name in policy:
        x = OPERATIONS[name](x)
    return x


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + (_uniform(x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x) * 2) + mean  # saturation (a no-op on one channel)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    # Output pixel (i, j) reads input pixel (i + dy, j + dx); reads outside the image hit the
    # one-pixel zero border of the padded copy.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # The square's centre; it may hang over the edge (then less of the image is cut).
    cy = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size_h // 2, cx - size_w // 2
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}
