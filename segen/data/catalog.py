"""Which datasets segen ships, read from `configs/data/` (for messages such as "choose a dataset
with masks: shapes, cityscapes"). Only the classes are imported; no data is touched."""

from __future__ import annotations

import yaml

from segen.config import config_dir


def dataset_targets() -> dict[str, frozenset[str]]:
    """`{data config name: the targets its datamodule serves}`, in file order."""
    from hydra.utils import get_class

    found = {}
    for path in sorted((config_dir() / "data").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if target:
            found[path.stem] = get_class(target).targets
    return found


def datasets_with(target: str) -> list[str]:
    return [name for name, targets in dataset_targets().items() if target in targets]
