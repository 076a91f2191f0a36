"""Experiment trackers (`logger=mlflow|wandb|many`): Lightning's loggers, plus what segen sends them.

Lightning already streams every logged metric to every logger. What it does not do, and this
module does, is send each tracker the run as segen knows it:
- at the start, the whole resolved config as flat parameters (`model.optimizer.lr`, ...), the
  model/data choices and segen's version (`log_config`);
- during training, images (GAN sample grids, segmentation overlays) through one call that knows
  each tracker's API (`log_image`: MLflow has no `log_image` on its Lightning logger);
- at the end, the best checkpoint's path, `metrics.json` and `curves.png` written in the run
  directory, and for MLflow `config_tree.log` and those files as artifacts (`finish_run`).

The logger classes here only pick segen's defaults (a local MLflow store under outputs/mlruns,
W&B offline unless the user is logged in) and fail in one line when their package is missing.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import MLFlowLogger as _MLFlowLogger
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.loggers import WandbLogger as _WandbLogger

from segen import __version__
from segen.extras import require
from segen.io import write_json

METRICS_FILE = "metrics.json"


class MLFlowLogger(_MLFlowLogger):
    """Lightning's MLFlowLogger; with no `tracking_uri`, a local store in `store`:
    `<store>/mlflow.db` (runs, params, metrics) and `<store>/artifacts` (files, images).

    MLflow 3 keeps its plain-folder store in maintenance mode (it refuses to open one unless
    MLFLOW_ALLOW_FILE_STORE=true), so the local store is the SQLite one MLflow recommends:
    `mlflow ui --backend-store-uri sqlite:///outputs/mlruns/mlflow.db` shows every run.
    """

    def __init__(self, store: str = "outputs/mlruns", tracking_uri: str | None = None, **kwargs: Any):
        require(("mlflow",), "mlflow", "logger=mlflow")
        if not tracking_uri:
            root = Path(store).expanduser().absolute()
            root.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
            kwargs.setdefault("artifact_location", (root / "artifacts").as_uri())
        super().__init__(tracking_uri=tracking_uri, **kwargs)


def wandb_logged_in() -> bool:
    """True when W&B has an API key here (env or ~/.netrc, where `wandb login` writes it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("://")[-1]) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger; `offline=None` means offline unless WANDB_MODE says otherwise or
    the user is logged in, so a run never blocks on a login prompt or a network it lacks.
    An offline run is a folder under `<save_dir>/wandb/`: `wandb sync <that folder>` uploads it."""

    def __init__(self, offline: bool | None = None, **kwargs: Any):
        require(("wandb",), "wandb", "logger=wandb")
        if offline is None:
            mode = os.environ.get("WANDB_MODE")
            offline = mode in ("offline", "dryrun") if mode else not wandb_logged_in()
        if kwargs.get("save_dir"):
            Path(kwargs["save_dir"]).mkdir(parents=True, exist_ok=True)
        super().__init__(offline=offline, **kwargs)


def flat_params(cfg, choices: dict[str, str]) -> dict[str, Any]:
    """The resolved config as `{"model.optimizer.lr": 0.01, ...}`, plus `choices.<group>` and
    `segen_version`: what a tracker's parameter table needs to compare runs."""
    from omegaconf import OmegaConf

    def walk(node: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.", out)
        elif prefix:
            out[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)
        return out

    params = walk(OmegaConf.to_container(cfg, resolve=True), "", {})
    params.update({f"choices.{group}": str(choice) for group, choice in choices.items()})
    params["segen_version"] = __version__
    return params


def log_config(loggers, cfg, choices: dict[str, str]) -> None:
    """Send every logger the flat resolved config (see `flat_params`)."""
    if not loggers:
        return
    params = flat_params(cfg, choices)
    for logger in loggers:
        logger.log_hyperparams(params)


def log_image(loggers, key: str, image: torch.Tensor, step: int) -> None:
    """One uint8 image `(C, H, W)` to every logger that can show images, each through its own API."""
    image = image.detach().cpu()
    for logger in loggers:
        if isinstance(logger, _MLFlowLogger):
            # MLflow keeps a step-indexed image series per key (shown in the run's artifacts).
            logger.experiment.log_image(logger.run_id, image.permute(1, 2, 0).numpy(), key=key.replace("/", "_"), step=step)
        elif isinstance(logger, _WandbLogger):
            logger.log_image(key=key, images=[image.permute(1, 2, 0).numpy()], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, step)


def progress(trainer) -> dict[str, Any]:
    """How far training went, counted as everywhere in segen (segen/loggers.py): optimizer
    `steps` (`trainer.global_step`, what `trainer.max_steps` counts: 2 per batch for a GAN),
    training `batches`, and `epochs` done: batches / `batches_per_epoch`, so a last partial
    epoch counts as its fraction."""
    per_epoch = trainer.num_training_batches
    per_epoch = per_epoch if isinstance(per_epoch, int) and per_epoch > 0 else None  # inf: an iterable dataset
    batches = int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)  # across resumes too
    return {"steps": int(trainer.global_step), "batches": batches,
            "epochs": round(batches / per_epoch, 4) if per_epoch else None, "batches_per_epoch": per_epoch}


def finish_run(trainer, run_dir: Path, metrics: dict[str, float], best_path: str, test_pass: dict | None = None) -> dict[str, Any]:
    """End of `segen train`: write `metrics.json` and `curves.png` in the run directory and hand
    them, the config tree and the best checkpoint's path to the trackers. Rank 0 only.

    `test_pass` says which split the `test/*` metrics really scored and on how many images.
    The step/epoch keys that segen/loggers.py logs for the loggers' rows are dropped from
    `metrics` (in place: the sweep summary reads the same dict); `progress` says how far the run went."""
    from segen.curves import write_curves
    from segen.loggers import STEP_KEYS

    for key in STEP_KEYS:
        metrics.pop(key, None)
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None) if callback is not None else None
    report = {
        "metrics": metrics,
        "monitor": getattr(callback, "monitor", None),
        "best_score": float(score) if score is not None else None,
        "best_checkpoint": best_path or None,
        "test": test_pass,
        "progress": progress(trainer),
    }
    if not trainer.is_global_zero:
        return report
    write_json(run_dir / METRICS_FILE, report)
    curves = write_curves(run_dir)
    files = [p for p in (run_dir / "config_tree.log", run_dir / METRICS_FILE, curves) if p is not None and p.is_file()]
    for logger in trainer.loggers:
        if isinstance(logger, _MLFlowLogger):
            client, run_id = logger.experiment, logger.run_id
            client.set_tag(run_id, "run_dir", str(run_dir))
            if best_path:
                client.set_tag(run_id, "best_checkpoint", best_path)
            for path in files:
                client.log_artifact(run_id, str(path))
        elif isinstance(logger, _WandbLogger):
            run = logger.experiment
            run.summary["best_checkpoint"] = best_path or None
            run.summary["run_dir"] = str(run_dir)
            for path in files:
                run.save(str(path), base_path=str(run_dir), policy="now")
            # A finished run: the next job of a sweep (same process) must start its own.
            run.finish()
        elif isinstance(logger, TensorBoardLogger) and best_path:
            logger.experiment.add_text("best_checkpoint", best_path, trainer.global_step)
            logger.experiment.flush()
    return report
