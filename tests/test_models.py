"""cnn: shapes for every supported input, parameter counts, and that it learns."""

from __future__ import annotations

import pytest
import torch
from conftest import overfit

from segen.models.cnn import CNN


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 64), (3, 64)])
def test_cnn_output_shape(channels, size):
    net = CNN(in_channels=channels, num_classes=7)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_cnn_parameter_count_matches_resnet9():
    # ResNet-9 (DAWNBench): convs 3->64->128 (+2x128 res) ->256->512 (+2x512 res), BN, fc 512->10.
    net = CNN(in_channels=3, num_classes=10, residual=[False, True, False, True])
    convs = 3 * 64 * 9 + 64 * 128 * 9 + 2 * 128 * 128 * 9 + 128 * 256 * 9 + 256 * 512 * 9 + 2 * 512 * 512 * 9
    bns = 2 * (64 + 128 + 2 * 128 + 256 + 512 + 2 * 512)
    fc = 512 * 10 + 10
    assert sum(p.numel() for p in net.parameters()) == convs + bns + fc


def test_cnn_rejects_mismatched_stage_lists():
    with pytest.raises(ValueError, match="one entry per stage"):
        CNN(in_channels=1, num_classes=2, widths=[8, 16], pool=[True])


def test_cnn_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    net = overfit(CNN(in_channels=1, num_classes=2, widths=[8, 16], dropout=0.0), x, y)
    assert (net(x).argmax(1) == y).float().mean() > 0.95
