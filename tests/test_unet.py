"""U-Net: output shapes for any input size, both upsampling modes, the paper's parameter count."""

from __future__ import annotations

import pytest
import torch
from conftest import overfit

from segen.models.unet import UNet


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (37, 51), (1, 1), (17, 64)])
def test_output_has_input_size_for_any_size(bilinear, size):
    net = UNet(in_channels=3, num_classes=5, depth=3, base_width=4, bilinear=bilinear).eval()
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_single_channel_input_and_no_batchnorm():
    net = UNet(in_channels=1, num_classes=2, depth=2, base_width=4, batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert net(torch.randn(1, 1, 30, 30)).shape == (1, 2, 30, 30)


def test_paper_configuration_parameter_count():
    # Ronneberger et al.'s widths 64..1024 with transposed convs and BN: the 31.04M of the
    # common PyTorch reimplementations (2 output classes).
    net = UNet(in_channels=3, num_classes=2)
    assert sum(p.numel() for p in net.parameters()) == 31_037_698


def test_padding_does_not_leak_into_the_kept_region():
    # The crop keeps exactly the input's pixels: a perturbation of the input reaches outputs,
    # and inputs already at a multiple of 2^depth are not padded at all.
    torch.manual_seed(0)
    net = UNet(3, 4, depth=2, base_width=4).eval()
    x = torch.randn(1, 3, 12, 12)
    assert torch.equal(net(x), net(x))
    y = torch.randn(1, 3, 13, 13)
    assert net(y).shape[-2:] == (13, 13)


def test_invalid_depth_is_rejected():
    with pytest.raises(ValueError, match="depth"):
        UNet(3, 2, depth=0)


def test_learns_a_trivial_mask():
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, base_width=8)
    x = torch.rand(8, 1, 16, 16)
    y = (x[:, 0] > 0.5).long()
    overfit(net, x, y)
    net.eval()
    assert (net(x).argmax(1) == y).float().mean() > 0.95
