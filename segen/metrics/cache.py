"""The real side of FID/KID, computed once and kept on disk (`paths.cache_dir`).

An entry holds the raw features of the real images, `(n_real, d)` float32 (80 MB for 10k
Inception features): FID's mean and covariance are rebuilt from them in a fraction of a second,
and KID needs them as they are; and the network's logits `(n_real, k)` (a classifier's
confident share on real images). The key is a sha256 over
- the real images themselves (their bytes: dataset, split, subset and n_real in one, so data
  that changed on disk never hits an old entry),
- the feature network's fingerprint (weights sha256, layer, resize mode, input normalization),
- a format version,
so a changed feature network never reuses stale statistics. The file name also spells out data,
split, n_real and network for people browsing the folder. Writes are atomic; an unreadable
entry is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from segen.io import save_tensors
from segen.metrics.features import FeatureNet, extract, slices

CACHE_VERSION = 2  # 2: logits stored beside the features. bump when features are computed differently, so old entries are not reused


@dataclass
class RealFeatures:
    features: torch.Tensor
    logits: torch.Tensor
    hit: bool
    path: Path | None  # None when caching is off


def images_sha256(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def cache_key(images: torch.Tensor, net: FeatureNet) -> str:
    description = {"version": CACHE_VERSION, "images": images_sha256(images), "shape": list(images.shape), "features": net.fingerprint}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, label: str, key: str) -> Path:
    return cache_dir / "real_features" / f"{label}_{key[:16]}.pt"


def _load(path: Path, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # truncated or foreign file: recompute, never trust it
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    if not all(isinstance(entry.get(k), torch.Tensor) for k in ("features", "logits")):
        return None
    return entry["features"], entry["logits"]


def _save(path: Path, entry: dict) -> None:
    save_tensors(path, entry)  # readers see the old entry or the new one, never half of one


def real_features(
    images: torch.Tensor,
    net: FeatureNet,
    cache_dir: str | Path | None,
    label: str,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
) -> RealFeatures:
    """Features and logits of uint8 `images` under `net`, from the cache when an entry matches.

    `label` (e.g. "shapes-train-4500-inception") names the file; `cache_dir=None` turns caching off.
    """
    if cache_dir is None:
        return RealFeatures(*extract(net, slices(images, batch_size), device), hit=False, path=None)
    key = cache_key(images, net)
    path = cache_path(Path(cache_dir).expanduser(), label, key)
    cached = _load(path, key)
    if cached is not None:
        return RealFeatures(*cached, hit=True, path=path)
    features, logits = (t.contiguous() for t in extract(net, slices(images, batch_size), device))
    entry = {"key": key, "features": features, "logits": logits, "label": label, "protocol": json.dumps(net.protocol), "version": CACHE_VERSION}
    _save(path, entry)
    return RealFeatures(features, logits, hit=False, path=path)
