"""The private APIs segen still relies on, each checked by what segen needs it to do, so an
upgrade that moves or changes it fails here with a message naming the place to fix, not
somewhere deep in a run.

Everything else uses public APIs (IoU from torchmetrics' MulticlassConfusionMatrix.compute,
config walks through OmegaConf.to_container, the progress bar's public get_metrics). These
have no public equivalent:
- hydra._internal.utils.get_args_parser (segen/cli.py: Hydra's own flags, parsed as hydra.main will)
- Trainer._logger_connector.should_update_logs (segen/perf.py logging_this_step)
- lightning_fabric's _ExperimentWriter._check_log_dir_exists (segen/loggers.py: metrics.csv kept on resume)
- RichProgressBar._get_train_description (segen/perf.py RichProgressBar: the epoch count under max_steps)
- NoTrainInceptionV3._torch_fidelity_forward (segen/metrics/features.py: pool3 features and logits in one pass)
- torch.cpu._is_avx512_bf16_supported / _is_amx_tile_supported (segen/perf.py cpu_bf16, where /proc/cpuinfo is absent)
"""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from torch import nn


def test_hydra_argument_parser_reads_hydras_flags_as_hydra_main_does():
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError as err:  # pragma: no cover - only on a Hydra upgrade
        raise AssertionError(f"hydra._internal.utils.get_args_parser is gone ({err}); update segen/cli.py run()") from err
    args = get_args_parser().parse_args(["-m", "--cfg", "job", "model=cnn"])
    assert args.multirun and args.cfg == "job" and args.overrides == ["model=cnn"], "Hydra's argument parser changed; update segen/cli.py run()"
    for flag in ("help", "hydra_help", "shell_completion", "info"):
        assert hasattr(args, flag), f"Hydra's parser lost --{flag.replace('_', '-')}; update segen/cli.py run()"


class _Recorder(pl.LightningModule):
    """Logs `train/loss` only on the steps `logging_this_step` says, and records them."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.flags: list[bool] = []

    def training_step(self, batch, batch_idx):
        from segen.perf import logging_this_step

        loss = self.layer(batch[0]).pow(2).mean()
        self.flags.append(logging_this_step(self))
        if self.flags[-1]:
            self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_logging_this_step_is_true_exactly_on_the_steps_lightning_writes(tmp_path):
    from segen.loggers import CSVLogger

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 2)), batch_size=4)
    module = _Recorder()
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    trainer = pl.Trainer(max_epochs=1, log_every_n_steps=3, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(module, data)
    flagged = [i for i, flag in enumerate(module.flags) if flag]
    written = sorted({int(row["step"]) for row in csv.DictReader(open(tmp_path / "metrics.csv")) if row.get("train/loss")})
    assert flagged and flagged == written, (
        f"logging_this_step said {flagged} but Lightning wrote {written}: Trainer._logger_connector.should_update_logs changed; update segen/perf.py"
    )


def test_the_appending_csv_logger_keeps_an_earlier_metrics_csv(tmp_path):
    from segen.loggers import CSVLogger

    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,9,0.5\n")
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"train/loss": 0.25, "epoch": 1.0}, step=19)
    logger.save()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["step"] for r in rows] == ["9", "19"], (
        "the CSV writer no longer goes through ExperimentWriter._check_log_dir_exists; update segen/loggers.py (resume would lose metrics.csv)"
    )


def test_progress_bar_names_the_last_epoch_max_steps_reaches():
    from types import SimpleNamespace

    from segen.perf import RichProgressBar

    progress = SimpleNamespace(current=SimpleNamespace(ready=0, completed=0))
    trainer = SimpleNamespace(global_step=0, max_steps=25, max_epochs=10, num_training_batches=10, accumulate_grad_batches=1,
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
                              lightning_module=SimpleNamespace(automatic_optimization=True), optimizers=[None])
    bar = RichProgressBar()
    bar._trainer = trainer
    bar._epoch_start = (0, 0)
    assert bar._get_train_description(0).strip() == "Epoch 0/2", (
        "RichProgressBar._get_train_description changed; update segen/perf.py RichProgressBar"
    )


@pytest.mark.slow  # a random-weights InceptionV3 (~95 MB) at 299 px
def test_inception_two_layer_forward_gives_pool3_features_and_logits(tmp_path):
    from test_fid import make_random_inception_weights

    from segen.metrics.features import InceptionFeatures

    net = InceptionFeatures(make_random_inception_weights(tmp_path / "weights.pth"))
    features, logits = net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert features.shape == (2, 2048) and logits.shape[0] == 2 and logits.shape[1] >= 1000, (
        "torchmetrics' NoTrainInceptionV3._torch_fidelity_forward changed; update segen/metrics/features.py InceptionFeatures.forward"
    )


def test_cpu_bf16_probe_answers_where_proc_cpuinfo_is_absent(tmp_path):
    from segen.perf import CPU_BF16_ENV, cpu_bf16

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CPU_BF16_ENV, raising=False)
        found = cpu_bf16(cpuinfo=tmp_path / "no_cpuinfo")
    probes = {name: getattr(torch.cpu, probe, None) for name, probe in (("AMX-BF16", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))}
    expected = next((name for name, check in probes.items() if check is not None and check()), None)
    assert found == expected, "torch.cpu's bf16 probes changed; update segen/perf.py cpu_bf16"
