"""A tiny Cityscapes tree in the official on-disk format, for tests and smoke runs.

`<root>/cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` (RGB) and
`<root>/cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png` (8-bit label
ids). Each label image holds evaluated ids (sky, building, road, car, person), an id that is
ignored in evaluation (parking, 9) and void (unlabeled 0, ego vehicle 1 along the bottom
border). Image colours follow the labels (Cityscapes palette plus noise), so a net can learn them.

Run as a script to write one: `python tests/cityscapes_fixture.py /tmp/cs_fixture`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

COLORS = {0: (0, 0, 0), 1: (0, 0, 0), 7: (128, 64, 128), 9: (250, 170, 160), 11: (70, 70, 70), 23: (70, 130, 180), 24: (220, 20, 60), 26: (0, 0, 142)}


def label_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ids = np.zeros((h, w), dtype=np.uint8)  # unlabeled (void) wherever nothing else is drawn
    horizon = int(h * rng.uniform(0.3, 0.45))
    skyline = int(horizon * rng.uniform(0.3, 0.7))
    ids[:skyline] = 23  # sky
    ids[skyline:horizon] = 11  # building
    ids[horizon : int(h * 0.9)] = 7  # road
    ids[int(h * 0.9) :] = 1  # ego vehicle: void
    px = int(rng.integers(0, w // 2))
    ids[int(h * 0.75) : int(h * 0.9), px : px + w // 5] = 9  # parking: ignored in evaluation
    cx, cw = int(rng.integers(0, w - w // 4)), w // 4
    ids[horizon - h // 10 : horizon + h // 8, cx : cx + cw] = 26  # car
    if rng.random() < 0.7:
        qx = int(rng.integers(0, w - w // 12))
        ids[horizon - h // 5 : horizon + h // 10, qx : qx + w // 12] = 24  # person
    ids[: h // 16, : w // 8] = 0  # a void corner
    return ids


def make_cityscapes(
    root: Path,
    cities: dict[str, tuple[str, ...]] | None = None,
    per_city: int = 3,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> Path:
    """Write the tree under `root/cityscapes`; return `root` (what `paths.data_dir` points at)."""
    cities = cities or {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
    rng = np.random.default_rng(seed)
    lut = np.zeros((256, 3), dtype=np.uint8)
    for label_id, color in COLORS.items():
        lut[label_id] = color
    h, w = size
    for split, names in cities.items():
        for city in names:
            img_dir = root / "cityscapes" / "leftImg8bit" / split / city
            gt_dir = root / "cityscapes" / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            for i in range(per_city):
                stem = f"{city}_{i:06d}_{19 + i:06d}"
                ids = label_image(rng, h, w)
                rgb = lut[ids].astype(np.int16) + rng.integers(-20, 21, size=(h, w, 3))
                Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    return root


if __name__ == "__main__":
    make_cityscapes(Path(sys.argv[1]), per_city=int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(f"wrote a Cityscapes fixture under {sys.argv[1]}/cityscapes")
