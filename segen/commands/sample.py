"""`segen sample ckpt=PATH`: what a model makes, written to files.

The checkpoint alone rebuilds the model and its data (`restore`); the task decides what to
write (`Task.check_sample_request`, `Task.write_samples`): generated images for generators
(segen/outputs/images.py), predicted masks for segmenters (segen/outputs/masks.py). Both
write `grid.png` and `images/` into `out=` (default: this command's run directory).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from segen.checkpoint import checkpoint_config, load_checkpoint
from segen.commands.common import restore, run_dir, stored_task_class
from segen.console import console


def main(cfg: DictConfig) -> list[Path]:
    ckpt = load_checkpoint(cfg.ckpt)
    model = checkpoint_config(ckpt)[1].get("model", "this model")
    stored_task_class(ckpt).check_sample_request(cfg, model)  # impossible requests fail before any work
    _, task, datamodule = restore(cfg, ckpt)
    out = Path(cfg.out).expanduser() if cfg.get("out") else run_dir()
    paths = task.write_samples(cfg, datamodule, out, model)
    console.print(f"[bold]Wrote[/] {len(paths)} files to {out}", soft_wrap=True)
    return paths
