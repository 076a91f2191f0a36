"""`logger=mlflow|wandb|many`: what each tracker receives, read back with the tracker's own tools."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from blocked_imports import block_modules
from conftest import run_segen

TINY = ["debug=smoke", "data.num_train=128", "data.num_test=32", "data.batch_size=16",
        "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]"]


def train(tmp_path: Path, *args: str):
    return run_segen("train", *TINY, *args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)


def resume_one_more_epoch(tmp_path: Path) -> None:
    """Resume the run of `train` for a second epoch: what it reads from the tracker run's own
    metrics.csv (appended, not erased) and its curves.png must both be there."""
    run = tmp_path / "run"
    first = [row["epoch"] for row in csv.DictReader((run / "metrics.csv").open())]
    result = run_segen("train", f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout
    epochs = [row["epoch"] for row in csv.DictReader((run / "metrics.csv").open())]
    assert epochs[: len(first)] == first and "1" in epochs[len(first) :]  # kept, then epoch 1 appended
    assert (run / "curves.png").is_file() and (run / "hparams.yaml").is_file()


def test_every_logger_choice_keeps_metrics_csv_in_the_run_directory():
    """`logger=X` for every X in configs/logger/: segen's CSV logger, writing into the run directory."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from segen.config import config_dir

    choices = sorted(p.stem for p in (config_dir() / "logger").glob("*.yaml"))
    assert {"csv", "tensorboard", "mlflow", "wandb", "many"} <= set(choices)
    for choice in choices:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
            cfg = compose(config_name="train", overrides=[f"logger={choice}"])
        loggers = OmegaConf.to_container(cfg.logger, resolve=False)
        csv_loggers = [c for c in loggers.values() if c and c["_target_"] == "segen.loggers.CSVLogger"]
        assert len(csv_loggers) == 1, (choice, loggers)
        assert csv_loggers[0]["save_dir"] == "${paths.output_dir}" and csv_loggers[0]["name"] == csv_loggers[0]["version"] == "", choice


@pytest.mark.slow  # two smoke trainings (the run, then its resume): ~30-60 s on 2 cores
def test_tensorboard_run_keeps_metrics_csv_and_resumes(tmp_path):
    result = train(tmp_path, "logger=tensorboard", "test=false")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("metrics.csv", "curves.png", "hparams.yaml"):
        assert (run / name).is_file(), name
    assert "val/acc" in (run / "metrics.csv").read_text()
    resume_one_more_epoch(tmp_path)


@pytest.mark.slow  # a smoke training with MLflow's SQLite store, then its resume: ~60-100 s on 2 cores
def test_mlflow_run_holds_params_metrics_and_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    result = train(tmp_path, "logger=mlflow")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("segen")
    (run,) = client.search_runs([experiment.experiment_id])
    params, metrics = run.data.params, run.data.metrics
    assert params["model.optimizer.lr"] == "0.01" and params["choices.model"] == "cnn" and params["choices.data"] == "shapes"
    assert params["model.net.in_channels"] == "3"  # bound from the data before logging
    assert "segen_version" in params
    assert {"train/loss", "val/acc", "val/loss", "test/acc"} <= set(metrics)
    assert run.data.tags["best_checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config_tree.log", "metrics.json", "curves.png"} <= artifacts
    # metrics.csv stays in the run directory next to the tracker (curves.png and resume read it).
    assert (tmp_path / "run" / "metrics.csv").is_file() and (tmp_path / "run" / "curves.png").is_file()
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["monitor"] == "val/acc" and report["best_checkpoint"].endswith("best.ckpt")
    resume_one_more_epoch(tmp_path)


def wandb_records(path: Path):
    """The protobuf records of an offline run's `.wandb` file (LevelDB log framing: 32 KiB blocks,
    7-byte chunk headers), parsed with wandb's own message types."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer too short for a header: padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.slow  # a smoke training with wandb's service process, then its resume: ~60 s on 2 cores
def test_wandb_offline_run_is_readable_by_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import subprocess
    import sys

    # Nobody logged in: no API key, a HOME without ~/.netrc, no mode forced.
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = train(tmp_path, "logger=wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    config, history, summary = {}, [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        # wandb stores "val/acc" either as a key or as the nested key ["val", "acc"]
        if kind == "config":
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
    assert config["model.optimizer.lr"] == 0.01 and config["choices.model"] == "cnn"
    assert any("val/acc" in row for row in history) and any("train/loss" in row for row in history)
    assert summary["best_checkpoint"] == str(tmp_path / "run" / "checkpoints" / "best.ckpt")
    files = run_file.parent / "files"
    assert {"config_tree.log", "metrics.json", "curves.png"} <= {p.name for p in files.iterdir()}
    # wandb's own CLI recognises the folder as a run it can upload.
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run_file.parent)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "Would sync 1 run" in sync.stdout + sync.stderr, sync.stdout + sync.stderr
    resume_one_more_epoch(tmp_path)


@pytest.mark.parametrize(
    ("args", "blocked", "extra"),
    [
        (["logger=mlflow"], ["mlflow"], "mlflow"),
        (["logger=wandb"], ["wandb"], "wandb"),
        (["logger=many"], ["mlflow"], "mlflow"),
        (["-m", "hparams_search=cnn_optuna"], ["optuna", "hydra_plugins.hydra_optuna_sweeper"], "optuna"),
    ],
)
def test_a_tracker_or_search_without_its_package_is_one_line(tmp_path, monkeypatch, args, blocked, extra):
    block_modules(monkeypatch, tmp_path, blocked)
    result = run_segen("train", *args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"pip install 'segen[{extra}]'" in result.stderr
    assert not (tmp_path / "run").exists()  # failed before any work


def test_logger_built_from_a_config_file_also_fails_in_one_line(tmp_path, monkeypatch):
    """A tracker chosen in an experiment file (no logger= on the command line) is caught when the
    logger is built, which train does before touching the data."""
    block_modules(monkeypatch, tmp_path, ["mlflow"])
    result = train(tmp_path, "+logger.mlflow._target_=segen.trackers.MLFlowLogger")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "pip install 'segen[mlflow]'" in result.stderr


def test_flat_params_are_dotted_resolved_values():
    from omegaconf import OmegaConf

    from segen.trackers import flat_params

    cfg = OmegaConf.create({"model": {"optimizer": {"lr": 0.01}, "widths": [8, 16]}, "seed": 3, "lr2": "${model.optimizer.lr}"})
    params = flat_params(cfg, {"model": "cnn"})
    assert params["model.optimizer.lr"] == 0.01 and params["lr2"] == 0.01 and params["seed"] == 3
    assert params["model.widths"] == "[8, 16]" and params["choices.model"] == "cnn" and "segen_version" in params


def test_wandb_is_offline_unless_logged_in(tmp_path, monkeypatch):
    from segen.trackers import wandb_logged_in

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_logged_in()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_logged_in()
