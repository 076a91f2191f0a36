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

InfoGAN's categorical latent code (Chen et al. 2016), `code_classes=K` on both nets: the
generator reads its last noise entry u ~ N(0, 1) as a code c = floor(K * Phi(u)), uniform
over 0..K-1 (Phi is the normal CDF), and runs on the other noise entries joined to c's
one-hot vector; the discriminator grows a head Q that predicts c from D's features. With
Q's cross-entropy added to both nets' losses (segen/tasks/gan.py), G must keep c readable in
its images: a discrete choice of mode, where a continuous z alone maps poorly onto
disconnected classes (it blends them). On MNIST the paper's code came to be the digit; what
it does at segen's budget: docs/results.md. No labels are used. `code_input="cbn"` feeds the
code through conditional BatchNorm instead (a scale and shift per code value in every G
layer, as cgan feeds its labels), so that it acts at every resolution. Because the
code is a function of the noise, the generator still maps N(0, 1) noise `(N, latent_dim)` to
images, so everything that samples or exports it is unchanged.

Self-conditioning (Liu et al. 2020) uses the same code with another meaning: code k is the
k-th k-means cluster of the training images (segen/tasks/clusters.py), drawn as often as the
cluster holds images (`set_code_prior`), and the discriminator (`latent_code="clusters"`) is
conditioned on it by projection instead of predicting it, with real images coded by cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

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


def projection(features: torch.Tensor, embedding: nn.Embedding, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection discriminator's class term (Miyato & Koyama 2018): <embed(label), sum-pooled features>.

    Returns (the term for each image's own label `(N,)`, the terms for every label `(N, K)`, which
    are also class logits). Used by cgan's D on labels and by a self-conditioned D on clusters.
    """
    logits = features.sum(dim=(2, 3)) @ embedding.weight.t()
    return logits.gather(1, labels[:, None]).squeeze(1), logits


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

    de Vries et al. 2017; used by cgan for labels and by an InfoGAN code with code_input="cbn".
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


CODE_INPUTS = ("concat", "cbn")
LATENT_CODES = ("infogan", "clusters")  # what the code is: free for G (Q reads it back) | the images' k-means cluster


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
        code_classes: int | None = None,
        code_input: str = "concat",
    ):
        super().__init__()
        start, stages = stage_plan(image_size)
        w = stage_widths(width, stages, widths)
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        self.code_classes, self.code_input = code_classes, code_input
        net_input = latent_dim
        if code_classes is not None:
            if code_classes < 2:
                raise ValueError(f"code_classes must be >= 2 (or None: no latent code), got {code_classes}")
            if latent_dim < 2:
                raise ValueError(f"a latent code takes one noise entry, so latent_dim must be >= 2, got {latent_dim}")
            # Code k <=> bounds[k-1] <= u < bounds[k]: the normal quantiles of 1/K, ..., (K-1)/K
            # (a uniform code) until set_code_prior says otherwise; saved with the weights.
            self.register_buffer("code_bounds", torch.empty(code_classes - 1))
            self.set_code_prior(torch.full((code_classes,), 1.0 / code_classes))
            if code_input not in CODE_INPUTS:
                raise ValueError(f"code_input must be one of {CODE_INPUTS}, got {code_input!r}")
            if code_input == "concat":  # InfoGAN: the one-hot code joins the noise
                net_input = latent_dim - 1 + code_classes
            else:  # a scale and shift per code value in every BatchNorm
                net_input = latent_dim - 1
                norm = partial(ConditionalBatchNorm2d, num_classes=code_classes)
        # The paper's "project and reshape": a transposed conv from 1x1 to the start size.
        layers = up_block(net_input, w[0], norm, kernel=start, stride=1, padding=0)
        for a, b in zip(w[:-1], w[1:], strict=True):
            layers += up_block(a, b, norm)
        layers += [nn.ConvTranspose2d(w[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        if self.code_classes is None:
            # flatten + index, not view(len(z), ...): len() would fix the batch size in an export.
            return self.layers(z[:, :, None, None])
        if self.code_input == "concat":
            return self.layers(torch.cat([z[:, :-1], self.code_one_hot(z).to(z.dtype)], dim=1)[:, :, None, None])
        return self.run_layers(z[:, :-1], self.code(z))

    def run_layers(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The layers on `z` `(N, net input)`, with `labels` `(N,)` given to every conditional BatchNorm."""
        x = z.flatten(1)[:, :, None, None]
        for layer in self.layers:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """The latent code `(N,)` long of noise `z` `(N, latent_dim)`: floor(K * Phi(z[:, -1]))."""
        return (z.flatten(1)[:, -1:] >= self.code_bounds).sum(dim=1)

    def code_one_hot(self, z: torch.Tensor) -> torch.Tensor:
        """`(N, K)` bool one-hot of `code(z)`, written with comparisons only (exports to ONNX as is)."""
        u = z.flatten(1)[:, -1:]
        above = u >= self.code_bounds  # (N, K-1): True for every bound at or below u
        ones = torch.ones_like(above[:, :1])
        # code k: above bounds[0..k-1] and not above bounds[k]
        return torch.cat([ones, above], dim=1) & ~torch.cat([above, ~ones], dim=1)

    def set_code_prior(self, probs: torch.Tensor) -> None:
        """Draw code k with probability `probs[k]` (e.g. the share of the training images in
        cluster k) instead of uniformly: the bounds become the normal quantiles of the cumulative sums."""
        probs = probs.to(torch.float64).clamp_min(0)
        cumulative = (probs.cumsum(0) / probs.sum())[:-1].clamp(1e-12, 1 - 1e-12)
        self.code_bounds.copy_(torch.special.ndtri(cumulative).to(self.code_bounds.dtype))

    def code_prior(self) -> torch.Tensor:
        """`(K,)` probability of each code value under N(0, 1) noise."""
        edges = torch.special.ndtr(self.code_bounds.to(torch.float64).cpu())
        return torch.diff(edges, prepend=edges.new_zeros(1), append=edges.new_ones(1))

    def with_codes(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """A copy of `z` whose code entry is the middle (in probability) of each of `codes`' bins."""
        edges = torch.special.ndtr(self.code_bounds.to(torch.float64).cpu())
        lower = torch.cat([edges.new_zeros(1), edges])[codes.cpu()]
        upper = torch.cat([edges, edges.new_ones(1)])[codes.cpu()]
        out = z.clone()
        out[:, -1] = torch.special.ndtri((lower + upper) / 2).to(z.dtype).to(z.device)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the code prior was saved had a uniform code: keep the default.
        if self.code_classes is not None and prefix + "code_bounds" not in state_dict:
            state_dict = {**state_dict, prefix + "code_bounds": self.code_bounds.detach().clone()}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Discriminator(nn.Module):
    """images -> one logit per image (`(N,)`, before the sigmoid).

    `features` maps images to the `(N, feature_dim, s, s)` map at the start size; `head` is a
    conv over that whole map (the paper's final layer). A projection discriminator adds its
    class term to the same features (segen/models/cgan.py).

    `norm="batch"` is the paper's BatchNorm; `norm="spectral"` replaces it with spectral
    normalization of every weight (SNGAN's discriminator, usually paired with the hinge loss).

    `code_classes=K` adds what the latent code needs, by `latent_code`:
    - "infogan": Q's head, `code_head`, maps the same features to K logits for the generator's
      code (`forward_with_code_logits`). It is never spectrally normalized: it is a
      classifier, not part of D's real/fake critic.
    - "clusters" (self-conditioning): real images have a code too (their cluster), and D is
      conditioned on it by projection, as cgan's D on labels: `forward(x, codes)` adds
      <embed(code), sum-pooled features>, and the inner products with every code's
      embedding are the code logits (`forward_with_code_logits(x, codes)`).
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        widths: Sequence[int] | None = None,
        norm: str = "batch",
        code_classes: int | None = None,
        code_hidden: int = 128,
        latent_code: str = "infogan",
    ):
        super().__init__()
        if latent_code not in LATENT_CODES:
            raise ValueError(f"latent_code must be one of {LATENT_CODES}, got {latent_code!r}")
        if norm not in D_NORMS:
            raise ValueError(f"discriminator norm must be one of {D_NORMS}, got {norm!r}")
        start, stages = stage_plan(image_size)
        w = stage_widths(width, stages, widths)[::-1]  # image end first
        self.channels, self.image_size, self.norm = channels, image_size, norm
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
        self.code_classes, self.latent_code = code_classes, latent_code
        if code_classes is not None and code_classes < 2:
            raise ValueError(f"code_classes must be >= 2 (or None: no latent code), got {code_classes}")
        if code_classes is not None and latent_code == "clusters":
            self.code_embed = nn.Embedding(code_classes, w[-1])
            nn.init.normal_(self.code_embed.weight, 0.0, 0.02)
            if norm == "spectral":  # part of the critic, like cgan's class embedding
                spectral_normalize(self.code_embed)
        elif code_classes is not None:
            # InfoGAN's Q: a hidden layer over the whole feature map, then the code's logits.
            self.code_head = nn.Sequential(
                nn.Conv2d(w[-1], code_hidden, start, 1, 0), nn.LeakyReLU(0.2, inplace=True), nn.Flatten(), nn.Linear(code_hidden, code_classes)
            )
            self.code_head.apply(init_weights)

    @property
    def conditioned(self) -> bool:
        """Whether D takes the images' codes as a second input (self-conditioning)."""
        return self.code_classes is not None and self.latent_code == "clusters"

    def forward(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            return self.forward_with_code_logits(x, codes)[0]
        return self.head(self.features(x)).flatten()

    def forward_with_code_logits(self, x: torch.Tensor, codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit `(N,)`, latent-code logits `(N, code_classes)`) from one pass; needs code_classes,
        and with latent_code="clusters" the images' `codes` `(N,)`."""
        if self.code_classes is None:
            raise ValueError("code logits need code_classes")
        h = self.features(x)
        if not self.conditioned:
            return self.head(h).flatten(), self.code_head(h)
        if codes is None:
            raise ValueError("a self-conditioned discriminator needs the images' codes")
        term, code_logits = projection(h, self.code_embed, codes)
        return self.head(h).flatten() + term, code_logits
