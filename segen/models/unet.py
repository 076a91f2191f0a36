"""`model=unet`: the encoder-decoder with skip connections of Ronneberger et al. (MICCAI 2015).

The paper's net has depth 4 (four 2x poolings), base width 64 doubled at each level, two 3x3
convs per level and 2x2 transposed convs to upsample. Two changes are standard today and on by
default here: BatchNorm after each conv, and "same" padding, so the output has the input's size
and no border tiling is needed. Inputs of any size work: they are padded up to a multiple of
2^depth (every pooling then halves exactly) and the logits are cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def double_conv(in_ch: int, out_ch: int, batchnorm: bool = True) -> nn.Sequential:
    """(conv3x3 -> BN -> ReLU) x 2, the unit of every level. No conv bias when BN follows."""
    layers: list[nn.Module] = []
    for ch in (in_ch, out_ch):
        layers.append(nn.Conv2d(ch, out_ch, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Up(nn.Module):
    """Upsample 2x halving the width, concatenate the skip, double conv.

    `bilinear=False` is the paper's 2x2 transposed conv; `bilinear=True` interpolates and then
    mixes channels with a 3x3 conv, which avoids the checkerboard artefacts of strided
    transposed convs (Odena et al., Distill 2016) at a similar cost.
    """

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool = False, batchnorm: bool = True):
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, out_ch, 3, padding=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.conv = double_conv(2 * out_ch, out_ch, batchnorm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with `depth` poolings and widths `base_width * 2**level`; logits `(N, K, H, W)`."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_width: int = 64,
        bilinear: bool = False,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if depth < 1 or base_width < 1:
            raise ValueError(f"depth and base_width must be >= 1, got depth={depth}, base_width={base_width}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = double_conv(in_channels, widths[0], batchnorm)
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), double_conv(widths[i], widths[i + 1], batchnorm)) for i in range(depth)
        )
        # The paper drops out at the end of the contracting path.
        self.bottleneck_dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], bilinear, batchnorm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The contracting path's outputs, full size first, the bottleneck last."""
        h, w = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -h % multiple, -w % multiple
        if pad_h or pad_w:
            # Pad right/bottom only, so cropping back is a plain slice. Replicate, not zeros:
            # a zero border would be an edge that exists in no training image.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        return skips

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck, average-pooled: `(N, base_width * 2**depth)`, what the net "sees" in
        the whole image (FID in a segmenter's own feature space, segen/metrics/features.py)."""
        return self.encode(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        skips = self.encode(x)
        x = self.bottleneck_dropout(skips.pop())
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)[..., :h, :w]
