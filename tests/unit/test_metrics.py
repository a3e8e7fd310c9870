"""mlsys.evaluate.metrics against brute-force oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlsys.evaluate.metrics import auc, calibration, ctr_metrics, logloss, user_auc


def brute_auc(labels, scores) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie), over every (pos, neg) pair."""
    pos = [s for y, s in zip(labels, scores) if y > 0.5]
    neg = [s for y, s in zip(labels, scores) if y <= 0.5]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_user_auc(users, labels, scores) -> float:
    values = []
    for u in sorted(set(users.tolist())):
        m = users == u
        v = brute_auc(labels[m], scores[m])
        if not math.isnan(v):
            values.append(v)
    return float(np.mean(values)) if values else float("nan")


def _data(seed: int, n: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.float32)
    # Few distinct scores: plenty of ties, including ties across classes.
    scores = rng.integers(0, 7, n) / 7.0
    users = rng.integers(0, 9, n)
    return users, labels, scores


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_pairwise_oracle_with_ties(seed):
    _, labels, scores = _data(seed, 80 + 13 * seed)
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_auc_matches_oracle_with_continuous_scores(seed):
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random(60) < 0.3).astype(np.int64)
    scores = rng.normal(size=60) + labels  # some signal
    assert auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


def test_auc_known_values():
    assert auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.5])) == 1.0
    assert auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.9])) == 0.0
    assert auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # All scores tied: exactly 0.5 whatever the class balance.
    assert auc(np.array([0, 1, 1, 1, 0]), np.full(5, 0.3)) == 0.5


def test_auc_is_invariant_to_monotone_transform():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 50)
    scores = rng.random(50)
    assert auc(labels, scores) == pytest.approx(auc(labels, np.exp(3 * scores) - 10))
    # Reversing the scores mirrors the AUC.
    assert auc(labels, -scores) == pytest.approx(1 - auc(labels, scores))


@pytest.mark.parametrize("labels", [np.zeros(5), np.ones(5), np.array([])])
def test_auc_nan_when_a_class_is_absent(labels):
    assert math.isnan(auc(labels, np.linspace(0, 1, len(labels))))


@pytest.mark.parametrize("seed", range(5))
def test_user_auc_is_mean_of_per_user_aucs(seed):
    users, labels, scores = _data(seed, 120)
    expected = brute_user_auc(users, labels, scores)
    assert user_auc(users, labels, scores) == pytest.approx(expected, abs=1e-12)


def test_user_auc_skips_single_class_users_and_is_unweighted():
    users = np.array([5, 5, 5, 5, 1, 1, 9, 9, 9])
    labels = np.array([1, 0, 0, 0, 1, 0, 1, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.1, 0.8, 0.5, 0.5, 0.5])
    # user 5: AUC 1.0 (4 rows); user 1: AUC 0.0 (2 rows); user 9: only clicks, skipped.
    assert user_auc(users, labels, scores) == pytest.approx(0.5)
    # The input order does not matter (the function sorts by user).
    perm = np.random.default_rng(0).permutation(len(users))
    assert user_auc(users[perm], labels[perm], scores[perm]) == pytest.approx(0.5)


def test_user_auc_nan_when_no_user_has_both_classes():
    users = np.array([1, 1, 2])
    assert math.isnan(user_auc(users, np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3])))


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_direct_formula(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40).astype(np.float64)
    p = rng.uniform(0.01, 0.99, 40)
    expected = -sum(yi * math.log(pi) + (1 - yi) * math.log(1 - pi) for yi, pi in zip(y, p)) / len(y)
    assert logloss(y, p) == pytest.approx(expected, rel=1e-12)


def test_logloss_clips_extreme_probabilities():
    value = logloss(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert np.isfinite(value)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert logloss(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)


def test_calibration():
    labels = np.array([1, 0, 0, 0])
    assert calibration(labels, np.full(4, 0.25)) == pytest.approx(1.0)
    assert calibration(labels, np.full(4, 0.5)) == pytest.approx(2.0)
    assert calibration(labels, np.array([0.1, 0.1, 0.1, 0.2])) == pytest.approx(0.125 / 0.25)
    assert math.isnan(calibration(np.zeros(3), np.full(3, 0.2)))


def test_ctr_metrics_bundles_every_metric():
    users, labels, scores = _data(3, 100)
    probs = 0.05 + 0.9 * scores
    m = ctr_metrics(users, labels, probs)
    assert set(m) == {"auc", "user_auc", "logloss", "calibration", "rows"}
    assert m["auc"] == pytest.approx(brute_auc(labels, probs))
    assert m["user_auc"] == pytest.approx(brute_user_auc(users, labels, probs))
    assert m["logloss"] == pytest.approx(logloss(labels, probs))
    assert m["calibration"] == pytest.approx(probs.mean() / labels.mean())
    assert m["rows"] == 100.0
