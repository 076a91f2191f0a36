"""End to end through the real CLI: train on each dataset, checkpoints, eval, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

SMOKE = ("debug=smoke", "trainer=cpu")


def trained(segen, tmp_path: Path, *overrides: str) -> Path:
    run = tmp_path / "run"
    result = segen("train", *SMOKE, *overrides, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.fixture
def shapes_run(smoke_cnn_run) -> Path:
    """`segen train debug=smoke trainer=cpu` (conftest's session run), read, never changed."""
    return smoke_cnn_run


def test_train_shapes_writes_checkpoints_logs_and_config(shapes_run):
    run = shapes_run
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "config_tree.log").is_file()
    assert "model" in (run / "config_tree.log").read_text()
    metrics = (run / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/acc" in metrics and "test/acc" in metrics
    # Checkpoints are plain data: they load with weights_only=True and carry the resolved config.
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(ckpt["segen"]["config"])
    assert cfg.model.net.in_channels == 3 and cfg.model.net.num_classes == 4
    assert ckpt["segen"]["choices"]["model"] == "cnn" and ckpt["segen"]["choices"]["data"] == "shapes"


def test_eval_reports_test_accuracy_that_matches_an_independent_count(segen, tmp_path):
    small_net = ("model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,true]")  # CPU time
    run = trained(segen, tmp_path, "trainer.limit_train_batches=10", *small_net)
    out = tmp_path / "eval"
    result = segen("eval", f"ckpt={run}/checkpoints/best.ckpt", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "test" and report["num_images"] == 1000
    assert "test/acc" in result.stdout and "per-class acc" in result.stdout
    for name in ("circle", "square", "triangle", "cross"):
        assert f"test/acc/{name}" in report["metrics"]

    # Independent check: rebuild the net by hand and count correct predictions on the test set.
    from segen.data.shapes import make_shapes
    from segen.models.cnn import CNN

    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(ckpt["segen"]["config"])
    net_cfg = OmegaConf.to_container(cfg.model.net)
    net_cfg.pop("_target_")
    net = CNN(**net_cfg)
    net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    net.eval()
    images, labels, _ = make_shapes(1000, 32, 3, seed=cfg.data.seed + 1_000_003, noise=cfg.data.noise)
    with torch.no_grad():
        preds = net((images.float() / 255 - 0.5) / 0.5).argmax(1)
    expected = (preds == labels).float().mean().item()
    assert report["metrics"]["test/acc"] == pytest.approx(expected, abs=1e-6)
    per_class = [(preds[labels == k] == k).float().mean().item() for k in range(4)]
    assert report["metrics"]["test/acc/square"] == pytest.approx(per_class[1], abs=1e-6)


def test_a_keep_every_checkpoint_callback_survives_a_run_that_ranks_none(segen, tmp_path):
    """model.monitor=null turns off the keep-the-best callback (it would copy last.ckpt), but a
    user's snapshots (save_top_k=-1 every epoch) still write one file per epoch."""
    small_net = ("model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,true]")
    snaps = tmp_path / "snapshots"
    run = trained(segen, tmp_path, "model.monitor=null", "trainer.max_epochs=2", "test=false", *small_net,
                  "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
                  f"+callbacks.snapshots.dirpath={snaps}", "+callbacks.snapshots.every_n_epochs=1", "+callbacks.snapshots.save_top_k=-1")
    assert sorted(p.name for p in snaps.iterdir()) == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


def test_train_and_eval_mnist_from_idx_fixture(segen, tmp_path, mnist_root):
    data = (f"data.data_dir={mnist_root}", "data.download=false", "data.val_split=50")
    run = trained(segen, tmp_path, "data=mnist", *data, "trainer.limit_train_batches=3")
    # The cnn_mnist recipe scores its final weights (model.monitor: null): no best.ckpt.
    assert not (run / "checkpoints" / "best.ckpt").exists()
    out = tmp_path / "eval"
    result = segen("eval", f"ckpt={run}/checkpoints/last.ckpt", f"data.data_dir={mnist_root}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["data"] == "mnist" and report["num_images"] == 100
    assert 0.0 <= report["metrics"]["test/acc"] <= 1.0


def test_train_cifar10_from_pickle_fixture(segen, tmp_path, cifar10_root):
    data = (f"data.data_dir={cifar10_root}", "data.download=false", "data.verify_checksums=false", "data.val_split=50")
    run = trained(segen, tmp_path, "data=cifar10", *data, "trainer.limit_train_batches=2")
    # The cnn_cifar10 recipe ranks no checkpoints (model.monitor: null): last.ckpt is the run's.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["segen"]["choices"]["data"] == "cifar10"
    assert OmegaConf.create(ckpt["segen"]["config"]).model.net.in_channels == 3


def test_missing_dataset_is_one_line_and_writes_no_checkpoint(segen, tmp_path):
    result = segen("train", *SMOKE, "data=mnist", f"data.data_dir={tmp_path}/empty", "data.download=false", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "MNIST not found in" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_eval_rejects_unknown_data_key_and_contradicting_model(segen, tmp_path, shapes_run):
    run = shapes_run
    ckpt = f"ckpt={run}/checkpoints/last.ckpt"
    bad_key = segen("eval", ckpt, "data.no_such_key=1", f"hydra.run.dir={tmp_path}/e1", cwd=tmp_path)
    assert bad_key.returncode == 2 and "no_such_key" in bad_key.stderr
    other = segen("sample", ckpt, "model=unet", f"hydra.run.dir={tmp_path}/s1", cwd=tmp_path)
    assert other.returncode == 2 and "model=unet contradicts the checkpoint" in other.stderr
    assert not (tmp_path / "s1").exists() or not any((tmp_path / "s1").glob("*.png"))
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_default_run_directory_is_under_outputs(segen, tmp_path):
    result = segen("train", *SMOKE, "test=false", "trainer.max_steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "last.ckpt").is_file()
