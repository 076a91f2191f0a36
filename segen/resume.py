"""`segen train resume=RUN_DIR` / `ckpt=PATH` / `ckpt=last`: continue a run where it stopped.

Resuming is rewritten into plain Hydra overrides before composition: the original run's own
overrides (Hydra records them in `<run>/.hydra/overrides.yaml`) come first, so the same model,
data and settings are composed again; the user's new overrides follow and win; the run
directory is the original one; `ckpt` points at the checkpoint. Light on purpose (no torch);
overrides are read with Hydra's grammar (segen/overrides.py).
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
