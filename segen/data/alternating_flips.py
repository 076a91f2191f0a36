"""`data.hflip=alternate`: airbench94's alternating flip (Jordan 2024, section 3.6).

Random flips show an image the same way in two consecutive epochs half the time. Here each
training image is mirrored or not at random in the first epoch (a fixed draw, seeded), then
the other way in the next, and so on: over any two epochs every image is seen both ways. airbench
finds this worth a few percent of its epochs at the same accuracy. The flip is done on the uint8
batch as it is gathered (it needs the images' indices), before the random translate on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from segen.data.in_memory import TensorImageDataset


class AlternatingFlips(TensorImageDataset):
    """A training split whose image i is mirrored in epoch e iff first[i] xor (e odd); masks
    `(N, H, W)`, if they are the targets, are mirrored with their images. `images` stays unflipped
    (what FID's real set and the whitening fit read)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, epoch: Callable[[], int], seed: int = 0):
        super().__init__(images, targets)
        self.first = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5
        self.epoch = epoch

    def flips(self, index: torch.Tensor) -> torch.Tensor:
        return self.first[index] ^ bool(self.epoch() % 2)

    def __getitem__(self, index: int):
        image, target = super().__getitem__(index)
        if bool(self.flips(torch.tensor([index]))[0]):
            image, target = image.flip(-1), (target.flip(-1) if target.ndim == 2 else target)
        return image, target

    def __getitems__(self, indices: list[int]):
        images, targets = super().__getitems__(indices)
        flip = self.flips(torch.as_tensor(indices, dtype=torch.long))
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if targets.ndim == 3:
            targets = torch.where(flip[:, None, None], targets.flip(-1), targets)
        return images, targets
