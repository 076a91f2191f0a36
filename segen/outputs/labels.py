"""`segen sample` for classifiers: the class of each `input=` image, or of the first `n` test
images, named with the dataset's own class names (a folder dataset's folder names).

Writes `predictions.csv` (file, predicted class, its probability, the runner-up, and the true
class where the images have one) and `grid.png` of the images in the same order, and prints the
first rows. Photos of any size are brought to the training size as the folder datasets do
(shorter side resized, centre crop).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from segen.console import console
from segen.errors import ConfigError, DataError
from segen.outputs.masks import input_files
from segen.viz import save_grid

DEFAULT_COUNT = 16
SHOWN_ROWS = 10


def check_request(cfg: DictConfig, model: str) -> None:
    """Fail on an impossible request before the model or data are loaded."""
    if cfg.get("format") not in (None, "csv"):
        raise ConfigError(f"format={cfg.format} does not apply to {model}: a classifier writes predictions.csv; drop format=")
    n = cfg.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"n={n} must be a whole number >= 1 (the test images to classify)")


def _inputs(cfg: DictConfig, datamodule) -> tuple[torch.Tensor, list[str], list[int | None]]:
    """uint8 images at the training size, their names, and their true classes (None: unknown)."""
    info = datamodule.info
    if cfg.get("input"):
        files = input_files(Path(str(cfg.input)).expanduser())
        images = torch.stack([torch.from_numpy(_read(f, info.channels, info.image_size)) for f in files])
        return images, [f.name for f in files], [None] * len(files)
    count = int(cfg.get("n") or DEFAULT_COUNT)
    examples = datamodule.examples("test", count)
    truths = datamodule.splits["test"].targets[: len(examples)].tolist()
    return torch.stack([e.image for e in examples]), [e.name for e in examples], truths


@torch.no_grad()
def write_predictions(task, cfg: DictConfig, datamodule, out: Path) -> list[Path]:
    images, names, truths = _inputs(cfg, datamodule)
    classes = list(datamodule.info.class_names)
    task.eval()
    probs = task(datamodule.normalize(images)).float().softmax(1)
    top = probs.topk(min(2, probs.shape[1]), dim=1)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.csv"
    rows = []
    for i, name in enumerate(names):
        first, second = top.indices[i].tolist() + [None] * (2 - top.indices.shape[1])
        rows.append({
            "file": name, "class": classes[first], "probability": f"{float(top.values[i, 0]):.4f}",
            "runner_up": classes[second] if second is not None else "",
            "truth": classes[truths[i]] if truths[i] is not None else "",
        })
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    grid = save_grid(images, out / "grid.png", nrow=8)
    for row in rows[:SHOWN_ROWS]:
        truth = f" (truth: {row['truth']})" if row["truth"] else ""
        console.print(f"  {row['file']}: {row['class']} {row['probability']}{truth}", soft_wrap=True)
    console.print(f"[bold]Wrote[/] {path} ({len(rows)} images: file, class, probability, runner_up, truth) and {grid}", soft_wrap=True)
    return [path, grid]


def _read(path: Path, channels: int, size) -> np.ndarray:
    from segen.data.files import read_image

    try:
        return read_image(path, channels, size)
    except OSError as err:
        raise DataError(f"cannot read {path} as an image ({err}); replace it or leave it out of input=") from err
