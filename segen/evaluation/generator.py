"""`segen eval` for generators (dcgan, cgan): FID, KID, IS, the confident share (and class consistency).

`n_fake` images from the (EMA) generator are compared with `n_real` real images of `split`
(train by default, as in StudioGAN's and clean-fid's protocols), in feature space of
`eval.features` (Inception, offline weights, or a segen classifier): see configs/eval.yaml and
segen/metrics/. The real features are cached (`paths.cache_dir`); the output says whether this
run hit the cache.

Every score is printed next to what real images get, so that it reads on its own:
- `fid/floor`, `kid/floor/*`: the same distance between two disjoint halves of the real set
  (`eval.floor`); a generator's FID is "bad" only by how far it is above this.
- `confident` (classifier features): the share of generated images whose top class probability
  exceeds `eval.confidence_threshold`, beside `confident/real`, the same share on the real set.
  A collapsed generator can make one confidently classified blob, so read it with the IS
  (`is/real/*`: the real set's, the spread over classes a generator should match) and the FID. Prints a table and writes `metrics.json` with the scores and the protocol
that produced them (sizes, split, feature network and weights sha256, resize mode, seed, time).
`GANTask.evaluate` and `GANTask.check_eval_request` delegate here.
"""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from segen.errors import ConfigError, IncompatibleError
from segen.metrics.cache import real_features
from segen.metrics.features import build_feature_net
from segen.metrics.generative import (
    IS_SPLITS,
    KID_SUBSETS,
    REAL_HALVES,
    REAL_SUBSET,
    real_subset,
    score_generator,
    score_real,
)
from segen.metrics.scores import kid_subset_size
from segen.reports import SPLITS, Evaluation, Table


def _positive_int(ev: DictConfig, key: str, least: int) -> int:
    value = ev.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"eval.{key}={value} must be an integer >= {least}")
    return value


def check_settings(cfg: DictConfig) -> None:
    """Every impossible request fails in one line before a checkpoint or dataset is read."""

    ev = cfg.eval
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not a split; use split=train, val or test (the real images generated ones are compared with)")
    _positive_int(ev, "n_fake", 2)
    _positive_int(ev, "n_real", 2)
    _positive_int(ev, "batch_size", 1)
    threshold = ev.get("confidence_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1):
        raise ConfigError(f"eval.confidence_threshold={threshold} must be a probability in [0, 1) (or null to skip the confident share)")
    if not (ev.fid or ev.kid or ev["is"] or ev.class_consistency or threshold is not None):
        raise ConfigError("eval.fid, eval.kid, eval.is and eval.class_consistency are all false and eval.confidence_threshold is null: nothing to compute")
    if ev.device not in ("auto", "cpu", "cuda") and not str(ev.device).startswith("cuda:"):
        raise ConfigError(f"eval.device={ev.device} is not a device; use auto, cpu or cuda")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"eval.device={name} but no CUDA GPU is visible; use eval.device=cpu")
    return torch.device(name)


def evaluate_generator(task, cfg: DictConfig, datamodule, model: str, data: str) -> Evaluation:
    """FID/KID/IS (and class consistency) of `task`'s sampler against real images of `split`."""
    start = time.time()
    ev = cfg.eval
    device = pick_device(str(ev.device))
    net = build_feature_net(ev.features, ev.classifier_ckpt, ev.inception_weights, ev.download_weights, ev.antialias).to(device)
    info = datamodule.info
    class_names = list(info.class_names)
    consistency = bool(ev.class_consistency) and task.conditional and ev.features == "classifier"
    # Confidence means something for a classifier of this data's classes, not ImageNet's.
    threshold = ev.get("confidence_threshold") if ev.features == "classifier" else None
    threshold = float(threshold) if threshold is not None else None
    probability = net.confidence_probability(threshold) if threshold is not None else None
    notes: list[str] = []
    if ev.features == "classifier":
        if info.channels != net.in_channels:
            raise IncompatibleError(
                f"the classifier takes {net.in_channels}-channel images, the generator makes {info.channels}-channel ones; "
                f"use a classifier trained on {data}"
            )
        if consistency and net.class_names != class_names:
            raise IncompatibleError(
                f"the classifier's classes ({', '.join(net.class_names)}) are not the generator's ({', '.join(class_names)}); "
                f"use a classifier trained on {data}, or eval.class_consistency=false"
            )
        if net.data != data:
            notes.append(f"[yellow]Note:[/] the classifier was trained on {net.data}, the generator on {data}")
    elif ev.class_consistency and task.conditional:
        notes.append("[dim]Class consistency needs a classifier of this dataset: eval.features=classifier eval.classifier_ckpt=...[/]")
    if not (ev.fid or ev.kid or ev["is"] or consistency or threshold is not None):
        raise ConfigError(
            f"nothing to compute: eval.fid, eval.kid and eval.is are false, and class consistency and the confident share "
            f"need eval.features=classifier (class consistency also a cgan) ({model}, {ev.features})"
        )

    datamodule.prepare_data()
    images = datamodule.split_images(cfg.split)
    real = real_subset(images, ev.n_real)
    if len(real) < ev.n_real:
        notes.append(f"[yellow]Note:[/] the {cfg.split} split has {len(images)} images; using all of them as the real set (eval.n_real={ev.n_real})")
    n_real = len(real)

    label = f"{data}-{cfg.split}-{n_real}-{net.name}"
    real_start = time.time()
    cache_dir = cfg.paths.cache_dir if ev.cache else None
    reals = real_features(real, net, cache_dir, label, ev.batch_size, device) if (ev.fid or ev.kid or ev["is"] or threshold is not None) else None
    if reals is not None:
        state = "cache hit" if reals.hit else ("cache miss, computed and saved" if reals.path else "computed (cache off)")
        where = f" ({reals.path})" if reals.path else ""
        notes.append(f"[bold]Real features:[/] {state} in {time.time() - real_start:.2f} s{where}")

    task.to(device)
    scores = score_generator(
        task, net, reals.features if reals is not None else torch.empty(0, net.feature_dim), ev.n_fake, seed=cfg.seed,
        batch_size=ev.batch_size, fid=ev.fid, kid=ev.kid, inception=ev["is"], consistency=consistency,
        class_names=class_names, device=device, confidence_threshold=probability,
    )
    floor = bool(ev.get("floor", True)) and n_real >= 4
    if reals is not None:
        scores.update(score_real(
            reals.features, reals.logits, seed=cfg.seed, fid=floor and ev.fid, kid=floor and ev.kid,
            confidence_threshold=probability, inception=bool(ev["is"]),
        ))
    if ev.get("floor", True) and n_real < 4 and (ev.fid or ev.kid):
        notes.append(f"[yellow]Note:[/] no FID/KID floor: it needs two halves of at least 2 real images, and there are {n_real}")

    tables = [Table(
        f"{model} on {data}: {ev.n_fake} generated vs {n_real} real ({cfg.split}), {net.name} features",
        realism_rows(scores), ("metric", "generated", "real"),
    )]
    if floor and (ev.fid or ev.kid):
        notes.append(
            f"[bold]Real column:[/] the real images' own scores; for FID/KID, between two disjoint halves of the {n_real} "
            f"real images ({n_real // 2} each): the floor a generator is read against"
        )
    if threshold is not None:
        scale = "" if net.label_smoothing == 0 else (
            f" ({threshold} of the {net.top_probability:.4g} its training target gives a class under label smoothing {net.label_smoothing})")
        notes.append(f"[bold]Confident:[/] share of images whose top class probability under the classifier is > {probability:.4g}{scale}")
    per_class = {k.split("/", 1)[1]: v for k, v in scores.items() if k.startswith("class_consistency/")}
    if per_class:
        tables.append(Table("class consistency per class", per_class, ("class", "consistency")))

    protocol = {
        "n_real": n_real,
        "n_fake": ev.n_fake,
        "split": cfg.split,
        "real_subset": "the whole split" if n_real == len(images) else REAL_SUBSET,
        "fake_labels": "balanced: 0, 1, ..., K-1, 0, ..." if task.conditional else None,
        "sampler": "EMA generator" if task.ema_decay is not None else "generator",
        "features": ev.features,
        **net.protocol,
        "kid": {"subsets": KID_SUBSETS, "subset_size": kid_subset_size(n_real, ev.n_fake), "kernel": "(x.y / d + 1)^3"} if ev.kid else None,
        "is_splits": min(IS_SPLITS, ev.n_fake) if ev["is"] else None,
        "floor": {"real_halves": REAL_HALVES, "n_each": n_real // 2} if floor and (ev.fid or ev.kid) else None,
        "confidence_threshold": threshold,
        "confidence_probability": probability,  # threshold x the judge's top_probability
        "seed": cfg.seed,
        "real_features_cache": {"hit": reals.hit, "path": str(reals.path) if reals.path else None} if reals is not None else None,
        "device": str(device),
        "scoring_s": round(time.time() - start, 3),
    }
    notes_after = f"[bold]Protocol:[/] {net.protocol['feature_extractor']}; resize {net.protocol['resize']}; weights sha256 {net.protocol['weights_sha256'][:16]}...; seed {cfg.seed}"
    # split/num_images: the real images read, as every metrics.json states them (protocol: the rest).
    return Evaluation(scores, tables, {"split": cfg.split, "num_images": n_real, "protocol": protocol}, [*notes, notes_after])


# A generated-side metric -> the real-side metric printed beside it.
REAL_SIDE = {
    "confident": "confident/real", "fid": "fid/floor", "kid/mean": "kid/floor/mean", "kid/std": "kid/floor/std",
    "is/mean": "is/real/mean", "is/std": "is/real/std",
}


def realism_rows(scores: dict[str, float]) -> dict[str, tuple[float | None, float | None]]:
    """`{metric: (generated, real)}` for the printed table; the real side is None where there is none."""
    real_keys = set(REAL_SIDE.values())
    return {
        key: (value, scores.get(REAL_SIDE.get(key, "")))
        for key, value in scores.items()
        if key not in real_keys and not key.startswith("class_consistency/")
    }
