"""A resumed run keeps the config stored in its checkpoint: an edited recipe (or a segen upgrade)
between the run and its resume does not change its hyperparameters; what the resume command
itself changes is applied on top and listed in the resume line."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf
from test_resilience import TINY

from segen.config import config_dir
from segen.io import file_sha256


def stored_config(ckpt: Path):
    return OmegaConf.create(torch.load(ckpt, map_location="cpu", weights_only=True)["segen"]["config"])


def test_resume_keeps_the_stored_config_when_a_recipe_changed(segen, tmp_path):
    # The run starts while the shipped recipe says label smoothing 0.15 (it says 0.0)...
    recipe = config_dir() / "recipe" / "cnn_shapes.yaml"
    shipped = recipe.read_text()
    run = tmp_path / "run"
    try:
        edited = OmegaConf.load(recipe)
        edited.model.label_smoothing = 0.15
        recipe.write_text("# @package _global_\n" + OmegaConf.to_yaml(edited))
        first = segen("train", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run}", cwd=tmp_path)
    finally:
        recipe.write_text(shipped)
    assert first.returncode == 0, first.stderr[-3000:]
    before = stored_config(run / "checkpoints" / "last.ckpt")
    assert before.model.label_smoothing == 0.15

    # ...and resumes after the recipe went back to 0.0, with one more epoch asked for, from a
    # copy of the run folder: the copy continues, the original is left byte for byte as it was.
    original, run = run, tmp_path / "copy"
    shutil.copytree(original, run)
    untouched = {p: file_sha256(p) for p in original.rglob("*") if p.is_file()}
    resumed = segen("train", f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {p: file_sha256(p) for p in original.rglob("*") if p.is_file()} == untouched
    after = stored_config(run / "checkpoints" / "last.ckpt")
    assert after.paths.output_dir == str(run) and after.callbacks.last_checkpoint.dirpath == f"{run}/checkpoints"
    assert {row.split(",")[0] for row in (run / "metrics.csv").read_text().splitlines()[1:]} == {"0", "1"}
    assert after.model.label_smoothing == 0.15  # the run's own value, not today's recipe
    assert after.trainer.max_epochs == 2 and after.model == before.model
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    text = " ".join(resumed.stdout.split())
    assert "with the checkpoint's config, changed by: trainer.max_epochs=2 (was 1)" in text



def test_a_resume_that_would_stretch_the_lr_schedule_is_one_line_and_keeps_the_checkpoint(segen, tmp_path, straight_tiny_cnn):
    run = tmp_path / "copy"
    shutil.copytree(straight_tiny_cnn, run)  # two epochs of 10 steps: its OneCycleLR ends at step 20
    before = file_sha256(run / "checkpoints" / "last.ckpt")
    longer = segen("train", f"resume={run}", "trainer.max_epochs=3", cwd=tmp_path)
    assert longer.returncode == 2
    line = longer.stderr.strip()
    assert "\n" not in line and "LR schedule (OneCycleLR) was built for 20 steps and cannot stretch to 30" in line, longer.stderr[-2000:]
    assert file_sha256(run / "checkpoints" / "last.ckpt") == before
