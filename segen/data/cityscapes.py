"""`data=cityscapes`: a resized, cached subset of Cityscapes fine annotations, held in memory.

Files are found by `torchvision.datasets.Cityscapes` in the official layout under
`<data_dir>/cityscapes`:

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

torchvision lists them in `os.listdir` order and returns raw label ids; here the lists are
sorted and the 34 label ids are mapped to the 19 train ids of the benchmark (255 = ignore) with
a table built from torchvision's own `Cityscapes.classes`. The chosen subset (cities,
`max_images`, `image_size`) is decoded once, resized (images bilinear, labels nearest) and
cached on disk as uint8 tensors keyed by those parameters, so later runs decode no PNG.

The test split's labels are not public, so `test_split: val` scores the official val split
(the number papers report as "val mIoU"); validation during training uses it too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import Cityscapes

from segen.data.in_memory import (
    IGNORE_INDEX,
    Example,
    InMemoryImageDataModule,
    TensorImageDataset,
    already_batched,
    random_hflip,
)
from segen.data.info import DataInfo
from segen.errors import ConfigError, DataError
from segen.io import save_tensors

CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused

# The 19 evaluated classes in train-id order, and the lookup tables, from torchvision's table.
TRAIN_CLASSES = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
CLASS_NAMES = tuple(c.name for c in TRAIN_CLASSES)
PALETTE = torch.tensor([c.color for c in TRAIN_CLASSES], dtype=torch.uint8)


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


_TO_LABEL_IDS = train_to_label_lut()
_TO_TRAIN_IDS = label_to_train_lut()


def missing_message(root: Path, split: str) -> str:
    return (
        f"Cityscapes not found in {root} (need leftImg8bit/{split} and gtFine/{split}); it needs a free registration "
        "at https://www.cityscapes-dataset.com: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
        f"and unpack both into {root} (that is paths.data_dir/cityscapes; set data.data_dir= or SEGEN_DATA_DIR)"
    )


def list_files(root: Path, split: str, cities: Sequence[str] | None = None, max_images: int | None = None) -> list[tuple[Path, Path]]:
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
    if max_images is not None and max_images < len(pairs):
        if max_images < 1:
            raise ConfigError(f"data.max_images must be >= 1 or null, got {max_images}")
        picks = np.linspace(0, len(pairs) - 1, max_images).round().astype(int)
        pairs = [pairs[i] for i in picks]
    for _, lbl in pairs:
        if not lbl.is_file():
            raise DataError(f"label file {lbl} is missing; unpack gtFine_trainvaltest.zip into {root}")
    return pairs


def read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 `(H, W, 3)`, resized (bilinear, antialiased) to `size` = (H, W) if given."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def read_label_ids(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Label ids uint8 `(H, W)`, resized with nearest neighbour (labels never blend) if `size`."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            im = im.convert("L")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im, dtype=np.uint8)


def decode_subset(pairs: Sequence[tuple[Path, Path]], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Decode and resize: images uint8 `(N, 3, H, W)`, masks of train ids uint8 `(N, H, W)`."""
    lut = label_to_train_lut()
    images = np.empty((len(pairs), 3, *size), dtype=np.uint8)
    masks = np.empty((len(pairs), *size), dtype=np.uint8)
    for i, (img, lbl) in enumerate(pairs):
        try:
            images[i] = read_image(img, size).transpose(2, 0, 1)
            masks[i] = lut[read_label_ids(lbl, size)]
        except OSError as err:
            raise DataError(f"cannot read {img} or {lbl} ({err}); the file is corrupt, unpack it again") from err
    return {"images": torch.from_numpy(images), "masks": torch.from_numpy(masks)}


class FullResLabelDataset(Dataset):
    """Cached (resized) images with their labels read at the original resolution from the PNGs,
    for scoring the way the official evaluator does."""

    def __init__(self, images: torch.Tensor, label_files: Sequence[Path]):
        self.images, self.label_files = images, list(label_files)
        self.lut = label_to_train_lut()

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]):
        masks = [torch.from_numpy(self.lut[read_label_ids(self.label_files[i])]) for i in indices]
        if len({m.shape for m in masks}) > 1:
            raise DataError("label images of different sizes in one batch; use data.eval_batch_size=1")
        return self.images[torch.as_tensor(indices)], torch.stack(masks)


class CityscapesDataModule(InMemoryImageDataModule):
    """Cityscapes fine annotations, 19 classes, as a cached subset at `image_size` = (H, W)."""

    name = "cityscapes"
    targets = frozenset({"masks"})
    channels = 3
    mask_class_names = CLASS_NAMES

    def __init__(
        self,
        data_dir: str,
        image_size: Sequence[int] = (128, 256),
        cities: Sequence[str] | None = None,
        max_images: int | None = None,
        max_val_images: int | None = None,
        test_split: str = "val",
        cache_dir: str | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        eval_resolution: str = "subset",
        **kwargs,
    ):
        if len(image_size) != 2 or min(image_size) < 1:
            raise ConfigError(f"data.image_size must be [height, width], got {list(image_size)}")
        if eval_resolution not in ("subset", "original"):
            raise ConfigError(f"data.eval_resolution must be subset or original, got {eval_resolution}")
        if test_split not in ("train", "val", "test"):
            raise ConfigError(f"data.test_split must be train, val or test, got {test_split}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f"data.scale_range must be [min, max] with 0 < min <= max, got {list(scale_range)}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        kwargs.setdefault("mean", (0.485, 0.456, 0.406))  # ImageNet statistics, as is customary
        kwargs.setdefault("std", (0.229, 0.224, 0.225))
        super().__init__(**kwargs)
        self.target = "masks"
        self.data_dir = Path(data_dir)
        self.cities = list(cities) if cities else None
        self.max_images = max_images
        self.max_val_images = max_val_images if max_val_images is not None else max_images
        self.test_split = test_split
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".segen_cache"
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.eval_resolution = eval_resolution
        self.files: dict[str, list[tuple[Path, Path]]] = {}

    @property
    def root(self) -> Path:
        return self.data_dir / "cityscapes"

    @property
    def info(self) -> DataInfo:
        """Cityscapes' 19 train ids with the official palette; outputs are named
        `<city>_<seq>_<frame>` and label-id PNGs use the official label ids."""
        return replace(
            super().info,
            palette=tuple(tuple(int(v) for v in c.color) for c in TRAIN_CLASSES),
            output_name=cityscapes_name,
            to_label_ids=_TO_LABEL_IDS.__getitem__,
            from_label_ids=_TO_TRAIN_IDS.__getitem__,
            scoring_resolution=self.scoring_resolution(),
        )

    def scoring_resolution(self) -> str:
        """Which resolution test metrics are computed at (printed and recorded by `segen eval`)."""
        h, w = self.image_size
        if self.eval_resolution == "original":
            return f"original label resolution (logits upsampled from {h}x{w} to the ground-truth size)"
        return f"subset resolution {h}x{w} (labels resized with nearest neighbour)"

    def examples(self, split: str, count: int) -> list[Example]:
        """Examples named after their files, with the size of their original label PNG."""
        from PIL import Image

        picked = super().examples(split, count)
        pairs = self._pairs(self.test_split if split == "test" else split)
        for example, (image_file, label_file) in zip(picked, pairs, strict=False):
            example.name = cityscapes_name(image_file)
            with Image.open(label_file) as im:  # reads the header only
                example.original_size = (im.size[1], im.size[0])
        return picked

    # -- files and cache -------------------------------------------------------------------------
    def _pairs(self, split: str) -> list[tuple[Path, Path]]:
        if split not in self.files:
            limit = self.max_images if split == "train" else self.max_val_images
            self.files[split] = list_files(self.root, split, self.cities, limit)
        return self.files[split]

    def cache_path(self, split: str) -> Path:
        pairs = self._pairs(split)
        key = {
            "version": CACHE_VERSION,
            "split": split,
            "size": list(self.image_size),
            "files": [str(img.relative_to(self.root)) for img, _ in pairs],
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        h, w = self.image_size
        return self.cache_dir / f"{split}_{len(pairs)}x{h}x{w}_{digest}.pt"

    def load_cached(self, split: str) -> dict[str, torch.Tensor]:
        path = self.cache_path(split)
        if path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # a truncated cache is rebuilt, never trusted
                path.unlink(missing_ok=True)
        data = decode_subset(self._pairs(split), self.image_size)
        try:
            save_tensors(path, data)  # unique temp name + rename: concurrent builders never collide
        except OSError:
            pass  # a read-only dataset folder only costs decoding again next time
        return data

    def prepare_data(self) -> None:
        # One process decodes and writes the cache; the others read it in setup.
        for split in sorted({"train", "val", self.test_split}):
            self.load_cached(split)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split in ("train", "val"):
            cached = self.load_cached(split)
            self.splits[split] = TensorImageDataset(cached["images"], cached["masks"])
        cached = self.load_cached(self.test_split)
        if self.eval_resolution == "original":
            self.splits["test"] = FullResLabelDataset(cached["images"], [lbl for _, lbl in self._pairs(self.test_split)])
        else:
            self.splits["test"] = TensorImageDataset(cached["images"], cached["masks"])

    def test_dataloader(self) -> DataLoader:
        if self.eval_split == "test" or self.eval_resolution == "subset":
            return super().test_dataloader()
        dataset = FullResLabelDataset(self.splits[self.eval_split].images, [lbl for _, lbl in self._pairs(self.eval_split)])
        return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=already_batched)

    # -- training augmentation ---------------------------------------------------------------------
    def augment(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random scale in `scale_range`, random crop back to `image_size`, horizontal flip.

        Per sample, the image is resized bilinearly and the mask with nearest neighbour by the
        same factor (`nearest-exact`: pixel centres aligned as in bilinear; plain `nearest` is off
        by half a pixel) and cropped at the same offset; where a zoomed-out sample does not fill the
        crop, images are padded with 0 (the mean, after normalization) and masks with 255.
        """
        h, w = images.shape[-2:]
        lo, hi = self.scale_range
        if (lo, hi) != (1.0, 1.0):
            out_images, out_masks = [], []
            # Sampled log-uniformly, so zooming in by s is as likely as zooming out by 1/s.
            scales = torch.exp(torch.empty(len(images)).uniform_(math.log(lo), math.log(hi)))
            for image, mask, s in zip(images, targets, scales.tolist(), strict=True):
                sh, sw = max(1, round(h * s)), max(1, round(w * s))
                image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False)[0]
                mask = F.interpolate(mask[None, None].float(), size=(sh, sw), mode="nearest-exact")[0, 0].to(mask.dtype)
                ph, pw = max(h - sh, 0), max(w - sw, 0)
                if ph or pw:
                    image = F.pad(image, (0, pw, 0, ph), value=0.0)
                    mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
                y = int(torch.randint(0, image.shape[-2] - h + 1, ()))
                x = int(torch.randint(0, image.shape[-1] - w + 1, ()))
                out_images.append(image[:, y : y + h, x : x + w])
                out_masks.append(mask[y : y + h, x : x + w])
            images, targets = torch.stack(out_images), torch.stack(out_masks)
        if self.hflip:
            images, targets = random_hflip(images, targets)
        return images, targets


def cityscapes_name(path: Path) -> str:
    """`<city>_<seq>_<frame>` from any Cityscapes file name (else the file's stem)."""
    match = re.match(r"^([a-z_]+_\d{6}_\d{6})", path.name)
    return match.group(1) if match else path.stem
