"""`data=folder`: a user's class-per-folder images, read as the policy says (modes, sizes, EXIF),
split and labelled from the folder names, bad files named in one line, and the CLI end to end
(train, export and sample name the user's classes)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segen.data.folder import FolderDataModule
from segen.errors import DataError

CLASSES = ("cat", "dog", "zebra")  # sorted, as the folders are


def bar_image(label: int, size=(16, 16), rng=None) -> np.ndarray:
    """RGB uint8 (H, W, 3): dark noise and a bright vertical bar whose column depends on the label."""
    rng = rng or np.random.default_rng(label)
    h, w = size
    a = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    a[:, label * w // 3 : (label + 1) * w // 3] = 255
    return a


def make_folder(root: Path, per_class: int = 6, splits=("train",), size=(16, 16)) -> Path:
    """`root/<split>/<class>/<i>.png` plus files that are not images, which must be ignored."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(bar_image(label, size, rng)).save(folder / f"{i:03d}.png")
            (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
            (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
            (folder / "notes.txt").write_text("not an image")
    return root


def datamodule(root: Path, tmp_path: Path, **kwargs) -> FolderDataModule:
    kwargs.setdefault("image_size", 16)
    return FolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=4, **kwargs)


def test_classes_labels_and_pixels_come_from_the_folders(tmp_path):
    root = make_folder(tmp_path / "d", splits=("train", "test"))
    dm = datamodule(root, tmp_path)
    assert dm.info.class_names == CLASSES and dm.info.num_classes == 3 and dm.info.targets == {"labels"}
    dm.prepare_data()
    dm.setup()
    # test/ is a folder: used as is; val carved from train (10% of 18 -> 2)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 16, "val": 2, "test": 18}
    files = sorted((root / "test").rglob("*.png"))
    expected = np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in files])
    labels = [CLASSES.index(f.parent.name) for f in files]
    assert np.array_equal(dm.splits["test"].images.numpy(), expected)  # same sorted order, exact pixels
    assert dm.splits["test"].targets.tolist() == labels
    x, y = dm.splits["test"].__getitems__([17, 0, 5])
    assert np.array_equal(x.numpy(), expected[[17, 0, 5]]) and y.tolist() == [labels[17], labels[0], labels[5]]


def test_carving_is_seeded_disjoint_and_covers_train(tmp_path):
    root = make_folder(tmp_path / "d", per_class=10)
    dm = datamodule(root, tmp_path, val_split=0.2, test_split=3)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 21, "val": 6, "test": 3}
    parts = {k: {str(p) for p, _ in dm.files(k)} for k in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"]) and not (parts["val"] & parts["test"])
    assert set.union(*parts.values()) == {str(p) for p in (root / "train").rglob("*.png")}
    for split, part in parts.items():  # each split is its own cache file, rows in file order
        files = sorted(part)
        expected = np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in files])
        assert np.array_equal(dm.splits[split].images.numpy(), expected)
        assert dm.splits[split].targets.tolist() == [CLASSES.index(Path(f).parent.name) for f in files]
    again = datamodule(root, tmp_path, val_split=0.2, test_split=3)
    assert all(again.files(k) == dm.files(k) for k in parts)
    assert [e.name for e in dm.examples("val", 2)][0].split("_")[0] in CLASSES  # named <class>_<stem>


def test_any_mode_and_size_is_converted_by_the_stated_policy(tmp_path):
    root = tmp_path / "d"
    (root / "train" / "a").mkdir(parents=True)
    (root / "train" / "b").mkdir(parents=True)
    # 20x40 (h x w): left quarter red, middle half blue, right quarter green.
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :10, 0], wide[:, 10:30, 2], wide[:, 30:, 1] = 255, 255, 255
    Image.fromarray(wide).save(root / "train" / "a" / "wide.PNG")  # upper-case extension
    rgba = np.dstack([bar_image(0, (10, 10)), np.full((10, 10), 7, dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "train" / "a" / "alpha.png")
    grey = np.arange(100, dtype=np.uint8).reshape(10, 10)
    Image.fromarray(grey, mode="L").save(root / "train" / "b" / "grey.png")
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8).repeat(5, 0).repeat(5, 1), mode="P")
    palette.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (768 - 9))
    palette.save(root / "train" / "b" / "palette.png")
    # A portrait photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view).
    stored = np.zeros((10, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255  # left half white as stored: the top half once stood up
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "train" / "b" / "phone.jpg", exif=exif, quality=100)

    for split in ("val", "test"):  # present, so train/ is not carved
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(bar_image(0, (10, 10))).save(root / split / "a" / "x.png")

    def decoded(**kwargs):
        dm = datamodule(root, tmp_path, image_size=10, **kwargs)
        cache = dm.load_cached("train")
        return {Path(name).name: cache.tensor("images")[i].permute(1, 2, 0).numpy() for i, name in enumerate(cache.meta["files"])}

    crop = decoded()
    centre = crop["wide.PNG"]  # the centre 20x20 (all blue) scaled to 10x10; only the filter's edge taps see red/green
    assert (centre[:, 1:-1, 2] == 255).all() and (centre[:, 1:-1, :2] == 0).all() and (centre[:, :, :2] < 64).all()
    assert np.array_equal(crop["alpha.png"], rgba[:, :, :3])  # alpha dropped
    assert np.array_equal(crop["grey.png"], np.repeat(grey[:, :, None], 3, 2))  # greyscale repeated
    expected_palette = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0]], dtype=np.uint8)[np.asarray(palette)]
    assert np.array_equal(crop["palette.png"], expected_palette)
    phone = crop["phone.jpg"].astype(int).mean(2)
    assert phone[:4].mean() > 200 and phone[-4:].mean() < 50  # stood up by its EXIF orientation: white on top
    stretched = decoded(resize="stretch")["wide.PNG"]
    assert (stretched[:, 0, 0] > 200).all() and (stretched[:, -1, 1] > 200).all()  # all three bands kept, squeezed
    grey_only = datamodule(root, tmp_path, image_size=10, channels=1).load_cached("train")
    assert grey_only.tensor("images").shape == (5, 1, 10, 10)


def test_a_checkpoint_keeps_the_class_names(tmp_path):
    root = make_folder(tmp_path / "d")
    dm = datamodule(root, tmp_path)
    state = dm.state_dict()
    assert state == {"class_names": list(CLASSES)}
    (root / "train" / "aardvark").mkdir()  # a class added after training: the stored order is refused
    Image.fromarray(bar_image(0)).save(root / "train" / "aardvark" / "x.png")
    with pytest.raises(DataError, match="trained on classes cat, dog, zebra"):
        datamodule(root, tmp_path).load_state_dict(state)
    gone = datamodule(tmp_path / "moved", tmp_path)  # the data folder is gone (export on another machine)
    gone.load_state_dict(state)
    assert gone.info.class_names == CLASSES


def truncated(path: Path) -> None:
    Image.fromarray(bar_image(1, (32, 32))).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "cannot read {root}/train/dog/bad.jpg as an image"),
        ("not_an_image", "cannot read {root}/train/dog/fake.png as an image"),
        ("empty_class", "class folder {root}/train/emu holds no images"),
        ("no_images", "no images in {root}/train"),
        ("unknown_val_class", "{root}/val/yak is a class that {root}/train does not have"),
        ("no_train", "{root} has no train/ folder (it holds cat, dog, zebra: move them into {root}/train/)"),
        ("missing_root", "data.root={root}/nowhere does not exist"),
    ],
)
def test_bad_folders_are_one_line_naming_the_file(tmp_path, kind, expected):
    root = tmp_path / "d"
    if kind == "no_images":
        (root / "train").mkdir(parents=True)
        (root / "train" / "notes.txt").write_text("x")
    elif kind == "no_train":
        for name in CLASSES:
            (root / name).mkdir(parents=True)
    else:
        make_folder(root, per_class=3)
    if kind == "truncated":
        truncated(root / "train" / "dog" / "bad.jpg")
    elif kind == "not_an_image":
        (root / "train" / "dog" / "fake.png").write_text("<html>not a png</html>")
    elif kind == "empty_class":
        (root / "train" / "emu").mkdir()
        (root / "train" / "emu" / "Thumbs.db").write_bytes(b"x")
    elif kind == "unknown_val_class":
        make_folder(root, per_class=1, splits=("val",))
        (root / "val" / "yak").mkdir()
        Image.fromarray(bar_image(0)).save(root / "val" / "yak" / "1.png")
    target = root / "nowhere" if kind == "missing_root" else root
    with pytest.raises(DataError) as err:
        dm = datamodule(target, tmp_path)
        dm.prepare_data()
    text = str(err.value)
    assert expected.format(root=root) in text and "\n" not in text, text
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # a failed build leaves no temporary file


def test_cli_refuses_a_truncated_image_in_one_line_then_skips_it_when_asked(segen, tmp_path):
    root = make_folder(tmp_path / "d", per_class=4)
    truncated(root / "train" / "dog" / "bad.jpg")
    common = ["model=cnn", "data=folder", f"data.root={root}", "data.image_size=16", f"paths.cache_dir={tmp_path / 'c'}",
              "debug=smoke", "model.net.widths=[4,8,8,8]"]
    refused = segen("train", *common, f"hydra.run.dir={tmp_path / 'r1'}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{root}/train/dog/bad.jpg" in lines[0] and "data.skip_bad_files=true" in lines[0], refused.stderr
    run = tmp_path / "r2"
    skipped = segen("train", *common, "data.skip_bad_files=true", f"hydra.run.dir={run}")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert f"Skipped 1 unreadable image(s) of {root}/train" in skipped.stdout and str(run / "skipped_files.txt") in skipped.stdout
    assert (run / "skipped_files.txt").read_text() == f"{root}/train/dog/bad.jpg\n"


@pytest.mark.slow  # three CLI runs: ~30-60 s on a 2-core CPU
def test_cli_trains_a_cnn_and_a_cgan_whose_outputs_name_the_folder_classes(segen, tmp_path):
    root = make_folder(tmp_path / "d", per_class=6, size=(24, 20))
    common = ["data=folder", f"data.root={root}", f"paths.cache_dir={tmp_path / 'c'}", "debug=smoke"]
    run = tmp_path / "cnn"
    train = segen("train", "model=cnn", *common, "data.image_size=16", "model.net.widths=[4,8,8,8]", f"hydra.run.dir={run}")
    assert train.returncode == 0, train.stderr[-3000:]
    for name in CLASSES:
        assert f"test/acc/{name}" in train.stdout
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["FolderDataModule"] == {"class_names": list(CLASSES)}
    export = segen("export", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "format=torchscript", f"out={tmp_path / 'm.pt'}")
    assert export.returncode == 0, export.stderr[-3000:]
    assert json.loads((tmp_path / "m.pt.json").read_text())["class_names"] == list(CLASSES)

    gan = tmp_path / "cgan"
    train = segen("train", "model=cgan", *common, "data.image_size=32", "model.generator.width=8", "model.discriminator.width=8",
                  f"hydra.run.dir={gan}")
    assert train.returncode == 0, train.stderr[-3000:]
    sample = segen("sample", f"ckpt={gan / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 's'}")
    assert sample.returncode == 0, sample.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "s" / "images").iterdir())
    assert {n.split("_", 1)[1].removesuffix(".png") for n in names} == set(CLASSES)

    # The cnn's predictions name the folder classes, even once the data folder is gone: the
    # class names come back from the checkpoint (segen/restore.py).
    photos = tmp_path / "photos"
    shutil.copytree(root / "train" / CLASSES[0], photos)
    shutil.rmtree(root)
    predicted = segen("sample", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"input={photos}", f"out={tmp_path / 'p'}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert len(rows) == len(list(photos.glob("*.png"))) and {r["class"] for r in rows} <= set(CLASSES)  # .DS_Store and the like are not images
