"""The pre-release estimate (pandas and NumPy): the most recent logged requests, replayed offline
through the candidate, against what the champion served them.

The feature log (:mod:`mlsys.features.feature_log`) holds, per scored request, one raw feature row
per candidate item with the score that was served. Replaying those rows through the candidate says,
before any user sees it, how far its scores move (PSI of the two score distributions), how much of
each top-k it keeps, and on what share of requests the top item changes.

>>> est = estimate(read_feature_log(log_dir), PackageScorer(read_package(uri)).score, ReplayConfig())  # doctest: +SKIP
>>> est.line()                                                                                         # doctest: +SKIP
'pre-release estimate on the 1,000 most recent logged requests (9,812 rows, served by version 3): score PSI 0.012, ...'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

from mlsys.evaluate.config import ReplayConfig
from mlsys.evaluate.metrics import score_histogram, score_psi, top_k_overlap

# The feature log's own columns (mlsys.features.feature_log.LOG_COLUMNS; a test keeps them equal:
# features and evaluate are one layer and may not import each other). Every other column is a raw feature.
LOG_COLUMNS = ("request_id", "logged_at", "model", "model_version", "position", "score")


@dataclass(frozen=True)
class PreReleaseEstimate:
    """What replaying ``requests`` logged requests (``rows`` candidate rows) through the candidate showed.

    ``psi``: score PSI, the served scores as the baseline; ``top_k_overlap``: mean share of each
    served top-``top_k`` the candidate keeps; ``top_item_changed``: share of requests whose best item
    changes; ``breaches``: one line per optional ``evaluate.replay`` threshold broken."""

    requests: int
    rows: int
    served_version: str
    psi: float
    top_k_overlap: float
    top_item_changed: float
    breaches: tuple[str, ...] = ()
    top_k: int = 10

    @property
    def passed(self) -> bool:
        return not self.breaches

    def line(self) -> str:
        """One line for the run's output: the numbers, then the first breach if any."""
        text = (f"pre-release estimate on the {self.requests:,} most recent logged requests ({self.rows:,} rows, "
                f"served by version {self.served_version}): score PSI {self.psi:.3g}, top-{self.top_k} overlap "
                f"{self.top_k_overlap:.3f}, top item changed on {self.top_item_changed:.1%} of requests")
        return text + (f"; {self.breaches[0]}" if self.breaches else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "breaches": list(self.breaches)}

    @classmethod
    def from_dict(cls, d: dict) -> "PreReleaseEstimate":
        return cls(**{**d, "breaches": tuple(d.get("breaches", ()))})


def feature_columns(log: pd.DataFrame) -> list[str]:
    """The raw feature columns of a feature log (what the preprocessor reads), in log order."""
    return [c for c in log.columns if c not in LOG_COLUMNS]


def recent(log: pd.DataFrame, requests: int) -> pd.DataFrame:
    """The rows of the ``requests`` most recently logged requests, by request then position."""
    last = log.groupby("request_id", sort=False)["logged_at"].max().sort_values(kind="stable")
    keep = last.index[-requests:]
    rows = log[log["request_id"].isin(keep)]
    order = pd.Categorical(rows["request_id"], categories=keep, ordered=True)  # oldest kept request first
    return rows.assign(_order=order).sort_values(["_order", "position"], kind="stable").drop(columns="_order").reset_index(drop=True)


def estimate(log: pd.DataFrame, score: Callable[[pd.DataFrame], np.ndarray], cfg: ReplayConfig) -> Optional[PreReleaseEstimate]:
    """Replay the most recent ``cfg.requests`` requests of ``log`` through ``score`` (raw feature rows in,
    probabilities out: e.g. ``PackageScorer(package).score``); None when the log is empty.

    >>> estimate(log, lambda rows: log_scores_of(rows), ReplayConfig()).top_k_overlap  # doctest: +SKIP
    1.0
    """
    if log is None or not len(log):
        return None
    rows = recent(log, cfg.requests)
    served = rows["score"].to_numpy(dtype=np.float64)
    replayed = np.asarray(score(rows[feature_columns(rows)]), dtype=np.float64).reshape(-1)
    if len(replayed) != len(rows):
        raise ValueError(f"the scorer returned {len(replayed)} scores for {len(rows)} logged rows")
    bounds = np.r_[0, np.flatnonzero(rows["request_id"].to_numpy()[1:] != rows["request_id"].to_numpy()[:-1]) + 1, len(rows)]
    overlaps, changed = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        old, new = served[a:b], replayed[a:b]
        overlaps.append(top_k_overlap(old, new, cfg.top_k))
        # The first best in request order on both sides (the ranking's stable order).
        changed.append(int(np.argmax(old)) != int(np.argmax(new)))
    versions = ", ".join(sorted({str(v) for v in rows["model_version"].dropna()})) or "unknown"
    numbers = dict(requests=len(overlaps), rows=len(rows), served_version=versions,
                   psi=score_psi(score_histogram(served), score_histogram(replayed)),
                   top_k_overlap=float(np.mean(overlaps)), top_item_changed=float(np.mean(changed)), top_k=cfg.top_k)
    return PreReleaseEstimate(**numbers, breaches=breaches(numbers, cfg))


def breaches(numbers: dict, cfg: ReplayConfig) -> tuple[str, ...]:
    """One line per optional threshold of ``cfg`` that ``numbers`` break, naming the number and the key."""
    out = []
    if cfg.max_psi is not None and numbers["psi"] > cfg.max_psi:
        out.append(f"score PSI {numbers['psi']:.3g} against the served scores > evaluate.replay.max_psi={cfg.max_psi:g}")
    if cfg.min_top_k_overlap is not None and numbers["top_k_overlap"] < cfg.min_top_k_overlap:
        out.append(f"top-{cfg.top_k} overlap {numbers['top_k_overlap']:.3f} < evaluate.replay.min_top_k_overlap="
                   f"{cfg.min_top_k_overlap:g}")
    if cfg.max_top_item_changed is not None and numbers["top_item_changed"] > cfg.max_top_item_changed:
        out.append(f"top item changed on {numbers['top_item_changed']:.1%} of requests > "
                   f"evaluate.replay.max_top_item_changed={cfg.max_top_item_changed:g}")
    return tuple(out)
