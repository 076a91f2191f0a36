"""`segen sample ckpt=<segmentation ckpt> [input=FILE|DIR] [format=color|labelids]`.

Predicts masks for input images (or, with no input, for the first `n` validation images) and
writes, in the same layout as the generators:
- `grid.png`: one row per image: image | prediction | ground truth (or, for inputs without
  labels, image | prediction | overlay), several rows side by side so the grid stays near
  square, with a colour legend of the classes below;
- `images/<name>_mask.png` (colourised with the dataset's palette) and `images/<name>_overlay.png`
  (image blended with the mask), named after the input file (`DataInfo.output_name`).
`format=labelids` writes instead `images/<name>_pred.png`: single-channel label ids in the
dataset's own ids (`DataInfo.to_label_ids`, e.g. the official Cityscapes ids) at the original
label (or input) resolution, as the dataset's own evaluation tools read them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from segen.console import console
from segen.data.in_memory import Example
from segen.errors import ConfigError, DataError, IncompatibleError
from segen.viz import colorize, legend, overlay, save_grid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FORMATS = ("color", "labelids")
DEFAULT_COUNT = 8  # validation images when `n` is not given


def input_files(path: Path) -> list[Path]:
    """An image file, or every image below a folder (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if files:
            return files
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    raise DataError(f"input={path} does not exist; pass an image file or a folder of images")


def read_input(path: Path, channels: int) -> torch.Tensor:
    """uint8 `(C, H, W)` at the file's own size, with the model's number of channels."""
    from segen.data.files import read_image

    try:
        return torch.from_numpy(read_image(path, channels))
    except OSError as err:
        raise DataError(f"cannot read {path} as an image ({err}); replace it or leave it out of input=") from err


@torch.no_grad()
def predict(task, datamodule, images: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 images `(N, C, h, w)` -> predicted train ids `(N, H, W)` (long) at `out_size`
    (default: the input size). Images are resized to the training resolution first."""
    task.eval()
    size = datamodule.info.image_size
    x = datamodule.normalize(images)
    in_size = tuple(images.shape[-2:])
    if in_size != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    logits = task(x)
    return task.resize_logits(logits, out_size or in_size).argmax(1)


def write_label_ids(train_ids: torch.Tensor, path: Path, info) -> Path:
    from PIL import Image

    ids = info.label_ids(train_ids.to(torch.uint8).numpy()).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids, mode="L").save(path)
    return path


def requested_examples(cfg: DictConfig, datamodule) -> list[Example]:
    """The images to predict: `input=` files (named by the dataset's convention), or val images."""
    info = datamodule.info
    if cfg.get("input"):
        files = input_files(Path(str(cfg.input)).expanduser())
        return [Example(read_input(f, info.channels), None, info.output_name(f)) for f in files]
    return datamodule.examples("val", int(cfg.get("n") or DEFAULT_COUNT))


def grid_columns(examples: list[Example]) -> str:
    """What grid.png's three columns show: the truth mask where the examples have one (validation
    images), else the overlay (photos from `input=` come without labels)."""
    if all(ex.mask is not None for ex in examples):
        return "image | prediction | truth"
    if all(ex.mask is None for ex in examples):
        return "image | prediction | overlay (the inputs have no truth masks)"
    return "image | prediction | truth, or overlay where an input has no truth mask"


def grid_rows_per_line(count: int, height: int, width: int) -> int:
    """How many image|prediction|third-column rows to put side by side for a near-square grid."""
    return max(1, min(count, round(math.sqrt(count * height / (3 * width)))))


def check_request(cfg: DictConfig, model: str) -> None:
    """Fail on an impossible request before the model or data are loaded."""
    fmt = cfg.get("format") or "color"
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt} is not a mask format; use format=color or format=labelids")
    if cfg.get("labels") is not None or cfg.get("per_class") is not None:
        raise IncompatibleError(f"{model} predicts masks for images, so labels= and per_class= do not apply; drop them")
    n = cfg.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"n={n} is not a number of images; pass a positive integer, e.g. n=8")


def write_masks(task, cfg: DictConfig, datamodule, out_dir: Path) -> list[Path]:
    """Write mask pictures (or label-id PNGs) for `cfg.input` or validation images; return paths."""
    check_request(cfg, "this segmenter")
    fmt = cfg.get("format") or "color"
    info = datamodule.info
    palette = info.mask_palette()
    examples = requested_examples(cfg, datamodule)
    images_dir = out_dir / "images"

    written: list[Path] = []
    rows: list[torch.Tensor] = []
    for ex in examples:
        if fmt == "labelids":
            pred = predict(task, datamodule, ex.image[None], out_size=ex.original_size)[0]
            written.append(write_label_ids(pred, images_dir / f"{ex.name}_pred.png", info))
            continue
        pred = predict(task, datamodule, ex.image[None])[0]
        rgb = ex.image.repeat(3, 1, 1) if ex.image.shape[0] == 1 else ex.image
        mask = colorize(pred[None], palette)
        blend = overlay(rgb[None], pred[None], palette)
        third = colorize(ex.mask[None], palette) if ex.mask is not None else blend
        written.append(save_grid(mask, images_dir / f"{ex.name}_mask.png", nrow=1, padding=0))
        written.append(save_grid(blend, images_dir / f"{ex.name}_overlay.png", nrow=1, padding=0))
        if not rows or rows[0].shape[-2:] == rgb.shape[-2:]:  # inputs of other sizes stay out of the grid
            rows.append(torch.cat([rgb[None], mask, third]))
    if rows:
        h, w = rows[0].shape[-2:]
        per_line = grid_rows_per_line(len(rows), h, w)
        grid_path = save_grid(torch.cat(rows), out_dir / "grid.png", nrow=3 * per_line)
        written.append(legend(grid_path, info.mask_class_names, palette))
    what = "label-id PNGs" if fmt == "labelids" else f"masks and overlays (grid.png: {grid_columns(examples)})"
    console.print(f"[bold]Wrote[/] {what} for {len(examples)} image(s) to {out_dir}", soft_wrap=True)
    return written
