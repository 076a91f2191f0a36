"""The decoded-dataset cache (segen/data/cache.py): where it goes (never into the data folder), what
it holds (the decoded bytes, read back by memory map and by per-batch reads), and that a
read-only data folder trains and is left byte for byte as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from camvid_fixture import make_camvid

import segen.io
from segen.data.cache import CachedDataset, CacheFile, open_cache, split_dataset, write_cache
from segen.data.camvid import CamVidDataModule
from segen.errors import DataError


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory) -> Path:
    return make_camvid(tmp_path_factory.mktemp("camvid"), per_sequence=2, size=(24, 32))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under `root`: its mtime, mode and (files) content digest."""
    state = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        state[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_mode, digest)
    return state


def test_cache_goes_to_the_user_cache_folder_not_the_data_folder(camvid_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGEN_CACHE_DIR", str(tmp_path / "user_cache"))
    before = snapshot(camvid_root)
    dm = CamVidDataModule(str(camvid_root), image_size=(24, 32), test_split="test")  # no cache_dir: the default
    dm.prepare_data()
    dm.setup()
    assert snapshot(camvid_root) == before  # nothing written into the data folder (no .segen_cache)
    files = sorted(p.name for p in (tmp_path / "user_cache" / "data" / "camvid").iterdir())
    assert len(files) == 3 and all(f.endswith(".u8") for f in files), files
    out = capsys.readouterr().out
    assert out.count("Decoding ") == 3 and str(tmp_path / "user_cache" / "data" / "camvid") in out
    again = CamVidDataModule(str(camvid_root), image_size=(24, 32), test_split="test")
    again.setup()
    assert "Decoding" not in capsys.readouterr().out  # said once, when built
    assert torch.equal(again.splits["train"].targets, dm.splits["train"].targets)


def test_cli_default_cache_follows_paths_cache_dir(segen, camvid_root, tmp_path):
    result = segen("train", "model=unet", "data=camvid", f"paths.data_dir={camvid_root}", f"paths.cache_dir={tmp_path / 'c'}",
                   "data.image_size=[24,32]", f"hydra.run.dir={tmp_path / 'run'}", "debug=smoke", "model.net.depth=1", "model.net.base_width=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "c" / "data" / "camvid").glob("*.u8"))) == 3
    assert f"into the cache {tmp_path / 'c' / 'data' / 'camvid'}" in result.stdout


def test_a_read_only_camvid_copy_trains_and_is_left_unchanged(segen, camvid_root, tmp_path):
    data = tmp_path / "ro"
    shutil.copytree(camvid_root, data)
    for path in [data, *data.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # chmod -R a-w
    before = snapshot(data)
    try:
        result = segen("train", "model=unet", "data=camvid", f"paths.data_dir={data}", f"paths.cache_dir={tmp_path / 'c'}",
                       "data.image_size=[24,32]", f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=3", "debug=smoke",
                       "model.net.depth=1", "model.net.base_width=2")
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
        # Tests run as root, where a-w does not stop writes: the tree itself must be unchanged.
        assert snapshot(data) == before
    finally:
        for path in [data, *data.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def test_cache_rows_round_trip_by_map_and_by_reads(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 3, 5, 7), dtype=np.uint8)
    masks = rng.integers(0, 12, size=(9, 5, 7), dtype=np.uint8)
    rows = ({"images": images[i], "masks": masks[i]} if i != 4 else None for i in range(9))  # one left out
    write_cache(tmp_path / "s.u8", {"images": ("uint8", (3, 5, 7)), "masks": ("uint8", (5, 7))}, rows, 9, lambda kept: {"kept": kept})
    cache = CacheFile(tmp_path / "s.u8")
    kept = [0, 1, 2, 3, 5, 6, 7, 8]
    assert len(cache) == 8 and cache.meta["kept"] == kept
    assert np.array_equal(cache.tensor("images").numpy(), images[kept])  # memory-mapped view
    index = [6, 0, 1, 2, 7, 3]  # shuffled, with runs of consecutive rows
    assert np.array_equal(cache.read_rows("images", torch.tensor(index)).numpy(), images[kept][index])
    assert np.array_equal(cache.read_rows("masks", torch.tensor(index)).numpy(), masks[kept][index])
    carved = CachedDataset(cache, "masks", rows=torch.tensor([5, 1]))
    x, y = carved.__getitems__([1, 0])
    assert np.array_equal(x.numpy(), images[kept][[1, 5]]) and np.array_equal(y.numpy(), masks[kept][[1, 5]])
    assert np.array_equal(carved.images.numpy(), images[kept][[5, 1]])
    resident = split_dataset(cache, "masks", in_memory=True)
    assert torch.equal(resident.images, cache.tensor("images")) and torch.equal(resident.targets, cache.tensor("masks"))
    assert [p.name for p in tmp_path.iterdir()] == ["s.u8"]  # no temporary file left


def test_a_truncated_cache_is_rebuilt_not_trusted(camvid_root, tmp_path):
    dm = CamVidDataModule(str(camvid_root), image_size=(24, 32), cache_dir=str(tmp_path))
    path = dm.cache_path("train")
    first = dm.load_cached("train").tensor("images").clone()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert open_cache(path) is None
    again = CamVidDataModule(str(camvid_root), image_size=(24, 32), cache_dir=str(tmp_path))
    assert torch.equal(again.load_cached("train").tensor("images"), first)


def test_an_unwritable_cache_folder_is_one_line_naming_data_cache_dir(camvid_root, tmp_path, monkeypatch):
    def refuse(path, mode="wb"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(segen.io, "atomic_write", refuse)
    dm = CamVidDataModule(str(camvid_root), image_size=(24, 32), cache_dir=str(tmp_path / "locked"))
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    text = str(err.value)
    assert "data.cache_dir=" in text and str(tmp_path / "locked") in text and "\n" not in text
    assert not os.path.exists(tmp_path / "locked" / "camvid") or not any((tmp_path / "locked" / "camvid").iterdir())


def test_reads_larger_than_one_system_call_are_completed(tmp_path, monkeypatch):
    # Linux returns at most ~2 GiB per read: a whole-split load (data.in_memory=true) of a 3 GB
    # cache takes several. Here every read returns at most 100 bytes.
    images = np.random.default_rng(1).integers(0, 256, size=(6, 3, 8, 8), dtype=np.uint8)
    write_cache(tmp_path / "s.u8", {"images": ("uint8", (3, 8, 8))}, ({"images": x} for x in images), 6)
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: real(fd, [buffers[0][:100]], offset))
    assert np.array_equal(CacheFile(tmp_path / "s.u8").load("images").numpy(), images)
