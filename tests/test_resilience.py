"""Reliability and safety: exact resume, crash-safe checkpoints, signals, NaN, safe loading."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import torch

from segen.checkpoint import AtomicCheckpointIO, load_checkpoint
from segen.errors import CheckpointError

# A small, deterministic run: 320 train images / batch 32 = 10 steps per epoch, with dropout
# and shuffling, so every RNG stream matters for exactness.
TINY = (
    "trainer=cpu", "trainer.deterministic=true", "trainer.max_epochs=2", "trainer.log_every_n_steps=5",
    "data.num_train=400", "data.val_split=80", "data.num_test=40", "data.batch_size=32",
    "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,true]",
    "model.net.dropout=0.3", "test=false",
)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert diff == 0.0, f"max abs weight difference {diff}"


# dcgan: manual optimization with two optimizers; Lightning counts D and G steps, so one
# epoch of 10 batches is 20 global steps.
TINY_DCGAN = (
    "model=dcgan", "trainer=cpu", "trainer.deterministic=true", "trainer.max_epochs=2", "trainer.log_every_n_steps=5",
    "data.num_train=400", "data.val_split=80", "data.num_test=40", "data.batch_size=32",
    "model.generator.width=8", "model.discriminator.width=8", "model.ema_decay=0.9", "test=false",
)
CASES = {"cnn": (TINY, 10, 14), "dcgan": (TINY_DCGAN, 20, 28)}


@pytest.mark.parametrize("model", ["cnn", "dcgan"])
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(segen, tmp_path, model, request):
    overrides, steps_per_epoch, kill_at = CASES[model]
    if model == "cnn":  # the same run test_last_checkpoint compares with: trained once (conftest)
        straight_dir = request.getfixturevalue("straight_tiny_cnn")
    else:
        straight_dir = tmp_path / "straight"
        straight = segen("train", *overrides, f"hydra.run.dir={straight_dir}", cwd=tmp_path)
        assert straight.returncode == 0, straight.stderr[-2000:]

    run = tmp_path / "killed"
    kill = ("+callbacks.kill._target_=fault_injection.SignalAtStep", f"+callbacks.kill.step={kill_at}", "+callbacks.kill.signal_name=SIGKILL")
    killed = segen("train", *overrides, *kill, f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps_per_epoch  # epoch 1 only

    # The resumed run continues with the checkpoint's config; `~callbacks.kill` drops the test
    # device from it, so the rest is the plain run a user would have started.
    resumed = segen("train", f"resume={run}", "~callbacks.kill", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * steps_per_epoch
    # Every weight, the GAN's EMA generator included, equals the uninterrupted run's exactly.
    assert_same_weights(straight_dir / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    # The resumed run wrote into the original directory; its metrics.csv holds both epochs
    # (rows logged before the kill were flushed with the epoch-1 checkpoint).
    assert not (tmp_path / "outputs").exists()
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"0", "1"}


@pytest.mark.parametrize("signal_name,code,word", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_sigint_and_sigterm_save_last_and_name_the_resume_command(segen, tmp_path, signal_name, code, word):
    run = tmp_path / "run"
    inject = ("+callbacks.stop._target_=fault_injection.SignalAtStep", "+callbacks.stop.step=4", f"+callbacks.stop.signal_name={signal_name}")
    result = segen("train", *TINY, *inject, f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert result.returncode == code, result.stderr[-2000:]
    lines = [row for row in result.stderr.splitlines() if row.startswith("segen train:")]
    assert len(lines) == 1 and word in lines[0] and f"resume with: segen train resume={run}" in lines[0]
    assert "weights_only" not in result.stderr + result.stdout  # no Lightning line that reads like a safety problem
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] in (4, 5)


# (run, step to poison at, step of the last good checkpoint). cnn: 10 batches per epoch. dcgan:
# 10 batches per epoch and 2 optimizer steps per batch; its step returns its losses only so
# that this guard sees them.
NAN_CASES = [(TINY, 13, 10), (TINY_DCGAN, 26, 20)]


@pytest.mark.parametrize("args,poison_step,kept_step", NAN_CASES, ids=["cnn", "dcgan"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(segen, tmp_path, args, poison_step, kept_step):
    run = tmp_path / "run"
    poison = ("+callbacks.poison._target_=fault_injection.PoisonAtStep", f"+callbacks.poison.step={poison_step}")
    result = segen("train", *args, *poison, f"hydra.run.dir={run}", cwd=tmp_path, inject=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("segen train: error: training loss became NaN/inf")
    assert "Traceback" not in result.stderr
    kept = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert kept["global_step"] == kept_step
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


PAYLOADS = [torch.full((64, 1024), float(i)) for i in range(4)]


def _saver(path: Path, write_fd: int) -> None:
    """Child process: save ever-changing checkpoints to `path` in a loop, reporting each.
    Only serializes tensors made before the fork (tensor kernels are not fork-safe)."""
    io = AtomicCheckpointIO()
    i = 0
    while True:
        ckpt = {"state_dict": {"w": PAYLOADS[i % 4]}, "segen": {"config": "{}", "choices": {}}, "i": i}
        io.save_checkpoint(ckpt, path)
        os.write(write_fd, b".")
        i += 1


def test_checkpoint_writes_survive_sigkill_at_random_moments(tmp_path):
    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    for _trial in range(25):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            try:
                _saver(path, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        # Let the child complete 1..4 saves, then kill it wherever it is in the next one.
        for _ in range(rng.randint(1, 4)):
            assert os.read(read_fd, 1) == b"."
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        ckpt = load_checkpoint(path)  # always a complete checkpoint
        assert torch.equal(ckpt["state_dict"]["w"], PAYLOADS[ckpt["i"] % 4])
    # Only the target name ever holds a checkpoint (a killed save may leave a hidden temp file).
    assert [p.name for p in tmp_path.glob("*.ckpt")] == ["last.ckpt"]


class _Payload:
    """Unpickling this runs `open(marker, 'w')`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_is_refused_and_its_code_never_runs(segen, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "segen": {"config": "{}"}, "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused to load it"):
        load_checkpoint(evil)
    for command in (("eval", f"ckpt={evil}"), ("sample", f"ckpt={evil}"), ("train", f"ckpt={evil}", "debug=smoke")):
        result = segen(*command, f"hydra.run.dir={tmp_path}/{command[0]}", cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "refused to load it" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "not_a_checkpoint", "text"])
def test_bad_checkpoint_files_are_one_line_errors(segen, tmp_path, kind):
    path = tmp_path / "bad.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.randn(1000)}, "segen": {}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "not_a_checkpoint":
        torch.save({"weights": torch.randn(3)}, path)
    else:
        path.write_text("hello")
    before = path.read_bytes()
    result = segen("eval", f"ckpt={path}", f"hydra.run.dir={tmp_path}/e", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert {"empty": "is empty", "truncated": "not a readable checkpoint", "not_a_checkpoint": "not a segen checkpoint", "text": "not a readable checkpoint"}[kind] in result.stderr
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "args,expected",
    [
        (("trainer.max_epochs=abc",), "trainer.max_epochs must be an integer"),
        (("data.batch_size=1.5",), "data.batch_size must be an integer"),
        (("trainer.deterministic=maybe",), "trainer.deterministic must be true or false"),
        (("resume=/no/such/run",), "resume=/no/such/run: no such run directory"),
        (("ckpt=last",), "ckpt=last needs to know the run"),
    ],
)
def test_bad_values_are_one_line_errors(segen, tmp_path, args, expected):
    result = segen("train", *args, cwd=tmp_path)
    assert result.returncode == 2 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()


def test_unwritable_run_directory_is_a_one_line_error(segen, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = segen("train", f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert result.returncode == 2 and "cannot create the run directory" in result.stderr
    assert blocker.read_text() == "x"


def test_resume_refuses_a_checkpoint_of_another_model(segen, tmp_path, smoke_cnn_run):
    # A cnn checkpoint whose stored model name is changed: the check compares names, so this
    # stands in for any other kind of checkpoint.
    ckpt = torch.load(smoke_cnn_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["segen"]["choices"]["model"] = "dcgan"
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    result = segen("train", "debug=smoke", f"ckpt={other}", f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path)
    assert result.returncode == 2 and "holds a dcgan model, not cnn" in result.stderr


@pytest.mark.parametrize(
    "model,data,expected",
    [
        ("unet", "mnist", "model=unet needs masks, which data=mnist does not provide"),
        ("cgan", "cityscapes", "model=cgan needs labels, which data=cityscapes does not provide"),
    ],
)
def test_incompatible_model_and_data_fail_before_any_work(segen, tmp_path, model, data, expected):
    # No dataset files exist: the check must come before anything is read or written.
    result = segen("train", f"model={model}", f"data={data}", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_best_ckpt_beside_a_last_ckpt_names_the_last(tmp_path):
    """Runs that monitor nothing keep only last.ckpt: asking for best.ckpt names the file to pass."""
    (tmp_path / "last.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=f"this run keeps only the last one; pass ckpt={tmp_path / 'last.ckpt'}$"):
        load_checkpoint(tmp_path / "best.ckpt")
    with pytest.raises(CheckpointError, match="pass ckpt=<run dir>/checkpoints/best.ckpt or last.ckpt"):
        load_checkpoint(tmp_path / "other.ckpt")
