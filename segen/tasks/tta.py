"""Test-time augmentation for classifiers (`model.tta`; `segen eval eval.tta=` overrides it).

airbench94's three levels (Jordan 2024, `tta_level` 0/1/2): `none`; `mirror`, the mean of the
logits of the image and its left-right mirror; `mirror_translate`, half that mean plus half the
mean of the mirror-averaged logits of the image shifted by one pixel up-left and by one pixel
down-right (reflect padding, as in training). Costs 1, 2 and 6 forward passes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from segen.errors import ConfigError

LEVELS = ("none", "mirror", "mirror_translate")


def check_tta(level: str | None) -> str:
    level = "none" if level in (None, False, 0) else str(level)
    if level not in LEVELS:
        raise ConfigError(f"tta={level} is not a test-time augmentation; use one of {', '.join(LEVELS)}")
    return level


def mirrored(net: Callable, images: torch.Tensor) -> torch.Tensor:
    return 0.5 * net(images) + 0.5 * net(images.flip(-1))


def tta_logits(net: Callable, images: torch.Tensor, level: str) -> torch.Tensor:
    """The logits of `images (N, C, H, W)` under test-time augmentation `level`."""
    if level == "none":
        return net(images)
    logits = mirrored(net, images)
    if level == "mirror":
        return logits
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., 0:h, 0:w], padded[..., 2 : h + 2, 2 : w + 2]]  # content moves down-right, up-left
    return 0.5 * logits + 0.5 * torch.stack([mirrored(net, x) for x in shifted]).mean(0)
