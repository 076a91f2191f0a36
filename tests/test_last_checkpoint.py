"""last.ckpt is the newest state of a run, whatever the monitored metric does (issue 17), and
what resuming and step-limited runs then do."""

from __future__ import annotations

import csv
import shutil
import signal
from pathlib import Path

import pytest
import torch
from test_resilience import TINY, assert_same_weights

# 600 shapes images, 540 after the validation split, batch 128: 4 steps per epoch. With lr=0
# val/acc never improves after epoch 0, so best.ckpt stays at epoch 0, step 4.
FROZEN = ("model=cnn", "data=shapes", "data.num_train=600", "data.num_test=100", "trainer.max_epochs=3",
          "model.optimizer.lr=0", "test=false", "trainer.precision=32-true")


def stored(ckpt: Path) -> tuple[int, int]:
    c = torch.load(ckpt, map_location="cpu", weights_only=True)
    return c["epoch"], c["global_step"]


@pytest.fixture(scope="session")
def frozen_run(tmp_path_factory):
    """The issue's reproduction, recording what last.ckpt holds at each epoch start."""
    from conftest import run_segen

    root = tmp_path_factory.mktemp("frozen")
    run = root / "run"
    record = ("+callbacks.record._target_=fault_injection.RecordLastCheckpoint",
              f"+callbacks.record.path={run}/checkpoints/last.ckpt", f"+callbacks.record.out={root}/seen.txt")
    result = run_segen("train", *FROZEN, *record, f"hydra.run.dir={run}", cwd=root, inject=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, run, result


def test_last_ckpt_is_the_newest_state_after_every_epoch_and_the_run(frozen_run):
    root, run, _ = frozen_run
    seen = [tuple(map(int, line.split())) for line in (root / "seen.txt").read_text().splitlines()]
    assert seen == [(0, 4), (1, 8)]  # at the starts of epochs 1 and 2
    assert stored(run / "checkpoints" / "last.ckpt") == (2, 12)
    assert stored(run / "checkpoints" / "best.ckpt") == (0, 4)  # the metric never improved


def test_resuming_a_finished_run_trains_nothing_and_logs_nothing(frozen_run, segen, tmp_path):
    _, original, _ = frozen_run
    run = tmp_path / "run"
    shutil.copytree(original, run)
    csv_before = (run / "metrics.csv").read_text()
    last_before = (run / "checkpoints" / "last.ckpt").read_bytes()
    result = segen("train", f"resume={run}", "~callbacks.record", cwd=tmp_path)  # the recorder is a test device
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "metrics.csv").read_text() == csv_before
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == last_before
    lines = [row for row in result.stdout.splitlines() if row.startswith("segen train: resumed")]
    assert len(lines) == 1 and "(epoch 2, step 12)" in lines[0] and "nothing left to train" in lines[0]
    assert lines[0].endswith("with the checkpoint's config, changed by: ~callbacks.record")
    for noise in ("Checkpoint directory", "ended before the epoch ended", "Restoring states"):
        assert noise not in result.stdout + result.stderr


def test_default_console_is_short_and_says_only_what_matters(frozen_run):
    _, run, result = frozen_run
    out = result.stdout + result.stderr
    for noise in ("GPU available: False", "TPU available", "FLOPs", "validation_step", "weights_only"):
        assert noise not in out
    tree = [row for row in result.stdout.splitlines() if row[:1] in "c│├└" and not row.startswith("config_tree")]
    assert tree[0].startswith("config") and len(tree) <= 40
    assert "max_epochs: 3" in result.stdout and "num_train: 600" in result.stdout
    assert "ShapesDataModule" not in result.stdout  # the full tree is in the run directory instead
    assert "_target_: segen.data.shapes.ShapesDataModule" in (run / "config_tree.log").read_text()
    log = (run / "train.log").read_text()
    assert f"Run directory: {run}" in log and "Trainer.fit` stopped" in log


def test_a_step_limited_run_validates_its_final_weights(segen, tmp_path):
    # 5 steps: epoch 0 (4 steps) and one step of epoch 1, which Lightning never validated.
    run = tmp_path / "run"
    result = segen("train", "data.num_train=600", "data.num_test=100", "trainer.max_steps=5", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "could not find the monitored key" not in result.stderr
    assert stored(run / "checkpoints" / "last.ckpt") == (1, 5)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [row["step"] for row in rows if row["val/acc"]] == ["4", "5"]  # after 4 steps (epoch 0), and the final weights
    assert f"Best checkpoint: {run}/checkpoints/best.ckpt" in result.stdout
    assert "The test split (100 images) was scored with best.ckpt" in result.stdout


@pytest.mark.slow
def test_mid_epoch_kill_and_resume_says_what_differs(segen, tmp_path, straight_tiny_cnn):
    """A step-based last.ckpt lets a run killed mid-epoch resume from there, and the resume line
    says that the rest of that epoch is reshuffled (so not bit-identical). The uninterrupted
    `segen train *TINY` run is conftest's straight_tiny_cnn."""

    run = tmp_path / "killed"
    every = ("callbacks.last_checkpoint.every_n_train_steps=3",)
    kill = ("+callbacks.kill._target_=fault_injection.SignalAtStep", "+callbacks.kill.step=5", "+callbacks.kill.signal_name=SIGKILL")
    killed = segen("train", *TINY, *every, *kill, f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert killed.returncode == -signal.SIGKILL
    assert stored(run / "checkpoints" / "last.ckpt") == (0, 3)  # mid-epoch 0 (10 steps per epoch)

    resumed = segen("train", f"resume={run}", "~callbacks.kill", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = [row for row in resumed.stdout.splitlines() if row.startswith("segen train: resumed")]
    assert len(lines) == 1 and "(epoch 0, step 3)" in lines[0] and "saved mid-epoch (after batch 3 of 10)" in lines[0]
    assert "ended before the epoch ended" not in resumed.stderr
    assert stored(run / "checkpoints" / "last.ckpt") == (1, 20)
    with pytest.raises(AssertionError, match="max abs weight difference"):
        assert_same_weights(straight_tiny_cnn / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
