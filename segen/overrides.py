"""Command-line overrides read with Hydra's own grammar (`hydra.core.override_parser`).

segen checks some overrides before Hydra runs (unknown choices, value types, run folders,
resume). Reading them with Hydra's parser means every form Hydra accepts (`+key=v`, `~key`,
`++key=v`, quoted values, lists, `choice()`/`range()`/`glob()` sweeps) is understood the same
way here, and a malformed one fails in one line instead of deep inside Hydra.
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override

from segen.errors import ConfigError


def parse(overrides: list[str]) -> list[Override]:
    """Parse overrides with Hydra's grammar; a malformed one is a one-line `ConfigError`."""
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        if "=" not in text and not text.startswith("~"):
            raise ConfigError(f"'{text}' is not an override; write KEY=VALUE (e.g. trainer.max_epochs=3)")
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as err:
            detail = str(err).splitlines()[0]
            raise ConfigError(f"cannot read the override '{text}' ({detail}); see https://hydra.cc/docs/advanced/override_grammar/basic") from None
    return parsed


def override_keys(overrides: list[str]) -> set[str]:
    """The keys (or config groups) that `overrides` set, add or delete."""
    return {o.key_or_group for o in parse(overrides)}


def value_of(overrides: list[str], key: str) -> str | None:
    """The plain value the last override of `key` sets (None if none does, or it is null)."""
    found = None
    for o in parse(overrides):
        if o.key_or_group == key and not o.is_delete() and not o.is_sweep_override():
            value = o.value()
            found = None if value is None else str(value)
    return found


def without_keys(overrides: list[str], keys: tuple[str, ...]) -> list[str]:
    """`overrides` minus those of `keys` (as typed, so Hydra reads the rest unchanged)."""
    return [o.input_line for o in parse(overrides) if o.key_or_group not in keys]


def choice_values(override: Override) -> list[str] | None:
    """The options a config-group override picks (`model=cnn`, `model=cnn,unet`,
    `model=choice(cnn,unet)`), or None when they cannot be listed (glob, interpolation)."""
    if override.is_delete():
        return None
    value = override.value()
    if isinstance(value, Glob):
        return None
    if override.is_sweep_override():
        values = list(override.sweep_string_iterator())
    else:
        values = [value]
    if any(not isinstance(v, str) or "${" in v for v in values if v is not None):
        return None
    return ["null" if v is None else v for v in values]
