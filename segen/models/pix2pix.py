"""`model=pix2pix`: label map -> image, the nets of Isola et al., "Image-to-Image Translation
with Conditional Adversarial Networks" (CVPR 2017).

- Generator: the paper's U-Net. An encoder of 4x4 stride-2 convs (LeakyReLU 0.2, BatchNorm
  except on the first and the innermost layer) and a mirrored decoder of 4x4 stride-2
  transposed convs (BatchNorm, ReLU), each decoder stage joined to the encoder stage of the
  same size; dropout 0.5 in the innermost decoder stages is the only noise; tanh out. Width
  `ngf` doubles per stage up to 8 x ngf. Its depth follows the input: the shorter side is
  halved down to 1-2 px (32 px: 5 stages, 120x160: 6, 256: 8 as in the paper). Sizes that do
  not halve evenly are fine: a decoder output one pixel short of its skip is padded.
- Discriminator: PatchGAN, a stack of 4x4 convs that scores overlapping patches (n_layers=3:
  70x70 pixels) of the (label one-hot, image) pair as real or fake.

Both take the label map as train ids `(N, H, W)` (long) and one-hot it over `num_classes`;
ignored pixels (255) become all-zero vectors. The blocks are segen/models/dcgan.py's.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from segen.models.dcgan import Norm, down_block, init_weights, spectral_normalize, up_block

NORMS = ("batch", "instance", "none")
MAX_DEPTH = 8  # the paper's 256 px generator


def label_one_hot(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Train ids `(N, H, W)` -> float one-hot `(N, K, H, W)`; ids outside [0, K) (void, 255) -> zeros."""
    masks = masks.long()
    valid = (masks >= 0) & (masks < num_classes)
    onehot = F.one_hot(torch.where(valid, masks, torch.zeros_like(masks)), num_classes)
    return (onehot * valid.unsqueeze(-1)).permute(0, 3, 1, 2).float()


def auto_depth(height: int, width: int) -> int:
    """Encoder stages that bring the shorter side down to 1-2 px: floor(log2(min side)), at most 8."""
    return max(1, min(MAX_DEPTH, int(math.log2(max(1, min(height, width))))))


def norm_layer(name: str) -> Norm | None:
    """The normalization a config names: BatchNorm, InstanceNorm (no affine, as in pix2pix's code) or none."""
    if name not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {name!r}")
    if name == "batch":
        return nn.BatchNorm2d
    if name == "instance":
        return partial(nn.InstanceNorm2d, affine=False)
    return None


def _match(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Pad (replicate) a decoder output up to its skip's size when a stride-2 conv rounded down."""
    dh, dw = size[-2] - x.shape[-2], size[-1] - x.shape[-1]
    return F.pad(x, (0, dw, 0, dh), mode="replicate") if dh or dw else x


class Generator(nn.Module):
    """Label maps `(N, H, W)` of train ids -> images `(N, channels, H, W)` in [-1, 1]."""

    def __init__(
        self,
        num_classes: int,
        channels: int,
        height: int,
        width: int,
        ngf: int = 64,
        depth: int | None = None,
        dropout: float = 0.5,
        dropout_stages: int = 3,
        norm: str = "batch",
    ):
        super().__init__()
        depth = auto_depth(height, width) if depth is None else depth
        smallest = min(height, width)
        if depth < 1 or smallest < 2**depth:
            raise ValueError(f"generator depth={depth} halves {height}x{width} below 1 px; use depth <= {auto_depth(height, width)} (or null)")
        self.num_classes, self.channels, self.height, self.width, self.depth = num_classes, channels, height, width, depth
        widths = [ngf * min(2**i, 8) for i in range(depth)]
        normalize = norm_layer(norm)
        use_norm = normalize is not None
        # Encoder: no norm on the first stage (the paper's C64) nor the innermost (a 1-2 px map).
        self.encoder = nn.ModuleList()
        for i, w in enumerate(widths):
            in_ch = num_classes if i == 0 else widths[i - 1]
            normed = use_norm and 0 < i < depth - 1
            self.encoder.append(nn.Sequential(*down_block(in_ch, w, batchnorm=normed, norm=normalize or nn.BatchNorm2d)))
        # Decoder, innermost first: stage j upsamples to the size of encoder stage depth-2-j.
        self.decoder = nn.ModuleList()
        for j, i in enumerate(range(depth - 1, 0, -1)):
            in_ch = widths[i] if j == 0 else 2 * widths[i]
            layers = up_block(in_ch, widths[i - 1], normalize or nn.Identity)
            if j < dropout_stages and dropout > 0:
                layers.insert(2, nn.Dropout(dropout))  # after the norm, before the ReLU
            self.decoder.append(nn.Sequential(*layers))
        out_in = 2 * widths[0] if depth > 1 else widths[0]
        self.head = nn.Sequential(nn.ConvTranspose2d(out_in, channels, 4, 2, 1), nn.Tanh())
        self.apply(init_weights)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        x = label_one_hot(masks, self.num_classes)
        size = x.shape
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for stage in self.decoder:
            skip = skips.pop()
            x = torch.cat([skip, _match(stage(x), skip.shape)], dim=1)
        return _match(self.head(x), size)


class Discriminator(nn.Module):
    """PatchGAN: (label maps `(N, H, W)`, images `(N, C, H, W)`) -> one logit per patch `(N, 1, h, w)`."""

    def __init__(
        self,
        num_classes: int,
        channels: int,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        spectral: bool = False,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"discriminator n_layers must be >= 1, got {n_layers}")
        self.num_classes = num_classes
        normalize = norm_layer(norm)
        use_norm = normalize is not None
        widths = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers = down_block(num_classes + channels, widths[0], batchnorm=False)
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1  # the last stage keeps the size (the paper's C512, stride 1)
            layers += down_block(widths[i - 1], widths[i], batchnorm=use_norm, stride=stride, norm=normalize or nn.BatchNorm2d)
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)
        if spectral:
            spectral_normalize(self)

    def forward(self, masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([label_one_hot(masks, self.num_classes), images], dim=1))
