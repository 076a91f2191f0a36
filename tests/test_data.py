"""Datasets: real formats read by the real loaders, determinism, splits, batch transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_cifar10, make_mnist

from segen.data.cifar10 import CIFAR10DataModule
from segen.data.in_memory import carve_validation, random_crop, random_hflip
from segen.data.mnist import MNISTDataModule
from segen.data.shapes import SHAPES, ShapesDataModule, make_shapes
from segen.errors import DataError


def test_shapes_are_deterministic_by_seed():
    a = make_shapes(64, image_size=32, channels=3, seed=7)
    b = make_shapes(64, image_size=32, channels=3, seed=7)
    c = make_shapes(64, image_size=32, channels=3, seed=8)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 64)])
def test_shapes_masks_agree_with_labels(channels, size):
    images, labels, masks = make_shapes(200, image_size=size, channels=channels, seed=1)
    assert images.shape == (200, channels, size, size) and images.dtype == torch.uint8
    assert masks.shape == (200, size, size)
    for label, mask in zip(labels, masks, strict=True):
        assert set(mask.unique().tolist()) == {0, int(label) + 1}
        # A shape is a sizeable object, not a speck: at least 2% of the image.
        assert (mask > 0).float().mean() > 0.02
    # Every kind appears, roughly uniformly.
    counts = torch.bincount(labels, minlength=len(SHAPES))
    assert counts.min() > 200 / len(SHAPES) / 2


def test_shapes_pixels_differ_between_shape_and_background():
    images, _, masks = make_shapes(100, seed=3, noise=0.0)
    fg = masks > 0
    for img, m in zip(images.float().mean(1), fg, strict=True):
        assert abs(img[m].mean() - img[~m].mean()) > 60  # >= 0.35 of the range, minus rounding


def test_carve_validation_is_fixed_disjoint_and_complete():
    train1, val1 = carve_validation(100, 0.2, seed=0)
    train2, val2 = carve_validation(100, 0.2, seed=0)
    assert torch.equal(train1, train2) and torch.equal(val1, val2)
    assert len(val1) == 20 and len(train1) == 80
    assert sorted(torch.cat([train1, val1]).tolist()) == list(range(100))
    assert len(carve_validation(100, 30, seed=0)[1]) == 30
    with pytest.raises(DataError, match="val_split"):
        carve_validation(10, 10, seed=0)


def test_shapes_datamodule_serves_labels_or_masks():
    dm = ShapesDataModule(num_train=100, num_test=20, batch_size=16, val_split=0.2)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16,)
    assert len(dm.splits["train"]) == 80 and len(dm.splits["val"]) == 20 and len(dm.splits["test"]) == 20
    dm_masks = ShapesDataModule(num_train=100, num_test=20, batch_size=16, val_split=0.2)
    dm_masks.use_target("masks")
    dm_masks.setup()
    _, masks = next(iter(dm_masks.val_dataloader()))
    assert masks.shape == (16, 32, 32)
    info = dm_masks.info
    assert info.num_mask_classes == len(SHAPES) + 1 and info.num_classes == len(SHAPES)
    assert info.targets == {"labels", "masks"} and info.image_size == (32, 32) and info.channels == 3


def test_mnist_reads_gzipped_idx_files(tmp_path):
    written = make_mnist(tmp_path, n_train=50, n_test=20)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False, val_split=10)
    data = dm.load_split(train=True)
    images, labels = written["train"]
    assert data["images"].shape == (50, 1, 28, 28)
    assert np.array_equal(data["images"][:, 0].numpy(), images)
    assert np.array_equal(data["labels"].numpy(), labels)
    test = dm.load_split(train=False)
    assert np.array_equal(test["labels"].numpy(), written["t10k"][1])
    # The idx files were unpacked next to the archives, where torchvision's MNIST looks.
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_mnist_missing_files_say_what_goes_where(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as err:
        dm.load_split(train=True)
    message = str(err.value)
    assert "MNIST not found in" in message and "train-images-idx3-ubyte.gz" in message
    assert "SEGEN_DATA_DIR" in message and "\n" not in message


def test_cifar10_reads_python_pickles(tmp_path):
    written = make_cifar10(tmp_path, per_batch=20, n_test=30)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, verify_checksums=False, val_split=10)
    data = dm.load_split(train=True)
    assert data["images"].shape == (100, 3, 32, 32)
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert np.array_equal(data["images"].permute(0, 2, 3, 1).numpy(), expected)
    assert np.array_equal(data["labels"].numpy(), np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)]))
    assert np.array_equal(dm.load_split(train=False)["labels"].numpy(), written["test_batch"][1])


def test_cifar10_checksums_are_verified_by_default(tmp_path):
    make_cifar10(tmp_path, per_batch=5, n_test=5)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match="do not match the official checksums.*verify_checksums=false"):
        dm.load_split(train=True)


def test_cifar10_truncated_file_is_reported_as_corrupt(tmp_path):
    make_cifar10(tmp_path, per_batch=5, n_test=5)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, verify_checksums=False)
    with pytest.raises(DataError, match="corrupt"):
        dm.load_split(train=True)


def test_random_crop_and_flip_move_masks_with_images():
    # The mask is derived from the image, so any misalignment shows up as a mismatch.
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 5, (32, 1, 16, 16), generator=gen).float()
    masks = images[:, 0].long()
    cropped, cropped_masks = random_crop(images, 3, masks)
    flipped, flipped_masks = random_hflip(cropped, cropped_masks)
    inside = flipped_masks != 255
    assert torch.equal(flipped[:, 0][inside].long(), flipped_masks[inside])
    assert (~inside).any()  # some crops reached into the padding, which masks mark as ignore
    assert not torch.equal(flipped, images)


def test_uint8_batches_are_normalized_on_transfer():
    dm = ShapesDataModule(num_train=40, num_test=8, batch_size=8, val_split=8)
    dm.setup()
    raw_images, labels = next(iter(dm.val_dataloader()))
    assert raw_images.dtype == torch.uint8
    images, same_labels = dm.on_after_batch_transfer((raw_images, labels), 0)
    assert images.dtype == torch.float32 and torch.equal(same_labels, labels)
    expected = (raw_images.float() / 255 - 0.5) / 0.5
    assert torch.allclose(images, expected)
    dm.use_symmetric_range()
    assert images.min() >= -1 and images.max() <= 1
