"""Steps, batches and epochs are counted one way in metrics.csv, curves.png, metrics.json, the
progress bar and the resume line (segen/loggers.py `LogSteps`), checked on a tiny GAN run
whose numbers are worked out by hand below."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_segen

from segen.curves import epoch_ends, read_metrics, run_title

# 40 shapes, 4 held out for val: 36 training images in batches of 4 = 9 batches per epoch.
# A GAN takes 2 optimizer steps per batch (D, then G), so max_steps=40 is 20 batches:
# epochs 0 and 1 (9 batches each) and 2 batches of epoch 2, i.e. 20 / 9 = 2.22 epochs.
# Rows are written every 4 batches (batches 4, 8, 12, 16, 20 = steps 8, 16, 24, 32, 40) and at
# each epoch end (after batch 9 = step 18, batch 18 = step 36, and the stop at step 40, where
# the row of batch 20 is already that epoch's last: metrics.csv writes no second one).
GAN = ("model=cgan", "data=shapes", "model.generator.width=8", "model.discriminator.width=8", "data.num_train=40",
       "data.val_split=4", "data.batch_size=4", "trainer.log_every_n_steps=4")


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def logged(run: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(epoch, step) of the rows with training losses, and of the rows that only mark an epoch's end."""
    train = [(int(r["epoch"]), int(r["step"])) for r in rows(run) if r["train/d_loss"]]
    ends = [(int(r["epoch"]), int(r["step"])) for r in rows(run) if not r["train/d_loss"]]
    return train, ends


@pytest.mark.slow  # two tiny GAN trainings (a run and its resume): ~20-40 s on 2 cores
def test_a_gan_run_counts_optimizer_steps_and_epochs_everywhere(tmp_path):
    run = tmp_path / "run"
    result = run_segen("train", *GAN, "trainer.max_steps=40", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    train, ends = logged(run)
    assert train == [(0, 8), (0, 16), (1, 24), (1, 32), (2, 40)]
    assert ends == [(0, 18), (1, 36)]
    series = read_metrics(run / "metrics.csv")
    assert epoch_ends(series) == [18, 36, 40] and max(s for s, _ in series["train/g_loss"]) == 40

    report = json.loads((run / "metrics.json").read_text())
    assert report["progress"] == {"steps": 40, "batches": 20, "epochs": round(20 / 9, 4), "batches_per_epoch": 9}
    assert "step" not in report["metrics"] and "epoch" not in report["metrics"]  # bookkeeping, not metrics
    assert run_title(run, series) == "run: 40 steps (20 batches), 2.22 epochs of 9 batches"
    assert (run / "curves.png").is_file()

    # The bar: epochs numbered from 0, the last one the run reaches (2, not max_epochs' 31), this
    # epoch's batches that max_steps lets run (2), the optimizer steps.
    bar = " ".join(result.stdout.split())
    assert "Epoch 2/2" in bar and "2/2" in bar.split("Epoch 2/2")[-1] and "step: 40/40" in bar, bar[-600:]

    # Resumed mid-epoch 2 (after its batch 2) up to step 54: the other 7 batches of epoch 2.
    resumed = run_segen("train", f"resume={run}", "trainer.max_steps=54", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    line = " ".join(resumed.stdout.split())
    assert "(epoch 2, step 40)" in line and "after batch 2 of 9" in line, line
    train, ends = logged(run)
    assert train[5:] == [(2, 48), (2, 54)] and ends[2:] == []  # batch 24 = step 48; the stop at 54 ends epoch 2
    assert epoch_ends(read_metrics(run / "metrics.csv")) == [18, 36, 54]
    progress = json.loads((run / "metrics.json").read_text())["progress"]
    assert progress == {"steps": 54, "batches": 27, "epochs": 3.0, "batches_per_epoch": 9}
    bar = " ".join(resumed.stdout.split())
    assert "Epoch 2/2" in bar and "9/9" in bar and "step: 54/54" in bar, bar[-600:]


def test_a_supervised_run_has_one_step_per_batch(straight_tiny_cnn):
    """conftest's tiny cnn run (test_resilience TINY: 320 images / 32 = 10 batches per epoch,
    2 epochs, rows every 5 batches): steps equal batches, validation rows at the epoch ends."""
    run = straight_tiny_cnn
    train = [(int(r["epoch"]), int(r["step"])) for r in rows(run) if r["train/loss"]]
    val = [(int(r["epoch"]), int(r["step"])) for r in rows(run) if r["val/acc"]]
    assert train == [(0, 5), (0, 10), (1, 15), (1, 20)]
    assert val == [(0, 10), (1, 20)]
    assert json.loads((run / "metrics.json").read_text())["progress"] == {"steps": 20, "batches": 20, "epochs": 2.0, "batches_per_epoch": 10}


def test_the_bar_does_not_count_the_previous_epochs_batches_at_an_epoch_start():
    """At on_train_epoch_start Lightning's batch counts are still the last epoch's (10 of 10):
    a GAN at step 20 of max_steps=22 has 1 batch left, in epoch 2, its last."""
    from test_console import fake_trainer

    from segen.perf import RichProgressBar

    trainer = fake_trainer(global_step=20, max_steps=22, max_epochs=10, batches=10, done=10)
    bar = RichProgressBar()
    bar._trainer = trainer
    bar._count_from_here(trainer)
    assert bar.total_train_batches == 1 and bar._get_train_description(2).strip() == "Epoch 2/2"
    trainer.fit_loop.epoch_loop.batch_progress.current.ready = 4  # resumed after batch 4 of 10 (step 20)
    bar._count_from_here(trainer)
    assert bar.total_train_batches == 5 and bar._get_train_description(2).strip() == "Epoch 2/2"


def test_epochs_shorter_than_the_logging_interval_log_once_an_epoch(tmp_path):
    """log_every_n_steps=50 on 9-batch epochs: losses at each epoch's end (batches 9 and 18 =
    steps 18 and 36) and at the stop (step 40), not only every 50 batches (never, here)."""
    run = tmp_path / "run"
    result = run_segen("train", *GAN, "trainer.log_every_n_steps=50", "trainer.max_steps=40", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    train, ends = logged(run)
    assert train == [(0, 18), (1, 36)] and ends == [(2, 40)]  # the stop at step 40 ends epoch 2: no loss logged there
    assert "smaller than the logging interval" not in result.stdout + result.stderr
