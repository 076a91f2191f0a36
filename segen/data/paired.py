"""The shared data path for folders of photos + label maps (Cityscapes, CamVid, ...).

A dataset of this kind differs from the next only in how its files are listed and how its
label ids map to train ids. A subclass says exactly that (`root`, `list_pairs(split)`,
`from_label_ids`, `to_label_ids`, `max_label_id`, `missing_message`) and this base does the rest:

- decode once: every split is read, checked (photo and label map of the same size, no label id
  above `max_label_id`), resized to `image_size` (photos bilinear, labels nearest: labels never
  blend), mapped to train ids (255 = ignore) and streamed into a cache file on disk keyed by the
  parameters (size, files, cache version; `segen/data/cache.py`), in the per-user cache folder,
  never the data folder, so later runs decode no PNG;
- serve batches from the memory-mapped cache (a batch read per step: resident memory stays
  bounded whatever the dataset's size; `in_memory: true` loads the splits into RAM instead) and
  batch them as tensors (`InMemoryImageDataModule`);
- train with joint augmentation: random scale, crop back to `image_size`, horizontal flip;
- optionally score at the labels' own resolution (`eval_resolution: original`);
- median-frequency class weights of the training split (`class_pixel_weights`), cached too;
- describe itself as a `DataInfo` (palette, `output_name`, `to_label_ids`/`from_label_ids`),
  so outputs are named after inputs and `format=labelids` writes the dataset's own ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from segen.data.cache import (
    SUFFIX,
    CacheFile,
    announce,
    cache_key,
    data_cache_dir,
    file_stamp,
    open_cache,
    split_dataset,
    write_cache,
)
from segen.data.files import UnreadableImage, read_image, report_skipped, unreadable
from segen.data.in_memory import (
    IGNORE_INDEX,
    Example,
    InMemoryImageDataModule,
    already_batched,
    median_frequency_weights,
    random_hflip,
)
from segen.data.info import DataInfo, photo_stem
from segen.errors import ConfigError, DataError
from segen.io import atomic_write

Pair = tuple[Path, Path]  # (photo, label map)


def read_label_ids(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Label ids uint8 `(H, W)`, resized with nearest neighbour (labels never blend) if `size`."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            im = im.convert("L")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im, dtype=np.uint8)


def resize_labels(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label ids resized to `size` = (H, W) with nearest neighbour, as `read_label_ids` does."""
    from PIL import Image

    if ids.shape == tuple(size):
        return ids
    return np.asarray(Image.fromarray(ids, mode="L").resize((size[1], size[0]), Image.NEAREST), dtype=np.uint8)


def image_size_of(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from its header only."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


def lut_mapper(lut: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function applying a 256-entry byte lookup table to an id array."""
    return lambda ids: lut[ids]


def decode_pairs(
    pairs: Sequence[Pair],
    read_photo: Callable[[Path], np.ndarray],
    read_mask: Callable[[Path], np.ndarray],
    skipped: list[str] | None = None,
):
    """Decode, check and resize, one pair at a time: `{"images": uint8 (3, H, W), "masks": train
    ids uint8 (H, W)}` per pair. `read_photo(path)` gives the photo at the training size,
    `read_mask(path)` the train ids at that size (a `DataError` for ids the dataset does not
    have). With a `skipped` list, a pair with an unreadable file yields None and is listed there
    instead of failing; every other bad pair fails."""
    for img, lbl in pairs:
        try:
            photo_size, label_size = _header_size(img), _header_size(lbl)
            if photo_size != label_size:
                raise DataError(
                    f"annotation {lbl} is {label_size[0]}x{label_size[1]} but its photo {img} is "
                    f"{photo_size[0]}x{photo_size[1]}; they must match pixel for pixel: resize the annotation to its photo (nearest neighbour) or replace it"
                )
            row = {"images": _decoded(read_photo, img), "masks": _decoded(read_mask, lbl)}
        except UnreadableImage:
            if skipped is None:
                raise
            skipped.append(f"{img}\t{lbl}")
            row = None
        yield row


def _header_size(path: Path) -> tuple[int, int]:
    try:
        return image_size_of(path)
    except OSError as err:
        raise unreadable(path, err) from err


def _decoded(read: Callable[[Path], np.ndarray], path: Path) -> np.ndarray:
    try:
        return read(path)
    except OSError as err:  # PIL's UnidentifiedImageError and "image file is truncated" are OSErrors
        raise unreadable(path, err) from err


class FullResLabelDataset(Dataset):
    """Cached (resized) images with their labels read at the original resolution from the PNGs,
    for scoring at the labels' own size."""

    def __init__(self, images: torch.Tensor, label_files: Sequence[Path], read_train_ids: Callable[[Path], np.ndarray]):
        self.images, self.label_files, self.read_train_ids = images, list(label_files), read_train_ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, indices: list[int]):
        masks = [torch.from_numpy(self.read_train_ids(self.label_files[i])) for i in indices]
        if len({m.shape for m in masks}) > 1:
            raise DataError("label images of different sizes in one batch; use data.eval_batch_size=1")
        return self.images[torch.as_tensor(indices)], torch.stack(masks)


class PairedSegmentationDataModule(InMemoryImageDataModule):
    """Photos + label maps at `image_size` = (H, W), cached, held in memory.

    Subclasses set the class attributes below and implement `root`, `list_pairs(split)` and
    `missing_message(split)`; `from_label_ids`/`to_label_ids` default to the identity (train ids
    are the dataset's own ids).
    """

    targets = frozenset({"masks"})
    channels = 3
    mask_class_names: Sequence[str] = ()
    palette: torch.Tensor | None = None  # uint8 (K, 3): one colour per class, for pictures
    max_label_id: int | None = None  # a larger id in a label map is an error (None: any byte)
    test_splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        data_dir: str,
        image_size: Sequence[int],
        max_images: int | None = None,
        max_val_images: int | None = None,
        test_split: str = "test",
        cache_dir: str | None = None,
        scale_range: Sequence[float] = (0.5, 2.0),
        eval_resolution: str = "subset",
        in_memory: bool = False,
        skip_bad_files: bool = False,
        **kwargs,
    ):
        if len(image_size) != 2 or min(image_size) < 1:
            raise ConfigError(f"data.image_size must be [height, width], got {list(image_size)}")
        if eval_resolution not in ("subset", "original"):
            raise ConfigError(f"data.eval_resolution must be subset or original, got {eval_resolution}")
        if test_split not in self.test_splits:
            raise ConfigError(f"data.test_split must be {', '.join(self.test_splits[:-1])} or {self.test_splits[-1]}, got {test_split}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ConfigError(f"data.scale_range must be [min, max] with 0 < min <= max, got {list(scale_range)}")
        for key, value in (("max_images", max_images), ("max_val_images", max_val_images)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} must be >= 1 or null, got {value}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        kwargs.setdefault("mean", (0.485, 0.456, 0.406))  # ImageNet statistics, as is customary
        kwargs.setdefault("std", (0.229, 0.224, 0.225))
        super().__init__(**kwargs)
        if self.hflip == "alternate":  # needs the in-memory split's fixed image order (segen/data/alternating_flips.py)
            raise DataError(f"data.hflip=alternate is for the in-memory image datasets (mnist, cifar10, folder); data={self.name} takes true or false")
        self.target = "masks"
        self.data_dir = Path(data_dir)
        self.max_images = max_images
        self.max_val_images = max_val_images if max_val_images is not None else max_images
        self.test_split = test_split
        self.cache_dir = data_cache_dir(cache_dir, self.name)
        self.in_memory = in_memory
        self.skip_bad_files = skip_bad_files
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.eval_resolution = eval_resolution
        self.files: dict[str, list[Pair]] = {}
        self.caches: dict[str, CacheFile] = {}

    # -- what a subclass writes ------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The dataset's folder under `data_dir`."""
        raise NotImplementedError

    def list_pairs(self, split: str, max_images: int | None) -> list[Pair]:
        """Sorted `(photo, label map)` pairs of a split (at most `max_images`, see `evenly_spaced`);
        raise `DataError` (with `missing_message`) when the files are not there."""
        raise NotImplementedError

    def missing_message(self, split: str) -> str:
        """One line: what is missing, where to get it and where to put it."""
        raise NotImplementedError

    @staticmethod
    def from_label_ids(ids: np.ndarray) -> np.ndarray:
        """Dataset label ids -> train ids (255 = ignore)."""
        return ids

    @staticmethod
    def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
        """Train ids -> dataset label ids (what `format=labelids` writes)."""
        return train_ids

    @staticmethod
    def output_name(path: Path) -> str:
        """The name of the outputs predicted for the input file `path`."""
        return path.stem

    def read_label_map(self, path: Path) -> np.ndarray:
        """A label map in the dataset's own ids `(H, W)` at its own size, checked: an id above
        `max_label_id` is an error naming the file."""
        ids = read_label_ids(path)
        if self.max_label_id is not None and int(ids.max(initial=0)) > self.max_label_id:
            raise DataError(f"annotation {path} holds label id {int(ids.max())}, above the largest valid id {self.max_label_id}; it is not an annotation of this dataset")
        return ids

    def cache_params(self) -> dict:
        """What else changes the decoded bytes (a subclass's class mapping), for the cache key."""
        return {}

    is_label_file: Callable[[Path], bool] | None = None  # label-id maps among a folder's files (None: all)

    @staticmethod
    def photo_name(path: Path) -> str:
        """The name of a photo generated (pix2pix) from the label file `path`."""
        return photo_stem(path)

    # -- derived -----------------------------------------------------------------------------
    @property
    def info(self) -> DataInfo:
        """The base's description plus this dataset's palette, id mapping and output names."""
        palette = None if self.palette is None else tuple(tuple(int(v) for v in rgb) for rgb in self.palette.tolist())
        return replace(
            super().info,
            palette=palette,
            output_name=self.output_name,
            to_label_ids=self.to_label_ids,
            from_label_ids=self.from_label_ids,
            scoring_resolution=self.scoring_resolution(),
            max_label_id=self.max_label_id,
            photo_name=self.photo_name,
            is_label_file=self.is_label_file,
        )

    def examples(self, split: str, count: int) -> list[Example]:
        """Examples named after their files, with the size of their original label map."""
        picked = super().examples(split, count)
        pairs = self.kept_pairs(self.test_split if split == "test" else split)
        for example, (photo, label) in zip(picked, pairs, strict=False):
            example.name = self.output_name(photo)
            example.original_size = image_size_of(label)
        return picked

    def scoring_resolution(self) -> str:
        """Which resolution test metrics are computed at (printed and recorded by `segen eval`)."""
        h, w = self.image_size
        if self.eval_resolution == "original":
            return f"original label resolution (logits upsampled from {h}x{w} to the ground-truth size)"
        return f"subset resolution {h}x{w} (labels resized with nearest neighbour)"

    # -- files and cache -----------------------------------------------------------------------
    def _pairs(self, split: str) -> list[Pair]:
        if split not in self.files:
            limit = self.max_images if split == "train" else self.max_val_images
            self.files[split] = self.list_pairs(split, limit)
        return self.files[split]

    def cache_path(self, split: str) -> Path:
        pairs = self._pairs(split)
        key = cache_key({
            "dataset": self.name,
            "root": str(self.root.resolve()),
            "split": split,
            "size": list(self.image_size),
            "files": [file_stamp(img, self.root) + file_stamp(lbl, self.root) for img, lbl in pairs],
            **self.cache_params(),
        })
        h, w = self.image_size
        return self.cache_dir / f"{split}_{len(pairs)}x{h}x{w}_{key}{SUFFIX}"

    def load_cached(self, split: str) -> CacheFile:
        """The split's cache file, decoded and written first if it is not there (one line says
        where); later runs and other DDP ranks open it."""
        if split in self.caches:
            return self.caches[split]
        path = self.cache_path(split)
        cache = built = open_cache(path)
        if cache is None:
            pairs = self._pairs(split)
            announce(path, f"{split} pairs of data={self.name}", len(pairs))
            skipped: list[str] | None = [] if self.skip_bad_files else None
            h, w = self.image_size
            rows = decode_pairs(pairs, self._read_photo, self._read_mask, skipped)
            write_cache(path, {"images": ("uint8", (3, h, w)), "masks": ("uint8", (h, w))}, rows, len(pairs),
                        lambda kept: {"kept": kept, "skipped": list(skipped or [])})
            cache = open_cache(path)
            if cache is None:
                raise DataError(f"the cache {path} was written but cannot be read back; delete it and run again")
            if not len(cache):
                cache.close()
                path.unlink(missing_ok=True)
                first = (skipped or ["?"])[0].split("\t")[0]
                raise DataError(f"every {split} pair of data={self.name} has an unreadable file (e.g. {first}); replace them")
        if cache.meta.get("skipped"):
            report_skipped(cache.meta["skipped"], f"data={self.name} {split}", path.with_suffix(".skipped.txt"), built=built is None)
        self.caches[split] = cache
        return cache

    def kept_pairs(self, split: str) -> list[Pair]:
        """The pairs the cache of `split` holds, in its row order (`skip_bad_files` drops some)."""
        pairs = self._pairs(split)
        kept = self.load_cached(split).meta.get("kept")
        return pairs if kept is None or len(kept) == len(pairs) else [pairs[i] for i in kept]

    def _read_photo(self, path: Path) -> np.ndarray:
        return read_image(path, 3, self.image_size, resize="stretch")

    def _read_mask(self, path: Path) -> np.ndarray:
        return self.from_label_ids(resize_labels(self.read_label_map(path), self.image_size))

    def _dataset(self, split: str):
        return split_dataset(self.load_cached(split), "masks", in_memory=self.in_memory)

    def scored_split(self, split: str) -> str:
        """The split whose files a request for `split` scores: `test` is `test_split` (Cityscapes
        publishes no test labels, so its test pass scores val and is labelled val)."""
        return self.test_split if split == "test" else split

    def has_split(self, split: str) -> bool:
        """Whether the files of `split` (after `scored_split`) are there: a copy without the
        published test split still trains, and the training run skips its test pass."""
        try:
            self._pairs(self.scored_split(split))
        except DataError:
            return False
        return True

    def prepare_data(self) -> None:
        # One process decodes and writes the cache; the others read it in setup.
        for split in sorted({"train", "val", self.test_split}):
            if split in ("train", "val") or self.has_split("test"):
                self.load_cached(split)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split in ("train", "val"):
            self.splits[split] = self._dataset(split)
        if not self.has_split("test"):
            return
        if self.eval_resolution == "original":
            self.splits["test"] = self._full_resolution(self.test_split)
        else:
            self.splits["test"] = self._dataset(self.test_split)

    def _full_resolution(self, split: str) -> FullResLabelDataset:
        labels = [lbl for _, lbl in self.kept_pairs(split)]
        return FullResLabelDataset(self.load_cached(split).tensor("images"), labels, lambda path: self.from_label_ids(self.read_label_map(path)))

    def _require_test(self) -> None:
        """A missing test split fails with the dataset's own one-line message (what to get, where)."""
        self.setup("test")
        if "test" not in self.splits:
            self._pairs(self.test_split)  # raises DataError(missing_message)

    def split_images(self, split: str) -> torch.Tensor:
        if split == "test":
            self._require_test()
        return super().split_images(split)

    def test_dataloader(self) -> DataLoader:
        if self.eval_split == "test":
            self._require_test()
        if self.eval_split == "test" or self.eval_resolution == "subset":
            return super().test_dataloader()
        dataset = self._full_resolution(self.eval_split)
        return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=already_batched)

    def split_masks(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos and train-id masks of a split at `image_size` (the cache), whatever
        `eval_resolution` says; `test` is `test_split`."""
        if split not in ("train", "val", "test"):
            raise DataError(f"data={self.name} has no {split} split; use train, val or test")
        cache = self.load_cached(self.test_split if split == "test" else split)
        return cache.tensor("images"), cache.tensor("masks")

    def class_pixel_weights(self) -> torch.Tensor:
        """Median-frequency class weights `(K,)` of the training split at `image_size` (see
        `median_frequency_weights`), computed once and cached next to the training split."""
        path = self.cache_path("train").with_suffix(".weights.json")
        if path.is_file():
            try:
                weights = json.loads(path.read_text())["median_frequency"]
                if len(weights) == len(self.mask_class_names):
                    return torch.tensor(weights, dtype=torch.float32)
            except (ValueError, KeyError, TypeError):
                pass  # a damaged file is recomputed
        masks = self.load_cached("train").tensor("masks")
        weights = median_frequency_weights(masks, len(self.mask_class_names))
        try:
            with atomic_write(path, "w") as f:
                f.write(json.dumps({"median_frequency": weights.tolist(), "classes": list(self.mask_class_names)}, indent=2) + "\n")
        except PermissionError:
            pass  # an unwritable cache folder only costs recomputing them next time
        return weights

    # -- training augmentation ---------------------------------------------------------------
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


def evenly_spaced(pairs: list[Pair], max_images: int | None) -> list[Pair]:
    """At most `max_images` of the sorted `pairs`, evenly spaced over the list (so a small subset
    still spans every sequence or city); the choice depends on nothing but the file names."""
    if max_images is None or max_images >= len(pairs):
        return pairs
    picks = np.linspace(0, len(pairs) - 1, max_images).round().astype(int)
    return [pairs[i] for i in picks]
