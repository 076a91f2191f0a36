"""A full disk (ENOSPC) or a failing device (EIO) at each write site: the run stops with one line
naming the file and the cause, the previous file stays intact and loadable, and no temporary
file is left behind.

The error is injected at the OS boundary (`os.fsync`, where a full disk with delayed
allocation reports it) by tests/helpers/fault_injection.py's `FailWrites`, for each site:
checkpoints, `metrics.json`, and the dataset cache. One more test fills a real tmpfs where root
can mount one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_resilience import TINY

import segen.io as sio
from segen.errors import WriteError


def inject(name: str, after: int = 0, error: str = "ENOSPC", folder: Path | None = None) -> list[str]:
    args = ["+hydra.callbacks.disk._target_=fault_injection.FailWrites", f"+hydra.callbacks.disk.name={name}",
            f"+hydra.callbacks.disk.after={after}", f"+hydra.callbacks.disk.error={error}"]
    return args + ([f"+hydra.callbacks.disk.folder={folder}"] if folder else [])


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_write_turns_a_full_disk_into_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    sio.write_json(target, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sio.os, "fsync", full)
    with pytest.raises(WriteError) as err:
        sio.write_json(target, {"new": 2})
    assert str(target) in str(err.value) and "No space left on device (ENOSPC)" in str(err.value) and "\n" not in str(err.value)
    assert json.loads(target.read_text()) == {"old": 1}
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("error,text", [("ENOSPC", "No space left on device (ENOSPC)"), ("EIO", "Input/output error (EIO)")])
def test_checkpoint_write_fails_in_one_line_and_keeps_the_previous_last_ckpt(segen, tmp_path, error, text):
    run = tmp_path / "run"
    # last.ckpt is written at the end of each epoch: the first save works, the second fails.
    result = segen("train", *TINY, "trainer.max_epochs=3", f"hydra.run.dir={run}", *inject("last.ckpt", after=1, error=error),
                   cwd=tmp_path, inject=True)
    line = one_error_line(result)
    last = run / "checkpoints" / "last.ckpt"
    assert f"cannot write {last}: {text}" in line
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # intact, from the first epoch
    assert ckpt["epoch"] == 0 and ckpt["global_step"] > 0
    assert temporaries(run) == []


def test_metrics_json_write_fails_in_one_line_and_keeps_the_previous_one(segen, straight_tiny_cnn, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}\n')
    before = digest(out / "metrics.json")
    ckpt = straight_tiny_cnn / "checkpoints" / "last.ckpt"
    result = segen("eval", f"ckpt={ckpt}", f"hydra.run.dir={out}", *inject("metrics.json"), cwd=tmp_path, inject=True)
    line = one_error_line(result)
    assert f"cannot write {out / 'metrics.json'}: No space left on device (ENOSPC)" in line
    assert digest(out / "metrics.json") == before and temporaries(out) == []


def test_dataset_cache_write_fails_in_one_line_and_keeps_the_previous_cache(segen, tmp_path):
    from camvid_fixture import make_camvid

    root = make_camvid(tmp_path / "data", per_sequence=2, size=(24, 32))
    cache = tmp_path / "cache"
    common = ["model=unet", "data=camvid", "debug=smoke", "data.batch_size=4", "model.net.depth=2", "model.net.base_width=4",
              f"paths.data_dir={root}", f"data.cache_dir={cache}", "test=false"]
    first = segen("train", *common, "data.image_size=[24,32]", f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: digest(p) for p in cache.rglob("*") if p.is_file()}
    assert before
    # Another size needs a new cache entry, and the disk is full.
    second = segen("train", *common, "data.image_size=[16,24]", f"hydra.run.dir={tmp_path / 'second'}",
                   *inject("*", folder=cache), cwd=tmp_path, inject=True)
    line = one_error_line(second)
    assert f"cannot write {cache}" in line and "No space left on device (ENOSPC)" in line
    assert {p: digest(p) for p in before} == before and temporaries(cache) == []
    assert not (tmp_path / "second").exists()  # refused before it trained: no run directory left


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0


def test_a_really_full_tmpfs_keeps_the_old_checkpoint(tmp_path):
    """No injection: a 256 KiB tmpfs that holds one checkpoint but not the next one as well."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    try:
        target = disk / "last.ckpt"
        sio.save_tensors(target, {"w": torch.zeros(20_000)})  # ~80 KB
        before = digest(target)
        with pytest.raises(WriteError, match=r"cannot write .*last\.ckpt: No space left on device \(ENOSPC\)"):
            sio.save_tensors(target, {"w": torch.ones(50_000)})  # ~200 KB more than fits beside it
        assert digest(target) == before and temporaries(disk) == []
        assert torch.load(target, weights_only=True)["w"].sum() == 0
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)

