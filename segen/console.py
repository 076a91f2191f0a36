"""Rich output: the config tree at start, metric tables at the end."""

from __future__ import annotations

import os
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
    """Whether this process is global rank 0 (or the only one), known before any Trainer exists.

    Only rank 0 prints and writes run files; the other ranks train and stay quiet.
    """
    return all(os.environ.get(name, "0") == "0" for name in _RANK_VARIABLES)


console = Console(quiet=not is_rank_zero())


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


def print_config_tree(cfg, save_to: Path | None = None) -> None:
    """Print the config tree and keep a plain-text copy next to the run's other files."""
    if not is_rank_zero():
        return
    tree = config_tree(cfg)
    console.print(tree)
    if save_to is not None:
        with open(save_to, "w") as f:
            Console(file=f, width=120, color_system=None).print(tree)


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
