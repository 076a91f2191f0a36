"""`data=cityscapes`: a resized, cached subset of Cityscapes fine annotations, held in memory.

Files are found by `torchvision.datasets.Cityscapes` in the official layout under
`<data_dir>/cityscapes`:

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

torchvision lists them in `os.listdir` order and returns raw label ids; here the lists are
sorted and the 34 label ids are mapped to the 19 train ids of the benchmark (255 = ignore) with
a table built from torchvision's own `Cityscapes.classes`. Decoding, caching, augmentation and
scoring at the original resolution are the shared paired-data path (`segen/data/paired.py`).

The test split's labels are not public, so `test_split: val` scores the official val split
(the number papers report as "val mIoU"); validation during training uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import Cityscapes

from segen.data.in_memory import IGNORE_INDEX
from segen.data.paired import Pair, PairedSegmentationDataModule, evenly_spaced
from segen.errors import ConfigError, DataError

# The 19 evaluated classes in train-id order, and the lookup tables, from torchvision's table.
TRAIN_CLASSES = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
CLASS_NAMES = tuple(c.name for c in TRAIN_CLASSES)
PALETTE = torch.tensor([c.color for c in TRAIN_CLASSES], dtype=torch.uint8)
MAX_LABEL_ID = max(c.id for c in Cityscapes.classes)  # 33; license plate's -1 never appears in a PNG


def label_to_train_lut() -> np.ndarray:
    """`lut[label_id] -> train_id` for all 256 byte values; void and ignored ids map to 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in Cityscapes.classes:
        if c.id >= 0 and 0 <= c.train_id < IGNORE_INDEX:
            lut[c.id] = c.train_id
    return lut


def train_to_label_lut() -> np.ndarray:
    """`lut[train_id] -> label_id`, for writing predictions as the official evaluator reads them;
    255 (ignore) maps to 0 (unlabeled)."""
    lut = np.zeros(256, dtype=np.uint8)
    for c in TRAIN_CLASSES:
        lut[c.train_id] = c.id
    return lut


_TO_TRAIN, _TO_LABEL = label_to_train_lut(), train_to_label_lut()


def from_label_ids(ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (0..33) -> train ids (0..18, 255 = ignore)."""
    return _TO_TRAIN[ids]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids -> Cityscapes label ids, as cityscapesScripts and the evaluation server read them."""
    return _TO_LABEL[train_ids]


def cityscapes_name(path: Path) -> str:
    """`<city>_<seq>_<frame>` from any Cityscapes file name (else the file's stem)."""
    match = re.match(r"^([a-z_]+_\d{6}_\d{6})", path.name)
    return match.group(1) if match else path.stem


def photo_name(path: Path) -> str:
    """A generated photo's name for a label file: `<city>_<seq>_<frame>_leftImg8bit`, as
    cityscapesScripts names photos (from `..._gtFine_labelIds.png` or segen's `..._pred.png`)."""
    return f"{cityscapes_name(path)}_leftImg8bit"


def is_label_file(path: Path) -> bool:
    """Label-id maps: `*_gtFine_labelIds.png` (not `_color`/`_instanceIds`) or segen's `*_pred.png`."""
    return path.name.endswith(("_labelIds.png", "_pred.png"))


def missing_message(root: Path, split: str) -> str:
    return (
        f"Cityscapes not found in {root} (need leftImg8bit/{split} and gtFine/{split}); it needs a free registration "
        "at https://www.cityscapes-dataset.com: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
        f"and unpack both into {root} (that is paths.data_dir/cityscapes; set data.data_dir= or SEGEN_DATA_DIR)"
    )


def list_files(root: Path, split: str, cities: Sequence[str] | None = None, max_images: int | None = None) -> list[Pair]:
    """Sorted `(image, labelIds)` pairs of a split, restricted to `cities`, at most `max_images`.

    With `max_images`, images are taken evenly spaced over the sorted list, so a small subset
    still spans all chosen cities; the choice depends on nothing but the file names.
    """
    if not (root / "leftImg8bit" / split).is_dir() or not (root / "gtFine" / split).is_dir():
        raise DataError(missing_message(root, split))
    ds = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
    pairs = sorted((Path(img), Path(tgt[0])) for img, tgt in zip(ds.images, ds.targets, strict=True))
    if cities:  # train and val cities differ, so a list usually names some of each
        known = sorted({p.parent.name for p, _ in pairs})
        pairs = [(img, lbl) for img, lbl in pairs if img.parent.name in set(cities)]
        if not pairs:
            raise DataError(f"no {split} images for cities {', '.join(cities)} in {root}; {split} cities there: {', '.join(known) or 'none'}")
    if not pairs:
        raise DataError(f"no images in {root / 'leftImg8bit' / split}; {missing_message(root, split)}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"data.max_images must be >= 1 or null, got {max_images}")
    pairs = evenly_spaced(pairs, max_images)
    for _, lbl in pairs:
        if not lbl.is_file():
            raise DataError(f"label file {lbl} is missing; unpack gtFine_trainvaltest.zip into {root}")
    return pairs


class CityscapesDataModule(PairedSegmentationDataModule):
    """Cityscapes fine annotations, 19 classes, as a cached subset at `image_size` = (H, W)."""

    name = "cityscapes"
    mask_class_names = CLASS_NAMES
    palette = PALETTE
    from_label_ids = staticmethod(from_label_ids)
    to_label_ids = staticmethod(to_label_ids)
    output_name = staticmethod(cityscapes_name)
    photo_name = staticmethod(photo_name)
    is_label_file = staticmethod(is_label_file)
    max_label_id = MAX_LABEL_ID  # labelIds PNGs hold 0..33
    test_splits = ("train", "val", "test")

    def __init__(self, data_dir: str, image_size: Sequence[int] = (128, 256), cities: Sequence[str] | None = None, test_split: str = "val", **kwargs):
        self.cities = list(cities) if cities else None
        super().__init__(data_dir, image_size, test_split=test_split, **kwargs)

    @property
    def root(self) -> Path:
        return self.data_dir / "cityscapes"

    def missing_message(self, split: str) -> str:
        return missing_message(self.root, split)

    def list_pairs(self, split: str, max_images: int | None) -> list[Pair]:
        return list_files(self.root, split, self.cities, max_images)
