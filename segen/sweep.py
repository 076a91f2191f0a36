"""The summary of a sweep (`segen train -m model=cnn,unet ...`): one row per job, its final metric.

A Hydra callback (registered in configs/hydra/default.yaml). Each job leaves `result.json` in its
own folder (on_job_end runs where the job runs: in this process for the basic launcher, on the
cluster node for submitit), and at the end of the sweep the submitting process reads them all,
prints a table and writes `summary.json` in the sweep folder. Reading files rather than keeping
results in memory is what makes it work for remote launchers too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from segen.io import write_json

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"


class RunResult(dict):
    """What `segen train` returns: its final metrics, and `float(result)` = the objective, the best
    value of the task's monitored metric (what best.ckpt holds). Hydra's Optuna sweeper calls
    float() on a job's return value; the sweep summary reads the metrics and the objective."""

    def __init__(self, metrics: dict[str, float], objective: float | None):
        super().__init__(metrics)
        self.objective = objective

    def __float__(self) -> float:
        if self.objective is None:
            raise TypeError("this run has no objective: its task monitors no metric (model.monitor is null)")
        return float(self.objective)


def job_record(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    """What one job reports: its overrides, status, the metric it was tuned for and all metrics."""
    metrics: dict[str, float] = {}
    objective = None
    error = None
    if job_return.status == JobStatus.COMPLETED:
        value = job_return.return_value
        if isinstance(value, dict):
            metrics = {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
        objective = getattr(value, "objective", None)
    else:
        try:
            job_return.return_value  # noqa: B018 - raises the job's exception
        except Exception as err:  # the job failed; its exception is what to report
            error = f"{type(err).__name__}: {err}".splitlines()[0]
    return {
        "job": int(config.hydra.job.num),
        "overrides": list(job_return.overrides or []),
        "status": job_return.status.name if job_return.status is not None else "UNKNOWN",
        "monitor": OmegaConf.select(config, "model.monitor", default=None),
        "monitor_mode": OmegaConf.select(config, "model.monitor_mode", default=None),
        "objective": objective,  # best value of the monitor over the run (None: no monitor)
        "metrics": metrics,
        "error": error,
        "run_dir": str(config.hydra.runtime.output_dir),
    }


def final_metric(record: dict[str, Any]) -> tuple[str, float | None]:
    """The job's headline number: its monitored metric (val/acc, val/miou, ...) at the end."""
    metrics = record["metrics"]
    name = record.get("monitor") or next(iter(sorted(metrics)), "")
    return name, metrics.get(name)


def scored_records(records: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """(value, record) of each completed job with a number: its objective (the monitored
    metric's best value), else its final value."""
    scored = []
    for record in records:
        value = record.get("objective")
        value = final_metric(record)[1] if value is None else value
        if record["status"] == "COMPLETED" and value is not None and not math.isnan(value):
            scored.append((value, record))
    return scored


def ranked_metrics(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (metric, direction) pairs the scored jobs are ranked by, in job order."""
    keys = [(final_metric(r)[0], r.get("monitor_mode") or "max") for _, r in scored_records(records)]
    return list(dict.fromkeys(keys))


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed job with the best objective, in the direction of `model.monitor_mode`.
    None when no job has a number, or when the jobs monitor different metrics (cnn's val/acc
    and unet's val/miou are not one scale: no job beats the other)."""
    scored = scored_records(records)
    if not scored or len(ranked_metrics(records)) > 1:
        return None
    pick = min if scored[0][1].get("monitor_mode") == "min" else max
    return pick(scored, key=lambda pair: pair[0])[1]


def summary_table(records: list[dict[str, Any]], title: str):
    """Rows: job, the overrides that differ between jobs (the shared ones go in the caption),
    status, metric name, its final value, the best value over the run (the objective a search
    optimizes; the best job is marked, when the jobs share one metric) and, for a val/ metric,
    its test/ counterpart."""
    from rich.table import Table

    shared = [o for o in records[0]["overrides"] if all(o in r["overrides"] for r in records)] if len(records) > 1 else []
    table = Table(title=title, caption=f"all jobs: {' '.join(shared)}" if shared else None)
    for column, justify in (("job", "right"), ("overrides", "left"), ("status", "left"), ("metric", "left"),
                            ("final", "right"), ("best", "right"), ("test", "right")):
        table.add_column(column, justify=justify)
    winner = best_record(records)
    for record in records:
        varying = [o for o in record["overrides"] if o not in shared]
        name, value = final_metric(record)
        test = record["metrics"].get(name.replace("val/", "test/", 1)) if name.startswith("val/") else None
        cells = [f"{v:.4f}" if v is not None and not math.isnan(v) else "-" for v in (value, record.get("objective"), test)]
        status = record["status"] if not record["error"] else f"{record['status']}: {record['error']}"
        is_best = winner is not None and record["job"] == winner["job"]
        job = f"{record['job']} *" if is_best else str(record["job"])
        table.add_row(job, " ".join(varying), status, name or "-", *cells, style="bold green" if is_best else None)
    return table


class SweepSummary(Callback):
    """Per job: write `result.json`. After a sweep: print every job's final metric, write `summary.json`."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from segen.console import is_rank_zero

        if config.hydra.mode != RunMode.MULTIRUN or not is_rank_zero():
            return
        record = job_record(config, job_return)
        write_json(Path(record["run_dir"], RESULT_FILE), record)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from segen.console import console, print_unwrapped

        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        records = sorted((json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{RESULT_FILE}")), key=lambda r: r["job"])
        if not records:
            return
        path = sweep_dir / SUMMARY_FILE
        winner = best_record(records)
        best = None
        if winner is not None:
            value = winner["objective"] if winner.get("objective") is not None else final_metric(winner)[1]
            best = {"job": winner["job"], "overrides": winner["overrides"], "monitor": winner["monitor"],
                    "monitor_mode": winner.get("monitor_mode"), "value": value, "run_dir": winner["run_dir"]}
        write_json(path, {"sweep_dir": str(sweep_dir), "best": best, "jobs": records})
        print_unwrapped(summary_table(records, f"sweep: {len(records)} jobs"))  # a log keeps whole overrides
        if best is not None:
            console.print(f"[bold]Best job:[/] {best['job']} ({best['monitor_mode'] or 'max'} {best['value']:.4f}): {' '.join(best['overrides'])}", soft_wrap=True)
        elif len(metrics := ranked_metrics(records)) > 1:
            names = ", ".join(dict.fromkeys(name for name, _ in metrics))
            console.print(f"[bold]No best job:[/] the jobs monitor different metrics ({names}), which do not rank "
                          "against each other; each job's own is listed above", soft_wrap=True)
        console.print(f"[bold]Sweep directory:[/] {sweep_dir}  [bold]Summary:[/] {path}")
