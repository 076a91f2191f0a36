"""DDP on CPU (gloo, 2 processes): the real CLI, data sharding, and metrics equal to one process.

Metric exactness: accuracy and per-class IoU use the metric objects of segen's tasks; FID/KID use
torchmetrics' FrechetInceptionDistance/KernelInceptionDistance with a tiny feature extractor
(`feature=<nn.Module>`), because segen/metrics/ (segen's own FID) did not exist yet when this
was written; once it does, its metric objects belong in `_compute_metrics` too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from segen.data.in_memory import IGNORE_INDEX, InMemoryImageDataModule

TINY_CNN = ["model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]"]
TINY_UNET = ["model.net.depth=2", "model.net.base_width=8"]
TINY_DATA = ["debug=smoke", "data.num_train=256", "data.num_test=64", "data.batch_size=16"]


# -- the real CLI ------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["cnn", pytest.param("unet", marks=pytest.mark.slow)])
def test_ddp_cpu_trains_into_one_run_directory(segen, tmp_path, model):
    tiny = TINY_CNN if model == "cnn" else TINY_UNET
    result = segen("train", "trainer=ddp_cpu", "trainer.devices=2", f"model={model}", "data=shapes", *TINY_DATA, *tiny, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out  # two processes really ran
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1, runs  # one folder per run, not one per rank
    run = runs[0]
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert (run / "config_tree.log").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran as a job of the same folder
    # Only rank 0 prints: one config tree, one summary line, one test table.
    assert result.stdout.count("Run directory:") == 1
    assert result.stdout.count("config (chosen groups") == 1
    assert result.stdout.count("Test metric") == 1
    # Epoch values read from a synced metric's compute() are logged as synced (Task.log_reduced).
    assert "It is recommended to use `self.log(" not in out


# -- sharding: each rank a distinct part of every epoch --------------------------------------
class IndexedData(InMemoryImageDataModule):
    """22 one-pixel images whose label is their index, so batches say which images they hold."""

    num_classes, channels, image_size, class_names = 22, 1, 1, [str(i) for i in range(22)]

    def load_split(self, train: bool) -> dict[str, torch.Tensor]:
        n = 22 if train else 4
        return {"images": torch.zeros(n, 1, 1, 1, dtype=torch.uint8), "labels": torch.arange(n)}


class RecordIndices(pl.LightningModule):
    def __init__(self, out_dir: str):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.out_dir = out_dir
        self.seen: dict[str, list[int]] = {}

    def _record(self, stage: str, labels: torch.Tensor) -> None:
        self.seen.setdefault(f"{stage}/{self.current_epoch}", []).extend(labels.tolist())

    def training_step(self, batch, batch_idx):
        self._record("train", batch[1])
        return (self.weight * batch[0].sum()).sum() + self.weight.square().sum()

    def validation_step(self, batch, batch_idx):
        self._record("val", batch[1])

    def on_fit_end(self):
        Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def teardown(self, stage):
        # Lightning leaves a ddp_spawn worker's process group alive when the worker exits; once
        # in a loaded CI run gloo's exit-time teardown then aborted rank 1 ("terminate called
        # without an active exception", SIGABRT). Destroy it first, as segen/cli.py does.
        if dist.is_initialized():
            dist.destroy_process_group()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ranks_see_disjoint_shards_and_every_val_image_once(tmp_path):
    # 22 images, val_split=7: 15 train (odd: Lightning pads one), 7 val (odd: ranks get 4 and 3).
    data = IndexedData(batch_size=4, val_split=7, split_seed=0)
    trainer = pl.Trainer(
        accelerator="cpu", strategy="ddp_spawn", devices=2, max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(RecordIndices(str(tmp_path)), datamodule=data)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    data.setup()
    train_ids = set(data.splits["train"].targets.tolist())
    val_ids = sorted(data.splits["val"].targets.tolist())
    for epoch in range(2):
        a, b = (r[f"train/{epoch}"] for r in ranks)
        assert len(a) == len(b) == 8  # ceil(15 / 2) each, two full batches of 4
        assert set(a) | set(b) == train_ids  # nothing dropped
        assert len(set(a) & set(b)) == 1 and len(a + b) - len(set(a + b)) == 1  # the one padding image
        assert sorted(ranks[0][f"val/{epoch}"] + ranks[1][f"val/{epoch}"]) == val_ids  # each once
    assert ranks[0]["train/0"] != ranks[0]["train/1"]  # a fresh shuffle every epoch


# -- metrics: 2 processes == 1 process -----------------------------------------------------------
class Stub(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes


class TinyFeatures(nn.Module):
    """A fixed random projection of per-channel mean and std: 8 features per image."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, self.num_features)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(8, 6, generator=torch.Generator().manual_seed(0)))
            self.proj.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        return self.proj(torch.cat([x.mean((2, 3)), x.std((2, 3))], 1))


BATCH_SIZES = (6, 6, 6, 6, 6, 4)


def _make_batches(sizes: tuple[int, ...] = BATCH_SIZES) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    batches = []
    for n in sizes:
        masks = torch.randint(0, 4, (n, 8, 8), generator=g)
        masks[torch.rand(masks.shape, generator=g) < 0.1] = IGNORE_INDEX
        batches.append({
            "logits": torch.randn(n, 5, generator=g),
            "labels": torch.randint(0, 5, (n,), generator=g),
            "seg_pred": torch.randint(0, 4, (n, 8, 8), generator=g),
            "masks": masks,
            "real": torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
            "fake": torch.randint(0, 200, (n, 3, 8, 8), dtype=torch.uint8, generator=g),
        })
    return batches


def _compute_metrics(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Update segen's metric objects with `batches` and compute (synced across ranks under DDP)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from segen.tasks.classification import ClassificationTask
    from segen.tasks.segmentation import SegmentationTask, iou_from_confmat

    cls = ClassificationTask(Stub(5), optimizer=None)
    seg = SegmentationTask(Stub(4), optimizer=None)
    fid = FrechetInceptionDistance(feature=TinyFeatures())
    # One subset of every image: the MMD estimate is then independent of the order of features
    # (ranks gather them in another order than one process stores them).
    kid = KernelInceptionDistance(feature=TinyFeatures(), subsets=1, subset_size=sum(BATCH_SIZES))
    for b in batches:
        cls.val_acc.update(b["logits"], b["labels"])
        cls.test_class_acc.update(b["logits"], b["labels"])
        seg.val_confmat.update(b["seg_pred"], b["masks"])
        for metric in (fid, kid):
            metric.update(b["real"], real=True)
            metric.update(b["fake"], real=False)
    confmat = seg.val_confmat.compute()  # summed over ranks
    out = {"acc": cls.val_acc.compute(), "class_acc": cls.test_class_acc.compute(), "confmat": confmat}
    out.update({f"seg_{k}": v for k, v in iou_from_confmat(confmat).items()})
    with fid.sync_context(should_sync=True, should_unsync=True):  # the summed states compute() sees
        out.update({f"fid_state/{k}": getattr(fid, k).clone() for k in fid._defaults})
    with kid.sync_context(should_sync=True, should_unsync=True):
        out.update({f"kid_state/{k}": torch.cat(getattr(kid, k)) for k in kid._defaults})
    out["fid"] = fid.compute()
    torch.manual_seed(0)  # KID draws its (here: one, complete) subset at random
    out["kid_mean"], out["kid_std"] = kid.compute()
    return out


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    batches = _make_batches()
    # Contiguous shards of unequal size (18 and 16 images), like an evaluation split dealt out
    # unpadded, in the same number of update() calls: KID's list states (dist_reduce_fx=None)
    # are gathered one update at a time, so ranks with more updates than others would deadlock.
    mine = batches[:3] if rank == 0 else batches[3:]
    results = _compute_metrics(mine)
    if rank == 0:
        torch.save(results, out_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def metrics_1_and_2_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp_metrics")
    mp.spawn(_worker, args=(2, str(folder / "init"), str(folder / "out.pt")), nprocs=2, join=True)
    return _compute_metrics(_make_batches()), torch.load(folder / "out.pt")


def test_accuracy_is_exact_across_ranks(metrics_1_and_2_processes):
    single, ddp = metrics_1_and_2_processes
    assert torch.equal(single["acc"], ddp["acc"])
    assert torch.equal(single["class_acc"], ddp["class_acc"])


def test_per_class_iou_is_exact_across_ranks(metrics_1_and_2_processes):
    single, ddp = metrics_1_and_2_processes
    assert torch.equal(single["confmat"], ddp["confmat"])
    assert torch.equal(single["seg_iou"], ddp["seg_iou"]) and torch.equal(single["seg_miou"], ddp["seg_miou"])
    assert torch.equal(single["seg_pixel_acc"], ddp["seg_pixel_acc"])


def _rows_sorted(features: torch.Tensor) -> torch.Tensor:
    return features[features[:, 0].argsort()]


def test_fid_and_kid_states_match_across_ranks(metrics_1_and_2_processes):
    single, ddp = metrics_1_and_2_processes
    states = [k for k in single if "_state/" in k]
    assert states and set(states) == {k for k in ddp if "_state/" in k}
    for key in states:
        if key.startswith("kid_state/"):  # the same feature rows, gathered in another order
            assert torch.equal(_rows_sorted(single[key]), _rows_sorted(ddp[key])), key
        else:  # float64 sums, added in another order
            torch.testing.assert_close(single[key], ddp[key], rtol=1e-12, atol=1e-12, msg=key)
    torch.testing.assert_close(single["fid"], ddp["fid"], rtol=1e-6, atol=1e-8)
    # The KID states are the same rows (checked above); KID sums float32 kernel values over them
    # in the gathered order, which moves the last digits (3e-6 relative seen with torch 2.15).
    torch.testing.assert_close(single["kid_mean"], ddp["kid_mean"], rtol=2e-5, atol=1e-8)
    torch.testing.assert_close(single["kid_std"], ddp["kid_std"])
