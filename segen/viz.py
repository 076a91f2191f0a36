"""Pictures of results: image grids, colourized masks and mask overlays (uint8 in, PNG out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import write_png
from torchvision.utils import make_grid

IGNORE_COLOR = (0, 0, 0)


@dataclass
class Picture:
    """A grid a task draws of its progress (`Task.epoch_picture`): uint8 images `(N, C, H, W)`
    laid out `nrow` per row, written as `<run dir>/samples/<stem>.png` and sent to the trackers
    under `key`; `legend` = (class names, palette) appends a colour legend to the PNG."""

    images: torch.Tensor
    nrow: int
    stem: str
    key: str
    legend: tuple | None = None


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Float images in `value_range` (a GAN's tanh output by default) -> uint8 in [0, 255]."""
    lo, hi = value_range
    return ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> Path:
    """Write uint8 images `(N, C, H, W)` as one PNG grid, `nrow` images per row."""
    grid = make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(grid, str(path))
    return path


def default_palette(num_classes: int) -> torch.Tensor:
    """`(num_classes, 3)` uint8 colours spread over the hue circle; class 0 (background) is grey."""
    hues = torch.arange(num_classes, dtype=torch.float32) / max(num_classes - 1, 1)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hues[:, None] * 6) % 6
    rgb = 1 - 0.85 * torch.clamp(torch.minimum(k, 4 - k), 0, 1)  # HSV with s=0.85, v=1
    palette = (rgb * 255).round().to(torch.uint8)
    palette[0] = torch.tensor([64, 64, 64], dtype=torch.uint8)
    return palette


def colorize(masks: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Class masks `(N, H, W)` (255 = ignore) -> uint8 colour images `(N, 3, H, W)`."""
    lut = torch.zeros(256, 3, dtype=torch.uint8)
    lut[: len(palette)] = palette
    lut[255] = torch.tensor(IGNORE_COLOR, dtype=torch.uint8)
    return lut[masks.long().cpu()].permute(0, 3, 1, 2).contiguous()


def overlay(images: torch.Tensor, masks: torch.Tensor, palette: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Class masks `(N, H, W)` blended over uint8 images `(N, C, H, W)` in the palette's colours
    (torchvision's draw_segmentation_masks); ignored pixels (255) show the image as it is, and
    grey images are repeated to RGB."""
    from torchvision.utils import draw_segmentation_masks

    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    classes = torch.arange(len(palette))[:, None, None]
    colors = [tuple(int(v) for v in rgb) for rgb in palette]
    masks = masks.long().cpu()
    return torch.stack([draw_segmentation_masks(image.cpu(), mask[None] == classes, alpha=alpha, colors=colors)
                        for image, mask in zip(images, masks, strict=True)])


def save_images(images: torch.Tensor, folder: str | Path, names: list[str]) -> list[Path]:
    """Write uint8 images `(N, C, H, W)` as one PNG each, `folder/<name>.png`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(images.cpu(), names, strict=True):
        path = folder / f"{name}.png"
        write_png(image, str(path))
        paths.append(path)
    return paths


def legend(grid_path: str | Path, class_names, palette: torch.Tensor, swatch: int = 12) -> Path:
    """Append a colour legend (one swatch and name per class) below the PNG at `grid_path`.

    Small images make tiny grids, so the grid is first scaled up (nearest neighbour, whole
    pixels) until it is at least 384 px wide; the legend then wraps to that width.
    """
    from PIL import Image, ImageDraw, ImageFont

    path = Path(grid_path)
    with Image.open(path) as im:
        grid = im.convert("RGB")
    scale = max(1, -(-384 // grid.width))
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    font = ImageFont.load_default()
    entries = [(str(name), tuple(int(v) for v in palette[i])) for i, name in enumerate(class_names)]
    widths = [swatch + 4 + int(font.getlength(name)) + 12 for name, _ in entries]
    line_h, x, lines = swatch + 6, 6, 1
    for w in widths:
        if x + w > grid.width and x > 6:
            lines, x = lines + 1, 6
        x += w
    canvas = Image.new("RGB", (grid.width, grid.height + lines * line_h + 6), (255, 255, 255))
    canvas.paste(grid, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = 6, grid.height + 4
    for (name, color), w in zip(entries, widths, strict=True):
        if x + w > grid.width and x > 6:
            x, y = 6, y + line_h
        draw.rectangle([x, y, x + swatch, y + swatch], fill=color, outline=(0, 0, 0))
        draw.text((x + swatch + 4, y), name, fill=(0, 0, 0), font=font)
        x += w
    canvas.save(path)
    return path
