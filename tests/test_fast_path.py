"""The fast path (segen/perf.py choose_fast_path): bf16-mixed autocast + channels_last where the
CPU computes bf16 natively, fp32 elsewhere, for every model kind, and the GPU preset's code path
(`trainer=gpu trainer.accelerator=cpu`: bf16, channels_last, torch.compile) on a CPU.

The CLI runs set SEGEN_CPU_BF16 so they take the path under test on any CI machine (a CPU without
native bf16 runs the same ops, emulated). A probe callback (tests/helpers/fast_path_probe.py)
records what ran inside the first training step, so a test proves the path, not just a finished run.
"""

from __future__ import annotations

import copy
import json
import signal
from pathlib import Path

import pytest
import torch

from segen import perf
from segen.perf import CPU_BF16_ENV, choose_fast_path, cpu_bf16

# Per model kind: tiny nets on tiny shapes data, 4 batches per epoch, deterministic.
BASE = ("data=shapes", "trainer.deterministic=true", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
        "data.num_train=160", "data.val_split=32", "data.num_test=32", "test=false")
KINDS = {
    "cnn": ("model=cnn", "data.batch_size=32", "data.image_size=16", "model.net.widths=[8,16]", "model.net.pool=[false,true]",
            "model.net.residual=[false,true]", "model.net.dropout=0.3"),
    "unet": ("model=unet", "data.batch_size=32", "data.image_size=16", "model.net.depth=2", "model.net.base_width=8"),
    # Self-conditioned (k-means codes, code-conditioned D) with an EMA generator.
    "dcgan": ("model=dcgan", "data.batch_size=32", "model.generator.width=8", "model.discriminator.width=8", "model.ema_decay=0.9",
              "model.latent_code_classes=4", "model.latent_code=clusters", "model.generator.code_input=cbn"),
    "cgan": ("model=cgan", "data.batch_size=32", "model.generator.width=8", "model.discriminator.width=8"),
    "pix2pix": ("model=pix2pix", "data.batch_size=16", "data.image_size=32", "model.generator.ngf=8", "model.discriminator.ndf=8", "model.decay_epochs=1"),
}
PROBE = ("+callbacks.probe._target_=fast_path_probe.FastPathProbe",)


def probe(run: Path) -> tuple[str, ...]:
    return (*PROBE, f"+callbacks.probe.path={run / 'probe.json'}")


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


# -- the choice ---------------------------------------------------------------------------------
def test_cpu_bf16_reads_the_flags_and_the_override(tmp_path, monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n")
    assert cpu_bf16(info) is None  # AVX512 alone: bf16 is emulated, slower than fp32
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_bf16(info) == "AVX512-BF16"
    info.write_text("processor\t: 0\nflags\t\t: avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16(info) == "AMX-BF16"
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert cpu_bf16(info) is None
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_bf16(tmp_path / "missing") == f"{CPU_BF16_ENV}=1"


def test_choice_follows_the_cpu_and_keeps_what_the_config_sets(monkeypatch):
    monkeypatch.setattr(perf, "cpu_bf16", lambda: "AVX512-BF16")
    fast = choose_fast_path("cpu", None, None)
    assert (fast.precision, fast.channels_last) == ("bf16-mixed", True)
    assert "AVX512-BF16" in fast.line() and "trainer.precision=32-true" in fast.line()
    assert choose_fast_path("cpu", "auto", "auto").precision == "bf16-mixed"
    # Either knob set by hand is kept; the other still follows the machine.
    assert (choose_fast_path("cpu", "32-true", None).precision, choose_fast_path("cpu", "32-true", None).channels_last) == ("32-true", False)
    assert choose_fast_path("cpu", None, False) == perf.FastPath("bf16-mixed", False, False, choose_fast_path("cpu", None, False).reason)
    monkeypatch.setattr(perf, "cpu_bf16", lambda: None)
    slow = choose_fast_path("cpu", None, None)
    assert (slow.precision, slow.channels_last) == ("32-true", False) and "no native bf16" in slow.line()
    assert choose_fast_path("cpu", "bf16-mixed", True).precision == "bf16-mixed"  # forced on: kept
    if not torch.cuda.is_available():
        assert choose_fast_path("auto", None, None).precision == "32-true"  # auto = this CPU


# -- every model kind under the fast path ---------------------------------------------------------
def assert_fast_path_ran(run: Path, stdout: str, kind: str) -> None:
    seen = json.loads((run / "probe.json").read_text())
    assert "Fast path: bf16-mixed autocast + channels_last" in stdout
    assert seen["precision"] == "bf16-mixed"
    assert seen["outputs"] and set(seen["outputs"].values()) == {"torch.bfloat16"}, seen  # the nets ran in bf16 ...
    assert all(on and dtype == "torch.bfloat16" for on, dtype in seen["autocast"].values()), seen  # ... under autocast
    assert seen["loss"] == "torch.float32", seen  # losses in fp32
    assert seen["weight_dtypes"] == ["torch.float32"]  # master weights (and EMA copies) in fp32
    assert seen["channels_last"] and all(seen["channels_last"].values()), seen


@pytest.mark.slow  # five kinds x (two epochs, one epoch + resume, eval, sample, export): ~2 minutes
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_trains_resumes_evaluates_samples_and_exports_under_the_fast_path(segen, tmp_path, monkeypatch, kind):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    args = (*BASE, *KINDS[kind])
    straight = tmp_path / "straight"
    result = segen("train", *args, "trainer.max_epochs=2", *probe(straight), f"hydra.run.dir={straight}", cwd=tmp_path, inject=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_fast_path_ran(straight, result.stdout, kind)
    last = straight / "checkpoints" / "last.ckpt"
    # The checkpoint stores the path that ran, so a resumed run runs the same one.
    stored = torch.load(last, map_location="cpu", weights_only=True)["segen"]["config"]
    assert "precision: bf16-mixed" in stored and "channels_last: true" in stored

    # Killed as epoch 2 starts, resumed from epoch 1's last.ckpt: bit for bit the straight run.
    split, epoch_steps = tmp_path / "split", int(torch.load(last, weights_only=True)["global_step"]) // 2
    kill = ("+callbacks.kill._target_=fault_injection.SignalAtStep", f"+callbacks.kill.step={epoch_steps}", "+callbacks.kill.signal_name=SIGKILL")
    killed = segen("train", *args, "trainer.max_epochs=2", *kill, f"hydra.run.dir={split}", cwd=tmp_path, inject=True)
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == epoch_steps
    resumed = segen("train", f"resume={split}", "~callbacks.kill", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(last), weights(split / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]

    if kind not in ("dcgan", "cgan"):  # generators' scores need feature weights: test_eval_gan scores them
        ev = segen("eval", f"ckpt={last}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    if kind != "cnn":  # a classifier has nothing to sample
        sample = segen("sample", f"ckpt={last}", "n=4", f"out={tmp_path / 'samples'}", f"hydra.run.dir={tmp_path / 'sample'}", cwd=tmp_path)
        assert sample.returncode == 0, sample.stderr[-3000:]
        assert list((tmp_path / "samples").rglob("*.png"))

    # The export is fp32 and NCHW: TorchScript's weights are the checkpoint's, and it matches the
    # model's own fp32 forward (the export command checks that, at its default tolerance).
    out = tmp_path / "model.pt"
    ex = segen("export", f"ckpt={last}", "format=torchscript", f"out={out}", f"hydra.run.dir={tmp_path / 'export'}", cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr[-3000:]
    module = torch.jit.load(str(out))
    exported = module.state_dict()
    assert exported and all(v.dtype == torch.float32 for v in exported.values() if v.is_floating_point())
    check = json.loads(out.with_name(out.name + ".json").read_text())["check"]
    assert check["max_abs_diff"] <= check["tolerance"]


def test_fp32_fallback_on_a_cpu_without_bf16(segen, tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    run = tmp_path / "run"
    result = segen("train", *BASE, *KINDS["cnn"], "trainer.max_epochs=1", "trainer.limit_train_batches=1", *probe(run),
                   f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Precision: 32-true + NCHW (this CPU has no native bf16" in result.stdout
    seen = json.loads((run / "probe.json").read_text())
    assert seen["precision"] == "32-true" and set(seen["outputs"].values()) == {"torch.float32"}
    assert not any(on for on, _ in seen["autocast"].values()) and not any(seen["channels_last"].values())


def test_precision_and_layout_overrides_force_the_old_path(segen, tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    run = tmp_path / "run"
    result = segen("train", *BASE, *KINDS["unet"], "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.precision=32-true",
                   "perf.channels_last=false", *probe(run), f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Precision: 32-true + NCHW (as configured)" in result.stdout
    seen = json.loads((run / "probe.json").read_text())
    assert set(seen["outputs"].values()) == {"torch.float32"} and not any(seen["channels_last"].values())


# -- what stays fp32 ------------------------------------------------------------------------------
def test_spectral_norm_power_iteration_stays_fp32_under_cpu_autocast():
    """segen's spectrally normalized D (torch's parametrization, `segen.models.dcgan.spectral_normalize`)
    under bf16 autocast on a CPU, with channels_last weights as the fast path has them: the power
    iteration's u and v, sigma and the normalized weight are fp32 and bit for bit what the same
    net computes without autocast, because CPU autocast does not cast `mv` or `vdot`. (CUDA's
    autocast does cast `mv` to bf16: docs/performance.md.)"""
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.Flatten(), nn.Linear(16 * 4 * 4, 1))
    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(layer)
    net.to(memory_format=torch.channels_last)
    twin = copy.deepcopy(net)
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    assert torch.mv(torch.randn(5, 3), torch.randn(3)).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mv(torch.randn(5, 3), torch.randn(3)).dtype == torch.float32  # not an autocast op on CPU
        assert net(x).dtype == torch.bfloat16  # the convs and the linear layer did run in bf16
        weights = [layer.weight for layer in (net[0], net[2], net[4])]  # one more power iteration each
    twin(x)
    plain = [layer.weight for layer in (twin[0], twin[2], twin[4])]
    for layer, other, w, w_plain in zip((net[0], net[2], net[4]), (twin[0], twin[2], twin[4]), weights, plain, strict=True):
        sn, sn_plain = layer.parametrizations.weight[0], other.parametrizations.weight[0]
        assert sn._u.dtype == sn._v.dtype == torch.float32
        assert torch.equal(sn._u, sn_plain._u) and torch.equal(sn._v, sn_plain._v)
        assert w.dtype == torch.float32 and torch.equal(w, w_plain)


# -- the GPU preset's code path, on a CPU ---------------------------------------------------------
@pytest.mark.slow  # torch.compile builds C++ kernels for every net: tens of seconds per kind
@pytest.mark.parametrize("kind", list(KINDS))
def test_gpu_preset_runs_on_cpu_for_every_kind(segen, tmp_path, kind):
    run = tmp_path / "run"
    result = segen("train", *BASE, *KINDS[kind], "trainer=gpu", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "trainer.limit_val_batches=0",  # an eval-mode graph would be a second compile
                   *probe(run), f"hydra.run.dir={run}", cwd=tmp_path, inject=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.compile" in result.stdout
    seen = json.loads((run / "probe.json").read_text())
    assert seen["precision"] == "bf16-mixed" and set(seen["outputs"].values()) == {"torch.bfloat16"}
    assert seen["compiled"] and all(seen["compiled"].values()) and all(seen["channels_last"].values())
    # Compiled in place: the checkpoint's keys load into an uncompiled model.
    assert not any("_orig_mod" in k for k in weights(run / "checkpoints" / "last.ckpt"))
