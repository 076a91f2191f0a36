"""`segen sample ckpt=<pix2pix ckpt> format=folder_seg [split=train] [per_map=K] [changed_maps=true] [seed=42]`.

A synthetic training set for `data.synthetic=<out>` (segen/data/synthetic.py): every label map
of the split (or of `input=`; `data.max_images=` limits a split) is translated `per_map` times
(default 1), each time with other dropout masks (the generator's noise), and written in the
`data=folder_seg` layout:

    <out>/classes.yaml                 the dataset's classes in train-id order (masks hold train ids)
    <out>/train/images/<name>_k<j>.png generated photo j of the label map <name>
    <out>/train/masks/<name>_k<j>.png  the label map it was generated from (255 = ignore)
    <out>/synthetic.json               what made it: checkpoint, split, per_map, seeds, changed_maps
    <out>/grid.png                     label | generated k0 | k1 ... for the first maps

`changed_maps=true`: copies j >= 1 are generated from a changed label map rather than the
original: mirrored left-right with probability 1/2, zoomed in by a factor drawn log-uniformly
in [1, 1.5] (nearest neighbour) and cropped back at a random offset. These changes keep every
pixel's class; they move and rescale the layout, so the generator draws new scenes. Copy 0 is
always the original map.

Reproducible: copy j's dropout is seeded with `seed * 1000 + j` and its map change with a
generator seeded the same way, so the same checkpoint, maps and seed write the same bytes on CPU.
Only `split=train` is allowed: generated pairs of val or test maps would leak those maps into
training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from segen.console import console
from segen.data.info import IGNORE_INDEX
from segen.errors import ConfigError

MAX_ZOOM = 1.5


def check_request(cfg: DictConfig) -> None:
    per_map = cfg.get("per_map")
    if per_map is not None and (not isinstance(per_map, int) or isinstance(per_map, bool) or per_map < 1):
        raise ConfigError(f"per_map={per_map} is not a number of photos per label map; pass a positive integer, e.g. per_map=2")
    split = cfg.get("split") or "train"
    if not cfg.get("input") and split != "train":
        raise ConfigError(f"format=folder_seg writes a training set, so split={split} would put {split} label maps into training; use split=train (or input=<label maps>)")
    if cfg.get("changed_maps") not in (None, True, False):
        raise ConfigError(f"changed_maps={cfg.changed_maps} must be true or false")


def copy_seed(seed: int, copy: int) -> int:
    return int(seed) * 1000 + copy


def change_maps(masks: torch.Tensor, seed: int, max_zoom: float = MAX_ZOOM) -> torch.Tensor:
    """Class-preserving changes of train-id maps `(N, H, W)`: a random left-right mirror, a zoom-in
    by s in [1, max_zoom] (log-uniform, nearest neighbour) and a random crop back to (H, W)."""
    gen = torch.Generator().manual_seed(seed)
    n, h, w = masks.shape
    flips = torch.rand(n, generator=gen) < 0.5
    scales = torch.exp(torch.empty(n).uniform_(0.0, math.log(max_zoom), generator=gen))
    out = []
    for mask, flip, s in zip(masks, flips.tolist(), scales.tolist(), strict=True):
        mask = mask.flip(-1) if flip else mask
        sh, sw = max(h, round(h * s)), max(w, round(w * s))
        big = F.interpolate(mask[None, None].float(), size=(sh, sw), mode="nearest-exact")[0, 0].to(masks.dtype)
        y = int(torch.randint(0, sh - h + 1, (), generator=gen))
        x = int(torch.randint(0, sw - w + 1, (), generator=gen))
        out.append(big[y : y + h, x : x + w])
    return torch.stack(out)


def source_maps(cfg: DictConfig, datamodule) -> tuple[torch.Tensor, list[str]]:
    """Train-id maps `(N, H, W)` and their names: `input=` files, or every map of the split."""
    from segen.outputs.translations import input_label_maps

    info = datamodule.info
    if cfg.get("input"):
        return input_label_maps(Path(str(cfg.input)).expanduser(), info)
    split = cfg.get("split") or "train"
    count = len(datamodule.split_masks(split)[1])
    examples = datamodule.examples(split, count)
    return torch.stack([e.mask for e in examples]).long(), [info.photo_name(Path(e.name)) for e in examples]


def write_masks(masks: torch.Tensor, folder: Path, names: list[str]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for mask, name in zip(masks, names, strict=True):
        path = folder / f"{name}.png"
        Image.fromarray(mask.to(torch.uint8).numpy(), mode="L").save(path)
        paths.append(path)
    return paths


def write_synthetic(task, cfg: DictConfig, datamodule, out: Path) -> list[Path]:
    from segen.data.synthetic import MANIFEST, write_classes
    from segen.outputs.translations import save_translation_grid
    from segen.viz import save_images, to_uint8

    check_request(cfg)
    info = datamodule.info
    per_map = int(cfg.get("per_map") or 1)
    changed = bool(cfg.get("changed_maps"))
    maps, names = source_maps(cfg, datamodule)
    if len(set(names)) != len(names):
        raise ConfigError("two label maps share a name, so their photos would overwrite each other; rename one")
    written = [write_classes(out, info.mask_class_names)]
    photos_dir, masks_dir = out / "train" / "images", out / "train" / "masks"
    firsts = []
    for j in range(per_map):
        seed = copy_seed(cfg.seed, j)
        source = change_maps(maps, seed) if changed and j > 0 else maps
        fake = to_uint8(task.translate(source, seed=seed))
        copy_names = [f"{name}_k{j}" for name in names]
        written += save_images(fake, photos_dir, copy_names)
        written += write_masks(source, masks_dir, copy_names)
        firsts.append((source[:4], fake[:4]))
    manifest = {
        "generator": str(Path(str(cfg.ckpt)).expanduser().resolve()), "split": None if cfg.get("input") else (cfg.get("split") or "train"),
        "input": str(cfg.input) if cfg.get("input") else None, "label_maps": len(names), "per_map": per_map,
        "changed_maps": changed, "seed": int(cfg.seed), "copy_seeds": [copy_seed(cfg.seed, j) for j in range(per_map)],
        "pairs": len(names) * per_map, "ignore": IGNORE_INDEX,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    written.append(out / MANIFEST)
    # A look at the first maps: label | generated, one row per copy.
    grid_masks = torch.cat([m for m, _ in firsts])
    grid_fake = torch.cat([f for _, f in firsts])
    written.append(save_translation_grid(out / "grid.png", grid_masks, grid_fake, None, info))
    console.print(f"[bold]Wrote[/] {len(names) * per_map} synthetic pairs ({len(names)} label maps x {per_map}"
                  f"{', changed maps after the first' if changed else ''}) to {out} (data=folder_seg layout; train with data.synthetic={out})", soft_wrap=True)
    return written

