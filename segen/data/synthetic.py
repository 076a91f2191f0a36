"""Generated (photo, label map) pairs mixed into a paired dataset's training batches.

`data.synthetic=<dir>` names a folder in the `data=folder_seg` layout that `segen sample
ckpt=<pix2pix> split=train per_map=K format=folder_seg` writes (and `segen sample ckpt=<unet>
input=<dir> format=freemask` filters):

    <dir>/classes.yaml              the classes, in train-id order (must be the dataset's own)
    <dir>/train/images/<stem>.png   generated photos
    <dir>/train/masks/<stem>.png    the label maps they were generated from (train ids, 255 = ignore)
    <dir>/scores.json               (after the filter) each pair's mean loss under a real-trained segmenter

Only the training loader sees these pairs: validation, test, `segen eval` and the class weights
(`median_frequency`) read the real splits alone. Every training batch holds
`round(synthetic_share x batch_size)` synthetic pairs and real pairs for the rest, and an epoch
has as many batches as the real split alone gives, so a run with and one without synthetic
pairs take the same number of optimizer steps (`synthetic_share=1`: synthetic pairs only). Within
an epoch, real pairs are drawn without replacement (a fresh permutation each epoch, from the
global RNG that `seed=` sets); synthetic pairs too (`synthetic_sampling=uniform`), or with
replacement in proportion to their mean loss in `scores.json` (`synthetic_sampling=loss`,
FreeMask's re-sampling of the hard maps). Augmentation is the dataset's own, applied to both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from segen.data.info import IGNORE_INDEX
from segen.errors import ConfigError, DataError

SCORES = "scores.json"
MANIFEST = "synthetic.json"
SAMPLING = ("uniform", "loss")
LAYOUT = "write one with `segen sample ckpt=<pix2pix ckpt> split=train per_map=2 format=folder_seg out=<dir>`"


def check_options(synthetic: str | None, share: float, sampling: str) -> None:
    """One-line errors for `data.synthetic*` values, before any file is read."""
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share <= 1:
        raise ConfigError(f"data.synthetic_share={share} is not a share of a batch; pass a number in [0, 1], e.g. 0.5")
    if sampling not in SAMPLING:
        raise ConfigError(f"data.synthetic_sampling={sampling} is not known; use {' or '.join(SAMPLING)}")


def share_counts(batch_size: int, share: float) -> tuple[int, int]:
    """(real, synthetic) pairs per batch for `share` of `batch_size`; a share that rounds to no
    synthetic pair (or to no real one, below 1) is an error, not a silent no-op."""
    synthetic = int(round(share * batch_size))
    if 0 < share and synthetic == 0:
        raise ConfigError(f"data.synthetic_share={share} of a batch of {batch_size} is no pair; raise the share to at least {1 / batch_size:.3g}")
    if share < 1 and synthetic == batch_size:
        raise ConfigError(f"data.synthetic_share={share} of a batch of {batch_size} leaves no real pair; pass 1 for synthetic pairs only, or a smaller share")
    return batch_size - synthetic, synthetic


def write_classes(root: Path, names: Sequence[str]) -> Path:
    """`<root>/classes.yaml` naming `names` in train-id order, with masks holding train ids."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    path = root / "classes.yaml"
    path.write_text(yaml.safe_dump({"classes": [{"name": n, "id": i} for i, n in enumerate(names)], "ignore": IGNORE_INDEX}, sort_keys=False))
    return path


@dataclass
class SyntheticPairs:
    """A synthetic folder, read: uint8 photos `(N, C, H, W)`, train-id masks `(N, H, W)`, stems,
    and (after the filter) each pair's mean loss."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    mean_loss: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.images)


def read_synthetic(root: Path, class_names: Sequence[str], image_size: tuple[int, int], channels: int = 3) -> SyntheticPairs:
    """Read `<root>`'s `train/` pairs at `image_size` (photos bilinear, masks nearest), checking that
    its classes are `class_names` in the same order (pairs of another dataset would train the
    wrong classes silently)."""
    from PIL import Image

    from segen.data.files import image_files, read_image
    from segen.data.folder_seg import CLASSES_FILES, _stems, read_classes
    from segen.data.paired import resize_labels

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.synthetic={root} does not exist; {LAYOUT}")
    classes_file = next((root / n for n in CLASSES_FILES if (root / n).is_file()), None)
    if classes_file is None:
        raise DataError(f"data.synthetic={root} has no classes.yaml; {LAYOUT}")
    classes = read_classes(classes_file)
    if tuple(classes.names) != tuple(class_names):
        raise DataError(
            f"{classes_file} names the classes {', '.join(classes.names)}, but this dataset's are {', '.join(class_names)}; "
            "generate the synthetic pairs from a generator trained on this dataset"
        )
    photos_dir, masks_dir = root / "train" / "images", root / "train" / "masks"
    if not photos_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"data.synthetic={root} needs train/images/ and train/masks/; {LAYOUT}")
    photos, masks = _stems(image_files(photos_dir), photos_dir), _stems(image_files(masks_dir), masks_dir)
    unmatched = sorted(set(photos) ^ set(masks))
    if unmatched:
        raise DataError(f"{root}/train: {unmatched[0]} has a photo or a mask but not both; regenerate the folder")
    if not photos:
        raise DataError(f"no photos in {photos_dir}; {LAYOUT}")
    lut = classes.id_lut()
    stems = sorted(photos)
    images, labels = [], []
    for stem in stems:
        images.append(read_image(photos[stem], channels, image_size, resize="stretch"))  # (C, H, W)
        with Image.open(masks[stem]) as im:
            ids = np.asarray(im if im.mode in ("L", "P") else im.convert("L"), dtype=np.uint8)
        train = lut[resize_labels(ids, image_size)]
        if (train < 0).any():
            raise DataError(f"mask {masks[stem]} holds values {classes_file} does not name; regenerate the folder")
        labels.append(train.astype(np.uint8))
    scores = read_scores(root)
    mean_loss = None
    if scores is not None:
        per_image = scores.get("images", {})
        missing = [s for s in stems if s not in per_image]
        if missing:
            raise DataError(f"{root / SCORES} has no score for {missing[0]}; run the filter again on this folder")
        mean_loss = torch.tensor([float(per_image[s]["mean_loss"]) for s in stems], dtype=torch.float64)
    return SyntheticPairs(
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(labels)),
        stems,
        mean_loss,
    )


def read_scores(root: Path) -> dict | None:
    path = Path(root) / SCORES
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"cannot read {path} ({err}); run the filter again") from None


class MixedDataset(torch.utils.data.Dataset):
    """Real pairs at indices `0..len(real)-1`, synthetic pairs after them; whole batches at once."""

    def __init__(self, real, synthetic: SyntheticPairs):
        self.real, self.synthetic = real, synthetic
        self.n_real = len(real)

    def __len__(self) -> int:
        return self.n_real + len(self.synthetic)

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.long)
        real, syn = index[index < self.n_real], index[index >= self.n_real] - self.n_real
        parts = []
        if len(real):
            parts.append(self.real.__getitems__(real.tolist()))
        if len(syn):
            parts.append((self.synthetic.images[syn], self.synthetic.masks[syn]))
        images = torch.cat([torch.as_tensor(p[0]) for p in parts])
        masks = torch.cat([torch.as_tensor(p[1]).to(torch.uint8) for p in parts])
        return images, masks


def _without_replacement(n: int, count: int) -> torch.Tensor:
    """`count` indices of `0..n-1`: fresh random permutations, one after the other."""
    draws, have = [], 0
    while have < count:
        draws.append(torch.randperm(n))
        have += n
    return torch.cat(draws)[:count] if draws else torch.empty(0, dtype=torch.long)


class MixedBatchSampler(Sampler[list[int]]):
    """`num_batches` batches per epoch, each `n_real` real indices then `n_syn` synthetic ones
    (offset by `real_size`). Randomness comes from the global RNG at the start of each epoch, as
    torch's own RandomSampler does, so `seed=` fixes the batches. `weights` (one per synthetic
    pair) draws the synthetic ones with replacement in proportion to them."""

    def __init__(self, real_size: int, synthetic_size: int, n_real: int, n_syn: int, num_batches: int, weights: torch.Tensor | None = None):
        super().__init__()
        if weights is not None and (len(weights) != synthetic_size or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0):
            raise DataError("the synthetic pairs' sampling weights must be finite, non-negative and not all zero; run the filter again")
        self.real_size, self.synthetic_size = real_size, synthetic_size
        self.n_real, self.n_syn, self.num_batches = n_real, n_syn, num_batches
        self.weights = weights

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        real = _without_replacement(self.real_size, self.n_real * self.num_batches).view(self.num_batches, self.n_real)
        total = self.n_syn * self.num_batches
        if self.weights is not None:
            syn = torch.multinomial(self.weights.double(), total, replacement=True) if total else torch.empty(0, dtype=torch.long)
        else:
            syn = _without_replacement(self.synthetic_size, total)
        syn = (syn + self.real_size).view(self.num_batches, self.n_syn)
        for b in range(self.num_batches):
            yield real[b].tolist() + syn[b].tolist()
