"""`data=cifar10`: torchvision's CIFAR-10 reader over `<data_dir>/cifar-10-batches-py/`."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10

from segen.data.in_memory import InMemoryImageDataModule
from segen.errors import DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FOLDER = CIFAR10.base_folder  # "cifar-10-batches-py"


class _CIFAR10(CIFAR10):
    """torchvision's CIFAR10 with its md5 checks made optional.

    torchvision checks every batch file against the official md5 on each load. We keep that
    by default (it catches truncated downloads), but a user with a re-packed copy, or a test
    with format-faithful fixture files, can turn it off and still use the real reader.
    """

    def __init__(self, *args, verify_checksums: bool = True, **kwargs):
        self.verify_checksums = verify_checksums
        super().__init__(*args, **kwargs)

    def _files_present(self) -> bool:
        folder = Path(self.root) / self.base_folder
        names = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        return all((folder / name).is_file() for name in names)

    def _check_integrity(self) -> bool:
        return super()._check_integrity() if self.verify_checksums else self._files_present()

    def _load_meta(self) -> None:
        if self.verify_checksums:
            return super()._load_meta()
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            data = pickle.load(f, encoding="latin1")
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10 32x32 colour images; 50k train (less `val_split`), 10k official test."""

    name = "cifar10"
    channels = 3
    image_size = 32
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def __init__(self, data_dir: str, download: bool = True, verify_checksums: bool = True, **kwargs):
        kwargs.setdefault("mean", CIFAR10_MEAN)
        kwargs.setdefault("std", CIFAR10_STD)
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir)
        self.download = download
        self.verify_checksums = verify_checksums

    def _dataset(self, train: bool) -> CIFAR10:
        folder = self.data_dir / FOLDER
        try:
            return _CIFAR10(str(self.data_dir), train=train, download=self.download, verify_checksums=self.verify_checksums)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise DataError(f"CIFAR-10 files in {folder} are corrupt ({type(err).__name__}: {err}); delete them and download again") from err
        except (RuntimeError, OSError) as err:
            present = folder.is_dir() and any(folder.iterdir())
            if present and self.verify_checksums:
                raise DataError(
                    f"CIFAR-10 files in {folder} do not match the official checksums (corrupt, or not the "
                    "official release); download again, or pass data.verify_checksums=false to use them anyway"
                ) from err
            raise DataError(
                f"CIFAR-10 not found in {folder} and could not be downloaded; unpack cifar-10-python.tar.gz "
                "(data_batch_1..5, test_batch, batches.meta) there, or set data.data_dir= / SEGEN_DATA_DIR "
                "to the folder that holds cifar-10-batches-py"
            ) from err

    def prepare_data(self) -> None:
        self._dataset(train=True)

    def load_split(self, train: bool) -> dict[str, torch.Tensor]:
        ds = self._dataset(train)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        if tuple(ds.classes) != self.class_names:
            raise DataError(f"batches.meta in {self.data_dir / FOLDER} lists classes {ds.classes}, expected CIFAR-10's")
        return {"images": images, "labels": torch.as_tensor(ds.targets, dtype=torch.long)}
