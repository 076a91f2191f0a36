"""Optional packages: which extra installs each, and a one-line error when one is missing.

Checked before any work starts (cli.py's pre-checks for config choices, the export command for
its format, the tracker loggers when they are built), so a missing package costs one line and
exit code 2, not a traceback halfway through a run.
"""

from __future__ import annotations

import importlib.util

from segen.errors import SegenError

# config choice -> (modules it imports, extra that installs them)
CHOICES: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("logger", "mlflow"): (("mlflow",), "mlflow"),
    ("logger", "wandb"): (("wandb",), "wandb"),
    ("logger", "many"): (("mlflow",), "mlflow"),
    ("hparams_search", "*"): (("optuna", "hydra_plugins.hydra_optuna_sweeper"), "optuna"),
}


class MissingExtraError(SegenError):
    """An optional package that the chosen feature needs is not installed."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing or broken
        return False


def require(modules: tuple[str, ...] | list[str], extra: str, what: str) -> None:
    """Raise MissingExtraError naming the pip command when any of `modules` is not importable."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise MissingExtraError(f"{what} needs packages that are not installed ({', '.join(missing)}); install them with: pip install 'segen[{extra}]'")


def check_choice(group: str, choice: str) -> None:
    """`require` for a config choice (`logger=mlflow`, `hparams_search=cnn_optuna`), if it has
    needs; `null` (`hparams_search=null`: no search) chooses nothing and needs nothing."""
    if choice in ("null", "None", ""):
        return
    needs = CHOICES.get((group, choice)) or CHOICES.get((group, "*"))
    if needs:
        require(needs[0], needs[1], f"{group}={choice}")
