"""CTR metrics against brute-force oracles written from their definitions (no sklearn)."""

import math

import numpy as np
import pytest

from mlsys.evaluate.metrics import auc, calibration, ctr_metrics, logloss, user_auc


def auc_oracle(labels, scores) -> float:
    """P(score of a random click > score of a random non-click), ties count one half."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def user_auc_oracle(users, labels, scores) -> float:
    total = weight = 0.0
    for u in set(users):
        idx = [i for i, v in enumerate(users) if v == u]
        value = auc_oracle([labels[i] for i in idx], [scores[i] for i in idx])
        if not math.isnan(value):
            total += value * len(idx)
            weight += len(idx)
    return total / weight if weight else float("nan")


def logloss_oracle(labels, probs) -> float:
    return -sum(math.log(p) if y == 1 else math.log(1 - p) for y, p in zip(labels, probs)) / len(labels)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 1)  # coarse scores: many ties
    assert auc(labels, scores) == pytest.approx(auc_oracle(labels.tolist(), scores.tolist()), abs=1e-12)


def test_auc_edge_cases():
    assert auc(np.array([0, 1]), np.array([0.2, 0.8])) == 1.0
    assert auc(np.array([0, 1]), np.array([0.8, 0.2])) == 0.0
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


@pytest.mark.parametrize("seed", range(5))
def test_user_auc_is_impression_weighted_mean_over_users_with_both_classes(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 25, 400)
    labels = (rng.random(400) < np.where(users % 5 == 0, 0.0, 0.4)).astype(int)  # some users never click
    scores = rng.random(400) + 0.3 * labels
    expected = user_auc_oracle(users.tolist(), labels.tolist(), scores.tolist())
    assert user_auc(users, labels, scores) == pytest.approx(expected, abs=1e-12)


def test_user_auc_weights_by_impressions_not_users():
    # user 1: 4 impressions, AUC 1.0; user 2: 2 impressions, AUC 0.0 -> (4*1 + 2*0) / 6
    users = np.array([1, 1, 1, 1, 2, 2])
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.8, 0.9, 0.9, 0.1])
    assert user_auc(users, labels, scores) == pytest.approx(4 / 6)
    assert math.isnan(user_auc(np.array([1, 2]), np.array([0, 1]), np.array([0.3, 0.4])))


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    probs = rng.uniform(0.01, 0.99, 200)
    assert logloss(labels, probs) == pytest.approx(logloss_oracle(labels.tolist(), probs.tolist()), rel=1e-12)


def test_logloss_clips_certain_wrong_predictions():
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_calibration_is_mean_prediction_over_click_rate():
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0])  # rate 0.25
    assert calibration(labels, np.full(8, 0.25)) == pytest.approx(1.0)
    assert calibration(labels, np.full(8, 0.5)) == pytest.approx(2.0)
    assert math.isnan(calibration(np.zeros(4), np.full(4, 0.1)))


def test_ctr_metrics_bundles_every_metric():
    rng = np.random.default_rng(7)
    users, labels, probs = rng.integers(0, 10, 100), rng.integers(0, 2, 100), rng.random(100)
    m = ctr_metrics(users, labels, probs)
    assert m == {
        "auc": auc(labels, probs),
        "user_auc": user_auc(users, labels, probs),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "rows": 100.0,
    }
