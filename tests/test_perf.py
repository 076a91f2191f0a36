"""Speed knobs (configs/perf/, trainer precision/benchmark), segen's progress bar, and the
benchmark's dataset writers. Runs are CPU smoke runs; nothing here asserts a timing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from segen.config import config_dir
from segen.errors import ConfigError
from segen.perf import PerformanceKnobs, networks

SMOKE = ("debug=smoke", "trainer=cpu", "test=false")
# Small networks: the knobs act on any conv net, and the default widths (up to 512 channels, or
# a depth-4 UNet) cost most of these runs' time on CPU at bf16/fp16, and torch.compile's kernels.
TINY_NETS = {
    "cnn": ("model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,true]"),
    "unet": ("model.net.depth=2", "model.net.base_width=8"),
}
ROOT = Path(__file__).resolve().parent.parent


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="train"):
        return compose(config_name="train", overrides=list(overrides))


def test_trainer_gpu_turns_the_knobs_on_and_cpu_leaves_them_off():
    gpu = composed("trainer=gpu")
    assert gpu.trainer.precision == "bf16-mixed" and gpu.trainer.benchmark is True
    assert gpu.perf.channels_last and gpu.perf.compile and gpu.perf.float32_matmul_precision == "high"
    for cpu in (composed("trainer=cpu"), composed()):
        # null = auto: segen/perf.py choose_fast_path picks bf16 + channels_last by the CPU (test_fast_path.py)
        assert cpu.trainer.precision is None and cpu.trainer.benchmark is False
        assert cpu.perf.channels_last is None and not cpu.perf.compile and cpu.perf.float32_matmul_precision is None
    # The perf group can be chosen apart from the trainer, both ways.
    assert not composed("trainer=gpu", "perf=default").perf.compile
    assert composed("trainer=cpu", "perf=gpu").perf.channels_last


class _Task(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 2)
        self.no_params = nn.ReLU()


def test_knobs_convert_layout_and_compile_in_place_keeping_checkpoint_keys():
    task = _Task()
    keys = set(task.state_dict())
    PerformanceKnobs(channels_last=True, compile=True).setup(None, task, "fit")
    assert task.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert set(task.state_dict()) == keys  # no `_orig_mod.` prefix: sample/eval load them as is
    assert [m for m in networks(task)] == [task.net, task.head]


def test_matmul_precision_is_set_and_checked():
    before = torch.get_float32_matmul_precision()
    try:
        PerformanceKnobs(float32_matmul_precision="medium").setup(None, _Task(), "fit")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    with pytest.raises(ConfigError, match="float32_matmul_precision"):
        PerformanceKnobs(float32_matmul_precision="fast")


@pytest.mark.parametrize(
    "overrides",
    [
        ("trainer.precision=bf16-mixed", "perf.channels_last=true", "trainer.benchmark=true", "perf.float32_matmul_precision=high"),
        ("trainer.precision=bf16-mixed", "model=unet", "perf.channels_last=true"),
        ("trainer.precision=16-mixed", "perf.channels_last=false"),
    ],
    ids=["cnn-bf16-channels_last-benchmark-matmul", "unet-bf16-channels_last", "cnn-fp16"],
)
def test_knobs_train_on_cpu(segen, tmp_path, overrides):
    run = tmp_path / "run"
    net = TINY_NETS["unet" if "model=unet" in overrides else "cnn"]
    probe = ("+callbacks.probe._target_=fast_path_probe.FastPathProbe", f"+callbacks.probe.path={run / 'probe.json'}")
    result = segen("train", *SMOKE, *overrides, *net, *probe, f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "train/loss" in (run / "metrics.csv").read_text()
    # The knobs took effect inside the step, not only in the config (tests/helpers/fast_path_probe.py).
    seen = json.loads((run / "probe.json").read_text())
    # fp16 autocast does not exist on a CPU: 16-mixed runs as bf16, and the header says so.
    dtype = "torch.bfloat16"
    assert seen["precision"] == "bf16-mixed" and set(seen["outputs"].values()) == {dtype}
    if "trainer.precision=16-mixed" in overrides:
        assert "trainer.precision=16-mixed runs as bf16-mixed on a CPU" in result.stdout
    assert all(enabled and autocast == dtype for enabled, autocast in seen["autocast"].values())
    assert seen["weight_dtypes"] == ["torch.float32"]  # mixed precision: the weights stay fp32
    layouts = set(seen["channels_last"].values())
    assert layouts == ({True} if "perf.channels_last=true" in overrides else {False})


# torch.compile on CPU (trainer=gpu trainer.accelerator=cpu, every model kind): test_fast_path.py


def _bench_module():
    spec = importlib.util.spec_from_file_location("segen_bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_fixtures_read_back_with_torchvision_and_segen(tmp_path):
    from torchvision.datasets import MNIST

    from segen.data.cifar10 import _CIFAR10, CIFAR10DataModule

    bench = _bench_module()
    bench.write_mnist(tmp_path, 50, 10)
    bench.write_cifar10(tmp_path, 50, 10)
    mnist = MNIST(str(tmp_path), train=True, download=False)
    assert mnist.data.shape == (50, 28, 28) and len(mnist.targets) == 50
    cifar = _CIFAR10(str(tmp_path), train=True, download=False, verify_checksums=False)
    assert cifar.data.shape == (50, 32, 32, 3) and len(cifar.targets) == 50
    dm = CIFAR10DataModule(str(tmp_path), download=False, verify_checksums=False, val_split=10, batch_size=8)
    dm.setup()
    assert len(dm.splits["train"]) == 40


def test_bench_stopwatch_times_the_steps_after_warmup():
    bench = _bench_module()
    watch = bench.Stopwatch(warmup=2, steps=3, cuda=False)
    before = len(bench.Stopwatch.readings)
    for i in range(6):
        watch.on_train_batch_end(None, None, None, None, i)
    assert len(bench.Stopwatch.readings) == before + 1 and bench.Stopwatch.readings[-1] >= 0


def test_threads_sleep_when_idle_unless_the_user_says_otherwise(monkeypatch):
    import subprocess
    import sys

    from segen.threads import configure_threads

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    configure_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    # It must run before torch loads, so it cannot import it.
    code = "import sys, segen.threads; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0



def test_profile_step_puts_each_op_of_a_step_in_its_family(monkeypatch):
    """scripts/profile_step.py's op clock on a tiny conv net: forward and backward of the conv
    and the BatchNorm, the optimizer's step, and autocast's casts only under bf16 autocast."""
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))  # what the script's import sets
    spec = importlib.util.spec_from_file_location("segen_profile_step", ROOT / "scripts" / "profile_step.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"))
    opt = torch.optim.Adam(net.parameters())
    x = torch.randn(2, 3, 8, 8)
    seen = {}
    for fast in (False, True):
        clock = ps.OpClock()
        handles = ps.track_modules(clock) + ps.track_optimizer(clock)
        try:
            with clock, torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
                net(x).float().square().mean().backward()
                opt.step()
        finally:
            for h in handles:
                h.remove()
        seen[fast] = set(clock.seconds)
    for fast, keys in seen.items():
        for key in (("conv", "fwd"), ("conv", "bwd"), ("batch norm", "fwd"), ("batch/instance norm", "bwd"),
                    ("upsampling", "fwd"), ("upsampling", "bwd"), ("optimizer step", "step")):
            assert key in keys, (fast, key, sorted(keys))
        assert (("autocast casts", "fwd") in keys) is fast, sorted(keys)
