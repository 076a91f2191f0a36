"""What segen adds to Lightning checkpoints, and how it reads them back safely.

A checkpoint carries the resolved run config as a YAML string (plus the group choices), so
`sample` and `eval` rebuild the model from `ckpt=` alone. Everything stored is plain data,
which lets every read use `torch.load(weights_only=True)`: a crafted pickle cannot run code.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint

from segen import __version__
from segen.errors import CheckpointError
from segen.io import save_tensors

KEY = "segen"


class ConfigInCheckpoint(pl.Callback):
    """Store the resolved config and group choices in every checkpoint Lightning writes."""

    def __init__(self, cfg: DictConfig, choices: dict[str, str]):
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        self.choices = {k: str(v) for k, v in choices.items() if v is not None}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[KEY] = {"version": __version__, "config": self.config_yaml, "choices": self.choices}


def load_checkpoint(path: str | Path) -> dict:
    """Load a segen checkpoint on CPU with `weights_only=True`; every failure is one line."""
    path = Path(path).expanduser()
    if not path.is_file():
        if path.name == "best.ckpt" and (path.parent / "last.ckpt").is_file():
            # Runs that monitor nothing (model.monitor: null, e.g. recipe cnn_cifar10, generators
            # whose best is their last) keep only last.ckpt.
            raise CheckpointError(f"checkpoint {path} does not exist: this run keeps only the last one; pass ckpt={path.parent / 'last.ckpt'}")
        raise CheckpointError(f"checkpoint {path} does not exist; pass ckpt=<run dir>/checkpoints/best.ckpt or last.ckpt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted save?); use another checkpoint of the run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"checkpoint {path} contains objects other than tensors and plain data; refused to load it "
                "because unpickling them could run arbitrary code"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0]})") from None
    except Exception as err:  # torch.load fails in many ways on foreign files (KeyError, EOFError...)
        detail = (str(err).splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a PyTorch file: {type(err).__name__}: {detail})") from None
    if not isinstance(ckpt, dict) or KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a segen checkpoint (no stored config); pass a checkpoint written by `segen train`")
    return ckpt


# Model parts whose class moved since checkpoints were written, by (old target, a key only the old
# form has): segen 0.1.0's dcgan nets held the latent code (now segen/models/latent_code.py).
MOVED_TARGETS = {
    ("segen.models.dcgan.Generator", "code_classes"): "segen.models.latent_code.generator",
    ("segen.models.dcgan.Discriminator", "code_classes"): "segen.models.latent_code.discriminator",
}


def checkpoint_config(ckpt: dict) -> tuple[DictConfig, dict[str, str]]:
    """The run config and group choices stored by `ConfigInCheckpoint`, with moved model parts
    pointed at their new place (the weights' keys follow in the modules' load hooks)."""
    cfg = OmegaConf.create(ckpt[KEY]["config"])
    for part in (cfg.get("model") or {}).values():
        if isinstance(part, DictConfig):
            moved = next((new for (old, key), new in MOVED_TARGETS.items() if part.get("_target_") == old and key in part), None)
            if moved is not None:
                part._target_ = moved
    return cfg, dict(ckpt[KEY].get("choices", {}))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that never leave a truncated file; reads that never run pickled code.

    A save goes through `segen.io.atomic_write` (temporary file, fsync, rename): a kill at any
    moment leaves either the old complete checkpoint or the new complete one. Every load Lightning does
    (resume, `ckpt_path="best"`) goes through `weights_only=True`.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_tensors(path, checkpoint)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path)


class RNGStateInCheckpoint(pl.Callback):
    """Save and restore the torch, CUDA, numpy and Python RNG states, so a resumed run draws
    the same shuffles, augmentations and dropout masks as one that never stopped. Stored as
    tensors and plain numbers so the checkpoint stays `weights_only`-loadable."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        np_state = states["numpy"]
        np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached"]))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))


class LastCheckpoint(Checkpoint):
    """`last.ckpt`: the newest state of the run, whatever the monitored metric does.

    Lightning's `ModelCheckpoint(save_last=True)` rewrites `last.ckpt` only in a step where it
    also wrote a top-k checkpoint (and at train end only if it never saved), so once the metric
    stops improving `last.ckpt` freezes: resuming then retrains epochs and `sample`/`eval` read
    stale weights. This callback writes it at the end of every epoch (after validation and the
    best.ckpt update, so it carries the current best-score state), every `every_n_train_steps`
    steps if set, and when training ends. It is a `Checkpoint`, so Lightning runs it after the
    other callbacks; list it after `ModelCheckpoint`. The write goes through the trainer's
    checkpoint IO (`AtomicCheckpointIO`), so it is atomic.
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_train_steps: int = 0):
        self.dirpath = Path(dirpath)
        self.path = self.dirpath / f"{filename}.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self._written_at: int | None = None  # global step of the last write

    def _write(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self._written_at = trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        # A resumed run's state is on disk already: a resumed finished run rewrites nothing.
        self._written_at = trainer.global_step if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_train_steps > 0 and trainer.global_step % self.every_n_train_steps == 0:
            self._write(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Always, even right after a step-based write: this one holds the validated epoch.
        self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._written_at != trainer.global_step:
            self._write(trainer)
