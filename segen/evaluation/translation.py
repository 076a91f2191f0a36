"""`segen eval` for pix2pix: the FCN-score of Isola et al. (2017, sec. 4.2), with segen's own segmenter.

The generator translates every label map of the split (`split=`, as for segmenters; dropout
noise from `seed=`). A segmenter trained on the same data (`eval.segmenter_ckpt`, a
`segen train model=unet` checkpoint) then labels the generated images and the real photos of
the same label maps; each set is scored against the input label maps with one confusion matrix
over the whole split (void pixels ignored, as cityscapesScripts does): per-pixel accuracy,
per-class (mean class) accuracy, mIoU and per-class IoU. The two rows are printed side by side
with their ratio: a perfect generator scores what real photos score, ratio 1.

Also, against the real photos of the same label maps: L1 (mean absolute error in [0, 1] pixel
units), PSNR and SSIM (torchmetrics, per image, averaged), and FID/KID in the feature space of
`eval.features` (Inception from a local weights file, or `segmenter`: the segmenter's pooled
bottleneck). `metrics.json` records the protocol: split, resolution, n, seed, the segmenter's
checkpoint and its sha256.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from segen.errors import ConfigError, IncompatibleError, SegenError
from segen.metrics.features import (
    build_feature_net,
    default_inception_weights,
    extract,
    file_sha256,
    inception_weights,
    slices,
)
from segen.metrics.generative import KID_SUBSETS
from segen.metrics.iou import iou_from_confmat
from segen.metrics.scores import frechet_distance, kernel_distance, kid_subset_size
from segen.overrides import override_keys
from segen.reports import SPLITS, Evaluation, Table
from segen.viz import to_uint8

FEATURES = ("inception", "segmenter")


def _features_asked() -> bool:
    """Whether `eval.features=` was given on the command line (not the config's default)."""
    from hydra.core.hydra_config import HydraConfig

    return "eval.features" in override_keys(HydraConfig.get().overrides.task)


def check_request(cfg: DictConfig) -> None:
    """Every impossible request fails in one line before the model or data are loaded."""
    ev = cfg.eval
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not a split; use split=test, split=val or split=train")
    if ev.features not in FEATURES:
        raise ConfigError(f"eval.features={ev.features} does not apply to pix2pix; use eval.features=inception or eval.features=segmenter")
    if ev.features == "segmenter" and not ev.get("segmenter_ckpt"):
        raise ConfigError("eval.features=segmenter needs eval.segmenter_ckpt=<checkpoint of `segen train model=unet` on the same data>")
    if ev.features == "inception" and _features_asked():
        try:  # missing weights: one line, now, with the offline choice that applies to pix2pix
            inception_weights(ev.inception_weights, ev.download_weights)
        except SegenError:
            where = ev.inception_weights or default_inception_weights()
            raise ConfigError(
                f"eval.features=inception needs Inception weights at {where}; pass eval.inception_weights=PATH or "
                "eval.download_weights=true, or score offline with eval.features=segmenter eval.segmenter_ckpt=<unet ckpt>"
            ) from None
    size = ev.get("max_images")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 2):
        raise ConfigError(f"eval.max_images={size} must be an integer >= 2, or null for the whole split")
    if not isinstance(ev.batch_size, int) or ev.batch_size < 1:
        raise ConfigError(f"eval.batch_size={ev.batch_size} must be an integer >= 1")


def load_segmenter(path: str, info, data: str):
    """(task, datamodule, sha256) of a segmenter checkpoint whose mask classes are `info`'s."""
    from segen.checkpoint import checkpoint_config, load_checkpoint
    from segen.restore import restore_task, task_class

    path = Path(path).expanduser()
    ckpt = load_checkpoint(path)
    run_cfg, stored = checkpoint_config(ckpt)
    if not task_class(run_cfg.model).segments:
        raise IncompatibleError(
            f"eval.segmenter_ckpt={path} holds a {stored.get('model')} model, which does not segment images; "
            f"pass a checkpoint of `segen train model=unet data={data}`"
        )
    _, seg_task, seg_dm = restore_task(ckpt, run_cfg, stored)
    theirs, ours = seg_dm.info.mask_class_names, info.mask_class_names
    if theirs != ours:
        raise IncompatibleError(
            f"eval.segmenter_ckpt={path} segments {len(theirs)} classes of {stored.get('data')} ({', '.join(theirs[:4])}, ...), "
            f"but these label maps have the {len(ours)} classes of {data} ({', '.join(ours[:4])}, ...); pass a segmenter trained on {data}"
        )
    return seg_task, seg_dm, stored.get("data"), file_sha256(path)


def confusion(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """One confusion matrix (rows truth, columns prediction) over every non-void pixel."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(predicted.flatten(), truth.long().flatten(), num_classes, ignore_index=ignore_index).long()


def fcn_scores(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pixel accuracy, per-class (mean class) accuracy, mIoU and per-class IoU of a confusion
    matrix; classes absent from truth and prediction are NaN and left out of the means."""

    scores = iou_from_confmat(confmat)
    confmat = confmat.double()
    truth = confmat.sum(1)
    class_acc = torch.where(truth > 0, confmat.diag() / truth.clamp(min=1), torch.full_like(truth, float("nan")))
    present = truth > 0
    scores["class_acc"] = class_acc[present].mean() if present.any() else torch.tensor(float("nan"), dtype=torch.float64)
    return scores


def image_similarity(fake: torch.Tensor, real: torch.Tensor, batch_size: int) -> dict[str, float]:
    """L1 (in [0, 1] units), PSNR (dB) and SSIM of uint8 generated vs real images, per image, averaged."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    l1, psnr, ssim = [], [], []
    for start in range(0, len(fake), batch_size):
        f = fake[start : start + batch_size].float() / 255
        r = real[start : start + batch_size].float() / 255
        l1.append((f - r).abs().mean(dim=(1, 2, 3)))
        psnr.append(peak_signal_noise_ratio(f, r, data_range=1.0, dim=(1, 2, 3), reduction="none"))
        ssim.append(structural_similarity_index_measure(f, r, data_range=1.0, reduction="none"))
    return {name: float(torch.cat(v).mean()) for name, v in (("l1", l1), ("psnr", psnr), ("ssim", ssim))}


def split_pairs(datamodule, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 photos `(N, C, H, W)` and train-id label maps `(N, H, W)` of a split, at the data's size."""
    datamodule.prepare_data()
    images, masks = datamodule.split_masks(split)
    return (images[:limit], masks[:limit]) if limit else (images, masks)


def evaluate_translation(task, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
    """The FCN-score (with `eval.segmenter_ckpt`), L1/PSNR/SSIM and FID/KID of `task` on `split=`."""
    from segen.evaluation.generator import pick_device

    start = time.time()
    ev, split = cfg.eval, cfg.split
    device = pick_device(str(ev.device))
    info = datamodule.info
    segmenter = load_segmenter(ev.segmenter_ckpt, info, data) if ev.get("segmenter_ckpt") else None
    real, masks = split_pairs(datamodule, split, ev.get("max_images"))
    n = len(real)
    if n < 2:
        raise ConfigError(f"the {split} split has {n} image(s); scoring needs at least 2")

    task.to(device)
    fake = to_uint8(task.translate(masks, seed=int(cfg.seed), batch_size=int(ev.batch_size)))
    scores: dict[str, float] = {f"{split}/{k}": v for k, v in image_similarity(fake, real, int(ev.batch_size)).items()}
    notes: list[str] = []
    tables: list[Table] = []
    h, w = info.image_size
    protocol: dict = {
        "split": split,
        "n": n,
        "resolution": f"{h}x{w}",
        "seed": cfg.seed,
        "sampler": "EMA generator" if task.ema_decay is not None else "generator",
        "noise": "dropout on (as in the paper), drawn from seed",
        "l1": "mean |generated - real| over pixels and channels, images in [0, 1]",
        "psnr_ssim": "torchmetrics, data_range 1, per image, averaged",
    }

    if segmenter is not None:
        seg_task, seg_dm, seg_data, sha = segmenter
        seg_task.to(device)
        k = info.num_mask_classes
        rows = {}
        for which, images in (("generated", fake), ("real", real)):
            predicted = seg_task.predict_masks(images, seg_dm, batch_size=int(ev.batch_size))
            result = fcn_scores(confusion(predicted, masks, k, info.ignore_index))
            rows[which] = result
            scores[f"{split}/fcn/{which}/pixel_acc"] = float(result["pixel_acc"])
            scores[f"{split}/fcn/{which}/class_acc"] = float(result["class_acc"])
            scores[f"{split}/fcn/{which}/miou"] = float(result["miou"])
            for name, value in zip(info.mask_class_names, result["iou"].tolist(), strict=True):
                scores[f"{split}/fcn/{which}/iou/{name}"] = value
        table_rows = {}
        for key, label in (("pixel_acc", "per-pixel acc."), ("class_acc", "per-class acc."), ("miou", "class IOU (mIoU)")):
            g, r = scores[f"{split}/fcn/generated/{key}"], scores[f"{split}/fcn/real/{key}"]
            ratio = g / r if r else float("nan")
            scores[f"{split}/fcn/ratio/{key}"] = ratio
            table_rows[label] = (g, r, ratio)
        for i, name in enumerate(info.mask_class_names):
            g, r = float(rows["generated"]["iou"][i]), float(rows["real"]["iou"][i])
            table_rows[f"IoU {name}"] = (g, r, g / r if r == r and r else None)
        tables.append(Table(
            f"{model} on {data}: FCN-score, {n} {split} label maps at {h}x{w} (segmenter trained on {seg_data})",
            table_rows, ("metric", "generated", "real", "generated/real"),
        ))
        protocol["segmenter"] = {
            "ckpt": str(Path(ev.segmenter_ckpt).expanduser().absolute()),
            "sha256": sha,
            "data": seg_data,
            "input": f"images resized to the segmenter's {seg_dm.info.height}x{seg_dm.info.width}, predictions back to {h}x{w}",
            "scoring": "one confusion matrix over the split, void ignored; mean over classes present in truth or prediction",
        }
    else:
        notes.append(
            f"[yellow]FCN-score not computed:[/] pass eval.segmenter_ckpt=<checkpoint of `segen train model=unet data={data}`> "
            "to score the generated images with a segmenter (generated vs real photos)"
        )

    fid_rows = fid_and_kid(fake, real, ev, segmenter, device, scores, split, protocol, notes)
    similarity = {"L1 (0-1 units)": scores[f"{split}/l1"], "PSNR (dB)": scores[f"{split}/psnr"], "SSIM": scores[f"{split}/ssim"], **fid_rows}
    tables.append(Table(f"{model} on {data}: generated vs real images ({n} {split} pairs)", similarity))
    protocol["scoring_s"] = round(time.time() - start, 3)
    return Evaluation(scores, tables, {"split": split, "num_images": n, "protocol": protocol}, notes)


def fid_and_kid(fake, real, ev, segmenter, device, scores, split, protocol, notes) -> dict[str, float]:
    """FID/KID of the generated vs the real images in `eval.features` space; with default
    Inception features and no weights file, a note instead (the FCN-score needs none)."""
    if not (ev.fid or ev.kid):
        return {}
    if ev.features == "segmenter":
        seg_task, seg_dm, _, sha = segmenter
        feats = [torch.cat([seg_task.mask_features(b, seg_dm) for b in slices(x, int(ev.batch_size))]) for x in (real, fake)]
        protocol["features"] = {"net": "segmenter bottleneck, average-pooled", "weights_sha256": sha}
    else:
        try:
            net = build_feature_net("inception", None, ev.inception_weights, ev.download_weights, ev.antialias).to(device)
        except SegenError:
            where = ev.inception_weights or default_inception_weights()
            notes.append(
                f"[yellow]FID/KID skipped:[/] no Inception weights at {where}; pass eval.inception_weights=PATH "
                "(see `segen eval` for generators), or eval.features=segmenter with eval.segmenter_ckpt"
            )
            return {}
        feats = [extract(net, slices(x, int(ev.batch_size)), device)[0] for x in (real, fake)]
        protocol["features"] = net.protocol
    rows = {}
    if ev.fid:
        scores[f"{split}/fid"] = rows["FID"] = frechet_distance(*feats)
    if ev.kid:
        size = kid_subset_size(len(feats[0]), len(feats[1]))
        mean, std = kernel_distance(*feats, subsets=KID_SUBSETS, subset_size=size)
        scores[f"{split}/kid/mean"], scores[f"{split}/kid/std"] = mean, std
        rows["KID (mean)"], rows["KID (std)"] = mean, std
        protocol["kid"] = {"subsets": KID_SUBSETS, "subset_size": size}
    protocol["fid_kid_features"] = ev.features
    return rows
