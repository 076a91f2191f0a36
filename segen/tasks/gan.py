"""`model=dcgan` and `model=cgan`'s task: adversarial training of a generator and a discriminator.

One adversarial step serves every GAN. What the images carry to D, and what else D is asked,
are two small pieces (segen/tasks/conditioning.py), picked once when the task is built:
- dcgan: no labels, D says real or fake.
- cgan (`ConditionalGANTask`, which also declares that the data must provide labels): real
  images carry their class and fakes the class G was asked for; with `class_loss_weight` > 0
  (a projection D), D's class embeddings are also trained as a classifier of real images and
  G is rewarded when D classifies its fakes as their labels ("dual projection", Han et al. 2021).
- dcgan with `latent_code_classes=K`: the generator's noise carries a categorical code
  (segen/models/latent_code.py), and `latent_code` says what it is: InfoGAN's, free for G and
  read back from fakes by D's head Q (segen/tasks/infogan.py), or the images' k-means cluster
  (self-conditioning, Liu et al. 2020; segen/tasks/clusters.py): clusters stand in for class
  labels and the model trains as cgan does, on a projection D with the dual-projection term
  at `code_loss_weight`. No labels are used by either.

With `augment` (DiffAugment, segen/tasks/diffaugment.py) every image D sees is augmented.

Training uses manual optimization (Lightning 2 has no automatic mode for two optimizers):
every batch takes one discriminator step, and every `d_steps`-th batch also a generator step.
Lightning counts each optimizer step in `trainer.global_step`, so `trainer.max_steps` counts
D and G steps together.

A GAN has no validation metric that says "better" (FID needs far more samples than an epoch's
end can afford), so `monitor` is null and only last.ckpt is written (`callbacks=fid` with
`model.monitor=val/fid` adds a best.ckpt). Progress is watched in `<run dir>/samples/epoch_XXX.png`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from segen.errors import ConfigError
from segen.perf import logging_this_step
from segen.tasks.base import Evaluation, Task
from segen.tasks.clusters import self_conditioning
from segen.tasks.conditioning import AdversarialOnly, DataLabels, NoLabels, class_term
from segen.tasks.diffaugment import diff_augment, parse_policy
from segen.tasks.ema import GeneratorEMA, check_ema_decay
from segen.tasks.gan_losses import LOSSES, discriminator_loss, generator_loss  # noqa: F401 (also pix2pix's)
from segen.tasks.infogan import infogan
from segen.viz import Picture, to_uint8

LATENT_CODES = {"infogan": infogan, "clusters": self_conditioning}  # model.latent_code -> (label source, term)
GRID_COLUMNS = 8


def conditioning(generator, discriminator, class_loss_weight: float, classes: int | None, kind: str, code_loss_weight: float, recluster_at):
    """(label source, term) of the model: the data's labels for a class-conditional generator,
    none for a plain one, and for a latent code what `kind` (model.latent_code) makes of it."""
    if code_loss_weight < 0:
        raise ConfigError(f"model.code_loss_weight must be >= 0, got {code_loss_weight}")
    recluster_at = sorted(float(f) for f in recluster_at or ())
    if any(not 0 < f < 1 for f in recluster_at):
        raise ConfigError(f"model.recluster_at takes fractions of the run's epochs between 0 and 1, got {recluster_at}")
    try:
        code = LATENT_CODES[kind]
    except KeyError:
        raise ConfigError(f"model.latent_code={kind} is not a kind of latent code; use one of: {', '.join(LATENT_CODES)}") from None
    code_classes = getattr(generator, "code_classes", None)
    if recluster_at and classes is None:
        raise ConfigError("model.recluster_at needs self-conditioning: model.latent_code=clusters and model.latent_code_classes=K")
    if getattr(generator, "num_classes", None) is not None:
        if classes is not None:
            raise ConfigError("model.latent_code_classes is for the unconditional model=dcgan; model=cgan already takes labels")
        return DataLabels(), class_term(discriminator, class_loss_weight, "class", "class_loss_weight")
    if class_loss_weight > 0:
        raise ConfigError("model.class_loss_weight > 0 needs a class-conditional discriminator; use model=cgan or set it to 0")
    if classes is None and code_classes is None:
        return NoLabels(), AdversarialOnly()
    if code_classes != classes:
        raise ConfigError(
            f"model.latent_code_classes={classes} but the generator's code has {code_classes} values; "
            "set them alike (configs/model/dcgan.yaml ties them to latent_code_classes)"
        )
    return code(generator, discriminator, classes, code_loss_weight, recluster_at)


class GANTask(GeneratorEMA, Task):
    """Trains `generator` against `discriminator`; samples with the EMA generator when it has one.

    Logs `train/d_loss`, `train/g_loss`, and `train/d_real`, `train/d_fake`: D's mean output
    on real and generated images (a probability for "bce", the raw score for "hinge"); and the
    term's cross-entropies (`train/d_class_loss`, `train/g_code_loss`, ...).
    """

    needs = frozenset()  # every dataset has images
    image_range = "symmetric"  # images in [-1, 1], the range of the generator's tanh
    test_after_fit = False  # no test metric: `segen eval` scores generators (FID/KID/IS)
    eval_split = "train"  # the real images FID compares with: StudioGAN's and clean-fid's protocol
    generates = True

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: Callable,
        optimizer_d: Callable,
        loss: str = "bce",
        d_steps: int = 1,
        ema_decay: float | None = None,
        class_loss_weight: float = 0.0,
        latent_code_classes: int | None = None,
        latent_code: str = "infogan",
        recluster_at: Sequence[float] = (),
        code_loss_weight: float = 1.0,
        augment: Sequence[str] | str | None = None,
        grid_rows: int = 8,
        monitor: str | None = None,
        monitor_mode: str = "min",
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss} is not a GAN loss; use one of: {', '.join(LOSSES)}")
        if d_steps < 1:
            raise ConfigError(f"model.d_steps must be >= 1 (discriminator steps per generator step), got {d_steps}")
        check_ema_decay(ema_decay)
        source, self.term = conditioning(generator, discriminator, class_loss_weight, latent_code_classes, latent_code, code_loss_weight, recluster_at)
        try:
            self.augment = parse_policy(augment)
        except ValueError as err:
            raise ConfigError(f"model.augment: {err} (e.g. model.augment=[translation,cutout])") from None
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.label_source = source  # saved with the weights (self-conditioning's clusters)
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.loss, self.d_steps = loss, d_steps
        self.code_classes, self.latent_code = latent_code_classes, latent_code
        self.class_loss_weight, self.code_loss_weight = class_loss_weight, code_loss_weight  # as configured
        self.monitor, self.monitor_mode = monitor, monitor_mode  # read by configs/callbacks
        self.num_classes: int | None = getattr(generator, "num_classes", None)
        self.latent_dim: int = generator.latent_dim
        self.init_ema(ema_decay)
        self.register_load_state_dict_pre_hook(_from_segen_0_1)
        # Fixed noise (and labels) for the per-epoch grid, the same every run: a row per class or code.
        rows = self.num_classes or self.code_classes or grid_rows
        fixed = torch.Generator().manual_seed(0)
        self.register_buffer("grid_noise", torch.randn(rows * GRID_COLUMNS, self.latent_dim, generator=fixed), persistent=False)
        self.register_buffer("grid_labels", torch.arange(rows).repeat_interleave(GRID_COLUMNS), persistent=False)

    @property
    def conditional(self) -> bool:  # whether the generator takes labels (cgan); a latent code is in the noise
        return self.num_classes is not None

    def _discriminate(self, images: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor | None = None, for_g: bool = False):
        """D's logits on real images (`z` None) or on fakes drawn from noise `z` (in G's step with
        `for_g`), and the term's losses by name. With `augment`, D sees DiffAugment'ed images, in
        training only."""
        if self.augment and self.training:
            images = diff_augment(images, self.augment)
        if z is None:
            return self.term.real(self.discriminator, images, labels)
        return self.term.fake(self.discriminator, images, labels, z, for_g)

    def _d_output(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits).mean() if self.loss == "bce" else logits.mean()

    def _generate(self, net: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return net(z) if labels is None else net(z, labels)

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        real, batch_labels = batch
        size = self.generator.image_size
        if real.shape[-1] != size:  # model.generator.image_size overridden away from the data's
            real = F.interpolate(real, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        g_labels, fake_labels = self.label_source.fake(self.generator, z, batch_labels)
        fake = self._generate(self.generator, z, g_labels)
        real_labels = self.label_source.real(real, batch_labels)

        d_real, real_terms = self._discriminate(real, real_labels)
        d_fake, fake_terms = self._discriminate(fake.detach(), fake_labels, z)
        terms = {**real_terms, **fake_terms}  # a term scores real images or fakes in D's step, not both
        d_loss = discriminator_loss(self.loss, d_real, d_fake) + self.term.weight * sum(terms.values())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        log_now = logging_this_step(self)
        if log_now:
            self.log_dict({"train/d_loss": d_loss, "train/d_real": self._d_output(d_real), "train/d_fake": self._d_output(d_fake)}, prog_bar=True)
            self.log_dict({f"train/d_{name}_loss": value for name, value in terms.items()})

        if (batch_idx + 1) % self.d_steps == 0:
            # D's weights need no gradients during G's step (cheaper than toggle_optimizer).
            self.discriminator.requires_grad_(False)
            g_fake, terms = self._discriminate(fake, fake_labels, z, for_g=True)
            g_loss = generator_loss(self.loss, g_fake) + self.term.weight * sum(terms.values())
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.discriminator.requires_grad_(True)
            self.step_ema()
            if log_now:
                self.log("train/g_loss", g_loss, prog_bar=True)
                self.log_dict({f"train/g_{name}_loss": value for name, value in terms.items()})
            d_loss = d_loss + g_loss
        # Returned (detached by Lightning) only so that segen's NaN guard sees it.
        return d_loss

    def on_fit_start(self) -> None:
        self.label_source.on_fit_start(self)

    def on_train_epoch_end(self) -> None:
        self.label_source.on_train_epoch_end(self)

    def configure_optimizers(self):
        return [self.optimizer_g(params=self.generator.parameters()), self.optimizer_d(params=self.discriminator.parameters())]

    # -- samples ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        """Images in [-1, 1] for `noise` `(N, latent_dim)` (and `labels` `(N,)` for cgan), on CPU.

        The generator runs in eval mode (BatchNorm on its running statistics), so an image
        depends only on its own noise and label, never on the batch it was drawn in.
        """
        if self.conditional and labels is None:
            raise ValueError("a conditional generator needs labels")
        net = self.sampler
        was_training = net.training
        net.eval()
        try:
            out = []
            for start in range(0, len(noise), batch_size):
                z = noise[start : start + batch_size].to(self.device)
                y = labels[start : start + batch_size].to(self.device) if self.conditional else None
                out.append(self._generate(net, z, y).float().cpu())
        finally:
            net.train(was_training)
        return torch.cat(out)

    def epoch_picture(self, moment: str, batch) -> Picture | None:
        """At each epoch end: the same noise (and labels) every epoch, one row per class or code."""
        if moment != "train_epoch_end":
            return None
        noise = self.grid_noise
        if self.code_classes is not None:  # row k shows code k, under the code prior of now (clusters set it)
            noise = self.sampler.noise_code.with_codes(noise, self.grid_labels)
        images = to_uint8(self.sample(noise, self.grid_labels if self.conditional else None))
        return Picture(images, GRID_COLUMNS, f"epoch_{self.current_epoch:03d}", "samples")

    def export_spec(self, datamodule):
        """`segen export`: the sampling generator (the EMA copy when there is one) from noise
        (and labels, for cgan) to images in [-1, 1]; batch size is free (segen/tasks/gan_export.py)."""
        from segen.tasks.gan_export import generator_spec

        return generator_spec(self, datamodule)

    # -- the task contract: segen eval and segen sample ---------------------------------------------
    @classmethod
    def check_eval_request(cls, cfg: DictConfig) -> None:
        from segen.evaluation.generator import check_settings

        check_settings(cfg)

    def evaluate(self, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
        from segen.evaluation.generator import evaluate_generator

        return evaluate_generator(self, cfg, datamodule, model, data)

    @classmethod
    def check_sample_request(cls, cfg: DictConfig, model: str) -> None:
        from segen.outputs.images import check_request

        check_request(cfg, model)

    def write_samples(self, cfg: DictConfig, datamodule, out: Path, model: str) -> list[Path]:
        from segen.outputs.images import write_generated

        return write_generated(self, cfg, list(datamodule.info.class_names), out, model)


class ConditionalGANTask(GANTask):
    """`model=cgan`: the same training, with a class-conditional generator and discriminator."""

    needs = frozenset({"labels"})
    batch_target = "labels"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *args, **kwargs):
        if getattr(generator, "num_classes", None) is None:
            raise ConfigError("model=cgan needs a class-conditional generator (segen.models.cgan.Generator)")
        super().__init__(generator, discriminator, *args, **kwargs)


def _from_segen_0_1(module, state_dict, prefix, *args) -> None:
    """segen 0.1.0 kept self-conditioning's clusters at `clusters.*` (now the label source's)."""
    for key in [k for k in state_dict if k.startswith(prefix + "clusters.")]:
        state_dict[prefix + "label_source." + key[len(prefix) :]] = state_dict.pop(key)
