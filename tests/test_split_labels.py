"""Every score is labelled with the split it really read (issue: `split=test` on CamVid scored val).

CamVid publishes test labels: the training run's test pass and `segen eval split=test` score the
test files, and `metrics.json` states the split and its image count. A copy without the test
files still trains (the test pass is skipped, said in one line) and `split=test` is a one-line
error. Cityscapes publishes no test labels: its test pass scores val and is labelled val.
The counts are checked against the files on disk, and the fixture gives each split its own count.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from camvid_fixture import make_camvid
from cityscapes_fixture import make_cityscapes

UNET = ["model=unet", "debug=smoke", "data.batch_size=4", "model.net.depth=2", "model.net.base_width=4"]


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png"))


@pytest.fixture(scope="module")
def camvid_tree(tmp_path_factory) -> Path:
    """train 6, val 3, test 4 photos: every split a different count."""
    root = make_camvid(tmp_path_factory.mktemp("camvid_splits"), per_sequence=3, size=(24, 32))
    cam = root / "CamVid"
    first = sorted((cam / "test").iterdir())[0]
    shutil.copy(first, cam / "test" / "Seq05VD_f000999.png")
    shutil.copy(cam / "testannot" / first.name, cam / "testannot" / "Seq05VD_f000999.png")
    return root


@pytest.mark.slow  # two training runs and three evaluations through the CLI: ~60-90 s on 2 cores
def test_camvid_test_pass_and_eval_score_the_split_they_name(segen, camvid_tree, tmp_path):
    cam = camvid_tree / "CamVid"
    counts = {s: count_files(cam / s) for s in ("train", "val", "test")}
    assert counts == {"train": 6, "val": 3, "test": 4}
    common = [f"paths.data_dir={camvid_tree}", "data.image_size=[24,32]", f"data.cache_dir={tmp_path / 'cache'}"]
    run = tmp_path / "run"
    train = segen("train", *UNET, "data=camvid", f"hydra.run.dir={run}", *common)
    assert train.returncode == 0, train.stderr[-3000:]
    report = json.loads((run / "metrics.json").read_text())
    assert report["test"]["split"] == "test" and report["test"]["num_images"] == counts["test"]
    assert "The test split (4 images) was scored with best.ckpt" in " ".join(train.stdout.split())
    assert (run / "samples" / "overlays_epoch_000.png").is_file()  # segen.callbacks.EpochPictures drew the task's overlays

    ckpt = run / "checkpoints" / "best.ckpt"
    for split in ("test", "val"):
        ev = segen("eval", f"ckpt={ckpt}", f"split={split}", f"hydra.run.dir={tmp_path / split}")
        assert ev.returncode == 0, ev.stderr[-3000:]
        scored = json.loads((tmp_path / split / "metrics.json").read_text())
        assert scored["split"] == split and scored["num_images"] == counts[split]
        assert f"{split}/miou" in scored["metrics"]

    # The same data without its test files: training works and says it skipped the test pass;
    # asking for the test split is one line naming what is missing.
    partial = tmp_path / "partial"
    shutil.copytree(camvid_tree, partial)
    shutil.rmtree(partial / "CamVid" / "test")
    shutil.rmtree(partial / "CamVid" / "testannot")
    run2 = tmp_path / "run2"
    train2 = segen("train", *UNET, "data=camvid", f"hydra.run.dir={run2}", f"paths.data_dir={partial}", "data.image_size=[24,32]",
                   f"data.cache_dir={tmp_path / 'cache2'}")
    assert train2.returncode == 0, train2.stderr[-3000:]
    assert "the test pass is skipped" in " ".join(train2.stdout.split())
    assert json.loads((run2 / "metrics.json").read_text())["test"] is None
    missing = segen("eval", f"ckpt={run2 / 'checkpoints' / 'best.ckpt'}", "split=test", f"hydra.run.dir={tmp_path / 'missing'}")
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert missing.returncode == 2 and len(lines) == 1 and "need test/ and testannot/" in lines[0], missing.stderr[-2000:]
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow  # one training run and one evaluation through the CLI
def test_cityscapes_test_pass_scores_val_and_says_so(segen, tmp_path):
    root = make_cityscapes(tmp_path / "cs", per_city=2, size=(24, 48))
    n_val = count_files(root / "cityscapes" / "leftImg8bit" / "val")
    assert n_val == 4
    run = tmp_path / "run"
    train = segen("train", *UNET, "data=cityscapes", f"hydra.run.dir={run}", f"paths.data_dir={root}",
                  "data.image_size=[24,48]", f"data.cache_dir={tmp_path / 'cache'}")
    assert train.returncode == 0, train.stderr[-3000:]
    report = json.loads((run / "metrics.json").read_text())
    assert report["test"]["split"] == "val" and report["test"]["num_images"] == n_val
    assert "The test pass scored the val split, not test" in " ".join(train.stdout.split())

    ev = segen("eval", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["split"] == "val" and scored["num_images"] == n_val
    assert "val/miou" in scored["metrics"] and not any(k.startswith("test/") for k in scored["metrics"])
    assert "scores the val split" in " ".join(ev.stdout.split())
