"""DiffAugment on the discriminator's inputs (`model.augment`): each operation does what the
paper's does, gradients reach the generator through it, and the task applies it in training only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segen.errors import ConfigError
from segen.models import dcgan
from segen.tasks.diffaugment import color, cutout, diff_augment, parse_policy, translation
from segen.tasks.gan import GANTask


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` moved so that output (i, j) = input (i + dy, j + dx), zeros where that is outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)))
    return padded[..., abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def test_parse_policy_accepts_lists_and_strings_and_names_unknown_operations():
    assert parse_policy(["translation", "cutout"]) == ("translation", "cutout")
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    assert parse_policy(None) == parse_policy([]) == parse_policy("") == ()
    with pytest.raises(ValueError, match="flip"):
        parse_policy(["translation", "flip"])


def test_translation_is_a_zero_filled_shift_of_at_most_an_eighth_of_the_side():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 16, 24) + 1  # no zeros inside, so the fill shows
    out = translation(x)
    seen = set()
    for image, result in zip(x, out, strict=True):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-3, 4) if torch.equal(result, shifted(image, dy, dx))]
        assert len(matches) == 1, "every image is its input shifted by (dy, dx) within 16/8 = 2 rows and 24/8 = 3 columns"
        seen.add(matches[0])
    assert len(seen) > 10  # a fresh shift per image, not one per batch


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    torch.manual_seed(0)
    out = cutout(torch.ones(200, 3, 28, 28))
    assert torch.equal(out[:, 0], out[:, 2])  # the same square in every channel
    for mask in out[:, 0] == 0:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols)  # one rectangle
        assert len(rows) <= 14 and len(cols) <= 14
        inside_rows = 0 < rows.min() and rows.max() < 27
        if inside_rows:
            assert len(rows) == 14  # only the border clips it
    areas = (out[:, 0] == 0).sum(dim=(1, 2))
    # The centre is uniform over 0..28: the square fits whole for 15 of 29 values on each axis.
    assert abs((areas == 14 * 14).float().mean() - (15 / 29) ** 2) < 0.08 and areas.min() > 0


def test_color_changes_brightness_and_contrast_per_image():
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 16).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    out = color(x)
    means, spreads = out.mean(dim=(1, 2, 3)), out.std(dim=(1, 2, 3))
    assert means.std() > 0.05 and spreads.std() > 0.05
    assert (means - x.mean()).abs().max() <= 0.5 + 1e-6  # brightness moves by at most +-0.5


def test_gradients_flow_through_every_operation():
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    diff_augment(x, ("color", "translation", "cutout")).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


class RecordingDiscriminator(dcgan.Discriminator):
    """A real D that keeps the last images it was shown."""

    def forward(self, images):
        self.seen = images.detach().clone()
        return super().forward(images)


def test_task_augments_what_d_sees_in_training_only():
    g = dcgan.Generator(1, 28, latent_dim=8, width=4)
    d = RecordingDiscriminator(1, 28, width=4)
    task = GANTask(g, d, adam, adam, augment=["translation", "cutout"])
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    task.train()
    task._discriminate(images, None)
    assert not torch.equal(d.seen, images)
    assert ((d.seen == 0) & (images != 0)).any()  # cut out or shifted in zeros
    task.eval()
    task._discriminate(images, None)
    assert torch.equal(d.seen, images)
    plain = GANTask(g, d, adam, adam)
    plain.train()
    plain._discriminate(images, None)
    assert torch.equal(d.seen, images)


def test_unknown_policy_is_a_config_error_naming_the_choices():
    g, d = dcgan.Generator(1, 28, latent_dim=8, width=4), dcgan.Discriminator(1, 28, width=4)
    with pytest.raises(ConfigError, match=r"model.augment: unknown DiffAugment policy flip; choose from color, translation, cutout"):
        GANTask(g, d, adam, adam, augment=["flip"])


def test_train_with_augment_on_shapes(segen, tmp_path):
    run = tmp_path / "run"
    result = segen("train", "model=dcgan", "data=shapes", "debug=smoke", "model.augment=[translation,cutout]",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "samples" / "epoch_000.png").is_file()
    bad = segen("train", "model=dcgan", "data=shapes", "debug=smoke", "model.augment=[flip]", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert "model.augment: unknown DiffAugment policy flip" in bad.stderr and "Traceback" not in bad.stderr
