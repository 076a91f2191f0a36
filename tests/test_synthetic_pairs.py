"""Generated training pairs: `segen sample format=folder_seg` (pix2pix), FreeMask's filter
(`format=freemask`, unet) and `data.synthetic` mixing, on small shapes data and tiny untrained
nets built in-process (their outputs are arbitrary, which is all these properties need), plus
the documented loop through the real CLI (slow)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_segen
from omegaconf import OmegaConf
from PIL import Image

from segen.data.shapes import ShapesDataModule
from segen.data.synthetic import MixedBatchSampler, write_classes
from segen.errors import ConfigError, DataError
from segen.models.pix2pix import Discriminator, Generator
from segen.models.unet import UNet
from segen.outputs.freemask import write_filtered
from segen.outputs.synthetic import change_maps, write_synthetic
from segen.tasks.pix2pix import Pix2PixTask
from segen.tasks.segmentation import SegmentationTask

SIZE = 16
NAMES = ("background", "circle", "square", "triangle", "cross")


def shapes(**kwargs) -> ShapesDataModule:
    dm = ShapesDataModule(num_train=48, num_test=16, image_size=SIZE, batch_size=8, **kwargs)
    dm.use_target("masks")
    return dm


def tiny_pix2pix(seed: int = 0) -> Pix2PixTask:
    torch.manual_seed(seed)
    return Pix2PixTask(Generator(len(NAMES), 3, SIZE, SIZE, ngf=4), Discriminator(len(NAMES), 3, ndf=4),
                       partial(torch.optim.Adam), partial(torch.optim.Adam))


def sample_cfg(**kwargs):
    base = {"ckpt": "gen.ckpt", "seed": 3, "per_map": 2, "changed_maps": True, "split": None, "input": None, "format": "folder_seg"}
    return OmegaConf.create({**base, **kwargs})


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "train").rglob("*.png"))}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "syn"
    write_synthetic(tiny_pix2pix(), sample_cfg(), shapes(), out)
    return out


# -- generation ------------------------------------------------------------------------------------
def test_generation_writes_the_folder_seg_layout_from_every_training_map(synthetic_dir):
    dm = shapes()
    masks = dm.split_masks("train")[1]
    photos = sorted((synthetic_dir / "train" / "images").iterdir())
    assert len(photos) == 2 * len(masks)
    manifest = json.loads((synthetic_dir / "synthetic.json").read_text())
    assert (manifest["per_map"], manifest["pairs"], manifest["split"], manifest["copy_seeds"]) == (2, 2 * len(masks), "train", [3000, 3001])
    for i in (0, 7):  # copy 0 is the label map itself, as train ids
        k0 = np.asarray(Image.open(synthetic_dir / "train" / "masks" / f"train_{i:04d}_k0.png"))
        np.testing.assert_array_equal(k0, masks[i].numpy())
        k1 = np.asarray(Image.open(synthetic_dir / "train" / "masks" / f"train_{i:04d}_k1.png"))
        assert set(np.unique(k1)) <= set(np.unique(k0))  # changed maps keep the classes
        assert Image.open(synthetic_dir / "train" / "images" / f"train_{i:04d}_k0.png").size == (SIZE, SIZE)
    assert "circle" in (synthetic_dir / "classes.yaml").read_text()


def test_generation_is_reproducible_by_seed(tmp_path, synthetic_dir):
    write_synthetic(tiny_pix2pix(), sample_cfg(), shapes(), tmp_path / "again")
    assert folder_bytes(tmp_path / "again") == folder_bytes(synthetic_dir)
    write_synthetic(tiny_pix2pix(), sample_cfg(seed=4), shapes(), tmp_path / "other")
    other, same = folder_bytes(tmp_path / "other"), folder_bytes(synthetic_dir)
    photo = "train/images/train_0000_k0.png"
    assert other[photo] != same[photo]  # other dropout masks
    assert other["train/masks/train_0000_k0.png"] == same["train/masks/train_0000_k0.png"]  # the same map


def test_changed_maps_only_move_and_mirror_the_layout():
    masks = torch.randint(0, 5, (6, 12, 20), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    changed = change_maps(masks, seed=1, max_zoom=1.0)  # no zoom: each map is itself or its mirror
    for m, c in zip(masks, changed, strict=True):
        assert torch.equal(c, m) or torch.equal(c, m.flip(-1))
    assert torch.equal(change_maps(masks, seed=5), change_maps(masks, seed=5))


def test_generation_refuses_val_and_test_maps():
    from segen.outputs.translations import check_request

    for split in ("val", "test"):
        with pytest.raises(ConfigError, match="would put"):
            check_request(sample_cfg(split=split), "pix2pix")
    with pytest.raises(ConfigError, match="format=folder_seg"):
        check_request(sample_cfg(format=None), "pix2pix")


# -- FreeMask's filter ------------------------------------------------------------------------------
def numpy_filter(logits: np.ndarray, masks: np.ndarray, num_classes: int, multiple: float):
    """Independent: log-softmax cross-entropy per pixel, class means by loops, threshold."""
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    n, _, h, w = logits.shape
    loss = np.zeros((n, h, w))
    for c in range(num_classes):
        loss = np.where(masks == c, -logp[:, c], loss)
    means = {c: loss[masks == c].mean() for c in range(num_classes) if (masks == c).any()}
    noisy = np.zeros_like(masks, dtype=bool)
    for c, mean in means.items():
        noisy |= (masks == c) & (loss > multiple * mean)
    per_image = [loss[i][masks[i] != 255].mean() for i in range(n)]
    return noisy, per_image


def test_filter_marks_exactly_the_pixels_numpy_marks(tmp_path, synthetic_dir):
    # Some void pixels in the input: they stay void and count for no class.
    src = tmp_path / "src"
    pairs = sorted((synthetic_dir / "train" / "masks").iterdir())[:12]
    write_classes(src, NAMES)
    for sub in ("images", "masks"):
        (src / "train" / sub).mkdir(parents=True)
    for i, path in enumerate(pairs):
        mask = np.asarray(Image.open(path)).copy()
        mask[: i % 3, :] = 255
        Image.fromarray(mask, mode="L").save(src / "train" / "masks" / path.name)
        (src / "train" / "images" / path.name).write_bytes((synthetic_dir / "train" / "images" / path.name).read_bytes())

    torch.manual_seed(0)
    task = SegmentationTask(UNet(3, len(NAMES), depth=2, base_width=4), partial(torch.optim.AdamW))
    with torch.no_grad():  # an untrained net is near-uniform everywhere: spread its losses out
        for param in task.net.parameters():
            param.mul_(3)
    task.eval()
    dm = shapes()
    multiple = 1.3
    write_filtered(task, OmegaConf.create({"ckpt": "seg.ckpt", "input": str(src), "out": str(tmp_path / "out"), "multiple": multiple}), dm, tmp_path / "out")

    names = [p.name for p in pairs]
    images = np.stack([np.asarray(Image.open(src / "train" / "images" / n)) for n in names]).transpose(0, 3, 1, 2)
    masks = np.stack([np.asarray(Image.open(src / "train" / "masks" / n)) for n in names])
    with torch.no_grad():
        x = (torch.from_numpy(images).float() / 255 - 0.5) / 0.5  # shapes' standardization
        logits = task.net(x).double().numpy()
    noisy, per_image = numpy_filter(logits, masks, len(NAMES), multiple)
    assert 0.02 < noisy.sum() / (masks != 255).sum() < 0.9  # the threshold bites, and not everywhere
    written = np.stack([np.asarray(Image.open(tmp_path / "out" / "train" / "masks" / n)) for n in names])
    np.testing.assert_array_equal(written, np.where(noisy, 255, masks))
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["multiple"] == multiple
    np.testing.assert_allclose([scores["images"][Path(n).stem]["mean_loss"] for n in names], per_image, atol=1e-5)
    for n in names:  # photos are carried over unchanged
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "train" / "images" / n)), np.asarray(Image.open(src / "train" / "images" / n)))


# -- mixing --------------------------------------------------------------------------------------
MARK = 7  # every synthetic photo is this one grey value: easy to spot in a batch


@pytest.fixture(scope="module")
def marked_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("marked")
    write_classes(root, NAMES)
    for sub in ("images", "masks"):
        (root / "train" / sub).mkdir(parents=True)
    for i in range(10):
        Image.fromarray(np.full((SIZE, SIZE, 3), MARK, np.uint8)).save(root / "train" / "images" / f"s{i}.png")
        Image.fromarray(np.full((SIZE, SIZE), 1 + i % 4, np.uint8), mode="L").save(root / "train" / "masks" / f"s{i}.png")
    (root / "scores.json").write_text(json.dumps({"images": {f"s{i}": {"mean_loss": float(i == 3)} for i in range(10)}}))
    return root


def raw_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for batch in loader]  # uint8, before normalization and augmentation


def marked(images: torch.Tensor) -> torch.Tensor:
    return (images == MARK).flatten(1).all(1)


def test_mixing_keeps_synthetic_pairs_out_of_val_and_test(marked_dir):
    plain, mixed = shapes(), shapes(synthetic=str(marked_dir), synthetic_share=0.5)
    for dm in (plain, mixed):
        dm.setup("fit")
    for split in ("val", "test"):
        loader = getattr(mixed, f"{split}_dataloader")
        ours, theirs = raw_batches(loader()), raw_batches(getattr(plain, f"{split}_dataloader")())
        assert len(ours) == len(theirs)
        for (a, am), (b, bm) in zip(ours, theirs, strict=True):
            assert torch.equal(a, b) and torch.equal(am, bm) and not marked(a).any()
    assert torch.equal(mixed.class_pixel_weights(), plain.class_pixel_weights())  # real masks only
    assert any(marked(images).any() for images, _ in raw_batches(mixed.train_dataloader()))


@pytest.mark.parametrize("share, expected", [(0.25, 2), (0.5, 4), (0.75, 6), (1.0, 8)])
def test_each_training_batch_holds_the_share_asked_for(marked_dir, share, expected):
    plain, mixed = shapes(), shapes(synthetic=str(marked_dir), synthetic_share=share)
    for dm in (plain, mixed):
        dm.setup("fit")
    torch.manual_seed(0)
    batches = raw_batches(mixed.train_dataloader())
    assert len(batches) == len(plain.train_dataloader())  # same optimizer steps per epoch
    for images, masks in batches:
        assert len(images) == 8 and int(marked(images).sum()) == expected
        assert masks.dtype == torch.uint8 and (masks[marked(images)] > 0).all()  # synthetic masks came along
    torch.manual_seed(0)
    again = raw_batches(mixed.train_dataloader())
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(batches, again, strict=True))  # seeded


def test_real_pairs_are_drawn_without_replacement_within_an_epoch():
    torch.manual_seed(1)
    batches = list(MixedBatchSampler(40, 10, 4, 4, num_batches=10))
    real = [i for b in batches for i in b[:4]]
    assert sorted(real) == list(range(40))
    assert all(40 <= i < 50 for b in batches for i in b[4:])


def test_loss_sampling_draws_in_proportion_to_the_scores(marked_dir):
    dm = shapes(synthetic=str(marked_dir), synthetic_share=0.5, synthetic_sampling="loss")
    dm.setup("fit")
    torch.manual_seed(0)
    drawn = [i for b in dm.train_dataloader().batch_sampler for i in b[4:]]
    n_real = len(dm.splits["train"])
    assert set(drawn) == {n_real + 3}  # only s3 has a nonzero mean loss


def test_mixing_errors_are_one_line(tmp_path, marked_dir):
    with pytest.raises(ConfigError, match="synthetic_share"):
        shapes(synthetic=str(marked_dir), synthetic_share=1.5)
    dm = shapes(synthetic=str(marked_dir), synthetic_share=0.01)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="is no pair"):
        dm.train_dataloader()
    other = tmp_path / "other"
    write_classes(other, ("a", "b"))
    dm = shapes(synthetic=str(other))
    dm.setup("fit")
    with pytest.raises(DataError, match="names the classes a, b"):
        dm.train_dataloader()
    unscored = tmp_path / "unscored"
    write_synthetic(tiny_pix2pix(), sample_cfg(per_map=1), shapes(), unscored)
    dm = shapes(synthetic=str(unscored), synthetic_sampling="loss")
    dm.setup("fit")
    with pytest.raises(DataError, match="scores.json"):
        dm.train_dataloader()


# -- the loop, through the CLI ----------------------------------------------------------------------
@pytest.mark.slow
def test_the_documented_loop_runs_through_the_cli(tmp_path):
    common = ["data=shapes", "debug=smoke", "data.num_train=128", "data.num_test=32"]
    p2p = run_segen("train", "model=pix2pix", "model.generator.ngf=4", "model.discriminator.ndf=4", *common, f"hydra.run.dir={tmp_path / 'p2p'}", cwd=tmp_path)
    assert p2p.returncode == 0, p2p.stderr[-3000:]
    unet_args = ["model=unet", "model.net.depth=2", "model.net.base_width=4", *common]
    real = run_segen("train", *unet_args, f"hydra.run.dir={tmp_path / 'real'}", cwd=tmp_path)
    assert real.returncode == 0, real.stderr[-3000:]
    gen = run_segen("sample", f"ckpt={tmp_path / 'p2p/checkpoints/last.ckpt'}", "format=folder_seg", "per_map=2", "changed_maps=true",
                    f"out={tmp_path / 'syn'}", f"hydra.run.dir={tmp_path / 's1'}", cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert "Wrote 230 synthetic pairs (115 label maps x 2" in gen.stdout
    filt = run_segen("sample", f"ckpt={tmp_path / 'real/checkpoints/best.ckpt'}", "format=freemask", f"input={tmp_path / 'syn'}",
                     f"out={tmp_path / 'synf'}", f"hydra.run.dir={tmp_path / 's2'}", cwd=tmp_path)
    assert filt.returncode == 0, filt.stderr[-3000:]
    mix = run_segen("train", *unet_args, f"data.synthetic={tmp_path / 'synf'}", "data.synthetic_sampling=loss",
                    f"hydra.run.dir={tmp_path / 'mix'}", cwd=tmp_path)
    assert mix.returncode == 0, mix.stderr[-3000:]
    assert (tmp_path / "mix" / "checkpoints" / "best.ckpt").is_file()
    bad = run_segen("sample", f"ckpt={tmp_path / 'p2p/checkpoints/last.ckpt'}", "format=folder_seg", "split=val", f"hydra.run.dir={tmp_path / 's3'}", cwd=tmp_path)
    assert bad.returncode == 2 and "would put val label maps into training" in bad.stderr
