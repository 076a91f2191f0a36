"""The scores that make a generator's numbers read on their own: the confident share (counted by
hand on known logits), the FID/KID floor between two halves of the real set (against
independent scipy/numpy formulas), and the cache entry that now carries the real logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_fid import TinyFeatures, correlated, numpy_kid, scipy_frechet, shapes

from segen.metrics.cache import real_features
from segen.metrics.generative import real_halves, score_real
from segen.metrics.scores import confident_share, inception_score


def test_confident_share_counts_images_whose_top_probability_exceeds_the_threshold():
    # Three classes, two logits at 0: p_top = e^a / (e^a + 2) > 0.9  <=>  a > ln 18 = 2.890.
    logits = torch.tensor(
        [
            [10.0, 0.0, 0.0],  # p 0.9999: confident
            [2.95, 0.0, 0.0],  # p 0.9052: confident
            [2.85, 0.0, 0.0],  # p 0.8963: not
            [0.0, 0.0, 0.0],  # p 1/3: not
            [0.0, -5.0, 4.0],  # the top class need not be the first: p 0.982, confident
        ]
    )
    assert math.log(18) == pytest.approx(2.890, abs=1e-3)
    assert confident_share(logits, 0.9) == pytest.approx(3 / 5)
    assert confident_share(logits, 0.99) == pytest.approx(1 / 5)  # only the 10-logit row
    assert confident_share(logits, 0.0) == 1.0
    # Shifting every logit of a row changes no probability.
    assert confident_share(logits + torch.tensor([[100.0], [-7.0], [3.0], [1.0], [0.5]]), 0.9) == pytest.approx(3 / 5)


def test_confident_share_equals_an_independent_numpy_count():
    logits = correlated(500, 10, seed=3).astype(np.float32) * 4
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    for threshold in (0.5, 0.9, 0.99):
        expected = float((p.max(1) > threshold).mean())
        assert 0 < expected < 1
        assert confident_share(torch.from_numpy(logits), threshold) == pytest.approx(expected, abs=1e-12)


def test_real_halves_are_disjoint_fixed_and_independent_of_the_global_seed():
    torch.manual_seed(1)
    a, b = real_halves(101)
    torch.manual_seed(2)
    a2, b2 = real_halves(101)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert len(a) == len(b) == 50 and not set(a.tolist()) & set(b.tolist())
    assert set(a.tolist()) | set(b.tolist()) <= set(range(101))
    assert a.tolist() != list(range(50))  # a random split, not the first and second half of the list


def test_fid_and_kid_floor_equal_independent_formulas_on_the_two_halves():
    real = correlated(240, 8, seed=4).astype(np.float32)
    logits = correlated(240, 4, seed=5).astype(np.float32) * 3
    scores = score_real(torch.from_numpy(real), torch.from_numpy(logits), confidence_threshold=0.9)
    a, b = (real[i.numpy()].astype(np.float64) for i in real_halves(240))
    assert scores["fid/floor"] == pytest.approx(scipy_frechet(a, b), rel=1e-4)
    # 120 per half: one KID subset is the whole half, so the mean is the MMD^2 of the halves.
    assert scores["kid/floor/mean"] == pytest.approx(numpy_kid(a, b), rel=1e-6, abs=1e-9)
    assert scores["kid/floor/std"] == pytest.approx(0.0, abs=1e-9)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert scores["confident/real"] == pytest.approx(float((p.max(1) > 0.9).mean()))


def test_the_real_inception_score_is_the_score_of_the_real_logits():
    logits = torch.from_numpy(correlated(200, 5, seed=7)).float() * 3
    scores = score_real(logits, logits, fid=False, kid=False, inception=True, seed=3)
    assert (scores["is/real/mean"], scores["is/real/std"]) == inception_score(logits, 10, seed=3)


def test_score_real_computes_only_what_is_asked_and_needs_two_per_half():
    features = torch.from_numpy(correlated(40, 4, seed=6)).float()
    assert set(score_real(features, fid=True, kid=False)) == {"fid/floor"}
    assert score_real(features, torch.zeros(40, 3), fid=False, kid=False, confidence_threshold=0.9) == {"confident/real": 0.0}
    with pytest.raises(ValueError, match="at least 4"):
        score_real(features[:3])


def test_the_real_feature_cache_keeps_the_logits_too(tmp_path):
    images, net = shapes(60, seed=1), TinyFeatures()
    first = real_features(images, net, tmp_path, "x", batch_size=30)
    again = real_features(images, net, tmp_path, "x", batch_size=30)
    assert again.hit and first.logits.shape == (60, 4)
    assert torch.equal(again.logits, first.logits) and torch.equal(again.features, first.features)
    # An entry of the old format (features only) is recomputed, not half-trusted.
    entry = torch.load(first.path, weights_only=True)
    del entry["logits"]
    torch.save(entry, first.path)
    redo = real_features(images, net, tmp_path, "x", batch_size=30)
    assert not redo.hit and torch.equal(redo.logits, first.logits)
