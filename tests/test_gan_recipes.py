"""The dcgan and cgan recipes for MNIST and CIFAR-10 (configs/recipe/{dcgan,cgan}_{mnist,cifar10}.yaml):
picked by the model + data pair, and run end to end through the real CLI on the format-faithful
fixtures (tests/conftest.py) with `debug=smoke` limits; the CIFAR-10 cgan is then scored by
`segen eval` with a classifier of the same fixture, the real column included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_segen
from omegaconf import OmegaConf
from test_gan import check_run

# What each recipe sets that `debug=smoke` leaves alone.
RECIPES = {
    ("dcgan", "mnist"): {  # self-conditioned on 10 pixel clusters
        "model.loss": "hinge", "model.discriminator.norm": "spectral", "model.ema_decay": 0.999, "model.d_steps": 1,
        "model.generator.width": 64, "model.discriminator.width": 32, "model.latent_code_classes": 10,
        "model.latent_code": "clusters", "model.code_loss_weight": 2.0, "model.generator.code_input": "cbn",
        "model.recluster_at": [], "model.optimizer_g.lr": 0.0004, "model.optimizer_d.lr": 0.0004,
    },
    ("cgan", "mnist"): {
        "model.loss": "hinge", "model.discriminator.norm": "spectral", "model.ema_decay": 0.999, "model.class_loss_weight": 1.0,
        "model.generator.width": 32, "model.discriminator.width": 32, "model.optimizer_g.lr": 0.0004, "model.optimizer_d.lr": 0.0004,
    },
    ("dcgan", "cifar10"): {
        "model.loss": "hinge", "model.discriminator.norm": "spectral", "model.ema_decay": 0.999, "model.d_steps": 2,
        "data.hflip": True, "data.crop_padding": 0,
    },
    ("cgan", "cifar10"): {
        "model.loss": "hinge", "model.discriminator.norm": "spectral", "model.ema_decay": 0.999, "model.d_steps": 2,
        "data.hflip": True, "data.crop_padding": 0, "model.generator.conditioning": "cbn",
    },
}
SMOKE = ("debug=smoke", "trainer.limit_train_batches=2", "data.download=false", "data.val_split=50")


def data_args(data: str, root: Path) -> tuple[str, ...]:
    return (f"data={data}", f"paths.data_dir={root}", *(("data.verify_checksums=false",) if data == "cifar10" else ()))


def train(tmp: Path, name: str, model: str, data: str, root: Path, *extra: str) -> tuple[Path, object]:
    run = tmp / name
    result = run_segen("train", f"model={model}", *data_args(data, root), *SMOKE, *extra, f"hydra.run.dir={run}", cwd=tmp)
    return run, result


@pytest.mark.parametrize(("model", "data"), list(RECIPES), ids=[f"{m}_{d}" for m, d in RECIPES])
def test_recipe_trains_end_to_end_on_the_fixture(model, data, tmp_path, request):
    root = request.getfixturevalue(f"{data}_root")
    run, result = train(tmp_path, "run", model, data, root)
    size, channels = (28, 1) if data == "mnist" else (32, 3)
    # One grid row per class (cgan) or per latent code (the self-conditioned MNIST dcgan).
    rows = 10 if model == "cgan" or (model, data) == ("dcgan", "mnist") else 8
    check_run(result, run, rows=rows, size=size, channels=channels)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    for key, value in RECIPES[(model, data)].items():
        assert OmegaConf.select(cfg, key) == value, key
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert any(k.startswith("generator_ema.module.") for k in state) and int(state["generator_ema.n_averaged"]) >= 2  # the copy, then updates
    spectral = any("parametrizations.weight.original" in k for k in state if k.startswith("discriminator."))
    assert spectral == (RECIPES[(model, data)]["model.discriminator.norm"] == "spectral")
    if RECIPES[(model, data)].get("model.latent_code") == "clusters":  # fitted at the start, kept in the checkpoint
        clusters = "label_source.clusters."
        assert bool(state[clusters + "fitted"]) and state[clusters + "pixel_centroids"].shape == (10, size * size * channels)
        assert "Self-conditioning: 10 k-means clusters of" in result.stdout


@pytest.mark.parametrize("model", ["dcgan", "cgan"])
def test_mnist_recipes_budget_the_default_runs_batches(model):
    # The default run on full MNIST: 10 epochs of ~430 batches of 128; the recipes keep both.
    recipe = OmegaConf.load(Path(__file__).parents[1] / "configs" / "recipe" / f"{model}_mnist.yaml")
    assert recipe.data.batch_size == 128 and recipe.trainer.max_epochs == 10


@pytest.mark.slow  # three CLI runs: cnn, cgan, eval
def test_cifar10_cgan_recipe_is_scored_with_the_real_column(tmp_path, cifar10_root):
    cnn, result = train(
        tmp_path, "cnn", "cnn", "cifar10", cifar10_root, "model.net.widths=[8,16]", "model.net.pool=[false,true]",
        "model.net.residual=[false,false]", "test=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cgan, result = train(tmp_path, "cgan", "cgan", "cifar10", cifar10_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "eval"
    result = run_segen(
        "eval", f"ckpt={cgan}/checkpoints/last.ckpt", "eval.features=classifier", f"eval.classifier_ckpt={cnn}/checkpoints/last.ckpt",
        "eval.n_fake=100", "eval.n_real=200", "eval.batch_size=100", f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={out}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    assert {"fid", "fid/floor", "kid/mean", "kid/floor/mean", "confident", "confident/real", "class_consistency"} <= set(metrics)
    # 200 of the fixture's 250 training images are the real set: halves of 100.
    assert report["protocol"]["n_real"] == 200 and report["protocol"]["floor"]["n_each"] == 100
    assert report["protocol"]["sampler"] == "EMA generator"
