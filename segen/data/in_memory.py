"""The shared data path for small images: uint8 tensors in memory, batched as tensors.

Per-sample PIL transforms cost far more than the models they feed at MNIST/CIFAR scale, so
images stay as one uint8 tensor. A batch is gathered with one indexing op, crosses to the
device as uint8 (4x fewer bytes than float), and is converted, augmented and normalized there
in `on_after_batch_transfer`. The loader is a plain `DataLoader` over a dataset with
`__getitems__`, so Lightning can still swap in a `DistributedSampler` under DDP.

Under DDP (W processes), every epoch of the training split is one shuffled permutation (the same
on all ranks: seeded with the run's seed and the epoch), dealt out rank::W, so the ranks see
disjoint shards. When W does not divide N, Lightning's `DistributedSampler` pads the permutation
with its own first W - (N mod W) images (at most W - 1), which are then seen twice in that epoch;
each rank then drops its last incomplete batch, as one process does. Evaluation splits are dealt out without
padding (`UnrepeatedDistributedSampler`: ranks may differ by one image), so every image is scored
exactly once and val/test metrics equal the single-process ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from segen.data.augment import affine_settings, random_affine
from segen.data.info import IGNORE_INDEX, DataInfo
from segen.errors import DataError


@dataclass
class Example:
    """One image of a split with what outputs about it need: its mask (if any), a name for
    files written about it, and the size of its original label map (None: the image's size)."""

    image: torch.Tensor
    mask: torch.Tensor | None
    name: str
    original_size: tuple[int, int] | None = None


class TensorImageDataset(Dataset):
    """Images `(N, C, H, W)` uint8 and targets (labels `(N,)` long or masks `(N, H, W)` uint8);
    fetches whole batches at once."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.targets[index]


def already_batched(batch):
    """collate_fn for datasets whose `__getitems__` returns a ready batch."""
    return batch


def _gather_crops(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop `(N, C, H+2p, W+2p)` at per-sample offsets (dy, dx) of shape `(N, 1)`, in one gather."""
    device = padded.device
    rows = (dy + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=device))[:, None, None, :]
    batch = torch.arange(len(padded), device=device)[:, None, None, None]
    chan = torch.arange(padded.shape[1], device=device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_crop(images: torch.Tensor, padding: int, masks: torch.Tensor | None = None, generator=None):
    """Pad by `padding` (reflect) and crop back at a random offset per sample.

    With `masks` `(N, H, W)`, the same crop is applied to them (padded with 255 = ignore) and
    `(images, masks)` is returned.
    """
    n, _, h, w = images.shape
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=images.device, generator=generator)
    cropped = _gather_crops(F.pad(images, [padding] * 4, mode="reflect"), dy, dx, h, w)
    if masks is None:
        return cropped
    padded_masks = F.pad(masks[:, None], [padding] * 4, value=IGNORE_INDEX)
    return cropped, _gather_crops(padded_masks, dy, dx, h, w)[:, 0]


def random_hflip(images: torch.Tensor, masks: torch.Tensor | None = None, generator=None):
    """Mirror a random half of the batch left-right (and the same half of `masks`, if given)."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    flipped = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if masks is None:
        return flipped
    return flipped, torch.where(flip[:, None, None], masks.flip(-1), masks)


def median_frequency_weights(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """SegNet's median frequency balancing (Eigen & Fergus 2015): w_c = median(freq) / freq_c with
    freq_c = pixels of class c / pixels of the images in which c is present (ignored pixels do
    not count). A class present nowhere gets weight 0 (it cannot be learnt from this split)."""
    counts = torch.zeros(len(masks), num_classes, dtype=torch.float64)
    for i, mask in enumerate(masks):
        flat = mask.reshape(-1).long()
        counts[i] = torch.bincount(flat[flat < num_classes], minlength=num_classes)[:num_classes].double()
    valid_pixels = counts.sum(1, keepdim=True)  # labelled pixels of each image
    present = counts > 0
    class_pixels = counts.sum(0)
    image_pixels = (valid_pixels * present).sum(0)
    seen = class_pixels > 0
    freq = torch.where(seen, class_pixels / image_pixels.clamp(min=1), torch.zeros_like(class_pixels))
    if not seen.any():
        raise DataError("the training split has no labelled pixels; class weights cannot be computed")
    median = torch.quantile(freq[seen], 0.5)  # the middle two averaged when the count is even
    return torch.where(seen, median / freq.clamp(min=1e-12), torch.zeros_like(freq)).float()


def validation_count(n: int, val_split: float | int | Sequence[float | int]) -> int:
    """How many of `n` training images `val_split` holds out: a count (5000), a fraction (0.1),
    or a list of those meaning the least of them ([5000, 0.1]: 5,000 of full MNIST's 60,000,
    400 of a 4,000-image copy)."""
    if isinstance(val_split, Sequence) and not isinstance(val_split, str):
        if not val_split:
            raise DataError("data.val_split=[] holds no count or fraction; pass e.g. data.val_split=0.1")
        return min(validation_count(n, v) for v in val_split)
    return int(round(val_split * n)) if isinstance(val_split, float) and val_split < 1 else int(val_split)


def carve_validation(n: int, val_split: float | int | Sequence[float | int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..n-1 into (train, val) with a fixed seed (`validation_count` reads `val_split`)."""
    n_val = validation_count(n, val_split)
    if not 0 < n_val < n:
        raise DataError(
            f"data.val_split={val_split} leaves no training or no validation images out of the {n} training images; "
            f"pass a count below {n} (e.g. data.val_split={max(1, n // 10)}) or a fraction (data.val_split=0.1)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class InMemoryImageDataModule(pl.LightningDataModule):
    """Base for datasets small enough to hold as uint8 tensors.

    Subclasses set `name`, `targets`, `channels`, `image_size`, `class_names` (and
    `mask_class_names` when they serve masks) and implement `load_split(train)`; this class
    describes them as a `DataInfo`, carves the validation split, builds the loaders and turns
    uint8 batches into normalized (and, when training, augmented) float batches on the device.

    `target` says what a batch's second element is: "labels" (class index per image) or
    "masks" (class per pixel, 255 = ignore); the task picks it (`use_target`) before setup.
    """

    name: str
    targets: frozenset[str] = frozenset({"labels"})  # what batches can carry: "labels", "masks"
    channels: int
    image_size: int | tuple[int, int]
    class_names: Sequence[str] = ()
    mask_class_names: Sequence[str] = ()

    def __init__(
        self,
        batch_size: int = 128,
        val_split: float | int = 0.1,
        split_seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        hflip: bool = False,
        affine: dict | None = None,
        eval_batch_size: int | None = None,
        synthetic: str | None = None,
        synthetic_share: float = 0.5,
        synthetic_sampling: str = "uniform",
    ):
        super().__init__()
        from segen.data.synthetic import check_options

        check_options(synthetic, synthetic_share, synthetic_sampling)
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_split = val_split
        self.split_seed = split_seed
        self.mean = tuple(mean) if mean is not None else (0.5,) * self.channels
        self.std = tuple(std) if std is not None else (0.5,) * self.channels
        self.crop_padding = crop_padding
        if hflip not in (True, False, "alternate"):
            raise DataError(f"data.hflip={hflip} must be true, false or alternate (segen/data/alternating_flips.py)")
        self.hflip = hflip  # true: a random half of each batch; alternate: each image the other way each epoch
        self.affine = affine_settings(affine)  # random shifts/rotations/scales/shears: segen/data/augment.py
        self.splits: dict[str, TensorImageDataset] = {}
        self.eval_split = "test"  # which split test_dataloader serves; `segen eval split=` sets it
        self.target = "labels" if "labels" in self.targets else "masks"
        # Generated pairs mixed into training batches only (segen/data/synthetic.py).
        self.synthetic = str(synthetic) if synthetic not in (None, "") else None
        self.synthetic_share, self.synthetic_sampling = float(synthetic_share), synthetic_sampling
        self._synthetic = None

    # -- what models need to know about the data, before any file is read --------------------
    @property
    def info(self) -> DataInfo:
        """The dataset described once: sizes, classes and conventions (segen/data/info.py)."""
        size = self.image_size
        return DataInfo(
            name=self.name,
            channels=self.channels,
            image_size=(size, size) if isinstance(size, int) else (int(size[0]), int(size[1])),
            class_names=tuple(self.class_names) if "labels" in self.targets else (),
            mask_class_names=tuple(self.mask_class_names) if "masks" in self.targets else (),
        )

    def use_target(self, target: str) -> None:
        """Serve "labels" or "masks" as the batch target (must be called before `setup`)."""
        if target not in self.targets:
            raise DataError(f"data={self.name} has no {target}")
        self.target = target

    def use_symmetric_range(self) -> None:
        """Scale images to [-1, 1] (what tanh generators produce) instead of standardizing."""
        self.mean, self.std = (0.5,) * self.channels, (0.5,) * self.channels

    def scored_split(self, split: str) -> str:
        """The split whose images a request for `split` really scores (the same one here)."""
        return split

    def has_split(self, split: str) -> bool:
        """Whether the dataset has `split` (train and val are carved, test is the official one)."""
        return split in ("train", "val", "test")

    def split_images(self, split: str) -> torch.Tensor:
        """All uint8 images `(N, C, H, W)` of a split (after `setup`), e.g. the real set for FID."""
        self.setup("test")
        if split not in self.splits:
            raise DataError(f"data={self.name} has no {split} split; use train, val or test")
        return self.splits[split].images

    def split_masks(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images `(N, C, H, W)` and their train-id masks `(N, H, W)` of a split, both at the
        data's `image_size` (what pix2pix translates and is scored on)."""
        if "masks" not in self.targets:
            raise DataError(f"data={self.name} has no masks")
        if self.target != "masks":
            raise DataError(f"data={self.name} serves labels here; call use_target('masks') before setup")
        self.setup("test")
        if split not in self.splits:
            raise DataError(f"data={self.name} has no {split} split; use train, val or test")
        return self.splits[split].images, self.splits[split].targets

    def class_pixel_weights(self) -> torch.Tensor:
        """Median-frequency class weights `(K,)` of the training split's masks (SegNet's class
        balancing; `model.class_weights=median_frequency`)."""
        if "masks" not in self.targets:
            raise DataError(f"data={self.name} has no masks, so it has no class pixel frequencies")
        self.setup("fit")
        return median_frequency_weights(self.splits["train"].targets, len(self.mask_class_names))

    def examples(self, split: str, count: int) -> list[Example]:
        """The first `count` examples of a split, with names for the files written about them."""
        self.setup("test")
        dataset = self.splits[split]
        count = min(count, len(dataset))
        images, targets = dataset.__getitems__(list(range(count)))
        masks = targets if self.target == "masks" else [None] * count
        return [Example(image, mask, f"{split}_{i:04d}") for i, (image, mask) in enumerate(zip(images, masks, strict=True))]

    def load_split(self, train: bool) -> dict[str, torch.Tensor]:
        """Return the train or test split as `{"images": uint8 (N, C, H, W), "labels": long (N,)}`,
        plus `"masks": uint8 (N, H, W)` when the dataset has them."""
        raise NotImplementedError

    def _tensor_dataset(self, split: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> TensorImageDataset:
        images, targets = split["images"], split[self.target]
        if index is not None:
            images, targets = images[index], targets[index]
        return TensorImageDataset(images, targets)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train = self.load_split(train=True)
        train_idx, val_idx = carve_validation(len(train["images"]), self.val_split, self.split_seed)
        self.splits["train"] = self._tensor_dataset(train, train_idx)
        if self.hflip == "alternate":
            from segen.data.alternating_flips import AlternatingFlips

            split = self.splits["train"]
            self.splits["train"] = AlternatingFlips(split.images, split.targets, self._current_epoch, seed=self.split_seed)
        self.splits["val"] = self._tensor_dataset(train, val_idx)
        self.splits["test"] = self._tensor_dataset(self.load_split(train=False))

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.splits[split]
        world = self.trainer.world_size if self.trainer is not None else 1
        sampler = None
        if not train and 1 < world <= len(dataset):
            # No padding: Lightning's own sampler would repeat images to even out the ranks, and
            # metrics would count them twice. (Each rank still gets >= 1 batch, as DDP's first
            # evaluation forward syncs buffers.)
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            # Keep full batches only, unless this rank's shard is smaller than one batch.
            drop_last=train and math.ceil(len(dataset) / world) > self.batch_size,
            collate_fn=already_batched,
        )

    def train_dataloader(self) -> DataLoader:
        if self.synthetic is None:
            return self._loader("train", train=True)
        return self._mixed_loader()

    def synthetic_pairs(self):
        """The `data.synthetic` folder's pairs at this dataset's size, read once (`SyntheticPairs`)."""
        from segen.data.synthetic import read_synthetic

        if self._synthetic is None:
            if self.target != "masks":
                raise DataError(f"data.synthetic holds (photo, label map) pairs, but this run trains on data={self.name}'s {self.target}; drop data.synthetic")
            info = self.info
            self._synthetic = read_synthetic(Path(self.synthetic), info.mask_class_names, info.image_size, self.channels)
        return self._synthetic

    def _mixed_loader(self) -> DataLoader:
        """Training batches of real and synthetic pairs in the `synthetic_share` proportion, as many
        per epoch as the real split alone gives (segen/data/synthetic.py)."""
        from segen.data.synthetic import MixedBatchSampler, MixedDataset, share_counts

        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:
            raise DataError("data.synthetic mixes batches on one device only for now; train on one device, or drop data.synthetic")
        real, synthetic = self.splits["train"], self.synthetic_pairs()
        n_real, n_syn = share_counts(self.batch_size, self.synthetic_share)
        weights = None
        if self.synthetic_sampling == "loss":
            if synthetic.mean_loss is None:
                raise DataError(f"data.synthetic_sampling=loss needs {self.synthetic}/scores.json; filter the folder first (segen sample ckpt=<unet ckpt> input=<dir> format=freemask out=<new dir>)")
            weights = synthetic.mean_loss
        num_batches = len(real) // self.batch_size if len(real) > self.batch_size else 1
        sampler = MixedBatchSampler(len(real), len(synthetic), n_real, n_syn, num_batches, weights)
        return DataLoader(MixedDataset(real, synthetic), batch_sampler=sampler, collate_fn=already_batched)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_split, train=False)

    # -- uint8 -> float on the device -----------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 `[0, 255]` -> float, standardized with the dataset's mean and std."""
        # The constants are made once per device (per batch, they were a blocking host->GPU copy
        # every step), and the arithmetic runs in place on the one float copy of the batch.
        key = (self.mean, self.std, images.device)
        if getattr(self, "_mean_std", (None,))[0] != key:
            self._mean_std = (key, *(torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in (self.mean, self.std)))
        _, mean, std = self._mean_std
        return images.float().div_(255.0).sub_(mean).div_(std)

    def augment(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time augmentation of a float batch; masks move with their images."""
        masks = targets if self.target == "masks" else None
        if self.crop_padding:
            out = random_crop(images, self.crop_padding, masks)
            images, masks = out if masks is not None else (out, None)
        if self.hflip is True:  # "alternate" flipped the batch as it was gathered
            out = random_hflip(images, masks)
            images, masks = out if masks is not None else (out, None)
        if self.affine:
            out = random_affine(images, **self.affine, masks=masks)
            images, masks = out if masks is not None else (out, None)
        return images, (masks if masks is not None else targets)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets = batch
        images = self.normalize(images)
        if self.trainer is not None and self.trainer.training:
            images, targets = self.augment(images, targets)
        if self.target == "masks":
            targets = targets.long()
        return images, targets
