"""What segen adds to Lightning checkpoints, and how it reads them back safely.

A checkpoint carries the resolved run config as a YAML string (plus the group choices), so
`sample` and `eval` rebuild the model from `ckpt=` alone. Everything stored is plain data,
which lets every read use `torch.load(weights_only=True)`: a crafted pickle cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from segen import __version__
from segen.errors import CheckpointError

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
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a PyTorch file: {str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a segen checkpoint (no stored config); pass a checkpoint written by `segen train`")
    return ckpt


def checkpoint_config(ckpt: dict) -> tuple[DictConfig, dict[str, str]]:
    """The run config and group choices stored by `ConfigInCheckpoint`."""
    return OmegaConf.create(ckpt[KEY]["config"]), dict(ckpt[KEY].get("choices", {}))
