"""`curves.png`: one panel per metric family, read from a metrics.csv as Lightning writes it."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from segen.curves import epoch_ends, family, panels, read_metrics, run_title, write_curves

# As segen's CSV logger writes it (segen/loggers.py LogSteps): one sparse row per log call, at
# the optimizer step; a row at each epoch end (the val row, then the epoch's own); the last row
# is the test pass.
CSV = """epoch,step,test/acc,train/loss,val/acc,val/loss,train/d_real,train/d_fake,train/d_loss,train/g_loss
0,1,,2.0,,,0.6,0.4,1.3,0.7
0,2,,1.5,,,0.6,0.4,1.2,0.8
0,2,,,0.4,1.4,,,,
0,2,,,,,,,,
1,3,,1.0,,,0.7,0.3,1.1,0.9
1,4,,0.8,,,0.7,0.3,1.0,1.0
1,4,,,0.6,1.1,,,,
1,4,,,,,,,,
1,4,0.55,,,,,,,
"""


def test_families_group_what_belongs_together():
    assert family("train/loss") == family("val/loss") == family("train/d_loss") == "loss"
    assert family("train/d_real") == family("train/d_fake") == "d_*"
    assert family("val/acc") == "acc" and family("val/miou") == "miou"
    assert family("test/acc") is None and family("test/acc/circle") is None and family("epoch") is None


def test_panels_and_epochs_from_metrics_csv(tmp_path: Path):
    (tmp_path / "metrics.csv").write_text(CSV)
    series = read_metrics(tmp_path / "metrics.csv")
    assert series["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.8)]
    assert series["val/acc"] == [(2, 0.4), (4, 0.6)]
    assert panels(series) == {
        "loss": ["train/d_loss", "train/g_loss", "train/loss", "val/loss"],
        "acc": ["val/acc"],
        "d_*": ["train/d_fake", "train/d_real"],
    }
    assert epoch_ends(series) == [2, 4]


def test_an_epoch_end_row_alone_marks_an_epoch_and_the_test_row_does_not(tmp_path: Path):
    """A GAN logs no validation: its epoch-end rows hold only epoch and step. The test row's
    epoch (Lightning's, after training) is no epoch of training."""
    (tmp_path / "metrics.csv").write_text("epoch,step,test/acc,train/d_loss\n0,4,,1.0\n0,6,,\n1,8,,0.9\n1,10,,\n2,10,0.5,\n")
    assert epoch_ends(read_metrics(tmp_path / "metrics.csv")) == [6, 10]


def test_title_says_steps_batches_and_epochs(tmp_path: Path):
    run = tmp_path / "gan"
    run.mkdir()
    (run / "metrics.csv").write_text(CSV)
    series = read_metrics(run / "metrics.csv")
    assert run_title(run, series) == "gan: 4 steps, 2 epoch ends"  # no metrics.json: what metrics.csv says
    progress = {"steps": 300, "batches": 150, "epochs": round(150 / 27, 4), "batches_per_epoch": 27}
    (run / "metrics.json").write_text(json.dumps({"metrics": {}, "progress": progress}))
    assert run_title(run, series) == "gan: 300 steps (150 batches), 5.56 epochs of 27 batches"
    progress.update(steps=150, epochs=1.0)  # one optimizer step per batch: no separate batch count
    (run / "metrics.json").write_text(json.dumps({"metrics": {}, "progress": progress}))
    assert run_title(run, series) == "gan: 150 steps, 1 epoch of 27 batches"


def test_write_curves_writes_a_png_or_nothing(tmp_path: Path):
    assert write_curves(tmp_path) is None  # no metrics.csv: nothing to plot, no error
    (tmp_path / "metrics.csv").write_text(CSV)
    path = write_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 200


def test_segen_train_leaves_curves_png(segen, tmp_path):
    result = segen("train", "debug=smoke", "data.num_train=128", "data.num_test=32",
                   "data.batch_size=16", "model.net.widths=[8,16]", "model.net.pool=[false,true]",
                   "model.net.residual=[false,false]", "test=false", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "curves.png").is_file() and (tmp_path / "run" / "metrics.json").is_file()
