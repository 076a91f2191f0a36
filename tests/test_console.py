"""What a run prints: progress totals under max_steps, the collapsed config tree, refused runs
leaving no folder, "did you mean" for unknown keys."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from segen.cli import existing_run_paths, remove_refused_run
from segen.console import changed_values, summary_tree
from segen.perf import RichProgressBar


def fake_trainer(global_step=0, max_steps=-1, max_epochs=32, batches=1687, done=0, optimizers=2, manual=True):
    progress = SimpleNamespace(current=SimpleNamespace(ready=done, completed=done))
    return SimpleNamespace(
        global_step=global_step, max_steps=max_steps, max_epochs=max_epochs, num_training_batches=batches,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        lightning_module=SimpleNamespace(automatic_optimization=not manual), optimizers=[None] * optimizers,
        accumulate_grad_batches=1,
    )


def bar_for(trainer) -> RichProgressBar:
    bar = RichProgressBar()
    bar._trainer = trainer
    bar._epoch_start = (trainer.global_step, trainer.fit_loop.epoch_loop.batch_progress.current.ready)
    return bar


def test_gan_max_steps_counts_d_and_g_steps_in_the_bar():
    # The run: a GAN, max_steps=200, 1687 batches per epoch, max_epochs=32. It stops
    # after 100 batches (D and G steps both count), so the bar says 100 of epoch 0/0.
    bar = bar_for(fake_trainer(max_steps=200))
    assert bar.total_train_batches == 100
    assert bar._get_train_description(0).strip() == "Epoch 0/0"


def test_max_steps_spanning_epochs_shows_the_epochs_it_will_run():
    trainer = fake_trainer(max_steps=25, max_epochs=10, batches=10, optimizers=1, manual=False)
    bar = bar_for(trainer)
    assert bar.total_train_batches == 10 and bar._get_train_description(0).strip() == "Epoch 0/2"
    trainer.global_step = 20  # the start of epoch 2: 5 batches left
    bar = bar_for(trainer)
    assert bar.total_train_batches == 5 and bar._get_train_description(2).strip() == "Epoch 2/2"


def test_without_max_steps_the_bar_is_lightnings():
    bar = bar_for(fake_trainer(max_epochs=4, batches=10))
    assert bar.total_train_batches == 10 and bar._get_train_description(1).strip() == "Epoch 1/3"


def test_config_tree_shows_chosen_groups_and_changed_values_only():
    base = OmegaConf.create({"data": {"num_train": 5000, "seed": 0}, "model": {"lr": 0.01, "max_lr": "${model.lr}", "c": "???"},
                             "trainer": {"max_epochs": 4}, "test": True})
    cfg = OmegaConf.merge(base, {"data": {"num_train": 600}, "model": {"lr": 0, "c": 3, "new": 1}, "test": False})
    changes = changed_values(cfg, base)
    assert set(changes) == {"data.num_train", "model.lr", "model.max_lr", "model.new", "test"}  # c: filled by the data
    from rich.console import Console

    console = Console(width=100, record=True, color_system=None)
    console.print(summary_tree({"data": "shapes", "model": "cnn", "trainer": "default", "debug": None, "hydra/launcher": "basic"}, changes))
    text = console.export_text()
    assert "data: shapes" in text and "num_train: 600  (default 5000)" in text and "new: 1  (added)" in text
    assert "trainer: default" in text and "debug" not in text and "launcher" not in text and "seed" not in text
    assert "test: false  (default true)" in text


def _hydra_files(run: Path) -> None:
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("x")
    (run / "train.log").write_text("")


def test_a_refused_run_leaves_no_folder_but_never_removes_what_existed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    keep = existing_run_paths([], "sample")
    run = tmp_path / "outputs" / "sample" / "2026-01-01_00-00-00"
    _hydra_files(run)
    remove_refused_run(run, keep)
    assert not (tmp_path / "outputs" / "sample").exists() and (tmp_path / "outputs").is_dir()

    old = tmp_path / "old_run"  # hydra.run.dir= an existing folder: kept, even if it looks empty
    old.mkdir()
    keep = existing_run_paths([f"hydra.run.dir={old}"], "train")
    _hydra_files(old)
    remove_refused_run(old, keep)
    assert old.is_dir()

    busy = tmp_path / "outputs" / "train" / "x"  # the job wrote something: all of it stays
    keep = existing_run_paths([f"hydra.run.dir={busy}"], "train")
    _hydra_files(busy)
    (busy / "checkpoints").mkdir()
    remove_refused_run(busy, keep)
    assert (busy / "checkpoints").is_dir() and (busy / ".hydra" / "config.yaml").is_file()


def test_refused_sample_leaves_no_run_directory(segen, tmp_path):
    ckpt = tmp_path / "not_there.ckpt"
    result = segen("sample", f"ckpt={ckpt}", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("typo,meant", [("trainer.max_epoch=3", "trainer.max_epochs"), ("data.batchsize=8", "data.batch_size")])
def test_unknown_key_suggests_the_nearest(segen, tmp_path, typo, meant):
    result = segen("train", typo, cwd=tmp_path)
    assert result.returncode == 2 and f"(did you mean {meant}?)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rank_zero_follows_the_launcher_variables_then_lightnings_rank(monkeypatch):
    from lightning_utilities.core.rank_zero import rank_zero_only

    from segen.console import is_rank_zero

    for name in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert is_rank_zero()
    monkeypatch.setenv("NODE_RANK", "1")  # a second node's first process: Lightning's import-time guess says 0
    assert not is_rank_zero()
    monkeypatch.delenv("NODE_RANK")
    monkeypatch.setattr(rank_zero_only, "rank", 3)  # what a Trainer's strategy sets on global rank 3
    assert not is_rank_zero()
