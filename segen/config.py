"""Config plumbing shared by the commands: where configs live, building objects, data binding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segen.errors import ConfigError, IncompatibleError, SegenError


def config_dir() -> Path:
    """The Hydra config folder: `segen/configs` in an installed wheel, `configs/` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"segen's configs are missing: looked in {here / 'configs'} and {here.parent / 'configs'}")


def build(node, what: str, **kwargs: Any):
    """`hydra.utils.instantiate`, with user mistakes in the config turned into one-line errors."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, SegenError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)) or type(cause).__name__ == "MisconfigurationException":
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise ConfigError(f"cannot build {what} ({node.get('_target_')}): {first}; check the {what}.* overrides") from err
        raise


def missing_keys(cfg, prefix: str = "") -> list[str]:
    """Dotted keys whose value is `???`, found without resolving interpolations (which may
    need a running Hydra app, like `${hydra:runtime.cwd}`)."""
    from omegaconf import DictConfig, OmegaConf

    found = []
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not OmegaConf.is_interpolation(cfg, key):
            found += missing_keys(node, f"{prefix}{key}.")
    return found


def bind_data_info(model_cfg, info: dict[str, Any]) -> None:
    """Fill the model config's `???` fields (in_channels, num_classes, ...) from the data.

    Under `model/`, `???` means "comes from the data", so sizes are never typed twice and the
    saved config holds the actual values.
    """
    from omegaconf import OmegaConf, open_dict

    with open_dict(model_cfg):
        for key in missing_keys(model_cfg):
            name = key.rsplit(".", 1)[-1]
            if name not in info:
                raise IncompatibleError(f"model.{key} is required and the data does not provide it; pass model.{key}=VALUE")
            OmegaConf.update(model_cfg, key, info[name], merge=False)
