"""`segen train -m ...`: one folder per job and a summary of every job's final metric."""

from __future__ import annotations

import json

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from segen.sweep import final_metric, job_record, summary_table

TINY = [
    "debug=smoke", "data.num_train=256", "data.num_test=64", "data.batch_size=16",
    "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]",
]


def test_two_job_sweep_writes_one_folder_per_job_and_a_summary(segen, tmp_path):
    sweep = tmp_path / "sweep"
    result = segen("train", "-m", "model.optimizer.lr=0.01,0.02", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep / job / ".hydra" / "overrides.yaml").is_file()
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = summary["jobs"]
    assert [j["job"] for j in jobs] == [0, 1]
    assert [j["status"] for j in jobs] == ["COMPLETED", "COMPLETED"]
    assert ["model.optimizer.lr=0.01" in j["overrides"] for j in jobs] == [True, False]
    for job in jobs:
        assert job["monitor"] == "val/acc" and 0.0 <= job["metrics"]["val/acc"] <= 1.0
        assert "test/acc" in job["metrics"]
    # The printed table names each job by what differs between them, with its final metric.
    table = result.stdout[result.stdout.index("sweep: 2 jobs"):]
    assert "model.optimizer.lr=0.01" in table and "model.optimizer.lr=0.02" in table
    assert table.count("val/acc") == 2 and f"{jobs[1]['metrics']['val/acc']:.4f}" in table


@pytest.mark.slow
def test_issue_sweep_cnn_and_unet(segen, tmp_path):
    sweep = tmp_path / "sweep"
    result = segen("train", "-m", "model=cnn,unet", "data=shapes", "trainer.max_steps=20", "debug=smoke",
                   "data.num_train=256", "data.num_test=64", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [final_metric(j)[0] for j in jobs] == ["val/acc", "val/miou"]


def test_a_failed_job_is_listed_with_its_error(tmp_path):
    config = OmegaConf.create({"hydra": {"job": {"num": 3}, "runtime": {"output_dir": str(tmp_path)}}, "model": {"monitor": "val/miou"}})
    failed = JobReturn(overrides=["model=unet"], status=JobStatus.FAILED, _return_value=RuntimeError("out of memory"))
    record = job_record(config, failed)
    assert record["status"] == "FAILED" and record["error"] == "RuntimeError: out of memory"
    assert final_metric(record) == ("val/miou", None)
    done = job_record(config, JobReturn(overrides=["model=cnn"], status=JobStatus.COMPLETED, _return_value={"val/miou": 0.5}))
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table([record, done], "sweep"))
    text = console.export_text()
    assert "FAILED: RuntimeError: out of memory" in text and "0.5000" in text
