"""`segen sample ckpt=<unet ckpt> input=<synthetic dir> format=freemask [multiple=2] out=<new dir>`.

FreeMask's filter (Yang et al., NeurIPS 2023) for generated pairs: a segmenter trained on real
images scores every synthetic pair once; a pixel whose cross-entropy exceeds `multiple` x the
mean cross-entropy of its class (over all labelled pixels of that class in the whole synthetic
set) is where the generator most likely drew something other than its label says, and becomes
ignore (255). The loss is plain cross-entropy of the segmenter's logits at the data's training
size, in float64, without class weights; ignored pixels stay ignored and do not enter the means.

Written to `out`, a filtered copy in the same layout (photos re-encoded as read, at the
segmenter's data size), plus `scores.json`:

    {"multiple": m, "segmenter": ckpt, "class_mean_loss": {class: mean CE or null},
     "ignored_fraction": share of labelled pixels set to 255,
     "images": {stem: {"mean_loss": mean CE over its labelled pixels (before filtering),
                       "ignored": share of its labelled pixels set to 255}}}

`data.synthetic_sampling=loss` then draws each pair with a probability proportional to its
`mean_loss` (FreeMask's re-sampling of the hard label maps). The filter reads only the
synthetic folder and the checkpoint: no val or test image is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from segen.console import console
from segen.data.info import IGNORE_INDEX
from segen.errors import ConfigError

DEFAULT_MULTIPLE = 2.0


def check_request(cfg: DictConfig) -> None:
    if not cfg.get("input"):
        raise ConfigError("format=freemask filters a synthetic folder; pass input=<dir written by segen sample ckpt=<pix2pix> format=folder_seg>")
    if not cfg.get("out"):
        raise ConfigError("format=freemask writes a filtered copy; pass out=<new folder> (the input folder is left as it is)")
    if Path(str(cfg.out)).expanduser().resolve() == Path(str(cfg.input)).expanduser().resolve():
        raise ConfigError("out= is the input folder; pass another folder for the filtered copy")
    multiple = cfg.get("multiple")
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, (int, float)) or multiple <= 0):
        raise ConfigError(f"multiple={multiple} must be a positive number (FreeMask: pixels with loss above multiple x their class's mean become ignore)")


@torch.no_grad()
def pixel_losses(task, datamodule, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Per-pixel cross-entropy `(N, H, W)` float64 of the segmenter on uint8 `images` against
    train-id `masks` (0 where the mask is 255); float64, so that a pixel's side of the threshold
    does not depend on rounding."""
    task.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = datamodule.normalize(images[start : start + batch_size].to(task.device))
        logits = task(x).double()
        target = masks[start : start + batch_size].to(task.device).long()
        out.append(F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none").cpu())
    return torch.cat(out)


def class_mean_losses(losses: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean loss of each class's labelled pixels over the whole set `(K,)` float64 (NaN: absent)."""
    flat, labels = losses.reshape(-1).double(), masks.reshape(-1).long()
    valid = labels != IGNORE_INDEX
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels[valid], flat[valid])
    counts = torch.bincount(labels[valid], minlength=num_classes)[:num_classes].double()
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))


def noisy_pixels(losses: torch.Tensor, masks: torch.Tensor, class_means: torch.Tensor, multiple: float) -> torch.Tensor:
    """Bool `(N, H, W)`: labelled pixels whose loss exceeds `multiple` x their class's mean."""
    valid = masks != IGNORE_INDEX
    threshold = multiple * class_means[masks.long().clamp(max=len(class_means) - 1)]
    return valid & (losses.double() > threshold)


def write_filtered(task, cfg: DictConfig, datamodule, out: Path) -> list[Path]:
    from segen.data.synthetic import MANIFEST, SCORES, read_synthetic, write_classes
    from segen.outputs.synthetic import write_masks
    from segen.viz import save_images

    check_request(cfg)
    info = datamodule.info
    source = Path(str(cfg.input)).expanduser()
    multiple = float(cfg.get("multiple") or DEFAULT_MULTIPLE)
    pairs = read_synthetic(source, info.mask_class_names, info.image_size, info.channels)
    losses = pixel_losses(task, datamodule, pairs.images, pairs.masks)
    means = class_mean_losses(losses, pairs.masks, len(info.mask_class_names))
    noisy = noisy_pixels(losses, pairs.masks, means, multiple)
    filtered = torch.where(noisy, torch.full_like(pairs.masks, IGNORE_INDEX), pairs.masks)

    valid = pairs.masks != IGNORE_INDEX
    labelled = valid.flatten(1).sum(1).clamp(min=1)
    per_image_loss = (losses * valid).flatten(1).sum(1) / labelled
    per_image_ignored = noisy.flatten(1).sum(1) / labelled
    scores = {
        "multiple": multiple,
        "segmenter": str(Path(str(cfg.ckpt)).expanduser().resolve()),
        "source": str(source),
        "class_mean_loss": {n: (None if torch.isnan(v) else round(float(v), 6)) for n, v in zip(info.mask_class_names, means, strict=True)},
        "ignored_fraction": round(float(noisy.sum() / valid.sum().clamp(min=1)), 6),
        "images": {s: {"mean_loss": round(float(loss), 6), "ignored": round(float(ign), 6)}
                   for s, loss, ign in zip(pairs.names, per_image_loss, per_image_ignored, strict=True)},
    }
    written = [write_classes(out, info.mask_class_names)]
    written += save_images(pairs.images, out / "train" / "images", pairs.names)
    written += write_masks(filtered, out / "train" / "masks", pairs.names)
    (out / SCORES).write_text(json.dumps(scores, indent=2) + "\n")
    written.append(out / SCORES)
    if (source / MANIFEST).is_file():  # keep what made the pairs next to what filtered them
        (out / MANIFEST).write_text((source / MANIFEST).read_text())
        written.append(out / MANIFEST)
    console.print(f"[bold]Filtered[/] {len(pairs)} synthetic pairs (multiple={multiple:g}): "
                  f"{100 * scores['ignored_fraction']:.1f}% of labelled pixels set to ignore; wrote {out} and {SCORES}", soft_wrap=True)
    return written
