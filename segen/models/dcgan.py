"""`model=dcgan`: the generator and discriminator of Radford, Metz & Chintala (2016).

The paper's recipe, kept as it is: strided transposed convs up and strided convs down (no
pooling, no fully connected hidden layers), BatchNorm in both nets except the generator's
output and the discriminator's input layer, ReLU in G with tanh on the output,
LeakyReLU(0.2) in D, weights drawn from N(0, 0.02). The optimizer (Adam 2e-4, betas 0.5/0.999)
is in configs/model/dcgan.yaml.

The paper's nets are for 64 px. Other sizes change only the number of stride-2 stages: the
stack starts at a 4-7 px map and doubles until it reaches the image size (28 = 7*2*2,
32 = 4*2*2*2, 64 = 4*2*2*2*2). Widths halve at each doubling in G and double in D, ending at
`width` (the paper's ngf/ndf = 64).

The nets hold no latent code and no labels: a class-conditional generator and the projection
discriminator are built from these blocks in segen/models/cgan.py, and a latent code read from
the noise (InfoGAN's, or self-conditioning's clusters) is segen/models/latent_code.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Norm = Callable[[int], nn.Module]


def stage_plan(image_size: int) -> tuple[int, int]:
    """(start size, number of stride-2 stages) so that start * 2**stages == image_size."""
    start, stages = image_size, 0
    while start % 2 == 0 and start // 2 >= 4:
        start, stages = start // 2, stages + 1
    if stages < 2 or start > 7:
        raise ValueError(f"image_size={image_size} is not 4-7 times a power of two >= 4 (e.g. 28, 32, 64)")
    return start, stages


def stage_widths(width: int, stages: int, widths: Sequence[int] | None) -> list[int]:
    """Feature widths from the small end (D's last stage, G's first) to the image end."""
    if widths is None:
        return [width * 2 ** (stages - 1 - i) for i in range(stages)]
    if len(widths) != stages:
        raise ValueError(f"widths needs {stages} entries for this image size (one per stride-2 stage), got {len(widths)}")
    return list(widths)


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def up_block(in_ch: int, out_ch: int, norm: Norm = nn.BatchNorm2d, kernel: int = 4, stride: int = 2, padding: int = 1) -> list[nn.Module]:
    """Transposed conv (doubles the size by default) -> norm -> ReLU. No conv bias: the norm has one."""
    return [nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, padding, bias=False), norm(out_ch), nn.ReLU(inplace=True)]


D_NORMS = ("batch", "spectral")


def down_block(in_ch: int, out_ch: int, batchnorm: bool = True, stride: int = 2, norm: Norm = nn.BatchNorm2d) -> list[nn.Module]:
    """4x4 conv (stride 2 halves the size) -> (norm, BatchNorm unless another is given) -> LeakyReLU(0.2).

    pix2pix's encoder and PatchGAN reuse it, with instance norm or stride 1 (segen/models/pix2pix.py).
    """
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride, 1, bias=not batchnorm)]
    if batchnorm:
        layers.append(norm(out_ch))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Spectral normalization (Miyato et al. 2018) on every conv, linear and embedding weight.

    Each weight is divided by its largest singular value (one power iteration per forward),
    which bounds D's Lipschitz constant: D can no longer win outright, so G keeps a useful
    gradient. On shapes it let cgan's classes separate where a BatchNorm D (with BCE) held the
    generator at chance (configs/recipe/cgan_shapes.yaml).
    """
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.utils.parametrizations.spectral_norm(layer)
    return module


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; per-class scale (init ~N(1, 0.02)) and shift (0).

    de Vries et al. 2017; used by cgan for labels (and so for a latent code taken through it).
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)
        nn.init.normal_(self.scale.weight, 1.0, 0.02)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Generator(nn.Module):
    """z `(N, latent_dim)` -> images `(N, channels, image_size, image_size)` in [-1, 1].

    `layers` is one flat `nn.Sequential` (conv, norm, ReLU, ...) so that a conditional
    generator can reuse it and hand the labels to its conditional norms (segen/models/cgan.py).
    """

    num_classes = None  # unconditional

    def __init__(
        self,
        channels: int,
        image_size: int,
        latent_dim: int = 100,
        width: int = 64,
        widths: Sequence[int] | None = None,
        norm: Norm = nn.BatchNorm2d,
    ):
        super().__init__()
        start, stages = stage_plan(image_size)
        w = stage_widths(width, stages, widths)
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        # The paper's "project and reshape": a transposed conv from 1x1 to the start size.
        layers = up_block(latent_dim, w[0], norm, kernel=start, stride=1, padding=0)
        for a, b in zip(w[:-1], w[1:], strict=True):
            layers += up_block(a, b, norm)
        layers += [nn.ConvTranspose2d(w[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # flatten + index, not view(len(z), ...): len() would fix the batch size in an export.
        return self.layers(z.flatten(1)[:, :, None, None])

    def run_layers(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The layers on `z` `(N, latent_dim)`, with `labels` `(N,)` given to every conditional BatchNorm."""
        x = z.flatten(1)[:, :, None, None]
        for layer in self.layers:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class Discriminator(nn.Module):
    """images -> one logit per image (`(N,)`, before the sigmoid).

    `features` maps images to the `(N, feature_dim, s, s)` map at the start size; `head` is a
    conv over that whole map (the paper's final layer). The projection discriminator adds its
    class term to the same features (segen/models/cgan.py); InfoGAN's Q reads its code from
    them (segen/models/latent_code.py).

    `norm="batch"` is the paper's BatchNorm; `norm="spectral"` replaces it with spectral
    normalization of every weight (SNGAN's discriminator, usually paired with the hinge loss).
    """

    def __init__(self, channels: int, image_size: int, width: int = 64, widths: Sequence[int] | None = None, norm: str = "batch"):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"discriminator norm must be one of {D_NORMS}, got {norm!r}")
        start, stages = stage_plan(image_size)
        w = stage_widths(width, stages, widths)[::-1]  # image end first
        self.channels, self.image_size, self.norm = channels, image_size, norm
        self.start_size = start
        batchnorm = norm == "batch"
        layers = down_block(channels, w[0], batchnorm=False)  # no BN on D's input (paper, sec. 3)
        for a, b in zip(w[:-1], w[1:], strict=True):
            layers += down_block(a, b, batchnorm)
        self.features = nn.Sequential(*layers)
        self.feature_dim = w[-1]
        self.head = nn.Conv2d(w[-1], 1, start, 1, 0)
        self.apply(init_weights)
        if norm == "spectral":
            spectral_normalize(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()
