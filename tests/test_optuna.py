"""`segen train -m hparams_search=...`: Optuna trials, the objective, and the best trial reported."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from segen.sweep import RunResult, best_record, job_record

TINY = ["debug=smoke", "data.num_train=128", "data.num_test=32", "data.batch_size=16",
        "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]"]


@pytest.mark.slow  # three short trainings in one process: ~40-60 s on 2 cores
def test_cnn_optuna_runs_n_trials_and_reports_the_best(segen, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    result = segen("train", "-m", "hparams_search=cnn_optuna", "hydra.sweeper.n_trials=3", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = summary["jobs"]
    assert [j["job"] for j in jobs] == [0, 1, 2] and all(j["status"] == "COMPLETED" for j in jobs)
    for job in jobs:  # every trial drew its own lr, weight decay and dropout
        assert {o.split("=")[0] for o in job["overrides"]} >= {"model.optimizer.lr", "model.optimizer.weight_decay", "model.net.dropout"}
        assert job["monitor"] == "val/acc" and job["monitor_mode"] == "max" and 0 <= job["objective"] <= 1
    best = summary["best"]
    assert best["value"] == max(j["objective"] for j in jobs)
    # Optuna's own record agrees: it optimized the same number, in the same direction.
    optuna_result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert optuna_result["best_value"] == pytest.approx(best["value"])
    winner = next(j for j in jobs if j["job"] == best["job"])
    for key, value in optuna_result["best_params"].items():
        assert any(o.startswith(f"{key}=") and float(o.split("=")[1]) == pytest.approx(value) for o in winner["overrides"])
    table = result.stdout[result.stdout.index("sweep: 3 jobs"):]
    assert f"{best['job']} *" in table and "Best job:" in table


def test_objective_is_the_monitored_metric_in_its_direction(tmp_path):
    """float(RunResult) is what Optuna reads; the summary's best follows model.monitor_mode."""
    assert float(RunResult({"val/loss": 0.3}, objective=0.25)) == 0.25
    with pytest.raises(TypeError, match="monitors no metric"):
        float(RunResult({"train/g_loss": 1.0}, objective=None))

    def record(num: int, objective: float, mode: str):
        config = OmegaConf.create({"hydra": {"job": {"num": num}, "runtime": {"output_dir": str(tmp_path)}},
                                   "model": {"monitor": "val/loss", "monitor_mode": mode}})
        return job_record(config, JobReturn(overrides=[f"x={num}"], status=JobStatus.COMPLETED, _return_value=RunResult({"val/loss": 9.0}, objective)))

    assert best_record([record(0, 0.5, "min"), record(1, 0.2, "min"), record(2, 0.9, "min")])["job"] == 1
    assert best_record([record(0, 0.5, "max"), record(1, 0.2, "max"), record(2, 0.9, "max")])["job"] == 2


def test_presets_optimize_the_tasks_monitor():
    """direction comes from model.monitor_mode (max -> maximize), for each preset's model."""
    from hydra import compose, initialize_config_dir

    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from segen.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for preset, model, monitor in (("cnn_optuna", "cnn", "val/acc"), ("unet_optuna", "unet", "val/miou")):
            cfg = compose("train", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
            assert cfg.hydra.runtime.choices.model == model
            assert cfg.model.monitor == monitor
            assert OmegaConf.select(cfg, "hydra.sweeper.direction") == "maximize"
            assert "model.optimizer.lr" in cfg.hydra.sweeper.params
