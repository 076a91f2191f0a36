"""Random affine jitter of whole batches on their device (`data.affine`): small shifts, rotations,
scalings and shears, each image its own. What digits need to generalize from a few thousand
examples, where a flip would not do (a mirrored 3 is no digit).

One `affine_grid` + `grid_sample` per batch, as torchvision's RandomAffine does per image: the
map is drawn in pixel units about the image centre (so a rotation stays a rotation on a
non-square image), shifts are whole pixels (as RandomAffine rounds them), images are sampled
bilinearly with their border pixels extended (MNIST's black surround stays black whatever the
normalization), masks by nearest neighbour with 255 (ignore) where the map leaves the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from segen.errors import ConfigError

IGNORE_INDEX = 255


def check_affine(translate: float = 0, degrees: float = 0, scale: Sequence[float] = (1.0, 1.0), shear: float = 0) -> None:
    """One-line errors for settings that cannot be a small jitter."""
    if translate < 0 or degrees < 0 or shear < 0:
        raise ConfigError(f"data.affine: translate={translate}, degrees={degrees} and shear={shear} are ranges (+/-), so they must be >= 0")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"data.affine.scale={list(scale)} must be [low, high] with 0 < low <= high, e.g. [0.9, 1.1]")


SETTINGS = {"translate": 0, "degrees": 0, "scale": (1.0, 1.0), "shear": 0}  # neutral: no jitter


def affine_settings(affine) -> dict | None:
    """`data.affine` as `random_affine`'s keyword arguments (checked), or None when it moves
    nothing (null, or every setting neutral)."""
    if not affine:
        return None
    affine = dict(affine)
    unknown = set(affine) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"data.affine has no setting {', '.join(sorted(unknown))}; the settings are {', '.join(SETTINGS)}")
    settings = {**SETTINGS, **affine}
    settings["scale"] = tuple(float(v) for v in settings["scale"])
    check_affine(**settings)
    return None if settings == SETTINGS else settings


def affine_matrices(n: int, translate: float, degrees: float, scale: Sequence[float], shear: float,
                    device=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random content maps `p -> A p + t` in pixels about the centre: `A (n, 2, 2)`, `t (n, 2)`
    (x, y), with A = rotation x shear (along x) x scale."""
    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, device=device, generator=generator)

    angle = uniform(-degrees, degrees) * (math.pi / 180)
    shear_x = torch.tan(uniform(-shear, shear) * (math.pi / 180))
    s = uniform(float(scale[0]), float(scale[1]))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.eye(2, device=device).repeat(n, 1, 1)
    shearing[:, 0, 1] = shear_x
    a = rotation @ shearing * s[:, None, None]
    k = int(math.floor(translate))
    t = torch.randint(-k, k + 1, (n, 2), device=device, generator=generator).float()
    return a, t


def sampling_grid(a: torch.Tensor, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The `grid_sample` grid that moves each image's content by `p -> A p + t` (pixels about the
    centre): every output pixel reads the input at A^-1 (p - t), in grid_sample's [-1, 1] units."""
    half = torch.tensor([width / 2, height / 2], device=a.device)
    inverse = torch.linalg.inv(a)
    theta_lin = inverse * half[None, None, :] / half[None, :, None]  # D^-1 A^-1 D, D = diag(W/2, H/2)
    theta_t = -(inverse @ t[..., None])[..., 0] / half
    theta = torch.cat([theta_lin, theta_t[..., None]], dim=-1)
    return F.affine_grid(theta, [len(a), 1, height, width], align_corners=False)


def random_affine(images: torch.Tensor, translate: float = 0, degrees: float = 0, scale: Sequence[float] = (1.0, 1.0),
                  shear: float = 0, masks: torch.Tensor | None = None, generator=None):
    """Move each image of a float batch `(N, C, H, W)` by its own random affine map: a shift of up
    to `translate` whole pixels in x and in y, a rotation of up to `degrees`, a scale in `scale`,
    a shear of up to `shear` degrees. With `masks` `(N, H, W)` (class ids), they move with their
    images and `(images, masks)` is returned."""
    check_affine(translate, degrees, scale, shear)
    n, _, h, w = images.shape
    a, t = affine_matrices(n, translate, degrees, scale, shear, device=images.device, generator=generator)
    grid = sampling_grid(a, t, h, w).to(images.dtype)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is None:
        return moved
    shifted = F.grid_sample(masks[:, None].float() + 1, grid.float(), mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    # 0 = read from outside the image: nothing is known there.
    return moved, torch.where(shifted > 0, shifted - 1, torch.full_like(shifted, IGNORE_INDEX)).to(masks.dtype)
