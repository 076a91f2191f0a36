"""`data=folder_seg`: a user's photos + masks with a classes file: index and colour masks mapped to
train ids (checked against numpy), the user's own ids written back, carving, every bad-file case
as one line naming the file, and the CLI (unet and pix2pix) end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segen.data.folder_seg import FolderSegDataModule, read_classes
from segen.errors import DataError

NAMES = ("background", "road", "car")
IDS = (0, 7, 26)  # the user's own mask values: not 0..K-1
COLORS = ((0, 0, 0), (128, 64, 128), (0, 0, 142))
IGNORE = 255


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Train ids (H, W): background, a road band, a car box, an unlabelled corner (255)."""
    ids = np.zeros((h, w), dtype=np.uint8)
    ids[h // 2 :] = 1
    x = int(rng.integers(0, w // 2))
    ids[h // 3 : h // 3 + h // 4, x : x + w // 3] = 2
    ids[: h // 6, : w // 6] = IGNORE
    return ids


def make_seg(root: Path, n: int = 8, size=(24, 32), colour: bool = False, splits=("train", "val"), layout: str = "splits") -> Path:
    """Photos (colour follows the class, plus noise) and masks (index PNGs of IDS or colour PNGs)."""
    rng = np.random.default_rng(0)
    palette = np.array([*COLORS, *[(0, 0, 0)] * 252, (255, 255, 255)], dtype=np.uint8)  # 255 -> white
    for split in splits if layout == "splits" else ("",):
        photos, masks = root / split / "images", root / split / "masks"
        photos.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ids = scene(rng, *size)
            photo = palette[ids].astype(np.int16) + rng.integers(-15, 16, size=(*size, 3))
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(photos / f"{split or 'all'}_{i:03d}.jpg", quality=95)
            if colour:
                Image.fromarray(palette[ids]).save(masks / f"{split or 'all'}_{i:03d}.png")
            else:
                user = np.array([*IDS, *[0] * 252, IGNORE], dtype=np.uint8)[ids]
                Image.fromarray(user, mode="L").save(masks / f"{split or 'all'}_{i:03d}.png")
        (photos / ".DS_Store").write_bytes(b"\0")
        (masks / "Thumbs.db").write_bytes(b"\0")
    if colour:
        classes = {"classes": [{"name": n, "color": list(c)} for n, c in zip(NAMES, COLORS, strict=True)], "ignore": [255, 255, 255]}
        (root / "classes.json").write_text(json.dumps(classes))
    else:
        lines = ["classes:"] + [f"  - {{name: {n}, id: {i}}}" for n, i in zip(NAMES, IDS, strict=True)] + [f"ignore: {IGNORE}"]
        (root / "classes.yaml").write_text("\n".join(lines) + "\n")
    return root


def datamodule(root: Path, tmp_path: Path, **kwargs) -> FolderSegDataModule:
    kwargs.setdefault("image_size", (24, 32))
    return FolderSegDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=4, **kwargs)


def truth(mask_file: Path) -> np.ndarray:
    """A mask as train ids, computed independently: index masks by IDS, colour masks by COLORS."""
    a = np.asarray(Image.open(mask_file)).astype(np.int64)
    out = np.full(a.shape[:2], 255, dtype=np.int64)
    if a.ndim == 2:
        for t, v in enumerate(IDS):
            out[a == v] = t
    else:
        for t, c in enumerate(COLORS):
            out[(a == c).all(-1)] = t
    return out


@pytest.mark.parametrize("colour", [False, True])
def test_masks_become_train_ids_and_the_users_ids_come_back(tmp_path, colour):
    root = make_seg(tmp_path / "d", colour=colour)
    dm = datamodule(root, tmp_path)
    info = dm.info
    assert info.mask_class_names == NAMES and info.targets == {"masks"}
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 7, "val": 8, "test": 1}  # test carved from train
    for split in ("train", "val"):
        for i, (photo, mask) in enumerate(dm.kept_pairs(split)):
            assert photo.stem == mask.stem
            assert np.array_equal(dm.splits[split].targets[i].numpy(), truth(mask))
            assert np.array_equal(dm.splits[split].images[i].permute(1, 2, 0).numpy(), np.asarray(Image.open(photo).convert("RGB")))
    assert (dm.splits["train"].targets == 255).any()
    if colour:
        assert info.palette == COLORS
        assert info.label_ids(np.array([0, 2, 255], dtype=np.uint8)).tolist() == [0, 2, 255]
    else:
        assert info.label_ids(np.array([0, 1, 2, 255], dtype=np.uint8)).tolist() == [0, 7, 26, 255]  # format=labelids
        assert info.unknown_label_ids(np.array([0, 7, 26, 255, 3], dtype=np.uint8)) == [3]


def test_one_folder_is_carved_into_three_splits(tmp_path):
    root = make_seg(tmp_path / "d", n=20, layout="flat")
    dm = datamodule(root, tmp_path, val_split=0.2, test_split=2)
    dm.setup()
    parts = {k: {p.stem for p, _ in dm.kept_pairs(k)} for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == {"train": 14, "val": 4, "test": 2}
    assert set.union(*parts.values()) == {f"all_{i:03d}" for i in range(20)} and not parts["train"] & parts["val"]
    no_test = datamodule(root, tmp_path, test_split=0)
    assert not no_test.has_split("test") and len(no_test.list_pairs("train", None)) == 18


def test_the_classes_file_is_checked(tmp_path):
    bad = tmp_path / "classes.yaml"
    bad.write_text("classes:\n  - {name: a, id: 3}\n  - {name: b, id: 3}\n")
    with pytest.raises(DataError, match="two classes the same id"):
        read_classes(bad)
    bad.write_text("classes: [a, b, c]\nignore: 1\n")
    with pytest.raises(DataError, match="ignore value 1 is also a class's id"):
        read_classes(bad)
    bad.write_text("classes: [a, b, c]\n")  # names alone: ids are positions, 255 ignored
    c = read_classes(bad)
    assert c.names == ("a", "b", "c") and c.ids == (0, 1, 2) and c.ignore_id == 255


def bad_tree(root: Path, kind: str) -> Path:
    make_seg(root, n=4, splits=("train",))
    masks, photos = root / "train" / "masks", root / "train" / "images"
    first = sorted(masks.glob("*.png"))[1]
    if kind == "size":
        Image.fromarray(np.zeros((20, 32), dtype=np.uint8), mode="L").save(first)
    elif kind == "value":
        ids = np.asarray(Image.open(first)).copy()
        ids[5, 5] = 9
        Image.fromarray(ids, mode="L").save(first)
    elif kind == "colour_mask_without_colours":
        Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(first)
    elif kind == "same_stem":
        Image.open(photos / "train_001.jpg").save(photos / "train_001.png")
    elif kind == "no_mask":
        first.unlink()
    elif kind == "unreadable":
        (photos / "train_002.jpg").write_bytes((photos / "train_002.jpg").read_bytes()[:150])
    elif kind == "no_images":
        for p in photos.glob("*.jpg"):
            p.unlink()
    elif kind == "no_classes":
        (root / "classes.yaml").unlink()
    return root


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("size", "annotation {root}/train/masks/train_001.png is 20x32 but its photo {root}/train/images/train_001.jpg is 24x32"),
        ("value", "mask {root}/train/masks/train_001.png holds value(s) 9 that {root}/classes.yaml does not name"),
        ("colour_mask_without_colours", "mask {root}/train/masks/train_001.png is an RGB image but {root}/classes.yaml gives no colours"),
        ("same_stem", "{root}/train/images has two files named train_001 (train_001.jpg and train_001.png)"),
        ("no_mask", "have no mask in {root}/train/masks, e.g. train_001.jpg"),
        ("unreadable", "cannot read {root}/train/images/train_002.jpg as an image"),
        ("no_images", "no images in {root}/train/images"),
        ("no_classes", "no classes file {root}/classes.yaml"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, kind, expected):
    root = bad_tree(tmp_path / "d", kind)
    with pytest.raises(DataError) as err:
        dm = datamodule(root, tmp_path, val_split=1, test_split=1)
        dm.prepare_data()
    text = str(err.value)
    assert expected.format(root=root) in text and "\n" not in text, text
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_skip_bad_files_leaves_out_an_unreadable_pair_and_lists_it(tmp_path, capsys):
    root = bad_tree(tmp_path / "d", "unreadable")
    make_seg(root, n=2, splits=("val",))
    dm = datamodule(root, tmp_path, test_split=0, skip_bad_files=True)
    dm.prepare_data()
    dm.setup()
    kept = [p.name for p, _ in dm.kept_pairs("train")]
    assert kept == ["train_000.jpg", "train_001.jpg", "train_003.jpg"] and len(dm.splits["train"]) == 3
    assert np.array_equal(dm.splits["train"].targets[2].numpy(), truth(root / "train" / "masks" / "train_003.png"))
    out = capsys.readouterr().out
    assert "Skipped 1 unreadable image(s)" in out
    listed = next((tmp_path / "cache" / "folder_seg").glob("*.skipped.txt")).read_text()
    assert listed.startswith(f"{root}/train/images/train_002.jpg\t")


@pytest.mark.slow  # four CLI runs: ~40-80 s on a 2-core CPU
def test_cli_unet_and_pix2pix_train_sample_and_write_the_users_ids(segen, tmp_path):
    root = make_seg(tmp_path / "d", n=8)
    common = ["data=folder_seg", f"data.root={root}", "data.image_size=[24,32]", f"paths.cache_dir={tmp_path / 'c'}", "debug=smoke", "data.batch_size=4"]
    run = tmp_path / "unet"
    train = segen("train", "model=unet", *common, "model.net.depth=2", "model.net.base_width=4", f"hydra.run.dir={run}")
    assert train.returncode == 0, train.stderr[-3000:]
    for name in NAMES:
        assert f"test/iou/{name}" in train.stdout
    photos = root / "val" / "images"
    ids = segen("sample", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"input={photos}", "format=labelids", f"out={tmp_path / 'ids'}")
    assert ids.returncode == 0, ids.stderr[-3000:]
    written = sorted((tmp_path / "ids" / "images").glob("*_pred.png"))
    assert len(written) == 8
    values = set(np.unique(np.stack([np.asarray(Image.open(p)) for p in written])).tolist())
    assert values <= set(IDS) and values  # the user's own ids, not train ids

    p2p = tmp_path / "p2p"
    train = segen("train", "model=pix2pix", *common, "model.generator.ngf=4", "model.discriminator.ndf=4", f"hydra.run.dir={p2p}")
    assert train.returncode == 0, train.stderr[-3000:]
    fake = segen("sample", f"ckpt={p2p / 'checkpoints' / 'last.ckpt'}", f"input={tmp_path / 'ids' / 'images'}", f"out={tmp_path / 'photos'}")
    assert fake.returncode == 0, fake.stderr[-3000:]
    assert torch.tensor(len(list((tmp_path / "photos").rglob("*.png")))) >= 8
