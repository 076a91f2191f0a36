"""Every `segen ...` command in README.md's code blocks is checked by the CLI's own precheck (the
choices, the keys, the value types, the required values), so a renamed key or group breaks this
test before it breaks a reader. Commands that need real data, a GPU or SLURM are composed here,
not run; the ones that run on the built-in shapes data or a fixture run in the other test files
(test_cli, test_sweep, test_trackers, test_folder, test_synthetic_pairs, test_export, ...)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from segen import precheck
from segen.cli import _forced_group_keys
from segen.config import config_dir

README = Path(__file__).resolve().parents[1] / "README.md"
HYDRA_FLAGS = {"-m": 0, "--multirun": 0, "--cfg": 1, "--help": 0, "--hydra-help": 0}  # flag: how many values follow it


def readme_commands() -> list[str]:
    """The README's `segen <command> ...` lines inside ``` blocks, continuation lines joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if re.match(r"segen (train|sample|eval|export)\b", line):
                commands.append(line)
    return commands


PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|\bDATA\b")


def overrides_of(line: str) -> tuple[str, list[str]]:
    """The command and its KEY=VALUE overrides, with the README's placeholders (<run>, DATA, ...)
    made concrete and Hydra's own flags left out."""
    code = line.split(" #")[0]
    tokens = shlex.split(PLACEHOLDER.sub("placeholder", code))
    command, rest, args = tokens[1], tokens[2:], []
    while rest:
        token = rest.pop(0)
        if token in HYDRA_FLAGS:
            del rest[: HYDRA_FLAGS[token]]
            continue
        args.append(token)
    return command, args


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The jobs of a `-m` line: every combination of its comma-separated values, without the
    hydra.* launcher settings (Hydra checks those itself)."""
    jobs = [[]]
    for arg in args:
        if arg.startswith(("hydra.", "hydra/")):
            continue
        key, _, value = arg.partition("=")
        values = value.split(",") if "," in value and not value.startswith(("[", "{", "'", '"')) else [value]
        jobs = [job + [f"{key}={v}"] for job in jobs for v in values]
    return jobs


COMMANDS = readme_commands()


def test_the_readme_has_the_examples_this_test_reads():
    assert len(COMMANDS) >= 35  # a parsing change that loses the code blocks must fail here
    assert COMMANDS[0].split("#")[0].strip() == "segen train" and any(c.startswith("segen train -m hydra/launcher=slurm") for c in COMMANDS)
    assert overrides_of("segen train -m seed=1,2,3 --cfg job  # a sweep") == ("train", ["seed=1,2,3"])
    assert overrides_of("segen eval ckpt=<a run>/best.ckpt paths.data_dir=DATA") == ("eval", ["ckpt=placeholder/best.ckpt", "paths.data_dir=placeholder"])
    assert sweep_jobs(["model=cnn,unet", "seed=1", "hydra.launcher.nodes=2"]) == [["model=cnn", "seed=1"], ["model=unet", "seed=1"]]


@pytest.mark.parametrize("line", COMMANDS)
def test_every_readme_command_passes_the_cli_precheck(line, monkeypatch):
    monkeypatch.setattr(precheck, "check_extras", lambda parsed: None)  # pip extras: the README says to install them
    command, args = overrides_of(line)
    if " -m " not in f"{line} ":
        precheck.check_overrides(_forced_group_keys(args, command), command, config_dir())
        return
    precheck.check_overrides(args, command, config_dir(), compose=False)  # what the CLI checks of a sweep
    for job in sweep_jobs(args):  # and what each of its jobs checks
        precheck.check_overrides(job, command, config_dir())


def test_a_renamed_key_in_a_readme_command_is_caught():
    with pytest.raises(Exception, match="data.cropsize"):
        precheck.check_overrides(["model=unet", "data=camvid", "data.cropsize=3"], "train", config_dir())
