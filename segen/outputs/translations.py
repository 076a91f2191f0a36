"""`segen sample ckpt=<pix2pix ckpt> [input=FILE|DIR] [split=val] [n=8] [seed=42]`.

(`format=folder_seg per_map=K`: a synthetic training set instead, segen/outputs/synthetic.py.)

Translates label maps into images and writes, into `out`:
- `images/<name>.png`: one generated image per label map, named after it: for an input file,
  `DataInfo.photo_name` (Cityscapes: `<city>_<seq>_<frame>_leftImg8bit.png`, so the official
  tooling reads it; elsewhere the label file's stem without segen's `_pred`); for a split's
  examples, the example's name;
- `grid.png`: one row per label map, colourized label | generated | real (inputs have no real
  photo: label | generated), several rows side by side, with a colour legend below.

`input=` takes label-id PNGs in the dataset's own ids (Cityscapes `*_gtFine_labelIds.png`, the
`*_pred.png` of `segen sample format=labelids`, CamVid class indices, shapes train ids), resized
to the training size with nearest neighbour; the images are written at that size. Dropout is
the generator's noise and is drawn from `seed=`: the same seed writes the same bytes on CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from segen.console import console
from segen.errors import ConfigError, DataError, IncompatibleError
from segen.outputs.masks import grid_rows_per_line, input_files
from segen.reports import SPLITS
from segen.viz import colorize, legend, save_grid, save_images, to_uint8

DEFAULT_COUNT = 8
FORMATS = ("png", "folder_seg")  # folder_seg: a synthetic training set (segen/outputs/synthetic.py)


def check_request(cfg: DictConfig, model: str) -> None:
    """Fail on an impossible request before the model or data are loaded."""
    fmt = cfg.get("format") or "png"
    if fmt not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not supported for {model}; use format=png (generated images) or format=folder_seg (a synthetic training set)")
    if fmt != "folder_seg" and (cfg.get("per_map") is not None or cfg.get("changed_maps")):
        raise ConfigError("per_map= and changed_maps= write a synthetic training set; add format=folder_seg")
    if fmt == "folder_seg":
        from segen.outputs.synthetic import check_request as check_synthetic

        check_synthetic(cfg)
    if cfg.get("labels") is not None or cfg.get("per_class") is not None:
        raise IncompatibleError(
            f"{model} translates label maps, so labels= and per_class= do not apply; pass input=<label PNG or folder>, or nothing for the split's label maps"
        )
    n = cfg.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"n={n} is not a number of label maps; pass a positive integer, e.g. n=8")
    split = cfg.get("split") or ("train" if fmt == "folder_seg" else "val")
    if split not in SPLITS:
        raise ConfigError(f"split={split} is not a split; use split=val, split=train or split=test")


def read_label_map(path: Path) -> np.ndarray:
    """A label-id PNG as uint8 `(H, W)`; a colour picture is refused (it holds colours, not ids)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(
                    f"{path} is a {im.mode} image, not a single-channel label map; pass label-id PNGs "
                    "(the dataset's annotation files, or `segen sample ckpt=<unet> format=labelids` outputs)"
                )
            return np.asarray(im, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"cannot read {path} as a label map ({err})") from err


def input_label_maps(path: Path, info) -> tuple[torch.Tensor, list[str]]:
    """Train ids `(N, H, W)` at the training size, and output names, for `input=`; every file
    is checked before anything is generated, so a bad file writes nothing."""
    from segen.data.paired import resize_labels

    files = input_files(path)
    if path.is_dir() and info.is_label_file is not None:
        files = [f for f in files if info.is_label_file(f)]
        if not files:
            raise DataError(f"no label-id maps in {path} (for {info.name}: e.g. *_gtFine_labelIds.png, or the *_pred.png of `segen sample format=labelids`)")
    masks, names = [], []
    for file in files:
        ids = read_label_map(file)
        unknown = info.unknown_label_ids(ids)
        if unknown:
            top = info.max_label_id if info.max_label_id is not None else info.num_mask_classes - 1
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            raise DataError(
                f"{file} holds label ids {shown}, which {info.name} does not have (its ids are 0..{top}"
                f"{'' if info.max_label_id is not None else f' and {info.ignore_index} for void'}); pass label maps of this dataset"
            )
        train_ids = info.train_ids(resize_labels(ids, info.image_size))
        masks.append(torch.from_numpy(np.array(train_ids, dtype=np.uint8)).long())
        names.append(info.photo_name(file))
    return torch.stack(masks), names


def grid_rows(masks: torch.Tensor, fake: torch.Tensor, real: torch.Tensor | None, info) -> torch.Tensor:
    """uint8 RGB images: per example, colourized label | generated (| real)."""
    def rgb(images: torch.Tensor) -> torch.Tensor:
        return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images

    columns = [colorize(masks, info.mask_palette()), rgb(fake)] + ([rgb(real)] if real is not None else [])
    return torch.stack(columns, dim=1).flatten(0, 1)


def save_translation_grid(path: Path, masks: torch.Tensor, fake: torch.Tensor, real: torch.Tensor | None, info) -> Path:
    """The label | generated (| real) rows, several side by side, with the class legend below."""
    columns = 2 if real is None else 3
    h, w = masks.shape[-2:]
    per_line = grid_rows_per_line(len(masks), h, w)
    save_grid(grid_rows(masks, fake, real, info), path, nrow=columns * per_line)
    return legend(path, info.mask_class_names, info.mask_palette())


def write_translations(task, cfg: DictConfig, datamodule, out: Path) -> list[Path]:
    """Translate `input=` label maps (or the first `n` of `split=`) and write images and the grid."""
    if (cfg.get("format") or "png") == "folder_seg":
        from segen.outputs.synthetic import write_synthetic

        return write_synthetic(task, cfg, datamodule, out)
    info = datamodule.info
    if cfg.get("input"):
        masks, names = input_label_maps(Path(str(cfg.input)).expanduser(), info)
        real = None
    else:
        split = cfg.get("split") or "val"
        examples = datamodule.examples(split, int(cfg.get("n") or DEFAULT_COUNT))
        masks = torch.stack([e.mask for e in examples]).long()
        real = torch.stack([e.image for e in examples])
        names = [info.photo_name(Path(e.name)) for e in examples]
    fake = to_uint8(task.translate(masks, seed=int(cfg.seed)))
    written = save_images(fake, out / "images", names)
    written.append(save_translation_grid(out / "grid.png", masks, fake, real, info))
    what = "label | generated" if real is None else "label | generated | real"
    console.print(f"[bold]Wrote[/] {len(names)} generated image(s) and grid.png ({what}) to {out}", soft_wrap=True)
    return written
