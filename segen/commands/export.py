"""`segen export ckpt=PATH format=onnx|torchscript [out=PATH]`: the inference network as a file.

The task decides what its inference network is (`task.export_spec(datamodule)`); this command
writes it, writes the JSON sidecar, then runs the written file with its own runtime
(onnxruntime, torch.jit.load) on a batch of another size than the one exported and compares it
with PyTorch: a file that disagrees by more than `tolerance` is an error, not a warning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from segen import __version__
from segen.commands.common import quiet_lightning, restore, run_dir
from segen.console import console
from segen.errors import ConfigError
from segen.export import FORMATS, ExportError, verify, write, write_sidecar
from segen.extras import require

CHECK_BATCH = 3  # differs from the export batch (2), so a batch axis baked in as a constant shows


def main(cfg: DictConfig) -> dict[str, float]:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not an export format; use one of: {', '.join(FORMATS)}")
    if cfg.format == "onnx":  # before the checkpoint is even read
        require(("onnx", "onnxruntime", "onnxscript"), "export", "format=onnx")
    quiet_lightning()
    torch.manual_seed(cfg.seed)
    run_cfg, task, datamodule = restore(cfg)
    task.eval()  # BatchNorm on running statistics, no dropout
    spec = task.export_spec(datamodule)
    out = Path(cfg.out) if cfg.out else run_dir() / f"model{FORMATS[cfg.format]}"
    try:
        path = write(spec, cfg.format, out, cfg.opset)
    except Exception as err:  # the exporter's own failure: its root cause names the op
        root = err
        while root.__cause__ is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [type(root).__name__])[0]
        raise ExportError(f"cannot export {run_cfg.choices.get('model')} to {cfg.format}: {type(root).__name__}: {first}") from err
    diff = verify(spec, path, cfg.format, CHECK_BATCH)
    sidecar = write_sidecar(spec, path, {
        "format": cfg.format,
        "file": path.name,
        "model": run_cfg.choices.get("model"),
        "data": run_cfg.choices.get("data"),
        "checkpoint": str(Path(cfg.ckpt).absolute()),
        "segen_version": __version__,
        "check": {"batch_size": CHECK_BATCH, "max_abs_diff": diff, "tolerance": float(cfg.tolerance)},
    })
    console.print(f"[bold]Exported[/] {run_cfg.choices.get('model')} ({cfg.format}): {path}", soft_wrap=True)
    console.print(f"[bold]Sidecar:[/] {sidecar}", soft_wrap=True)
    shapes = ", ".join(f"{name} {tuple(x.shape)}" for name, x in zip(spec.input_names, spec.check_inputs(CHECK_BATCH), strict=True))
    console.print(f"[bold]Check:[/] {cfg.format} vs PyTorch on {shapes}: max abs diff {diff:.2e} (tolerance {cfg.tolerance:g})", soft_wrap=True)
    if not diff <= cfg.tolerance:  # NaN fails too
        raise ExportError(f"{path} differs from PyTorch by {diff:.3g} > tolerance {cfg.tolerance:g}; the exported file is not trustworthy")
    return {"max_abs_diff": diff}
