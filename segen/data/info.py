"""`DataInfo`: what a datamodule serves, described once, in one typed object.

Tasks and commands learn about the data only from this object (`datamodule.info`), never by
looking up attributes by name. It is known before any file is read, so a wrong model/data
pairing fails before a download or a decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255  # mask value that losses and IoU skip (void pixels, crop padding)
TARGETS = ("labels", "masks")


def file_stem(path: Path) -> str:
    """The default name of an output written for an input file: the input's stem."""
    return Path(path).stem


PREDICTION_SUFFIX = "_pred"  # what `segen sample format=labelids` appends to a label-id PNG's name


def photo_stem(path: Path) -> str:
    """The default name of a photo generated from a label file: its stem, without the `_pred`
    that `segen sample format=labelids` adds (so a round trip gets the photo's own name back)."""
    stem = Path(path).stem
    return stem[: -len(PREDICTION_SUFFIX)] if stem.endswith(PREDICTION_SUFFIX) else stem


@dataclass(frozen=True)
class DataInfo:
    """A dataset's shape, classes and conventions.

    `class_names` are image-level classes (a batch target "labels"); `mask_class_names` are the
    per-pixel classes (target "masks", values are train ids, `ignore_index` = void). Empty means
    the dataset has no such target. `to_label_ids` / `from_label_ids` convert masks between the
    train ids models predict and the dataset's own label ids (as its label PNGs store them);
    None means they coincide. `output_name` names an output file after an input file.
    """

    name: str
    channels: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...] = ()
    mask_class_names: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    palette: tuple[tuple[int, int, int], ...] | None = None
    output_name: Callable[[Path], str] = field(default=file_stem, compare=False)
    to_label_ids: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)
    from_label_ids: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)
    scoring_resolution: str | None = None  # how masks are scored, when it is a choice of the data
    # The largest label id the dataset's own label files hold (None: they hold train ids, so
    # 0..num_mask_classes-1 and ignore_index), and the name of a photo generated from a label file.
    max_label_id: int | None = None
    photo_name: Callable[[Path], str] = field(default=photo_stem, compare=False)
    # Which files of a folder of annotations are label-id maps (Cityscapes' gtFine folders also
    # hold colour and instance PNGs); None: every image file.
    is_label_file: Callable[[Path], bool] | None = field(default=None, compare=False)
    # The values the dataset's own label files may hold, when they are not a range 0..max_label_id
    # (data=folder_seg: the ids its classes file names, and its ignore value); None: a range.
    label_id_values: tuple[int, ...] | None = None

    @property
    def targets(self) -> frozenset[str]:
        """What a batch's second element can be: "labels" and/or "masks"."""
        return frozenset(t for t, names in zip(TARGETS, (self.class_names, self.mask_class_names), strict=True) if names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_mask_classes(self) -> int:
        return len(self.mask_class_names)

    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]

    def field_value(self, name: str):
        """A field or property by name, for binding into model configs (`from_data`)."""
        if name.startswith("_") or not hasattr(self, name):
            raise KeyError(name)
        value = getattr(self, name)
        return list(value) if isinstance(value, tuple) else value

    def mask_palette(self):
        """The palette as a uint8 tensor `(K, 3)` (a distinct default when the dataset has none)."""
        import torch

        from segen.viz import default_palette

        if self.palette is not None:
            return torch.tensor(self.palette, dtype=torch.uint8)
        return default_palette(max(self.num_mask_classes, 1))

    def label_ids(self, train_ids: np.ndarray) -> np.ndarray:
        """Train ids -> the dataset's own label ids (for `format=labelids` outputs)."""
        return self.to_label_ids(train_ids) if self.to_label_ids is not None else train_ids

    def train_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """The dataset's own label ids -> train ids (255 = void)."""
        return self.from_label_ids(label_ids) if self.from_label_ids is not None else label_ids

    def unknown_label_ids(self, label_ids: np.ndarray) -> list[int]:
        """The values of a label map (in the dataset's own ids) that are not ids of this dataset."""
        present = np.unique(label_ids)
        if self.label_id_values is not None:
            return [int(v) for v in present if int(v) not in self.label_id_values]
        if self.max_label_id is not None:
            return [int(v) for v in present if v > self.max_label_id]
        return [int(v) for v in present if v >= self.num_mask_classes and v != self.ignore_index]
