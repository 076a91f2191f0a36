"""Cityscapes: label mapping from torchvision's table, the real datamodule on a fixture tree in the
official layout, caching, joint augmentation, missing-data errors, the subset script, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapes_fixture import make_cityscapes
from PIL import Image
from torchvision.datasets import Cityscapes

import segen.data.cityscapes as cs
import segen.data.paired as paired
from segen.data.cityscapes import (
    CLASS_NAMES,
    CityscapesDataModule,
    label_to_train_lut,
    train_to_label_lut,
)
from segen.errors import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cs"), per_city=3, size=(48, 96))


def datamodule(root: Path, tmp_path: Path, **kwargs) -> CityscapesDataModule:
    kwargs.setdefault("image_size", (24, 48))
    return CityscapesDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=4, **kwargs)


def test_label_mapping_follows_torchvisions_class_table():
    lut = label_to_train_lut()
    for c in Cityscapes.classes:
        if c.id < 0:
            continue  # license plate: -1, not a pixel value in labelIds PNGs
        expected = c.train_id if 0 <= c.train_id < 255 else 255
        assert lut[c.id] == expected, c.name
    assert lut[34:].tolist() == [255] * (256 - 34)
    assert len(CLASS_NAMES) == 19 and CLASS_NAMES[0] == "road" and CLASS_NAMES[-1] == "bicycle"
    back = train_to_label_lut()
    for train_id in range(19):
        assert lut[back[train_id]] == train_id
    assert back[255] == 0
    assert cs.PALETTE[0].tolist() == [128, 64, 128]  # the official road colour


def test_datamodule_reads_fixture_maps_ids_and_caches(cs_root, tmp_path, monkeypatch):
    dm = datamodule(cs_root, tmp_path)
    dm.prepare_data()
    dm.setup()
    train = dm.splits["train"]
    assert train.images.shape == (6, 3, 24, 48) and train.images.dtype == torch.uint8
    assert train.targets.shape == (6, 24, 48)
    values = set(torch.unique(train.targets).tolist())
    # sky, building, road, car (person in most images), and 255 for void/ignored ids.
    assert {10, 2, 0, 13, 255} <= values <= {0, 2, 10, 11, 13, 255}
    assert len(dm.splits["val"]) == 6 and len(dm.splits["test"]) == 6  # test scores val
    # Sorted, so the order is the same on every file system; cities filter.
    names = [img.name for img, _ in dm.files["train"]]
    assert names == sorted(names) and names[0].startswith("aachen")
    # A second datamodule decodes no PNG: everything comes from the cache.
    assert len(list((tmp_path / "cache" / "cityscapes").glob("*.u8"))) == 2
    monkeypatch.setattr(paired, "decode_pairs", lambda *a, **k: pytest.fail("decoded again"))
    again = datamodule(cs_root, tmp_path)
    again.setup()
    assert torch.equal(again.splits["train"].targets, train.targets)


def test_masks_match_the_label_pngs(cs_root, tmp_path):
    dm = datamodule(cs_root, tmp_path, image_size=(48, 96), cities=["bochum", "lindau"], max_images=2)
    dm.setup()
    img, lbl = dm.files["train"][0]
    assert img.parent.name == "bochum" and len(dm.files["train"]) == 2
    ids = np.asarray(Image.open(lbl))
    expected = np.full(ids.shape, 255)
    for c in Cityscapes.classes:
        if 0 <= c.train_id < 255:
            expected[ids == c.id] = c.train_id
    assert np.array_equal(dm.splits["train"].targets[0].numpy(), expected)
    assert (ids == 9).any() and (ids == 0).any() and (ids == 1).any()  # ignored and void ids present
    assert (dm.splits["train"].targets[0][torch.from_numpy(ids == 9)] == 255).all()


def test_subset_selection_is_deterministic_and_spread(cs_root):
    pairs = cs.list_files(cs_root / "cityscapes", "train", max_images=2)
    assert [p.parent.name for p, _ in pairs] == ["aachen", "bochum"]  # evenly spaced: both cities
    assert pairs == cs.list_files(cs_root / "cityscapes", "train", max_images=2)


def test_missing_data_is_one_actionable_line(tmp_path):
    dm = datamodule(tmp_path / "nowhere", tmp_path)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    text = str(err.value)
    assert "leftImg8bit_trainvaltest.zip" in text and "gtFine_trainvaltest.zip" in text
    assert str(tmp_path / "nowhere" / "cityscapes") in text and "registration" in text and "\n" not in text


def test_unknown_city_is_reported(cs_root, tmp_path):
    with pytest.raises(DataError, match="atlantis"):
        datamodule(cs_root, tmp_path, cities=["atlantis"]).setup()


def test_joint_augmentation_keeps_image_and_mask_aligned(tmp_path):
    # The mask is a function of the image (class = which of 3 bright levels a block has); after
    # random scale, crop and flip, that function must still hold wherever the mask is not 255.
    torch.manual_seed(0)
    dm = CityscapesDataModule(str(tmp_path), image_size=(32, 64), scale_range=(0.5, 2.0), hflip=True)
    blocks = torch.randint(0, 3, (8, 4, 8))
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2).to(torch.uint8)
    images = (masks.float() / 2).unsqueeze(1).repeat(1, 3, 1, 1) * 2 + 1  # levels 1, 2, 3
    for _ in range(5):
        aug_images, aug_masks = dm.augment(images, masks)
        assert aug_images.shape == images.shape and aug_masks.shape == masks.shape
        valid = aug_masks != 255
        assert (aug_images[:, 0][~valid] == 0).all()  # padding: image 0 where mask is 255
        # Bilinear resizing blends levels at block borders: compare inside blocks only (pixels
        # whose 3x3 neighbourhood has one class), where the image must give back the mask.
        m = aug_masks.float()[:, None]
        interior = (F.max_pool2d(m, 3, 1, 1) == -F.max_pool2d(-m, 3, 1, 1))[:, 0] & valid
        recovered = (aug_images[:, 0] - 1).round().clamp(0, 2)
        assert interior.float().mean() > 0.3
        assert (recovered[interior] == aug_masks[interior].float()).float().mean() > 0.995
    # Different samples get different transforms.
    assert not torch.equal(aug_masks[0], masks[0]) or not torch.equal(aug_masks[1], masks[1])


def test_original_resolution_evaluation_serves_full_size_labels(cs_root, tmp_path):
    dm = datamodule(cs_root, tmp_path, eval_resolution="original")
    dm.setup()
    images, masks = next(iter(dm.test_dataloader()))
    assert images.shape[-2:] == (24, 48) and masks.shape[-2:] == (48, 96)
    assert "original" in dm.info.scoring_resolution
    dm.eval_split = "val"
    _, masks = next(iter(dm.test_dataloader()))
    assert masks.shape[-2:] == (48, 96)


def test_subset_script_writes_the_same_layout(cs_root, tmp_path):
    dst = tmp_path / "small"
    script = REPO / "scripts" / "make_cityscapes_subset.py"
    result = subprocess.run(
        [sys.executable, str(script), str(cs_root / "cityscapes"), str(dst), "--cities", "aachen", "frankfurt", "--max-images", "2", "--size", "24x48"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    imgs = sorted((dst / "leftImg8bit").rglob("*.png"))
    lbls = sorted((dst / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(imgs) == len(lbls) == 4  # 2 train (aachen) + 2 val (frankfurt)
    with Image.open(lbls[0]) as im:
        assert im.size == (48, 24) and im.mode == "L"
        assert set(np.unique(np.asarray(im))) <= {0, 1, 7, 9, 11, 23, 24, 26}  # label ids kept
    # The copy is a valid dataset root for the datamodule.
    dm = CityscapesDataModule(str(tmp_path), image_size=(24, 48), cache_dir=str(tmp_path / "c"))
    (tmp_path / "cityscapes").symlink_to(dst)
    dm.setup()
    assert len(dm.splits["train"]) == 2


@pytest.mark.slow  # three CLI processes: ~40-90 s on a 2-core CPU
def test_cli_trains_evaluates_and_writes_labelids(segen, cs_root, tmp_path):
    run = tmp_path / "run"
    common = [f"paths.data_dir={cs_root}", "data.image_size=[24,48]", f"data.cache_dir={tmp_path / 'cache'}"]
    train = segen("train", "model=unet", "data=cityscapes", f"hydra.run.dir={run}", "debug=smoke", "data.batch_size=4",
                  "model.net.depth=2", "model.net.base_width=4", *common)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = run / "checkpoints" / "best.ckpt"
    ev = segen("eval", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}", "data.eval_resolution=original")
    assert ev.returncode == 0, ev.stderr[-3000:]
    for name in ("per-class iou", "road", "bicycle", "original label resolution"):
        assert name in ev.stdout, name
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "original" in report["resolution"] and len([k for k in report["metrics"] if k.count("/") == 2]) == 19

    from omegaconf import OmegaConf
    from test_segmentation import restore_without_hydra

    task, dm, run_cfg = restore_without_hydra(ckpt)
    written = task.write_samples(OmegaConf.create({"n": 2, "format": "labelids"}), dm, tmp_path / "ids", "unet")
    assert written[0].name == "frankfurt_000000_000019_pred.png"
    with Image.open(written[0]) as im:
        assert im.size == (96, 48)  # ground-truth resolution
        assert set(np.unique(np.asarray(im))) <= {c.id for c in cs.TRAIN_CLASSES}
    pics = task.write_samples(OmegaConf.create({"n": 2, "input": str(cs_root / "cityscapes" / "leftImg8bit" / "val" / "lindau")}), dm, tmp_path / "pics", "unet")
    assert (tmp_path / "pics" / "images" / "lindau_000000_000019_overlay.png") in pics
