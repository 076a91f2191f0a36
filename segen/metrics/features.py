"""Feature networks for FID/KID/IS: uint8 images `(N, C, H, W)` -> (features, logits).

Two kinds, picked with `eval.features=`:

- "inception": torch-fidelity's InceptionV3, a port of the TensorFlow graph of 2015-12-05 that
  the original FID code (TTUR) and most papers use, run through torchmetrics'
  `NoTrainInceptionV3` with `feature_extractor_weights_path`. Features are the 2048-d pool3
  activations (FID, KID), logits the 1008 unbiased logits (IS). The weights are read from a
  local file (`eval.inception_weights`, by default where torch hub would have cached the
  download), so evaluation runs offline; segen downloads only when told to
  (`eval.download_weights=true`), never as a side effect.
- "classifier": a segen classifier checkpoint (`model=cnn`): features are its penultimate
  layer (`CNN.features`, global max pool), logits its head. Fully offline, and on MNIST-like
  data a better judge than ImageNet features; also gives class consistency for cgan.

Resizing for Inception (`antialias`): images are resized to 299 x 299 before the net.
`antialias=false` uses torch-fidelity's reimplementation of TensorFlow 1.x bilinear resizing,
the one behind the original FID code and the numbers published with it (and torch-fidelity's
own results); `antialias=true` uses PyTorch's antialiased bilinear resize (torchmetrics'
default). Upsampling 28-64 px images, the two place pixel centres differently (the resized
images differ by tens of grey levels), so compare FIDs only within one mode.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from segen.errors import CheckpointError, ConfigError, IncompatibleError, SegenError
from segen.io import file_sha256

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
FEATURES = ("inception", "classifier")


class WeightsMissingError(SegenError):
    """The Inception weights file is not on this machine (and may not be downloaded)."""


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state_dict's names, dtypes, shapes and values: changes whenever a weight does."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def default_inception_weights() -> Path:
    """Where torch hub (and so torchmetrics/torch-fidelity) caches the download: honours TORCH_HOME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights(path: str | Path | None, download: bool = False) -> Path:
    """The local Inception weights file; downloaded first only when `download` is true.

    Missing and not to be (or not able to be) downloaded: one line that names the file, where
    it comes from and where to put it.
    """
    target = Path(path).expanduser().absolute() if path else default_inception_weights()
    if target.is_file():
        return target
    advice = (
        f"Inception weights {target} not found; download {INCEPTION_URL} (torch-fidelity's "
        f"InceptionV3, converted from TensorFlow's 2015-12-05 graph) on a machine with internet and copy it to {target}"
        + ("" if path else " (or anywhere, and pass eval.inception_weights=PATH)")
    )
    if not download:
        raise WeightsMissingError(
            f"{advice}; or let segen fetch it with eval.download_weights=true, or evaluate offline "
            "with eval.features=classifier eval.classifier_ckpt=<segen cnn checkpoint>"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(target), progress=True)
    except Exception as err:  # URLError, timeouts, HTTP errors, a full disk: all mean "not here"
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsMissingError(f"{advice} (the download failed: {detail})") from None
    return target


class FeatureNet(nn.Module):
    """uint8 images -> (features `(N, feature_dim)`, logits `(N, num_logits)`), both float32.

    `fingerprint` changes whenever the features could: the cache of real features is keyed by it.
    `protocol` is what metrics.json records about the network.
    """

    name: str
    feature_dim: int
    num_logits: int
    fingerprint: str
    protocol: dict
    label_smoothing: float = 0.0
    top_probability: float = 1.0  # the most probability the net was trained to give a class

    def confidence_probability(self, threshold: float) -> float:
        """`eval.confidence_threshold` as a probability: that share of the most this net was
        trained to give its class (`top_probability`), so that a label-smoothed judge, which
        never reaches 0.9, is read on the scale of its own training target."""
        return threshold * self.top_probability


class InceptionFeatures(FeatureNet):
    """torch-fidelity's InceptionV3 (via torchmetrics) from a local weights file."""

    name = "inception"
    feature_dim = 2048
    num_logits = 1008

    def __init__(self, weights: Path, antialias: bool = False):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        weights = Path(weights)
        try:
            # torch-fidelity reads the file with weights_only=False; reading it first with
            # weights_only=True refuses a file that would run code before it gets there.
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointError(f"{weights} is not a plain weights file ({detail}); fetch {INCEPTION_URL} again") from None
        try:
            self.net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(weights), antialias=antialias,
            )
        except RuntimeError as err:  # load_state_dict: missing/unexpected keys, wrong shapes
            raise CheckpointError(f"{weights} does not hold torch-fidelity's InceptionV3 weights ({str(err).splitlines()[0]}); fetch {INCEPTION_URL}") from None
        self.antialias = antialias
        self.weights_sha256 = file_sha256(weights)
        self.fingerprint = hashlib.sha256(
            json.dumps({"net": "inception-v3-compat", "layer": "2048", "antialias": antialias, "weights": self.weights_sha256}).encode()
        ).hexdigest()
        self.protocol = {
            "feature_extractor": "inception-v3-compat (torch-fidelity, TF 2015-12-05 weights) via torchmetrics",
            "feature_layer": "pool3 (2048)",
            "logits": "logits_unbiased (1008)",
            "resize": f"299x299 {'antialiased bilinear (torch)' if antialias else 'bilinear like TensorFlow 1.x (torch-fidelity)'}",
            "antialias": antialias,
            "weights": str(weights),
            "weights_sha256": self.weights_sha256,
        }

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:  # grey images: the same plane in R, G and B
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != 3:
            raise IncompatibleError(f"Inception takes RGB or grey images, not {images.shape[1]}-channel ones; use eval.features=classifier")
        # `forward` returns only the first requested layer; this returns both in one pass.
        pool, logits = self.net._torch_fidelity_forward(images)
        return pool.float(), logits.float()


class ClassifierFeatures(FeatureNet):
    """The penultimate layer (features) and head (logits) of a segen classifier checkpoint."""

    name = "classifier"

    def __init__(self, ckpt_path: str | Path):
        super().__init__()
        from segen.restore import restore_task

        ckpt_path = Path(ckpt_path).expanduser().absolute()
        run_cfg, task, datamodule = restore_task(ckpt_path)
        stored = run_cfg.choices
        net = task.image_classifier()
        if net is None:
            raise IncompatibleError(
                f"eval.classifier_ckpt={ckpt_path} holds a {stored.get('model')} model, not a classifier with "
                "penultimate features; pass a checkpoint of `segen train model=cnn` on the generator's dataset"
            )
        # Inputs are standardized exactly as the classifier saw them in training (datamodule).
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(datamodule.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(datamodule.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.in_channels = net.in_channels
        self.feature_dim = net.feature_dim
        self.num_logits = net.num_classes
        self.class_names = list(datamodule.info.class_names)
        self.data = stored.get("data")
        # Label smoothing eps trains the top class toward 1 - eps + eps/K, not 1 (0.82 for
        # cnn_cifar10's 0.2 over 10 classes): the most probability this judge learnt to give.
        self.label_smoothing = float(getattr(task, "label_smoothing", 0.0) or 0.0)
        self.top_probability = 1.0 - self.label_smoothing + self.label_smoothing / self.num_logits
        self.weights_sha256 = file_sha256(ckpt_path)
        # Keyed by the weights themselves, not the file: a checkpoint re-saved with other
        # optimizer state still hits, any changed weight misses.
        state = tensors_sha256(net.state_dict())
        self.fingerprint = hashlib.sha256(
            json.dumps({"net": "segen-classifier", "mean": list(datamodule.mean), "std": list(datamodule.std), "weights": state}).encode()
        ).hexdigest()
        self.protocol = {
            "feature_extractor": f"segen classifier ({stored.get('model')} trained on {self.data}): penultimate layer",
            "feature_layer": f"{type(net).__name__}.features ({self.feature_dim})",
            "logits": f"classifier head ({self.num_logits} classes)",
            "resize": "none (the classifier takes the images at their own size)",
            "weights": str(ckpt_path),
            "weights_sha256": self.weights_sha256,
            "label_smoothing": self.label_smoothing,
            "top_probability": self.top_probability,
        }

    def train(self, mode: bool = True):
        return super().train(False)  # BatchNorm on its running statistics, always

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] != self.in_channels:
            raise IncompatibleError(
                f"the classifier takes {self.in_channels}-channel images but these have {images.shape[1]}; "
                "use a classifier trained on the generator's dataset"
            )
        x = (images.float() / 255.0 - self.mean) / self.std
        features = self.net.features(x)
        return features.float(), self.net.head(features).float()


def build_feature_net(
    features: str,
    classifier_ckpt: str | None = None,
    weights: str | None = None,
    download_weights: bool = False,
    antialias: bool = False,
) -> FeatureNet:
    """The feature network a config names; every user mistake is one line."""
    if features not in FEATURES:
        raise ConfigError(f"eval.features={features} is not a feature network; use one of: {', '.join(FEATURES)}")
    if features == "classifier":
        if not classifier_ckpt:
            raise ConfigError("eval.features=classifier needs eval.classifier_ckpt=<checkpoint of `segen train model=cnn` on the same data>")
        return ClassifierFeatures(classifier_ckpt)
    return InceptionFeatures(inception_weights(weights, download_weights), antialias=antialias)


@torch.no_grad()
def extract(net: FeatureNet, batches, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Run `net` over an iterable of uint8 batches; returns (features, logits) on the CPU.

    Only features are kept, never images, so memory grows by `feature_dim` floats per image.
    """
    features, logits = [], []
    for images in batches:
        f, y = net(images.to(device))
        features.append(f.cpu())
        logits.append(y.cpu())
    if not features:
        return torch.empty(0, net.feature_dim), torch.empty(0, net.num_logits)
    return torch.cat(features), torch.cat(logits)


def slices(images: torch.Tensor, batch_size: int):
    """`images` in consecutive batches of `batch_size`."""
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]
