"""Online quality from delayed labels, plain Python: what the model's answers were worth.

The feature log holds what serving scored (request id, model version, user, item, score); labels
arrive later (clicks through ``POST /v1/events``, or a label file or table). Each label joins the
impression it answers (:func:`mlsys.features.feature_log.join_labels`: by request id when the label
has one, else the latest impression of the same user and item within the attribution window); a
logged row without a label is a negative. Rows are grouped per model version and clock-aligned
window of when they were served, and a window is measured only once its attribution window has
passed (its labels are in):

    windows = online_quality(log, labels, window_s=300, attribution_s=3600, now=time.time())
    windows[0].signals()  # {"quality.auc": 0.71, "quality.auc_drop": 0.04, "quality.ctr": 0.12, ...}

``auc_drop`` is the version's offline evaluation AUC (its ``eval_auc`` tag) minus the online one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from mlsys.evaluate.metrics import auc, calibration, logloss
from mlsys.features.feature_log import join_labels


@dataclass
class QualityWindow:
    model: str
    version: str
    start: float
    end: float
    rows: int  # impressions (logged candidates)
    requests: int
    clicks: int
    auc: Optional[float]  # None with one class only
    logloss: float
    calibration: Optional[float]  # mean score / click rate; None without clicks
    ctr: float
    offline: dict[str, float] = field(default_factory=dict)  # the version's offline evaluation (auc, logloss, ...)

    def signals(self) -> dict[str, float]:
        out = {"quality.rows": float(self.rows), "quality.ctr": self.ctr, "quality.logloss": self.logloss}
        if self.auc is not None:
            out["quality.auc"] = self.auc
            if "auc" in self.offline:
                out["quality.auc_drop"] = self.offline["auc"] - self.auc
        if self.calibration is not None:
            out["quality.calibration"] = self.calibration
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(x: float) -> Optional[float]:
    return None if x is None or math.isnan(x) else float(x)


def online_quality(log: pd.DataFrame, labels: pd.DataFrame, window_s: float, attribution_s: float, now: float,
                   offline_of: Callable[[str], dict] = lambda version: {}, since: float = -math.inf) -> list[QualityWindow]:
    """Every (version, window) of ``log`` that started at or after ``since`` and whose labels are in
    (it ended ``attribution_s`` before ``now``), oldest first."""
    if log.empty:
        return []
    served = (pd.to_datetime(log["logged_at"], utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)  # any unit
    start = np.floor(served / window_s) * window_s
    ready = (start >= since) & (start + window_s + attribution_s <= now)
    if not ready.any():
        return []
    rows = log[ready.to_numpy()].reset_index(drop=True)
    if labels is not None and not labels.empty:
        rows = join_labels(rows, labels, pd.Timedelta(seconds=attribution_s))
    else:
        rows = rows.assign(label=0.0)
    rows["start"] = start[ready].to_numpy()
    out = []
    offline: dict[str, dict] = {}
    for (version, window), group in rows.groupby(["model_version", "start"], sort=True):
        version = str(version)
        if version not in offline:
            offline[version] = offline_of(version)
        y, p = group["label"].to_numpy(dtype=np.float64), group["score"].to_numpy(dtype=np.float64)
        out.append(QualityWindow(str(group["model"].iloc[0]), version, float(window), float(window) + window_s, len(group),
                                 int(group["request_id"].nunique()), int(y.sum()), _finite(auc(y, p)), logloss(y, p),
                                 _finite(calibration(y, p)), float(y.mean()), offline[version]))
    return sorted(out, key=lambda w: (w.start, w.version))
