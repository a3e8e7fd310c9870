"""Vectorised percentile bootstrap of the CTR metrics (NumPy only).

A resample is a column of multinomial counts over the eval rows (how often each row was drawn), so
one ``(n, B)`` matrix gives every resample at once, every slice its columns, and every model the
same resamples: candidate-minus-champion deltas are paired. AUC under counts is the Mann-Whitney
statistic with weights, computed from one sort per (slice, model) for all resamples together.

>>> w = np.ones((3, 1))
>>> weighted_auc(np.array([False, True, True]), np.array([0, 1, 2]), w)
array([1.])
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

# Entries per resample chunk (n x B float64: 32 MB): large eval sets are bootstrapped chunk by chunk.
# Rows are eval rows so that taking a slice's rows copies whole rows (10x faster than columns).
CHUNK_ENTRIES = 1 << 22
EPS = 1e-7  # probability clip, as in metrics.logloss


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of ``(n, b)`` float64 draw counts, ``resamples`` columns in all, deterministic in ``seed``.

    >>> next(resample_counts(4, 2, 0)).sum(axis=0).tolist()
    [4.0, 4.0]
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_ENTRIES // max(n, 1))
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]  # row r's draws offset by r*n
        yield np.ascontiguousarray(np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).T, dtype=np.float64)


def tie_starts(sorted_scores: np.ndarray) -> np.ndarray:
    """Where each run of equal scores starts in ``sorted_scores`` (ties share half the credit in AUC)."""
    return np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]


def weighted_auc(sorted_labels: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC per resample: ``weights`` (m, B) are counts of rows sorted by score, ``sorted_labels`` (m,) bool
    their labels, ``starts`` their :func:`tie_starts`. NaN where a resample lacks a class."""
    pos = weights * sorted_labels[:, None]
    neg = weights - pos
    if len(starts) < len(weights):  # ties: sum each run of equal scores (without, it is the identity and costs)
        pos, neg = np.add.reduceat(pos, starts, axis=0), np.add.reduceat(neg, starts, axis=0)  # (G, B)
    below = np.cumsum(neg, axis=0)
    below -= 0.5 * neg  # negatives scored strictly lower, and half of those tied
    pairs = pos.sum(axis=0) * neg.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, np.einsum("gb,gb->b", pos, below) / pairs, np.nan)


def row_logloss(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each row's cross-entropy, so a resample's logloss is a weighted mean."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the finite ``values``; NaNs when fewer than two are finite.

    >>> percentile_interval(np.arange(101.0), 0.5)
    (25.0, 75.0)
    """
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
