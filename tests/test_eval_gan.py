"""`segen eval` on generator checkpoints through the real CLI: tiny dcgan/cgan/cnn trained on
shapes, FID/KID/IS with classifier features beside the real images' floor and confident share,
the real-feature cache, the offline message,
`callbacks=fid` during training. No Inception weights are downloaded (a random file of the
right format stands in for them in the one slow test that needs them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_GAN, run_segen

TINY_CNN = ("debug=smoke", "model.net.widths=[8,16]", "model.net.pool=[false,true]", "model.net.residual=[false,false]", "test=false")
SMALL_EVAL = ("eval.n_fake=100", "eval.n_real=200", "eval.batch_size=100")


def train(root: Path, name: str, *overrides: str) -> Path:
    result = run_segen("train", "data=shapes", *overrides, f"hydra.run.dir={root}/{name}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / name


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval_gan")


@pytest.fixture(scope="module")
def cnn_ckpt(root) -> Path:
    return train(root, "cnn", "model=cnn", *TINY_CNN) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def cgan_ckpt(tiny_cgan_ckpt) -> Path:
    return tiny_cgan_ckpt  # conftest: `segen train model=cgan data=shapes *TINY_GAN`, shared with test_sample


@pytest.fixture(scope="module")
def dcgan_run(root, cnn_ckpt) -> Path:
    """A dcgan trained with `callbacks=fid` on classifier features, FID every epoch."""
    return train(
        root, "dcgan", "model=dcgan", *TINY_GAN, "trainer.max_epochs=2", "callbacks=fid",
        "callbacks.fid.every_n_epochs=1", "callbacks.fid.features=classifier", f"callbacks.fid.classifier_ckpt={cnn_ckpt}",
        "callbacks.fid.n_fake=64", "callbacks.fid.n_real=64", "model.monitor=val/fid", f"paths.cache_dir={root}/cache",
    )


def evaluate(tmp_path: Path, name: str, *args: str):
    out = tmp_path / name
    result = run_segen("eval", *args, f"hydra.run.dir={out}", cwd=tmp_path)
    return result, out / "metrics.json"


@pytest.fixture(scope="module")
def cgan_eval(root, cgan_ckpt, cnn_ckpt):
    """One `segen eval` of the cgan with classifier features, into a fresh cache."""
    args = (f"ckpt={cgan_ckpt}", "eval.features=classifier", f"eval.classifier_ckpt={cnn_ckpt}", *SMALL_EVAL, f"paths.cache_dir={root}/eval_cache")
    result, path = evaluate(root, "cgan_eval", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return args, result, json.loads(path.read_text())


def test_cgan_eval_with_classifier_features_reports_scores_and_the_protocol(cgan_eval):
    _, result, report = cgan_eval
    assert "cache miss" in result.stdout and "class_consistency" in result.stdout and "fid" in result.stdout
    metrics, protocol = report["metrics"], report["protocol"]
    assert {"fid", "kid/mean", "kid/std", "is/mean", "is/std", "class_consistency"} <= set(metrics)
    assert {f"class_consistency/{c}" for c in ("circle", "square", "triangle", "cross")} <= set(metrics)
    assert metrics["fid"] >= 0 and 0 <= metrics["class_consistency"] <= 1
    assert protocol["n_fake"] == 100 and protocol["n_real"] == 200 and protocol["split"] == "train"
    assert (report["split"], report["num_images"]) == ("train", 200)  # as every metrics.json states them
    assert protocol["features"] == "classifier" and protocol["seed"] == 42 and len(protocol["weights_sha256"]) == 64
    assert protocol["kid"]["subset_size"] == 100 and protocol["real_features_cache"]["hit"] is False
    assert report["elapsed_s"] > 0 and "resize" in protocol
    # Each score beside what real images get: the confident share and the FID/KID floor.
    assert {"confident", "confident/real", "fid/floor", "kid/floor/mean", "kid/floor/std", "is/real/mean"} <= set(metrics)
    assert 0 <= metrics["confident"] <= 1 and 0 <= metrics["confident/real"] <= 1 and metrics["fid/floor"] >= 0
    assert protocol["confidence_threshold"] == 0.9 and protocol["floor"]["n_each"] == 100
    assert "generated" in result.stdout and "real" in result.stdout and "confident" in result.stdout


def test_the_real_column_is_computed_on_the_real_images_as_documented(cgan_eval, cgan_ckpt, cnn_ckpt):
    """fid/floor: the Frechet distance between the classifier features of the two halves of the
    200 real images of the generator's data (the formula itself is checked against scipy in
    test_fid.py and test_realism.py); confident/real: their softmax maxima above 0.9, counted in numpy."""
    import numpy as np

    from segen.checkpoint import checkpoint_config, load_checkpoint
    from segen.config import build
    from segen.metrics.features import ClassifierFeatures, extract, slices
    from segen.metrics.generative import real_halves, real_subset
    from segen.metrics.scores import frechet_distance

    _, _, report = cgan_eval
    run_cfg, _ = checkpoint_config(load_checkpoint(cgan_ckpt))  # the real images are the generator's data
    real = real_subset(build(run_cfg.data, "data").split_images("train"), 200)
    features, logits = extract(ClassifierFeatures(cnn_ckpt), slices(real, 100))
    a, b = real_halves(200)
    assert report["metrics"]["fid/floor"] == pytest.approx(frechet_distance(features[a], features[b]), rel=1e-6)
    logits = logits.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert report["metrics"]["confident/real"] == pytest.approx(float((p.max(1) > 0.9).mean()), abs=1e-9)


def test_a_label_smoothed_judge_is_read_against_the_most_it_was_trained_to_give(root, cgan_ckpt, tmp_path):
    """Label smoothing 0.2 over 4 classes trains the top class toward 0.85, so the 0.9 threshold
    means p > 0.9 x 0.85 = 0.765 for this judge: confident/real is that count, done in numpy."""
    import numpy as np

    from segen.checkpoint import checkpoint_config, load_checkpoint
    from segen.config import build
    from segen.metrics.features import ClassifierFeatures, extract, slices
    from segen.metrics.generative import real_subset

    judge = train(root, "cnn_smoothed", "model=cnn", *TINY_CNN, "model.label_smoothing=0.2") / "checkpoints" / "last.ckpt"
    result, path = evaluate(tmp_path, "smoothed", f"ckpt={cgan_ckpt}", "eval.features=classifier", f"eval.classifier_ckpt={judge}", *SMALL_EVAL)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(path.read_text())
    protocol = report["protocol"]
    assert protocol["label_smoothing"] == 0.2 and protocol["top_probability"] == pytest.approx(0.85)
    assert protocol["confidence_threshold"] == 0.9 and protocol["confidence_probability"] == pytest.approx(0.765)
    assert "> 0.765 (0.9 of the 0.85" in " ".join(result.stdout.split())
    run_cfg, _ = checkpoint_config(load_checkpoint(cgan_ckpt))
    real = real_subset(build(run_cfg.data, "data").split_images("train"), 200)
    _, logits = extract(ClassifierFeatures(judge), slices(real, 100))
    logits = logits.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert report["metrics"]["confident/real"] == pytest.approx(float((p.max(1) > 0.765).mean()), abs=1e-9)


def test_split_picks_the_real_images_of_a_generator_too(cgan_eval, tmp_path):
    args, _, first = cgan_eval
    assert first["protocol"]["split"] == "train"  # a generator's own default: the training images
    result, path = evaluate(tmp_path, "val", *args, "split=val")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(path.read_text())
    assert report["protocol"]["split"] == "val" and report["metrics"]["fid/floor"] != first["metrics"]["fid/floor"]


def test_a_second_eval_hits_the_real_feature_cache_and_gives_the_same_numbers(cgan_eval, tmp_path):
    args, _, first = cgan_eval
    result, path = evaluate(tmp_path, "second", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cache hit" in result.stdout
    again = json.loads(path.read_text())
    assert again["protocol"]["real_features_cache"] == {**first["protocol"]["real_features_cache"], "hit": True}
    assert again["metrics"] == first["metrics"]  # same seed, same images, same features: the same numbers


def test_default_eval_without_inception_weights_exits_2_with_one_line(dcgan_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no weights there, whatever this machine has
    ckpt = dcgan_run / "checkpoints" / "last.ckpt"
    result, path = evaluate(tmp_path, "default", f"ckpt={ckpt}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    assert str(expected) in lines[0] and "github.com/toshas/torch-fidelity" in lines[0]
    assert not path.exists()

    missing = tmp_path / "nowhere" / "inception.pth"
    result, _ = evaluate(tmp_path, "missing", f"ckpt={ckpt}", f"eval.inception_weights={missing}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"copy it to {missing}" in result.stderr


def test_fid_callback_logs_val_fid_and_picks_best_by_it(dcgan_run):
    with open(dcgan_run / "metrics.csv") as f:
        fids = [float(row["val/fid"]) for row in csv.DictReader(f) if row.get("val/fid")]
    assert len(fids) == 2 and all(v >= 0 for v in fids)  # one per epoch
    best = torch.load(dcgan_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "val/fid" and float(state["best_model_score"]) == pytest.approx(min(fids), rel=1e-6)


def test_class_consistency_on_real_labelled_images_equals_the_classifier_accuracy(cnn_ckpt, tmp_path):
    """The classifier-feature path (normalization included) classifies exactly as `segen eval` does."""
    from segen.checkpoint import checkpoint_config, load_checkpoint
    from segen.config import build
    from segen.metrics.features import ClassifierFeatures, extract, slices
    from segen.metrics.scores import class_consistency

    result, path = evaluate(tmp_path, "cnn", f"ckpt={cnn_ckpt}", "split=test")
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = json.loads(path.read_text())["metrics"]["test/acc"]

    run_cfg, _ = checkpoint_config(load_checkpoint(cnn_ckpt))
    datamodule = build(run_cfg.data, "data")
    datamodule.setup()
    test = datamodule.splits["test"]
    _, logits = extract(ClassifierFeatures(cnn_ckpt), slices(test.images, 250))
    overall, _ = class_consistency(logits, test.targets, 4)
    assert overall == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("eval.features=classifier",), "needs eval.classifier_ckpt"),
        (("eval.features=classifier", "eval.classifier_ckpt=GAN"), "not a classifier"),
        (("split=holdout",), "split=holdout is not a split; use split=train, val or test"),
    ],
    ids=["no-classifier-ckpt", "gan-as-classifier", "not-a-split"],
)
def test_eval_settings_that_cannot_work_fail_in_one_line(cgan_ckpt, tmp_path, args, text):
    args = [a.replace("=GAN", f"={cgan_ckpt}") for a in args]
    result, _ = evaluate(tmp_path, "bad", f"ckpt={cgan_ckpt}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, result.stderr


@pytest.mark.slow  # InceptionV3 at 299 px on CPU for a few dozen images
def test_dcgan_eval_with_a_local_inception_weights_file(dcgan_run, tmp_path):
    from test_fid import make_random_inception_weights

    weights = make_random_inception_weights(tmp_path / "weights.pth")
    result, path = evaluate(
        tmp_path, "inception", f"ckpt={dcgan_run}/checkpoints/last.ckpt", f"eval.inception_weights={weights}",
        "eval.n_fake=12", "eval.n_real=12", "eval.batch_size=12", f"paths.cache_dir={tmp_path}/cache",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(path.read_text())
    assert {"fid", "kid/mean", "is/mean"} <= set(report["metrics"]) and "class_consistency" not in report["metrics"]
    protocol = report["protocol"]
    assert protocol["features"] == "inception" and protocol["antialias"] is False
    assert protocol["weights"] == str(weights) and len(protocol["weights_sha256"]) == 64
