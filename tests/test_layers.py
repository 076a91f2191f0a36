"""Dependencies run one way: cli -> commands -> tasks -> (models, data, metrics, evaluation,
outputs) -> (io, viz, errors). A module that imports a layer above it is a design bug; this
reads every import of the lower layers (top-level and inside functions) from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import segen

PACKAGE = Path(segen.__file__).parent
# layer -> the segen packages it must never import
FORBIDDEN = {
    "evaluation": ("segen.tasks", "segen.commands", "segen.cli"),
    "outputs": ("segen.tasks", "segen.commands", "segen.cli"),
    "metrics": ("segen.tasks", "segen.commands", "segen.cli", "segen.evaluation", "segen.outputs"),
    "models": ("segen.tasks", "segen.commands", "segen.cli", "segen.data", "segen.evaluation", "segen.outputs"),
    "data": ("segen.tasks", "segen.commands", "segen.cli", "segen.evaluation", "segen.outputs"),
    "tasks": ("segen.commands", "segen.cli"),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_layer_imports_a_layer_above_it():
    upward = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for name in sorted(imported_modules(path)):
                if name.startswith(forbidden):
                    upward.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert upward == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from segen.tasks.base import Task\n")
    assert "segen.tasks.base" in imported_modules(source)  # so the test above can fail


def test_one_function_restores_a_task_from_a_checkpoint():
    """segen/restore.py restore_task is the only code that loads a checkpoint's state into a
    freshly built task; every caller goes through it."""
    loaders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if 'load_state_dict(ckpt["state_dict"])' in text:
            loaders.append(path.relative_to(PACKAGE).as_posix())
    assert loaders == ["restore.py"]


def test_tasks_draw_but_never_write_pictures_log_to_trackers_or_set_up_data():
    """Per-epoch pictures are segen.callbacks.EpochPictures' to write and log; a task only draws
    them (Task.epoch_picture). Datamodules set themselves up."""
    offenders = []
    for path in sorted((PACKAGE / "tasks").glob("*.py")):
        names = imported_modules(path)
        text = path.read_text()
        if "segen.trackers" in names or "save_grid" in text or ".setup(" in text:
            offenders.append(path.name)
    assert offenders == []
