"""`val/fid` during training: `segen train model=dcgan callbacks=fid` (configs/callbacks/fid.yaml).

Every `every_n_epochs` epochs, `n_fake` images from the task's sampler (the EMA generator when
there is one; the same noise every time) are scored against `n_real` training images, and the
FID is logged as `val/fid`, so `model.monitor=val/fid model.monitor_mode=min` makes best.ckpt
the checkpoint with the lowest FID. With classifier features and `confidence_threshold`, the
share of those images the classifier is confident about is logged too, as `val/confident`. Off by default: even a small FID costs a feature pass over
n_fake images, minutes with Inception on a CPU. With a few hundred images the number is biased
upwards (FID shrinks as n grows); it ranks checkpoints of one run, it is not the paper number
`segen eval` gives.

The real features are computed once per run, through the same disk cache as `segen eval`.
Every rank computes the same value (same noise, same images), so no rank waits for another.
"""

from __future__ import annotations

import pytorch_lightning as pl

from segen.errors import ConfigError, IncompatibleError
from segen.metrics import features as feature_nets
from segen.metrics.cache import real_features
from segen.metrics.features import FEATURES, FeatureNet, build_feature_net
from segen.metrics.generative import real_subset, score_generator


class FIDCallback(pl.Callback):
    def __init__(
        self,
        every_n_epochs: int = 5,
        n_fake: int = 1000,
        n_real: int = 1000,
        split: str = "train",
        features: str = "inception",
        classifier_ckpt: str | None = None,
        inception_weights: str | None = None,
        download_weights: bool = False,
        antialias: bool = False,
        batch_size: int = 250,
        cache_dir: str | None = None,
        seed: int = 0,
        confidence_threshold: float | None = None,
    ):
        for name, value, least in (("every_n_epochs", every_n_epochs, 1), ("n_fake", n_fake, 2), ("n_real", n_real, 2), ("batch_size", batch_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"callbacks.fid.{name}={value} must be an integer >= {least}")
        if split not in ("train", "val", "test"):
            raise ConfigError(f"callbacks.fid.split={split} is not a split; use train, val or test")
        if features not in FEATURES:
            raise ConfigError(f"callbacks.fid.features={features} is not a feature network; use one of: {', '.join(FEATURES)}")
        if features == "classifier" and not classifier_ckpt:
            raise ConfigError("callbacks.fid.features=classifier needs callbacks.fid.classifier_ckpt=<checkpoint of `segen train model=cnn`>")
        self.every_n_epochs, self.n_fake, self.n_real, self.split = every_n_epochs, n_fake, n_real, split
        self.features, self.classifier_ckpt, self.antialias = features, classifier_ckpt, antialias
        self.batch_size, self.cache_dir, self.seed = batch_size, cache_dir, seed
        if confidence_threshold is not None and not 0 <= confidence_threshold < 1:
            raise ConfigError(f"callbacks.fid.confidence_threshold={confidence_threshold} must be a probability in [0, 1) or null")
        # The confident share means something only for a classifier of the data's classes.
        self.confidence_threshold = confidence_threshold if features == "classifier" else None
        # Missing Inception weights fail now, before training, not after the first N epochs.
        self.weights = feature_nets.inception_weights(inception_weights, download_weights) if features == "inception" else None
        self.net: FeatureNet | None = None
        self.real = None

    def _prepare(self, trainer: pl.Trainer, pl_module) -> None:
        if not pl_module.generates:
            raise IncompatibleError("callbacks=fid scores generators; this model has no sampler (use it with model=dcgan or model=cgan)")
        datamodule = trainer.datamodule
        self.net = build_feature_net(self.features, self.classifier_ckpt, self.weights, antialias=self.antialias).to(pl_module.device)
        images = real_subset(datamodule.split_images(self.split), self.n_real)
        label = f"{datamodule.info.name}-{self.split}-{len(images)}-{self.net.name}"
        self.real = real_features(images, self.net, self.cache_dir, label, self.batch_size, pl_module.device).features

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self.net is None:
            self._prepare(trainer, pl_module)
        self.net.to(pl_module.device)
        scores = score_generator(
            pl_module, self.net, self.real, self.n_fake, seed=self.seed, batch_size=self.batch_size,
            fid=True, kid=False, device=pl_module.device,
            confidence_threshold=self.net.confidence_probability(self.confidence_threshold) if self.confidence_threshold is not None else None,
        )
        pl_module.log("val/fid", scores["fid"], prog_bar=True)
        if "confident" in scores:
            pl_module.log("val/confident", scores["confident"])
