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
    assert (sweep / "multirun.yaml").is_file()
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
    summary = json.loads((sweep / "summary.json").read_text())
    assert [final_metric(j)[0] for j in summary["jobs"]] == ["val/acc", "val/miou"]
    assert summary["best"] is None and "Best job" not in result.stdout  # accuracy and mIoU do not rank


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


def _record(job: int, model: str, monitor: str | None, mode: str, value: float, tmp_path) -> dict:
    return {"job": job, "overrides": [f"model={model}"], "status": "COMPLETED", "monitor": monitor, "monitor_mode": mode,
            "objective": value if monitor else None, "metrics": {monitor or "train/g_loss": value}, "error": None,
            "run_dir": str(tmp_path / str(job))}


def _summarize(tmp_path, records, capsys) -> tuple[dict, str]:
    """Run the end-of-sweep callback on these jobs' result.json files; (summary.json, printed text)."""
    from segen.sweep import RESULT_FILE, SweepSummary

    for record in records:
        (tmp_path / str(record["job"])).mkdir()
        (tmp_path / str(record["job"]) / RESULT_FILE).write_text(json.dumps(record))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    return json.loads((tmp_path / "summary.json").read_text()), " ".join(capsys.readouterr().out.split())


def test_a_sweep_over_different_metrics_names_no_best_job(tmp_path, capsys):
    """cnn's val/acc and unet's val/miou are not one scale: no winner, each job's metric listed."""
    records = [_record(0, "cnn", "val/acc", "max", 0.91, tmp_path), _record(1, "unet", "val/miou", "max", 0.42, tmp_path)]
    summary, text = _summarize(tmp_path, records, capsys)
    assert summary["best"] is None
    assert "Best job" not in text and "*" not in text
    assert "val/acc" in text and "0.9100" in text and "val/miou" in text and "0.4200" in text
    assert "No best job: the jobs monitor different metrics (val/acc, val/miou)" in text


def test_a_sweep_over_one_metric_ranks_it_in_its_direction(tmp_path, capsys):
    records = [_record(0, "unet", "val/loss", "min", 0.30, tmp_path), _record(1, "unet", "val/loss", "min", 0.20, tmp_path),
               _record(2, "unet", "val/loss", "min", 0.25, tmp_path)]
    summary, text = _summarize(tmp_path, records, capsys)
    assert summary["best"]["job"] == 1 and summary["best"]["value"] == 0.20
    assert "Best job: 1 (min 0.2000)" in text
