"""`segen eval ckpt=<dcgan|cgan checkpoint>`: FID, KID, IS (and class consistency) of a generator.

`n_fake` images from the (EMA) generator are compared with `n_real` real images of `eval.split`
(train by default, as in StudioGAN's and clean-fid's protocols), in feature space of
`eval.features` (Inception, offline weights, or a segen classifier): see configs/eval.yaml and
segen/metrics/. The real features are cached (`paths.cache_dir`); the output says whether this
run hit the cache. Prints a table and writes `metrics.json` with the scores and the protocol
that produced them (sizes, split, feature network and weights sha256, resize mode, seed, time).
"""

from __future__ import annotations

import json
import time

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from segen.commands.common import quiet_lightning, restore, run_dir
from segen.console import console, metrics_table
from segen.errors import ConfigError, IncompatibleError
from segen.metrics.cache import real_features
from segen.metrics.features import build_feature_net
from segen.metrics.generative import (
    IS_SPLITS,
    KID_SUBSETS,
    REAL_SUBSET,
    real_subset,
    score_generator,
)
from segen.metrics.scores import kid_subset_size

SPLITS = ("train", "val", "test")


def handles(ckpt_path: str) -> bool:
    """True when the checkpoint holds a generator (a `GANTask`), which this module evaluates."""
    from hydra.utils import get_class

    from segen.checkpoint import checkpoint_config, load_checkpoint
    from segen.tasks.gan import GANTask

    run_cfg, _ = checkpoint_config(load_checkpoint(ckpt_path))
    task_cls = get_class(run_cfg.model._target_)
    return isinstance(task_cls, type) and issubclass(task_cls, GANTask)


def _positive_int(ev: DictConfig, key: str, least: int) -> int:
    value = ev.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"eval.{key}={value} must be an integer >= {least}")
    return value


def check_settings(cfg: DictConfig) -> None:
    """Every impossible request fails in one line before a checkpoint or dataset is read."""
    from hydra.core.hydra_config import HydraConfig

    ev = cfg.eval
    if any(o.split("=", 1)[0] == "split" for o in HydraConfig.get().overrides.task):
        raise ConfigError(f"split= picks the split that classifiers and segmenters are scored on; for a generator, pick the real images with eval.split={cfg.split}")
    if ev.split not in SPLITS:
        raise ConfigError(f"eval.split={ev.split} is not a split; use eval.split=train, val or test")
    _positive_int(ev, "n_fake", 2)
    _positive_int(ev, "n_real", 2)
    _positive_int(ev, "batch_size", 1)
    if not (ev.fid or ev.kid or ev["is"] or ev.class_consistency):
        raise ConfigError("eval.fid, eval.kid, eval.is and eval.class_consistency are all false: nothing to compute")
    if ev.device not in ("auto", "cpu", "cuda") and not str(ev.device).startswith("cuda:"):
        raise ConfigError(f"eval.device={ev.device} is not a device; use auto, cpu or cuda")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"eval.device={name} but no CUDA GPU is visible; use eval.device=cpu")
    return torch.device(name)


def main(cfg: DictConfig) -> dict[str, float]:
    start = time.time()
    check_settings(cfg)
    ev = cfg.eval
    quiet_lightning()
    pl.seed_everything(cfg.seed, verbose=False)
    device = pick_device(str(ev.device))

    # The feature network first: missing Inception weights fail before any data is loaded.
    net = build_feature_net(ev.features, ev.classifier_ckpt, ev.inception_weights, ev.download_weights, ev.antialias).to(device)
    run_cfg, task, datamodule = restore(cfg)
    model, data = run_cfg.choices.get("model"), run_cfg.choices.get("data")
    class_names = list(getattr(datamodule, "class_names", []) or [])
    consistency = bool(ev.class_consistency) and task.conditional and ev.features == "classifier"
    if ev.features == "classifier":
        channels = task.generator.channels
        if channels != net.in_channels:
            raise IncompatibleError(
                f"the classifier takes {net.in_channels}-channel images, the generator makes {channels}-channel ones; "
                f"use a classifier trained on {data}"
            )
        if consistency and net.class_names != class_names:
            raise IncompatibleError(
                f"the classifier's classes ({', '.join(net.class_names)}) are not the generator's ({', '.join(class_names)}); "
                f"use a classifier trained on {data}, or eval.class_consistency=false"
            )
        if net.data != data:
            console.print(f"[yellow]Note:[/] the classifier was trained on {net.data}, the generator on {data}")
    elif ev.class_consistency and task.conditional:
        console.print("[dim]Class consistency needs a classifier of this dataset: eval.features=classifier eval.classifier_ckpt=...[/]")
    if not (ev.fid or ev.kid or ev["is"] or consistency):
        raise ConfigError(f"nothing to compute: eval.fid, eval.kid and eval.is are false, and class consistency needs a cgan and eval.features=classifier ({model}, {ev.features})")

    datamodule.prepare_data()
    datamodule.setup("test")
    images = getattr(datamodule.splits.get(ev.split), "images", None)
    if images is None:
        raise IncompatibleError(f"data={data} holds no {ev.split} images in memory to compare with; pick another eval.split")
    real = real_subset(images, ev.n_real)
    if len(real) < ev.n_real:
        console.print(f"[yellow]Note:[/] the {ev.split} split has {len(images)} images; using all of them as the real set (eval.n_real={ev.n_real})")
    n_real = len(real)

    label = f"{data}-{ev.split}-{n_real}-{net.name}"
    real_start = time.time()
    cache_dir = cfg.paths.cache_dir if ev.cache else None
    reals = real_features(real, net, cache_dir, label, ev.batch_size, device) if (ev.fid or ev.kid) else None
    if reals is not None:
        state = "cache hit" if reals.hit else ("cache miss, computed and saved" if reals.path else "computed (cache off)")
        where = f" ({reals.path})" if reals.path else ""
        console.print(f"[bold]Real features:[/] {state} in {time.time() - real_start:.2f} s{where}")

    task.to(device)
    scores = score_generator(
        task, net, reals.features if reals is not None else torch.empty(0, net.feature_dim), ev.n_fake, seed=cfg.seed,
        batch_size=ev.batch_size, fid=ev.fid, kid=ev.kid, inception=ev["is"], consistency=consistency,
        class_names=class_names, device=device,
    )

    overall = {k: v for k, v in scores.items() if not k.startswith("class_consistency/")}
    per_class = {k.split("/", 1)[1]: v for k, v in scores.items() if k.startswith("class_consistency/")}
    console.print(metrics_table(f"{model} on {data}: {ev.n_fake} generated vs {n_real} real ({ev.split}), {net.name} features", overall))
    if per_class:
        console.print(metrics_table("class consistency per class", per_class, names=("class", "consistency")))

    protocol = {
        "n_real": n_real,
        "n_fake": ev.n_fake,
        "split": ev.split,
        "real_subset": "the whole split" if n_real == len(images) else REAL_SUBSET,
        "fake_labels": "balanced: 0, 1, ..., K-1, 0, ..." if task.conditional else None,
        "sampler": "EMA generator" if task.ema_decay is not None else "generator",
        "features": ev.features,
        **net.protocol,
        "kid": {"subsets": KID_SUBSETS, "subset_size": kid_subset_size(n_real, ev.n_fake), "kernel": "(x.y / d + 1)^3"} if ev.kid else None,
        "is_splits": min(IS_SPLITS, ev.n_fake) if ev["is"] else None,
        "seed": cfg.seed,
        "real_features_cache": {"hit": reals.hit, "path": str(reals.path) if reals.path else None} if reals is not None else None,
        "device": str(device),
    }
    elapsed = round(time.time() - start, 3)
    report = {"ckpt": str(cfg.ckpt), "model": model, "data": data, "metrics": scores, "protocol": protocol, "elapsed_s": elapsed}
    path = run_dir() / "metrics.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"[bold]Protocol:[/] {net.protocol['feature_extractor']}; resize {net.protocol['resize']}; weights sha256 {net.protocol['weights_sha256'][:16]}...; seed {cfg.seed}")
    console.print(f"[bold]Wrote[/] {path} in {elapsed:.1f} s")
    return scores

