"""segen.metrics: FID/KID/IS against independent numpy/scipy formulas, behaviour on real images,
the real-feature cache, the offline weights message, and class consistency.

Feature networks here are small and built in the test; no Inception weights are downloaded.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from segen.data.shapes import make_shapes
from segen.metrics import cache as cache_module
from segen.metrics.cache import real_features
from segen.metrics.features import (
    INCEPTION_FILE,
    INCEPTION_URL,
    FeatureNet,
    WeightsMissingError,
    default_inception_weights,
    extract,
    inception_weights,
    slices,
    tensors_sha256,
)
from segen.metrics.generative import real_subset
from segen.metrics.scores import (
    class_consistency,
    frechet_distance,
    inception_score,
    kernel_distance,
)


# -- independent references -----------------------------------------------------------------------
def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as in the FID paper (TTUR code)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def numpy_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel (x.y / d + 1)^3 (Binkowski et al. 2018), all samples."""
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    m = len(a)
    return float((k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1)) - 2 * k_ab.mean())


def numpy_is(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean()))


def correlated(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift * rng.normal(size=d)


class TinyFeatures(FeatureNet):
    """A fixed random conv net: a small custom feature network for images, with a call count."""

    name = "tiny"

    def __init__(self, seed: int = 0, channels: int = 3, feature_dim: int = 16, num_logits: int = 4):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, feature_dim, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim, num_logits)
        self.feature_dim, self.num_logits = feature_dim, num_logits
        self.fingerprint = tensors_sha256(self.state_dict())
        self.protocol = {"feature_extractor": "tiny"}
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        f = 100 * self.body(images.float() / 255)  # O(1) features, like Inception's
        return f, self.head(f)


def shapes(n: int, seed: int) -> torch.Tensor:
    return make_shapes(n, image_size=32, channels=3, seed=seed)[0]


# -- the formulas ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("d", "n_a", "n_b", "shift"), [(8, 400, 300, 0.0), (16, 600, 500, 1.0), (64, 1000, 800, 0.3)])
def test_fid_equals_an_independent_scipy_frechet_distance(d, n_a, n_b, shift):
    a, b = correlated(n_a, d, seed=1), correlated(n_b, d, seed=2, shift=shift)
    got = frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    # The inputs went through float32 in segen; the reference sees the same rounded values.
    expected = scipy_frechet(a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
    assert got == pytest.approx(expected, rel=1e-4)


def test_kid_and_is_equal_independent_numpy_formulas():
    a, b = correlated(120, 8, seed=3), correlated(120, 8, seed=4, shift=0.5)
    a32, b32 = (x.astype(np.float32) for x in (a, b))
    # One subset holding every sample: KID is then the MMD^2 of the whole sets, std 0.
    mean, std = kernel_distance(torch.from_numpy(a32), torch.from_numpy(b32), subsets=1, subset_size=120)
    assert mean == pytest.approx(numpy_kid(a32.astype(np.float64), b32.astype(np.float64)), rel=1e-6)
    assert std == 0.0
    logits = correlated(200, 5, seed=5).astype(np.float32) * 3
    score, _ = inception_score(torch.from_numpy(logits), splits=1)
    assert score == pytest.approx(numpy_is(logits.astype(np.float64)), rel=1e-6)


def test_kid_and_is_are_deterministic_for_a_seed_and_leave_the_global_rng_alone():
    a, b = (torch.from_numpy(correlated(300, 8, seed=s)).float() for s in (6, 7))
    state = torch.get_rng_state()
    first = kernel_distance(a, b, subsets=20, subset_size=50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert kernel_distance(a, b, subsets=20, subset_size=50, seed=3) == first
    assert kernel_distance(a, b, subsets=20, subset_size=50, seed=4) != first
    assert inception_score(a, splits=5, seed=1) == inception_score(a, splits=5, seed=1)


# -- on images, through a feature network ----------------------------------------------------------
def test_fid_of_real_vs_real_is_small_and_grows_monotonically_with_noise():
    net = TinyFeatures()
    feats = lambda images: extract(net, slices(images, 256))[0]  # noqa: E731
    real = feats(shapes(1500, seed=1))
    other = shapes(1500, seed=2)  # the same distribution, other images
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(other.shape, generator=gen)
    fids = []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        noisy = (other.float() + 255 * sigma * noise).clamp(0, 255).round().to(torch.uint8)
        fids.append(frechet_distance(real, feats(noisy)))
    assert all(a < b for a, b in zip(fids, fids[1:], strict=False)), fids
    assert fids[0] < 0.05 * fids[-1], fids
    assert fids[0] < fids[1] / 2, fids


# -- the cache -------------------------------------------------------------------------------------
def test_real_feature_cache_hit_miss_and_invalidation(tmp_path):
    images = shapes(300, seed=1)
    net = TinyFeatures(seed=0)
    first = real_features(images, net, tmp_path, "shapes-train-300-tiny", batch_size=100)
    assert not first.hit and first.path.is_file() and net.calls == 3
    assert first.path.parent == tmp_path / "real_features" and first.path.name.startswith("shapes-train-300-tiny_")

    again = real_features(images, net, tmp_path, "shapes-train-300-tiny", batch_size=100)
    assert again.hit and again.path == first.path and net.calls == 3  # no network ran
    assert torch.equal(again.features, first.features)

    # Other weights, other images, other count: each a miss with its own entry.
    other_net = TinyFeatures(seed=1)
    changed = real_features(images, other_net, tmp_path, "shapes-train-300-tiny", batch_size=100)
    assert not changed.hit and changed.path != first.path and other_net.calls == 3
    assert not torch.equal(changed.features, first.features)
    assert not real_features(shapes(300, seed=2), net, tmp_path, "shapes-train-300-tiny").hit
    assert not real_features(images[:299], net, tmp_path, "shapes-train-300-tiny").hit
    # Same weights again: the first entry is still valid.
    assert real_features(images, TinyFeatures(seed=0), tmp_path, "shapes-train-300-tiny").hit


def test_a_corrupt_or_foreign_cache_entry_is_recomputed(tmp_path):
    images, net = shapes(100, seed=1), TinyFeatures()
    entry = real_features(images, net, tmp_path, "x")
    entry.path.write_bytes(entry.path.read_bytes()[:100])  # truncated
    redo = real_features(images, net, tmp_path, "x")
    assert not redo.hit and torch.equal(redo.features, entry.features)
    assert real_features(images, net, tmp_path, "x").hit  # rewritten whole
    # An entry whose stored key does not match is never trusted.
    torch.save({"key": "other", "features": torch.zeros(100, 16)}, entry.path)
    assert not real_features(images, net, tmp_path, "x").hit


def test_cache_off_computes_without_writing(tmp_path):
    out = real_features(shapes(50, seed=1), TinyFeatures(), None, "x")
    assert not out.hit and out.path is None and out.features.shape == (50, 16)


def test_cache_key_changes_with_the_format_version(monkeypatch):
    images, net = shapes(10, seed=1), TinyFeatures()
    key = cache_module.cache_key(images, net)
    monkeypatch.setattr(cache_module, "CACHE_VERSION", cache_module.CACHE_VERSION + 1)
    assert cache_module.cache_key(images, net) != key


def test_real_subset_is_fixed_and_independent_of_the_global_seed():
    images = torch.arange(100).view(100, 1, 1, 1)
    torch.manual_seed(1)
    a = real_subset(images, 30)
    torch.manual_seed(2)
    assert torch.equal(a, real_subset(images, 30)) and len(a.unique()) == 30
    assert torch.equal(real_subset(images, 500), images)


# -- offline weights --------------------------------------------------------------------------------
def test_missing_inception_weights_give_one_actionable_line_and_never_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    missing = tmp_path / "weights" / "inception.pth"
    with pytest.raises(WeightsMissingError) as err:
        inception_weights(missing)
    message = str(err.value)
    assert "\n" not in message
    assert str(missing) in message and INCEPTION_URL in message
    assert "eval.download_weights=true" in message and "eval.features=classifier" in message

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    default = default_inception_weights()
    assert default == tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION_FILE
    with pytest.raises(WeightsMissingError, match="eval.inception_weights=PATH"):
        inception_weights(None)


def test_weights_are_used_when_present_and_a_failed_download_is_one_line(tmp_path, monkeypatch):
    present = tmp_path / "w.pth"
    present.write_bytes(b"x")
    assert inception_weights(present) == present

    def offline(url, dst, *args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsMissingError, match=r"the download failed: \[Errno -2\]") as err:
        inception_weights(tmp_path / "missing.pth", download=True)
    assert "\n" not in str(err.value)


# -- class consistency -----------------------------------------------------------------------------
def test_class_consistency_of_a_classifier_on_labelled_images_equals_its_accuracy():
    images, labels, _ = make_shapes(400, seed=3)
    net = TinyFeatures(seed=2)
    _, logits = extract(net, slices(images, 128))
    predicted = logits.argmax(1)
    overall, per_class = class_consistency(logits, labels, 4)
    assert overall == pytest.approx((predicted == labels).float().mean().item(), abs=1e-7)
    for k in range(4):
        assert per_class[k] == pytest.approx((predicted[labels == k] == k).float().mean().item(), abs=1e-7)


def test_tensors_sha256_tracks_every_weight():
    net = TinyFeatures()
    before = tensors_sha256(net.state_dict())
    with torch.no_grad():
        net.head.bias[0] += 1e-6
    assert tensors_sha256(net.state_dict()) != before
    assert len(before) == len(hashlib.sha256().hexdigest())
    json.dumps(net.protocol)  # what metrics.json gets must be plain data


# -- the Inception path, with random weights in torch-fidelity's format ------------------------------
def make_random_inception_weights(path):
    """A weights file of the real architecture and key names, with random values (~95 MB)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = path.parent / "empty.pth"
    torch.save({}, empty)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, strict=True: None)
        torch.manual_seed(0)
        skeleton = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.save(skeleton.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    return make_random_inception_weights(tmp_path_factory.mktemp("inception") / INCEPTION_FILE)


@pytest.mark.slow  # builds and runs a full-size InceptionV3 on CPU: ~10-20 s on 2 cores
def test_inception_features_from_a_local_weights_file(random_inception_weights, tmp_path):
    from segen.metrics.features import InceptionFeatures, file_sha256

    net = InceptionFeatures(random_inception_weights, antialias=False)
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    features, logits = net(grey)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008) and features.dtype == torch.float32
    # Grey images are the same plane in R, G and B.
    assert torch.allclose(net(grey.expand(-1, 3, -1, -1))[0], features)
    assert net.protocol["weights_sha256"] == file_sha256(random_inception_weights)
    assert net.protocol["antialias"] is False and "TensorFlow" in net.protocol["resize"]
    # The resize mode is part of the fingerprint: a cache built with one is not used for the other.
    assert InceptionFeatures(random_inception_weights, antialias=True).fingerprint != net.fingerprint


def test_inception_weights_that_are_not_plain_tensors_or_not_inception_are_refused(tmp_path):
    from segen.errors import CheckpointError
    from segen.metrics.features import InceptionFeatures

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": torch.zeros(1), "f": print}, unsafe)  # a pickled callable: refused by weights_only
    with pytest.raises(CheckpointError, match="not a plain weights file"):
        InceptionFeatures(unsafe)
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="does not hold torch-fidelity's InceptionV3 weights"):
        InceptionFeatures(other)
