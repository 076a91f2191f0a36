"""data.affine (segen/data/augment.py): each map checked against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segen.data.augment import affine_matrices, random_affine, sampling_grid
from segen.errors import ConfigError


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The content moved right by dx and down by dy whole pixels, edges extended: by hand."""
    k = max(abs(dx), abs(dy))
    h, w = images.shape[-2:]
    padded = F.pad(images, [k] * 4, mode="replicate")
    return padded[..., k - dy : k - dy + h, k - dx : k - dx + w]


def move(images, a, t):
    grid = sampling_grid(a, t, *images.shape[-2:])
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out


def test_a_whole_pixel_shift_equals_a_hand_rolled_shift():
    images = torch.rand(3, 2, 12, 16)  # not square: x and y units differ in grid_sample's [-1, 1]
    for dx, dy in ((2, 0), (0, -3), (-1, 2), (3, 3)):
        a, t = torch.eye(2).repeat(3, 1, 1), torch.tensor([[dx, dy]] * 3, dtype=torch.float32)
        assert torch.allclose(move(images, a, t), shifted(images, dx, dy), atol=1e-5), (dx, dy)


def test_a_quarter_turn_equals_rot90_on_a_square_image():
    images = torch.rand(2, 1, 9, 9)
    angle = torch.tensor(torch.pi / 2)
    a = torch.tensor([[torch.cos(angle), -torch.sin(angle)], [torch.sin(angle), torch.cos(angle)]]).repeat(2, 1, 1)
    # p -> A p with y pointing down: (x, y) -> (-y, x), which is torch.rot90 by -1 (clockwise on screen).
    assert torch.allclose(move(images, a, torch.zeros(2, 2)), torch.rot90(images, -1, dims=(-2, -1)), atol=1e-5)


def test_random_shifts_are_whole_pixels_within_the_range_and_masks_follow():
    gen = torch.Generator().manual_seed(0)
    a, t = affine_matrices(500, translate=2, degrees=0, scale=(1, 1), shear=0, generator=gen)
    assert torch.equal(a, torch.eye(2).repeat(500, 1, 1)) and set(t.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    images = torch.rand(4, 3, 10, 10)
    masks = torch.randint(0, 5, (4, 10, 10))
    moved, moved_masks = random_affine(images, translate=2, masks=masks, generator=torch.Generator().manual_seed(1))
    _, t = affine_matrices(4, 2, 0, (1, 1), 0, generator=torch.Generator().manual_seed(1))
    for i in range(4):
        dx, dy = int(t[i, 0]), int(t[i, 1])
        assert torch.allclose(moved[i], shifted(images[i : i + 1], dx, dy)[0], atol=1e-5)
        expected = torch.full((10, 10), 255)
        src = masks[i, max(0, -dy) : 10 - max(0, dy), max(0, -dx) : 10 - max(0, dx)]
        expected[max(0, dy) : 10 - max(0, -dy), max(0, dx) : 10 - max(0, -dx)] = src
        assert torch.equal(moved_masks[i], expected.to(masks.dtype)), (dx, dy)


def test_rotation_scale_and_shear_stay_in_their_ranges():
    a, _ = affine_matrices(2000, translate=0, degrees=10, scale=(0.9, 1.1), shear=5, generator=torch.Generator().manual_seed(0))
    # A = s R Sh: det = s^2 (R and Sh have det 1); the first column is s (cos, sin) of the angle.
    s = torch.linalg.det(a).sqrt()
    angle = torch.atan2(a[:, 1, 0], a[:, 0, 0]).rad2deg()
    assert s.min() >= 0.9 - 1e-6 and s.max() <= 1.1 + 1e-6 and s.max() - s.min() > 0.15
    assert angle.abs().max() <= 10 + 1e-4 and angle.abs().max() > 9


@pytest.mark.parametrize("kwargs", [{"translate": -1}, {"degrees": -5}, {"scale": (1.1, 0.9)}, {"scale": (0, 1)}])
def test_impossible_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError, match="data.affine"):
        random_affine(torch.zeros(1, 1, 4, 4), **kwargs)


def test_settings_are_checked_and_neutral_ones_mean_no_jitter():
    from segen.data.augment import affine_settings

    assert affine_settings(None) is None and affine_settings({"translate": 0, "scale": [1, 1]}) is None
    assert affine_settings({"translate": 2}) == {"translate": 2, "degrees": 0, "scale": (1.0, 1.0), "shear": 0}
    with pytest.raises(ConfigError, match="data.affine has no setting rotate"):
        affine_settings({"rotate": 10})


def test_mnist_batches_are_jittered_in_training_only(mnist_root):
    """data=mnist data.affine.translate=2: the datamodule moves training batches, not others."""
    from types import SimpleNamespace

    from segen.data.mnist import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(mnist_root), download=False, val_split=50, batch_size=8, affine={"translate": 2})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    plain = dm.on_after_batch_transfer(batch, 0)[0]
    assert torch.equal(plain, dm.normalize(batch[0]))
    torch.manual_seed(0)
    dm.trainer = SimpleNamespace(training=True)
    jittered = dm.on_after_batch_transfer(batch, 0)[0]
    torch.manual_seed(0)
    _, t = affine_matrices(len(plain), 2, 0, (1, 1), 0)
    expected = torch.cat([shifted(plain[i : i + 1], int(t[i, 0]), int(t[i, 1])) for i in range(len(plain))])
    assert torch.allclose(jittered, expected, atol=1e-5) and not torch.equal(jittered, plain)


def test_the_cnn_mnist_recipe_jitters_digits_and_the_gan_recipes_do_not():
    from hydra import compose, initialize_config_dir

    from segen.config import config_dir

    def affine(model: str):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
            return dict(compose(config_name="train", overrides=[f"model={model}", "data=mnist"]).data.affine)

    assert affine("cnn") == {"translate": 2, "degrees": 10, "scale": [0.9, 1.1], "shear": 5}
    for gan in ("dcgan", "cgan"):  # a GAN learns the digits as they are
        assert affine(gan) == {"translate": 0, "degrees": 0, "scale": [1.0, 1.0], "shear": 0}
