"""The private APIs segen still relies on, each checked so an upgrade that moves it fails here
with a message naming the place to fix, not somewhere deep in a run.

Everything else uses public APIs (IoU from torchmetrics' MulticlassConfusionMatrix.compute,
config walks through OmegaConf.to_container, the progress bar's public get_metrics). These
have no public equivalent:
"""

from __future__ import annotations

import inspect


def test_hydra_argument_parser_is_where_segen_cli_reads_it():
    # segen/cli.py parses Hydra's own flags (-m, --cfg, --help, ...) exactly as hydra.main will.
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError as err:  # pragma: no cover - only on a Hydra upgrade
        raise AssertionError(f"hydra._internal.utils.get_args_parser is gone ({err}); update segen/cli.py run()") from err
    args = get_args_parser().parse_args(["-m", "--cfg", "job", "model=cnn"])
    assert args.multirun and args.cfg == "job" and args.overrides == ["model=cnn"], "Hydra's argument parser changed; update segen/cli.py run()"
    for flag in ("help", "hydra_help", "shell_completion", "info"):
        assert hasattr(args, flag), f"Hydra's parser lost --{flag.replace('_', '-')}; update segen/cli.py run()"


def test_lightning_logging_cadence_flag_exists():
    # segen/perf.py logging_this_step: training steps log only when Lightning will write logs.
    from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import (
        _LoggerConnector,
    )

    assert isinstance(getattr(_LoggerConnector, "should_update_logs", None), property), (
        "Lightning's _LoggerConnector.should_update_logs moved; update segen/perf.py logging_this_step"
    )
    import pytorch_lightning as pl

    assert "_logger_connector" in inspect.getsource(pl.Trainer.__init__), "Trainer._logger_connector moved; update segen/perf.py"


def test_csv_writer_still_deletes_through_the_hook_segen_overrides():
    # segen/loggers.py: the appending CSV logger replaces the hook that would delete metrics.csv.
    from lightning_fabric.loggers.csv_logs import _ExperimentWriter
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter

    assert issubclass(ExperimentWriter, _ExperimentWriter) and hasattr(ExperimentWriter, "_check_log_dir_exists"), (
        "ExperimentWriter._check_log_dir_exists is gone; update segen/loggers.py"
    )
    assert "_check_log_dir_exists" in inspect.getsource(_ExperimentWriter.__init__), (
        "Lightning's CSV writer no longer calls _check_log_dir_exists on start; update segen/loggers.py (resume would lose metrics.csv)"
    )


def test_progress_bar_description_hook_exists():
    # segen/perf.py RichProgressBar: "Epoch 0/31" becomes the real last epoch under max_steps.
    from pytorch_lightning.callbacks import RichProgressBar

    assert callable(getattr(RichProgressBar, "_get_train_description", None)), (
        "RichProgressBar._get_train_description is gone; update segen/perf.py RichProgressBar"
    )


def test_inception_two_layer_forward_exists():
    # segen/metrics/features.py InceptionFeatures: pool3 features and logits from one pass.
    from torchmetrics.image.fid import NoTrainInceptionV3

    assert callable(getattr(NoTrainInceptionV3, "_torch_fidelity_forward", None)), (
        "torchmetrics' NoTrainInceptionV3._torch_fidelity_forward is gone; update segen/metrics/features.py InceptionFeatures.forward"
    )
