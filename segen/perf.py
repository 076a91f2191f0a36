"""Speed knobs that are not Trainer arguments, as one callback configured by `configs/perf/`.

`precision` and cudnn `benchmark` are `pl.Trainer` arguments (configs/trainer/); the rest live
here so the trainer config stays plain Trainer arguments that `segen eval` can reuse. Each knob
also works on a CPU, where it is merely slower or a no-op, so every combination can be tested
without a GPU.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric

MATMUL_PRECISIONS = ("highest", "high", "medium")
# Set to 0 or 1, it says whether this CPU has native bf16 instead of asking the CPU (tests
# simulate a CPU without it; a user can rule out a misdetected one).
CPU_BF16_ENV = "SEGEN_CPU_BF16"


def cpu_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The native bf16 instructions this CPU has ("AMX-BF16", "AVX512-BF16"), or None.

    Without them torch still runs bf16 (emulated in fp32 registers), but slower than fp32, so
    only a CPU that has them gets the bf16 path. Read from /proc/cpuinfo's flags (Linux), else
    from torch's own CPU probe where this torch has it.
    """
    forced = os.environ.get(CPU_BF16_ENV)
    if forced in ("0", "1"):
        return f"{CPU_BF16_ENV}=1" if forced == "1" else None
    try:
        flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        flags = set()
        for flag, probe in (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
            check = getattr(torch.cpu, probe, None)
            if check is not None and check():
                flags.add(flag)
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if flag in flags:
            return name
    return None


@dataclass(frozen=True)
class FastPath:
    """What `segen train` runs with: Lightning precision, weights' memory format, compile, and why."""

    precision: str
    channels_last: bool
    compile: bool
    reason: str

    @property
    def fast(self) -> bool:
        return self.precision.startswith(("bf16", "16"))

    def line(self) -> str:
        """The run header's one line."""
        parts = [f"{self.precision} autocast" if "mixed" in self.precision else self.precision]
        parts.append("channels_last" if self.channels_last else "NCHW")
        if self.compile:
            parts.append("torch.compile")
        head = "Fast path" if self.fast else "Precision"
        return f"{head}: {' + '.join(parts)} ({self.reason})"


def choose_fast_path(accelerator: str, precision: str | None, channels_last: bool | None, compile: bool = False) -> FastPath:
    """Resolve `trainer.precision` and `perf.channels_last` left at null ("auto").

    bf16-mixed autocast + channels_last where the hardware computes bf16 natively (a CPU with
    AVX512-BF16 or AMX, a CUDA GPU with bf16), fp32 NCHW elsewhere; a value the config sets is
    kept as it is.
    """
    accelerator = str(accelerator or "auto").lower()
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        native = "this GPU computes bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
        lacking = "no GPU with bf16"
    elif accelerator == "cpu":
        found = cpu_bf16()
        native = f"this CPU has {found}" if found else None
        lacking = "this CPU has no native bf16 (AVX512-BF16 or AMX)"
    else:
        native, lacking = None, f"no bf16 default for accelerator={accelerator}"
    auto_precision, auto_layout = precision in (None, "auto"), channels_last in (None, "auto")
    # Lightning runs fp16 autocast as bf16 on a CPU: name what really runs (header and checkpoint).
    cpu_fp16 = accelerator == "cpu" and str(precision) in ("16-mixed", "16")
    if cpu_fp16:
        precision = "bf16-mixed"
    if auto_precision:
        precision = "bf16-mixed" if native else "32-true"
    if auto_layout:
        channels_last = bool(native) and str(precision).startswith(("bf16", "16"))
    if not (auto_precision or auto_layout):
        reason = "as configured"
    elif native:
        reason = f"{native}; trainer.precision=32-true perf.channels_last=false for fp32"
    else:
        reason = lacking
    if not auto_precision and auto_layout:
        reason = f"trainer.precision={precision} as configured; {reason}"
    if cpu_fp16:
        reason = f"trainer.precision=16-mixed runs as bf16-mixed on a CPU (no fp16 autocast there); {reason}"
    return FastPath(str(precision), bool(channels_last), bool(compile), reason)


def apply_fast_path(cfg) -> FastPath:
    """Write the chosen precision and memory format into `cfg` (so checkpoints store what ran,
    and a resumed run runs the same), and return the choice for the run header."""
    from omegaconf import open_dict

    from segen.console import drop_lightning_lines

    # The header line says it; the model summary's size is of the fp32 weights, which is right.
    drop_lightning_lines("Automatic Mixed Precision (AMP)", "is not supported by the model summary")
    perf = cfg.get("perf")
    path = choose_fast_path(
        cfg.trainer.get("accelerator"), cfg.trainer.get("precision"),
        perf.get("channels_last") if perf is not None else False, bool(perf.get("compile")) if perf is not None else False,
    )
    with open_dict(cfg):
        cfg.trainer.precision = path.precision
        if perf is not None:
            cfg.perf.channels_last = path.channels_last
    return path


def logging_this_step(module: pl.LightningModule) -> bool:
    """Whether Lightning writes logs after this batch (every `log_every_n_steps` batches).

    Training steps call `self.log` only then: the logger sees the same values, and the other
    steps skip its bookkeeping (~0.1 ms per call, a few % of a small CPU step).
    """
    connector = getattr(module.trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def networks(task: nn.Module) -> list[nn.Module]:
    """The task's trainable networks (`net`, or `generator` and `discriminator`, ...): its direct
    children that hold parameters, metrics excluded."""
    return [m for m in task.children() if not isinstance(m, Metric) and any(True for _ in m.parameters())]


class PerformanceKnobs(pl.Callback):
    """Apply `channels_last`, `compile` and `float32_matmul_precision` before the first step, and
    keep the CPU thread count at `perf.threads` (null: this run's share of the cores, re-counted
    every few seconds as other segen runs start and end; segen/threads.py)."""

    RECOUNT_S = 2.0  # how often the share is re-counted (a directory listing: microseconds)

    def __init__(self, channels_last: bool | None = False, compile: bool = False, float32_matmul_precision: str | None = None,
                 threads: int | None = None):
        from segen.errors import ConfigError

        if float32_matmul_precision not in (None, *MATMUL_PRECISIONS):
            raise ConfigError(f"perf.float32_matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)} or null, got {float32_matmul_precision!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"perf.threads must be a positive whole number or null (share the cores with other segen runs), got {threads!r}")
        self.channels_last = bool(channels_last)  # null ("auto") is resolved by apply_fast_path; unresolved: off
        self.compile = compile
        self.float32_matmul_precision = float32_matmul_precision
        self.threads = threads
        self._share = None
        self._next_count = 0.0
        self._applied = False

    def _share_cores(self) -> None:
        """Set torch's thread count to this run's share of the cores, if it changed."""
        if self._share is None or time.monotonic() < self._next_count:
            return
        self._next_count = time.monotonic() + self.RECOUNT_S
        wanted = self._share.threads()
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

    def _start_sharing(self, trainer: pl.Trainer) -> None:
        from segen.console import note
        from segen.threads import CoreShare

        if self.threads is not None:
            torch.set_num_threads(self.threads)
            return
        # A count the user gave OpenMP wins; a GPU run's CPU threads only feed it.
        if "OMP_NUM_THREADS" in os.environ or not isinstance(trainer.accelerator, pl.accelerators.CPUAccelerator):
            return
        # The cores to share: torch's own default count (one thread per physical core, so
        # hyper-threads are not counted as cores), read before anything here changes it.
        self._share = CoreShare(cores=torch.get_num_threads())
        self._share_cores()
        runs, threads = self._share.runs(), torch.get_num_threads()
        if runs > 1:
            note(f"Threads: {threads} of {self._share.cores} cores ({runs} segen runs share this machine; "
                 "more as they end; perf.threads=N to fix it)")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._share_cores()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._share_cores()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._share_cores()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._applied:  # fit then test on the same task: convert and compile once
            return
        self._applied = True
        self._start_sharing(trainer)
        if self.float32_matmul_precision:
            torch.set_float32_matmul_precision(self.float32_matmul_precision)
        if self.channels_last:
            # 4-D weights in NHWC; convolutions then produce NHWC activations, which tensor
            # cores read without transposes. Moving to the device later keeps the layout.
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            from segen.console import note

            note("torch.compile: the first steps compile the networks (a minute or more on a CPU), then run faster")
            # Module.compile compiles in place: state_dict keys stay `net.*`, so checkpoints
            # load into an uncompiled model for `segen sample`/`eval`.
            for net in networks(pl_module):
                net.compile()


class RichProgressBar(pl.callbacks.RichProgressBar):
    """Lightning's rich progress bar, reading the logged metrics every `metrics_every_n_steps`
    batches (and at epoch ends) instead of after every batch.

    Reading them turns each logged tensor into a Python float: on a GPU that is a host sync per
    step, which stalls the queue of kernels that otherwise runs ahead of Python.

    It counts as the logs do (segen/loggers.py): `Epoch 2/5` numbers epochs from 0 (this one, and
    the last one the run will reach, `trainer.max_steps` included), the bar counts this epoch's
    batches, and `step 40/300` the optimizer steps (`trainer.global_step`: two per batch for a GAN).
    """

    def __init__(self, metrics_every_n_steps: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.metrics_every_n_steps = max(1, metrics_every_n_steps)
        self._skip_metrics = False
        self._last_metrics: dict | None = None
        self._epoch_start = (0, 0)
        self._in_epoch = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._in_epoch = True
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._skip_metrics = (batch_idx + 1) % self.metrics_every_n_steps != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False
        if batch_idx == self._epoch_start[1] and self.progress is not None and self.train_progress_bar_id is not None:
            # Now that the optimizer steps per batch are measured, correct the bar's total.
            self.progress.update(self.train_progress_bar_id, total=self.total_train_batches)

    def _count_from_here(self, trainer) -> None:
        # Until the epoch's first batch the loop's batch counts are still the previous epoch's;
        # a run resumed mid-epoch starts from the batches its checkpoint had done.
        done, total = trainer.fit_loop.epoch_loop.batch_progress.current.ready, trainer.num_training_batches
        self._epoch_start = (trainer.global_step, done if 0 < done < total != float("inf") else 0)
        self._in_epoch = False

    def on_train_start(self, trainer, pl_module) -> None:
        self._count_from_here(trainer)  # a run resumed mid-epoch gets no on_train_epoch_start
        super().on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._count_from_here(trainer)
        super().on_train_epoch_start(trainer, pl_module)

    def _batches_done(self) -> int:
        """Batches done in this epoch."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.ready if self._in_epoch else self._epoch_start[1]

    def _steps_per_batch(self) -> float:
        """Optimizer steps per batch: what `trainer.max_steps` counts. A GAN steps D and G, so
        it is 2 there (1.5 with d_steps=2); measured once a batch has run."""
        trainer = self.trainer
        start_step, start_batch = self._epoch_start
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.completed - start_batch if self._in_epoch else 0
        if batches > 0 and trainer.global_step > start_step:
            return (trainer.global_step - start_step) / batches
        if trainer.lightning_module is not None and not trainer.lightning_module.automatic_optimization:
            return float(max(1, len(trainer.optimizers)))
        return 1.0 / trainer.accumulate_grad_batches

    @property
    def total_train_batches(self) -> int | float:
        """Batches this epoch will really run: `max_steps` can end it early."""
        trainer = self.trainer
        total = trainer.num_training_batches
        if trainer.max_steps is None or trainer.max_steps < 0 or total == float("inf"):
            return total
        start_step, start_batch = self._epoch_start
        left = math.ceil((trainer.max_steps - start_step) / self._steps_per_batch())
        return max(0, min(total, start_batch + left))

    def _get_train_description(self, current_epoch: int) -> str:
        # "Epoch 0/31" for a run that max_steps ends within epoch 0 said 31 epochs were coming.
        trainer = self.trainer
        last = (trainer.max_epochs - 1) if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        total = trainer.num_training_batches
        if trainer.max_steps is not None and trainer.max_steps > 0 and total not in (0, float("inf")):
            left = math.ceil((trainer.max_steps - trainer.global_step) / self._steps_per_batch())
            by_steps = current_epoch + max(0, math.ceil((left + self._batches_done()) / total) - 1)
            last = by_steps if last is None else min(last, by_steps)
        text = f"Epoch {current_epoch}" + (f"/{last}" if last is not None else "")
        return f"{text:{len(self.validation_description)}}" if len(self.validation_description) > len(text) else text

    def get_metrics(self, trainer, pl_module) -> dict:
        # Between refreshes the bar shows the values read last time (no tensor -> float sync).
        if not (self._skip_metrics and self._last_metrics is not None):
            self._last_metrics = super().get_metrics(trainer, pl_module)
        steps = f"{trainer.global_step}/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else str(trainer.global_step)
        return {"step": steps, **self._last_metrics}


class ModelSummary(pl.callbacks.RichModelSummary):
    """Lightning's rich model summary without what is empty: the FLOPs column and total are
    zeros unless a module declares them, so they are shown only when they are not."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops=0, **kwargs) -> None:
        from pytorch_lightning.utilities.model_summary.model_summary import get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
        table = Table(header_style=kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name or " ", justify="right" if name in ("Params", "FLOPs") else "left", style="dim" if not name else None)
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        frozen = total_parameters - trainable_parameters
        line = (f"{get_human_readable_count(int(trainable_parameters))} trainable params"
                f"{f', {get_human_readable_count(int(frozen))} frozen' if frozen else ''}, {model_size:.1f} MB")
        if total_flops:
            line += f", {get_human_readable_count(total_flops)} FLOPs"
        console = get_console()
        console.print(table)
        console.print(line)


class FirstStepTime(pl.Callback):
    """Append the wall-clock time (`time.time()`) of the first training step to `path`;
    `scripts/bench.py` uses it to measure start-up of `segen train`."""

    def __init__(self, path: str):
        self.path = path
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._done:
            self._done = True
            with open(self.path, "a") as f:
                f.write(f"{time.time()}\n")
