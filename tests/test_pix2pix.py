"""pix2pix: the nets, the task's schedule, training through the CLI, `segen sample` (seeded
dropout, input label maps, the unet round trip), `segen eval`'s FCN-score against an independent
numpy count, Cityscapes end to end on the format-faithful fixture, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapes_fixture import make_cityscapes
from conftest import run_segen
from PIL import Image

from segen.models.pix2pix import Discriminator, Generator, auto_depth, label_one_hot
from segen.tasks.gan import discriminator_loss, generator_loss
from segen.tasks.pix2pix import linear_decay

TINY_P2P = ["model=pix2pix", "debug=smoke", "model.generator.ngf=8", "model.discriminator.ndf=8", "data.num_train=256", "data.num_test=64"]
TINY_UNET = ["model=unet", "debug=smoke", "model.net.depth=2", "model.net.base_width=8", "data.num_train=256", "data.num_test=64"]


# -- nets ------------------------------------------------------------------------------------------
def test_one_hot_gives_void_pixels_all_zero_vectors():
    masks = torch.tensor([[[0, 2], [255, 1]]])
    onehot = label_one_hot(masks, 3)
    assert onehot.shape == (1, 3, 2, 2)
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0] and onehot[0, :, 0, 1].tolist() == [0, 0, 1]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0]  # void
    assert onehot.sum(1).flatten().tolist() == [1, 1, 0, 1]


@pytest.mark.parametrize(("size", "depth"), [((32, 32), 5), ((120, 160), 6), ((256, 256), 8), ((256, 512), 8), ((24, 48), 4)])
def test_generator_depth_follows_the_size_and_output_matches_the_input(size, depth):
    assert auto_depth(*size) == depth
    if size[0] > 128:
        return  # the paper's sizes: the rule only (the net itself is large)
    g = Generator(num_classes=5, channels=3, height=size[0], width=size[1], ngf=4)
    assert g.depth == depth
    masks = torch.randint(0, 5, (2, *size))
    masks[0, :4, :4] = 255
    out = g(masks)
    assert out.shape == (2, 3, *size) and out.abs().max() <= 1
    d = Discriminator(num_classes=5, channels=3, ndf=4, n_layers=2)
    patches = d(masks, out)
    assert patches.shape[:2] == (2, 1) and patches.shape[-1] > 1  # one logit per patch, several patches


def test_generator_has_dropout_only_in_the_innermost_decoder_stages_and_skips_everywhere():
    g = Generator(num_classes=4, channels=1, height=32, width=32, ngf=4, dropout_stages=3)
    dropouts = [any(isinstance(m, torch.nn.Dropout) for m in stage.modules()) for stage in g.decoder]
    assert dropouts == [True, True, True, False]
    # The first decoder stage takes the innermost map; the others take [skip, upsampled] (2x width).
    assert [stage[0].in_channels for stage in g.decoder] == [32, 64, 32, 16]
    with pytest.raises(ValueError, match="depth"):
        Generator(num_classes=4, channels=1, height=32, width=32, depth=6)


def test_lsgan_losses_and_the_halved_d_loss_parts():
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    assert discriminator_loss("lsgan", real, fake).item() == pytest.approx(0.125 + 0.125)
    assert generator_loss("lsgan", fake).item() == pytest.approx((1 + 0.25) / 2)


def decay_factors(total: int, decay: int) -> list[float]:
    """The LR factor of each epoch, stepping the scheduler once per epoch as Lightning does."""
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=1.0)
    schedule, factors = linear_decay(opt, total, decay), []
    for _ in range(total):
        factors.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return factors


@pytest.mark.parametrize(("total", "decay"), [(10, 4), (2, 5), (3, 1), (5, 5), (200, 100)])
def test_linear_decay_is_constant_then_falls_to_zero(total, decay):
    # pix2pix's lambda_rule, written out: factor = min(1, (total - epoch) / (decay + 1)), decay capped at total
    d = min(decay, total)
    assert decay_factors(total, decay) == pytest.approx([min(1.0, (total - e) / (d + 1)) for e in range(total)], abs=1e-12)
    if (total, decay) == (10, 4):
        assert decay_factors(10, 4) == pytest.approx([1.0] * 6 + [0.8, 0.6, 0.4, 0.2])


# -- trained tiny checkpoints, shared by the tests below ---------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("p2p")
    out = {}
    for name, args in (("pix2pix", TINY_P2P), ("unet", TINY_UNET)):
        result = run_segen("train", "data=shapes", *args, f"hydra.run.dir={root / name}", cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
        out[name] = root / name / "checkpoints" / "last.ckpt"
    out["root"] = root
    return out


def test_training_writes_checkpoints_and_the_label_generated_real_grid(runs):
    run = runs["pix2pix"].parent.parent
    grid = run / "samples" / "epoch_000.png"
    assert grid.is_file()
    with Image.open(grid) as im:
        # 8 examples x 3 columns of 32 px, laid out as a near-square block, plus the legend below
        assert im.width >= 3 * 32 and im.height > 32
    metrics = (run / "metrics.csv").read_text()
    for key in ("train/g_loss", "train/d_loss", "train/l1", "val/l1"):
        assert key in metrics


def test_same_seed_same_bytes_other_seed_other_dropout(runs, tmp_path):
    ckpt = runs["pix2pix"]
    outs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = run_segen("sample", f"ckpt={ckpt}", "n=4", f"seed={seed}", f"out={tmp_path / name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        outs[name] = [p.read_bytes() for p in sorted((tmp_path / name / "images").glob("*.png"))]
    assert len(outs["a"]) == 4 and outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]  # dropout is the generator's noise
    assert (tmp_path / "a" / "grid.png").is_file()


def test_round_trip_unet_labelids_then_pix2pix(runs, tmp_path):
    ids = run_segen("sample", f"ckpt={runs['unet']}", "format=labelids", "n=3", f"out={tmp_path / 'L'}", cwd=tmp_path)
    assert ids.returncode == 0, ids.stderr[-2000:]
    labels = sorted((tmp_path / "L" / "images").glob("*_pred.png"))
    assert [p.name for p in labels] == ["val_0000_pred.png", "val_0001_pred.png", "val_0002_pred.png"]
    back = run_segen("sample", f"ckpt={runs['pix2pix']}", f"input={tmp_path / 'L' / 'images'}", f"out={tmp_path / 'P'}", cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-2000:]
    photos = sorted((tmp_path / "P" / "images").glob("*.png"))
    assert [p.name for p in photos] == ["val_0000.png", "val_0001.png", "val_0002.png"]
    with Image.open(photos[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_unknown_label_ids_are_one_line_and_nothing_is_written(runs, tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "a.png")
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0], bad[1, 1] = 7, 9
    Image.fromarray(bad).save(folder / "b.png")
    result = run_segen("sample", f"ckpt={runs['pix2pix']}", f"input={folder}", f"out={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "b.png" in line and "7, 9" in line and "0..4" in line
    assert not (tmp_path / "out" / "images").exists()


def test_fcn_score_matches_an_independent_numpy_count(runs, tmp_path):
    out = tmp_path / "eval"
    result = run_segen("eval", f"ckpt={runs['pix2pix']}", f"eval.segmenter_ckpt={runs['unet']}", "seed=5", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in ("FCN-score", "generated", "real", "generated/real", "per-pixel acc.", "SSIM", "FID/KID skipped"):
        assert text in result.stdout, text
    report = json.loads((out / "metrics.json").read_text())
    metrics, protocol = report["metrics"], report["protocol"]
    assert protocol["n"] == 64 and protocol["resolution"] == "32x32" and protocol["seed"] == 5
    assert report["num_images"] == 64 and report["split"] == protocol["split"]
    assert len(protocol["segmenter"]["sha256"]) == 64

    # Independently: the same generated images (seeded dropout), the segmenter's predictions,
    # and a numpy confusion matrix over the whole split.
    from segen.restore import restore_task
    from segen.viz import to_uint8

    _, p2p, dm = restore_task(runs["pix2pix"])
    _, seg, seg_dm = restore_task(runs["unet"])
    dm.setup("test")
    real, masks = dm.splits["test"].images, dm.splits["test"].targets.long()
    fake = to_uint8(p2p.translate(masks, seed=5, batch_size=250))
    k = 5
    for which, images in (("generated", fake), ("real", real)):
        pred = seg.predict_masks(images, seg_dm).numpy().ravel()
        truth = masks.numpy().ravel()
        keep = truth != 255
        cm = np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k).astype(float)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        present_truth = cm.sum(1) > 0
        assert metrics[f"test/fcn/{which}/pixel_acc"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-9)
        assert metrics[f"test/fcn/{which}/class_acc"] == pytest.approx(np.mean(tp[present_truth] / cm.sum(1)[present_truth]), abs=1e-9)
        assert metrics[f"test/fcn/{which}/miou"] == pytest.approx(np.nanmean(iou), abs=1e-9)
        assert metrics[f"test/fcn/{which}/iou/circle"] == pytest.approx(iou[1], abs=1e-9, nan_ok=True)
    ratio = metrics["test/fcn/generated/miou"] / metrics["test/fcn/real/miou"]
    assert metrics["test/fcn/ratio/miou"] == pytest.approx(ratio)
    l1 = (fake.float() - real.float()).abs().mean().item() / 255
    assert metrics["test/l1"] == pytest.approx(l1, rel=1e-5)


def test_eval_without_a_segmenter_says_how_to_get_the_fcn_score(runs, tmp_path):
    result = run_segen("eval", f"ckpt={runs['pix2pix']}", "eval.features=segmenter", cwd=tmp_path)
    assert result.returncode == 2 and "eval.segmenter_ckpt" in result.stderr and "\n" not in result.stderr.strip()
    result = run_segen("eval", f"ckpt={runs['pix2pix']}", "eval.max_images=16", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FCN-score not computed" in result.stdout and "eval.segmenter_ckpt=" in result.stdout
    assert "PSNR" in result.stdout


def test_asking_for_inception_without_weights_names_the_offline_choice(runs, tmp_path):
    result = run_segen("eval", f"ckpt={runs['pix2pix']}", "eval.features=inception", f"eval.inception_weights={tmp_path / 'none.pth'}", cwd=tmp_path)
    line = result.stderr.strip()
    assert result.returncode == 2 and "\n" not in line
    assert "none.pth" in line and "eval.features=segmenter" in line and "classifier" not in line


def test_segmenter_features_give_fid_and_kid(runs, tmp_path):
    result = run_segen("eval", f"ckpt={runs['pix2pix']}", f"eval.segmenter_ckpt={runs['unet']}", "eval.features=segmenter",
                       f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]
    assert metrics["test/fid"] > 0 and "test/kid/mean" in metrics


def test_bad_segmenters_and_data_are_one_line_and_exit_2(runs, tmp_path, mnist_root, smoke_cnn_run):
    cases = {
        "not a segmenter": (["eval", f"ckpt={runs['pix2pix']}", f"eval.segmenter_ckpt={smoke_cnn_run / 'checkpoints' / 'best.ckpt'}"], "does not segment"),
        "on mnist": (["train", "model=pix2pix", "data=mnist", f"paths.data_dir={mnist_root}"], "choose a dataset with masks"),
    }
    for name, (args, expected) in cases.items():
        result = run_segen(*args, cwd=tmp_path)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        line = result.stderr.strip()
        assert "\n" not in line and expected in line and "Traceback" not in result.stderr, (name, line)


# -- Cityscapes, end to end on the fixture -----------------------------------------------------------
def test_cityscapes_train_eval_and_label_files_to_leftimg8bit(tmp_path, runs):
    root = make_cityscapes(tmp_path / "data", per_city=2, size=(48, 96))
    common = [f"paths.data_dir={root}", "data.image_size=[24,48]", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=4", "debug=smoke"]
    p2p = run_segen("train", "model=pix2pix", "data=cityscapes", "model.generator.ngf=4", "model.discriminator.ndf=4",
                    f"hydra.run.dir={tmp_path / 'p2p'}", *common, cwd=tmp_path)
    assert p2p.returncode == 0, p2p.stderr[-3000:]
    unet = run_segen("train", "model=unet", "data=cityscapes", "model.net.depth=2", "model.net.base_width=4",
                     f"hydra.run.dir={tmp_path / 'unet'}", *common, cwd=tmp_path)
    assert unet.returncode == 0, unet.stderr[-3000:]
    p2p_ckpt, unet_ckpt = tmp_path / "p2p" / "checkpoints" / "last.ckpt", tmp_path / "unet" / "checkpoints" / "best.ckpt"

    ev = run_segen("eval", f"ckpt={p2p_ckpt}", f"eval.segmenter_ckpt={unet_ckpt}", f"hydra.run.dir={tmp_path / 'ev'}", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["test/fcn/generated/miou"] <= 1 and "test/fcn/real/iou/road" in metrics and "IoU road" in ev.stdout

    # Official label files in, names cityscapesScripts reads out.
    labels = root / "cityscapes" / "gtFine" / "val"
    first = sorted(labels.rglob("*_gtFine_labelIds.png"))[0]
    colour = first.with_name(first.name.replace("_labelIds", "_color"))  # as in the real gtFine tree
    Image.fromarray(np.zeros((48, 96, 3), np.uint8)).save(colour)
    out = run_segen("sample", f"ckpt={p2p_ckpt}", f"input={labels}", f"out={tmp_path / 'gen'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "gen" / "images").glob("*.png"))
    assert files and all(name.endswith("_leftImg8bit.png") for name in files)
    assert len(files) == len(list(labels.rglob("*_gtFine_labelIds.png")))

    # A segmenter of other classes (shapes' 5) is refused in one line.
    wrong = run_segen("eval", f"ckpt={p2p_ckpt}", f"eval.segmenter_ckpt={runs['unet']}", cwd=tmp_path)
    assert wrong.returncode == 2 and "\n" not in wrong.stderr.strip()
    assert "segments 5 classes of shapes" in wrong.stderr and "trained on cityscapes" in wrong.stderr


def test_export_takes_label_maps_and_matches_pytorch(runs, tmp_path):
    out = tmp_path / "p2p.onnx"
    result = run_segen("export", f"ckpt={runs['pix2pix']}", "format=onnx", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max abs diff" in result.stdout and out.is_file()
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())  # p2p.onnx.json
    assert sidecar["task"] == "translation" and sidecar["input"]["shape"] == ["batch", 32, 32]
    assert sidecar["mask_class_names"][0] == "background"
