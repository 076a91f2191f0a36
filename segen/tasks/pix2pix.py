"""`model=pix2pix`'s task: conditional adversarial training of label map -> image (Isola et al. 2017).

Every batch is (images in [-1, 1], label maps of train ids). The discriminator scores
(label map, image) pairs patch by patch; its loss on real and fake pairs is halved, as in the
paper, so it learns more slowly than the generator. The generator minimizes the adversarial
loss plus `lambda_l1` x the L1 distance to the real image (the paper's 100): the L1 term gets
the low frequencies right, the patch discriminator the texture. The losses, the EMA of the
generator and the NaN guard are the GAN task's (segen/tasks/gan.py, segen/callbacks.py).

Learning rates stay constant, then fall linearly to zero over the last `decay_epochs` epochs
(the paper's schedule). Validation logs `val/l1` (mean absolute error in [0, 1] pixel units
of the generated images against the real ones); no metric ranks checkpoints (`monitor`
null): `segen eval` scores them with a segmenter (the FCN-score, segen/evaluation/translation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from segen.errors import ConfigError
from segen.perf import logging_this_step
from segen.tasks.base import Evaluation, Task
from segen.tasks.ema import GeneratorEMA, check_ema_decay
from segen.tasks.gan import LOSSES, discriminator_loss, generator_loss
from segen.viz import Picture, to_uint8


def linear_decay(optimizer: torch.optim.Optimizer, total: int, decay: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per epoch: the LR unchanged, then falling linearly to 0 over the last `decay` epochs of
    `total` (pix2pix's `lambda_rule`: factor min(1, (total - epoch) / (decay + 1))), as torch's
    own schedulers: ConstantLR, then LinearLR from the first epoch whose factor is below 1."""
    decay = min(decay, total)
    first = max(0, total - decay - 1)  # the last epoch at the full LR, where the line starts
    line = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=(total - first) / (decay + 1), end_factor=0.0, total_iters=total - first)
    hold = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=first)
    # Always both parts (even at first == 0), so the state a checkpoint stores has one shape.
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [hold, line], milestones=[first])


class Pix2PixTask(GeneratorEMA, Task):
    """Trains `generator` (label maps -> images) against `discriminator` (label maps, images -> patch logits).

    Logs `train/d_loss`, `train/g_loss`, `train/g_adv`, `train/l1`, `train/d_real`, `train/d_fake`
    and `val/l1`; writes a grid (label | generated | real) of fixed validation examples to
    `<run dir>/samples/epoch_XXX.png` after every epoch.
    """

    needs = frozenset({"masks"})
    batch_target = "masks"
    image_range = "symmetric"  # images in [-1, 1], the range of the generator's tanh
    test_after_fit = False  # scored by `segen eval` with a segmenter (the FCN-score)
    generates = False  # generates from label maps, not from noise: no FID callback

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: Callable,
        optimizer_d: Callable,
        loss: str = "bce",
        lambda_l1: float = 100.0,
        decay_epochs: int = 0,
        ema_decay: float | None = None,
        grid_examples: int = 8,
        monitor: str | None = None,
        monitor_mode: str = "min",
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"model.loss={loss} is not a GAN loss; use one of: {', '.join(LOSSES)}")
        if lambda_l1 < 0:
            raise ConfigError(f"model.lambda_l1 must be >= 0, got {lambda_l1}")
        if decay_epochs < 0:
            raise ConfigError(f"model.decay_epochs must be >= 0, got {decay_epochs}")
        check_ema_decay(ema_decay)
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.loss, self.lambda_l1, self.decay_epochs = loss, lambda_l1, decay_epochs
        self.grid_examples = grid_examples
        self.monitor, self.monitor_mode = monitor, monitor_mode  # read by configs/callbacks
        self.num_classes: int = generator.num_classes
        self.init_ema(ema_decay)
        self._grid: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        real, masks = batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(masks)

        d_real = self.discriminator(masks, real)
        d_fake = self.discriminator(masks, fake.detach())
        d_loss = 0.5 * discriminator_loss(self.loss, d_real, d_fake)  # halved, as in the paper
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        self.discriminator.requires_grad_(False)  # D needs no weight gradients in G's step
        g_adv = generator_loss(self.loss, self.discriminator(masks, fake))
        l1 = F.l1_loss(fake, real)
        g_loss = g_adv + self.lambda_l1 * l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.discriminator.requires_grad_(True)
        self.step_ema()

        if logging_this_step(self):
            probs = self.loss == "bce"
            self.log("train/g_loss", g_loss, prog_bar=True)
            self.log_dict(
                {
                    "train/d_loss": d_loss,
                    "train/g_adv": g_adv,
                    "train/l1": l1 / 2,  # in [0, 1] pixel units
                    "train/d_real": torch.sigmoid(d_real).mean() if probs else d_real.mean(),
                    "train/d_fake": torch.sigmoid(d_fake).mean() if probs else d_fake.mean(),
                },
            )
        # Returned (detached by Lightning) only so that segen's NaN guard sees it.
        return d_loss + g_loss

    def validation_step(self, batch, batch_idx):
        real, masks = batch
        fake = self.sampler(masks)
        self.log("val/l1", F.l1_loss(fake, real) / 2, batch_size=len(real), sync_dist=True, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

    def configure_optimizers(self):
        optimizers = [self.optimizer_g(params=self.generator.parameters()), self.optimizer_d(params=self.discriminator.parameters())]
        total = self.trainer.max_epochs if self._trainer is not None else None
        if not self.decay_epochs:
            return optimizers
        if total is None or total < 1:
            raise ConfigError("model.decay_epochs needs a run length in epochs; set trainer.max_epochs, or model.decay_epochs=0")
        schedulers = [linear_decay(opt, total, self.decay_epochs) for opt in optimizers]
        return optimizers, schedulers

    # -- outputs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, masks: torch.Tensor, seed: int | None = 0, batch_size: int = 32) -> torch.Tensor:
        """Images in [-1, 1] `(N, C, H, W)` (on CPU) for label maps `(N, H, W)` of train ids.

        BatchNorm uses its running statistics and dropout stays on: it is the generator's only
        noise (the paper keeps it at test time). The dropout masks are drawn from a generator
        seeded with `seed`, so the same seed gives the same bytes on CPU; the global RNG is
        left as it was.
        """
        net = self.sampler
        was_training = net.training
        net.eval()
        for module in net.modules():
            if isinstance(module, nn.Dropout):
                module.train()
        cuda = self.device.type == "cuda"
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] if cuda else []
        out = []
        try:
            with torch.random.fork_rng(devices=devices):
                if seed is not None:
                    torch.manual_seed(seed)
                for start in range(0, len(masks), batch_size):
                    out.append(net(masks[start : start + batch_size].to(self.device).long()).float().cpu())
        finally:
            net.train(was_training)
        return torch.cat(out) if out else torch.empty(0, net.channels, net.height, net.width)

    def epoch_picture(self, moment: str, batch) -> Picture | None:
        """At each epoch end: label | generated | real for validation examples spread evenly over
        the split (so a video's consecutive frames do not fill the grid), the same every epoch,
        several side by side, with the class legend."""
        if moment != "train_epoch_end":
            return None
        from segen.outputs.masks import grid_rows_per_line
        from segen.outputs.translations import grid_rows

        dm = self.trainer.datamodule
        if self._grid is None:
            examples = dm.examples("val", len(dm.split_images("val")))
            examples = examples[:: max(1, len(examples) // self.grid_examples)][: self.grid_examples]
            self._grid = (torch.stack([e.mask for e in examples]).long(), torch.stack([e.image for e in examples]))
        masks, real = self._grid
        fake = to_uint8(self.translate(masks, seed=0))
        per_line = grid_rows_per_line(len(masks), *masks.shape[-2:])
        info = dm.info
        return Picture(grid_rows(masks, fake, real, info), 3 * per_line, f"epoch_{self.current_epoch:03d}", "samples",
                       legend=(info.mask_class_names, info.mask_palette()))

    # -- the task contract: segen eval, segen sample, segen export -----------------------------------
    @classmethod
    def check_eval_request(cls, cfg: DictConfig) -> None:
        from segen.evaluation.translation import check_request

        check_request(cfg)

    def evaluate(self, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
        from segen.evaluation.translation import evaluate_translation

        return evaluate_translation(self, cfg, datamodule, model, data)

    @classmethod
    def check_sample_request(cls, cfg: DictConfig, model: str) -> None:
        from segen.outputs.translations import check_request

        check_request(cfg, model)

    def write_samples(self, cfg: DictConfig, datamodule, out: Path, model: str) -> list[Path]:
        from segen.outputs.translations import write_translations

        return write_translations(self, cfg, datamodule, out)

    def export_spec(self, datamodule):
        """`segen export`: the sampling generator, label maps (train ids, int64) -> images in
        [-1, 1]; batch size is free, the size is the training size. Exported in eval mode, so
        dropout is off: the exported net is the deterministic mean of segen's samples."""
        from segen.export import ExportSpec

        info = datamodule.info
        h, w = info.image_size
        k = self.num_classes

        def inputs(batch: int) -> tuple[torch.Tensor, ...]:
            return (torch.randint(0, k, (batch, h, w), generator=torch.Generator().manual_seed(batch)),)

        return ExportSpec(
            module=self.sampler,
            example_inputs=inputs(2),
            input_names=["labels"],
            output_names=["images"],
            dynamic_axes={"labels": {0: "batch"}, "images": {0: "batch"}},
            check_inputs=inputs,
            sidecar={
                "task": "translation",
                "input": {"name": "labels", "shape": ["batch", h, w], "dtype": "int64",
                          "meaning": f"train ids 0..{k - 1} per pixel (255 = void); the dataset's label ids map to them as segen's data module does"},
                "output": {"name": "images", "shape": ["batch", info.channels, h, w], "layout": "NCHW", "dtype": "float32",
                           "value_range": [-1.0, 1.0], "postprocess": "uint8_image = round((x + 1) * 127.5), clipped to [0, 255]"},
                "mask_class_names": list(info.mask_class_names),
                "dropout": "off (eval mode); segen sample keeps it on as the paper does",
            },
        )
