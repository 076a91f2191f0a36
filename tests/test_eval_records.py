"""What `segen eval` writes and what it leaves alone: its own metrics.json, never the training
run's files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_points_at_the_training_curves_and_leaves_them_alone(segen, straight_tiny_cnn, tmp_path):
    curves = straight_tiny_cnn / "curves.png"
    before = (digest(curves), curves.stat().st_mtime_ns)
    result = segen("eval", f"ckpt={straight_tiny_cnn / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Training curves: {curves}" in " ".join(result.stdout.split())
    assert (digest(curves), curves.stat().st_mtime_ns) == before  # the training run's file, untouched
