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
    """`hydra.utils.instantiate`, with user mistakes in the config turned into one-line errors.

    A model config's `from_data` binding is config plumbing, not an argument: it is left out.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig) and BINDING_KEY in node:
        container = OmegaConf.to_container(node, resolve=True)  # resolved against the whole config
        container.pop(BINDING_KEY)
        node = OmegaConf.create(container)
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
    from omegaconf import OmegaConf

    def walk(node, path: str) -> list[str]:
        if isinstance(node, dict):
            return [k for key, value in node.items() for k in walk(value, f"{path}{key}.")]
        return [path[:-1]] if node == "???" else []

    return walk(OmegaConf.to_container(cfg, resolve=False), prefix)


BINDING_KEY = "from_data"  # in a model config: {model field path: DataInfo field}
_UNSET = object()


def bind_data(model_cfg, info) -> None:
    """Fill the model config's data-dependent fields from the data, as its `from_data` says.

    A model config names, by full path, which of its fields come from which `DataInfo` field
    (`net.num_classes: num_mask_classes`); those fields hold `???` until here, so sizes are
    never typed twice and the saved config holds the actual values. A value the user set
    explicitly is kept.
    """
    from omegaconf import OmegaConf, open_dict

    binding = model_cfg.get(BINDING_KEY)
    binding = OmegaConf.to_container(binding) if binding is not None else {}
    with open_dict(model_cfg):
        for path, field in binding.items():
            if OmegaConf.select(model_cfg, path, default=_UNSET) is not _UNSET:
                continue  # set in the config or by an override: kept
            try:
                value = info.field_value(field)
            except KeyError:
                raise ConfigError(f"model.{BINDING_KEY} maps {path} to '{field}', which the data does not describe; use one of: {', '.join(DATA_FIELDS)}") from None
            OmegaConf.update(model_cfg, path, value, merge=False)
    left = [k for k in missing_keys(model_cfg) if not k.startswith(f"{BINDING_KEY}.")]
    if left:
        raise IncompatibleError(f"model.{left[0]} is required and the data does not provide it; pass model.{left[0]}=VALUE")


DATA_FIELDS = ("channels", "image_size", "height", "width", "num_classes", "num_mask_classes", "class_names", "mask_class_names", "ignore_index")
