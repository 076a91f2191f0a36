"""What `segen sample` writes for a generator (dcgan, cgan).

Noise comes from a generator seeded with `seed=` and the net runs in eval mode, so the same
seed writes the same bytes on CPU. Into `out`:
- `grid.png`: all images; for cgan with `per_class=K`, one row per class;
- `images/0000.png`, ... (cgan: `images/0000_<class>.png`), or with `format=npz` one
  `samples.npz` (`images` uint8 `(N, C, H, W)`, and `labels`, `class_names` for cgan);
- cgan with `per_class=K`: also `grid_<label>_<class>.png` per class.

cgan picks classes with `labels=[3,7]` (indices or class names; `n` images, the labels taken
in turn) or `per_class=K` (K images of each class in `labels`, default every class).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from segen.errors import ConfigError, IncompatibleError
from segen.viz import save_grid, save_images, to_uint8

FORMATS = ("png", "npz")


def check_request(cfg: DictConfig, model: str) -> None:
    """Fail on an impossible request before the model or data are loaded."""
    if (cfg.get("format") or "png") not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not supported for {model}; use format=png or format=npz")
    if cfg.get("input"):
        raise IncompatibleError(f"{model} draws images from noise, so input= does not apply; drop it")
    if not isinstance(cfg.n, int) or isinstance(cfg.n, bool) or cfg.n < 1:
        raise ConfigError(f"n={cfg.n} is not a number of images; pass a positive integer, e.g. n=64")
    per_class = cfg.get("per_class")
    if per_class is not None and (not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1):
        raise ConfigError(f"per_class={per_class} is not a number of images; pass a positive integer, e.g. per_class=8")


def class_labels(requested, class_names: list[str]) -> list[int]:
    """`labels=` as class indices: each entry an index or a class name; all classes when null."""
    if requested is None:
        return list(range(len(class_names)))
    if not isinstance(requested, (list, tuple, ListConfig)):
        requested = [requested]
    if len(requested) == 0:
        raise ConfigError("labels=[] asks for no class; drop labels= for all classes or list some, e.g. labels=[0,2]")
    labels = []
    for item in requested:
        if isinstance(item, str) and item in class_names:
            labels.append(class_names.index(item))
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(class_names):
            labels.append(item)
        else:
            raise ConfigError(
                f"label {item!r} is not a class of this model; use 0..{len(class_names) - 1} or a class name "
                f"({', '.join(class_names)})"
            )
    return labels


def safe_name(text: str) -> str:
    """A class name usable in a file name on every OS."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "class"


def write_generated(task, cfg: DictConfig, class_names: list[str], out: Path, model: str) -> list[Path]:
    """Draw the requested images from `task.sample` and write the grid(s) and the images."""
    per_class, requested = cfg.get("per_class"), cfg.get("labels")
    if not task.conditional:
        if per_class is not None or requested is not None:
            raise IncompatibleError(f"{model} is unconditional, so labels= and per_class= do not apply; drop them")
        labels, count, nrow = None, cfg.n, math.ceil(math.sqrt(cfg.n))
    else:
        classes = class_labels(requested, class_names)
        if per_class is not None:  # class-major: one grid row per class
            labels = torch.tensor(classes).repeat_interleave(per_class)
            nrow = per_class
        else:
            labels = torch.tensor(classes).repeat(math.ceil(cfg.n / len(classes)))[: cfg.n]
            nrow = math.ceil(math.sqrt(cfg.n))
        count = len(labels)

    noise = torch.randn(count, task.latent_dim, generator=torch.Generator().manual_seed(int(cfg.seed)))
    task.eval()
    images = to_uint8(task.sample(noise, labels))

    paths = [save_grid(images, out / "grid.png", nrow=nrow)]
    names = [f"{i:04d}" if labels is None else f"{i:04d}_{safe_name(class_names[int(y)])}" for i, y in enumerate(labels if labels is not None else range(count))]
    if task.conditional and per_class is not None:
        for label in dict.fromkeys(labels.tolist()):
            chosen = images[labels == label]
            paths.append(save_grid(chosen, out / f"grid_{label}_{safe_name(class_names[label])}.png", nrow=per_class))
    if cfg.get("format") == "npz":
        arrays = {"images": images.numpy()}
        if labels is not None:
            arrays.update(labels=labels.numpy(), class_names=np.array(class_names))
        path = out / "samples.npz"
        np.savez_compressed(path, **arrays)
        paths.append(path)
    else:
        paths += save_images(images, out / "images", names)
    return paths
