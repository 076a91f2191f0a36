"""`data=folder_seg`: a user's own photos and masks (MMSegmentation's custom-dataset layout).

    <root>/classes.yaml (or .yml, .json)     the classes: names, and the mask value or colour of each
    <root>/train/images/<stem>.jpg|png|...   photos
    <root>/train/masks/<stem>.png            one mask per photo, same stem, same size
    <root>/val/..., <root>/test/...          optional; else `val_split` / `test_split` of train are held out
or, with no split folders, `<root>/images/` + `<root>/masks/`, carved into train, val and test.

Masks are index PNGs (greyscale or palette: each pixel holds a class's `id`) or RGB colour PNGs
(each pixel holds a class's `color`). The classes file, in train-id order:

    classes:
      - {name: background, id: 0}
      - {name: road, id: 7, color: [128, 64, 128]}   # id for index masks, color for RGB masks
      - car                                          # a name alone: id = its position
    ignore: 255                                      # the value (or [r, g, b]) of unlabelled pixels

`test_split: 0` with no test/ folder means no test split (the test pass is skipped).

Train ids are the positions in that list (255 = ignore); `segen sample format=labelids` writes
the user's own ids back. A mask value or colour the file does not name, a mask whose size
differs from its photo, a photo without a mask and two files with the same stem are one-line
errors naming the file. Decoding, the disk cache, augmentation and scoring are the shared
paired-data path (`segen/data/paired.py`): photos and masks are resized to `image_size`
(bilinear and nearest, ignoring the aspect ratio).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from segen.data.files import IMAGE_EXTENSIONS, image_files
from segen.data.folder import of_total
from segen.data.in_memory import IGNORE_INDEX, carve_validation
from segen.data.info import DataInfo
from segen.data.paired import Pair, PairedSegmentationDataModule
from segen.errors import ConfigError, DataError

CLASSES_FILES = ("classes.yaml", "classes.yml", "classes.json")
LAYOUT = "put photos in <root>/train/images/ and masks with the same names in <root>/train/masks/ (or <root>/images/ + <root>/masks/)"


@dataclass(frozen=True)
class ClassMap:
    """The classes file, read: names in train-id order, each class's mask id and/or colour."""

    names: tuple[str, ...]
    ids: tuple[int, ...] | None  # None: the classes are given by colour only
    colors: tuple[tuple[int, int, int], ...] | None  # None: by id only
    ignore_id: int | None
    ignore_color: tuple[int, int, int] | None
    source: Path

    def id_lut(self) -> np.ndarray:
        """`lut[mask value] -> train id` (int16; -1 = a value the classes file does not name)."""
        lut = np.full(256, -1, dtype=np.int16)
        for train_id, value in enumerate(self.ids if self.ids is not None else range(len(self.names))):
            lut[value] = train_id
        if self.ignore_id is not None:
            lut[self.ignore_id] = IGNORE_INDEX
        return lut

    def to_user_lut(self) -> np.ndarray:
        """`lut[train id] -> mask value` (what `format=labelids` writes; 255 -> the ignore value)."""
        lut = np.full(256, self.ignore_id if self.ignore_id is not None else IGNORE_INDEX, dtype=np.uint8)
        lut[: len(self.names)] = self.ids if self.ids is not None else np.arange(len(self.names))
        return lut

    def valid_values(self) -> tuple[int, ...]:
        values = list(self.ids if self.ids is not None else range(len(self.names)))
        return tuple(values + ([self.ignore_id] if self.ignore_id is not None else []))


def _color(value, where: str) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value)):
        raise DataError(f"{where}: a colour must be [r, g, b] with values 0..255, got {value}")
    return (int(value[0]), int(value[1]), int(value[2]))


def read_classes(path: Path) -> ClassMap:
    """Parse a classes file (YAML or JSON); every mistake is one line naming the file."""
    import yaml

    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise DataError(f"cannot read the classes file {path} ({str(err).splitlines()[0]}); fix its syntax") from None
    entries = data if isinstance(data, list) else (data or {}).get("classes") if isinstance(data, dict) else None
    if not entries or not isinstance(entries, list):
        raise DataError(f"{path} lists no classes; write `classes: [{{name: background, id: 0}}, ...]` (see docs in segen/data/folder_seg.py)")
    names, ids, colors = [], [], []
    for i, entry in enumerate(entries):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataError(f"{path}: class {i} must be a name or {{name: ..., id: ..., color: [r, g, b]}}, got {entry}")
        names.append(entry["name"])
        ids.append(entry.get("id"))
        colors.append(_color(entry["color"], f"{path}, class {entry['name']}") if entry.get("color") is not None else None)
    if len(set(names)) != len(names):
        raise DataError(f"{path} names a class twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); give each class one entry")
    if all(c is not None for c in colors) and all(v is None for v in ids):
        ids_out = None
    else:
        ids_out = tuple(i if v is None else v for i, v in enumerate(ids))
        for name, v in zip(names, ids_out, strict=True):
            if not isinstance(v, int) or not 0 <= v <= 254:
                raise DataError(f"{path}: class {name} has id {v}; ids are mask values 0..254 (255 is the ignore value)")
        if len(set(ids_out)) != len(ids_out):
            raise DataError(f"{path} gives two classes the same id; each class needs its own mask value")
    colors_out = tuple(colors) if all(c is not None for c in colors) else None
    ignore = data.get("ignore", IGNORE_INDEX) if isinstance(data, dict) else IGNORE_INDEX
    ignore_id = ignore if isinstance(ignore, int) else None
    ignore_color = _color(ignore, f"{path}, ignore") if isinstance(ignore, (list, tuple)) else None
    if ignore_id is not None and ids_out is not None and ignore_id in ids_out:
        raise DataError(f"{path}: the ignore value {ignore_id} is also a class's id; give unlabelled pixels a value of their own")
    return ClassMap(tuple(names), ids_out, colors_out, ignore_id, ignore_color, path)


def _encode(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _stems(files: list[Path], folder: Path) -> dict[str, Path]:
    """`{stem: file}`; two files with the same stem are an error (which one is meant?)."""
    found: dict[str, Path] = {}
    for f in files:
        if f.stem in found:
            raise DataError(f"{folder} has two files named {f.stem} ({found[f.stem].name} and {f.name}); keep one, or rename the other")
        found[f.stem] = f
    return found


class FolderSegDataModule(PairedSegmentationDataModule):
    """Photos + masks from a folder, with the classes of its classes file."""

    name = "folder_seg"

    def __init__(
        self,
        root: str | None = None,
        image_size: Sequence[int] = (128, 128),
        classes: str | None = None,
        val_split: float | int = 0.1,
        test_split: float | int = 0.1,
        **kwargs,
    ):
        if root in (None, "", "???"):
            raise ConfigError(f"data=folder_seg needs data.root=<your folder>; {LAYOUT}, and the classes in <root>/classes.yaml")
        self._root = Path(root).expanduser()
        self.classes_file = Path(classes).expanduser() if classes else None
        self.test_holdout = test_split
        super().__init__(str(self._root), image_size, test_split="test", val_split=val_split, **kwargs)
        self._classes: ClassMap | None = None

    # -- classes -------------------------------------------------------------------------------
    @property
    def class_map(self) -> ClassMap:
        if self._classes is None:
            path = self.classes_file or next((self._root / n for n in CLASSES_FILES if (self._root / n).is_file()), None)
            if path is None or not path.is_file():
                where = path or self._root / CLASSES_FILES[0]
                raise DataError(f"no classes file {where}; write one (classes: [{{name: background, id: 0}}, ...], ignore: 255) or pass data.classes=<file>")
            self._classes = read_classes(path)
        return self._classes

    @property
    def mask_class_names(self) -> tuple[str, ...]:
        return self.class_map.names

    @property
    def palette(self) -> torch.Tensor | None:
        colors = self.class_map.colors
        return None if colors is None else torch.tensor(colors, dtype=torch.uint8)

    def from_label_ids(self, ids: np.ndarray) -> np.ndarray:
        lut = self.class_map.id_lut()
        return np.where(lut < 0, IGNORE_INDEX, lut).astype(np.uint8)[ids]

    def to_label_ids(self, train_ids: np.ndarray) -> np.ndarray:
        return self.class_map.to_user_lut()[train_ids]

    @property
    def info(self) -> DataInfo:
        return replace(super().info, label_id_values=self.class_map.valid_values())

    def cache_params(self) -> dict:
        c = self.class_map
        return {"classes": [c.names, c.ids, c.colors, c.ignore_id, c.ignore_color], "carve": [self.val_split, self.test_holdout, self.split_seed]}

    # -- files ---------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self._root

    def missing_message(self, split: str) -> str:
        return f"{self._root} has no {split} photos and masks; {LAYOUT}"

    def _folder_pairs(self, base: Path) -> list[Pair]:
        photos_dir, masks_dir = base / "images", base / "masks"
        if not photos_dir.is_dir() or not masks_dir.is_dir():
            raise DataError(f"{base} needs images/ and masks/ folders; {LAYOUT}")
        photos = _stems(image_files(photos_dir), photos_dir)
        masks = _stems(image_files(masks_dir), masks_dir)
        if not photos:
            raise DataError(f"no images in {photos_dir} ({', '.join(IMAGE_EXTENSIONS)}, any case); {LAYOUT}")
        missing = sorted(set(photos) - set(masks))
        if missing:
            raise DataError(f"{len(missing)} photo(s) in {photos_dir} have no mask in {masks_dir}, e.g. {photos[missing[0]].name}; add {missing[0]}.png to masks/ or remove the photo")
        orphans = sorted(set(masks) - set(photos))
        if orphans:
            raise DataError(f"{len(orphans)} mask(s) in {masks_dir} have no photo in {photos_dir}, e.g. {masks[orphans[0]].name}; add the photo or remove the mask")
        return [(photos[stem], masks[stem]) for stem in sorted(photos)]

    def _carved(self) -> dict[str, list[Pair]]:
        """Every split's pairs: split folders where there are, the rest carved (seeded) from train."""
        split_layout = (self._root / "train").is_dir()
        pool = self._folder_pairs(self._root / "train" if split_layout else self._root)
        out = {}
        rest = torch.arange(len(pool))
        for split, amount, seed, key in (("test", self.test_holdout, self.split_seed, "test_split"), ("val", self.val_split, self.split_seed + 1, "val_split")):
            if split_layout and (self._root / split).is_dir():
                out[split] = self._folder_pairs(self._root / split)
                continue
            if split == "test" and amount == 0:
                continue  # no test split: the training run skips its test pass
            try:
                kept, held = carve_validation(len(rest), of_total(amount, len(pool)), seed)
            except DataError:
                raise DataError(f"data.{key}={amount} leaves no training or no held-out pairs out of {len(rest)}; pass a fraction (data.{key}=0.1) or add a {split}/ folder") from None
            out[split] = [pool[i] for i in rest[held].tolist()]
            rest = rest[kept]
        out["train"] = [pool[i] for i in rest.tolist()]
        return out

    def list_pairs(self, split: str, max_images: int | None) -> list[Pair]:
        from segen.data.paired import evenly_spaced

        if not hasattr(self, "_all_pairs"):
            if not self._root.is_dir():
                raise DataError(f"data.root={self._root} does not exist; point it at your folder ({LAYOUT})")
            self._all_pairs = self._carved()
        if split not in self._all_pairs:
            raise DataError(self.missing_message(split))
        return evenly_spaced(self._all_pairs[split], max_images)

    # -- masks ---------------------------------------------------------------------------------
    def read_train_ids(self, path: Path) -> np.ndarray:
        """A mask as train ids `(H, W)` at its own size; a value or colour not in the classes file
        is an error naming the file, the value and the fix."""
        from PIL import Image

        c = self.class_map
        with Image.open(path) as im:
            im.load()
            colour = im.mode in ("RGB", "RGBA")
            if colour and c.colors is None:
                raise DataError(f"mask {path} is an RGB image but {c.source} gives no colours; add color: [r, g, b] to every class, or save masks as index PNGs")
            array = np.asarray(im.convert("RGB") if colour else (im if im.mode in ("L", "P") else im.convert("L")), dtype=np.uint8)
        if not colour:
            lut = c.id_lut()
            train = lut[array]
            if (train < 0).any():
                bad = sorted(np.unique(array[train < 0]).tolist())
                raise DataError(
                    f"mask {path} holds value(s) {', '.join(map(str, bad[:10]))} that {c.source} does not name; "
                    f"add them as classes, set ignore: to the value of unlabelled pixels, or fix the mask"
                )
            return train.astype(np.uint8)
        codes = _encode(array)
        table = {int(k): i for i, k in enumerate(_encode(np.array(c.colors, dtype=np.uint8)).tolist())}
        if c.ignore_color is not None:
            table[int(_encode(np.array(c.ignore_color, dtype=np.uint8)))] = IGNORE_INDEX
        values, inverse = np.unique(codes, return_inverse=True)
        unknown = [v for v in values.tolist() if v not in table]
        if unknown:
            shown = ", ".join(f"[{v >> 16}, {(v >> 8) & 255}, {v & 255}]" for v in unknown[:5])
            raise DataError(f"mask {path} holds colour(s) {shown} that {c.source} does not name; add them as classes or as ignore:, or fix the mask")
        return np.array([table[v] for v in values.tolist()], dtype=np.uint8)[inverse].reshape(codes.shape)

    def _read_mask(self, path: Path) -> np.ndarray:
        from segen.data.paired import resize_labels

        return resize_labels(self.read_train_ids(path), self.image_size)

    def _full_resolution(self, split: str):
        from segen.data.paired import FullResLabelDataset

        labels = [lbl for _, lbl in self.kept_pairs(split)]
        return FullResLabelDataset(self.load_cached(split).tensor("images"), labels, self.read_train_ids)
