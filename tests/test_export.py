"""`segen export`: ONNX and TorchScript files that compute what PyTorch computes, on other batch
sizes (and, for unet, other heights), in eval mode, with a sidecar that suffices to use them."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from blocked_imports import block_modules
from conftest import run_segen
from PIL import Image

from segen.data.info import DataInfo
from segen.export import TOLERANCE, verify, write

pytest.importorskip("onnxruntime")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "classify_onnx.py"
# What export_spec reads of a datamodule: its DataInfo and its normalization.
SHAPES = SimpleNamespace(
    info=DataInfo(name="shapes", channels=3, image_size=(32, 32), class_names=("circle", "square", "triangle", "cross"),
                  mask_class_names=("background", "circle", "square", "triangle", "cross")),
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5),
)


def perturb_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm running statistics far from (0, 1): a file exported in training mode (batch
    statistics) then disagrees with PyTorch's eval mode, and the check must notice."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 3 + 0.5)
    return module


def cnn_task():
    from segen.models.cnn import CNN
    from segen.tasks.classification import ClassificationTask

    net = CNN(3, 4, widths=[8, 16], pool=[False, True], residual=[False, True], dropout=0.5)
    return ClassificationTask(perturb_batchnorm(net), optimizer=partial(torch.optim.SGD, lr=0.1))


def unet_task():
    from segen.models.unet import UNet
    from segen.tasks.segmentation import SegmentationTask

    net = UNet(3, 5, depth=2, base_width=8, dropout=0.3)
    return SegmentationTask(perturb_batchnorm(net), optimizer=partial(torch.optim.SGD, lr=0.1))


def gan_task(conditional: bool, ema: float | None = None, code: int | None = None, code_input: str = "concat", latent_code: str = "infogan"):
    from segen.tasks.gan import GANTask

    if conditional:
        from segen.models.cgan import Discriminator, Generator

        gen, disc = Generator(3, 32, num_classes=4, latent_dim=16, width=8), Discriminator(3, 32, num_classes=4, width=8)
    else:
        from segen.models.latent_code import discriminator, generator

        gen = generator(3, 32, latent_dim=16, width=8, code_classes=code, code_input=code_input)
        disc = discriminator(3, 32, width=8, code_classes=code, latent_code=latent_code)
    adam = partial(torch.optim.Adam, lr=2e-4)
    task = GANTask(perturb_batchnorm(gen), disc, adam, adam, ema_decay=ema, latent_code_classes=code, latent_code=latent_code)
    if latent_code == "clusters":  # as fitted: codes drawn as often as their clusters hold images
        task.sampler.noise_code.set_prior(torch.tensor(CLUSTER_PRIOR))
    if ema is not None:  # the EMA copy differs from the live generator: export must pick it
        with torch.no_grad():
            for p in task.generator_ema.parameters():
                p.mul_(0.5)
    return task


CLUSTER_PRIOR = [0.1, 0.3, 0.2, 0.25, 0.15]
TASKS = {
    "cnn": cnn_task,
    "unet": unet_task,
    "dcgan": partial(gan_task, False),
    "dcgan_ema": partial(gan_task, False, 0.999),
    "dcgan_code": partial(gan_task, False, 0.999, 5),  # InfoGAN's code, read from the noise inside the file
    "dcgan_code_cbn": partial(gan_task, False, None, 5, "cbn"),
    "dcgan_code_clusters": partial(gan_task, False, 0.999, 5, "cbn", "clusters"),  # self-conditioning
    "cgan": partial(gan_task, True),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", list(TASKS))
def test_exported_file_matches_pytorch_on_another_batch(kind, fmt, tmp_path):
    task = TASKS[kind]().eval()
    spec = task.export_spec(SHAPES)
    path = write(spec, fmt, tmp_path / f"model.{fmt}")
    # Batch 3 (exported with 2); unet also at another height: the axes are really dynamic.
    assert verify(spec, path, fmt, batch_size=3) <= TOLERANCE
    if kind.startswith(("dcgan", "cgan")):
        assert spec.module is task.sampler  # the EMA generator when there is one
        assert spec.sidecar["latent_dim"] == 16 and spec.sidecar["output"]["value_range"] == [-1.0, 1.0]
    if kind.startswith("dcgan_code"):
        assert spec.input_names == ["noise"] and spec.sidecar["latent_code"]["classes"] == 5
        uniform = kind != "dcgan_code_clusters"
        assert spec.sidecar["latent_code"]["prior"] == pytest.approx([0.2] * 5 if uniform else CLUSTER_PRIOR, abs=1e-6)
    if kind == "cgan":
        assert spec.input_names == ["noise", "labels"] and spec.sidecar["class_names"] == list(SHAPES.info.class_names)


def test_unet_sidecar_describes_free_height_and_width(tmp_path):
    spec = unet_task().eval().export_spec(SHAPES)
    assert spec.dynamic_axes["images"] == {0: "batch", 2: "height", 3: "width"}
    side = spec.sidecar
    assert side["input"]["shape"] == ["batch", 3, "height", "width"] and side["input"]["size_multiple"] == 4
    assert side["class_names"][0] == "background" and len(side["palette"]) == 5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_cnn_exported_in_training_mode_would_fail_the_check(tmp_path):
    """The check is not vacuous: dropout + batch statistics (train mode) differ from eval mode."""
    spec = cnn_task().export_spec(SHAPES)
    path = tmp_path / "train_mode.pt"
    torch.jit.trace(spec.module.train(), spec.example_inputs, check_trace=False).save(str(path))
    assert verify(spec, path, "torchscript", batch_size=3) > TOLERANCE  # verify compares with eval mode


# -- the real command on real checkpoints ------------------------------------------------------
TINY = ["debug=smoke", "trainer.max_steps=2", "data.num_train=128", "data.num_test=32", "data.batch_size=16", "test=false"]
NETS = {
    "cnn": ["model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,true]"],
    "unet": ["model.net.depth=2", "model.net.base_width=8"],
    "dcgan": ["model.generator.width=8", "model.discriminator.width=8", "model.ema_decay=0.9"],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_ckpts")
    for model, net in NETS.items():
        result = run_segen("train", f"model={model}", "data=shapes", *TINY, *net, f"hydra.run.dir={root}/{model}", cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    return {model: root / model / "checkpoints" / "last.ckpt" for model in NETS}


@pytest.mark.slow  # trains three tiny models, then six export processes: ~2-3 min on 2 cores
@pytest.mark.parametrize("model", list(NETS))
def test_segen_export_checks_onnx_and_torchscript(checkpoints, model, tmp_path):
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        out = tmp_path / f"{model}.{suffix}"
        result = run_segen("export", f"ckpt={checkpoints[model]}", f"format={fmt}", f"out={out}", f"hydra.run.dir={tmp_path}/hydra", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "max abs diff" in result.stdout and out.is_file()
        sidecar = json.loads(Path(f"{out}.json").read_text())
        assert sidecar["format"] == fmt and sidecar["model"] == model
        assert sidecar["check"]["batch_size"] == 3 and sidecar["check"]["max_abs_diff"] <= TOLERANCE


@pytest.mark.slow  # one tiny training + one export process
def test_readme_script_classifies_like_pytorch(checkpoints, tmp_path):
    """scripts/classify_onnx.py (the README's snippet) reads only the sidecar, and agrees with
    the checkpoint's own prediction on the same images (normalized the way `segen eval` does)."""
    from segen.data.shapes import make_shapes
    from segen.restore import restore_task

    out = tmp_path / "model.onnx"
    result = run_segen("export", f"ckpt={checkpoints['cnn']}", f"out={out}", f"hydra.run.dir={tmp_path}/hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, task, datamodule = restore_task(checkpoints["cnn"])
    images, _, _ = make_shapes(6, seed=123)
    with torch.no_grad():
        expected = task.eval()(datamodule.normalize(images)).argmax(1)
    for i, image in enumerate(images):
        png = tmp_path / f"{i}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(png)
        got = subprocess.run([sys.executable, str(SCRIPT), str(out), str(png)], capture_output=True, text=True, check=True).stdout.strip()
        assert got == datamodule.info.class_names[int(expected[i])]


def test_onnx_without_its_packages_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    block_modules(monkeypatch, tmp_path, ["onnx", "onnxruntime"])
    result = run_segen("export", "ckpt=/nonexistent.ckpt", "format=onnx", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "pip install 'segen[export]'" in result.stderr


def test_sidecar_input_recipe_reproduces_normalize():
    """The sidecar's recipe, (uint8 / 255 - mean) / std, is exactly the data module's normalize."""
    from segen.data.shapes import ShapesDataModule, make_shapes

    dm = ShapesDataModule(num_train=8, num_test=8)
    side = cnn_task().export_spec(dm).sidecar["input"]
    images, _, _ = make_shapes(4)
    x = images.numpy().astype(np.float32) / 255
    x = (x - np.array(side["mean"], np.float32)[:, None, None]) / np.array(side["std"], np.float32)[:, None, None]
    assert np.allclose(x, dm.normalize(images).numpy(), atol=1e-6)
