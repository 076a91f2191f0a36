""""Did you mean ...?" for a mistyped config key. Pure and light: no torch, no Hydra."""

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


def did_you_mean(bad_key: str, cfg_dir, command: str, overrides: list[str]) -> str:
    """' (did you mean KEY?)' for the CLI's unknown-key error, composing the config without
    the bad override; '' when nothing is close or the rest does not compose either."""
    from hydra import compose, initialize_config_dir

    rest = [o for o in overrides if o.lstrip("+~").partition("=")[0] != bad_key]
    try:
        with initialize_config_dir(config_dir=str(cfg_dir), version_base="1.3", job_name=command):
            cfg = compose(config_name=command, overrides=rest)
    except Exception:  # the message without a suggestion is still right
        return ""
    match = suggest_key(bad_key, cfg)
    return f" (did you mean {match}?)" if match else ""
