"""The package ships its configs: a built wheel runs `segen train` from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_and_config_group_is_listed_in_pyproject():
    # A config folder missing from the list still ships (package-data), but setuptools then
    # prints a "would be ignored" banner per folder on every install.
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    found = set(find_packages(str(ROOT), include=["segen", "segen.*"]))
    groups = {"segen.configs." + d.relative_to(ROOT / "configs").as_posix().replace("/", ".") for d in (ROOT / "configs").rglob("*") if d.is_dir()}
    assert found | {"segen.configs"} | groups == listed
    assert set(setuptools_cfg["package-data"]) == {"segen.configs"} | groups


def test_wheel_contains_configs_and_runs_from_elsewhere(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next(wheel_dir.glob("segen-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("segen/configs/") for n in names if n.startswith("segen/configs/") and n.endswith(".yaml")}
    in_repo = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert shipped == in_repo
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)  # what the license field names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import segen.cli, sys; print(segen.cli.__file__); sys.argv=['segen']+sys.argv[1:]; segen.cli.main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "trainer.max_steps=5", "debug=smoke", "test=false",
         "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]"],  # a small net: CPU time
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0].startswith(str(target))  # the installed copy ran
    runs = list((elsewhere / "outputs" / "train").iterdir())
    assert (runs[0] / "checkpoints" / "last.ckpt").is_file()
