"""Online quality from delayed labels (mlsys.monitor.quality), no Ray: labels join the impressions they
answer, each version's windows are measured once their labels are in, and compared with offline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys.evaluate.metrics import auc
from mlsys.monitor.quality import online_quality


def _log(rng, n_requests: int, version: str, t0: float, signal: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests of 10 candidates; clicks more likely for higher scores (``signal``: how much)."""
    rows, clicks = [], []
    for r in range(n_requests):
        at = t0 + r * 0.5
        scores = rng.random(10)
        for position, (item, score) in enumerate(zip(rng.choice(1000, 10, replace=False), scores)):
            rows.append({"request_id": f"{version}-{r}", "logged_at": pd.Timestamp(at, unit="s", tz="UTC"), "model": "ctr",
                         "model_version": version, "position": position, "score": score, "user_id": r % 50, "item_id": int(item)})
            if rng.random() < 0.05 + signal * score:
                clicks.append({"request_id": f"{version}-{r}", "user_id": r % 50, "item_id": int(item), "timestamp": at + 30, "label": 1})
    return pd.DataFrame(rows), pd.DataFrame(clicks)


def test_windowed_auc_per_version_matches_the_joined_rows_and_waits_for_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    good, good_clicks = _log(rng, 100, "1", 6000.0, signal=0.4)  # 50 s of requests: the window [6000, 6060)
    bad, bad_clicks = _log(rng, 100, "2", 6000.0, signal=0.0)  # a canary whose scores say nothing
    log, labels = pd.concat([good, bad], ignore_index=True), pd.concat([good_clicks, bad_clicks], ignore_index=True)
    log["logged_at"] = pd.DatetimeIndex(log["logged_at"]).as_unit("us")  # as the feature log writes and reads them
    assert online_quality(log, labels, 60, attribution_s=600, now=6600) == []  # labels may still come
    windows = online_quality(log, labels, 60, attribution_s=600, now=6661, offline_of=lambda v: {"auc": 0.75})
    assert [(w.version, w.start, w.requests, w.rows) for w in windows] == [("1", 6000.0, 100, 1000), ("2", 6000.0, 100, 1000)]
    one, two = windows
    clicked = set(zip(good_clicks.request_id, good_clicks.item_id))
    expected = auc(np.array([(r, i) in clicked for r, i in zip(good.request_id, good.item_id)]), good.score.to_numpy())
    assert one.auc == pytest.approx(expected) and one.auc > 0.65 and two.auc == pytest.approx(0.5, abs=0.08)
    assert one.clicks == len(good_clicks) and one.ctr == pytest.approx(len(good_clicks) / 1000)
    signals = two.signals()
    assert signals["quality.auc_drop"] == pytest.approx(0.75 - two.auc) and signals["quality.rows"] == 1000


def test_labels_without_a_request_id_join_the_latest_impression_within_the_attribution_window():
    rng = np.random.default_rng(1)
    log, clicks = _log(rng, 40, "1", 6000.0, signal=0.5)
    anonymous = clicks.drop(columns=["request_id"])
    late = anonymous.assign(timestamp=anonymous.timestamp + 3600)  # after the attribution window: not this impression's
    with_ids = online_quality(log, clicks, 60, 600, now=20_000)[0]
    by_time = online_quality(log, anonymous, 60, 600, now=20_000)[0]
    assert by_time.clicks == with_ids.clicks and by_time.auc == pytest.approx(with_ids.auc)
    assert online_quality(log, late, 60, 600, now=20_000)[0].clicks == 0
    assert online_quality(log, None, 60, 600, now=20_000)[0].auc is None  # no labels: one class, no AUC
