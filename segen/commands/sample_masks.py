"""`segen sample ckpt=<segmentation ckpt> [input=FILE|DIR] [format=color|labelids]`.

Predicts masks for input images (or, with no input, for the first `n` validation images) and
writes, per image: `<name>_mask.png` (colourised with the dataset's palette: the official one
for Cityscapes), `<name>_overlay.png` (image blended with the mask) and `<name>_grid.png`
(image | prediction | ground truth when there is one, else image | prediction | overlay), plus
`grid.png` with all of them. `format=labelids` writes instead `<name>_pred.png`: single-channel
Cityscapes label ids at the ground-truth (or input) resolution, as the official evaluation
server and cityscapesScripts read them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from segen.errors import ConfigError, DataError
from segen.viz import colorize, default_palette, overlay, save_grid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("color", "labelids")


def _input_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if files:
            return files
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    raise DataError(f"input={path} does not exist; pass an image file or a folder of images")


def _read_image(path: Path, channels: int) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read {path} as an image ({err})") from err
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _model_size(datamodule) -> tuple[int, int] | None:
    size = getattr(datamodule, "image_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


@torch.no_grad()
def predict(task, datamodule, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 images `(N, C, h, w)` -> predicted train ids `(N, H, W)` (long) at `out_size`
    (default: the input size). Images are resized to the training resolution first."""
    task.eval()
    size = _model_size(datamodule)
    x = datamodule.normalize(images)
    in_size = tuple(images.shape[-2:])
    if size is not None and in_size != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    logits = task(x)
    return task.resize_logits(logits, out_size or in_size).argmax(1)


def _palette(datamodule, num_classes: int) -> torch.Tensor:
    palette = getattr(datamodule, "palette", None)
    return palette if palette is not None else default_palette(num_classes)


def _write_labelids(pred: torch.Tensor, path: Path, datamodule) -> Path:
    from PIL import Image

    lut = getattr(datamodule, "train_to_label_lut", None)
    ids = pred.to(torch.uint8).numpy()
    if callable(lut):
        ids = lut()[ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids, mode="L").save(path)
    return path


def sample_masks(cfg: DictConfig, run_cfg: DictConfig, task, datamodule) -> list[Path]:
    """Write mask pictures (or label-id PNGs) for `cfg.input`, or for validation images; return
    the paths written. Reads `cfg.input`, `cfg.format`, `cfg.n`, `cfg.out` (all optional)."""
    fmt = cfg.get("format") or "color"
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not a mask format; use format=color or format=labelids")
    out_dir = Path(cfg.out) if cfg.get("out") else _default_out_dir()
    n = int(cfg.get("n") or 8)
    channels = datamodule.channels
    palette = _palette(datamodule, task.num_classes)
    names: list[str]
    truths: list[torch.Tensor | None]
    full_sizes: list[tuple[int, int] | None]

    from segen.data.cityscapes import cityscapes_name

    if cfg.get("input"):
        files = _input_files(Path(str(cfg.input)).expanduser())
        images = [_read_image(f, channels) for f in files]
        names = [cityscapes_name(f) for f in files]
        truths = [None] * len(files)
        full_sizes = [tuple(im.shape[-2:]) for im in images]
    else:
        datamodule.setup("validate")
        val = datamodule.splits["val"]
        count = min(n, len(val))
        batch_images, batch_masks = val.__getitems__(list(range(count)))
        images = list(batch_images)
        truths = list(batch_masks)
        pairs = getattr(datamodule, "files", {}).get("val")
        if pairs:  # Cityscapes: real names and the original label size, read from the PNG header
            from PIL import Image

            names = [cityscapes_name(img) for img, _ in pairs[:count]]
            full_sizes = []
            for _, lbl in pairs[:count]:
                with Image.open(lbl) as im:
                    full_sizes.append((im.size[1], im.size[0]))
        else:
            names = [f"val_{i:04d}" for i in range(count)]
            full_sizes = [None] * count

    written: list[Path] = []
    rows: list[torch.Tensor] = []
    for image, truth, name, full in zip(images, truths, names, full_sizes, strict=True):
        if fmt == "labelids":
            pred = predict(task, datamodule, image[None], out_size=full)[0]
            written.append(_write_labelids(pred, out_dir / f"{name}_pred.png", datamodule))
            continue
        pred = predict(task, datamodule, image[None])[0]
        rgb = image.repeat(3, 1, 1) if image.shape[0] == 1 else image
        mask = colorize(pred[None], palette)
        blend = overlay(rgb[None], mask)
        third = colorize(truth[None], palette) if truth is not None else blend
        row = torch.cat([rgb[None], mask, third])
        written.append(save_grid(mask, out_dir / f"{name}_mask.png", nrow=1, padding=0))
        written.append(save_grid(blend, out_dir / f"{name}_overlay.png", nrow=1, padding=0))
        written.append(save_grid(row, out_dir / f"{name}_grid.png", nrow=3))
        if not rows or rows[0].shape == row.shape:
            rows.append(row)
    if rows:
        written.append(save_grid(torch.cat(rows), out_dir / "grid.png", nrow=3))
    from segen.console import console

    what = "label-id PNGs" if fmt == "labelids" else "masks, overlays and grids"
    console.print(f"[bold]Wrote[/] {what} for {len(images)} image(s) to {out_dir}")
    return written


def _default_out_dir() -> Path:
    from segen.commands.common import run_dir

    return run_dir() / "samples"
