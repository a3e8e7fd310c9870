"""Ranking and calibration metrics, exact, in NumPy (no Ray, no sklearn)."""

from __future__ import annotations

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when one class is absent.

    >>> auc(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.5]))
    1.0
    """
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[eps, 1 - eps]``.

    >>> round(logloss(np.array([1, 0]), np.array([0.5, 0.5])), 4)
    0.6931
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Impression-weighted mean of per-user AUCs over users with both classes (GAUC).

    Users with only clicks or only non-clicks have no AUC and are left out;
    each remaining user weighs by their number of impressions. NaN when no user qualifies.

    >>> user_auc(np.array([1, 1, 1, 2, 2]), np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.8, 0.2]))
    0.6
    """
    order = np.argsort(users, kind="mergesort")
    users, labels, scores = np.asarray(users)[order], np.asarray(labels)[order], np.asarray(scores)[order]
    bounds = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1, len(users)]
    total, weight = 0.0, 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        value = auc(labels[a:b], scores[a:b])
        if not np.isnan(value):
            total, weight = total + value * (b - a), weight + (b - a)
    return float(total / weight) if weight else float("nan")


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction over observed click rate (1.0 is calibrated); NaN without clicks.

    >>> calibration(np.array([0, 1, 0, 0]), np.array([0.5, 0.5, 0.5, 0.5]))
    2.0
    """
    rate = float(np.mean(labels)) if len(labels) else 0.0
    return float(np.mean(probs)) / rate if rate > 0 else float("nan")


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The evaluation metrics of a CTR model, by name (the train loop logs them per epoch).

    >>> sorted(ctr_metrics(np.array([1, 1]), np.array([0, 1]), np.array([0.2, 0.7])))
    ['auc', 'calibration', 'logloss', 'rows', 'user_auc']
    """
    return {
        "auc": auc(labels, probs),
        "user_auc": user_auc(users, labels, probs),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "rows": float(len(labels)),
    }
