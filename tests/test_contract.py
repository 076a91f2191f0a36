"""The task contract (issue 13): commands ask tasks, data describe themselves in one DataInfo,
model fields are bound from the data by explicit path, overrides follow Hydra's grammar, and
every crash-sensitive file is written atomically."""

from __future__ import annotations

import multiprocessing
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.errors import ConfigError, IncompatibleError
from segen.io import atomic_write

SEGEN = Path(__file__).resolve().parents[1] / "segen"
GUESSES = re.compile(r"issubclass|callable\(getattr|is_overridden|in getattr\(.*requires")


def test_commands_and_metrics_never_guess_what_a_model_is():
    offenders = [
        f"{path.relative_to(SEGEN)}:{n}: {line.strip()}"
        for folder in ("commands", "metrics")
        for path in sorted((SEGEN / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if GUESSES.search(line)
    ]
    assert not offenders, "dispatch through segen.tasks.base.Task instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize("model", ["cnn", "unet", "dcgan", "cgan"])
def test_every_data_dependent_model_field_is_bound_by_full_path(model):
    """Each model config names where its data-dependent fields come from; binding fills exactly
    those, the built model gets them, and the stored config holds the values, not ???."""
    cfg = OmegaConf.create({"model": OmegaConf.load(config_dir() / "model" / f"{model}.yaml")})
    info = DataInfo(name="toy", channels=1, image_size=(28, 28), class_names=tuple("0123456789"), mask_class_names=("bg", "a", "b"))
    bind_data(cfg.model, info)
    binding = cfg.model.from_data
    assert binding, f"{model}.yaml has no from_data"
    for path, field in binding.items():
        assert OmegaConf.select(cfg.model, path) == info.field_value(field)
    assert "???" not in OmegaConf.to_yaml(cfg.model)
    task = build(cfg.model, "model")
    if model == "unet":
        assert task.net.num_classes == 3
    elif model == "cnn":
        assert task.net.num_classes == 10


def test_binding_keeps_explicit_values_and_names_unknown_fields():
    cfg = OmegaConf.create({"net": {"width": "???", "classes": 7}, "from_data": {"net.width": "width", "net.classes": "num_classes"}})
    bind_data(cfg, DataInfo(name="t", channels=3, image_size=(16, 24), class_names=("a", "b")))
    assert cfg.net.width == 24 and cfg.net.classes == 7  # a value set explicitly wins
    bad = OmegaConf.create({"net": {"k": "???"}, "from_data": {"net.k": "colour_depth"}})
    with pytest.raises(ConfigError, match="maps net.k to 'colour_depth', which the data does not describe"):
        bind_data(bad, DataInfo(name="t", channels=3, image_size=(8, 8)))
    unbound = OmegaConf.create({"net": {"k": "???"}})
    with pytest.raises(IncompatibleError, match=r"model.net.k is required and the data does not provide it"):
        bind_data(unbound, DataInfo(name="t", channels=3, image_size=(8, 8)))


def test_data_info_describes_each_shipped_dataset(tmp_path):
    from segen.data.catalog import dataset_targets
    from segen.data.cityscapes import CityscapesDataModule
    from segen.data.shapes import ShapesDataModule

    targets = dataset_targets()
    assert targets["shapes"] == {"labels", "masks"} and targets["mnist"] == {"labels"} and targets["cityscapes"] == {"masks"}
    shapes = ShapesDataModule(channels=1, image_size=24).info
    assert (shapes.channels, shapes.image_size, shapes.num_classes, shapes.num_mask_classes) == (1, (24, 24), 4, 5)
    cs = CityscapesDataModule(data_dir=str(tmp_path), image_size=[32, 64]).info
    assert cs.targets == {"masks"} and cs.num_mask_classes == 19 and cs.palette[0] == (128, 64, 128)
    assert cs.label_ids(torch.tensor([[0, 13]]).numpy()).tolist() == [[7, 26]]  # road, car: official ids
    assert cs.output_name(Path("x/aachen_000001_000019_leftImg8bit.png")) == "aachen_000001_000019"


# -- Hydra's override grammar ---------------------------------------------------------------------
def test_sweep_over_model_choices_runs_every_job(segen, tmp_path):
    result = segen("train", "-m", "model=choice(cnn,unet)", "debug=smoke", "data.num_train=64", "data.num_test=32",
                   "test=false", f"hydra.sweep.dir={tmp_path}", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0", "1"]
    assert (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "1" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "model=choice(cnn,foo)"], "unknown model 'foo'; choose one of: cgan, cnn, dcgan, pix2pix, unet"),
        (["-m", "model=cnn,foo"], "unknown model 'foo'"),
        (["model=cnn", "-m", "debug=smoke"], "unrecognized arguments: debug=smoke; write Hydra flags (-m, --cfg job) before the overrides"),
        (["model=choice(cnn"], "cannot read the override 'model=choice(cnn'"),
        (["trainer.max_epochs"], "'trainer.max_epochs' is not an override"),
    ],
)
def test_bad_overrides_in_hydra_syntax_are_one_line(segen, tmp_path, args, expected):
    result = segen("train", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_add_and_delete_overrides_work_as_in_hydra(segen, tmp_path):
    result = segen("train", "+trainer.detect_anomaly=true", "~logger", "debug=smoke", "data.num_train=64", "data.num_test=32",
                   "test=false", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    stored = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert stored.trainer.detect_anomaly is True and "logger" not in stored
    assert not (tmp_path / "metrics.csv").exists()  # ~logger: no logger at all


# -- atomic writes ----------------------------------------------------------------------------------
def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o044  # readable by others, like open()


def _build_cache(root: str, cache: str, barrier) -> int:
    from segen.data.cityscapes import CityscapesDataModule

    dm = CityscapesDataModule(data_dir=root, image_size=[32, 64], cache_dir=cache)
    barrier.wait()  # both start decoding and writing the same cache files at once
    dm.prepare_data()
    return len(dm.load_cached("train").tensor("images"))


def test_two_first_runs_build_the_same_cache_at_once(tmp_path):
    from cityscapes_fixture import make_cityscapes

    from segen.data.cache import open_cache
    from segen.data.cityscapes import CityscapesDataModule

    root = make_cityscapes(tmp_path / "data", per_city=2, size=(48, 96))
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            counts = pool.starmap(_build_cache, [(str(root), str(cache), barrier)] * 2)
    assert counts == [4, 4]
    files = sorted(p.name for p in (cache / "cityscapes").iterdir())
    assert all(name.endswith(".u8") for name in files), files  # no temporary file left behind
    dm = CityscapesDataModule(data_dir=str(root), image_size=[32, 64], cache_dir=str(cache))
    cached = open_cache(dm.cache_path("train"))
    assert cached.tensor("images").shape == (4, 3, 32, 64) and cached.tensor("masks").shape == (4, 32, 64)
