"""`hydra/launcher=slurm` (hydra-submitit-launcher, `pip install segen[slurm]`).

No cluster here: the SLURM launcher is run up to the sbatch script it would submit, and the
submitit *local* executor runs a real tiny job through the same launcher code and config path.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'segen[slurm]'")

from segen.config import config_dir  # noqa: E402

TINY = [
    "trainer=cpu", "debug=smoke", "data.num_train=128", "data.num_test=32", "data.batch_size=16",
    "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]",
]


def test_slurm_launcher_config_becomes_the_sbatch_request(tmp_path, monkeypatch):
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import setup_globals
    from hydra.utils import instantiate

    setup_globals()
    overrides = [
        "hydra/launcher=slurm", "trainer=ddp", f"hydra.sweep.dir={tmp_path}",
        "hydra.launcher.partition=gpu", "hydra.launcher.account=myproject", "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=720",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    submitted = {}

    def capture(executor, fn, *iterables):  # stands in for sbatch: keep the script, run nothing
        submitted["script"] = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun exists"
    launcher.launch([["model=cnn"]], initial_job_idx=0)
    script = submitted["script"]
    for line in ("--partition=gpu", "--account=myproject", "--nodes=2", "--gpus-per-node=4",
                 "--ntasks-per-node=4", "--cpus-per-task=8", "--time=720"):
        assert f"#SBATCH {line}" in script, line
    assert "srun" in script  # one task per GPU, started by SLURM: Lightning's SLURMEnvironment


def test_trainer_ddp_takes_num_nodes_from_the_slurm_allocation(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("SLURM_NNODES", "2")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose(config_name="train", overrides=["trainer=ddp"])
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.strategy == "ddp"
    monkeypatch.delenv("SLURM_NNODES")
    assert cfg.trainer.num_nodes == 1


def test_submitit_local_runs_a_tiny_job(segen, tmp_path):
    sweep = tmp_path / "sweep"
    result = segen("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *TINY,
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep / ".submitit").is_dir()  # it really went through submitit
    assert (sweep / "0" / "checkpoints" / "best.ckpt").is_file()
    jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "COMPLETED" and "val/acc" in jobs[0]["metrics"]


def test_missing_plugin_is_a_one_line_error(monkeypatch, capsys):
    import importlib.util

    from segen import precheck
    from segen.config import config_dir
    from segen.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "submitit" in name else real(name, *a))
    with pytest.raises(ConfigError) as refused:
        precheck.check_overrides(["hydra/launcher=slurm"], "train", config_dir(), compose=False)
    message = str(refused.value)
    assert "\n" not in message and "pip install 'segen[slurm]'" in message
