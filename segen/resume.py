"""`segen train resume=RUN_DIR` / `ckpt=PATH` / `ckpt=last`: continue a run where it stopped.

Resuming is rewritten into plain Hydra overrides before composition: the original run's own
overrides (Hydra records them in `<run>/.hydra/overrides.yaml`) come first, so the same groups
are chosen again; the user's new overrides follow and win; the run directory is the original
one; `ckpt` points at the checkpoint. The run then continues with the resolved config stored in
its checkpoint, not today's files, with only what the resume command changes applied on top
(`resumed_config`). Light on purpose (torch loads only inside `resumed_config`); overrides are
read with Hydra's grammar (segen/overrides.py).
"""

from __future__ import annotations

from pathlib import Path

from segen.errors import CheckpointError
from segen.overrides import value_of as _value
from segen.overrides import without_keys


def resume_overrides(overrides: list[str]) -> list[str]:
    """Expand `resume=`/`ckpt=` for `segen train` into the overrides that continue that run."""
    resume, ckpt = _value(overrides, "resume"), _value(overrides, "ckpt")
    run_dir_arg = _value(overrides, "hydra.run.dir")
    if resume is None and ckpt is None:
        return overrides
    if resume is not None:
        run = Path(resume).expanduser()
        if not run.is_dir():
            raise CheckpointError(f"resume={resume}: no such run directory; pass the folder that holds checkpoints/last.ckpt")
        ckpt_path = run / "checkpoints" / "last.ckpt"
    elif ckpt == "last":
        if run_dir_arg is None:
            raise CheckpointError("ckpt=last needs to know the run; pass resume=RUN_DIR (or hydra.run.dir=RUN_DIR ckpt=last)")
        run = Path(run_dir_arg)
        ckpt_path = run / "checkpoints" / "last.ckpt"
    else:
        ckpt_path = Path(ckpt).expanduser()
        run = ckpt_path.resolve().parent.parent if ckpt_path.parent.name == "checkpoints" else None
    if not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint at {ckpt_path}; the run has not finished an epoch yet, or the path is wrong")
    previous: list[str] = []
    if run is not None and (run / ".hydra" / "overrides.yaml").is_file():
        import yaml

        recorded = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
        previous = without_keys(recorded, ("ckpt", "resume", "hydra.run.dir"))
    current = without_keys(overrides, ("ckpt", "resume"))
    extra = [f"hydra.run.dir={run}"] if run is not None and run_dir_arg is None else []
    return [*previous, *current, *extra, f"ckpt={ckpt_path}"]


# Groups whose files write into the whole config (`# @package _global_`): their effect cannot be
# told apart from the rest once resolved, so they cannot change when a run resumes.
GLOBAL_GROUPS = ("recipe", "experiment", "debug", "hparams_search")
_NOT_SETTINGS = ("ckpt", "resume")


def resumed_config(cfg, ckpt: dict, task_overrides: list[str], groups: set[str]):
    """The config a resumed run continues with: the resolved config stored in its checkpoint,
    with what this command changes applied on top. Returns `(config, choices, changes)`.

    Today's config files only matter where the command changes something: an edited recipe or a
    segen upgrade does not change a resumed run's hyperparameters. A change is a value override
    whose value differs from the stored one (`trainer.max_epochs=20`), or a group choice that
    differs from the stored choice (`logger=tensorboard`: the group's node is taken from today's
    files). The original run's own overrides are composed again (resume_overrides) and so equal
    the stored values: they change nothing.
    """
    from omegaconf import OmegaConf, open_dict

    from segen.checkpoint import checkpoint_config
    from segen.errors import ConfigError
    from segen.overrides import choice_values, parse

    stored, choices = checkpoint_config(ckpt)
    changes: list[str] = []
    parsed = parse(task_overrides)
    deleted = [o.key_or_group for o in parsed if o.is_delete()]
    for override in parsed:
        key = override.key_or_group
        if key in _NOT_SETTINGS or key.startswith("hydra"):
            continue
        if any(key.startswith(f"{d}.") for d in deleted):
            continue  # set by the original run's overrides, then removed by this command's `~`
        if override.is_delete():
            if OmegaConf.select(stored, key, default=None) is not None:
                with open_dict(stored):
                    OmegaConf.update(stored, key, None, force_add=True)
                changes.append(override.input_line)
            continue
        if key in groups:
            values = choice_values(override) or []
            if len(values) == 1 and str(values[0]) == str(choices.get(key)):
                continue  # the run's own choice, composed again
            if key.split("/")[0] in GLOBAL_GROUPS or key not in cfg:
                raise ConfigError(f"{override.input_line}: {key} cannot change when a run resumes (it rewrites the whole stored config); start a new run instead")
            with open_dict(stored):
                stored[key] = OmegaConf.to_container(cfg[key], resolve=True)
            choices[key] = str(values[0]) if values else "null"
            changes.append(override.input_line)
            continue
        new = OmegaConf.select(cfg, key, default=None)
        old = OmegaConf.select(stored, key, default=None)
        if OmegaConf.is_config(new):
            new = OmegaConf.to_container(new, resolve=True)
        if OmegaConf.is_config(old):
            old = OmegaConf.to_container(old, resolve=True)
        if new != old:
            with open_dict(stored):
                OmegaConf.update(stored, key, new, force_add=True)
            changes.append(f"{key}={new} (was {old})")
    stored = _paths_of_this_run(stored, cfg)
    with open_dict(stored):
        stored.ckpt, stored.resume = cfg.get("ckpt"), cfg.get("resume")
    return stored, choices, changes


def _paths_of_this_run(stored, cfg):
    """`paths` say where this run reads and writes, not how it trains: they come from this
    command (a run directory copied or moved elsewhere resumes where it now is, never into the
    folder it was copied from), and every stored value derived from the old run directory
    (checkpoint and logger folders, the trainer's root) follows it."""
    from omegaconf import OmegaConf

    if OmegaConf.select(cfg, "paths") is None:
        return stored
    old_dir = OmegaConf.select(stored, "paths.output_dir", default=None)
    paths = OmegaConf.to_container(cfg.paths, resolve=True)
    new_dir = paths.get("output_dir")
    tree = OmegaConf.to_container(stored, resolve=False)
    tree["paths"] = paths

    def moved(value):
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, str) and old_dir and new_dir and (value == old_dir or value.startswith(f"{old_dir}/")):
            return new_dir + value[len(old_dir):]
        return value

    return OmegaConf.create(moved(tree) if old_dir != new_dir else tree)
