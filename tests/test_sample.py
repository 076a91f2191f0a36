"""`segen sample`: files written, grid dimensions, byte-identical output, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_GAN, run_segen
from PIL import Image


def train_tiny(tmp_path_factory, model: str) -> Path:
    root = tmp_path_factory.mktemp(model)
    result = run_segen("train", f"model={model}", "data=shapes", *TINY_GAN, f"hydra.run.dir={root}/run", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def dcgan_ckpt(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory, "dcgan")


@pytest.fixture(scope="module")
def cgan_ckpt(tiny_cgan_ckpt) -> Path:
    return tiny_cgan_ckpt  # conftest: the same tiny training, shared with test_eval_gan


def sample(tmp_path: Path, *args: str):
    return run_segen("sample", *args, f"hydra.run.dir={tmp_path}/hydra", cwd=tmp_path)


def grid_size(rows: int, cols: int, size: int = 32, padding: int = 2) -> tuple[int, int]:
    return cols * (size + padding) + padding, rows * (size + padding) + padding


def test_dcgan_same_seed_same_bytes(dcgan_ckpt, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        result = sample(tmp_path, f"ckpt={dcgan_ckpt}", "n=16", f"seed={seed}", f"out={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-3000:]
    a, b, c = (tmp_path / n for n in "abc")
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 17  # grid + 16 images
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "grid.png").read_bytes() != (c / "grid.png").read_bytes()
    assert Image.open(a / "grid.png").size == grid_size(4, 4)
    assert Image.open(a / "images" / "0000.png").size == (32, 32)


def test_dcgan_npz_holds_the_same_images(dcgan_ckpt, tmp_path):
    for fmt in ("png", "npz"):
        result = sample(tmp_path, f"ckpt={dcgan_ckpt}", "n=5", "seed=3", f"format={fmt}", f"out={tmp_path / fmt}")
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "npz").iterdir()) == ["grid.png", "samples.npz"]
    images = np.load(tmp_path / "npz" / "samples.npz")["images"]
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    first = np.asarray(Image.open(tmp_path / "png" / "images" / "0000.png")).transpose(2, 0, 1)
    assert np.array_equal(images[0], first)
    assert Image.open(tmp_path / "png" / "grid.png").size == grid_size(2, 3)


def test_cgan_per_class_grid_has_a_row_per_class(cgan_ckpt, tmp_path):
    result = sample(tmp_path, f"ckpt={cgan_ckpt}", "per_class=3", "seed=0", f"out={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert Image.open(out / "grid.png").size == grid_size(4, 3)
    names = ["0_circle", "1_square", "2_triangle", "3_cross"]
    for name in names:
        assert Image.open(out / f"grid_{name}.png").size == grid_size(1, 3)
    images = sorted(p.name for p in (out / "images").iterdir())
    assert len(images) == 12
    assert images[:4] == ["0000_circle.png", "0001_circle.png", "0002_circle.png", "0003_square.png"]


def test_cgan_labels_by_index_or_name(cgan_ckpt, tmp_path):
    result = sample(tmp_path, f"ckpt={cgan_ckpt}", "labels=[triangle,1]", "n=3", "format=npz", f"out={tmp_path}/o")
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(tmp_path / "o" / "samples.npz")
    assert data["labels"].tolist() == [2, 1, 2]
    assert list(data["class_names"]) == ["circle", "square", "triangle", "cross"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["n=0"], "n=0 is not a number of images"),
        (["n=-3"], "n=-3 is not a number of images"),
        (["format=jpg"], "format=jpg is not supported"),
        (["labels=[1]"], "unconditional"),
        (["per_class=2"], "unconditional"),
        (["model=cnn"], "contradicts the checkpoint"),
    ],
)
def test_dcgan_user_mistakes_are_one_line(dcgan_ckpt, tmp_path, args, expected):
    result = sample(tmp_path, f"ckpt={dcgan_ckpt}", *args)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args,expected",
    [(["labels=[4]"], "label 4 is not a class"), (["labels=[dog]"], "label 'dog' is not a class"), (["per_class=0"], "per_class=0")],
)
def test_cgan_user_mistakes_are_one_line(cgan_ckpt, tmp_path, args, expected):
    result = sample(tmp_path, f"ckpt={cgan_ckpt}", *args)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_classifier_samples_the_class_of_each_image_by_name(straight_tiny_cnn, tmp_path):
    """`segen sample ckpt=<cnn>`: predictions.csv names the dataset's classes; the probabilities
    are the checkpoint's own softmax, computed here independently."""
    import csv

    from segen.restore import restore_task

    ckpt = straight_tiny_cnn / "checkpoints" / "last.ckpt"
    result = sample(tmp_path, f"ckpt={ckpt}", "n=6", f"out={tmp_path / 'test'}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "test" / "predictions.csv")))
    _, task, dm = restore_task(ckpt)
    classes = list(dm.info.class_names)
    assert len(rows) == 6 and {r["class"] for r in rows} <= set(classes) and all(r["truth"] in classes for r in rows)
    images = torch.stack([e.image for e in dm.examples("test", 6)])
    with torch.no_grad():
        probs = task.eval()(dm.normalize(images)).float().softmax(1)
    assert [r["class"] for r in rows] == [classes[i] for i in probs.argmax(1).tolist()]
    assert [float(r["probability"]) for r in rows] == pytest.approx(probs.max(1).values.tolist(), abs=1e-4)
    assert [r["truth"] for r in rows] == [classes[i] for i in dm.splits["test"].targets[:6].tolist()]

    # Photos from input=, of another size: resized to the training size, no truth column.
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(images[:3]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).resize((40, 40)).save(photos / f"p{i}.png")
    result = sample(tmp_path, f"ckpt={ckpt}", f"input={photos}", f"out={tmp_path / 'photos_out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "photos_out" / "predictions.csv")))
    assert [r["file"] for r in rows] == ["p0.png", "p1.png", "p2.png"] and all(r["truth"] == "" for r in rows)
    assert "predictions.csv" in result.stdout and (tmp_path / "photos_out" / "grid.png").is_file()
    bad = sample(tmp_path, f"ckpt={ckpt}", "format=labelids")
    assert bad.returncode == 2 and "a classifier writes predictions.csv" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


class _FirstClassSegmenter(torch.nn.Module):
    """A stand-in segmenter: predicts "circle" where the image's red channel is bright, else background."""

    num_classes = 5

    def forward(self, x):
        logits = torch.zeros(len(x), 5, *x.shape[-2:])
        logits[:, 1] = (x[:, 0] > 0).float() * 2 - 1
        return logits


@pytest.mark.parametrize("with_input", [True, False])
def test_unet_grid_says_what_its_third_column_is(tmp_path, capsys, with_input):
    """Photos from input= have no truth: the third column is the overlay, and the line says so;
    validation images show their truth mask."""
    from functools import partial

    from omegaconf import OmegaConf

    from segen.data.shapes import ShapesDataModule
    from segen.outputs.masks import write_masks
    from segen.tasks.segmentation import SegmentationTask

    datamodule = ShapesDataModule(num_train=20, num_test=4, batch_size=4, val_split=4)
    datamodule.use_target("masks")  # as the segmentation task asks before setup
    task = SegmentationTask(_FirstClassSegmenter(), optimizer=partial(torch.optim.SGD, lr=0.1))
    cfg = {"n": 2}
    if with_input:
        photos = tmp_path / "photos"
        photos.mkdir()
        for i, example in enumerate(datamodule.examples("val", 2)):
            Image.fromarray(example.image.permute(1, 2, 0).numpy()).save(photos / f"photo{i}.png")
        cfg = {"input": str(photos)}
    out = tmp_path / "out"
    write_masks(task, OmegaConf.create(cfg), datamodule, out)
    line = " ".join(capsys.readouterr().out.split())
    grid = np.asarray(Image.open(out / "grid.png").convert("RGB"))
    grid = grid[:: grid.shape[1] // (3 * 34 + 2), :: grid.shape[1] // (3 * 34 + 2)]  # undo the legend's upscaling
    first = "photo0" if with_input else "val_0000"
    third = grid[2:34, 2 + 2 * 34 : 2 + 2 * 34 + 32]  # row 0, column 2 of 32-pixel tiles, 2-pixel padding
    overlay = np.asarray(Image.open(out / "images" / f"{first}_overlay.png").convert("RGB"))
    if with_input:
        assert "grid.png: image | prediction | overlay" in line and "truth" not in line.replace("no truth", ""), line
        assert np.array_equal(third, overlay)
    else:
        assert "grid.png: image | prediction | truth" in line, line
        assert not np.array_equal(third, overlay)


def test_photos_read_for_input_are_writable_arrays(tmp_path):
    """`segen sample input=` turned PIL's read-only buffer into a tensor, and torch warned that
    writing to it is undefined behaviour; `read_image` hands out an array of its own."""
    from segen.data.files import read_image

    Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(tmp_path / "p.png")
    array = read_image(tmp_path / "p.png")
    assert array.shape == (3, 5, 7) and array.flags.writeable and int(array[0, 0, 0]) == 9
    assert read_image(tmp_path / "p.png", channels=1).flags.writeable
