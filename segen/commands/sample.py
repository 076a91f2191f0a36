"""`segen sample ckpt=PATH`: draw images from a generative model stored in a checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig

from segen.checkpoint import checkpoint_config, load_checkpoint
from segen.errors import IncompatibleError


def main(cfg: DictConfig):
    run_cfg, stored = checkpoint_config(load_checkpoint(cfg.ckpt))
    model = stored.get("model", "this model")
    from hydra.utils import get_class

    if not callable(getattr(get_class(run_cfg.model._target_), "sample", None)):
        raise IncompatibleError(
            f"{model} is not a generative model, so there is nothing to sample; "
            f"use `segen eval ckpt={cfg.ckpt}` to evaluate it, or pass a generator checkpoint"
        )
    raise IncompatibleError(f"sampling from {model} checkpoints is not available in this version of segen")
