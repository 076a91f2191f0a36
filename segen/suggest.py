""""Did you mean ...?" for a mistyped config key. Searched in the one composed config of the
command line's check (segen/precheck.py). Pure and light: no torch, no Hydra."""

from __future__ import annotations

import difflib
from collections.abc import Mapping


def dotted_keys(cfg, prefix: str = "") -> list[str]:
    """Every key of a nested mapping (a DictConfig or dict), as dotted paths, nodes included."""
    keys: list[str] = []
    for key, value in (cfg.items_ex(resolve=False) if hasattr(cfg, "items_ex") else cfg.items()):
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, Mapping) or hasattr(value, "items_ex"):
            keys.extend(dotted_keys(value, f"{path}."))
    return keys


def suggest_key(bad_key: str, cfg) -> str | None:
    """The known key closest to `bad_key` (`trainer.max_epoch` -> `trainer.max_epochs`), or None.

    Keys under the same parent are tried first, so a typo in the last part does not jump to
    another group; then the whole tree.
    """
    keys = dotted_keys(cfg)
    parent = bad_key.rpartition(".")[0]
    siblings = [k for k in keys if k.rpartition(".")[0] == parent]
    for pool in (siblings, keys):
        match = difflib.get_close_matches(bad_key, pool, n=1, cutoff=0.75)
        if match:
            return match[0]
    return None
