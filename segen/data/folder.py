"""`data=folder`: a user's own images, one folder per class (torchvision's `ImageFolder` layout).

    <root>/train/<class>/*.jpg|png|...   required; classes are the sorted folder names
    <root>/val/<class>/...               optional; else `val_split` of train is held out
    <root>/test/<class>/...              optional; else `test_split` of train is held out

Images of any size and mode are decoded once (`segen/data/files.py` states the policy: EXIF
orientation, RGB or greyscale, `resize: short_side_crop | stretch` to `image_size`) into the
disk cache (`segen/data/cache.py`), then served a batch at a time from it as uint8 tensors, as
the built-in datasets are: normalized, cropped and flipped on the device. The class names go
into the checkpoint (Lightning stores `state_dict()`), so `segen sample`, `eval` and `export`
name the user's classes.

Bad files are one line naming the file and the fix: an unreadable image (or, with
`skip_bad_files: true`, left out and listed in the run directory), an empty class folder, a
split without images, a val/test class that train does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

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
from segen.data.files import (
    IMAGE_EXTENSIONS,
    UnreadableImage,
    check_resize,
    image_files,
    read_image,
    report_skipped,
    unreadable,
)
from segen.data.in_memory import Example, InMemoryImageDataModule, carve_validation
from segen.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
LAYOUT = "put the images in <root>/train/<class name>/ (optionally <root>/val/<class>/, <root>/test/<class>/)"


def class_folders(split_dir: Path) -> list[Path]:
    """The class folders of a split: its subfolders, sorted by name (hidden ones ignored)."""
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def of_total(amount, total: int):
    """A fraction of a folder's images as a count of them (so `val_split: 0.1` is a tenth of
    train/ even after the test split was held out of it); counts pass through."""
    return int(round(amount * total)) if isinstance(amount, float) and amount < 1 else amount


def carve(n: int, count: float | int, seed: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices of 0..n-1, seeded; `count` is a count or fraction (`data.<key>`)."""
    try:
        return carve_validation(n, count, seed)
    except DataError:
        raise DataError(
            f"data.{key}={count} leaves no training or no held-out images out of {n}; pass a fraction (data.{key}=0.1), "
            f"or add a {key.split('_')[0]}/ folder to data.root"
        ) from None


class FolderDataModule(InMemoryImageDataModule):
    """Class-per-folder images at `image_size`, cached on disk, labels from the folder names."""

    name = "folder"
    targets = frozenset({"labels"})

    def __init__(
        self,
        root: str | None = None,
        image_size: int | Sequence[int] = 64,
        channels: int = 3,
        resize: str = "short_side_crop",
        class_names: Sequence[str] | None = None,
        val_split: float | int = 0.1,
        test_split: float | int = 0.1,
        cache_dir: str | None = None,
        in_memory: bool = False,
        skip_bad_files: bool = False,
        **kwargs,
    ):
        if root in (None, "", "???"):
            raise ConfigError(f"data=folder needs data.root=<your image folder>; {LAYOUT}")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (greyscale) or 3 (RGB), got {channels}")
        size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"data.image_size must be a size or [height, width], got {image_size}")
        self.channels = channels
        self.image_size = (int(size[0]), int(size[1]))
        super().__init__(val_split=val_split, **kwargs)
        self.root = Path(root).expanduser()
        self.resize = check_resize(resize)
        self.test_holdout = test_split
        self.cache_dir = data_cache_dir(cache_dir, self.name)
        self.in_memory = in_memory
        self.skip_bad_files = skip_bad_files
        self._class_names = tuple(class_names) if class_names else None
        self._stored_names: tuple[str, ...] | None = None  # from a checkpoint (`load_state_dict`)
        self._folder_files: dict[str, list[tuple[Path, int]]] = {}
        self._files: dict[str, list[tuple[Path, int]]] = {}
        self.caches: dict[str, CacheFile] = {}

    # -- classes -------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes, in label order: the sorted class folders of `train/` (or as given)."""
        if self._class_names is None:
            if self._stored_names is not None and not (self.root / "train").is_dir():
                return self._stored_names  # a checkpoint's classes, its data folder gone (export)
            names = tuple(p.name for p in class_folders(self._split_dir("train")))
            if not names:
                train = self.root / "train"
                loose = " (the images directly in it need one subfolder per class)" if image_files(train) else ""
                raise DataError(f"no images in {train}: it has no class folders{loose}; {LAYOUT}")
            self._class_names = names
        return self._class_names

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the data: the class names, in label order."""
        return {"class_names": list(self.class_names)}

    def load_state_dict(self, state: dict) -> None:
        stored = tuple(state.get("class_names") or ())
        if stored and self._class_names is None and not (self.root / "train").is_dir():
            self._stored_names = stored
            return
        if stored and tuple(self.class_names) != stored:
            raise DataError(
                f"the checkpoint was trained on classes {', '.join(stored)} but {self.root / 'train'} holds {', '.join(self.class_names)}; "
                "restore the class folders or pass data.class_names=[...] in the checkpoint's order"
            )

    # -- files ---------------------------------------------------------------------------------
    def _split_dir(self, split: str) -> Path:
        if not self.root.is_dir():
            raise DataError(f"data.root={self.root} does not exist; point it at your image folder ({LAYOUT})")
        folder = self.root / split
        if split == "train" and not folder.is_dir():
            found = [p.name for p in class_folders(self.root)][:5]
            hint = f" (it holds {', '.join(found)}: move them into {folder}/)" if found else ""
            raise DataError(f"{self.root} has no train/ folder{hint}; {LAYOUT}")
        return folder

    def has_folder(self, split: str) -> bool:
        return (self._split_dir(split)).is_dir()

    def folder_files(self, split: str) -> list[tuple[Path, int]]:
        """Sorted (image, label) pairs of a split folder; every class folder must hold images."""
        if split not in self._folder_files:
            folder = self._split_dir(split)
            index = {name: i for i, name in enumerate(self.class_names)}
            found: list[tuple[Path, int]] = []
            for class_dir in class_folders(folder):
                if class_dir.name not in index:
                    raise DataError(
                        f"{class_dir} is a class that {self.root / 'train'} does not have ({', '.join(self.class_names)}); "
                        "rename or remove it, or add the class to train/"
                    )
                images = image_files(class_dir, recursive=True)
                if not images:
                    raise DataError(
                        f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}, any case); add images or remove the folder"
                    )
                found += [(path, index[class_dir.name]) for path in images]
            if not found:
                raise DataError(f"no images in {folder} ({', '.join(IMAGE_EXTENSIONS)}, any case); {LAYOUT}")
            self._folder_files[split] = found
        return self._folder_files[split]

    def files(self, split: str) -> list[tuple[Path, int]]:
        """The (image, label) pairs of a split: its folder's, or carved (seeded) out of train/'s
        before decoding, so every split is a cache file of its own (whole-split reads map it)."""
        if not self._files:
            pool = self.folder_files("train")
            rest = torch.arange(len(pool))
            for name, amount, seed in (("test", self.test_holdout, self.split_seed), ("val", self.val_split, self.split_seed + 1)):
                if self.has_folder(name):
                    self._files[name] = self.folder_files(name)
                    continue
                kept, held = carve(len(rest), of_total(amount, len(pool)), seed, f"{name}_split")
                self._files[name] = [pool[i] for i in rest[held].tolist()]
                rest = rest[kept]
            self._files["train"] = [pool[i] for i in rest.tolist()]
        return self._files[split]

    # -- cache ---------------------------------------------------------------------------------
    def cache_path(self, split: str) -> Path:
        files = self.files(split)
        key = cache_key({
            "dataset": self.name, "root": str(self.root.resolve()), "split": split, "size": list(self.image_size),
            "channels": self.channels, "resize": self.resize, "classes": list(self.class_names),
            "files": [file_stamp(path, self.root) + [label] for path, label in files],
        })
        h, w = self.image_size
        return self.cache_dir / f"{split}_{len(files)}x{self.channels}x{h}x{w}_{key}{SUFFIX}"

    def _rows(self, split: str, skipped: list[str] | None):
        for path, label in self.files(split):
            try:
                try:
                    image = read_image(path, self.channels, self.image_size, self.resize)
                except OSError as err:  # PIL's UnidentifiedImageError and truncated files are OSErrors
                    raise unreadable(path, err) from err
            except UnreadableImage:
                if skipped is None:
                    raise
                skipped.append(str(path))
                yield None
                continue
            yield {"images": image, "labels": label}

    def load_cached(self, split: str) -> CacheFile:
        """The split's cache file, decoded and written first if it is not there (one line says where)."""
        if split in self.caches:
            return self.caches[split]
        path = self.cache_path(split)
        cache = built = open_cache(path)
        if cache is None:
            files = self.files(split)
            announce(path, f"{split} images of {self.root}", len(files))
            skipped: list[str] | None = [] if self.skip_bad_files else None
            h, w = self.image_size
            names = [str(p.relative_to(self.root)) for p, _ in files]
            write_cache(path, {"images": ("uint8", (self.channels, h, w)), "labels": ("int64", ())}, self._rows(split, skipped), len(files),
                        lambda kept: {"kept": kept, "files": [names[i] for i in kept], "skipped": list(skipped or [])})
            cache = open_cache(path)
            if cache is None:
                raise DataError(f"the cache {path} was written but cannot be read back; delete it and run again")
            if not len(cache):
                cache.close()
                path.unlink(missing_ok=True)
                raise DataError(f"every image of {self.root / split} is unreadable (e.g. {(skipped or ['?'])[0]}); replace them")
        if cache.meta.get("skipped"):
            report_skipped(cache.meta["skipped"], f"{self.root / split}", path.with_suffix(".skipped.txt"), built=built is None)
        self.caches[split] = cache
        return cache

    def prepare_data(self) -> None:
        # One process per node decodes and writes the caches; the others open them in setup.
        for split in SPLITS:
            self.load_cached(split)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split in SPLITS:
            self.splits[split] = split_dataset(self.load_cached(split), "labels", in_memory=self.in_memory)

    def examples(self, split: str, count: int) -> list[Example]:
        """The first `count` examples of a split, named after their files (`<class>_<stem>`)."""
        picked = super().examples(split, count)
        names = self.load_cached(split).meta["files"]
        for i, example in enumerate(picked):
            relative = Path(names[i])
            example.name = f"{relative.parts[1]}_{relative.stem}" if len(relative.parts) > 2 else relative.stem
        return picked
