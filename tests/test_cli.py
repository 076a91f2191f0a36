"""The `segen` command line: help, version, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segen.cli import config_choices
from segen.config import config_dir


def test_help_lists_commands_every_choice_and_examples(segen):
    result = segen("--help")
    assert result.returncode == 0
    out = result.stdout
    assert "usage: segen {train,sample,eval,export}" in out
    for command in ("train", "sample", "eval", "export"):
        assert f"\n  {command} " in out
    for group, names in config_choices(config_dir()).items():
        line = next(row for row in out.splitlines() if row.strip().startswith(group + " "))
        for name in names:
            assert name in line, (group, name)
    assert out.count("segen train") + out.count("segen eval") >= 3  # the examples
    sample = next(row for row in out.splitlines() if row.strip().startswith("sample "))
    assert all(kind in sample for kind in ("dcgan", "cgan", "unet", "pix2pix"))


def test_help_and_version_import_no_torch():
    code = (
        "import sys, io, contextlib\n"
        "from segen.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "    main(['--version'])\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'hydra') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version(segen):
    from segen import __version__

    result = segen("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"segen {__version__}"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["bogus"], "unknown command 'bogus'; choose one of: train, sample, eval"),
        (["train", "model=foo"], "unknown model 'foo'; choose one of: cgan, cnn, dcgan, pix2pix, unet"),
        (["train", "-m", "data=shapes,nope"], "unknown data 'nope'; choose one of:"),
        (["train", "trainer=tpu"], "unknown trainer 'tpu'; choose one of: cpu, ddp, ddp_cpu, default, gpu"),
        (["train", "trainer.nonsense=1"], "unknown config key 'trainer.nonsense'"),
        (["train", "max_epochs"], "'max_epochs' is not an override; write KEY=VALUE"),
        (["eval"], "missing required value ckpt; pass ckpt=..."),
        (["sample"], "missing required value ckpt"),
        (["eval", "ckpt=/no/such/file.ckpt"], "checkpoint /no/such/file.ckpt does not exist"),
        (["train", "resume=/no/such/run"], "/no/such/run"),
        (["eval", "--ckpt", "x.ckpt"], "segen options are key=value overrides: write ckpt=x.ckpt, not --ckpt"),
        (["train", "--model=unet"], "write model=unet, not --model=unet"),
        # Refused later in setup, after the config tree, the loggers and hparams.yaml are written:
        (["train", "data=mnist", "data.download=false"], "MNIST not found in"),
        (["train", "model=unet", "data=mnist", "paths.data_dir={mnist}"], "unet"),
        (["train", "model=cgan", "data=mnist", "paths.data_dir={mnist}", "data.val_split=5000"], "data.val_split=5000 leaves no training"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(segen, tmp_path, mnist_root, args, expected):
    args = [a.replace("{mnist}", str(mnist_root)) for a in args]
    result = segen(*args, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path) if args[0] != "bogus" else segen(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    # Wherever in setup the refusal came, it leaves nothing: no run directory, no outputs/.
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_val_split_is_a_count_a_fraction_or_the_least_of_a_list():
    from omegaconf import OmegaConf

    from segen.data.in_memory import carve_validation, validation_count

    default = OmegaConf.load(config_dir() / "data" / "mnist.yaml").val_split
    assert validation_count(60_000, default) == 5000  # full MNIST keeps its 55k / 5k split
    assert validation_count(4_000, default) == 400  # a smaller copy is not refused
    assert validation_count(4_000, 0.25) == 1000 and validation_count(4_000, 300) == 300
    train, val = carve_validation(4_000, default, seed=0)
    assert len(val) == 400 and len(train) == 3_600 and not set(train.tolist()) & set(val.tolist())


def test_valid_choices_pass_the_check(segen, tmp_path):
    result = segen("train", "data=mnist", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "segen.data.mnist.MNISTDataModule" in result.stdout
    # The per-pair recipe was applied (cnn_mnist: 1,000 steps of 128, whatever the copy's size).
    assert "max_steps: 1000" in result.stdout and "max_epochs: null" in result.stdout


def test_packaged_config_listing_is_read_from_files():
    groups = config_choices(config_dir())
    assert {"model", "data", "trainer", "callbacks", "logger", "paths", "experiment", "debug"} <= set(groups)
    for group, names in groups.items():
        for name in names:
            assert (config_dir() / group / f"{name}.yaml").is_file()
    assert "hydra" not in groups
    assert Path(config_dir(), "train.yaml").is_file()


def test_hparams_search_null_needs_no_optuna(monkeypatch):
    import segen.extras as extras

    monkeypatch.setattr(extras, "installed", lambda module: False)  # as if no optional package were there
    extras.check_choice("hparams_search", "null")  # no search: nothing to install
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'segen\[optuna\]'"):
        extras.check_choice("hparams_search", "cnn_optuna")


def test_the_check_composes_the_config_once_and_reads_no_hydra_message(monkeypatch):
    """Unknown keys, wrong types and `+`/`~` mistakes are found with OmegaConf's struct mode and
    typed nodes on one composition; "did you mean" searches that same composition."""
    import hydra

    from segen import precheck
    from segen.errors import ConfigError

    calls = []
    real = hydra.compose
    monkeypatch.setattr(hydra, "compose", lambda *a, **k: calls.append(k.get("overrides")) or real(*a, **k))
    precheck.COMPOSED.clear()
    cases = {
        "trainer.max_epoch=3": "unknown config key 'trainer.max_epoch' (did you mean trainer.max_epochs?)",
        "trainer.max_epochs=abc": "trainer.max_epochs=abc: trainer.max_epochs must be an integer (its default is 4)",
        "+trainer.max_epochs=3": "trainer.max_epochs already exists; use trainer.max_epochs=VALUE (no +)",
        "~trainer.nothing": "there is no trainer.nothing to delete",
    }
    for bad, text in cases.items():
        with pytest.raises(ConfigError) as err:
            precheck.check_overrides(["model=cnn", "trainer.max_epochs=2", bad], "train", config_dir())
        assert text in str(err.value)
    precheck.check_overrides(["model=cnn", "trainer.max_epochs=2", "+trainer.new_key=1", "~trainer.gradient_clip_val"], "train", config_dir())
    assert calls == [["model=cnn"]]  # one composition, of the group choices, for all five commands
