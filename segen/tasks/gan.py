"""`model=dcgan` and `model=cgan`'s task: adversarial training of a generator and a discriminator.

One LightningModule serves both; it is conditional when the generator has `num_classes`
(then both nets take the labels as a second argument). `ConditionalGANTask` differs only in
declaring that the data must provide labels, which `segen train` checks before any work.

With `class_loss_weight` > 0 (cgan with a projection D), D's class embeddings are also trained
as a classifier of real images and G is rewarded when D classifies its fakes as their labels:
"dual projection" (Han et al. 2021, P2GAN), an AC-GAN-style term that needs no extra weights.

With `latent_code_classes=K` (dcgan), the generator's noise carries InfoGAN's categorical code
(Chen et al. 2016; segen/models/dcgan.py) and D's head Q learns to read it back from fakes:
`code_loss_weight` x Q's cross-entropy is added to D's loss (training D's features and Q) and
to G's (G keeps the code recognizable). Unsupervised: the code need not match any label.
With `latent_code=clusters` the code is instead each image's k-means cluster (self-conditioning,
Liu et al. 2020; segen/tasks/clusters.py): fitted on the training images' pixels when training
starts, optionally refitted on D's features (`recluster_at`); real images carry their cluster,
D is conditioned on the code by projection, and the code's cross-entropy is the dual
projection term above, on clusters instead of labels. No labels are used either.

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

from segen.console import note
from segen.errors import ConfigError
from segen.models.dcgan import LATENT_CODES
from segen.perf import logging_this_step
from segen.tasks.base import Evaluation, Task
from segen.tasks.clusters import ImageClusters
from segen.tasks.diffaugment import diff_augment, parse_policy
from segen.tasks.ema import GeneratorEMA, check_ema_decay
from segen.viz import Picture, to_uint8

LOSSES = ("bce", "hinge", "lsgan")
MAX_CLUSTER_IMAGES = 20_000  # images that fit the self-conditioning clusters (a seeded subset beyond it)
GRID_COLUMNS = 8


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """D's loss on real and fake logits; summed over both halves (as in pytorch/examples/dcgan).
    In fp32 under bf16 autocast: its means and softplus are not on autocast's fp32 list."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":  # Lim & Ye 2017; used by SNGAN and BigGAN
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "lsgan":  # Mao et al. 2017: least squares to the targets 1 (real) and 0 (fake)
        return (real - 1).pow(2).mean() + fake.pow(2).mean()
    # BCE written with softplus: -log sigmoid(r) - log(1 - sigmoid(f)), stable for any logit.
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """G's loss; "bce" is the non-saturating -log D(G(z)) of Goodfellow et al. 2014, sec. 3."""
    fake = fake.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "lsgan":
        return (fake - 1).pow(2).mean()
    return F.softplus(-fake).mean()


def check_latent_code(generator, discriminator, classes: int | None, kind: str, recluster_at) -> list[float]:
    """ConfigError unless the task's latent code settings and the two nets agree; returns `recluster_at` sorted."""
    code_classes = (getattr(generator, "code_classes", None), getattr(discriminator, "code_classes", None))
    if code_classes != (classes, classes):
        raise ConfigError(
            f"model.latent_code_classes={classes} but the generator's code_classes is {code_classes[0]} and the "
            f"discriminator's {code_classes[1]}; set all three alike (configs/model/dcgan.yaml ties them to latent_code_classes)"
        )
    if kind not in LATENT_CODES:
        raise ConfigError(f"model.latent_code={kind} is not a kind of latent code; use one of: {', '.join(LATENT_CODES)}")
    if classes is not None and getattr(discriminator, "latent_code", None) != kind:
        raise ConfigError(
            f"model.latent_code={kind} but the discriminator's latent_code is {getattr(discriminator, 'latent_code', None)}; "
            "set both alike (configs/model/dcgan.yaml ties them)"
        )
    recluster_at = sorted(float(f) for f in recluster_at or ())
    if recluster_at and (kind != "clusters" or classes is None):
        raise ConfigError("model.recluster_at needs self-conditioning: model.latent_code=clusters and model.latent_code_classes=K")
    if any(not 0 < f < 1 for f in recluster_at):
        raise ConfigError(f"model.recluster_at takes fractions of the run's epochs between 0 and 1, got {recluster_at}")
    if classes is not None and getattr(generator, "num_classes", None) is not None:
        raise ConfigError("model.latent_code_classes is for the unconditional model=dcgan; model=cgan already takes labels")
    return recluster_at


class GANTask(GeneratorEMA, Task):
    """Trains `generator` against `discriminator`; samples with the EMA generator when it has one.

    Logs `train/d_loss`, `train/g_loss`, and `train/d_real`, `train/d_fake`: D's mean output
    on real and generated images (a probability for "bce", the raw score for "hinge").
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
        if class_loss_weight < 0:
            raise ConfigError(f"model.class_loss_weight must be >= 0, got {class_loss_weight}")
        if class_loss_weight > 0 and not hasattr(discriminator, "forward_with_class_logits"):
            raise ConfigError("model.class_loss_weight > 0 needs a class-conditional discriminator; use model=cgan or set it to 0")
        if class_loss_weight > 0 and getattr(discriminator, "conditioning", None) != "projection":
            raise ConfigError(
                "model.class_loss_weight > 0 needs model.discriminator.conditioning=projection (its class embeddings "
                "are the classifier); add model.class_loss_weight=0 to use another conditioning"
            )
        recluster_at = check_latent_code(generator, discriminator, latent_code_classes, latent_code, recluster_at)
        if code_loss_weight < 0:
            raise ConfigError(f"model.code_loss_weight must be >= 0, got {code_loss_weight}")
        try:
            self.augment = parse_policy(augment)
        except ValueError as err:
            raise ConfigError(f"model.augment: {err} (e.g. model.augment=[translation,cutout])") from None
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.loss, self.d_steps = loss, d_steps
        self.class_loss_weight = class_loss_weight
        self.code_classes, self.code_loss_weight = latent_code_classes, code_loss_weight
        self.latent_code, self.recluster_at = latent_code, recluster_at
        if self.self_conditioned:
            # Each real image's code is its cluster: fitted when training starts (on pixels),
            # refitted on D's features at `recluster_at`; saved with the weights.
            shape = (generator.channels, generator.image_size, generator.image_size)
            self.clusters = ImageClusters(latent_code_classes, shape, encoder=discriminator.features if recluster_at else None)
        self.monitor, self.monitor_mode = monitor, monitor_mode  # read by configs/callbacks
        self.num_classes: int | None = getattr(generator, "num_classes", None)
        self.latent_dim: int = generator.latent_dim
        self.init_ema(ema_decay)
        # Fixed noise (and labels: one row per class; or per latent code value) for the per-epoch
        # grid, the same every run.
        rows = self.num_classes or self.code_classes or grid_rows
        fixed = torch.Generator().manual_seed(0)
        grid_noise = torch.randn(rows * GRID_COLUMNS, self.latent_dim, generator=fixed)
        grid_labels = torch.arange(rows).repeat_interleave(GRID_COLUMNS)
        if self.code_classes is not None:
            grid_noise = generator.with_codes(grid_noise, grid_labels)
        self.register_buffer("grid_noise", grid_noise, persistent=False)
        self.register_buffer("grid_labels", grid_labels, persistent=False)

    # -- the nets, with or without labels ---------------------------------------------------------
    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    @property
    def self_conditioned(self) -> bool:
        """Whether the latent code is the images' k-means cluster (Liu et al. 2020), not InfoGAN's."""
        return self.code_classes is not None and self.latent_code == "clusters"

    def _generate(self, net: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return net(z, labels) if self.conditional else net(z)

    def _discriminate(
        self, images: torch.Tensor, labels: torch.Tensor | None, class_loss: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's real/fake logits, and its cross-entropy on `labels` when the class loss is on
        (and wanted: D's step on fakes has no use for it).

        Unconditional with a latent code: `labels` are the fakes' codes (None for real images),
        and the cross-entropy is Q's. With `augment`, D sees DiffAugment'ed images, in training only."""
        if self.augment and self.training:
            images = diff_augment(images, self.augment)
        if self.self_conditioned:  # `labels` are the images' codes; D is conditioned on them
            if class_loss and self.code_loss_weight > 0:
                logits, code_logits = self.discriminator.forward_with_code_logits(images, labels)
                return logits, F.cross_entropy(code_logits, labels)
            return self.discriminator(images, labels), None
        if self.code_classes is not None:
            if labels is None or self.code_loss_weight == 0:
                return self.discriminator(images), None
            logits, code_logits = self.discriminator.forward_with_code_logits(images)
            return logits, F.cross_entropy(code_logits, labels)
        if class_loss and self.class_loss_weight > 0:
            logits, class_logits = self.discriminator.forward_with_class_logits(images, labels)
            return logits, F.cross_entropy(class_logits, labels)
        return (self.discriminator(images, labels) if self.conditional else self.discriminator(images)), None

    def _d_output(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits).mean() if self.loss == "bce" else logits.mean()

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        real, labels = batch
        labels = labels if self.conditional else None
        size = self.generator.image_size
        if real.shape[-1] != size:  # model.generator.image_size overridden away from the data's
            real = F.interpolate(real, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        opt_g, opt_d = self.optimizers()
        # Fakes carry the batch's own labels, so they follow the data's class frequencies.
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        fake = self._generate(self.generator, z, labels)
        # The fakes' latent codes (InfoGAN), which Q must read back; None without a code.
        codes = self.generator.code(z) if self.code_classes is not None else None
        if self.self_conditioned:  # real images' codes: their clusters
            labels = self.clusters.assign(real)

        d_real, class_loss_real = self._discriminate(real, labels)
        d_fake, code_loss_d = self._discriminate(fake.detach(), codes if codes is not None else labels, class_loss=False)
        d_loss = discriminator_loss(self.loss, d_real, d_fake)
        if class_loss_real is not None:  # D learns to classify real images only (fakes' labels are G's claims)
            weight = self.code_loss_weight if self.self_conditioned else self.class_loss_weight
            d_loss = d_loss + weight * class_loss_real
        if code_loss_d is not None:  # Q (and D's features under it) learn to read the code
            d_loss = d_loss + self.code_loss_weight * code_loss_d
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        log_now = logging_this_step(self)
        if log_now:
            self.log_dict({"train/d_loss": d_loss, "train/d_real": self._d_output(d_real), "train/d_fake": self._d_output(d_fake)}, prog_bar=True)
            if class_loss_real is not None:
                self.log("train/d_code_loss" if self.self_conditioned else "train/d_class_loss", class_loss_real)
            if code_loss_d is not None:
                self.log("train/d_code_loss", code_loss_d)

        if (batch_idx + 1) % self.d_steps == 0:
            # D's weights need no gradients during G's step (cheaper than toggle_optimizer).
            self.discriminator.requires_grad_(False)
            g_fake, class_loss_fake = self._discriminate(fake, codes if codes is not None else labels)
            g_loss = generator_loss(self.loss, g_fake)
            if class_loss_fake is not None:  # the class loss, or with a latent code Q's
                weight = self.code_loss_weight if codes is not None else self.class_loss_weight
                g_loss = g_loss + weight * class_loss_fake
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.discriminator.requires_grad_(True)
            self.step_ema()
            if log_now:
                self.log("train/g_loss", g_loss, prog_bar=True)
                if class_loss_fake is not None:
                    self.log("train/g_code_loss" if codes is not None else "train/g_class_loss", class_loss_fake)
            d_loss = d_loss + g_loss
        # Returned (detached by Lightning) only so that segen's NaN guard sees it.
        return d_loss

    def on_fit_start(self) -> None:
        if self.self_conditioned and not self.clusters.fitted:  # a resumed run has its clusters already
            images = self._cluster_images()
            if len(images) < self.code_classes:
                raise ConfigError(
                    f"model.latent_code_classes={self.code_classes} clusters need at least as many training images, but the "
                    f"training split has {len(images)}; lower model.latent_code_classes or train on more images"
                )
            sizes = self._follow_clusters(self.clusters.fit(images, MAX_CLUSTER_IMAGES))
            self._say(f"Self-conditioning: {self.code_classes} k-means clusters of {int(sizes.sum())} training images (pixels), sizes {sizes.tolist()}")

    def _recluster_if_due(self) -> None:
        """Refit the clusters on D's features at each `recluster_at` fraction of the run, at the
        first epoch end past it: the run's length is `trainer.max_epochs` or `trainer.max_steps`,
        whichever ends it first."""
        done = int(self.clusters.refits)
        if done >= len(self.recluster_at):
            return
        trainer, share = self.trainer, self.recluster_at[done]
        by_epochs = trainer.max_epochs is not None and trainer.max_epochs > 0 and self.current_epoch + 1 >= round(share * trainer.max_epochs)
        by_steps = trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= round(share * trainer.max_steps)
        if not (by_epochs or by_steps):
            return
        sizes, changed = self.clusters.refit(self.discriminator.features, self._cluster_images(), MAX_CLUSTER_IMAGES)
        sizes = self._follow_clusters(sizes)
        self._say(
            f"Self-conditioning: reclustered on D's features after epoch {self.current_epoch}: "
            f"{changed:.1%} of the images changed code, sizes {sizes.tolist()}"
        )

    def _cluster_images(self) -> torch.Tensor:
        """The training images as D sees them: in [-1, 1], at G's size, on this device."""
        x = self.trainer.datamodule.split_images("train").to(self.device).float() / 127.5 - 1
        size = self.generator.image_size
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def _follow_clusters(self, sizes: torch.Tensor) -> torch.Tensor:
        """Every rank takes rank 0's clusters; G draws each code as often as its cluster holds
        training images. Returns the sizes (rank 0's)."""
        state, sizes = self.trainer.strategy.broadcast((self.clusters.state_dict(), sizes.cpu()), src=0)
        self.clusters.load_state_dict(state)
        for net in (self.generator, getattr(self, "generator_ema", None)):
            if net is not None:
                net.set_code_prior(sizes.float() / sizes.sum())
        return sizes

    def _say(self, text: str) -> None:
        if self.trainer.is_global_zero:
            note(text)

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

    def on_train_epoch_end(self) -> None:
        if self.self_conditioned and self.recluster_at:  # on every rank: they must keep the same clusters
            self._recluster_if_due()

    def epoch_picture(self, moment: str, batch) -> Picture | None:
        """At each epoch end: the same noise (and labels) every epoch, one row per class or code."""
        if moment != "train_epoch_end":
            return None
        noise = self.grid_noise
        if self.code_classes is not None:  # row k shows code k, under the code prior of now (clusters set it)
            noise = self.generator.with_codes(noise, self.grid_labels)
        images = to_uint8(self.sample(noise, self.grid_labels if self.conditional else None))
        return Picture(images, GRID_COLUMNS, f"epoch_{self.current_epoch:03d}", "samples")


    def export_spec(self, datamodule):
        """`segen export`: the sampling generator (the EMA copy when there is one) from noise
        (and labels, for cgan) to images in [-1, 1]; batch size is free."""
        from segen.export import ExportSpec

        latent = self.latent_dim

        def inputs(batch: int) -> tuple[torch.Tensor, ...]:
            gen = torch.Generator().manual_seed(batch)
            noise = torch.randn(batch, latent, generator=gen)
            if not self.conditional:
                return (noise,)
            return noise, torch.randint(0, self.num_classes, (batch,), generator=gen)

        names = ["noise", "labels"] if self.conditional else ["noise"]
        size = self.sampler.image_size
        channels = self.sampler.channels
        sidecar = {
            "task": "generation",
            "input": {"name": "noise", "shape": ["batch", latent], "dtype": "float32", "distribution": "standard normal N(0, 1)"},
            "latent_dim": latent,
            "output": {"name": "images", "shape": ["batch", channels, size, size], "layout": "NCHW", "dtype": "float32",
                       "value_range": [-1.0, 1.0], "postprocess": "uint8_image = round((x + 1) * 127.5), clipped to [0, 255]",
                       "color": "RGB" if channels == 3 else "grayscale"},
            "ema": self.ema_decay is not None,
        }
        if self.code_classes is not None:
            prior = self.sampler.code_prior()
            sidecar["latent_code"] = {
                "classes": self.code_classes,
                "kind": self.latent_code,
                "source": "the last noise entry u: code = the k with prior[0] + ... + prior[k-1] <= Phi(u) < prior[0] + ... + prior[k], "
                "Phi the standard normal CDF (a uniform prior: floor(classes * Phi(u)))",
                "prior": [round(float(p), 6) for p in prior],
            }
        if self.conditional:
            sidecar["labels"] = {"name": "labels", "shape": ["batch"], "dtype": "int64", "range": [0, self.num_classes - 1]}
            sidecar["class_names"] = list(datamodule.info.class_names)
        return ExportSpec(
            module=self.sampler,
            example_inputs=inputs(2),
            input_names=names,
            output_names=["images"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "images": {0: "batch"}},
            check_inputs=inputs,
            sidecar=sidecar,
        )

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
