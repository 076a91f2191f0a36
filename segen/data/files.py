"""A user's image files: which files count, how any image is brought to the training size, and
what is said about a bad one.

Listing follows torchvision's `ImageFolder`: the extensions of `IMG_EXTENSIONS`, compared
case-insensitively; everything else (`.DS_Store`, `Thumbs.db`, `*.txt`, hidden files such as
macOS's `._photo.jpg`) is not an image and is ignored.

Decoding policy (`read_image`, the one image reader of segen): EXIF orientation applied (a phone's portrait photo stands up, as
every viewer shows it); any mode converted to RGB (`channels: 3`) or greyscale (`channels: 1`):
greyscale is repeated, palette images are expanded, an alpha channel is dropped (as
`ImageFolder`'s loader does); then brought to `image_size` = (H, W) by `resize`:
`short_side_crop` scales the image so it covers H x W and crops the centre (no distortion, the
borders of the longer side are lost), `stretch` resizes to H x W ignoring the aspect ratio.
Resampling is bilinear with antialiasing; an image already at H x W is not resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segen.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RESIZE_POLICIES = ("short_side_crop", "stretch")
SKIPPED_LIST = "skipped_files.txt"  # in the run directory: the files `data.skip_bad_files` left out


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of `folder` (and its subfolders when `recursive`), sorted by path."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    hidden = lambda p: any(part.startswith(".") for part in p.relative_to(folder).parts)  # noqa: E731
    return sorted(p for p in found if is_image_file(p) and not hidden(p) and p.is_file())


def check_resize(resize: str) -> str:
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"data.resize must be {' or '.join(RESIZE_POLICIES)}, got {resize}")
    return resize


class UnreadableImage(DataError):
    """An image file that cannot be decoded (the one kind of bad file `data.skip_bad_files` skips)."""


def unreadable(path: Path, err: Exception) -> UnreadableImage:
    """The one line for an image that cannot be decoded."""
    detail = (str(err).splitlines() or [type(err).__name__])[0]
    return UnreadableImage(
        f"cannot read {path} as an image ({detail}); the file is truncated or not an image: replace or delete it, "
        "or pass data.skip_bad_files=true to leave unreadable images out"
    )


def read_image(path: Path, channels: int = 3, size: Sequence[int] | None = None, resize: str = "short_side_crop") -> np.ndarray:
    """uint8 `(channels, H, W)` from any image file, by the policy in the module docstring; at
    its own size when `size` is None. An undecodable file raises PIL's OSError: the caller
    knows which fix to name (skip it, replace it)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decode now: a truncated file fails here, not half-way through training
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")  # what PIL asks for before dropping a palette's transparency
        im = im.convert("RGB" if channels == 3 else "L")
        w, h = im.size if size is None else (int(size[1]), int(size[0]))
        if im.size != (w, h):
            if resize == "stretch":
                im = im.resize((w, h), Image.BILINEAR)
            else:
                im = ImageOps.fit(im, (w, h), method=Image.BILINEAR, centering=(0.5, 0.5))
        array = np.array(im, dtype=np.uint8)  # a copy torch.from_numpy can own (asarray is read-only)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def report_skipped(skipped: Sequence[str], what: str, cache_list: Path, built: bool) -> Path | None:
    """Say how many files were left out and list them: in the run directory (when there is
    one) and, when the cache was just `built`, in `cache_list` next to it (for later runs)."""
    from segen.console import note
    from segen.io import atomic_write

    if not skipped:
        return None
    text = "".join(f"{line}\n" for line in skipped)
    where = None
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        where = Path(HydraConfig.get().runtime.output_dir) / SKIPPED_LIST
    for path in (where, cache_list if built else None):
        if path is not None:
            with atomic_write(path, "w") as f:
                f.write(text)
    listed = where or cache_list
    note(f"Skipped {len(skipped)} unreadable image(s) of {what} (data.skip_bad_files=true); listed in {listed}")
    return listed
