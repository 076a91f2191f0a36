"""The `segen` command: `segen train|sample|eval [hydra overrides...]`.

The subcommand picks the root config (`configs/<command>.yaml`); every other argument goes to
Hydra unchanged, so sweeps (`-m`), `--cfg job` and run directories work as in any Hydra app.
`--help` and `--version` import neither torch nor Hydra, so they answer at once. Overrides
are checked before anything heavy loads, so a typo costs a one-line error, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from segen import __version__

COMMANDS = {
    "train": "train a model (default: cnn on the built-in shapes data)",
    "sample": "generated images (dcgan, cgan), masks (unet), photos from label maps (pix2pix), classes (cnn): segen sample ckpt=PATH",
    "eval": "evaluate a checkpoint on a split: segen eval ckpt=PATH",
    "export": "write a checkpoint's network as ONNX or TorchScript: segen export ckpt=PATH format=onnx",
}
MODULES = {"train": "train", "sample": "sample", "eval": "evaluate", "export": "export"}
EXAMPLES = (
    "segen train                                  # cnn on shapes, no download needed",
    "segen train model=cnn data=cifar10 trainer=gpu",
    "segen eval ckpt=outputs/train/<run>/checkpoints/best.ckpt",
)
HIDDEN_GROUPS = ("hydra",)


def config_choices(cfg_dir: Path) -> dict[str, list[str]]:
    """Every config group under `cfg_dir` and its choices, read from the files."""
    from segen.precheck import config_choices as read_choices

    return read_choices(cfg_dir, HIDDEN_GROUPS)


def _config_dir() -> Path:
    from segen.config import config_dir

    return config_dir()


def default_choices(cfg_dir: Path, command: str = "train") -> dict[str, str]:
    import yaml

    defaults = (yaml.safe_load((cfg_dir / f"{command}.yaml").read_text()) or {}).get("defaults", [])
    return {k: v for item in defaults if isinstance(item, dict) for k, v in item.items() if isinstance(v, str) and "$" not in v}


def help_text() -> str:
    cfg_dir = _config_dir()
    defaults = default_choices(cfg_dir)
    lines = [f"segen {__version__}: train, sample and evaluate image models for segmentation and generation", ""]
    lines += [f"usage: segen {{{','.join(COMMANDS)}}} [hydra flags: -m, --cfg job, ...] [KEY=VALUE ...]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "config groups (pick with GROUP=CHOICE; * = default of `segen train`):"]
    for group, names in config_choices(cfg_dir).items():
        shown = [f"{n}*" if defaults.get(group) == n else n for n in names]
        lines.append(f"  {group:<10} {', '.join(shown)}")
    lines += ["", "examples:"] + [f"  {e}" for e in EXAMPLES]
    lines += ["", "Any config value can be overridden (trainer.max_epochs=3); `segen train --cfg job` shows them all."]
    return "\n".join(lines)


def fail(message: str, command: str | None = None) -> None:
    """Print one line to stderr and exit 2: the contract for every user mistake."""
    prefix = f"segen {command}" if command else "segen"
    print(f"{prefix}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


def _forced_group_keys(overrides: list[str], command: str) -> list[str]:
    """For sample/eval, `data.x=v` edits the checkpoint's config, whose keys this command's root
    config cannot know in advance; `++` lets Hydra accept them, and `restore` checks them."""
    if command == "train":
        return overrides
    from segen.overrides import parse

    edits = {o.input_line for o in parse(overrides) if o.type.name == "CHANGE" and o.key_or_group.startswith(("data.", "model."))}
    return [f"++{o}" if o in edits else o for o in overrides]


# Set while a job runs, so the processes Lightning starts for ranks > 0 know they re-run a job
# that rank 0 has already checked (and expanded, for resume=).
RELAUNCH_ENV = "SEGEN_RELAUNCHED_JOB"
_HYDRA_SWEEP_KEYS = ("hydra.mode", "hydra.run.dir", "hydra.sweep", "hydra.launcher", "hydra/launcher", "hydra.sweeper", "hydra/sweeper")


@contextlib.contextmanager
def relaunchable_job(command: str, entry: str):
    """While one Hydra job runs, make `sys.argv` the command that re-runs exactly that job.

    Lightning's DDP launcher starts ranks > 0 as `python <sys.argv[0]> <sys.argv[1:]>`, or
    `python -m <module> <sys.argv[1:]>` under `python -m`, then appends `hydra.run.dir=<run.dir>`
    and `hydra.output_subdir=null`. During the job, sys.argv therefore reads
    `<segen script> <command> <this job's overrides>`: a runnable command (not the "segen train"
    label Hydra's usage line shows), single-run even inside a sweep (a `-m` would make every rank
    start the whole sweep again), with this job's folder as run.dir (in a sweep, run.dir is the
    unused single-run pattern). Afterwards the process is reset for the next job of a sweep:
    sys.argv, the environment (Lightning leaves LOCAL_RANK/WORLD_SIZE/MASTER_PORT behind, which
    would make the next job wait for ranks that never come) and the process group.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    from segen.overrides import parse

    hydra_cfg = HydraConfig.get()
    carried = [o.input_line for o in parse(list(hydra_cfg.overrides.hydra)) if not o.key_or_group.startswith(_HYDRA_SWEEP_KEYS)]
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = [entry, command, *hydra_cfg.overrides.task, *carried]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    os.environ[RELAUNCH_ENV] = "1"
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        torch_dist = sys.modules.get("torch.distributed")
        if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}
# What a job writes before it does any work: the config and hyperparameters it was given, and
# the folders its loggers open (a TensorBoard event file, W&B's offline run) before a metric.
SETUP_FILES = {"hparams.yaml"}
LOGGER_FOLDERS = {"tensorboard", "wandb"}


def existing_run_paths(overrides: list[str], command: str) -> set[Path]:
    """The run directory this job may use and its parents that exist before Hydra creates any of
    them: `remove_refused_run` never deletes these."""
    value = next((o.partition("=")[2] for o in overrides if o.startswith("hydra.run.dir=")), None)
    run = Path(value).expanduser().absolute() if value and "$" not in value else Path.cwd() / "outputs" / command / "_"
    return {p for p in (run, *run.parents) if p.exists()}


def only_setup_records(run_dir: Path) -> bool:
    """Whether a run directory holds nothing but what a job writes before it does any work:
    Hydra's record (`.hydra/`), logs (`train.log`, `config_tree.log`), `hparams.yaml` and the
    folders loggers open (without a checkpoint in them)."""
    for entry in run_dir.iterdir():
        if entry.is_dir() and entry.name == ".hydra":
            if not {f.name for f in entry.iterdir()} <= HYDRA_FILES:
                return False
        elif entry.is_dir() and entry.name in LOGGER_FOLDERS:
            if any(p.suffix == ".ckpt" for p in entry.rglob("*")):
                return False
        elif not (entry.is_file() and (entry.suffix == ".log" or entry.name in SETUP_FILES)):
            return False  # a checkpoint, metrics, samples, or anything else the job made
    return True


def remove_refused_run(run_dir: Path, keep: set[Path]) -> None:
    """After a refused job (a SegenError), remove the run directory Hydra made for it if it holds
    only setup records (`only_setup_records`): a refusal, wherever in setup it happens, leaves
    nothing in outputs/. A folder that existed before, or holds anything the job produced, is
    left alone; so are parents that existed."""
    run_dir = run_dir.absolute()
    if run_dir in keep or not run_dir.is_dir() or not only_setup_records(run_dir):
        return
    import shutil

    shutil.rmtree(run_dir)
    for parent in run_dir.parents:  # outputs/<command>/ made for this run alone
        if parent in keep or any(parent.iterdir()):
            break
        parent.rmdir()


def flag_hint(message: str, argv: list[str], cfg_dir: Path, command: str) -> str:
    """The fix for an argument argparse refused: `--ckpt X` is the config key `ckpt=X` (every
    segen option is a key=value override); other flags belong before the overrides."""
    if "unrecognized arguments" not in message:
        return ""
    import yaml

    root = yaml.safe_load((cfg_dir / f"{command}.yaml").read_text()) or {}
    groups = config_choices(cfg_dir)
    for i, arg in enumerate(argv):
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        key = name.replace("-", "_")
        if key and (key in root or key in groups):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "VALUE")
            return f"; segen options are key=value overrides: write {key}={value}, not {arg}"
    return "; write Hydra flags (-m, --cfg job) before the overrides"


def run(command: str, argv: list[str]) -> None:
    import importlib

    import hydra
    from hydra._internal.utils import get_args_parser

    cfg_dir = _config_dir()
    entry = os.path.abspath(sys.argv[0])  # the `segen` script: what DDP ranks > 0 re-run
    parser = get_args_parser()

    def one_line(message: str):  # argparse would print its whole usage block
        fail(f"{message}{flag_hint(message, argv, cfg_dir, command)}", command)

    parser.error = one_line
    args = parser.parse_args(argv)
    # A DDP rank > 0 re-runs overrides that rank 0 has already checked and expanded.
    relaunched = os.environ.get(RELAUNCH_ENV) == "1"
    if command == "train" and not args.multirun and not relaunched:
        from segen.errors import SegenError
        from segen.resume import resume_overrides

        try:
            expanded = resume_overrides(args.overrides)
        except SegenError as err:
            fail(str(err), command)
        if expanded != args.overrides:
            argv = [a for a in argv if a not in args.overrides] + expanded
            args.overrides = expanded
    from segen.errors import SegenError

    try:
        overrides = _forced_group_keys(args.overrides, command)
        if not relaunched:  # one composition, checked with OmegaConf's own machinery (segen/precheck.py)
            from segen.precheck import check_overrides

            whole = not (args.multirun or args.help or args.hydra_help or args.shell_completion or args.info)
            check_overrides(overrides, command, cfg_dir, compose=whole)
    except SegenError as err:
        fail(str(err), command)
    as_typed = dict(zip(args.overrides, overrides, strict=True))
    argv = [as_typed.get(a, a) for a in argv]

    module = importlib.import_module(f"segen.commands.{MODULES[command]}")
    keep = existing_run_paths(args.overrides, command)

    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        from segen.errors import SegenError

        try:
            with relaunchable_job(command, entry):
                return module.main(cfg)
        except SegenError as err:
            if not args.multirun and not relaunched:
                remove_refused_run(Path(HydraConfig.get().runtime.output_dir), keep)
            fail(str(err), command)

    sys.argv = [f"segen {command}", *argv]
    hydra.main(config_path=str(cfg_dir), config_name=command, version_base="1.3")(task)()


def main(argv: list[str] | None = None) -> None:
    from segen.threads import configure_threads

    configure_threads()  # OpenMP's wait policy, before torch loads
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text())
        raise SystemExit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        print(f"segen {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{command}'; choose one of: {', '.join(COMMANDS)} (see segen --help)")
    run(command, rest)


if __name__ == "__main__":
    main()
