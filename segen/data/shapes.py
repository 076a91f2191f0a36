"""A procedural dataset that needs no download: coloured shapes on a noisy background.

Every image holds one shape (circle, square, triangle or cross) of random size, position and
colour. The class label is the shape kind; the per-pixel mask holds `kind + 1` on the shape and
0 on the background, so the same data serves classification, segmentation and generation. The
whole set is a pure function of `seed`, computed in vectorized chunks (thousands per second).
"""

from __future__ import annotations

import torch

from segen.data.in_memory import InMemoryImageDataModule
from segen.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross")


def _shape_masks(kind, cx, cy, r, size: int) -> torch.Tensor:
    """Boolean masks `(N, size, size)` for shapes of `kind` centred at (cx, cy) with radius r."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    y = coords.view(1, size, 1)
    x = coords.view(1, 1, size)
    dx = x - cx.view(-1, 1, 1)
    dy = y - cy.view(-1, 1, 1)
    r = r.view(-1, 1, 1)
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= r * 0.8) & (dy.abs() <= r * 0.8)
    # Upward isosceles triangle: apex at cy - r, base at cy + r.
    triangle = (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) / 2)
    arm = r / 3
    cross = ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    stacked = torch.stack([circle, square, triangle, cross], dim=1)  # (N, K, S, S)
    return stacked[torch.arange(len(kind)), kind]


def make_shapes(
    count: int, image_size: int = 32, channels: int = 3, seed: int = 0, noise: float = 0.08
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return `(images uint8 (N, C, S, S), labels long (N,), masks uint8 (N, S, S))`."""
    if image_size < 8:
        raise DataError(f"shapes needs image_size >= 8, got {image_size}")
    if channels not in (1, 3):
        raise DataError(f"shapes supports channels=1 or 3, got {channels}")
    gen = torch.Generator().manual_seed(seed)
    images, labels, masks = [], [], []
    for start in range(0, count, 2048):
        n = min(2048, count - start)
        kind = torch.randint(0, len(SHAPES), (n,), generator=gen)
        r = image_size * (0.18 + 0.17 * torch.rand(n, generator=gen))
        cx = r + (image_size - 2 * r) * torch.rand(n, generator=gen)
        cy = r + (image_size - 2 * r) * torch.rand(n, generator=gen)
        mask = _shape_masks(kind, cx, cy, r, image_size)
        # Background and shape colours differ by at least 0.35 in every channel-mean so the
        # shape is always visible, in colour or in grey.
        background = 0.15 + 0.3 * torch.rand(n, channels, 1, 1, generator=gen)
        shape = background + 0.35 + 0.2 * torch.rand(n, channels, 1, 1, generator=gen)
        flip = torch.rand(n, 1, 1, 1, generator=gen) < 0.5  # sometimes dark shape on light ground
        background, shape = torch.where(flip, 1 - background, background), torch.where(flip, 1 - shape, shape)
        img = torch.where(mask[:, None], shape, background)
        img = img + noise * torch.randn(n, channels, image_size, image_size, generator=gen)
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        labels.append(kind)
        masks.append(mask.to(torch.uint8) * (kind.view(-1, 1, 1) + 1).to(torch.uint8))
    return torch.cat(images), torch.cat(labels), torch.cat(masks)


class ShapesDataModule(InMemoryImageDataModule):
    """`data=shapes`: the default dataset, so `segen train` runs anywhere with no download."""

    name = "shapes"
    targets = frozenset({"labels", "masks"})
    class_names = SHAPES
    mask_class_names = ("background", *SHAPES)

    def __init__(
        self,
        num_train: int = 5000,
        num_test: int = 1000,
        image_size: int = 32,
        channels: int = 3,
        seed: int = 0,
        noise: float = 0.08,
        **kwargs,
    ):
        self.channels = channels
        self.image_size = image_size
        super().__init__(**kwargs)
        self.num_train, self.num_test, self.seed, self.noise = num_train, num_test, seed, noise

    def load_split(self, train: bool):
        # Train and test come from disjoint seeds, so no test image is a copy of a train image.
        count, seed = (self.num_train, self.seed) if train else (self.num_test, self.seed + 1_000_003)
        images, labels, masks = make_shapes(count, self.image_size, self.channels, seed, self.noise)
        return {"images": images, "labels": labels, "masks": masks}
