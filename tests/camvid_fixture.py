"""A tiny CamVid tree in the SegNet tutorial's on-disk format, for tests and smoke runs.

`<root>/CamVid/{train,val,test}/<seq>_<frame>.png` (RGB photos) and
`<root>/CamVid/{train,val,test}annot/<seq>_<frame>.png` (8-bit grey PNGs holding the class index
per pixel: 0..10, and 11 = unlabelled). Each annotation has sky, building, road, pavement, a car,
often a pedestrian and a pole, and void (11) along the bottom border and in one corner. Photo
colours follow the classes (the SegNet palette plus noise), so a net can learn them.

Run as a script to write one: `python tests/camvid_fixture.py /tmp/camvid_fixture`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = np.array(
    [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
     (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0)],
    dtype=np.uint8,
)
SEQUENCES = {"train": ("0001TP", "0016E5"), "val": ("0016E5",), "test": ("Seq05VD",)}


def annotation(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ids = np.full((h, w), 11, dtype=np.uint8)  # unlabelled wherever nothing else is drawn
    horizon = int(h * rng.uniform(0.35, 0.5))
    skyline = int(horizon * rng.uniform(0.3, 0.7))
    ids[:skyline] = 0  # sky
    ids[skyline:horizon] = 1  # building
    ids[horizon : int(h * 0.9)] = 3  # road
    ids[horizon : int(h * 0.9), : w // 6] = 4  # pavement
    cx, cw = int(rng.integers(w // 6, w - w // 4)), w // 4
    ids[horizon - h // 10 : horizon + h // 8, cx : cx + cw] = 8  # car
    if rng.random() < 0.7:
        qx = int(rng.integers(0, w - w // 10))
        ids[horizon - h // 5 : horizon + h // 10, qx : qx + w // 10] = 9  # pedestrian
    if rng.random() < 0.5:
        px = int(rng.integers(0, w - 2))
        ids[skyline:horizon, px : px + 2] = 2  # pole
    ids[: h // 8, : w // 8] = 11  # a void corner
    return ids


def make_camvid(root: Path, per_sequence: int = 3, size: tuple[int, int] = (36, 48), seed: int = 0, splits=("train", "val", "test")) -> Path:
    """Write the tree under `root/CamVid`; return `root` (what `paths.data_dir` points at)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split in splits:
        photos, annots = root / "CamVid" / split, root / "CamVid" / f"{split}annot"
        photos.mkdir(parents=True, exist_ok=True)
        annots.mkdir(parents=True, exist_ok=True)
        for seq in SEQUENCES[split]:
            for i in range(per_sequence):
                stem = f"{seq}_{'f' if seq.startswith('Seq') else ''}{(i + 1) * 30:06d}"
                ids = annotation(rng, h, w)
                rgb = PALETTE[ids].astype(np.int16) + rng.integers(-20, 21, size=(h, w, 3))
                Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(photos / f"{stem}.png")
                Image.fromarray(ids, mode="L").save(annots / f"{stem}.png")
    return root


if __name__ == "__main__":
    make_camvid(Path(sys.argv[1]), per_sequence=int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    print(f"wrote a CamVid fixture under {sys.argv[1]}/CamVid")
