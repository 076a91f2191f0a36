"""Rich output: the config tree at start, metric tables at the end."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

# Rank variables set by the launchers segen runs under: torchrun (RANK), Lightning's DDP
# launcher (LOCAL_RANK for ranks > 0 on a node, NODE_RANK for nodes > 0), SLURM (SLURM_PROCID).
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (or the only one). Only rank 0 prints and writes
    run files; the other ranks train and stay quiet.

    Once Lightning is imported, its `rank_zero_only.rank` decides (the Trainer's strategy sets
    it to the global rank); before that (a refusal, the config tree, before torch loads) the
    launchers' variables do, which also covers NODE_RANK that Lightning's import-time guess
    does not read.
    """
    if not all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES):
        return False
    lightning_ranks = sys.modules.get("lightning_utilities.core.rank_zero")
    return lightning_ranks is None or getattr(lightning_ranks.rank_zero_only, "rank", 0) == 0


# Off a terminal (a log file, CI), lines are never wrapped, so printed paths stay copyable.
console = Console(quiet=not is_rank_zero(), soft_wrap=not sys.stdout.isatty())
log = logging.getLogger("segen")  # -> <run dir>/<command>.log (configs/hydra/default.yaml)


def note(text: str, stderr: bool = False) -> None:
    """Print one of segen's own messages (unwrapped) and keep it in the run's log file."""
    if stderr:
        print(text, file=sys.stderr, flush=True)
    else:
        console.print(text, soft_wrap=True, markup=False, highlight=False)
    log.info(text)


def print_unwrapped(renderable) -> None:
    """Print a rich renderable; off a terminal, at whatever width its lines need (a tree or
    table otherwise crops them at 80 columns, and a cropped path is a wrong path)."""
    if console.is_terminal:
        console.print(renderable)
        return
    wide = Console(file=io.StringIO(), width=1000, color_system=None)
    wide.print(renderable)
    for line in wide.file.getvalue().splitlines():
        console.out(line.rstrip(), highlight=False)


def drop_lightning_lines(*texts: str) -> None:
    """Hide Lightning messages (log records or warnings) containing any of `texts`."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(t in record.getMessage() for t in texts)

    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_Drop())
    for text in texts:
        warnings.filterwarnings("ignore", message=f".*{re.escape(text)}.*")


# Lines that say nothing about a run: the accelerator census on a machine without one (a GPU
# run keeps "GPU available: True (cuda), used: True"), the GAN tasks' unused val loader, and
# the count of modules in eval mode at the start of training, which are segen's frozen copies
# by design (the EMA generator, the clusters' encoder, a judge's feature network).
NOISE = ("GPU available: False", "TPU available: False", "HPU available: False",
         "have no `validation_step`", "module(s) in eval mode at the start of training",
         "The dirpath has changed from")  # a copied run folder resuming where it now is (segen/resume.py)


def config_tree(cfg, order: tuple[str, ...] = ("data", "model", "trainer", "callbacks", "logger", "paths")) -> Tree:
    """A rich tree of the composed config, top-level groups first, each as its YAML."""
    from omegaconf import DictConfig, OmegaConf
    from rich.syntax import Syntax

    tree = Tree("config", style="bold")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else f"{value}\n"
        tree.add(f"[bold]{key}").add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    return tree


def _leaves(node, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} for every leaf of a plain (to_container) config."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
        return out
    return {prefix.rstrip("."): node}


def _resolved_leaves(cfg) -> dict[str, object]:
    """`_leaves` with each value resolved on its own: a value that cannot be resolved yet (it
    points at a ??? the data fills) reads as ???, instead of failing the whole tree."""
    from omegaconf import Container, OmegaConf

    out = {}
    for key in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
            out[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
        except Exception:  # missing, or interpolating a missing value
            out[key] = "???"
    return out


def changed_values(cfg, base) -> dict[str, tuple[object, object]]:
    """{key: (value, default)} where `cfg` differs from `base` (`default` is ADDED for new keys);
    keys `base` leaves to the data (???) are not changes."""
    now, before = _resolved_leaves(cfg), _resolved_leaves(base)
    return {k: (v, before.get(k, ADDED)) for k, v in now.items() if before.get(k, ADDED) != v and before.get(k) != "???"}


def run_defaults():
    """The config this job's group choices give without its value overrides (None outside a
    Hydra job): what `changed_values` compares against."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from segen.precheck import COMPOSED

    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    picks = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") in groups]
    composed = COMPOSED.get((hydra_cfg.job.config_name, tuple(picks)))  # the command line's check made it
    return composed if composed is not None else compose(config_name=hydra_cfg.job.config_name, overrides=picks)


ADDED = object()  # the "default" of a key the run added (+key=value)


def _was(default) -> str:
    return "[dim](added)[/]" if default is ADDED else f"[dim](default {_text(default)})[/]"


def _text(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def summary_tree(choices: dict[str, str], changes: dict[str, tuple[object, object]],
                 order: tuple[str, ...] = ("data", "model", "recipe", "trainer", "callbacks", "logger", "perf")) -> Tree:
    """The chosen config groups, each with the values this run changed: a screen, not pages."""
    tree = Tree("[bold]config[/] (chosen groups, and values that differ from their defaults)")
    picked = {k: v for k, v in choices.items() if not k.startswith("hydra") and k != "paths" and v not in (None, "None", "null")}
    for group in sorted(picked, key=lambda g: order.index(g) if g in order else len(order)):
        top = group.split("/")[0].split("@")[0]
        mine = {k: v for k, v in changes.items() if k.split(".")[0] == top}
        node = tree.add(f"[bold]{group}[/]: {picked[group]}")
        for key, (value, default) in mine.items():
            node.add(f"{key.split('.', 1)[1] if '.' in key else key}: {_text(value)}  {_was(default)}")
    tops = {g.split("/")[0].split("@")[0] for g in picked}
    for key, (value, default) in changes.items():
        if key.split(".")[0] not in tops:
            tree.add(f"{key}: {_text(value)}  {_was(default)}")
    return tree


def print_config_tree(cfg, save_to: Path | None = None, choices: dict[str, str] | None = None) -> None:
    """Print the chosen groups and changed values; keep the full tree next to the run's files."""
    if not is_rank_zero():
        return
    if save_to is not None:
        with open(save_to, "w") as f:
            Console(file=f, width=120, color_system=None).print(config_tree(cfg))
    try:
        changes = changed_values(cfg, run_defaults())
    except Exception:  # outside a Hydra job (scripts, tests): the whole tree, as before
        console.print(config_tree(cfg))
        return
    print_unwrapped(summary_tree(choices or {}, changes))
    if save_to is not None:
        note(f"Full config: {save_to} (or segen {cfg.get('command', 'train')} --cfg job)")


def metrics_table(title: str, rows: Mapping[str, Any], names: tuple[str, ...] = ("metric", "value")) -> Table:
    """A table of `{row name: value}`; a tuple value fills one column each (`names[1:]`), None
    leaves its cell empty."""
    table = Table(title=title)
    table.add_column(names[0])
    for name in names[1:]:
        table.add_column(name, justify="right")
    for key, value in rows.items():
        values = value if isinstance(value, tuple) else (value,)
        table.add_row(key, *("" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    return table
