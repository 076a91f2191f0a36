"""Overrides checked before anything heavy loads, against one composition of the config.

The config is composed once, with the command line's group choices only; every value override
is then applied to a typed copy of it with OmegaConf's own machinery: struct mode refuses a key
that does not exist (its `full_key` names it, and "did you mean" searches the same composed
config), and a leaf whose default is a bool, an int or a float is an OmegaConf typed node that
refuses a value of another type. No Hydra message text is read. Each mistake is one line
(`SegenError`), before torch is imported. The composition is kept for the job, which shows the
values that differ from it (segen/console.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from segen.errors import ConfigError, SegenError

# The group-choice composition of the last check in this process: (command, choices) -> config.
COMPOSED: dict[tuple[str, tuple[str, ...]], object] = {}


def config_choices(cfg_dir: Path, hidden: tuple[str, ...] = ("hydra",)) -> dict[str, list[str]]:
    """Every config group under `cfg_dir` and its choices, read from the files."""
    groups: dict[str, list[str]] = {}
    for path in sorted(cfg_dir.rglob("*.yaml")):
        group = path.parent.relative_to(cfg_dir).as_posix()
        if group != "." and group.split("/")[0] not in hidden:
            groups.setdefault(group, []).append(path.stem)
    return groups


def check_choices(parsed, groups: dict[str, list[str]]) -> None:
    """Reject `group=unknown` with the valid choices, also inside sweeps (`model=cnn,foo`,
    `model=choice(cnn,foo)`)."""
    from segen.overrides import choice_values

    for override in parsed:
        key = override.key_or_group
        for choice in (choice_values(override) if key in groups else None) or ():
            if choice not in groups[key] and choice != "null":
                raise ConfigError(f"unknown {key} '{choice}'; choose one of: {', '.join(groups[key])}")


def check_launcher(parsed) -> None:
    """`hydra/launcher=slurm` (and submitit_local/submitit_slurm) need an optional plugin."""
    import importlib.util

    for override in parsed:
        value = str(override.value())
        if override.key_or_group == "hydra/launcher" and (value == "slurm" or value.startswith("submitit")):
            if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
                raise ConfigError(f"hydra/launcher={value} needs Hydra's submitit launcher; install it with: pip install 'segen[slurm]'")


def check_extras(parsed) -> None:
    """A choice that needs an optional package (logger=mlflow, hparams_search=...) fails here,
    naming the extra to install, before anything loads (segen/extras.py lists them)."""
    from segen.extras import check_choice
    from segen.overrides import choice_values

    for override in parsed:
        for choice in choice_values(override) or ():
            check_choice(override.key_or_group, str(choice))


def check_run_dir(parsed) -> None:
    """A run directory that cannot be created fails before anything runs or is written."""
    for override in parsed:
        key, value = override.key_or_group, override.value()
        if key in ("hydra.run.dir", "hydra.sweep.dir") and isinstance(value, str) and "$" not in value:
            path = Path(value).expanduser().absolute()
            existing = next(p for p in (path, *path.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                raise ConfigError(f"cannot create the run directory {path} ({existing} is not a writable folder); pass {key}=<a writable folder>")


def compose_choices(cfg_dir: Path, command: str, selections: list[str]):
    """The config the group choices give, before any value override (composed once per check)."""
    from hydra import compose, initialize_config_dir

    key = (command, tuple(selections))
    if key not in COMPOSED:
        with initialize_config_dir(config_dir=str(cfg_dir), version_base="1.3", job_name=command):
            COMPOSED[key] = compose(config_name=command, overrides=selections)
    return COMPOSED[key]


def typed_copy(cfg):
    """`cfg` in struct mode, with each bool/int/float leaf an OmegaConf typed node: assigning a
    value of another type then raises ValidationError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode

    def typed(value):
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, bool):
            return BooleanNode(value)
        if isinstance(value, int):
            return IntegerNode(value)
        if isinstance(value, float):
            return FloatNode(value)
        return value

    copy = OmegaConf.create(typed(OmegaConf.to_container(cfg, resolve=False)))
    OmegaConf.set_struct(copy, True)
    return copy


def _type_name(default) -> str:
    """What a typed leaf takes, from its default (the type `typed_copy` gave it)."""
    return "true or false" if isinstance(default, bool) else "an integer" if isinstance(default, int) else "a number"


def apply_overrides(typed, base, parsed, groups: dict[str, list[str]], command: str) -> None:
    """Apply the value overrides to `typed` as Hydra would; the first impossible one is a
    one-line ConfigError (unknown key, wrong type, `+` on an existing key, `~` of a missing one)."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    from segen.suggest import suggest_key

    for override in parsed:
        key = override.key_or_group
        if key in groups or key.startswith("hydra.") or override.is_sweep_override():
            continue
        exists = OmegaConf.select(typed, key, default=_ABSENT, throw_on_resolution_failure=False) is not _ABSENT
        kind = override.type.name
        if override.is_delete():
            if not exists:
                raise ConfigError(f"{override.input_line}: there is no {key} to delete; check the spelling with `segen {command} --cfg job`")
            parent, _, leaf = key.rpartition(".")
            with open_dict(typed):
                del (OmegaConf.select(typed, parent) if parent else typed)[leaf]
            continue
        if kind == "ADD" and exists:
            raise ConfigError(f"{override.input_line}: {key} already exists; use {key}=VALUE (no +) to change an existing key")
        value = override.value()
        try:
            if kind in ("ADD", "FORCE_ADD"):
                with open_dict(typed):
                    OmegaConf.update(typed, key, value, merge=False, force_add=True)
            else:
                OmegaConf.update(typed, key, value, merge=False)
        except (ConfigAttributeError, ConfigKeyError):
            match = suggest_key(key, base)
            hint = f" (did you mean {match}?)" if match else ""
            raise ConfigError(
                f"unknown config key '{key}'{hint}; check the spelling with `segen {command} --cfg job`, or add a new key with +{key}=VALUE"
            ) from None
        except ValidationError:
            default = OmegaConf.select(base, key, default=None, throw_on_resolution_failure=False)
            raise ConfigError(f"{override.input_line}: {key} must be {_type_name(default)} (its default is {default})") from None


_ABSENT = object()


def check_overrides(overrides: list[str], command: str, cfg_dir: Path, compose: bool = True) -> None:
    """Every check of the command line, in the order a user would fix them; raises ConfigError
    (or another SegenError) with the one line to print."""
    from segen.config import missing_keys
    from segen.overrides import parse

    parsed = parse(overrides)
    groups = config_choices(cfg_dir)
    check_choices(parsed, groups)
    check_launcher(parsed)
    check_extras(parsed)
    check_run_dir(parsed)
    if not compose:
        return
    selections = [o.input_line for o in parsed if o.key_or_group in groups]
    try:
        base = compose_choices(cfg_dir, command, selections)
    except SegenError:
        raise
    except Exception as err:  # a choice that composes badly (a broken config file): still one line
        raise ConfigError(f"the config does not compose with {' '.join(selections) or 'the defaults'}: {type(err).__name__}") from None
    typed = typed_copy(base)
    apply_overrides(typed, base, parsed, groups, command)
    # Under model/, ??? means "filled from the data"; anywhere else it is a value the user owes.
    missing = [k for k in missing_keys(typed) if not k.startswith("model.")]
    if missing:
        raise ConfigError(f"missing required value{'s' if len(missing) > 1 else ''} {', '.join(missing)}; pass {' '.join(f'{k}=...' for k in missing)}")
