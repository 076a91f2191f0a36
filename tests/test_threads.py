"""Runs on one machine share its cores (segen/threads.py, perf.threads): counted by live locks."""

import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from segen.errors import ConfigError
from segen.perf import PerformanceKnobs
from segen.threads import CoreShare


def test_each_live_run_counts_and_an_ended_or_dead_one_stops_counting(tmp_path):
    a = CoreShare(tmp_path, cores=4)
    assert (a.runs(), a.threads()) == (1, 4)
    b = CoreShare(tmp_path, cores=4)
    assert (a.runs(), a.threads(), b.threads()) == (2, 2, 2)
    c = CoreShare(tmp_path, cores=4)
    assert (a.threads(), c.threads()) == (1, 1)  # 4 // 3, never below one
    b.close()
    c.close()
    assert (a.runs(), a.threads()) == (1, 4)
    (tmp_path / "12345-0.lock").write_text("")  # left by a run that ended without removing it
    assert a.runs() == 1 and not (tmp_path / "12345-0.lock").exists()
    a.close()
    assert list(tmp_path.iterdir()) == []


def test_a_run_killed_by_sigkill_stops_counting(tmp_path):
    a = CoreShare(tmp_path, cores=2)
    child = subprocess.Popen(
        [sys.executable, "-c", f"from segen.threads import CoreShare; c = CoreShare({str(tmp_path)!r}); print('claimed', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "claimed"
        assert (a.runs(), a.threads()) == (2, 1)
    finally:
        child.kill()
        child.wait()
    assert (a.runs(), a.threads()) == (1, 2)
    a.close()


class _CPUTrainer:
    accelerator = pl.accelerators.CPUAccelerator()


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_callback_takes_its_share_beside_another_run_and_the_rest_when_it_ends(tmp_path, monkeypatch, torch_threads, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SEGEN_CORE_SHARE_DIR", str(tmp_path))
    other = CoreShare(tmp_path)  # another segen run training on this machine
    torch.set_num_threads(4)  # torch's default on a 4-core machine: the cores to share
    knobs = PerformanceKnobs(threads=None)
    knobs.setup(_CPUTrainer(), torch.nn.Linear(2, 2), "fit")
    assert torch.get_num_threads() == 2
    assert "Threads: 2 of 4 cores (2 segen runs share this machine" in " ".join(capsys.readouterr().out.split())
    other.close()
    knobs._next_count = 0.0  # the next batch re-counts (normally after RECOUNT_S seconds)
    knobs.on_train_batch_start(None, None, None, 0)
    assert torch.get_num_threads() == 4
    knobs._share.close()


def test_omp_num_threads_or_perf_threads_win(tmp_path, monkeypatch, torch_threads):
    monkeypatch.setenv("SEGEN_CORE_SHARE_DIR", str(tmp_path))
    other = CoreShare(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    knobs = PerformanceKnobs()
    knobs.setup(_CPUTrainer(), torch.nn.Linear(2, 2), "fit")
    assert knobs._share is None and sorted(p.suffix for p in tmp_path.iterdir()) == [".lock"]
    monkeypatch.delenv("OMP_NUM_THREADS")
    PerformanceKnobs(threads=1).setup(_CPUTrainer(), torch.nn.Linear(2, 2), "fit")
    assert torch.get_num_threads() == 1 and len(list(tmp_path.iterdir())) == 1
    other.close()
    with pytest.raises(ConfigError, match="perf.threads must be a positive whole number"):
        PerformanceKnobs(threads=0)
