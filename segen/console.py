"""Rich output: the config tree at start, metric tables at the end."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

console = Console()


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
    tree = config_tree(cfg)
    console.print(tree)
    if save_to is not None:
        with open(save_to, "w") as f:
            Console(file=f, width=120, color_system=None).print(tree)


def metrics_table(title: str, rows: Mapping[str, float], names: tuple[str, str] = ("metric", "value")) -> Table:
    table = Table(title=title)
    table.add_column(names[0])
    table.add_column(names[1], justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table
