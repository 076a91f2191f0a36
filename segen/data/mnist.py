"""`data=mnist`: torchvision's MNIST reader over the standard `<data_dir>/MNIST/raw/` idx files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from segen.data.in_memory import InMemoryImageDataModule
from segen.errors import DataError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _extract_idx_archives(raw: Path) -> None:
    """Unpack `*.gz` idx files that were downloaded by hand; torchvision reads only unpacked ones.

    torchvision's own `extract_archive` unpacks each into a temporary folder beside it, which is
    then renamed into place: an interrupted unpack never leaves a truncated idx file."""
    import tempfile

    from torchvision.datasets.utils import extract_archive

    for name in MNIST_FILES:
        archive = raw / f"{name}.gz"
        if archive.is_file() and not (raw / name).is_file():
            with tempfile.TemporaryDirectory(dir=raw, prefix=".unpack-") as tmp:
                extract_archive(archive, tmp)
                os.replace(Path(tmp) / name, raw / name)


class MNISTDataModule(InMemoryImageDataModule):
    """MNIST 28x28 digits; 60k train (less `val_split`), 10k official test."""

    name = "mnist"
    channels = 1
    image_size = 28
    class_names = tuple(str(i) for i in range(10))

    def __init__(self, data_dir: str, download: bool = True, **kwargs):
        kwargs.setdefault("mean", (0.1307,))
        kwargs.setdefault("std", (0.3081,))
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.download = download

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def _dataset(self, train: bool) -> MNIST:
        try:
            _extract_idx_archives(self.raw_dir)
            return MNIST(str(self.data_dir), train=train, download=self.download)
        except (OSError, gzip.BadGzipFile, EOFError) as err:
            raise DataError(f"MNIST files in {self.raw_dir} are unreadable ({err}); delete them and download again") from err
        except (RuntimeError, ValueError, TypeError) as err:
            if "not found" in str(err).lower() or "download" in str(err).lower():
                raise DataError(
                    f"MNIST not found in {self.raw_dir} and could not be downloaded; put "
                    f"{', '.join(f + '.gz' for f in MNIST_FILES)} there (or set data.data_dir= / "
                    "SEGEN_DATA_DIR to the folder that holds MNIST/raw)"
                ) from err
            raise DataError(f"MNIST files in {self.raw_dir} are corrupt ({err}); delete them and download again") from err

    def prepare_data(self) -> None:
        # Runs on one process only: the place to download.
        self._dataset(train=True)
        self._dataset(train=False)

    def load_split(self, train: bool) -> dict[str, torch.Tensor]:
        ds = self._dataset(train)
        return {"images": ds.data.unsqueeze(1).contiguous(), "labels": ds.targets.long()}
